// Bindings of the losses (csrc/cpu/loss.cpp): each returns (mean loss, its gradient).
#include "checks.h"

namespace fastnn::bind {
namespace {

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

}  // namespace

void bind_loss(py::module_& m) {
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
}

}  // namespace fastnn::bind
