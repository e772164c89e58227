// The argument checks every binding uses: conversions (dtype, contiguity, alignment),
// ranks, shapes, ranges and aliasing, each failure a TypeError or ValueError that names the
// function and the argument, so that no kernel ever sees a bad argument. Only csrc/python/
// includes pybind11; the kernels (ops.h) take raw pointers and sizes, and run without the GIL.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/view.h"
#include "ops.h"
#include "parallel.h"

namespace fastnn::bind {

namespace py = pybind11;

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
// A default-constructed py::array_t is not a null handle but an empty NumPy array, made and
// freed on every call (two of them were 0.2 us of a 1.4 us GEMM call): an array argument that
// may be absent is a std::optional.

inline std::string shape_str(const std::vector<int64_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    return s + (shape.size() == 1 ? ",)" : ")");
}

inline std::string shape_str(const py::array& a) {
    return shape_str(std::vector<int64_t>(a.shape(), a.shape() + a.ndim()));
}

inline std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

[[noreturn]] inline void fail_type(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] inline void fail_value(const std::string& msg) { throw py::value_error(msg); }

// numpy's reason for a failed conversion is not lost: MemoryError stays a MemoryError (an
// input too big to copy), any other failure is a TypeError naming the argument. The reason
// is the cause's type and message (what() appends the Python traceback, "At: ...", which
// is the chained cause's to show).
[[noreturn]] inline void conversion_failed(const char* fn, const char* arg, const char* target) {
    py::error_already_set cause;  // takes numpy's error off the indicator
    const bool memory = cause.matches(PyExc_MemoryError);
    const std::string reason = py::str(cause.type().attr("__name__")).cast<std::string>() + ": " +
                               py::str(cause.value()).cast<std::string>();
    const std::string msg = std::string(fn) + ": argument '" + arg + "' could not be converted to " +
                            target + ": " + reason;
    py::raise_from(cause, memory ? PyExc_MemoryError : PyExc_TypeError, msg.c_str());
    throw py::error_already_set();
}

constexpr int kEnsureCopy = 0x0020;  // NPY_ARRAY_ENSURECOPY (pybind11 does not name it)

// Every conversion of an argument goes through here (dtype nullptr: any array).
inline PyObject* from_any(py::handle obj, PyObject* dtype, int flags, const char* fn, const char* arg,
                   const char* target) {
    PyObject* raw = py::detail::npy_api::get().PyArray_FromAny_(
        obj.ptr(), dtype, 0, 0, flags | py::detail::npy_api::NPY_ARRAY_ENSUREARRAY_, nullptr);
    if (!raw) conversion_failed(fn, arg, target);
    return raw;
}

// obj as the C-contiguous, aligned T array every kernel assumes (a misaligned float32 view is
// undefined behaviour in C++), copied only when it is not one already; `copy`: always a
// private copy.
template <class T>
inline py::array_t<T, py::array::c_style | py::array::forcecast> convert(py::handle obj, const char* fn,
                                                                  const char* arg, const char* target,
                                                                  bool copy = false) {
    using api = py::detail::npy_api;
    const int flags = api::NPY_ARRAY_C_CONTIGUOUS_ | api::NPY_ARRAY_ALIGNED_ |
                      api::NPY_ARRAY_FORCECAST_ | (copy ? kEnsureCopy : 0);
    return py::reinterpret_steal<py::array_t<T, py::array::c_style | py::array::forcecast>>(
        from_any(obj, py::dtype::of<T>().release().ptr(), flags, fn, arg, target));
}

inline py::array as_numpy(py::handle obj, const char* fn, const char* arg) {
    if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);
    return py::reinterpret_steal<py::array>(from_any(obj, nullptr, 0, fn, arg, "an array"));
}

// A NumPy array as the C++ side sees it: its buffer's facts, on the CPU.
inline ArrayView view_of(const py::array& a) {
    const auto itemsize = static_cast<int64_t>(a.itemsize());
    const char kind = a.dtype().kind();
    const DType dtype = kind == 'f' ? (itemsize == 4 ? DType::Float32 : itemsize == 8 ? DType::Float64 : DType::Other)
                      : kind == 'i' ? (itemsize == 8 ? DType::Int64 : itemsize == 4 ? DType::Int32 : DType::Other)
                      : kind == 'u' ? (itemsize == 8 ? DType::UInt64 : itemsize == 1 ? DType::UInt8 : DType::Other)
                      : kind == 'b' ? DType::Bool : DType::Other;
    // device: the CPU, where every NumPy array lives
    return ArrayView::strided(const_cast<void*>(a.data()), dtype, itemsize, static_cast<int>(a.ndim()),
                              a.shape(), a.strides());
}

