// Bindings of the counter-based random numbers and dropout (csrc/cpu/dropout.cpp). Dropout
// also takes device arrays (csrc/cuda/dropout.cu on a GPU: the same masks).
#include "checks.h"
#include "device_array.h"
#ifdef FASTNN_CUDA
#include "cuda/ops.h"
#endif

namespace fastnn::bind {
namespace {

py::object dropout_py(py::handle x_obj, double p_in, py::handle seed_obj, py::handle offset_obj,
                      py::handle out_obj, const char* fn, const char* arg) {
    const float p = dropout_rate(p_in, fn);
    const uint64_t seed = u64_arg(seed_obj, fn, "seed"), offset = u64_arg(offset_obj, fn, "offset");
    if (DeviceArray* d = device_array_of(x_obj)) {
        DeviceArray& x = device_f32(x_obj, d->device(), -1, fn, arg, arg);
        const bool fresh = out_obj.is_none();
        DeviceArray y = fresh ? DeviceArray::empty(x.shape, x.dtype, x.device())
                              : device_f32(out_obj, x.device(), x.size(), fn, "out", arg);
        Operands(fn).input(arg, x.view()).output("out", y.view(), /*elementwise=*/true).check();
        const float* xp = x.f32();
        float* yp = y.f32();
        const int64_t n = x.size();
        run_on(x.device(), [&] { dropout(xp, yp, n, p, seed, offset); },
               [&] { FASTNN_CUDA_ONLY(cuda::dropout(xp, yp, n, p, seed, offset)); });
        return fresh ? result_like(std::move(y), x_obj) : py::reinterpret_borrow<py::object>(out_obj);
    }
    F32Array x = as_f32(x_obj, fn, arg);
    auto y = out_array(out_obj, std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()), fn);
    Operands(fn).input(arg, x).output("out", y, /*elementwise=*/true).check();
    py::gil_scoped_release nogil;
    dropout(x.data(), y.mutable_data(), x.size(), p, seed, offset);
    return py::object(std::move(y));
}

}  // namespace

void bind_dropout(py::module_& m) {
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
    m.def("dropout_forward", [](py::handle x, double p, py::handle seed, py::handle offset,
                                py::handle out) {
        return dropout_py(x, p, seed, offset, out, "dropout_forward", "x");
    }, py::arg("x"), py::arg("p"), py::arg("seed"), py::arg("offset"), py::kw_only(),
       py::arg("out") = py::none());
    m.def("dropout_backward", [](py::handle g, double p, py::handle seed, py::handle offset,
                                 py::handle out) {
        return dropout_py(g, p, seed, offset, out, "dropout_backward", "grad_y");
    }, py::arg("grad_y"), py::arg("p"), py::arg("seed"), py::arg("offset"), py::kw_only(),
       py::arg("out") = py::none());
}

}  // namespace fastnn::bind
