// Bindings of device arrays: _C.DeviceArray, the storage behind fastnn.Tensor. A block of
// device memory (from device_memory's caching allocator, or a tensor imported by DLPack and
// kept alive until the last user drops it) with a C-contiguous shape and a dtype; copies to
// and from NumPy; DLPack both ways. Device "cpu" serves the tests of all this on any machine
// (fastnn's own CPU arrays stay NumPy); "cuda:N" needs the CUDA build and a usable GPU.
#include "device_array.h"

namespace fastnn::bind {
namespace {

constexpr const char* kFn = "DeviceArray";

// "cpu", "cuda" or "cuda:N" as a Device, refused with the reason where this build or this
// machine has no such device.
Device parse_device(const std::string& name, const char* arg) {
    if (name == "cpu") return Device{};
    const std::string prefix = "cuda";
    std::string index = name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : "?";
    if (!index.empty() && (index[0] != ':' || index.size() < 2 || index.size() > 4 ||
                           index.find_first_not_of("0123456789", 1) != std::string::npos))
        fail_value(std::string(kFn) + ": argument '" + arg + "' must be 'cpu', 'cuda' or 'cuda:N', got '" + name + "'");
    const int n = index.empty() ? 0 : std::stoi(index.substr(1));
#ifdef FASTNN_CUDA
    const CudaInfo& info = cuda_info();
    if (!info.available) throw std::runtime_error(std::string(kFn) + " on " + name + ": " + info.reason);
    if (n >= info.device_count)
        fail_value(std::string(kFn) + ": argument '" + arg + "' is " + name + ", but this machine has " +
                   std::to_string(info.device_count) + " CUDA device(s)");
    return Device{DeviceType::Cuda, n};
#else
    (void)n;
    throw std::runtime_error(std::string(kFn) + " on " + name + ": " + kCudaNotBuilt);
#endif
}

// The exported side of DLPack: what a capsule's ManagedTensor points back to.
struct Export {
    dlpack::ManagedTensor managed{};
    std::shared_ptr<Storage> keep;
    std::vector<int64_t> shape;
};

void delete_export(dlpack::ManagedTensor* self) { delete static_cast<Export*>(self->manager_ctx); }

py::capsule to_dlpack(const DeviceArray& a) {
    auto* e = new Export;
    e->keep = a.storage;
    e->shape = a.shape;
    dlpack::Tensor& t = e->managed.dl_tensor;
    t.data = a.data();
    t.device = {a.storage->device.type == DeviceType::Cpu ? dlpack::kCPU : dlpack::kCUDA,
                a.storage->device.index};
    t.ndim = static_cast<int32_t>(a.shape.size());
    t.dtype = a.dtype->dl;
    t.shape = e->shape.data();
    t.strides = nullptr;  // C-contiguous
    t.byte_offset = 0;
    e->managed.manager_ctx = e;
    e->managed.deleter = delete_export;
    // A capsule that no consumer took (still named "dltensor") frees its tensor itself.
    return py::capsule(&e->managed, dlpack::kCapsule, [](PyObject* cap) {
        if (PyCapsule_IsValid(cap, dlpack::kCapsule)) {
            auto* m = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(cap, dlpack::kCapsule));
            if (m && m->deleter) m->deleter(m);
        }
    });
}

// The imported side: a producer's capsule, checked before it is consumed (a refused one stays
// the producer's, whose capsule destructor frees it).
DeviceArray from_dlpack(const py::object& capsule) {
    if (!PyCapsule_IsValid(capsule.ptr(), dlpack::kCapsule))
        fail_type(std::string(kFn) + ".from_dlpack: argument 'capsule' must be an unconsumed DLPack "
                  "capsule named 'dltensor' (what __dlpack__() returns), got " +
                  py::str(py::type::of(capsule).attr("__name__")).cast<std::string>());
    auto* m = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), dlpack::kCapsule));
    const dlpack::Tensor& t = m->dl_tensor;
    const char* what = "DeviceArray.from_dlpack: the tensor";
    Device device;
    if (t.device.device_type == dlpack::kCUDA) {
        device = parse_device("cuda:" + std::to_string(t.device.device_id), "capsule");
    } else if (t.device.device_type != dlpack::kCPU) {
        fail_value(std::string(what) + " is on DLPack device type " + std::to_string(t.device.device_type) +
                   "; fastnn takes the CPU (1) and CUDA (2)");
    }
    const DTypeInfo* dtype = dtype_of(t.dtype);
    if (!dtype)
        fail_type(std::string(what) + " has DLPack dtype (code " + std::to_string(t.dtype.code) + ", bits " +
                  std::to_string(t.dtype.bits) + ", lanes " + std::to_string(t.dtype.lanes) +
                  "); fastnn takes " + supported_dtypes());
    if (t.ndim < 0 || t.ndim > kMaxDims)
        fail_value(std::string(what) + " has " + std::to_string(t.ndim) + " dimensions");
    std::vector<int64_t> shape(t.shape, t.shape + t.ndim);
    const bool empty = std::find(shape.begin(), shape.end(), 0) != shape.end();
    if (t.strides && !empty) {  // only a C-contiguous layout is taken without a copy (an
                                // empty tensor has no layout: NumPy gives it strides of 0)
        int64_t expected = 1;
        for (int i = t.ndim - 1; i >= 0; --i) {
            if (shape[i] != 1 && t.strides[i] != expected)
                fail_value(std::string(what) + " is not C-contiguous (strides in elements: dimension " +
                           std::to_string(i) + " has " + std::to_string(t.strides[i]) + ", expected " +
                           std::to_string(expected) + "); make it contiguous first");
            expected *= shape[i];
        }
    }
    for (int64_t s : shape)
        if (s < 0) fail_value(std::string(what) + " has a negative size");
    DeviceArray a;
    a.shape = std::move(shape);
    a.dtype = dtype;
    auto storage = std::make_shared<Storage>();
    storage->device = device;
    storage->data = static_cast<char*>(t.data) + t.byte_offset;
    storage->bytes = static_cast<size_t>(a.nbytes());
    storage->imported = m;
    PyCapsule_SetName(capsule.ptr(), dlpack::kUsedCapsule);  // ours now: the storage frees it
    a.storage = std::move(storage);
    return a;
}

