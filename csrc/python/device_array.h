// Device arrays as the bindings see them: _C.DeviceArray (the storage of fastnn.Tensor, bound
// in tensor.cpp), and what an op needs to take them: the DeviceArray an argument holds, checked
// to be float32 and on the op's one device, and the call of the op's kernel for that device
// (the CPU's on host memory, where the tests run it; csrc/cuda's on a GPU).
#pragma once
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "checks.h"
#include "core/cuda.h"
#include "core/device_memory.h"
#include "core/dlpack.h"
#include "core/work_split.h"  // kSumChunk

namespace fastnn::bind {

constexpr int kMaxDims = 64;  // NumPy 2's limit, and a DeviceArray's

struct DTypeInfo {
    const char* name;
    dlpack::DataType dl;
    int64_t itemsize;
};

// float32 for data and weights, the integer types labels come in
inline const DTypeInfo kDTypes[] = {{"float32", {dlpack::kFloat, 32, 1}, 4},
                                    {"int64", {dlpack::kInt, 64, 1}, 8},
                                    {"int32", {dlpack::kInt, 32, 1}, 4},
                                    {"uint8", {dlpack::kUInt, 8, 1}, 1}};

inline const DTypeInfo* dtype_named(const std::string& name) {
    for (const DTypeInfo& d : kDTypes)
        if (name == d.name) return &d;
    return nullptr;
}

inline const DTypeInfo* dtype_of(const dlpack::DataType& t) {
    for (const DTypeInfo& d : kDTypes)
        if (d.dl.code == t.code && d.dl.bits == t.bits && t.lanes == 1) return &d;
    return nullptr;
}

inline std::string supported_dtypes() { return "float32, int64, int32 or uint8"; }

// Memory a DeviceArray owns (from the allocator) or borrows (from a DLPack producer, whose
// deleter runs when the last DeviceArray or exported capsule that uses it goes).
struct Storage {
    Device device;
    void* data = nullptr;
    size_t bytes = 0;
    dlpack::ManagedTensor* imported = nullptr;

    Storage() = default;
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    ~Storage() {
        if (imported) {
            if (imported->deleter) imported->deleter(imported);
        } else {
            device_free(device, data, bytes);
        }
    }
};

// The elements of `shape` (sizes >= 0), or -1 where its nonzero sizes multiply past what 8-byte
// elements could address (2**60), a shape NumPy refuses too even with a zero among them.
inline int64_t element_count(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    bool empty = false;
    for (int64_t s : shape) {
        if (s == 0) empty = true;
        else if (n > INT64_MAX / s / 8) return -1;
        else n *= s;
    }
    return empty ? 0 : n;
}

// A C-contiguous array in a Storage: all of it, or a view (offset bytes in) that shares it.
class DeviceArray {
public:
    std::shared_ptr<Storage> storage;
    std::vector<int64_t> shape;
    const DTypeInfo* dtype = nullptr;
    int64_t offset = 0;  // bytes from the storage's start

    int64_t size() const {
        int64_t n = 1;
        for (int64_t s : shape) n *= s;
        return n;
    }
    int64_t nbytes() const { return size() * dtype->itemsize; }
    const Device& device() const { return storage->device; }
    void* data() const { return static_cast<char*>(storage->data) + offset; }
    float* f32() const { return static_cast<float*>(data()); }

    // What Operands checks: where the array is and the bytes it spans (nbytes from its start:
    // C-contiguous).
    ArrayView view() const {
        ArrayView v;
        v.data = data();
        v.itemsize = dtype->itemsize;
        v.dtype = dtype->itemsize == 4 && dtype->dl.code == dlpack::kFloat ? DType::Float32 : DType::Other;
        v.lowest = static_cast<const char*>(v.data);
        v.span_bytes = static_cast<size_t>(nbytes());
        v.device = storage->device;
        return v;
    }

