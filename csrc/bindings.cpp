// The only file that knows pybind11. Every argument is checked here (dtype, rank, shape,
// contiguity, ranges) so that no kernel ever sees a bad one; kernels run without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

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

py::array as_numpy(py::handle obj, const char* fn, const char* arg) {
    if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);
    py::array arr;
    try {
        arr = py::array::ensure(obj);
    } catch (py::error_already_set&) {
    }
    if (!arr) fail_type(std::string(fn) + ": argument '" + arg + "' must be an array, got " +
                        py::str(py::type::of(obj)).cast<std::string>());
    return arr;
}

// A NumPy array of real numbers (float, int or bool), as C-contiguous float32.
F32Array as_f32(py::handle obj, const char* fn, const char* arg) {
    py::array arr = as_numpy(obj, fn, arg);
    char kind = arr.dtype().kind();
    if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
        fail_type(std::string(fn) + ": argument '" + arg +
                  "' must hold real numbers (float or int), got dtype " + dtype_str(arr));
    return F32Array::ensure(arr);
}

void require_rank(const py::array& a, py::ssize_t rank, const char* fn, const char* arg) {
    if (a.ndim() != rank)
        fail_value(std::string(fn) + ": argument '" + arg + "' must be " + std::to_string(rank) +
                   "-D, got shape " + shape_str(a));
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

// An array the kernel writes into: it must already be C-contiguous, writeable float32.
py::array_t<float> in_place(py::handle obj, const char* fn, const char* arg) {
    py::array arr = as_numpy(obj, fn, arg);
    if (!py::isinstance<py::array_t<float>>(arr) || arr.dtype().kind() != 'f' || arr.itemsize() != 4)
        fail_type(std::string(fn) + ": argument '" + arg +
                  "' is written in place and must be float32, got dtype " + dtype_str(arr));
    if (!(arr.flags() & py::array::c_style))
        fail_value(std::string(fn) + ": argument '" + arg + "' must be C-contiguous");
    if (!arr.writeable()) fail_value(std::string(fn) + ": argument '" + arg + "' is read-only");
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

bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
    auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
    return pa < pb + b_bytes && pb < pa + a_bytes;
}

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
        if (arr.dtype().kind() != 'f' || arr.itemsize() != 4)
            fail_type(std::string(fn) + ": argument 'out' must be float32, got dtype " + dtype_str(arr));
        require_rank(arr, 2, fn, "out");
        if (arr.shape(0) != m || arr.shape(1) != n)
            fail_value(std::string(fn) + ": argument 'out' must have shape (" + std::to_string(m) +
                       ", " + std::to_string(n) + "), got " + shape_str(arr));
        const int64_t s0 = arr.strides(0), s1 = arr.strides(1);
        if (!((n <= 1 || s1 == 4) && (m <= 1 || (s0 > 0 && s0 % 4 == 0 && s0 / 4 >= n))))
            fail_value(std::string(fn) + ": argument 'out' must be row-major with unit column stride");
        if (!arr.writeable()) fail_value(std::string(fn) + ": argument 'out' is read-only");
        if (m > 1) ldc = s0 / 4;
        out = py::reinterpret_borrow<py::array_t<float>>(arr);
        size_t out_bytes = m == 0 || n == 0 ? 0 : static_cast<size_t>(((m - 1) * ldc + n) * 4);
        if (overlaps(out.data(), out_bytes, a.data, span_bytes(a)) ||
            overlaps(out.data(), out_bytes, b.data, span_bytes(b)))
            fail_value(std::string(fn) + ": argument 'out' overlaps 'a' or 'b'");
    }
    F32Array bias;
    if (!bias_obj.is_none()) {
        bias = as_f32(bias_obj, fn, "bias");
        if (bias.ndim() != 1 || bias.shape(0) != n)
            fail_value(std::string(fn) + ": 'bias' must have shape (" + std::to_string(n) +
                       ",) (one value per column of the result), got " + shape_str(bias));
        ep.bias = bias.data();
    }
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
    fail_value("unknown activation '" + name +
               "'; expected one of: identity, sigmoid, relu, tanh, leaky_relu");
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
    py::array arr = as_numpy(obj, fn, "labels");
    char kind = arr.dtype().kind();
    if (kind != 'i' && kind != 'u')
        fail_type(std::string(fn) + ": argument 'labels' must hold integer class indices, got dtype " +
                  dtype_str(arr));
    require_rank(arr, 1, fn, "labels");
    if (arr.shape(0) != rows)
        fail_value(std::string(fn) + ": 'labels' must have one entry per row of 'logits' (" +
                   std::to_string(rows) + "), got " + std::to_string(arr.shape(0)));
    auto labels = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
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

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "fastnn's C++ kernels (see _C.pyi for the contract)";

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
        d["cuda"] = false;
        return d;
    });
    m.def("set_num_threads", [](int n) {
        if (n < 1) fail_value("set_num_threads: n must be >= 1, got " + std::to_string(n));
        set_num_threads(n);
    }, py::arg("n"));
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

    m.def("fma_peak_gflops", [](int threads, double seconds) -> double {
#ifdef FASTNN_X86
        if (!__builtin_cpu_supports("avx512f")) return 0.0;
        if (threads < 1) fail_value("fma_peak_gflops: threads must be >= 1");
        py::gil_scoped_release nogil;
        const int64_t iters = 1 << 20;
        double best = 0.0;
        auto start = std::chrono::steady_clock::now();
        do {  // best of repeated rounds: the machine is shared
            double flops = 0.0;
            auto t0 = std::chrono::steady_clock::now();
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) reduction(+ : flops)
#endif
            for (int t = 0; t < threads; ++t) flops += fma_probe_avx512(iters);
            double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            best = std::max(best, flops / dt / 1e9);
        } while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < seconds);
        return best;