// A NumPy array of real numbers (float, int or bool), as C-contiguous float32.
inline F32Array as_f32(py::handle obj, const char* fn, const char* arg) {
    py::array arr = as_numpy(obj, fn, arg);
    char kind = arr.dtype().kind();
    if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
        fail_type(std::string(fn) + ": argument '" + arg +
                  "' must hold real numbers (float or int), got dtype " + dtype_str(arr));
    return convert<float>(arr, fn, arg, "C-contiguous float32");
}

inline void require_rank(const py::array& a, py::ssize_t rank, const char* fn, const char* arg) {
    if (a.ndim() != rank)
        fail_value(std::string(fn) + ": argument '" + arg + "' must be " + std::to_string(rank) +
                   "-D, got shape " + shape_str(a));
}

// Integer indices (labels, row numbers) as a private int64 copy: the kernel reads them
// without the GIL, so the values checked must be the values read, whatever another thread
// does to the caller's array meanwhile. They are small beside the data they index.
inline py::array_t<int64_t> as_indices(py::handle obj, const char* fn, const char* arg,
                                const char* what) {
    py::array arr = as_numpy(obj, fn, arg);
    char kind = arr.dtype().kind();
    if (kind != 'i' && kind != 'u')
        fail_type(std::string(fn) + ": argument '" + arg + "' must hold " + what + ", got dtype " +
                  dtype_str(arr));
    require_rank(arr, 1, fn, arg);
    if (kind == 'u' && arr.itemsize() == 8) {  // values from 2**63 up would wrap to negatives
        auto u = convert<uint64_t>(arr, fn, arg, "uint64", /*copy=*/false);
        const uint64_t* p = u.data();
        for (py::ssize_t i = 0; i < u.size(); ++i)
            if (p[i] > static_cast<uint64_t>(INT64_MAX))
                fail_value(std::string(fn) + ": " + arg + "[" + std::to_string(i) + "] = " +
                           std::to_string(p[i]) + " is too large for an index");
    }
    return convert<int64_t>(arr, fn, arg, "int64", /*copy=*/true);
}

inline void require_nonempty(const py::array& a, const char* fn, const char* arg) {
    if (a.size() == 0)
        fail_value(std::string(fn) + ": argument '" + arg + "' is empty (shape " + shape_str(a) + ")");
}

inline void require_same_shape(const py::array& a, const py::array& b, const char* fn, const char* an,
                        const char* bn) {
    bool same = a.ndim() == b.ndim();
    for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == b.shape(i);
    if (!same)
        fail_value(std::string(fn) + ": '" + bn + "' must have the shape of '" + an + "' " +
                   shape_str(a) + ", got " + shape_str(b));
}

