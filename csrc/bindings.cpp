// The only file that knows pybind11. Every argument is checked here (dtype, rank, shape,
// contiguity, ranges) so that no kernel ever sees a bad one; kernels run without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cpu/isa.h"
#include "ops.h"
#include "parallel.h"

namespace py = pybind11;
using namespace fastnn;

namespace {

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i) s += ", ";
        s += std::to_string(a.shape(i));
    }
    return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

[[noreturn]] void fail_type(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] void fail_value(const std::string& msg) { throw py::value_error(msg); }

// numpy's reason for a failed conversion is not lost: MemoryError stays a MemoryError (an
// input too big to copy), any other failure is a TypeError naming the argument.
[[noreturn]] void conversion_failed(const char* fn, const char* arg, const char* target) {
    py::error_already_set cause;  // takes numpy's error off the indicator
    const bool memory = cause.matches(PyExc_MemoryError);
    const std::string msg = std::string(fn) + ": argument '" + arg + "' could not be converted to " +
                            target + ": " + cause.what();
    py::raise_from(cause, memory ? PyExc_MemoryError : PyExc_TypeError, msg.c_str());
    throw py::error_already_set();
}

constexpr int kEnsureCopy = 0x0020;  // NPY_ARRAY_ENSURECOPY (pybind11 does not name it)

// Every conversion of an argument goes through here (dtype nullptr: any array).
PyObject* from_any(py::handle obj, PyObject* dtype, int flags, const char* fn, const char* arg,
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
py::array_t<T, py::array::c_style | py::array::forcecast> convert(py::handle obj, const char* fn,
                                                                  const char* arg, const char* target,
                                                                  bool copy = false) {
    using api = py::detail::npy_api;
    const int flags = api::NPY_ARRAY_C_CONTIGUOUS_ | api::NPY_ARRAY_ALIGNED_ |
                      api::NPY_ARRAY_FORCECAST_ | (copy ? kEnsureCopy : 0);
    return py::reinterpret_steal<py::array_t<T, py::array::c_style | py::array::forcecast>>(
        from_any(obj, py::dtype::of<T>().release().ptr(), flags, fn, arg, target));
}

py::array as_numpy(py::handle obj, const char* fn, const char* arg) {
    if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);
    return py::reinterpret_steal<py::array>(from_any(obj, nullptr, 0, fn, arg, "an array"));
}

// A NumPy array of real numbers (float, int or bool), as C-contiguous float32.
F32Array as_f32(py::handle obj, const char* fn, const char* arg) {
    py::array arr = as_numpy(obj, fn, arg);
    char kind = arr.dtype().kind();
    if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
        fail_type(std::string(fn) + ": argument '" + arg +
                  "' must hold real numbers (float or int), got dtype " + dtype_str(arr));
    return convert<float>(arr, fn, arg, "C-contiguous float32");
}

void require_rank(const py::array& a, py::ssize_t rank, const char* fn, const char* arg) {
    if (a.ndim() != rank)
        fail_value(std::string(fn) + ": argument '" + arg + "' must be " + std::to_string(rank) +
                   "-D, got shape " + shape_str(a));
}

