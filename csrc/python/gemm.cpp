// Bindings of the GEMM (csrc/cpu/gemm/): gemm and gemm_reference, on strided views of the
// operands as they are, without a copy; on device arrays too (csrc/cuda/gemm.cu on a GPU).
#include <algorithm>
#include <atomic>
#include <climits>
#include <optional>

#include "checks.h"
#include "keywords.h"
#include "cpu/gemm/bf16.h"
#include "device_array.h"
#ifdef FASTNN_CUDA
#include "cuda/ops.h"
#endif

namespace fastnn::bind {
namespace {

// set_matmul_precision("tf32"): a GPU's fp32 GEMMs may round their operands to TF32 (tensor
// cores). Off by default: fp32 products as on the CPU, which TF32 would miss by 1e-3.
std::atomic<bool> g_tf32{false};

// A 2-D operand of a GEMM on device arrays: rows, columns (C-contiguous: its leading dimension).
std::pair<int64_t, int64_t> device_matrix(const DeviceArray& x, const char* fn, const char* arg) {
    if (x.shape.size() != 2)
        fail_value(std::string(fn) + ": argument '" + arg + "' must have 2 dimensions, got " +
                   std::to_string(x.shape.size()));
    if (x.shape[0] > INT_MAX || x.shape[1] > INT_MAX)
        fail_value(std::string(fn) + ": argument '" + arg + "' has a dimension beyond 2**31 - 1 (cuBLAS's int)");
    return {x.shape[0], x.shape[1]};
}

// gemm / gemm_reference with `a` a device array: the same arguments and checks as on NumPy
// arrays; out (m, n) C-contiguous on a's device, a new one when None.
py::object gemm_on_device(DeviceArray& a, py::handle a_obj, py::handle b_obj, py::handle out_obj, bool ta, bool tb,
                          float alpha, float beta, py::handle bias_obj, Epilogue ep, bool reference,
                          bool bf16) {
    const char* fn = reference ? "gemm_reference" : "gemm";
    if (bf16)
        fail_value(std::string(fn) + ": precision='bf16' on device arrays is not built yet; use 'fp32'");
    const Device& dev = a.device();
    DeviceArray& b = device_f32(b_obj, dev, -1, fn, "b", "a");
    const auto [ar, ac] = device_matrix(a, fn, "a");
    const auto [br, bc] = device_matrix(b, fn, "b");
    const int64_t m = ta ? ac : ar, k = ta ? ar : ac, kb = tb ? bc : br, n = tb ? br : bc;
    if (k != kb)
        fail_value(std::string(fn) + ": inner dimensions differ: op(a) is (" + std::to_string(m) + ", " +
                   std::to_string(k) + ") and op(b) is (" + std::to_string(kb) + ", " + std::to_string(n) + ")");
    const bool fresh = out_obj.is_none();
    DeviceArray out = fresh ? DeviceArray::empty({m, n}, a.dtype, dev) : device_f32(out_obj, dev, -1, fn, "out", "a");
    if (!fresh && (out.shape.size() != 2 || out.shape[0] != m || out.shape[1] != n))
        fail_value(std::string(fn) + ": argument 'out' must have shape (" + std::to_string(m) + ", " +
                   std::to_string(n) + ")");
    if (fresh) beta = 0.0f;
    Operands ops(fn);
    ops.input("a", a.view()).input("b", b.view()).output("out", out.view());
    if (!bias_obj.is_none()) {
        DeviceArray& bias = device_f32(bias_obj, dev, n, fn, "bias", "a");
        if (bias.shape.size() != 1)
            fail_value(std::string(fn) + ": 'bias' must have shape (" + std::to_string(n) + ",)");
        ep.bias = bias.f32();
        ops.input("bias", bias.view());
    }
    ops.check();
    const float *ap = a.f32(), *bp = b.f32();
    float* c = out.f32();
    const int64_t lda = std::max<int64_t>(ac, 1), ldb = std::max<int64_t>(bc, 1), ldc = std::max<int64_t>(n, 1);
    [[maybe_unused]] const bool tf32 = g_tf32.load();  // read by the CUDA build only
    run_on(dev, [&] { (reference ? gemm_reference : gemm)(ta, tb, m, n, k, alpha, ap, lda, bp, ldb, beta, c, ldc, ep); },
           [&] {
               if (reference)
                   FASTNN_CUDA_ONLY(cuda::gemm_reference(ta, tb, m, n, k, alpha, ap, lda, bp, ldb, beta, c, ldc, ep));
               else
                   FASTNN_CUDA_ONLY(cuda::gemm(ta, tb, m, n, k, alpha, ap, lda, bp, ldb, beta, c, ldc, ep, tf32));
           });
    return fresh ? result_like(std::move(out), a_obj) : py::reinterpret_borrow<py::object>(out_obj);
}

// A product this small (a few microseconds at most, its operands and result included) keeps
// the GIL: releasing and taking it back cost 0.03-0.04 of the 1.4 us of a 32 x 10 x 256 call
// (Zen 5, 5 rounds alternated). Nothing under it calls back into Python.
constexpr int64_t kKeepGilBelow = int64_t{1} << 18;

py::object gemm_py(py::handle a_obj, py::handle b_obj, py::object out_obj, bool ta,
                   bool tb, float alpha, float beta, py::object bias_obj,
                   const std::string& activation, float act_alpha, bool reference,
                   const std::string& precision) {
    const char* fn = reference ? "gemm_reference" : "gemm";
    const bool bf16 = bf16_precision(precision, fn);
    Epilogue ep;
    ep.act = activation_named(activation).act;
    ep.act_alpha = act_alpha;
    if (DeviceArray* da = device_array_of(a_obj))
        return gemm_on_device(device_f32(a_obj, da->device(), -1, fn, "a", "a"), a_obj, b_obj, out_obj, ta, tb,
                              alpha, beta, bias_obj, ep, reference, bf16);
    Matrix a = as_matrix(a_obj, fn, "a"), b = as_matrix(b_obj, fn, "b");
    const int64_t m = ta ? a.cols : a.rows, k = ta ? a.rows : a.cols;
    const int64_t kb = tb ? b.cols : b.rows, n = tb ? b.rows : b.cols;
    if (k != kb)
        fail_value(std::string(fn) + ": inner dimensions differ: op(a) is (" + std::to_string(m) +
                   ", " + std::to_string(k) + ") and op(b) is (" + std::to_string(kb) + ", " +
                   std::to_string(n) + ")");
    int64_t ldc = std::max<int64_t>(n, 1);
    if (out_obj.is_none()) beta = 0.0f;
    py::array_t<float> out = out_obj.is_none() ? py::array_t<float>({m, n}) : [&] {
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
        return py::reinterpret_borrow<py::array_t<float>>(arr);
    }();
    Operands ops(fn);
    ops.input("a", a.view).input("b", b.view).output("out", out);
    std::optional<F32Array> bias;
    if (!bias_obj.is_none()) {
        bias = as_f32(bias_obj, fn, "bias");
        if (bias->ndim() != 1 || bias->shape(0) != n)
            fail_value(std::string(fn) + ": 'bias' must have shape (" + std::to_string(n) +
                       ",) (one value per column of the result), got " + shape_str(*bias));
        ep.bias = bias->data();
        ops.input("bias", *bias);
    }
    ops.check();
    float* c = out.mutable_data();
    const bool ea = ta != a.transposed, eb = tb != b.transposed;
    // the operands' bf16 roundings (bf16.h), products in fp32
    auto run = reference ? (bf16 ? gemm_bf16_reference : gemm_reference) : (bf16 ? gemm_bf16 : gemm);
    {
        std::optional<py::gil_scoped_release> nogil;  // taken back before any Python object is touched
        if (std::max({m * n * k, m * n, m * k, k * n}) >= kKeepGilBelow) nogil.emplace();
        run(ea, eb, m, n, k, alpha, a.data, a.ld, b.data, b.ld, beta, c, ldc, ep);
    }
    return py::object(std::move(out));
}

}  // namespace

void bind_gemm(py::module_& m) {
    m.def("set_matmul_precision", [](const std::string& precision) {
        if (precision != "fp32" && precision != "tf32")
            fail_value("set_matmul_precision: argument 'precision' must be 'fp32' or 'tf32', got '" +
                       precision + "'");
        g_tf32 = precision == "tf32";
    }, py::arg("precision"), "'tf32': a GPU's fp32 GEMMs may use TF32 tensor cores; 'fp32' (default): not.");
    m.def("get_matmul_precision", [] { return std::string(g_tf32 ? "tf32" : "fp32"); });
    m.def("bf16_convert", [](py::handle x_obj, bool vector) {
        F32Array x = as_f32(x_obj, "bf16_convert", "x");
        py::array_t<uint16_t> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
        const float* src = x.data();
        uint16_t* dst = out.mutable_data();
        const int64_t n = x.size();
        if (vector) {
            bf16_convert(src, dst, n);
        } else {
            for (int64_t i = 0; i < n; ++i) dst[i] = bf16_from_float(src[i]);
        }
        return out;
    }, py::arg("x"), py::kw_only(), py::arg("vector") = true,
       "x's float32 values rounded to bfloat16 (nearest, ties to even), as their uint16 bits: "
       "the vector conversion that packing uses (on a CPU with AVX512_BF16; elsewhere the "
       "reference), or (vector=False) the scalar reference.");
    static const KeywordTable params{
        required("a"), required("b"), optional("out", py::none()),
        keyword("transpose_a", py::bool_(false)), keyword("transpose_b", py::bool_(false)),
        keyword("alpha", py::float_(1.0)), keyword("beta", py::float_(0.0)), keyword("bias", py::none()),
        keyword("activation", py::str("identity")), keyword("activation_alpha", py::float_(0.01)),
        keyword("precision", py::str("fp32"))};
    for (bool reference : {false, true})
        def_with_table(m, reference ? "gemm_reference" : "gemm", params, "object",
                       reference ? "The triple loop in float64 (see _C.pyi)."
                                 : "out = alpha * op(a) @ op(b) + beta * out, then bias and activation (see _C.pyi).",
                       [reference](const Arguments& arg) {
                           return gemm_py(arg.get<py::handle>("a"), arg.get<py::handle>("b"), arg.get<py::object>("out"),
                                          arg.get<bool>("transpose_a"), arg.get<bool>("transpose_b"),
                                          arg.get<float>("alpha"), arg.get<float>("beta"), arg.get<py::object>("bias"),
                                          arg.get<std::string>("activation"), arg.get<float>("activation_alpha"),
                                          reference, arg.get<std::string>("precision"));
                       });
}

}  // namespace fastnn::bind