py::tuple shape_tuple(const std::vector<int64_t>& shape) {
    py::tuple t(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) t[i] = shape[i];
    return t;
}

}  // namespace

void bind_tensor(py::module_& m) {
    py::class_<DeviceArray>(m, "DeviceArray",
                            "Memory on a device with a C-contiguous shape and a dtype (float32, "
                            "int64, int32, uint8): the storage of fastnn.Tensor.")
        .def_static("empty", [](const std::vector<int64_t>& shape, const std::string& dtype, const std::string& device) {
            const DTypeInfo* d = dtype_named(dtype);
            if (!d) fail_type(std::string(kFn) + ".empty: argument 'dtype' must be " + supported_dtypes() + ", got '" + dtype + "'");
            if (shape.size() > kMaxDims) fail_value(std::string(kFn) + ".empty: argument 'shape' has too many dimensions");
            return DeviceArray::empty(shape, d, parse_device(device, "device"));
        }, py::arg("shape"), py::arg("dtype"), py::arg("device"))
        .def_static("from_numpy", [](const py::object& obj, const std::string& device) {
            py::array arr = as_numpy(obj, "DeviceArray.from_numpy", "array");
            const DTypeInfo* d = dtype_named(dtype_str(arr));
            if (!d) fail_type(std::string(kFn) + ".from_numpy: argument 'array' must hold " + supported_dtypes() +
                              ", got dtype " + dtype_str(arr));
            const Device dev = parse_device(device, "device");
            py::array c = py::reinterpret_steal<py::array>(from_any(
                arr, nullptr, py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_,
                "DeviceArray.from_numpy", "array", "a C-contiguous array"));
            std::vector<int64_t> shape(c.shape(), c.shape() + c.ndim());
            DeviceArray a = DeviceArray::empty(shape, d, dev);
            py::gil_scoped_release release;
            device_copy(dev, a.data(), Device{}, c.data(), static_cast<size_t>(a.nbytes()));
            return a;
        }, py::arg("array"), py::arg("device"))
        .def_static("from_dlpack", &from_dlpack, py::arg("capsule"),
                    "Take a producer's DLPack capsule without a copy (C-contiguous tensors of a "
                    "supported dtype on the CPU or a CUDA device); the producer's memory is kept "
                    "until the last user goes.")
        .def("numpy", [](const DeviceArray& a) {
            py::array out(py::dtype(a.dtype->name), a.shape);
            py::gil_scoped_release release;
            device_copy(Device{}, out.mutable_data(), a.storage->device, a.data(), static_cast<size_t>(a.nbytes()));
            return out;
        }, "A NumPy copy on the host.")
        .def("__dlpack__", [](const DeviceArray& a, const py::object& stream, const py::object& max_version,
                              const py::object& dl_device, const py::object& copy) {
            (void)stream;       // every copy and kernel so far is synchronous: nothing to order
            (void)max_version;  // the unversioned capsule, which every consumer still takes
            if (!copy.is_none() && !py::isinstance<py::bool_>(copy))
                fail_type(std::string(kFn) + ".__dlpack__: argument 'copy' must be True, False or None, got " +
                          py::str(py::type::of(copy).attr("__name__")).cast<std::string>());
            // the array's own device, as __dlpack_device__ gives it, is no copy (the array API's
            // protocol: np.from_dlpack(t, device="cpu") asks for it)
            const Device& d = a.storage->device;
            const py::tuple own = py::make_tuple(d.type == DeviceType::Cpu ? int(dlpack::kCPU) : int(dlpack::kCUDA),
                                                 d.index);
            const bool elsewhere = !dl_device.is_none() && !own.equal(dl_device);
            if (elsewhere || (!copy.is_none() && copy.cast<bool>()))
                throw py::buffer_error(std::string(kFn) + ".__dlpack__: only the array's own device " +
                                       py::str(own).cast<std::string>() + ", without a copy");
            return to_dlpack(a);
        }, py::kw_only(), py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
           py::arg("dl_device") = py::none(), py::arg("copy") = py::none())
        .def("__dlpack_device__", [](const DeviceArray& a) {
            const Device& d = a.storage->device;
            return py::make_tuple(d.type == DeviceType::Cpu ? int(dlpack::kCPU) : int(dlpack::kCUDA), d.index);
        })
        .def("view_rows", [](const DeviceArray& a, int64_t begin, int64_t end) {
            if (a.shape.empty()) fail_value(std::string(kFn) + ".view_rows: a 0-d array has no rows");
            if (begin < 0 || end < begin || end > a.shape[0])
                fail_value(std::string(kFn) + ".view_rows: rows [" + std::to_string(begin) + ", " +
                           std::to_string(end) + ") are not within [0, " + std::to_string(a.shape[0]) + "]");
            DeviceArray v = a;
            v.shape[0] = end - begin;
            v.offset += begin * (a.shape[0] ? a.nbytes() / a.shape[0] : 0);
            return v;
        }, py::arg("begin"), py::arg("end"), "Rows [begin, end) as a view that shares the memory.")
        .def("reshape", [](const DeviceArray& a, const std::vector<int64_t>& shape) {
            for (int64_t s : shape)
                if (s < 0) fail_value(std::string(kFn) + ".reshape: argument 'shape' has a negative size");
            if (element_count(shape) != a.size() || shape.size() > kMaxDims)
                fail_value(std::string(kFn) + ".reshape: " + std::to_string(a.size()) +
                           " elements cannot take that shape");
            DeviceArray v = a;
            v.shape = shape;
            return v;
        }, py::arg("shape"), "The same memory with another shape of as many elements.")
        .def("fill_", [](DeviceArray& a, double value) {
            if (a.dtype != dtype_named("float32"))
                fail_type(std::string(kFn) + ".fill_: only float32 arrays, got " + a.dtype->name);
            py::gil_scoped_release release;
            device_fill(a.device(), a.f32(), static_cast<size_t>(a.size()), static_cast<float>(value));
        }, py::arg("value"), "Every element set to value, in place.")
        .def("copy_", [](DeviceArray& a, py::handle src_obj) {
            const char* fn = "DeviceArray.copy_";
            if (DeviceArray* src = device_array_of(src_obj)) {
                if (src->shape != a.shape || src->dtype != a.dtype)
                    fail_value(std::string(fn) + ": 'src' must have this array's shape and dtype");
                if (src->storage == a.storage && src->offset == a.offset) return;
                if (overlaps(src->view(), a.view()))
                    fail_value(std::string(fn) + ": 'src' overlaps this array in memory");
                py::gil_scoped_release release;
                device_copy(a.device(), a.data(), src->device(), src->data(), static_cast<size_t>(a.nbytes()));
                return;
            }
            py::array arr = as_numpy(src_obj, fn, "src");
            py::array c = py::reinterpret_steal<py::array>(from_any(
                arr, py::dtype(a.dtype->name).release().ptr(),
                py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_ |
                    py::detail::npy_api::NPY_ARRAY_FORCECAST_, fn, "src", a.dtype->name));
            if (std::vector<int64_t>(c.shape(), c.shape() + c.ndim()) != a.shape)
                fail_value(std::string(fn) + ": 'src' must have this array's shape, got " + shape_str(c));
            py::gil_scoped_release release;
            device_copy(a.device(), a.data(), Device{}, c.data(), static_cast<size_t>(a.nbytes()));
        }, py::arg("src"), "This array's values from src (a DeviceArray on any device, or a NumPy "
                           "array), in place.")
        .def_property_readonly("shape", [](const DeviceArray& a) { return shape_tuple(a.shape); })
        .def_property_readonly("dtype", [](const DeviceArray& a) { return std::string(a.dtype->name); })
        .def_property_readonly("device", [](const DeviceArray& a) { return a.storage->device.name(); })
        .def_property_readonly("data_ptr", [](const DeviceArray& a) {
            return reinterpret_cast<uintptr_t>(a.data());
        })
        .def_property_readonly("nbytes", &DeviceArray::nbytes);

    m.def("device_memory_stats", [](const std::string& device) {
        const MemoryStats s = device_memory_stats(parse_device(device, "device"));
        py::dict d;
        d["in_use_bytes"] = s.in_use_bytes;
        d["cached_bytes"] = s.cached_bytes;
        d["device_allocs"] = s.device_allocs;
        d["reuses"] = s.reuses;
        return d;
    }, py::arg("device"), "The caching allocator's counts on a device: bytes in use and cached, "
       "blocks taken from the device, requests served from the cache.");
    m.def("device_empty_cache", [](const std::string& device) {
        device_empty_cache(parse_device(device, "device"));
    }, py::arg("device"), "Give every cached block of a device back to it.");
}

}  // namespace fastnn::bind
