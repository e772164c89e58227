// Bindings of 2-D max and average pooling (csrc/cpu/pool.cpp) over NCHW batches.
#include <tuple>

#include "checks.h"
#include "device_array.h"
#ifdef FASTNN_CUDA
#include "cuda/ops.h"
#endif

namespace fastnn::bind {
namespace {

// The pooling of `shape` (batch, channels, h, w), checked as torch checks it: a padding of at
// most half the window, and a window that fits the padded image.
PoolGeometry pool_geometry(const std::vector<int64_t>& shape, py::handle kernel, py::handle stride,
                           py::handle padding, const char* fn, const char* x_name) {
    if (shape.size() != 4)
        fail_value(std::string(fn) + ": '" + x_name + "' must be 4-D (batch, channels, height, "
                   "width), got " + std::to_string(shape.size()) + "-D");
    PoolGeometry g;
    g.planes = shape[0] * shape[1], g.h = shape[2], g.w = shape[3];
    std::tie(g.kh, g.kw) = pair_arg(kernel, 1, fn, "kernel_size");
    std::tie(g.sh, g.sw) = stride.is_none() ? std::make_pair(g.kh, g.kw) : pair_arg(stride, 1, fn, "stride");
    std::tie(g.ph, g.pw) = pair_arg(padding, 0, fn, "padding");
    if (2 * g.ph > g.kh || 2 * g.pw > g.kw)
        fail_value(std::string(fn) + ": 'padding' (" + std::to_string(g.ph) + ", " +
                   std::to_string(g.pw) + ") must be at most half the kernel (" +
                   std::to_string(g.kh) + ", " + std::to_string(g.kw) + ")");
    if (g.h == 0 || g.w == 0)  // as torch: only the batch may be empty (a window of padding alone)
        fail_value(std::string(fn) + ": '" + x_name + "' holds " + std::to_string(g.h) + "x" +
                   std::to_string(g.w) + " images: empty planes have no pixel to pool");
    if (g.h + 2 * g.ph < g.kh || g.w + 2 * g.pw < g.kw)
        fail_value(std::string(fn) + ": '" + x_name + "' holds " + std::to_string(g.h) + "x" +
                   std::to_string(g.w) + " images which, padded by " + std::to_string(g.ph) + "x" +
                   std::to_string(g.pw) + ", are smaller than the " + std::to_string(g.kh) + "x" +
                   std::to_string(g.kw) + " window ('kernel_size'): no output pixel");
    return g;
}

std::vector<int64_t> input_shape_arg(py::handle obj, const char* fn) {
    if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj))
        fail_type(std::string(fn) + ": 'input_shape' must be a tuple (batch, channels, height, "
                  "width), got " + std::string(py::str(py::type::of(obj).attr("__name__"))));
    std::vector<int64_t> shape;
    for (py::handle d : py::reinterpret_borrow<py::iterable>(obj))
        shape.push_back(int_in(d, 0, int64_t{1} << 40, fn, "input_shape"));
    return shape;
}

// grad_y with the pooled output's shape.
F32Array output_grad(py::handle obj, const std::vector<int64_t>& in, const PoolGeometry& g,
                     const char* fn) {
    F32Array gy = as_f32(obj, fn, "grad_y");
    if (gy.ndim() != 4 || gy.shape(0) != in[0] || gy.shape(1) != in[1] || gy.shape(2) != g.out_h() ||
        gy.shape(3) != g.out_w())
        fail_value(std::string(fn) + ": 'grad_y' must have the output's shape (" +
                   std::to_string(in[0]) + ", " + std::to_string(in[1]) + ", " +
                   std::to_string(g.out_h()) + ", " + std::to_string(g.out_w()) + "), got " +
                   shape_str(gy));
    return gy;
}