// An array a kernel writes into as it is (no copy): float32, aligned, writeable.
inline void require_writable_f32(const py::array& arr, const char* fn, const char* arg) {
    if (!py::isinstance<py::array_t<float>>(arr) || arr.dtype().kind() != 'f' || arr.itemsize() != 4)
        fail_type(std::string(fn) + ": argument '" + arg +
                  "' is written in place and must be float32, got dtype " + dtype_str(arr));
    if (!(arr.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        fail_value(std::string(fn) + ": argument '" + arg +
                   "' is written in place and must be aligned to 4 bytes (a float32 view at an odd "
                   "byte offset of a buffer is not)");
    if (!arr.writeable()) fail_value(std::string(fn) + ": argument '" + arg + "' is read-only");
}

// An array the kernel writes into: it must already be C-contiguous, writeable float32.
inline py::array_t<float> in_place(py::handle obj, const char* fn, const char* arg) {
    py::array arr = as_numpy(obj, fn, arg);
    require_writable_f32(arr, fn, arg);
    if (!(arr.flags() & py::array::c_style))
        fail_value(std::string(fn) + ": argument '" + arg + "' must be C-contiguous");
    return py::reinterpret_borrow<py::array_t<float>>(arr);
}

// ---- GEMM operands: strided views are used as they are, without a copy ----------------

struct Matrix {
    py::array keep;  // owns the memory `data` points into
    ArrayView view;  // of keep, as taken: what the call's checks see
    const float* data;
    int64_t rows, cols, ld;
    bool transposed;  // element (i, j) is data[j * ld + i] rather than data[i * ld + j]
};

// A row-major or column-major float32 view with unit inner stride is taken as is
// (a slice keeps its leading dimension, a transpose flips `transposed`); anything else,
// a float32 of the other byte order included, is converted once to C-contiguous float32.
inline Matrix as_matrix(py::handle obj, const char* fn, const char* arg) {
    py::array arr = as_numpy(obj, fn, arg);
    require_rank(arr, 2, fn, arg);
    const int64_t r = arr.shape(0), c = arr.shape(1);
    if (py::isinstance<py::array_t<float>>(arr) && (arr.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) {
        const int64_t s0 = arr.strides(0), s1 = arr.strides(1);
        const float* p = static_cast<const float*>(arr.data());
        if ((c <= 1 || s1 == 4) && (r <= 1 || (s0 > 0 && s0 % 4 == 0 && s0 / 4 >= c)))
            return {arr, view_of(arr), p, r, c, r <= 1 ? std::max<int64_t>(c, 1) : s0 / 4, false};
        if ((r <= 1 || s0 == 4) && (c <= 1 || (s1 > 0 && s1 % 4 == 0 && s1 / 4 >= r)))
            return {arr, view_of(arr), p, r, c, c <= 1 ? std::max<int64_t>(r, 1) : s1 / 4, true};
    }
    F32Array conv = as_f32(arr, fn, arg);
    return {conv, view_of(conv), conv.data(), r, c, std::max<int64_t>(c, 1), false};
}

// ---- aliasing ---------------------------------------------------------------------------

inline bool overlaps(const ArrayView& a, const ArrayView& b) {
    const auto pa = reinterpret_cast<uintptr_t>(a.lowest), pb = reinterpret_cast<uintptr_t>(b.lowest);
    const size_t na = a.span_bytes, nb = b.span_bytes;
    return na && nb && pa < pb + nb && pb < pa + na;
}

// The arrays one kernel call reads and writes, checked together before it runs. They must
// all be on one device (a kernel runs on one). The kernels assume an output shares no byte
// with any other operand (they read inputs after writing outputs, and the optimizers' loops
// are __restrict), so any overlap is refused, naming both arguments; the one exception is an
// output marked elementwise being exactly one of the inputs (same start, same size), for a
// kernel that reads element i before it writes element i.
class Operands {
  public:
    explicit Operands(const char* fn) : fn_(fn) {}
    Operands& input(const char* name, const ArrayView& v) { return add({name, v, false, false}); }
    Operands& input(const char* name, const py::array& a) { return input(name, view_of(a)); }
    Operands& output(const char* name, const ArrayView& v, bool elementwise = false) {
        return add({name, v, true, elementwise});
    }
    Operands& output(const char* name, const py::array& a, bool elementwise = false) {
        return output(name, view_of(a), elementwise);
    }
    void check() const {
        for (int i = 0; i < count_; ++i) {
            const Arg &a = args_[i], &first = args_[0];
            if (a.view.device != first.view.device)
                fail_value(std::string(fn_) + ": '" + a.name + "' is on " + a.view.device.name() +
                           " but '" + first.name + "' on " + first.view.device.name() +
                           "; the arrays of one call must be on one device (Module.to moves a model's)");
        }
        for (int i = 0; i < count_; ++i)
            for (int j = 0; j < i; ++j) {
                const Arg &a = args_[i], &b = args_[j];
                if (!(a.written || b.written) || !overlaps(a.view, b.view)) continue;
                const Arg& out = a.written ? a : b;
                const Arg& other = a.written ? b : a;
                if (out.elementwise && !other.written && out.view.lowest == other.view.lowest &&
                    out.view.span_bytes == other.view.span_bytes)
                    continue;
                const std::string o = out.name, x = other.name;
                const std::string why =
                    other.written ? "both are written" : "'" + o + "' is written, '" + x + "' read";
                fail_value(std::string(fn_) + ": '" + o + "' and '" + x + "' overlap in memory (" +
                           why + "); pass separate arrays" +
                           (out.elementwise && !other.written ? ", or '" + x + "' itself as '" + o + "'"
                                                              : ""));
            }
    }

  private:
    struct Arg {
        const char* name;
        ArrayView view;
        bool written, elementwise;
    };
    // Inline, not a std::vector: an Operands is made on every call of every op, and its
    // allocation was a tenth of a small op's time.
    static constexpr int kMaxArgs = 12;
    Operands& add(const Arg& arg) {
        if (count_ == kMaxArgs)
            throw std::logic_error(std::string(fn_) + ": more than " + std::to_string(kMaxArgs) +
                                   " arrays for Operands (checks.h: raise kMaxArgs)");
        args_[count_++] = arg;
        return *this;
    }
    const char* fn_;
    Arg args_[kMaxArgs];
    int count_ = 0;
};

// ---- elementwise -------------------------------------------------------------------------

// A GEMM-based binding's precision argument: true for "bf16", false for "fp32".
inline bool bf16_precision(const std::string& precision, const char* fn) {
    if (precision != "fp32" && precision != "bf16")
        fail_value(std::string(fn) + ": argument 'precision' must be 'fp32' or 'bf16', got '" +
                   precision + "'");
    return precision == "bf16";
}

inline const ActivationInfo& activation_named(const std::string& name) {
    if (const ActivationInfo* a = find_activation(name.c_str())) return *a;
    std::string names;
    for (int i = 0; i < kNumActivations; ++i) names += std::string(i ? ", " : "") + kActivations[i].name;
    fail_value("unknown activation '" + name + "'; expected one of: " + names);
}

inline py::array_t<float> new_like(const py::array& a) {
    std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
    return py::array_t<float>(shape);
}

inline F32Array matrix_2d(py::handle obj, const char* fn, const char* arg) {
    F32Array x = as_f32(obj, fn, arg);
    require_rank(x, 2, fn, arg);
    require_nonempty(x, fn, arg);
    return x;
}

// A batch of rows over classes: no row at all is an empty batch, but a row needs a class.
inline F32Array rows_of_classes(py::handle obj, const char* fn, const char* arg) {
    F32Array x = as_f32(obj, fn, arg);
    require_rank(x, 2, fn, arg);
    if (x.shape(1) == 0)
        fail_value(std::string(fn) + ": argument '" + arg + "' has no classes (shape " +
                   shape_str(x) + ")");
    return x;
}

inline py::array_t<int64_t> labels_for(py::handle obj, int64_t rows, int64_t classes, const char* fn) {
    auto labels = as_indices(obj, fn, "labels", "integer class indices");
    if (labels.shape(0) != rows)
        fail_value(std::string(fn) + ": 'labels' must have one entry per row of 'logits' (" +
                   std::to_string(rows) + "), got " + std::to_string(labels.shape(0)));
    int64_t bad = first_label_out_of_range(labels.data(), rows, classes);
    if (bad >= 0)
        fail_value(std::string(fn) + ": labels[" + std::to_string(bad) + "] = " +
                   std::to_string(labels.data()[bad]) + " is outside [0, " + std::to_string(classes) +
                   ") for logits with " + std::to_string(classes) + " classes");
    return labels;
}

inline void require_same_size(const py::array& a, const py::array& b, const char* fn, const char* an,
                       const char* bn) {
    if (a.size() != b.size())
        fail_value(std::string(fn) + ": '" + bn + "' must match '" + an + "' " + shape_str(a) +
                   ", got " + shape_str(b));
}

// A Python integer in [0, 2**64): seeds and stream offsets.
// An int argument as Python sees it (bool refused: True is no count or seed).
inline py::int_ int_arg(py::handle obj, const char* fn, const char* arg) {
    if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr()))
        fail_type(std::string(fn) + ": argument '" + arg + "' must be an int, got " +
                  py::str(py::type::of(obj)).cast<std::string>());
    py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
    if (!value) throw py::error_already_set();
    return value;
}

inline uint64_t u64_arg(py::handle obj, const char* fn, const char* arg) {
    py::int_ value = int_arg(obj, fn, arg);
    unsigned long long v = PyLong_AsUnsignedLongLong(value.ptr());
    if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
        PyErr_Clear();
        fail_value(std::string(fn) + ": argument '" + arg + "' must be in [0, 2**64), got " +
                   py::str(value).cast<std::string>());
    }
    return static_cast<uint64_t>(v);
}