// Integer indices (labels, row numbers) as a private int64 copy: the kernel reads them
// without the GIL, so the values checked must be the values read, whatever another thread
// does to the caller's array meanwhile. They are small beside the data they index.
py::array_t<int64_t> as_indices(py::handle obj, const char* fn, const char* arg,
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

void require_nonempty(const py::array& a, const char* fn, const char* arg) {
    if (a.size() == 0)
        fail_value(std::string(fn) + ": argument '" + arg + "' is empty (shape " + shape_str(a) + ")");
}

void require_same_shape(const py::array& a, const py::array& b, const char* fn, const char* an,
                        const char* bn) {
    bool same = a.ndim() == b.ndim();
    for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == b.shape(i);
    if (!same)
        fail_value(std::string(fn) + ": '" + bn + "' must have the shape of '" + an + "' " +
                   shape_str(a) + ", got " + shape_str(b));
}

// An array a kernel writes into as it is (no copy): float32, aligned, writeable.
void require_writable_f32(const py::array& arr, const char* fn, const char* arg) {
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
py::array_t<float> in_place(py::handle obj, const char* fn, const char* arg) {
    py::array arr = as_numpy(obj, fn, arg);
    require_writable_f32(arr, fn, arg);
    if (!(arr.flags() & py::array::c_style))
        fail_value(std::string(fn) + ": argument '" + arg + "' must be C-contiguous");
    return py::reinterpret_borrow<py::array_t<float>>(arr);
}

// ---- GEMM operands: strided views are used as they are, without a copy ----------------

struct Matrix {
    py::array keep;  // owns the memory `data` points into
    const float* data;
    int64_t rows, cols, ld;
    bool transposed;  // element (i, j) is data[j * ld + i] rather than data[i * ld + j]
};

// A row-major or column-major float32 view with unit inner stride is taken as is
// (a slice keeps its leading dimension, a transpose flips `transposed`); anything else
// is converted once to C-contiguous float32.
Matrix as_matrix(py::handle obj, const char* fn, const char* arg) {
    py::array arr = as_numpy(obj, fn, arg);
    require_rank(arr, 2, fn, arg);
    const int64_t r = arr.shape(0), c = arr.shape(1);
    if (arr.dtype().kind() == 'f' && arr.itemsize() == 4 && (arr.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) {
        const int64_t s0 = arr.strides(0), s1 = arr.strides(1);
        const float* p = static_cast<const float*>(arr.data());
        if ((c <= 1 || s1 == 4) && (r <= 1 || (s0 > 0 && s0 % 4 == 0 && s0 / 4 >= c)))
            return {arr, p, r, c, r <= 1 ? std::max<int64_t>(c, 1) : s0 / 4, false};
        if ((r <= 1 || s0 == 4) && (c <= 1 || (s1 > 0 && s1 % 4 == 0 && s1 / 4 >= r)))
            return {arr, p, r, c, c <= 1 ? std::max<int64_t>(r, 1) : s1 / 4, true};
    }
    F32Array conv = as_f32(arr, fn, arg);
    return {conv, conv.data(), r, c, std::max<int64_t>(c, 1), false};
}

// ---- aliasing ---------------------------------------------------------------------------

bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
    auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
    return a_bytes && b_bytes && pa < pb + b_bytes && pb < pa + a_bytes;
}

// The memory one kernel call reads and writes, checked before it runs. The kernels assume an
// output shares no byte with any other operand (they read inputs after writing outputs, and
// the optimizers' loops are __restrict), so any overlap is refused, naming both arguments;
// the one exception is an output marked elementwise being exactly one of the inputs (same
// start, same size), for a kernel that reads element i before it writes element i.
class Operands {
  public:
    explicit Operands(const char* fn) : fn_(fn) {}
    Operands& input(const char* name, const void* p, size_t bytes) {
        spans_.push_back({name, p, bytes, false, false});
        return *this;
    }
    Operands& input(const char* name, const py::array& a) { return input(name, a.data(), a.nbytes()); }
    Operands& output(const char* name, const void* p, size_t bytes, bool elementwise = false) {
        spans_.push_back({name, p, bytes, true, elementwise});
        return *this;
    }
    Operands& output(const char* name, const py::array& a, bool elementwise = false) {
        return output(name, a.data(), a.nbytes(), elementwise);
    }
    void check() const {
        for (size_t i = 0; i < spans_.size(); ++i)
            for (size_t j = 0; j < i; ++j) {
                const Span &a = spans_[i], &b = spans_[j];
                if (!(a.written || b.written) || !overlaps(a.p, a.bytes, b.p, b.bytes)) continue;
                const Span& out = a.written ? a : b;
                const Span& other = a.written ? b : a;
                if (out.elementwise && !other.written && out.p == other.p && out.bytes == other.bytes)
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
    struct Span {
        const char* name;
        const void* p;
        size_t bytes;
        bool written, elementwise;
    };
    const char* fn_;
    std::vector<Span> spans_;
};

size_t span_bytes(const Matrix& m) {
    int64_t major = m.transposed ? m.cols : m.rows, minor = m.transposed ? m.rows : m.cols;
    return major == 0 || minor == 0 ? 0 : static_cast<size_t>(((major - 1) * m.ld + minor) * 4);
}

Activation activation_by_name(const std::string& name);

py::array_t<float> gemm_py(py::handle a_obj, py::handle b_obj, py::object out_obj, bool ta,
                           bool tb, float alpha, float beta, py::object bias_obj,
                           const std::string& activation, float act_alpha, bool reference) {
    const char* fn = reference ? "gemm_reference" : "gemm";
    Epilogue ep;
    ep.act = activation_by_name(activation);
    ep.act_alpha = act_alpha;
    Matrix a = as_matrix(a_obj, fn, "a"), b = as_matrix(b_obj, fn, "b");
    const int64_t m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols;
    const int64_t kb = tb ? b.cols : b.rows, n = tb ? b.rows : b.cols;
    if (k != kb)
        fail_value(std::string(fn) + ": inner dimensions differ: op(a) is (" + std::to_string(m) +
                   ", " + std::to_string(k) + ") and op(b) is (" + std::to_string(kb) + ", " +
                   std::to_string(n) + ")");
    py::array_t<float> out;
    int64_t ldc = std::max<int64_t>(n, 1);
    if (out_obj.is_none()) {
        out = py::array_t<float>({m, n});
        beta = 0.0f;
    } else {
        py::array arr = as_numpy(out_obj, fn, "out");
        require_writable_f32(arr, fn, "out");
        require_rank(arr, 2, fn, "out");
        if (arr.shape(0) != m || arr.shape(1) != n)
            fail_value(std::string(fn) + ": argument 'out' must have shape (" + std::to_string(m) +
                       ", " + std::to_string(n) + "), got " + shape_str(arr));
        const int64_t s0 = arr.strides(0), s1 = arr.strides(1);
        // An empty out has whatever strides numpy gave it ((0, 0) for a fresh one).
        if (m > 0 && n > 0 && !((n <= 1 || s1 == 4) && (m <= 1 || (s0 > 0 && s0 % 4 == 0 && s0 / 4 >= n))))
            fail_value(std::string(fn) + ": argument 'out' must be row-major with unit column stride");
        if (m > 1) ldc = s0 / 4;
        out = py::reinterpret_borrow<py::array_t<float>>(arr);
    }
    Operands ops(fn);
    ops.input("a", a.data, span_bytes(a)).input("b", b.data, span_bytes(b));
    ops.output("out", out.data(), m == 0 || n == 0 ? 0 : static_cast<size_t>(((m - 1) * ldc + n) * 4));
    F32Array bias;
    if (!bias_obj.is_none()) {
        bias = as_f32(bias_obj, fn, "bias");
        if (bias.ndim() != 1 || bias.shape(0) != n)
            fail_value(std::string(fn) + ": 'bias' must have shape (" + std::to_string(n) +
                       ",) (one value per column of the result), got " + shape_str(bias));
        ep.bias = bias.data();
        ops.input("bias", bias);
    }
    ops.check();
    float* c = out.mutable_data();
    const bool ea = ta != a.transposed, eb = tb != b.transposed;
    {
        py::gil_scoped_release nogil;
        if (reference)
            gemm_reference(ea, eb, m, n, k, alpha, a.data, a.ld, b.data, b.ld, beta, c, ldc, ep);
        else
            gemm(ea, eb, m, n, k, alpha, a.data, a.ld, b.data, b.ld, beta, c, ldc, ep);
    }
    return out;
}

// ---- elementwise -------------------------------------------------------------------------

Activation activation_by_name(const std::string& name) {
    if (name == "identity" || name == "linear") return Activation::Identity;
    if (name == "sigmoid") return Activation::Sigmoid;
    if (name == "relu") return Activation::Relu;
    if (name == "tanh") return Activation::Tanh;
    if (name == "leaky_relu") return Activation::LeakyRelu;
    if (name == "elu") return Activation::Elu;
    if (name == "gelu") return Activation::Gelu;
    if (name == "softplus") return Activation::Softplus;
    fail_value("unknown activation '" + name + "'; expected one of: identity (or linear), "
               "sigmoid, relu, tanh, leaky_relu, elu, gelu, softplus");
}

py::array_t<float> new_like(const py::array& a) {
    std::vector<py::ssize_t> shape(a.shape(), a.shape() + a.ndim());
    return py::array_t<float>(shape);
}

F32Array matrix_2d(py::handle obj, const char* fn, const char* arg) {
    F32Array x = as_f32(obj, fn, arg);
    require_rank(x, 2, fn, arg);
    require_nonempty(x, fn, arg);
    return x;
}

// A batch of rows over classes: no row at all is an empty batch, but a row needs a class.
F32Array rows_of_classes(py::handle obj, const char* fn, const char* arg) {
    F32Array x = as_f32(obj, fn, arg);
    require_rank(x, 2, fn, arg);
    if (x.shape(1) == 0)
        fail_value(std::string(fn) + ": argument '" + arg + "' has no classes (shape " +
                   shape_str(x) + ")");
    return x;
}

using LossFn = double (*)(const float*, const float*, float*, int64_t);

py::tuple elementwise_loss(py::handle pred_obj, py::handle target_obj, const char* fn,
                           LossFn loss) {
    F32Array pred = as_f32(pred_obj, fn, "pred"), target = as_f32(target_obj, fn, "target");
    require_nonempty(pred, fn, "pred");
    require_same_shape(pred, target, fn, "pred", "target");
    auto grad = new_like(pred);
    double value;
    {
        py::gil_scoped_release nogil;
        value = loss(pred.data(), target.data(), grad.mutable_data(), pred.size());
    }
    return py::make_tuple(value, grad);
}

py::array_t<int64_t> labels_for(py::handle obj, int64_t rows, int64_t classes, const char* fn) {
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

void require_same_size(const py::array& a, const py::array& b, const char* fn, const char* an,
                       const char* bn) {
    if (a.size() != b.size())
        fail_value(std::string(fn) + ": '" + bn + "' must match '" + an + "' " + shape_str(a) +
                   ", got " + shape_str(b));
}

// A Python integer in [0, 2**64): seeds and stream offsets.
// An int argument as Python sees it (bool refused: True is no count or seed).
py::int_ int_arg(py::handle obj, const char* fn, const char* arg) {
    if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr()))
        fail_type(std::string(fn) + ": argument '" + arg + "' must be an int, got " +
                  py::str(py::type::of(obj)).cast<std::string>());
    py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
    if (!value) throw py::error_already_set();
    return value;
}

uint64_t u64_arg(py::handle obj, const char* fn, const char* arg) {
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
int64_t int_in(py::handle obj, int64_t lo, int64_t hi, const char* fn, const char* arg,
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
int thread_count(py::handle obj, const char* fn, const char* arg) {
    return static_cast<int>(int_in(obj, 1, max_threads(), fn, arg,
                                   " (" + std::to_string(kThreadsPerCpu) + " per online CPU)"));
}

// A finite float >= 0 (hyperparameters such as a dropout rate, a shift, a noise level).
float nonneg_arg(double v, const char* fn, const char* arg) {
    if (!(v >= 0.0) || !std::isfinite(v))
        fail_value(std::string(fn) + ": '" + arg + "' must be a finite number >= 0, got " +
                   std::to_string(v));
    return static_cast<float>(v);
}

// A buffer of an optimizer: in place, with param's size.
py::array_t<float> state_buffer(py::handle obj, const py::array& param, const char* fn,
                                const char* arg) {
    auto a = in_place(obj, fn, arg);
    require_same_size(param, a, fn, "param", arg);
    return a;
}

float dropout_rate(double p, const char* fn) {
    if (!(p >= 0.0 && p < 1.0))
        fail_value(std::string(fn) + ": 'p' must be in [0, 1), got " + std::to_string(p));
    return static_cast<float>(p);
}

py::array_t<float> dropout_py(py::handle x_obj, double p_in, py::handle seed_obj,
                              py::handle offset_obj, const char* fn, const char* arg) {
    F32Array x = as_f32(x_obj, fn, arg);
    const float p = dropout_rate(p_in, fn);
    const uint64_t seed = u64_arg(seed_obj, fn, "seed"), offset = u64_arg(offset_obj, fn, "offset");
    auto y = new_like(x);
    py::gil_scoped_release nogil;
    dropout(x.data(), y.mutable_data(), x.size(), p, seed, offset);
    return y;
}

// Best-of-rounds FMA rate of `uk`'s probe on `threads` threads for `seconds`: the machine
// is shared, so the best round is the one nothing else interrupted.
double measure_peak(const Microkernel& uk, int threads, double seconds) {
    if (!uk.fma_probe) return 0.0;
    const int64_t iters = 1 << 18;
    double best = 0.0;
    const auto start = std::chrono::steady_clock::now();
    do {
        double flops = 0.0;
        const auto t0 = std::chrono::steady_clock::now();
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) reduction(+ : flops)
#endif
        for (int t = 0; t < threads; ++t) flops += uk.fma_probe(iters);
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, flops / dt / 1e9);
    } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds);
    return best;
}

py::list caches_list(const std::vector<CacheLevel>& caches) {
    py::list out;
    for (const CacheLevel& c : caches) {
        py::dict d;
        d["level"] = c.level;
        d["size"] = c.size_bytes;
        d["ways"] = c.ways;
        d["line"] = c.line_bytes;
        d["sets"] = c.sets();
        d["shared_by"] = c.shared_by;
        out.append(d);
    }
    return out;
}

py::dict cpu_dict() {
    const CpuInfo& cpu = cpu_info();
    py::dict d;
    d["vendor"] = cpu.vendor;
    d["model_name"] = cpu.model_name;
    d["family"] = cpu.family;
    d["model"] = cpu.model;
    d["stepping"] = cpu.stepping;
    py::dict features;
    features["avx2"] = cpu.avx2;
    features["fma"] = cpu.fma;
    features["avx512f"] = cpu.avx512f;
    features["avx512_bf16"] = cpu.avx512_bf16;
    features["amx_bf16"] = cpu.amx_bf16;
    d["features"] = features;
    d["caches"] = caches_list(cpu.caches);
    d["cache_spec"] = cache_spec(cpu.caches);
    d["cache_source"] = cpu.cache_source;
    if (cpu.cache_source == "FASTNN_CACHE") d["detected_cache_spec"] = cache_spec(cpu.detected_caches);
    return d;
}

py::dict blocking_dict(const GemmContext& ctx) {
    py::dict d;
    d["isa"] = ctx.uk->isa;
    d["mr"] = ctx.uk->mr;
    d["nr"] = ctx.uk->nr;
    d["kc"] = ctx.blocking.kc;
    d["nc"] = ctx.blocking.nc;
    d["mc"] = ctx.blocking.mc;
    d["source"] = ctx.source;
    return d;
}

const GemmContext& context_arg(const std::string& isa, const char* fn) {
    const GemmContext* ctx = gemm_context(isa.empty() ? nullptr : isa.c_str());
    if (!ctx) fail_value(std::string(fn) + ": isa '" + isa + "' is not a GEMM path this CPU runs");
    return *ctx;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "fastnn's C++ kernels (see _C.pyi for the contract)";
    m.attr("__version__") = FASTNN_VERSION;  // pyproject.toml's, through CMake

    m.def("config", [] {
        py::dict d;
        const char* names[4];
        int count = supported_isas(names);
        py::list isas;
        for (int i = 0; i < count; ++i) isas.append(names[i]);
        d["isa"] = active_isa();
        d["isa_supported"] = isas;
        d["openmp"] = have_openmp();
        d["num_threads"] = get_num_threads();
        d["load_pauses"] = load_guard::pauses();
        d["cuda"] = false;
        d["cpu"] = cpu_dict();
        d["blocking"] = blocking_dict(*gemm_context());
        return d;
    });
    m.def("fma_peak_per_core", [](const std::string& isa) {
        // Measured once per ISA (0.1 s), for config() and the benchmarks' %-of-peak.
        static std::mutex mutex;
        static std::map<std::string, double> measured;
        const GemmContext& ctx = context_arg(isa, "fma_peak_per_core");
        std::lock_guard<std::mutex> lock(mutex);
        auto it = measured.find(ctx.uk->isa);
        if (it != measured.end()) return it->second;
        double peak;
        {
            py::gil_scoped_release nogil;
            peak = measure_peak(*ctx.uk, 1, 0.1);
        }
        measured[ctx.uk->isa] = peak;
        return peak;
    }, py::arg("isa") = "", "Measured float32 FMA peak of one core in GFLOP/s on `isa`'s "
       "widest vectors (default: the active ISA), measured once and remembered.");
    m.def("blocking", [](const std::string& isa) { return blocking_dict(context_arg(isa, "blocking")); },
          py::arg("isa") = "", "The GEMM blocking in use for `isa` (default: the active ISA).");
    m.def("set_blocking", [](py::handle kc_obj, py::handle nc_obj, py::handle mc_obj,
                             const std::string& source, const std::string& isa) {
        const int64_t kc = int_in(kc_obj, 1, 65536, "set_blocking", "kc");
        const int64_t nc = int_in(nc_obj, 1, int64_t{1} << 20, "set_blocking", "nc");
        const int64_t mc = mc_obj.is_none() ? context_arg(isa, "set_blocking").blocking.mc
                                            : int_in(mc_obj, 1, int64_t{1} << 20, "set_blocking", "mc");
        static const char* const sources[] = {"tuned", "override"};
        const char* src = nullptr;
        for (const char* s_ : sources)
            if (source == s_) src = s_;
        if (!src) fail_value("set_blocking: source must be 'tuned' or 'override', got '" + source + "'");
        context_arg(isa, "set_blocking");
        set_blocking(isa.empty() ? nullptr : isa.c_str(), Blocking{kc, nc, mc}, src);
    }, py::arg("kc"), py::arg("nc"), py::arg("mc") = py::none(), py::kw_only(),
       py::arg("source") = "override",
       py::arg("isa") = "");
    m.def("reset_blocking", [](const std::string& isa) {
        context_arg(isa, "reset_blocking");
        reset_blocking(isa.empty() ? nullptr : isa.c_str());
    }, py::arg("isa") = "");
    m.def("model_blocking", [](const std::string& isa, py::object cache) {
        // Any ISA built in, even one this CPU lacks: the model's answer for another machine.
        const Microkernel* uk = isa.empty() ? gemm_context()->uk : kernel_named(isa.c_str());
        if (!uk) fail_value("model_blocking: isa '" + isa + "' is not a GEMM path of this build");
        std::vector<CacheLevel> caches = cpu_info().caches;
        if (!cache.is_none()) {
            if (!py::isinstance<py::str>(cache))
                throw py::type_error("model_blocking: cache must be a str such as '48K:12,2M:16,300M:15' or None");
            const std::string err = parse_cache_spec(cache.cast<std::string>(), caches);
            if (!err.empty()) fail_value("model_blocking: cache '" + cache.cast<std::string>() + "': " + err);
        }
        const Blocking b = model_blocking(caches, uk->mr, uk->nr);
        return py::make_tuple(b.kc, b.nc, b.mc);
    }, py::arg("isa") = "", py::arg("cache") = py::none(),
       "(kc, nc, mc) that the cache model gives `isa`'s kernel for a geometry (default: this CPU's).");
    m.def("set_num_threads", [](py::handle n) {
        set_num_threads(thread_count(n, "set_num_threads", "n"));
    }, py::arg("n"));
    m.def("max_num_threads", &max_threads);
    m.def("get_num_threads", &get_num_threads);
    m.def("get_isa", [] { return std::string(active_isa()); });
    m.def("supported_isas", [] {
        const char* names[4];
        int count = supported_isas(names);
        std::vector<std::string> out(names, names + count);
        return out;
    });
    m.def("set_isa", [](const std::string& name) {
        if (!set_isa(name.c_str()))
            fail_value("set_isa: '" + name + "' is not a GEMM path this CPU runs; supported: " +
                       py::str(py::cast([] {
                           const char* names[4];
                           int count = supported_isas(names);
                           return std::vector<std::string>(names, names + count);
                       }())).cast<std::string>());
    }, py::arg("name"));
    // For the tests: the ISA whose copies the elementwise kernels run now (cpu/isa.h).
    m.def("_elementwise_isa", [] { return std::string(isa_name(elementwise_isa())); });

    m.def("fma_peak_gflops", [](py::handle threads_arg, double seconds) -> double {
        const int threads = thread_count(threads_arg, "fma_peak_gflops", "threads");
        nonneg_arg(seconds, "fma_peak_gflops", "seconds");
        const Microkernel& uk = *gemm_context()->uk;
        py::gil_scoped_release nogil;
        return measure_peak(uk, threads, seconds);
    }, py::arg("threads") = 1, py::arg("seconds") = 0.5,
       "Measured float32 FMA peak in GFLOP/s on `threads` threads, on the active ISA's widest "
       "vectors (AVX-512, AVX2+FMA, or the baseline's multiply and add).");

    for (bool reference : {false, true})
        m.def(reference ? "gemm_reference" : "gemm",
              [reference](py::handle a, py::handle b, py::object out, bool ta, bool tb,
                          float alpha, float beta, py::object bias, const std::string& activation,
                          float act_alpha) {
                  return gemm_py(a, b, out, ta, tb, alpha, beta, bias, activation, act_alpha,
                                 reference);
              },
              py::arg("a"), py::arg("b"), py::arg("out") = py::none(), py::kw_only(),
              py::arg("transpose_a") = false, py::arg("transpose_b") = false,
              py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f, py::arg("bias") = py::none(),
              py::arg("activation") = "identity", py::arg("activation_alpha") = 0.01f);

    m.def("column_sum", [](py::handle x_obj, py::handle out_obj, float beta) {
        F32Array x = as_f32(x_obj, "column_sum", "x");
        require_rank(x, 2, "column_sum", "x");
        auto out = in_place(out_obj, "column_sum", "out");
        if (out.ndim() != 1 || out.shape(0) != x.shape(1))
            fail_value("column_sum: 'out' must have shape (" + std::to_string(x.shape(1)) +
                       ",), got " + shape_str(out));
        Operands("column_sum").input("x", x).output("out", out).check();
        py::gil_scoped_release nogil;
        column_sum(x.data(), out.mutable_data(), x.shape(0), x.shape(1), beta);
    }, py::arg("x"), py::arg("out"), py::arg("beta") = 0.0f);

    m.def("activation_forward", [](const std::string& name, py::handle x_obj, float alpha) {
        Activation act = activation_by_name(name);
        F32Array x = as_f32(x_obj, "activation_forward", "x");
        auto y = new_like(x);
        py::gil_scoped_release nogil;
        activation_forward(act, x.data(), y.mutable_data(), x.size(), alpha);
        return y;
    }, py::arg("name"), py::arg("x"), py::arg("alpha") = 0.01f);
    m.def("activation_backward", [](const std::string& name, py::handle y_obj, py::handle g_obj,
                                    float alpha, py::object x_obj, py::object out_obj,
                                    py::object bias_grad_obj) {
        const char* fn = "activation_backward";
        Activation act = activation_by_name(name);
        F32Array y = as_f32(y_obj, fn, "y");
        F32Array g = as_f32(g_obj, fn, "grad_y");
        require_same_shape(y, g, fn, "y", "grad_y");
        F32Array x;  // only gelu reads it; for the others it is ignored, as documented
        if (act == Activation::Gelu) {
            if (x_obj.is_none())
                fail_value("activation_backward: 'gelu' needs x, the forward input "
                           "(its derivative is not a function of y); pass x=...");
            x = as_f32(x_obj, fn, "x");
            require_same_shape(y, x, fn, "y", "x");
        }
        if (act == Activation::Elu && !(alpha >= 0.0f))
            fail_value("activation_backward: 'elu' needs alpha >= 0 (its derivative is "
                       "recovered from y), got " + std::to_string(alpha));
        // out may be grad_y itself (or y, or x): the gradient is then computed in place.
        py::array_t<float> gx = out_obj.is_none() ? new_like(y) : in_place(out_obj, fn, "out");
        require_same_shape(y, gx, fn, "y", "out");
        Operands ops(fn);
        ops.input("y", y).input("grad_y", g).output("out", gx, /*elementwise=*/true);
        if (x) ops.input("x", x);
        float* db = nullptr;
        if (!bias_grad_obj.is_none()) {
            require_rank(y, 2, fn, "y");
            auto bias_grad = in_place(bias_grad_obj, fn, "bias_grad");
            if (bias_grad.ndim() != 1 || bias_grad.shape(0) != y.shape(1))
                fail_value("activation_backward: 'bias_grad' must have shape (" +
                           std::to_string(y.shape(1)) + ",), got " + shape_str(bias_grad));
            db = bias_grad.mutable_data();
            ops.output("bias_grad", bias_grad);
        }
        ops.check();
        const float* xp = x ? x.data() : nullptr;
        float* gxp = gx.mutable_data();
        {
            py::gil_scoped_release nogil;
            if (db)
                activation_backward_bias(act, xp, y.data(), g.data(), gxp, y.shape(0), y.shape(1),
                                         alpha, db);
            else
                activation_backward(act, xp, y.data(), g.data(), gxp, y.size(), alpha);
        }
        return gx;
    }, py::arg("name"), py::arg("y"), py::arg("grad_y"), py::arg("alpha") = 0.01f,
       py::arg("x") = py::none(), py::arg("out") = py::none(), py::arg("bias_grad") = py::none());
    m.def("gather_rows", [](py::handle x_obj, py::handle idx_obj, py::object out_obj) {
        const char* fn = "gather_rows";
        F32Array x = as_f32(x_obj, fn, "x");
        if (x.ndim() < 1) fail_value("gather_rows: 'x' must have a first (sample) axis");
        auto idx = as_indices(idx_obj, fn, "index", "integers");
        const int64_t n = idx.shape(0), rows = x.shape(0), cols = rows ? x.size() / rows : 0;
        int64_t bad = first_label_out_of_range(idx.data(), n, rows);
        if (bad >= 0)
            fail_value("gather_rows: index[" + std::to_string(bad) + "] = " +
                       std::to_string(idx.data()[bad]) + " is outside [0, " + std::to_string(rows) + ")");
        std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
        shape[0] = n;
        py::array_t<float> out;
        if (out_obj.is_none()) {
            out = py::array_t<float>(shape);
        } else {
            out = in_place(out_obj, fn, "out");
            if (out.size() != n * cols || out.ndim() != x.ndim() || out.shape(0) != n)
                fail_value("gather_rows: 'out' must have shape (" + std::to_string(n) +
                           ", ...) like x's rows, got " + shape_str(out));
        }
        Operands(fn).input("x", x).output("out", out).check();
        float* o = out.mutable_data();
        py::gil_scoped_release nogil;
        gather_rows(x.data(), idx.data(), o, n, cols);
        return out;
    }, py::arg("x"), py::arg("index"), py::arg("out") = py::none(),
       "out[i] = x[index[i]]: a shuffled mini-batch, copied in parallel.");
    m.def("softmax_forward", [](py::handle x_obj) {
        F32Array x = rows_of_classes(x_obj, "softmax_forward", "x");
        auto y = new_like(x);
        py::gil_scoped_release nogil;
        softmax_forward(x.data(), y.mutable_data(), x.shape(0), x.shape(1));
        return y;
    }, py::arg("x"));
    m.def("softmax_backward", [](py::handle y_obj, py::handle g_obj) {
        F32Array y = rows_of_classes(y_obj, "softmax_backward", "y");
        F32Array g = as_f32(g_obj, "softmax_backward", "grad_y");
        require_same_shape(y, g, "softmax_backward", "y", "grad_y");
        auto gx = new_like(y);
        py::gil_scoped_release nogil;
        softmax_backward(y.data(), g.data(), gx.mutable_data(), y.shape(0), y.shape(1));
        return gx;
    }, py::arg("y"), py::arg("grad_y"));

    m.def("mse", [](py::handle p, py::handle t) { return elementwise_loss(p, t, "mse", mse); },
          py::arg("pred"), py::arg("target"));
    m.def("binary_cross_entropy", [](py::handle p, py::handle t, bool from_logits) {
        return elementwise_loss(p, t, "binary_cross_entropy",
                                from_logits ? bce_with_logits : bce_probabilities);
    }, py::arg("pred"), py::arg("target"), py::arg("from_logits") = true);
    m.def("cross_entropy", [](py::handle logits_obj, py::handle labels_obj) {
        F32Array logits = matrix_2d(logits_obj, "cross_entropy", "logits");
        const int64_t rows = logits.shape(0), classes = logits.shape(1);
        auto labels = labels_for(labels_obj, rows, classes, "cross_entropy");
        auto grad = new_like(logits);
        double value;
        {
            py::gil_scoped_release nogil;
            value = cross_entropy(logits.data(), labels.data(), grad.mutable_data(), rows, classes);
        }
        return py::make_tuple(value, grad);
    }, py::arg("logits"), py::arg("labels"));
    m.def("cross_entropy_soft", [](py::handle logits_obj, py::handle target_obj) {
        F32Array logits = matrix_2d(logits_obj, "cross_entropy_soft", "logits");
        F32Array target = as_f32(target_obj, "cross_entropy_soft", "target");
        require_same_shape(logits, target, "cross_entropy_soft", "logits", "target");
        auto grad = new_like(logits);
        double value;
        {
            py::gil_scoped_release nogil;
            value = cross_entropy_soft(logits.data(), target.data(), grad.mutable_data(),
                                       logits.shape(0), logits.shape(1));
        }
        return py::make_tuple(value, grad);
    }, py::arg("logits"), py::arg("target"));

    m.def("sgd_step", [](py::handle p_obj, py::handle g_obj, py::object v_obj, float lr,
                         float momentum, bool nesterov, float weight_decay) {
        auto p = in_place(p_obj, "sgd_step", "param");
        F32Array g = as_f32(g_obj, "sgd_step", "grad");
        require_same_size(p, g, "sgd_step", "param", "grad");
        Operands ops("sgd_step");
        ops.output("param", p).input("grad", g);
        float* v = nullptr;
        if (momentum != 0.0f) {
            if (v_obj.is_none()) fail_value("sgd_step: 'velocity' is required when momentum != 0");
            auto va = in_place(v_obj, "sgd_step", "velocity");
            require_same_size(p, va, "sgd_step", "param", "velocity");
            v = va.mutable_data();
            ops.output("velocity", va);
        }
        ops.check();
        py::gil_scoped_release nogil;
        sgd_step(p.mutable_data(), g.data(), v, p.size(), lr, momentum, nesterov, weight_decay);
    }, py::arg("param"), py::arg("grad"), py::arg("velocity"), py::kw_only(), py::arg("lr"),
          py::arg("momentum") = 0.0f, py::arg("nesterov") = false, py::arg("weight_decay") = 0.0f);
    m.def("adam_step", [](py::handle p_obj, py::handle g_obj, py::handle m_obj, py::handle v_obj,
                          float lr, double beta1, double beta2, float eps, float weight_decay,
                          int64_t step, bool decoupled) {
        auto p = in_place(p_obj, "adam_step", "param");
        F32Array g = as_f32(g_obj, "adam_step", "grad");
        auto m1 = in_place(m_obj, "adam_step", "m");
        auto v = in_place(v_obj, "adam_step", "v");
        require_same_size(p, g, "adam_step", "param", "grad");
        require_same_size(p, m1, "adam_step", "param", "m");
        require_same_size(p, v, "adam_step", "param", "v");
        if (step < 1) fail_value("adam_step: 'step' counts from 1, got " + std::to_string(step));
        Operands("adam_step").output("param", p).input("grad", g).output("m", m1).output("v", v)
            .check();
        py::gil_scoped_release nogil;
        adam_step(p.mutable_data(), g.data(), m1.mutable_data(), v.mutable_data(), p.size(), lr,
                  beta1, beta2, eps, weight_decay, step, decoupled);
    }, py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"), py::kw_only(), py::arg("lr"),
          py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("step"), py::arg("decoupled") = false);

    m.def("adagrad_step", [](py::handle p_obj, py::handle g_obj, py::handle s_obj, float lr,
                             float eps, float weight_decay, float lr_decay, int64_t step) {
        const char* fn = "adagrad_step";
        auto p = in_place(p_obj, fn, "param");
        F32Array g = as_f32(g_obj, fn, "grad");
        require_same_size(p, g, fn, "param", "grad");
        auto sum_sq = state_buffer(s_obj, p, fn, "sum_sq");
        if (step < 1) fail_value("adagrad_step: 'step' counts from 1, got " + std::to_string(step));
        Operands(fn).output("param", p).input("grad", g).output("sum_sq", sum_sq).check();
        py::gil_scoped_release nogil;
        adagrad_step(p.mutable_data(), g.data(), sum_sq.mutable_data(), p.size(), lr, eps,
                     weight_decay, lr_decay, step);
    }, py::arg("param"), py::arg("grad"), py::arg("sum_sq"), py::kw_only(), py::arg("lr"),
          py::arg("eps"), py::arg("weight_decay"), py::arg("lr_decay"), py::arg("step"));

    m.def("rmsprop_step", [](py::handle p_obj, py::handle g_obj, py::handle sq_obj,
                             py::object buf_obj, py::object avg_obj, float lr, double alpha,
                             float eps, float weight_decay, float momentum, bool centered) {
        const char* fn = "rmsprop_step";
        auto p = in_place(p_obj, fn, "param");
        F32Array g = as_f32(g_obj, fn, "grad");
        require_same_size(p, g, fn, "param", "grad");
        auto square_avg = state_buffer(sq_obj, p, fn, "square_avg");
        float* sq = square_avg.mutable_data();
        Operands ops(fn);
        ops.output("param", p).input("grad", g).output("square_avg", square_avg);
        if (!(momentum >= 0.0f))
            fail_value("rmsprop_step: 'momentum' must be >= 0, got " + std::to_string(momentum));
        float *buf = nullptr, *avg = nullptr;
        if (momentum > 0.0f) {
            if (buf_obj.is_none()) fail_value("rmsprop_step: 'momentum_buf' is required when momentum > 0");
            auto momentum_buf = state_buffer(buf_obj, p, fn, "momentum_buf");
            ops.output("momentum_buf", momentum_buf);
            buf = momentum_buf.mutable_data();
        }
        if (centered) {
            if (avg_obj.is_none()) fail_value("rmsprop_step: 'grad_avg' is required when centered=True");
            auto grad_avg = state_buffer(avg_obj, p, fn, "grad_avg");
            ops.output("grad_avg", grad_avg);
            avg = grad_avg.mutable_data();
        }
        ops.check();
        py::gil_scoped_release nogil;
        rmsprop_step(p.mutable_data(), g.data(), sq, buf, avg, p.size(), lr, alpha, eps,
                     weight_decay, momentum, centered);
    }, py::arg("param"), py::arg("grad"), py::arg("square_avg"), py::arg("momentum_buf"),
          py::arg("grad_avg"), py::kw_only(), py::arg("lr"), py::arg("alpha"), py::arg("eps"),
          py::arg("weight_decay"), py::arg("momentum"), py::arg("centered"));

    m.def("add_penalty_grad", [](py::handle p_obj, py::handle g_obj, double l1, double l2) {
        const char* fn = "add_penalty_grad";
        F32Array p = as_f32(p_obj, fn, "param");
        auto g = in_place(g_obj, fn, "grad");
        require_same_size(p, g, fn, "param", "grad");
        nonneg_arg(l1, fn, "l1");
        nonneg_arg(l2, fn, "l2");
        Operands(fn).input("param", p).output("grad", g).check();
        py::gil_scoped_release nogil;
        return add_penalty_grad(p.data(), g.mutable_data(), p.size(), l1, l2);
    }, py::arg("param"), py::arg("grad"), py::arg("l1"), py::arg("l2"));

    // ---- reductions for gradient clipping ----
    m.def("sum_squares", [](py::handle x_obj) {
        F32Array x = as_f32(x_obj, "sum_squares", "x");
        py::gil_scoped_release nogil;
        return sum_squares(x.data(), x.size());
    }, py::arg("x"));
    m.def("scale_", [](py::handle x_obj, double factor) {
        auto x = in_place(x_obj, "scale_", "x");
        py::gil_scoped_release nogil;
        scale(x.mutable_data(), x.size(), static_cast<float>(factor));
    }, py::arg("x"), py::arg("factor"));
    m.def("clip_", [](py::handle x_obj, double low, double high) {
        auto x = in_place(x_obj, "clip_", "x");
        if (std::isnan(low) || std::isnan(high) || low > high)
            fail_value("clip_: needs low <= high, got low=" + std::to_string(low) +
                       ", high=" + std::to_string(high));
        py::gil_scoped_release nogil;
        clip(x.mutable_data(), x.size(), static_cast<float>(low), static_cast<float>(high));
    }, py::arg("x"), py::arg("low"), py::arg("high"));

    // ---- counter-based random numbers, dropout, augmentation ----
    m.def("random_uniform", [](py::handle n_obj, py::handle seed_obj, py::handle offset_obj) {
        // numpy's own limit on an array's bytes; beyond it its error would not name n.
        const int64_t n = int_in(n_obj, 0, PTRDIFF_MAX / 4, "random_uniform", "n");
        const uint64_t seed = u64_arg(seed_obj, "random_uniform", "seed");
        const uint64_t offset = u64_arg(offset_obj, "random_uniform", "offset");
        py::array_t<float> out(n);
        float* data = out.mutable_data();
        py::gil_scoped_release nogil;
        random_uniform(data, n, seed, offset);
        return out;
    }, py::arg("n"), py::arg("seed"), py::arg("offset") = 0);
    m.def("dropout_forward", [](py::handle x, double p, py::handle seed, py::handle offset) {
        return dropout_py(x, p, seed, offset, "dropout_forward", "x");
    }, py::arg("x"), py::arg("p"), py::arg("seed"), py::arg("offset"));
    m.def("dropout_backward", [](py::handle g, double p, py::handle seed, py::handle offset) {
        return dropout_py(g, p, seed, offset, "dropout_backward", "grad_y");
    }, py::arg("grad_y"), py::arg("p"), py::arg("seed"), py::arg("offset"));

    m.def("augment_images", [](py::handle x_obj, py::handle seed_obj, py::handle offset_obj,
                               double max_shift, bool flip, double max_rotation, double noise_std) {
        const char* fn = "augment_images";
        F32Array x = as_f32(x_obj, fn, "x");
        if (x.ndim() != 3 && x.ndim() != 4)
            fail_value("augment_images: argument 'x' must be a batch of images (N, H, W) or "
                       "(N, C, H, W), got shape " + shape_str(x));
        AugmentSpec spec;
        spec.max_shift = nonneg_arg(max_shift, fn, "max_shift");
        spec.flip = flip;
        spec.max_rotation = nonneg_arg(max_rotation, fn, "max_rotation");
        spec.noise_std = nonneg_arg(noise_std, fn, "noise_std");
        const uint64_t seed = u64_arg(seed_obj, fn, "seed"), offset = u64_arg(offset_obj, fn, "offset");
        const bool chw = x.ndim() == 4;
        const int64_t n = x.shape(0), c = chw ? x.shape(1) : 1;
        const int64_t h = x.shape(chw ? 2 : 1), w = x.shape(chw ? 3 : 2);
        auto out = new_like(x);
        float* dst = out.mutable_data();
        py::gil_scoped_release nogil;
        augment_images(x.data(), dst, n, c, h, w, spec, seed, offset);
        return out;
    }, py::arg("x"), py::kw_only(), py::arg("seed"), py::arg("offset"),
       py::arg("max_shift") = 0.0, py::arg("flip") = false, py::arg("max_rotation") = 0.0,
       py::arg("noise_std") = 0.0);

    // Nor is an OMP_NUM_THREADS past max_threads(), which the kernels clamp.
    if (requested_threads() > max_threads())
        if (PyErr_WarnEx(PyExc_RuntimeWarning,
                         ("OMP_NUM_THREADS asks for " + std::to_string(requested_threads()) +
                          " threads; fastnn uses at most " + std::to_string(max_threads()) + " (" +
                          std::to_string(kThreadsPerCpu) + " per online CPU)").c_str(), 1) < 0)
            throw py::error_already_set();
    // Nor is a FASTNN_CACHE that does not parse.
    if (const std::string& err = cpu_info().cache_override_error; !err.empty())
        if (PyErr_WarnEx(PyExc_RuntimeWarning,
                         ("FASTNN_CACHE=" + std::string(std::getenv("FASTNN_CACHE")) + " ignored: " +
                          err + "; using the detected " + cache_spec(cpu_info().caches)).c_str(), 1) < 0)
            throw py::error_already_set();
    // A FASTNN_ISA this CPU cannot run is not silently ignored.
    if (const char* forced = std::getenv("FASTNN_ISA"); forced && *forced &&
                                                         std::strcmp(forced, active_isa()) != 0)
        if (PyErr_WarnEx(PyExc_RuntimeWarning,
                         ("FASTNN_ISA=" + std::string(forced) +
                          " is not a path this CPU runs; using " + active_isa()).c_str(), 1) < 0)
            throw py::error_already_set();
}