// maxpool2d_forward's argmax: a new int64 array, or `obj` when it is a writeable C-contiguous
// int64 array of the output's shape.
py::array_t<int64_t> argmax_array(py::handle obj, const std::vector<py::ssize_t>& shape,
                                  const char* fn) {
    if (obj.is_none()) return py::array_t<int64_t>(shape);
    py::array arr = as_numpy(obj, fn, "argmax_out");
    if (!py::isinstance<py::array_t<int64_t>>(arr) || arr.dtype().kind() != 'i' || arr.itemsize() != 8)
        fail_type(std::string(fn) + ": argument 'argmax_out' is written in place and must be int64, "
                  "got dtype " + dtype_str(arr));
    if (!(arr.flags() & py::array::c_style) || !arr.writeable())
        fail_value(std::string(fn) + ": argument 'argmax_out' must be C-contiguous and writeable");
    if (std::vector<py::ssize_t>(arr.shape(), arr.shape() + arr.ndim()) != shape)
        fail_value(std::string(fn) + ": argument 'argmax_out' must have the output's shape, got " +
                   shape_str(arr));
    return py::reinterpret_borrow<py::array_t<int64_t>>(arr);
}

// A pooling backward's grad_y on a device, with the output's shape for input shape `in`.
DeviceArray& device_output_grad(py::handle obj, const Device& dev, const std::vector<int64_t>& in,
                                const PoolGeometry& g, const char* fn) {
    DeviceArray& gy = device_f32(obj, dev, -1, fn, "grad_y", "grad_y");
    if (gy.shape != std::vector<int64_t>{in[0], in[1], g.out_h(), g.out_w()})
        fail_value(std::string(fn) + ": 'grad_y' must have the output's shape (" + std::to_string(in[0]) + ", " +
                   std::to_string(in[1]) + ", " + std::to_string(g.out_h()) + ", " + std::to_string(g.out_w()) +
                   "), got " + shape_str(gy.shape));
    return gy;
}

// A new array for a result on a device, or `out_obj` checked to hold `shape` there.
DeviceArray device_result(py::handle out_obj, const std::vector<int64_t>& shape, const Device& dev, const char* fn,
                          const char* first) {
    if (out_obj.is_none()) return DeviceArray::empty(shape, dtype_named("float32"), dev);
    DeviceArray& out = device_f32(out_obj, dev, element_count(shape), fn, "out", first);
    if (out.shape != shape) fail_value(std::string(fn) + ": 'out' must have shape " + shape_str(shape));
    return out;
}

py::object returned(DeviceArray&& result, py::handle out_obj, py::handle like) {
    return out_obj.is_none() ? result_like(std::move(result), like) : py::reinterpret_borrow<py::object>(out_obj);
}

// An argmax entry outside its input plane, at position `at` of the array (its value there).
[[noreturn]] void fail_argmax(const char* fn, int64_t at, int64_t value, const PoolGeometry& g) {
    fail_value(std::string(fn) + ": argmax[" + std::to_string(at) + "] = " + std::to_string(value) +
               " is outside the input plane [0, " + std::to_string(g.h * g.w) + ")");
}

}  // namespace

