// A non-owning view of an array, as the bindings hand arguments to the C++ side: where its
// data are (pointer and device), what they hold (dtype) and which bytes they span (from the
// shape and the strides in bytes, as the buffer protocol and DLPack's byte offsets give them).
// The bindings build one per array argument (NumPy arrays and device arrays), check them all
// together (one device for every argument of an op, no output overlapping another argument:
// checks.h's Operands) and unpack them into the raw pointers and sizes the kernels take.
// Kernels never see a view.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace fastnn {

enum class DeviceType : int8_t { Cpu, Cuda };

struct Device {
    DeviceType type = DeviceType::Cpu;
    int index = 0;

    bool operator==(const Device& o) const { return type == o.type && index == o.index; }
    bool operator!=(const Device& o) const { return !(*this == o); }
    std::string name() const {
        return type == DeviceType::Cpu ? "cpu" : "cuda:" + std::to_string(index);
    }
};

enum class DType : int8_t { Float32, Float64, Int64, Int32, UInt64, UInt8, Bool, Other };

// The facts the checks compare, computed once when the view is made: a view is built per
// array argument of every call, so it holds no per-dimension arrays (64 of each, NumPy's
// limit, made every call of a small op spend most of its time copying them).
struct ArrayView {
    void* data = nullptr;
    DType dtype = DType::Other;
    int64_t itemsize = 0;      // bytes per element
    const char* lowest = nullptr;  // the lowest byte an element occupies (strides may be negative)
    size_t span_bytes = 0;     // from lowest to one past the highest element's last byte; 0: no element
    Device device;

    // A view of ndim dimensions of `shape`, `strides` in bytes.
    template <class Int>
    static ArrayView strided(void* data, DType dtype, int64_t itemsize, int ndim, const Int* shape,
                             const Int* strides, Device device = {}) {
        ArrayView v;
        v.data = data;
        v.dtype = dtype;
        v.itemsize = itemsize;
        v.device = device;
        const char* low = static_cast<const char*>(data);
        int64_t extent = itemsize;  // the highest element's bytes past the lowest's start
        bool empty = false;
        for (int i = 0; i < ndim; ++i) {
            const int64_t n = static_cast<int64_t>(shape[i]), st = static_cast<int64_t>(strides[i]);
            if (n == 0) empty = true;
            if (n <= 0) continue;
            if (st < 0) low += (n - 1) * st;
            extent += (n - 1) * (st < 0 ? -st : st);
        }
        v.lowest = low;
        v.span_bytes = empty ? 0 : static_cast<size_t>(extent);
        return v;
    }
};

}  // namespace fastnn