    static DeviceArray empty(std::vector<int64_t> shape, const DTypeInfo* dtype, const Device& device) {
        for (int64_t s : shape)
            if (s < 0) fail_value("DeviceArray: argument 'shape' has a negative size");
        const int64_t n = element_count(shape);
        if (n < 0 && std::find(shape.begin(), shape.end(), 0) != shape.end())
            fail_value("DeviceArray: argument 'shape' is too big (its sizes multiply past 2**60)");
        if (n < 0) throw std::bad_alloc();
        DeviceArray a;
        a.shape = std::move(shape);
        a.dtype = dtype;
        auto storage = std::make_shared<Storage>();
        storage->device = device;
        storage->bytes = static_cast<size_t>(n * dtype->itemsize);
        storage->data = device_alloc(device, storage->bytes);
        a.storage = std::move(storage);
        return a;
    }
};

// The DeviceArray `obj` is or holds (a fastnn.Tensor's), else nullptr (a NumPy array...).
inline DeviceArray* device_array_of(py::handle obj) {
    if (py::isinstance<DeviceArray>(obj)) return &obj.cast<DeviceArray&>();
    if (!py::isinstance<py::array>(obj) && py::hasattr(obj, "_array")) {
        py::object inner = obj.attr("_array");
        if (py::isinstance<DeviceArray>(inner)) return &inner.cast<DeviceArray&>();  // kept by obj
    }
    return nullptr;
}

// A new result of an op as the caller's kind of array: a fastnn.Tensor when the op's first
// argument `like` was one (its class called on the DeviceArray), else the DeviceArray itself.
inline py::object result_like(DeviceArray&& result, py::handle like) {
    py::object array = py::cast(std::move(result));
    return py::isinstance<DeviceArray>(like) ? array : py::type::handle_of(like)(array);
}

// Argument `arg` of an op whose first array is on `device`: a device array of `dtype` there, of
// `size` elements (-1: any); else TypeError (not a device array, another dtype) or ValueError
// (another device, another size), naming the argument.
inline DeviceArray& device_array(py::handle obj, const Device& device, int64_t size, const char* fn,
                                 const char* arg, const char* first, const DTypeInfo* dtype) {
    DeviceArray* a = device_array_of(obj);
    if (!a)
        fail_value(std::string(fn) + ": '" + arg + "' is a " +
                   py::str(py::type::of(obj).attr("__name__")).cast<std::string>() +
                   " in host memory but '" + first + "' a device array on " + device.name() +
                   "; the arrays of one call must be on one device (fastnn.asarray(x, device=...) "
                   "moves an array)");
    if (a->device() != device)
        fail_value(std::string(fn) + ": '" + arg + "' is on " + a->device().name() + " but '" + first +
                   "' on " + device.name() + "; the arrays of one call must be on one device");
    if (a->dtype != dtype)
        fail_type(std::string(fn) + ": argument '" + arg + "' must be a " + dtype->name + " device array, got " +
                  a->dtype->name);
    if (size >= 0 && a->size() != size)
        fail_value(std::string(fn) + ": '" + arg + "' has " + std::to_string(a->size()) +
                   " elements; expected " + std::to_string(size) + " (as '" + first + "')");
    return *a;
}

// ... of float32, what most ops take.
inline DeviceArray& device_f32(py::handle obj, const Device& device, int64_t size, const char* fn,
                               const char* arg, const char* first) {
    return device_array(obj, device, size, fn, arg, first, &kDTypes[0]);
}

// The op on `device`, without the GIL: `cpu` for host memory (DeviceArrays made on "cpu" by the
// tests), `gpu` on a CUDA device, which only the CUDA build can hold.
template <class Cpu, class Gpu>
void run_on(const Device& device, Cpu&& cpu, Gpu&& gpu) {
    py::gil_scoped_release nogil;
    if (device.type == DeviceType::Cpu)
        cpu();
    else
        gpu();
}

// A sum over the elements of `a` (and whatever the op writes beside it): `cpu()` on host memory,
// `gpu(scratch)` on a GPU, with the doubles of device scratch that csrc/cuda/sum.cuh's fixed
// chunks need (from the allocator's cache).
template <class Cpu, class Gpu>
double sum_on(const DeviceArray& a, Cpu&& cpu, Gpu&& gpu) {
    double value = 0.0;
    if (a.device().type == DeviceType::Cpu) {
        run_on(a.device(), [&] { value = cpu(); }, [] {});
        return value;
    }
    DeviceArray scratch = DeviceArray::empty({(a.size() + kSumChunk - 1) / kSumChunk + 1}, dtype_named("int64"),
                                             a.device());
    double* s = static_cast<double*>(scratch.data());
    run_on(a.device(), [] {}, [&] { value = gpu(s); });
    return value;
}

}  // namespace fastnn::bind

// A call into csrc/cuda, compiled in the CUDA build only: the default build has no CUDA array
// to run it on.
#ifdef FASTNN_CUDA
#define FASTNN_CUDA_ONLY(...) __VA_ARGS__
#else
#define FASTNN_CUDA_ONLY(...) throw std::logic_error(::fastnn::kCudaNotBuilt)
#endif