void bind_pool(py::module_& m) {
    m.def("maxpool2d_forward", [](py::handle x_obj, py::handle kernel, py::handle stride,
                                  py::handle padding, py::handle out_obj, py::handle argmax_obj) -> py::tuple {
        const char* fn = "maxpool2d_forward";
        if (DeviceArray* d = device_array_of(x_obj)) {
            DeviceArray& x = device_f32(x_obj, d->device(), -1, fn, "x", "x");
            const PoolGeometry g = pool_geometry(x.shape, kernel, stride, padding, fn, "x");
            const std::vector<int64_t> shape{x.shape[0], x.shape[1], g.out_h(), g.out_w()};
            DeviceArray y = device_result(out_obj, shape, x.device(), fn, "x");
            DeviceArray argmax = argmax_obj.is_none() ? DeviceArray::empty(shape, dtype_named("int64"), x.device())
                : device_array(argmax_obj, x.device(), element_count(shape), fn, "argmax_out", "x", dtype_named("int64"));
            if (argmax.shape != shape) fail_value(std::string(fn) + ": argument 'argmax_out' must have the output's shape");
            Operands(fn).input("x", x.view()).output("out", y.view()).output("argmax_out", argmax.view()).check();
            const float* xp = x.f32();
            float* yp = y.f32();
            int64_t* ap = static_cast<int64_t*>(argmax.data());
            run_on(x.device(), [&] { maxpool2d_forward(g, xp, yp, ap); },
                   [&] { FASTNN_CUDA_ONLY(cuda::maxpool2d_forward(g, xp, yp, ap)); });
            return py::make_tuple(returned(std::move(y), out_obj, x_obj), returned(std::move(argmax), argmax_obj, x_obj));
        }
        F32Array x = as_f32(x_obj, fn, "x");
        const std::vector<int64_t> shape(x.shape(), x.shape() + x.ndim());
        const PoolGeometry g = pool_geometry(shape, kernel, stride, padding, fn, "x");
        const std::vector<py::ssize_t> out_shape{shape[0], shape[1], g.out_h(), g.out_w()};
        auto y = out_array(out_obj, out_shape, fn);
        auto argmax = argmax_array(argmax_obj, out_shape, fn);
        Operands(fn).input("x", x).output("out", y).output("argmax_out", view_of(argmax)).check();
        float* yp = y.mutable_data();
        int64_t* ap = argmax.mutable_data();
        {
            py::gil_scoped_release nogil;
            maxpool2d_forward(g, x.data(), yp, ap);
        }
        return py::make_tuple(y, argmax);
    }, py::arg("x"), py::arg("kernel_size"), py::kw_only(), py::arg("stride") = py::none(),
       py::arg("padding") = 0, py::arg("out") = py::none(), py::arg("argmax_out") = py::none(),
       "(y, argmax): each window's maximum (the first of equal ones; NaN wins, as torch) and "
       "its index in the input plane, for backward.");

    m.def("maxpool2d_backward", [](py::handle g_obj, py::handle argmax_obj, py::handle shape_obj,
                                   py::handle kernel, py::handle stride, py::handle padding,
                                   py::handle out_obj) -> py::object {
        const char* fn = "maxpool2d_backward";
        const std::vector<int64_t> in = input_shape_arg(shape_obj, fn);
        const PoolGeometry g = pool_geometry(in, kernel, stride, padding, fn, "input_shape");
        if (DeviceArray* d = device_array_of(g_obj)) {  // an argmax entry not in its window adds nothing
            DeviceArray& gy = device_output_grad(g_obj, d->device(), in, g, fn);
            DeviceArray& idx = device_array(argmax_obj, gy.device(), gy.size(), fn, "argmax", "grad_y", dtype_named("int64"));
            DeviceArray dx = device_result(out_obj, in, gy.device(), fn, "grad_y");
            Operands(fn).input("grad_y", gy.view()).input("argmax", idx.view()).output("out", dx.view()).check();
            const float* gp = gy.f32();
            const int64_t* ip = static_cast<const int64_t*>(idx.data());
            float* o = dx.f32();
            int64_t bad = -1;  // the CPU's kernel reports the first entry outside its plane
            run_on(gy.device(), [&] { bad = maxpool2d_backward(g, gp, ip, o); },
                   [&] { FASTNN_CUDA_ONLY(cuda::maxpool2d_backward(g, gp, ip, o)); });
            if (bad >= 0) fail_argmax(fn, bad, ip[bad], g);
            return returned(std::move(dx), out_obj, g_obj);
        }
        F32Array gy = output_grad(g_obj, in, g, fn);
        // Checked by the kernel as it reads each index (no private copy, as forward's int64
        // argmax is used in place: another thread may change the array while the kernel runs
        // without the GIL); the first bad one raises once it is done.
        py::array arr = as_numpy(argmax_obj, fn, "argmax");
        require_same_shape(gy, arr, fn, "grad_y", "argmax");
        if (arr.dtype().kind() != 'i' && arr.dtype().kind() != 'u')
            fail_type(std::string(fn) + ": 'argmax' must hold integer indices, got dtype " + dtype_str(arr));
        auto idx = convert<int64_t>(arr, fn, "argmax", "int64", /*copy=*/false);
        auto dx = out_array(out_obj, {in[0], in[1], in[2], in[3]}, fn);
        Operands(fn).input("grad_y", gy).input("argmax", view_of(idx)).output("out", dx).check();
        float* d = dx.mutable_data();
        int64_t bad;
        {
            py::gil_scoped_release nogil;
            bad = maxpool2d_backward(g, gy.data(), idx.data(), d);
        }
        if (bad >= 0) fail_argmax(fn, bad, idx.data()[bad], g);
        return dx;
    }, py::arg("grad_y"), py::arg("argmax"), py::arg("input_shape"), py::arg("kernel_size"),
       py::kw_only(), py::arg("stride") = py::none(), py::arg("padding") = 0,
       py::arg("out") = py::none());

    m.def("avgpool2d_forward", [](py::handle x_obj, py::handle kernel, py::handle stride,
                                  py::handle padding, py::handle out_obj) -> py::object {
        const char* fn = "avgpool2d_forward";
        if (DeviceArray* d = device_array_of(x_obj)) {
            DeviceArray& x = device_f32(x_obj, d->device(), -1, fn, "x", "x");
            const PoolGeometry g = pool_geometry(x.shape, kernel, stride, padding, fn, "x");
            DeviceArray y = device_result(out_obj, {x.shape[0], x.shape[1], g.out_h(), g.out_w()}, x.device(), fn, "x");
            Operands(fn).input("x", x.view()).output("out", y.view()).check();
            const float* xp = x.f32();
            float* yp = y.f32();
            run_on(x.device(), [&] { avgpool2d_forward(g, xp, yp); },
                   [&] { FASTNN_CUDA_ONLY(cuda::avgpool2d_forward(g, xp, yp)); });
            return returned(std::move(y), out_obj, x_obj);
        }
        F32Array x = as_f32(x_obj, fn, "x");
        const std::vector<int64_t> shape(x.shape(), x.shape() + x.ndim());
        const PoolGeometry g = pool_geometry(shape, kernel, stride, padding, fn, "x");
        auto y = out_array(out_obj, {shape[0], shape[1], g.out_h(), g.out_w()}, fn);
        Operands(fn).input("x", x).output("out", y).check();
        float* yp = y.mutable_data();
        py::gil_scoped_release nogil;
        avgpool2d_forward(g, x.data(), yp);
        return y;
    }, py::arg("x"), py::arg("kernel_size"), py::kw_only(), py::arg("stride") = py::none(),
       py::arg("padding") = 0, py::arg("out") = py::none(), "Each window's mean, the padding counted (torch's default).");

    m.def("avgpool2d_backward", [](py::handle g_obj, py::handle shape_obj, py::handle kernel,
                                   py::handle stride, py::handle padding, py::handle out_obj) -> py::object {
        const char* fn = "avgpool2d_backward";
        const std::vector<int64_t> in = input_shape_arg(shape_obj, fn);
        const PoolGeometry g = pool_geometry(in, kernel, stride, padding, fn, "input_shape");
        if (DeviceArray* d = device_array_of(g_obj)) {
            DeviceArray& gy = device_output_grad(g_obj, d->device(), in, g, fn);
            DeviceArray dx = device_result(out_obj, in, gy.device(), fn, "grad_y");
            Operands(fn).input("grad_y", gy.view()).output("out", dx.view()).check();
            const float* gp = gy.f32();
            float* o = dx.f32();
            run_on(gy.device(), [&] { avgpool2d_backward(g, gp, o); },
                   [&] { FASTNN_CUDA_ONLY(cuda::avgpool2d_backward(g, gp, o)); });
            return returned(std::move(dx), out_obj, g_obj);
        }
        F32Array gy = output_grad(g_obj, in, g, fn);
        auto dx = out_array(out_obj, {in[0], in[1], in[2], in[3]}, fn);
        Operands(fn).input("grad_y", gy).output("out", dx).check();
        float* d = dx.mutable_data();
        py::gil_scoped_release nogil;
        avgpool2d_backward(g, gy.data(), d);
        return dx;
    }, py::arg("grad_y"), py::arg("input_shape"), py::arg("kernel_size"), py::kw_only(),
       py::arg("stride") = py::none(), py::arg("padding") = 0, py::arg("out") = py::none());
}

}  // namespace fastnn::bind
