// Bindings of the convolution (csrc/cpu/conv.cpp): the reference, forward and backward on the
// GEMM, and the depthwise kernels. Forward and backward also take device arrays (csrc/cuda/conv.cu
// on a GPU).
#include <algorithm>
#include <optional>
#include <tuple>

#include "checks.h"
#include "device_array.h"
#ifdef FASTNN_CUDA
#include "cuda/ops.h"
#endif

namespace fastnn::bind {
namespace {

// The geometry of a convolution of an NCHW input `x_shape` by a kernel, checked: at least
// one output pixel, whose error names the input and the kernel.
ConvGeometry geometry(const std::vector<int64_t>& x_shape, py::handle kernel, py::handle stride,
                      py::handle padding, py::handle dilation, const char* fn, const char* x_name) {
    if (x_shape.size() != 4)
        fail_value(std::string(fn) + ": '" + x_name + "' must be 4-D (batch, channels, height, "
                   "width), got " + std::to_string(x_shape.size()) + "-D");
    ConvGeometry g;
    g.n = x_shape[0], g.c = x_shape[1], g.h = x_shape[2], g.w = x_shape[3];
    std::tie(g.kh, g.kw) = pair_arg(kernel, 1, fn, "kernel_size");
    std::tie(g.sh, g.sw) = pair_arg(stride, 1, fn, "stride");
    std::tie(g.ph, g.pw) = pair_arg(padding, 0, fn, "padding");
    std::tie(g.dh, g.dw) = pair_arg(dilation, 1, fn, "dilation");
    if (g.c == 0) fail_value(std::string(fn) + ": '" + x_name + "' has no channels");
    if (g.h + 2 * g.ph < g.dh * (g.kh - 1) + 1 || g.w + 2 * g.pw < g.dw * (g.kw - 1) + 1)
        fail_value(std::string(fn) + ": '" + x_name + "' holds " + std::to_string(g.h) + "x" +
                   std::to_string(g.w) + " images which, padded by " + std::to_string(g.ph) + "x" +
                   std::to_string(g.pw) + ", are smaller than the " + std::to_string(g.kh) + "x" +
                   std::to_string(g.kw) + " 'kernel_size' (dilation " + std::to_string(g.dh) + "x" +
                   std::to_string(g.dw) + "): no output pixel");
    return g;
}

std::vector<int64_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

// Weights of shape w (out_channels, c / groups, kh, kw) for input channels c, checked (w is
// 4-D); their out_channels.
int64_t check_weight(const std::vector<int64_t>& w, const ConvGeometry& g, int64_t groups, const char* fn) {
    const int64_t oc = w[0];
    if (groups < 1 || g.c % groups || oc % groups)
        fail_value(std::string(fn) + ": groups=" + std::to_string(groups) + " must divide the " +
                   std::to_string(g.c) + " input channels and the " + std::to_string(oc) +
                   " output channels of 'weight' " + shape_str(w));
    if (w[1] != g.c / groups || w[2] != g.kh || w[3] != g.kw)
        fail_value(std::string(fn) + ": 'weight' must have shape (" + std::to_string(oc) + ", " +
                   std::to_string(g.c / groups) + ", " + std::to_string(g.kh) + ", " +
                   std::to_string(g.kw) + ") for this input and kernel, got " + shape_str(w));
    return oc;
}

// The bias, checked, or none for None.
std::optional<F32Array> optional_bias(py::handle obj, int64_t oc, const char* fn) {
    if (obj.is_none()) return std::nullopt;
    F32Array b = as_f32(obj, fn, "bias");
    if (b.ndim() != 1 || b.shape(0) != oc)
        fail_value(std::string(fn) + ": 'bias' must have shape (" + std::to_string(oc) +
                   ",), got " + shape_str(b));
    return b;
}

// A convolution's input and weight, checked, with its geometry, its groups (groups_obj None:
// depthwise, a group per channel) and its output channels.
struct ConvArgs {
    F32Array x, w;
    ConvGeometry g;
    bool depthwise;
    int64_t groups, oc;
};

ConvArgs conv_args(const char* fn, py::handle x_obj, py::handle w_obj, py::handle stride,
                   py::handle padding, py::handle dilation, py::handle groups_obj) {
    ConvArgs a{as_f32(x_obj, fn, "x"), as_f32(w_obj, fn, "weight"), {}, false, 0, 0};
    require_rank(a.w, 4, fn, "weight");
    a.g = geometry(shape_of(a.x), py::make_tuple(a.w.shape(2), a.w.shape(3)), stride, padding,
                   dilation, fn, "x");
    a.depthwise = groups_obj.is_none();
    a.groups = a.depthwise ? a.g.c : int_in(groups_obj, 1, int64_t{1} << 30, fn, "groups");
    a.oc = check_weight(shape_of(a.w), a.g, a.groups, fn);
    return a;
}

// The same on device arrays: x (float32, 4-D) and the weight on its device.
struct DeviceConv {
    DeviceArray *x, *w;
    ConvGeometry g;
    bool depthwise;
    int64_t groups, oc;
};

DeviceConv device_conv(const char* fn, DeviceArray& x, py::handle w_obj, py::handle stride, py::handle padding,
                       py::handle dilation, py::handle groups_obj, bool bf16) {
    if (bf16) fail_value(std::string(fn) + ": precision='bf16' on device arrays is not built yet; use 'fp32'");
    DeviceConv a;
    a.x = &x;
    a.w = &device_f32(w_obj, x.device(), -1, fn, "weight", "x");
    if (a.w->shape.size() != 4)
        fail_value(std::string(fn) + ": 'weight' must be 4-D, got " + std::to_string(a.w->shape.size()) + "-D");
    a.g = geometry(x.shape, py::make_tuple(a.w->shape[2], a.w->shape[3]), stride, padding, dilation, fn, "x");
    a.depthwise = groups_obj.is_none();
    a.groups = a.depthwise ? a.g.c : int_in(groups_obj, 1, int64_t{1} << 30, fn, "groups");
    a.oc = check_weight(a.w->shape, a.g, a.groups, fn);
    return a;
}

// conv_forward on a device array x: the same checks, the output on x's device.
py::object conv_forward_device(const char* fn, DeviceArray& x, py::handle x_obj, py::handle w_obj, py::handle b_obj,
                               py::handle stride, py::handle padding, py::handle dilation, py::handle groups_obj,
                               Activation act, float alpha, py::handle out_obj, bool bf16) {
    const DeviceConv a = device_conv(fn, x, w_obj, stride, padding, dilation, groups_obj, bf16);
    const ConvGeometry& g = a.g;
    const int64_t oc = a.oc, groups = a.groups;
    const std::vector<int64_t> shape{g.n, oc, g.out_h(), g.out_w()};
    const bool fresh = out_obj.is_none();
    DeviceArray y = fresh ? DeviceArray::empty(shape, x.dtype, x.device())
                          : device_f32(out_obj, x.device(), element_count(shape), fn, "out", "x");
    Operands ops(fn);
    ops.input("x", x.view()).input("weight", a.w->view()).output("out", y.view());
    const float* bp = nullptr;
    if (!b_obj.is_none()) {
        DeviceArray& b = device_f32(b_obj, x.device(), oc, fn, "bias", "x");
        ops.input("bias", b.view());
        bp = b.f32();
    }
    ops.check();
    const float *xp = x.f32(), *wp = a.w->f32();
    float* yp = y.f32();
    const bool depthwise = a.depthwise;
    run_on(x.device(),
           [&] {
               if (depthwise)
                   depthwise_forward(g, oc / g.c, xp, wp, bp, yp);
               else
                   conv2d_forward(g, oc, groups, xp, wp, bp, act, alpha, yp, false);
           },
           [&] { FASTNN_CUDA_ONLY(cuda::conv2d_forward(g, oc, groups, xp, wp, bp, act, alpha, yp)); });
    if (!fresh) return py::reinterpret_borrow<py::object>(out_obj);
    return result_like(std::move(y), x_obj);
}

// conv_backward on a device array x: grad_y, grad_weight, grad_bias and out on its device.
py::object conv_backward_device(const char* fn, DeviceArray& x, py::handle w_obj, py::handle g_obj,
                                py::handle gw_obj, py::handle gb_obj, float beta, bool input_grad,
                                py::handle stride, py::handle padding, py::handle dilation, py::handle groups_obj,
                                py::handle out_obj, py::handle x_obj, bool bf16) {
    const DeviceConv a = device_conv(fn, x, w_obj, stride, padding, dilation, groups_obj, bf16);
    const ConvGeometry& g = a.g;
    const int64_t oc = a.oc, groups = a.groups;
    const Device& dev = x.device();
    DeviceArray& gy = device_f32(g_obj, dev, -1, fn, "grad_y", "x");
    if (gy.shape != std::vector<int64_t>{g.n, oc, g.out_h(), g.out_w()})
        fail_value(std::string(fn) + ": 'grad_y' must have the output's shape (" + std::to_string(g.n) + ", " +
                   std::to_string(oc) + ", " + std::to_string(g.out_h()) + ", " + std::to_string(g.out_w()) +
                   "), got " + shape_str(gy.shape));
    DeviceArray& gw = device_f32(gw_obj, dev, a.w->size(), fn, "grad_weight", "x");
    if (gw.shape != a.w->shape) fail_value(std::string(fn) + ": 'grad_weight' must have the weight's shape");
    Operands ops(fn);
    ops.input("x", x.view()).input("weight", a.w->view()).input("grad_y", gy.view()).output("grad_weight", gw.view());
    float* gbp = nullptr;
    if (!gb_obj.is_none()) {
        DeviceArray& gb = device_f32(gb_obj, dev, oc, fn, "grad_bias", "x");
        ops.output("grad_bias", gb.view());
        gbp = gb.f32();
    }
    DeviceArray dx;
    if (input_grad) {
        dx = out_obj.is_none() ? DeviceArray::empty(x.shape, x.dtype, dev)
                               : device_f32(out_obj, dev, x.size(), fn, "out", "x");
        ops.output("out", dx.view());
    }
    ops.check();
    const float *xp = x.f32(), *wp = a.w->f32(), *gyp = gy.f32();
    float* dxp = input_grad ? dx.f32() : nullptr;
    float* gwp = gw.f32();
    const bool depthwise = a.depthwise;
    if (dev.type == DeviceType::Cpu) {
        run_on(dev, [&] {
            if (depthwise)
                depthwise_backward(g, oc / g.c, xp, wp, gyp, dxp, gwp, beta, gbp);
            else
                conv2d_backward(g, oc, groups, xp, wp, gyp, dxp, gwp, beta, gbp, false);
        }, [] {});
    } else {
        const int64_t per_image = std::max(a.w->size(), oc);  // the partial sums of the weight's and bias's gradients
        DeviceArray scratch = DeviceArray::empty({std::max<int64_t>(per_image * g.n, 1)}, x.dtype, dev);
        [[maybe_unused]] float* s = scratch.f32();  // CUDA build
        run_on(dev, [] {}, [&] {
            FASTNN_CUDA_ONLY(cuda::conv2d_backward(g, oc, groups, xp, wp, gyp, dxp, gwp, beta, gbp, s));
        });
    }
    if (!input_grad) return py::none();
    if (!out_obj.is_none()) return py::reinterpret_borrow<py::object>(out_obj);
    return result_like(std::move(dx), x_obj);
}

// conv2d_forward and depthwise_conv2d_forward (groups None): the same checks and output,
// the one kernel or the other (the depthwise one has no activation: act is Identity there).
py::object conv_forward(const char* fn, py::handle x_obj, py::handle w_obj,
                        py::handle b_obj, py::handle stride, py::handle padding,
                        py::handle dilation, py::handle groups_obj, Activation act,
                        float alpha, py::handle out_obj, bool bf16 = false) {
    if (DeviceArray* d = device_array_of(x_obj))
        return conv_forward_device(fn, device_f32(x_obj, d->device(), -1, fn, "x", "x"), x_obj, w_obj, b_obj, stride,
                                   padding, dilation, groups_obj, act, alpha, out_obj, bf16);
    ConvArgs args = conv_args(fn, x_obj, w_obj, stride, padding, dilation, groups_obj);
    const F32Array &x = args.x, &w = args.w;
    const ConvGeometry& g = args.g;
    const bool depthwise = args.depthwise;
    const int64_t groups = args.groups, oc = args.oc;
    const std::optional<F32Array> b = optional_bias(b_obj, oc, fn);
    auto y = out_array(out_obj, {g.n, oc, g.out_h(), g.out_w()}, fn);
    Operands ops(fn);
    ops.input("x", x).input("weight", w).output("out", y);
    if (b) ops.input("bias", *b);
    ops.check();
    float* out = y.mutable_data();
    const float* bp = b ? b->data() : nullptr;
    py::gil_scoped_release nogil;
    if (depthwise)
        depthwise_forward(g, oc / g.c, x.data(), w.data(), bp, out);
    else
        conv2d_forward(g, oc, groups, x.data(), w.data(), bp, act, alpha, out, bf16);
    return std::move(y);
}

// conv2d_backward and depthwise_conv2d_backward (groups None): the same checks and outputs,
// the one kernel or the other.
py::object conv_backward(const char* fn, py::handle x_obj, py::handle w_obj, py::handle g_obj,
                         py::handle gw_obj, py::handle gb_obj, float beta, bool input_grad,
                         py::handle stride, py::handle padding, py::handle dilation,
                         py::handle groups_obj, py::handle out_obj, bool bf16 = false) {
    if (DeviceArray* d = device_array_of(x_obj))
        return conv_backward_device(fn, device_f32(x_obj, d->device(), -1, fn, "x", "x"), w_obj, g_obj, gw_obj, gb_obj,
                                    beta, input_grad, stride, padding, dilation, groups_obj, out_obj, x_obj, bf16);
    ConvArgs args = conv_args(fn, x_obj, w_obj, stride, padding, dilation, groups_obj);
    const F32Array &x = args.x, &w = args.w;
    const ConvGeometry& g = args.g;
    const bool depthwise = args.depthwise;
    const int64_t groups = args.groups, oc = args.oc;
    F32Array gy = as_f32(g_obj, fn, "grad_y");
    if (gy.ndim() != 4 || gy.shape(0) != g.n || gy.shape(1) != oc || gy.shape(2) != g.out_h() ||
        gy.shape(3) != g.out_w())
        fail_value(std::string(fn) + ": 'grad_y' must have the output's shape (" +
                   std::to_string(g.n) + ", " + std::to_string(oc) + ", " +
                   std::to_string(g.out_h()) + ", " + std::to_string(g.out_w()) + "), got " +
                   shape_str(gy));
    auto gw = in_place(gw_obj, fn, "grad_weight");
    require_same_shape(w, gw, fn, "weight", "grad_weight");
    std::optional<py::array_t<float>> gb;
    Operands ops(fn);
    ops.input("x", x).input("weight", w).input("grad_y", gy).output("grad_weight", gw);
    if (!gb_obj.is_none()) {
        gb = in_place(gb_obj, fn, "grad_bias");
        if (gb->ndim() != 1 || gb->shape(0) != oc)
            fail_value(std::string(fn) + ": 'grad_bias' must have shape (" + std::to_string(oc) +
                       ",), got " + shape_str(*gb));
        ops.output("grad_bias", *gb);
    }
    std::optional<py::array_t<float>> dx;
    if (input_grad) {
        dx = out_array(out_obj, {g.n, g.c, g.h, g.w}, fn);
        ops.output("out", *dx);
    }
    ops.check();
    float* dxp = dx ? dx->mutable_data() : nullptr;
    float* gwp = gw.mutable_data();
    float* gbp = gb ? gb->mutable_data() : nullptr;
    {
        py::gil_scoped_release nogil;
        if (depthwise)
            depthwise_backward(g, oc / g.c, x.data(), w.data(), gy.data(), dxp, gwp, beta, gbp);
        else
            conv2d_backward(g, oc, groups, x.data(), w.data(), gy.data(), dxp, gwp, beta, gbp, bf16);
    }
    if (!dx) return py::none();
    return std::move(*dx);
}

}  // namespace

void bind_conv(py::module_& m) {
    m.def("conv2d_reference", [](py::handle x_obj, py::handle w_obj, py::handle b_obj,
                                 py::handle stride, py::handle padding, py::handle dilation,
                                 py::handle groups_obj) {
        const char* fn = "conv2d_reference";
        int_in(groups_obj, 1, int64_t{1} << 30, fn, "groups");  // here None is an error, not depthwise
        ConvArgs args = conv_args(fn, x_obj, w_obj, stride, padding, dilation, groups_obj);
        const F32Array &x = args.x, &w = args.w;
        const ConvGeometry& g = args.g;
        const int64_t groups = args.groups, oc = args.oc;
        const std::optional<F32Array> b = optional_bias(b_obj, oc, fn);
        py::array_t<float> y({g.n, oc, g.out_h(), g.out_w()});
        float* out = y.mutable_data();
        const float* bp = b ? b->data() : nullptr;
        py::gil_scoped_release nogil;
        conv2d_reference(g, oc, groups, x.data(), w.data(), bp, out);
        return y;
    }, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::kw_only(),
       py::arg("stride") = 1, py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("groups") = 1,
       "The direct convolution summed in double: what the fast paths are held to.");

    m.def("conv2d_forward", [](py::handle x_obj, py::handle w_obj, py::handle b_obj,
                               py::handle stride, py::handle padding, py::handle dilation,
                               py::handle groups_obj, const std::string& activation, float alpha,
                               py::handle out_obj, const std::string& precision) {
        const bool bf16 = bf16_precision(precision, "conv2d_forward");
        return conv_forward("conv2d_forward", x_obj, w_obj, b_obj, stride, padding, dilation,
                            groups_obj, activation_named(activation).act, alpha, out_obj, bf16);
    }, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::kw_only(),
       py::arg("stride") = 1, py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("groups") = 1,
       py::arg("activation") = "identity", py::arg("activation_alpha") = 0.01f,
       py::arg("out") = py::none(), py::arg("precision") = "fp32",
       "torch.nn.functional.conv2d, then the activation: image by image, each image's im2col "
       "block multiplied by the weight on the GEMM while it is in cache (precision 'bf16': "
       "bfloat16 products on the GEMM; the direct kernels of stride 1 stay float32).");

    m.def("conv2d_backward", [](py::handle x_obj, py::handle w_obj, py::handle g_obj,
                                py::handle gw_obj, py::handle gb_obj, float beta, bool input_grad,
                                py::handle stride, py::handle padding, py::handle dilation,
                                py::handle groups_obj, py::handle out_obj,
                                const std::string& precision) {
        const bool bf16 = bf16_precision(precision, "conv2d_backward");
        return conv_backward("conv2d_backward", x_obj, w_obj, g_obj, gw_obj, gb_obj, beta,
                             input_grad, stride, padding, dilation, groups_obj, out_obj, bf16);
    }, py::arg("x"), py::arg("weight"), py::arg("grad_y"), py::arg("grad_weight"), py::kw_only(),
       py::arg("grad_bias") = py::none(), py::arg("beta") = 0.0f, py::arg("input_grad") = true,
       py::arg("stride") = 1, py::arg("padding") = 0, py::arg("dilation") = 1, py::arg("groups") = 1,
       py::arg("out") = py::none(), py::arg("precision") = "fp32",
       "From grad_y (the output's gradient, after the activation's derivative): grad_weight (in "
       "place) = beta * grad_weight + dL/dweight, grad_bias (in place) += dL/dbias; returns "
       "dL/dx (None with input_grad=False).");

    m.def("depthwise_conv2d_forward", [](py::handle x_obj, py::handle w_obj, py::handle b_obj,
                                         py::handle stride, py::handle padding,
                                         py::handle dilation, py::handle out_obj) {
        return conv_forward("depthwise_conv2d_forward", x_obj, w_obj, b_obj, stride, padding,
                            dilation, py::none(), Activation::Identity, 0.0f, out_obj);
    }, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none(), py::kw_only(),
       py::arg("stride") = 1, py::arg("padding") = 0, py::arg("dilation") = 1,
       py::arg("out") = py::none(),
       "Convolution with groups == channels (weight (channels * multiplier, 1, kh, kw)).");

    m.def("depthwise_conv2d_backward", [](py::handle x_obj, py::handle w_obj, py::handle g_obj,
                                          py::handle gw_obj, py::handle gb_obj, float beta,
                                          bool input_grad, py::handle stride, py::handle padding,
                                          py::handle dilation, py::handle out_obj) {
        return conv_backward("depthwise_conv2d_backward", x_obj, w_obj, g_obj, gw_obj, gb_obj,
                             beta, input_grad, stride, padding, dilation, py::none(), out_obj);
    }, py::arg("x"), py::arg("weight"), py::arg("grad_y"), py::arg("grad_weight"), py::kw_only(),
       py::arg("grad_bias") = py::none(), py::arg("beta") = 0.0f, py::arg("input_grad") = true,
       py::arg("stride") = 1, py::arg("padding") = 0, py::arg("dilation") = 1,
       py::arg("out") = py::none(),
       "grad_weight (in place) = beta * grad_weight + dL/dweight, grad_bias (in place) += "
       "dL/dbias; returns dL/dx (None with input_grad=False).");
}

}  // namespace fastnn::bind
