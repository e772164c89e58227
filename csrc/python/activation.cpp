// Bindings of the activations and softmax (csrc/cpu/activation.cpp), and their table. The
// elementwise activations also take device arrays (csrc/cuda/activation.cu on a GPU).
#include <optional>

#include "checks.h"
#include "keywords.h"
#include "device_array.h"
#ifdef FASTNN_CUDA
#include "cuda/ops.h"
#endif

namespace fastnn::bind {
namespace {

// activation_forward on a device array: y = f(x) into out (a new array when None; x allowed).
py::object forward_on_device(Activation act, DeviceArray& x, py::handle x_obj, float alpha, py::handle out_obj) {
    const char* fn = "activation_forward";
    DeviceArray y = out_obj.is_none() ? DeviceArray::empty(x.shape, x.dtype, x.device())
                                      : device_f32(out_obj, x.device(), x.size(), fn, "out", "x");
    Operands(fn).input("x", x.view()).output("out", y.view(), /*elementwise=*/true).check();
    const float* xp = x.f32();
    float* yp = y.f32();
    const int64_t n = x.size();
    run_on(x.device(), [&] { activation_forward(act, xp, yp, n, alpha); },
           [&] { FASTNN_CUDA_ONLY(cuda::activation_forward(act, xp, yp, n, alpha)); });
    return out_obj.is_none() ? result_like(std::move(y), x_obj) : py::reinterpret_borrow<py::object>(out_obj);
}

// activation_backward on device arrays, with the same arguments and checks as on NumPy's.
py::object backward_on_device(const ActivationInfo& info, DeviceArray& y, py::handle y_obj, py::handle g_obj, float alpha,
                              py::handle x_obj, py::handle out_obj, py::handle bias_grad_obj) {
    const char* fn = "activation_backward";
    const Device& dev = y.device();
    DeviceArray& g = device_f32(g_obj, dev, y.size(), fn, "grad_y", "y");
    const float* xp = nullptr;
    Operands ops(fn);
    if (info.backward_needs_input) {
        if (x_obj.is_none())
            fail_value("activation_backward: '" + std::string(info.name) + "' needs x, the forward "
                       "input (its derivative is not a function of y); pass x=...");
        DeviceArray& x = device_f32(x_obj, dev, y.size(), fn, "x", "y");
        xp = x.f32();
        ops.input("x", x.view());
    }
    DeviceArray gx = out_obj.is_none() ? DeviceArray::empty(y.shape, y.dtype, dev)
                                       : device_f32(out_obj, dev, y.size(), fn, "out", "y");
    ops.input("y", y.view()).input("grad_y", g.view()).output("out", gx.view(), /*elementwise=*/true);
    float* db = nullptr;
    int64_t rows = 0, cols = 0;
    if (!bias_grad_obj.is_none()) {
        if (y.shape.size() != 2)
            fail_value("activation_backward: 'y' must have 2 dimensions with bias_grad, got " +
                       std::to_string(y.shape.size()));
        rows = y.shape[0];
        cols = y.shape[1];
        DeviceArray& bias_grad = device_f32(bias_grad_obj, dev, cols, fn, "bias_grad", "y");
        db = bias_grad.f32();
        ops.output("bias_grad", bias_grad.view());
    }
    ops.check();
    const Activation act = info.act;
    const float *yp = y.f32(), *gp = g.f32();
    float* gxp = gx.f32();
    const int64_t n = y.size();
    if (db)
        run_on(dev, [&] { activation_backward_bias(act, xp, yp, gp, gxp, rows, cols, alpha, db); },
               [&] { FASTNN_CUDA_ONLY(cuda::activation_backward_bias(act, xp, yp, gp, gxp, rows, cols, alpha, db)); });
    else
        run_on(dev, [&] { activation_backward(act, xp, yp, gp, gxp, n, alpha); },
               [&] { FASTNN_CUDA_ONLY(cuda::activation_backward(act, xp, yp, gp, gxp, n, alpha)); });
    return out_obj.is_none() ? result_like(std::move(gx), y_obj) : py::reinterpret_borrow<py::object>(out_obj);
}

}  // namespace

void bind_activation(py::module_& m) {
    m.def("activations", [] {
        py::dict d;
        for (int i = 0; i < kNumActivations; ++i) {
            const ActivationInfo& a = kActivations[i];
            const char* canonical = a.name;  // the first row of the same function
            for (int j = 0; j < i; ++j)
                if (kActivations[j].act == a.act) {
                    canonical = kActivations[j].name;
                    break;
                }
            d[a.name] = py::dict(py::arg("canonical") = canonical, py::arg("alpha") = a.default_alpha,
                                 py::arg("backward_needs_input") = a.backward_needs_input,
                                 py::arg("he_init") = a.he_init);
        }
        return d;
    });

    static const KeywordTable forward_params{required("name", "str"), required("x"),
                                             optional("alpha", py::float_(0.01)), keyword("out", py::none())};
    def_with_table(m, "activation_forward", forward_params, "object", "The activation `name` of x (see _C.pyi).",
                   [](const Arguments& arg) {
        const char* fn = "activation_forward";
        const std::string name = arg.get<std::string>("name");
        const py::handle x_obj = arg.get<py::handle>("x"), out_obj = arg.get<py::handle>("out");
        const float alpha = arg.get<float>("alpha");
        Activation act = activation_named(name).act;
        if (DeviceArray* dx = device_array_of(x_obj))
            return forward_on_device(act, device_f32(x_obj, dx->device(), -1, fn, "x", "x"), x_obj, alpha, out_obj);
        F32Array x = as_f32(x_obj, fn, "x");
        auto y = out_array(out_obj, std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()), fn);
        Operands(fn).input("x", x).output("out", y, /*elementwise=*/true).check();
        py::gil_scoped_release nogil;
        activation_forward(act, x.data(), y.mutable_data(), x.size(), alpha);
        return py::object(std::move(y));
    });
    static const KeywordTable backward_params{
        required("name", "str"), required("y"), required("grad_y"), optional("alpha", py::float_(0.01)),
        optional("x", py::none()), optional("out", py::none()), optional("bias_grad", py::none())};
    def_with_table(m, "activation_backward", backward_params, "object",
                   "The gradient of the activation's input from y and grad_y (see _C.pyi).",
                   [](const Arguments& arg) {
        const char* fn = "activation_backward";
        const std::string name = arg.get<std::string>("name");
        const py::handle y_obj = arg.get<py::handle>("y"), g_obj = arg.get<py::handle>("grad_y");
        const py::object x_obj = arg.get<py::object>("x"), out_obj = arg.get<py::object>("out"),
                         bias_grad_obj = arg.get<py::object>("bias_grad");
        const float alpha = arg.get<float>("alpha");
        const ActivationInfo& info = activation_named(name);
        const Activation act = info.act;
        // LeakyReLU's derivative is read from y's sign, which a negative slope flips for x < 0;
        // ELU's alpha is held to the same range as its layer's (nn.ELU: alpha >= 0)
        if ((act == Activation::Elu || act == Activation::LeakyRelu) && !(alpha >= 0.0f))
            fail_value("activation_backward: '" + name + "' needs alpha >= 0, got " +
                       std::to_string(alpha));
        if (DeviceArray* dy = device_array_of(y_obj))
            return backward_on_device(info, device_f32(y_obj, dy->device(), -1, fn, "y", "y"), y_obj, g_obj,
                                      alpha, x_obj, out_obj, bias_grad_obj);
        F32Array y = as_f32(y_obj, fn, "y");
        F32Array g = as_f32(g_obj, fn, "grad_y");
        require_same_shape(y, g, fn, "y", "grad_y");
        std::optional<F32Array> x;  // only gelu and elu read it; for the others it is ignored, as documented
        if (info.backward_needs_input) {
            if (x_obj.is_none())
                fail_value("activation_backward: '" + name + "' needs x, the forward input "
                           "(its derivative is not a function of y); pass x=...");
            x = as_f32(x_obj, fn, "x");
            require_same_shape(y, *x, fn, "y", "x");
        }
        // out may be grad_y itself (or y, or x): the gradient is then computed in place.
        py::array_t<float> gx = out_obj.is_none() ? new_like(y) : in_place(out_obj, fn, "out");
        require_same_shape(y, gx, fn, "y", "out");
        Operands ops(fn);
        ops.input("y", y).input("grad_y", g).output("out", gx, /*elementwise=*/true);
        if (x) ops.input("x", *x);
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
        const float* xp = x ? x->data() : nullptr;
        float* gxp = gx.mutable_data();
        {
            py::gil_scoped_release nogil;
            if (db)
                activation_backward_bias(act, xp, y.data(), g.data(), gxp, y.shape(0), y.shape(1),
                                         alpha, db);
            else
                activation_backward(act, xp, y.data(), g.data(), gxp, y.size(), alpha);
        }
        return py::object(std::move(gx));
    });
    m.def("softmax_forward", [](py::handle x_obj) -> py::object {
        if (DeviceArray* d = device_array_of(x_obj)) {
            DeviceArray& x = device_f32(x_obj, d->device(), -1, "softmax_forward", "x", "x");
            if (x.shape.size() != 2 || x.shape[1] < 1)
                fail_value("softmax_forward: 'x' must be (rows, classes) with at least one class");
            DeviceArray y = DeviceArray::empty(x.shape, x.dtype, x.device());
            const float* xp = x.f32();
            float* yp = y.f32();
            const int64_t rows = x.shape[0], cols = x.shape[1];
            run_on(x.device(), [&] { softmax_forward(xp, yp, rows, cols); },
                   [&] { FASTNN_CUDA_ONLY(cuda::softmax_forward(xp, yp, rows, cols)); });
            return result_like(std::move(y), x_obj);
        }
        F32Array x = rows_of_classes(x_obj, "softmax_forward", "x");
        auto y = new_like(x);
        py::gil_scoped_release nogil;
        softmax_forward(x.data(), y.mutable_data(), x.shape(0), x.shape(1));
        return y;
    }, py::arg("x"));
    m.def("softmax_backward", [](py::handle y_obj, py::handle g_obj) -> py::object {
        if (DeviceArray* d = device_array_of(y_obj)) {
            DeviceArray& y = device_f32(y_obj, d->device(), -1, "softmax_backward", "y", "y");
            if (y.shape.size() != 2 || y.shape[1] < 1)
                fail_value("softmax_backward: 'y' must be (rows, classes) with at least one class");
            DeviceArray& g = device_f32(g_obj, y.device(), y.size(), "softmax_backward", "grad_y", "y");
            if (g.shape != y.shape) fail_value("softmax_backward: 'grad_y' must have y's shape");
            DeviceArray gx = DeviceArray::empty(y.shape, y.dtype, y.device());
            const float *yp = y.f32(), *gp = g.f32();
            float* o = gx.f32();
            const int64_t rows = y.shape[0], cols = y.shape[1];
            run_on(y.device(), [&] { softmax_backward(yp, gp, o, rows, cols); },
                   [&] { FASTNN_CUDA_ONLY(cuda::softmax_backward(yp, gp, o, rows, cols)); });
            return result_like(std::move(gx), y_obj);
        }
        F32Array y = rows_of_classes(y_obj, "softmax_backward", "y");
        F32Array g = as_f32(g_obj, "softmax_backward", "grad_y");
        require_same_shape(y, g, "softmax_backward", "y", "grad_y");
        auto gx = new_like(y);
        py::gil_scoped_release nogil;
        softmax_backward(y.data(), g.data(), gx.mutable_data(), y.shape(0), y.shape(1));
        return gx;
    }, py::arg("y"), py::arg("grad_y"));
}

}  // namespace fastnn::bind