#else
        (void)threads; (void)seconds;
        return 0.0;
#endif
    }, py::arg("threads") = 1, py::arg("seconds") = 0.5,
       "Measured float32 AVX-512 FMA peak in GFLOP/s on `threads` threads (0 without AVX-512).");

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
                                    float alpha) {
        Activation act = activation_by_name(name);
        F32Array y = as_f32(y_obj, "activation_backward", "y");
        F32Array g = as_f32(g_obj, "activation_backward", "grad_y");
        require_same_shape(y, g, "activation_backward", "y", "grad_y");
        auto gx = new_like(y);
        py::gil_scoped_release nogil;
        activation_backward(act, y.data(), g.data(), gx.mutable_data(), y.size(), alpha);
        return gx;
    }, py::arg("name"), py::arg("y"), py::arg("grad_y"), py::arg("alpha") = 0.01f);
    m.def("softmax_forward", [](py::handle x_obj) {
        F32Array x = matrix_2d(x_obj, "softmax_forward", "x");
        auto y = new_like(x);
        py::gil_scoped_release nogil;
        softmax_forward(x.data(), y.mutable_data(), x.shape(0), x.shape(1));
        return y;
    }, py::arg("x"));
    m.def("softmax_backward", [](py::handle y_obj, py::handle g_obj) {
        F32Array y = matrix_2d(y_obj, "softmax_backward", "y");
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
        float* v = nullptr;
        if (momentum != 0.0f) {
            if (v_obj.is_none()) fail_value("sgd_step: 'velocity' is required when momentum != 0");
            auto va = in_place(v_obj, "sgd_step", "velocity");
            require_same_size(p, va, "sgd_step", "param", "velocity");
            v = va.mutable_data();
        }
        py::gil_scoped_release nogil;
        sgd_step(p.mutable_data(), g.data(), v, p.size(), lr, momentum, nesterov, weight_decay);
    }, py::arg("param"), py::arg("grad"), py::arg("velocity"), py::kw_only(), py::arg("lr"),
          py::arg("momentum") = 0.0f, py::arg("nesterov") = false, py::arg("weight_decay") = 0.0f);
    m.def("adam_step", [](py::handle p_obj, py::handle g_obj, py::handle m_obj, py::handle v_obj,
                          float lr, float beta1, float beta2, float eps, float weight_decay,
                          int64_t step) {
        auto p = in_place(p_obj, "adam_step", "param");
        F32Array g = as_f32(g_obj, "adam_step", "grad");
        auto m1 = in_place(m_obj, "adam_step", "m");
        auto v = in_place(v_obj, "adam_step", "v");
        require_same_size(p, g, "adam_step", "param", "grad");
        require_same_size(p, m1, "adam_step", "param", "m");
        require_same_size(p, v, "adam_step", "param", "v");
        if (step < 1) fail_value("adam_step: 'step' counts from 1, got " + std::to_string(step));
        py::gil_scoped_release nogil;
        adam_step(p.mutable_data(), g.data(), m1.mutable_data(), v.mutable_data(), p.size(), lr,
                  beta1, beta2, eps, weight_decay, step);
    }, py::arg("param"), py::arg("grad"), py::arg("m"), py::arg("v"), py::kw_only(), py::arg("lr"),
          py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("step"));

    // A FASTNN_ISA this CPU cannot run is not silently ignored.
    if (const char* forced = std::getenv("FASTNN_ISA"); forced && *forced &&
                                                         std::strcmp(forced, active_isa()) != 0)
        if (PyErr_WarnEx(PyExc_RuntimeWarning,
                         ("FASTNN_ISA=" + std::string(forced) +
                          " is not a path this CPU runs; using " + active_isa()).c_str(), 1) < 0)
            throw py::error_already_set();
}
