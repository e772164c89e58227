// Bindings of batch normalization (csrc/cpu/norm.cpp) over (batch, channels, ...) arrays, NumPy's
// or device arrays (csrc/cuda/norm.cu on a GPU).
#include <cmath>
#include <limits>
#include <optional>

#include "checks.h"
#include "device_array.h"
#ifdef FASTNN_CUDA
#include "cuda/ops.h"
#endif

namespace fastnn::bind {
namespace {

struct Channels {
    int64_t n, c, s;  // batch, channels, values per channel per sample
};

Channels channels_of(const py::array& x, const char* fn) {
    if (x.ndim() < 2)
        fail_value(std::string(fn) + ": 'x' must be (batch, channels, ...), got shape " + shape_str(x));
    const int64_t n = x.shape(0), c = x.shape(1);
    int64_t s = 1;
    for (py::ssize_t i = 2; i < x.ndim(); ++i) s *= x.shape(i);
    if (c == 0) fail_value(std::string(fn) + ": 'x' has no channels (shape " + shape_str(x) + ")");
    return {n, c, s};
}

// A per-channel array: (c,) float32, read (and written in place where `written`).
py::array_t<float> per_channel(py::handle obj, int64_t c, bool written, const char* fn, const char* arg) {
    py::array_t<float> a = written ? in_place(obj, fn, arg) : py::array_t<float>(as_f32(obj, fn, arg));
    if (a.ndim() != 1 || a.shape(0) != c)
        fail_value(std::string(fn) + ": '" + arg + "' must have shape (" + std::to_string(c) +
                   ",) (one value per channel), got " + shape_str(a));
    return a;
}

Channels channels_of(const std::vector<int64_t>& shape, const char* fn) {
    if (shape.size() < 2)
        fail_value(std::string(fn) + ": 'x' must be (batch, channels, ...), got shape " + shape_str(shape));
    int64_t s = 1;
    for (size_t i = 2; i < shape.size(); ++i) s *= shape[i];
    if (shape[1] == 0) fail_value(std::string(fn) + ": 'x' has no channels (shape " + shape_str(shape) + ")");
    return {shape[0], shape[1], s};
}

// A per-channel device array (c float32 values on `dev`), or nullptr for None where allowed.
float* device_channels(py::handle obj, const Device& dev, int64_t c, const char* fn, const char* arg,
                       Operands& ops, bool written, bool optional) {
    if (optional && obj.is_none()) return nullptr;
    DeviceArray& a = device_f32(obj, dev, c, fn, arg, "x");
    if (written)
        ops.output(arg, a.view());
    else
        ops.input(arg, a.view());
    return a.f32();
}

}  // namespace

void bind_norm(py::module_& m) {
    m.def("batchnorm_forward", [](py::handle x_obj, py::handle gamma_obj, py::handle beta_obj,
                                  py::handle rm_obj, py::handle rv_obj, py::handle mean_obj,
                                  py::handle invstd_obj, bool training, double momentum,
                                  double eps, bool relu, py::handle out_obj) -> py::object {
        const char* fn = "batchnorm_forward";
        DeviceArray* d = device_array_of(x_obj);
        if (d && relu) fail_value(std::string(fn) + ": 'relu' (a fused ReLU) is for CPU arrays only; x is on " + d->device().name());
        const std::vector<int64_t> x_shape = d ? d->shape : std::vector<int64_t>{};
        F32Array x = d ? F32Array() : as_f32(x_obj, fn, "x");
        const Channels ch = d ? channels_of(x_shape, fn) : channels_of(x, fn);
        if (training && ch.n * ch.s < 2)
            fail_value(std::string(fn) + ": training needs more than one value per channel, got "
                       "input shape " + (d ? shape_str(x_shape) : shape_str(x)) + " (an empty batch, or as "
                       "torch one sample with no spatial extent, has no variance)");
        if (!(momentum >= 0.0 && momentum <= 1.0))
            fail_value(std::string(fn) + ": 'momentum' must be in [0, 1], got " + std::to_string(momentum));
        // in float32, as the kernels take it: 1e-50 was 0 there (a constant channel's NaN)
        if (!(static_cast<float>(eps) >= std::numeric_limits<float>::min()) || !std::isfinite(static_cast<float>(eps)))
            fail_value(std::string(fn) + ": 'eps' must be a finite number > 0 of at least float32's smallest normal "
                       "(1.175e-38), got " + py::str(py::float_(eps)).cast<std::string>());
        if (d) {
            DeviceArray& xd = device_f32(x_obj, d->device(), -1, fn, "x", "x");
            const Device& dev = xd.device();
            const bool fresh = out_obj.is_none();
            DeviceArray y = fresh ? DeviceArray::empty(xd.shape, xd.dtype, dev) : device_f32(out_obj, dev, xd.size(), fn, "out", "x");
            if (y.shape != xd.shape) fail_value(std::string(fn) + ": 'out' must have x's shape");
            Operands ops(fn);
            ops.input("x", xd.view()).output("out", y.view());
            const float* g = device_channels(gamma_obj, dev, ch.c, fn, "weight", ops, false, true);
            const float* b = device_channels(beta_obj, dev, ch.c, fn, "bias", ops, false, true);
            float* rmp = device_channels(rm_obj, dev, ch.c, fn, "running_mean", ops, training, false);
            float* rvp = device_channels(rv_obj, dev, ch.c, fn, "running_var", ops, training, false);
            float* mp = device_channels(mean_obj, dev, ch.c, fn, "save_mean", ops, true, false);
            float* ip = device_channels(invstd_obj, dev, ch.c, fn, "save_invstd", ops, true, false);
            ops.check();
            const float* xp = xd.f32();
            float* yp = y.f32();
            const float e = static_cast<float>(eps), mo = static_cast<float>(momentum);
            run_on(dev, [&] { batchnorm_forward(xp, g, b, yp, ch.n, ch.c, ch.s, e, training, mo, rmp, rvp, mp, ip); },
                   [&] { FASTNN_CUDA_ONLY(cuda::batchnorm_forward(xp, g, b, yp, ch.n, ch.c, ch.s, e, training, mo,
                                                                  rmp, rvp, mp, ip)); });
            return fresh ? result_like(std::move(y), x_obj) : py::reinterpret_borrow<py::object>(out_obj);
        }
        std::optional<py::array_t<float>> gamma, beta;
        if (!gamma_obj.is_none()) gamma = per_channel(gamma_obj, ch.c, false, fn, "weight");
        if (!beta_obj.is_none()) beta = per_channel(beta_obj, ch.c, false, fn, "bias");
        auto rm = per_channel(rm_obj, ch.c, training, fn, "running_mean");
        auto rv = per_channel(rv_obj, ch.c, training, fn, "running_var");
        auto mean = per_channel(mean_obj, ch.c, true, fn, "save_mean");
        auto invstd = per_channel(invstd_obj, ch.c, true, fn, "save_invstd");
        std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
        auto y = out_array(out_obj, shape, fn);
        Operands ops(fn);
        ops.input("x", x);
        if (training)
            ops.output("running_mean", rm).output("running_var", rv);
        else
            ops.input("running_mean", rm).input("running_var", rv);
        ops.output("save_mean", mean).output("save_invstd", invstd).output("out", y);
        if (gamma) ops.input("weight", *gamma);
        if (beta) ops.input("bias", *beta);
        ops.check();
        const float* g = gamma ? gamma->data() : nullptr;
        const float* b = beta ? beta->data() : nullptr;
        // read only in evaluation (the kernel writes them in training alone): a read-only array will do
        float* rmp = training ? rm.mutable_data() : const_cast<float*>(rm.data());
        float* rvp = training ? rv.mutable_data() : const_cast<float*>(rv.data());
        float* mp = mean.mutable_data();
        float *ip = invstd.mutable_data(), *yp = y.mutable_data();
        py::gil_scoped_release nogil;
        batchnorm_forward(x.data(), g, b, yp, ch.n, ch.c, ch.s, static_cast<float>(eps), training,
                          static_cast<float>(momentum), rmp, rvp, mp, ip, relu);
        return py::object(std::move(y));
    }, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("running_mean"),
       py::arg("running_var"), py::arg("save_mean"), py::arg("save_invstd"), py::kw_only(),
       py::arg("training"), py::arg("momentum") = 0.1, py::arg("eps") = 1e-5,
       py::arg("relu") = false, py::arg("out") = py::none(),
       "torch.nn.functional.batch_norm over channel axis 1; save_mean / save_invstd receive the "
       "statistics used (the batch's in training, which also moves the running ones). relu=True "
       "(CPU arrays): relu of the result, in the same pass.");

    m.def("batchnorm_backward", [](py::handle x_obj, py::handle g_obj, py::handle gamma_obj,
                                   py::handle mean_obj, py::handle invstd_obj, bool training,
                                   py::handle gg_obj, py::handle gb_obj, float beta,
                                   bool input_grad, bool relu, py::handle bias_obj,
                                   py::handle out_obj) -> py::object {
        const char* fn = "batchnorm_backward";
        if (!relu && !bias_obj.is_none())
            fail_value(std::string(fn) + ": 'bias' is read with relu=True only (the forward's map)");
        if (DeviceArray* d = device_array_of(x_obj)) {
            if (relu)
                fail_value(std::string(fn) + ": relu=True (a fused ReLU) is for CPU arrays only; x is on " +
                           d->device().name());
            DeviceArray& xd = device_f32(x_obj, d->device(), -1, fn, "x", "x");
            const Device& dev = xd.device();
            DeviceArray& gyd = device_f32(g_obj, dev, xd.size(), fn, "grad_y", "x");
            if (gyd.shape != xd.shape) fail_value(std::string(fn) + ": 'grad_y' must have x's shape");
            const Channels ch = channels_of(xd.shape, fn);
            Operands ops(fn);
            ops.input("x", xd.view()).input("grad_y", gyd.view());
            const float* g = device_channels(gamma_obj, dev, ch.c, fn, "weight", ops, false, true);
            const float* mp = device_channels(mean_obj, dev, ch.c, fn, "save_mean", ops, false, false);
            const float* ip = device_channels(invstd_obj, dev, ch.c, fn, "save_invstd", ops, false, false);
            float* ggp = device_channels(gg_obj, dev, ch.c, fn, "grad_weight", ops, true, true);
            float* gbp = device_channels(gb_obj, dev, ch.c, fn, "grad_bias", ops, true, true);
            DeviceArray dx;
            if (input_grad) {
                dx = out_obj.is_none() ? DeviceArray::empty(xd.shape, xd.dtype, dev) : device_f32(out_obj, dev, xd.size(), fn, "out", "x");
                ops.output("out", dx.view());
            }
            ops.check();
            const float *xp = xd.f32(), *gp = gyd.f32();
            float* dxp = input_grad ? dx.f32() : nullptr;
            run_on(dev, [&] { batchnorm_backward(xp, gp, g, mp, ip, dxp, ggp, gbp, beta, ch.n, ch.c, ch.s, training); },
                   [&] { FASTNN_CUDA_ONLY(cuda::batchnorm_backward(xp, gp, g, mp, ip, dxp, ggp, gbp, beta, ch.n, ch.c,
                                                                   ch.s, training)); });
            if (!input_grad) return py::none();
            return out_obj.is_none() ? result_like(std::move(dx), x_obj) : py::reinterpret_borrow<py::object>(out_obj);
        }
        F32Array x = as_f32(x_obj, fn, "x"), gy = as_f32(g_obj, fn, "grad_y");
        require_same_shape(x, gy, fn, "x", "grad_y");
        const Channels ch = channels_of(x, fn);
        std::optional<py::array_t<float>> gamma, bias, ggamma, gbeta;
        if (!gamma_obj.is_none()) gamma = per_channel(gamma_obj, ch.c, false, fn, "weight");
        if (!bias_obj.is_none()) bias = per_channel(bias_obj, ch.c, false, fn, "bias");
        auto mean = per_channel(mean_obj, ch.c, false, fn, "save_mean");
        auto invstd = per_channel(invstd_obj, ch.c, false, fn, "save_invstd");
        if (!gg_obj.is_none()) ggamma = per_channel(gg_obj, ch.c, true, fn, "grad_weight");
        if (!gb_obj.is_none()) gbeta = per_channel(gb_obj, ch.c, true, fn, "grad_bias");
        std::optional<py::array_t<float>> dx;
        if (input_grad) dx = out_array(out_obj, std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()), fn);
        Operands ops(fn);
        if (dx) ops.output("out", *dx);
        ops.input("x", x).input("grad_y", gy).input("save_mean", mean).input("save_invstd", invstd);
        if (gamma) ops.input("weight", *gamma);
        if (bias) ops.input("bias", *bias);
        if (ggamma) ops.output("grad_weight", *ggamma);
        if (gbeta) ops.output("grad_bias", *gbeta);
        ops.check();
        const float* g = gamma ? gamma->data() : nullptr;
        float* dxp = dx ? dx->mutable_data() : nullptr;
        float* ggp = ggamma ? ggamma->mutable_data() : nullptr;
        float* gbp = gbeta ? gbeta->mutable_data() : nullptr;
        {
            py::gil_scoped_release nogil;
            batchnorm_backward(x.data(), gy.data(), g, mean.data(), invstd.data(), dxp, ggp, gbp,
                               beta, ch.n, ch.c, ch.s, training, relu, bias ? bias->data() : nullptr);
        }
        if (!dx) return py::none();
        return std::move(*dx);
    }, py::arg("x"), py::arg("grad_y"), py::arg("weight"), py::arg("save_mean"),
       py::arg("save_invstd"), py::kw_only(), py::arg("training"),
       py::arg("grad_weight") = py::none(), py::arg("grad_bias") = py::none(),
       py::arg("beta") = 0.0f, py::arg("input_grad") = true, py::arg("relu") = false,
       py::arg("bias") = py::none(), py::arg("out") = py::none(),
       "grad_weight / grad_bias = beta * themselves + the gradient; returns dL/dx (None with "
       "input_grad=False), the statistics depending on x in training. relu=True (CPU arrays): "
       "the forward pass had relu=True, with this weight and bias (None: 0); grad_y is then the "
       "gradient at its output, zeroed where that output was 0 (found from x and the saved "
       "statistics, bit for bit, not read back).");
}

}  // namespace fastnn::bind
