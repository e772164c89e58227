// DLPack's C ABI (dmlc/dlpack, v0.8, the unversioned "dltensor" capsule that PyTorch, CuPy
// and NumPy all exchange): the structs as the standard lays them out, declared here so that
// the build needs no header from elsewhere. Only the fields fastnn reads or writes are named
// in comments.
#pragma once
#include <cstdint>

namespace fastnn::dlpack {

enum DeviceType : int32_t { kCPU = 1, kCUDA = 2, kCUDAHost = 3, kCUDAManaged = 13 };
enum TypeCode : uint8_t { kInt = 0, kUInt = 1, kFloat = 2, kBfloat = 4, kBool = 6 };

struct Device {
    int32_t device_type;  // DeviceType
    int32_t device_id;
};

struct DataType {
    uint8_t code;   // TypeCode
    uint8_t bits;   // per lane
    uint16_t lanes;  // 1 for every type fastnn takes
};

struct Tensor {
    void* data;
    Device device;
    int32_t ndim;
    DataType dtype;
    int64_t* shape;
    int64_t* strides;  // in elements; nullptr: C-contiguous
    uint64_t byte_offset;
};

struct ManagedTensor {
    Tensor dl_tensor;
    void* manager_ctx;
    void (*deleter)(ManagedTensor* self);  // the producer's; called once by the consumer
};

constexpr const char* kCapsule = "dltensor";            // a capsule not yet consumed
constexpr const char* kUsedCapsule = "used_dltensor";   // renamed by its consumer

}  // namespace fastnn::dlpack
