// A non-owning view of an array, as the bindings hand arguments to the C++ side: where its
// data are (pointer and device), what they hold (dtype) and how they are laid out (shape and
// strides, in bytes, as the buffer protocol and DLPack's byte offsets give them). The bindings build one per array argument (from the buffer protocol
// now; from DLPack with the CUDA build), check them all together (one device for every
// argument of an op, no output overlapping another argument: checks.h's Operands) and unpack
// them into the raw pointers and sizes the kernels take. Kernels never see a view.
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

struct ArrayView {
    static constexpr int kMaxDims = 64;  // NumPy 2's limit
    void* data = nullptr;
    DType dtype = DType::Other;
    int64_t itemsize = 0;  // bytes per element
    int ndim = 0;
    int64_t shape[kMaxDims] = {};
    int64_t strides[kMaxDims] = {};  // in bytes, possibly negative
    Device device;

    int64_t size() const {
        int64_t n = 1;
        for (int i = 0; i < ndim; ++i) n *= shape[i];
        return n;
    }

    // The bytes the view spans, from its lowest to one past its highest element: what an
    // overlap check compares (0 bytes when it holds no element).
    const char* lowest() const {
        const char* p = static_cast<const char*>(data);
        for (int i = 0; i < ndim; ++i)
            if (strides[i] < 0 && shape[i] > 0) p += (shape[i] - 1) * strides[i];
        return p;
    }
    size_t span_bytes() const {
        if (size() == 0) return 0;
        int64_t extent = itemsize;  // the highest element's bytes past the lowest's start
        for (int i = 0; i < ndim; ++i) extent += (shape[i] - 1) * (strides[i] < 0 ? -strides[i] : strides[i]);
        return static_cast<size_t>(extent);
    }

    template <class T>
    T* ptr() const { return static_cast<T*>(data); }
};

}  // namespace fastnn