// An int argument in [lo, hi], `why` saying where the bounds come from.
inline int64_t int_in(py::handle obj, int64_t lo, int64_t hi, const char* fn, const char* arg,
               const std::string& why = "") {
    py::int_ value = int_arg(obj, fn, arg);
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
    if (overflow || v < lo || v > hi)
        fail_value(std::string(fn) + ": '" + arg + "' must be in [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "]" + why + ", got " + py::str(value).cast<std::string>());
    return v;
}

// A thread count: at most max_threads() (a few per online CPU), since libgomp fails, or
// crashes, when it cannot create the threads asked for.
inline int thread_count(py::handle obj, const char* fn, const char* arg) {
    return static_cast<int>(int_in(obj, 1, max_threads(), fn, arg,
                                   " (" + std::to_string(kThreadsPerCpu) + " per online CPU)"));
}

// A finite float >= 0 (hyperparameters such as a dropout rate, a shift, a noise level).
inline float nonneg_arg(double v, const char* fn, const char* arg) {
    if (!(v >= 0.0) || !std::isfinite(v))
        fail_value(std::string(fn) + ": '" + arg + "' must be a finite number >= 0, got " +
                   std::to_string(v));
    return static_cast<float>(v);
}

// p in [0, 1) and at most 1 - 2^-24, the resolution of the uniforms the masks compare it
// with: a p above it rounds to 1.0f and would keep nothing.
inline float dropout_rate(double p, const char* fn) {
    if (!(p >= 0.0 && p <= 1.0 - 0x1.0p-24)) {
        std::ostringstream msg;
        msg << fn << ": 'p' must be in [0, 1), at most 1 - 2**-24 (the masks' resolution); got "
            << std::setprecision(17) << p;
        fail_value(msg.str());
    }
    return static_cast<float>(p);
}

// An (h, w) pair given as one int or two: kernel sizes (lo 1), strides (1), paddings (0).
inline std::pair<int64_t, int64_t> pair_arg(py::handle obj, int64_t lo, const char* fn, const char* arg) {
    const std::string why = " (an int, or a pair of ints)";
    if (py::isinstance<py::tuple>(obj) || py::isinstance<py::list>(obj)) {
        py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
        if (seq.size() != 2)
            fail_value(std::string(fn) + ": '" + arg + "' must be an int or a pair of ints, got " +
                       py::str(obj).cast<std::string>());
        return {int_in(seq[0], lo, int64_t{1} << 30, fn, arg, why),
                int_in(seq[1], lo, int64_t{1} << 30, fn, arg, why)};
    }
    const int64_t v = int_in(obj, lo, int64_t{1} << 30, fn, arg, why);
    return {v, v};
}

// `out` (None: a new array) as the float32 array of `shape` a kernel writes whole.
inline py::array_t<float> out_array(py::handle out_obj, const std::vector<py::ssize_t>& shape,
                                    const char* fn, const char* arg = "out") {
    if (out_obj.is_none()) return py::array_t<float>(shape);
    auto out = in_place(out_obj, fn, arg);
    bool same = out.ndim() == static_cast<py::ssize_t>(shape.size());
    for (size_t i = 0; same && i < shape.size(); ++i) same = out.shape(i) == shape[i];
    if (!same) {
        std::string want = "(";
        for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
        fail_value(std::string(fn) + ": argument '" + arg + "' must have shape " + want +
                   (shape.size() == 1 ? ",)" : ")") + ", got " + shape_str(out));
    }
    return out;
}

// One registration function per op family (the files of this folder).
void bind_config(py::module_& m);
void bind_gemm(py::module_& m);
void bind_activation(py::module_& m);
void bind_loss(py::module_& m);
void bind_optim(py::module_& m);
void bind_reduce(py::module_& m);
void bind_dropout(py::module_& m);
void bind_augment(py::module_& m);
void bind_conv(py::module_& m);
void bind_pool(py::module_& m);
void bind_norm(py::module_& m);
void bind_tensor(py::module_& m);
void warn_about_environment();

}  // namespace fastnn::bind
