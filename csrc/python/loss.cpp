// Bindings of the losses (csrc/cpu/loss.cpp): each returns (mean loss, its gradient).
// cross_entropy also takes device arrays (csrc/cuda/loss.cu on a GPU).
#include "checks.h"
#include "device_array.h"
#ifdef FASTNN_CUDA
#include "cuda/ops.h"
#endif

namespace fastnn::bind {
namespace {

// cross_entropy with `logits` a device array: labels on its device (int64, int32 or uint8),
// the same checks as on NumPy arrays; (loss, gradient as a device array).
py::tuple cross_entropy_on_device(DeviceArray& logits, py::handle logits_obj, py::handle labels_obj) {
    const Device& dev = logits.device();
    if (logits.shape.size() != 2 || logits.shape[0] < 1 || logits.shape[1] < 1)
        fail_value("cross_entropy: 'logits' must be (rows, classes) with at least one of each");
    const int64_t rows = logits.shape[0], classes = logits.shape[1];
    DeviceArray* labels = device_array_of(labels_obj);
    if (!labels)
        fail_value("cross_entropy: 'labels' is a " + py::str(py::type::of(labels_obj).attr("__name__")).cast<std::string>() +
                   " in host memory but 'logits' a device array on " + dev.name() +
                   "; the arrays of one call must be on one device");
    if (labels->device() != dev)
        fail_value("cross_entropy: 'labels' is on " + labels->device().name() + " but 'logits' on " + dev.name() +
                   "; the arrays of one call must be on one device");
    if (labels->dtype == dtype_named("float32"))
        fail_type("cross_entropy: 'labels' must hold integer class indices (int64, int32 or uint8), got float32");
    if (labels->shape.size() != 1 || labels->shape[0] != rows)
        fail_value("cross_entropy: 'labels' must have one entry per row of 'logits' (" + std::to_string(rows) +
                   "), got " + std::to_string(labels->size()) + " in " + std::to_string(labels->shape.size()) +
                   " dimensions");
    DeviceArray grad = DeviceArray::empty(logits.shape, logits.dtype, dev);
    const float* x = logits.f32();
    float* g = grad.f32();
    double value = 0.0;
    int64_t bad = -1;
    // The kernels for the labels' integer type, picked once.
    auto run = [&](auto* labels_of_type) {
        if (dev.type == DeviceType::Cpu) {
            const std::vector<int64_t> as64(labels_of_type, labels_of_type + rows);  // the CPU reads int64
            bad = first_label_out_of_range(as64.data(), rows, classes);
            if (bad < 0) {
                py::gil_scoped_release nogil;
                value = cross_entropy(x, as64.data(), g, rows, classes);
            }
        } else {
            // rows + 2 eight-byte slots (row losses, the total, the first bad row), from the cache
            DeviceArray scratch = DeviceArray::empty({rows + 2}, dtype_named("int64"), dev);
            [[maybe_unused]] double* s = static_cast<double*>(scratch.data());  // CUDA build
            py::gil_scoped_release nogil;
            FASTNN_CUDA_ONLY(value = cuda::cross_entropy(x, labels_of_type, g, rows, classes, s, &bad));
        }
    };
    if (labels->dtype == dtype_named("int64")) run(static_cast<const int64_t*>(labels->data()));
    else if (labels->dtype == dtype_named("int32")) run(static_cast<const int32_t*>(labels->data()));
    else run(static_cast<const uint8_t*>(labels->data()));
    if (bad >= 0)
        fail_value("cross_entropy: labels[" + std::to_string(bad) + "] is outside [0, " + std::to_string(classes) +
                   ") for logits with " + std::to_string(classes) + " classes");
    return py::tuple(py::make_tuple(value, result_like(std::move(grad), logits_obj)));
}

using LossFn = double (*)(const float*, const float*, float*, int64_t);

// kind: which of csrc/cuda's elementwise losses (cuda::ElementwiseLoss) is `loss`'s twin.
// probabilities: pred must lie in [0, 1] (bce_probabilities: a log of anything else is NaN,
// its gradient huge), checked on CPU arrays only, as losses.BinaryCrossEntropy does (a
// device's would be copied back).
py::tuple elementwise_loss(py::handle pred_obj, py::handle target_obj, const char* fn,
                           LossFn loss, [[maybe_unused]] int kind, bool probabilities = false) {
    if (DeviceArray* d = device_array_of(pred_obj)) {
        DeviceArray& pred = device_f32(pred_obj, d->device(), -1, fn, "pred", "pred");
        DeviceArray& target = device_f32(target_obj, pred.device(), -1, fn, "target", "pred");
        if (pred.size() == 0) fail_value(std::string(fn) + ": 'pred' is empty");
        if (target.shape != pred.shape)
            fail_value(std::string(fn) + ": 'pred' and 'target' must have the same shape");
        DeviceArray grad = DeviceArray::empty(pred.shape, pred.dtype, pred.device());
        const float *p = pred.f32(), *t = target.f32();
        float* g = grad.f32();
        const int64_t n = pred.size();
        const double value = sum_on(pred, [&] { return loss(p, t, g, n); }, [&]([[maybe_unused]] double* s) -> double {
            FASTNN_CUDA_ONLY(return cuda::elementwise_loss(static_cast<cuda::ElementwiseLoss>(kind), p, t, g, n, s));
        });
        return py::make_tuple(value, result_like(std::move(grad), pred_obj));
    }
    F32Array pred = as_f32(pred_obj, fn, "pred"), target = as_f32(target_obj, fn, "target");
    require_nonempty(pred, fn, "pred");
    require_same_shape(pred, target, fn, "pred", "target");
    if (probabilities)
        for (int64_t i = 0; i < pred.size(); ++i)
            if (pred.data()[i] < 0.0f || pred.data()[i] > 1.0f)
                fail_value(std::string(fn) + ": from_logits=False takes probabilities in [0, 1] in "
                           "'pred'; element " + std::to_string(i) + " is " + std::to_string(pred.data()[i]));
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
    m.def("mse", [](py::handle p, py::handle t) { return elementwise_loss(p, t, "mse", mse, 0); },
          py::arg("pred"), py::arg("target"));
    m.def("binary_cross_entropy", [](py::handle p, py::handle t, bool from_logits) {
        return elementwise_loss(p, t, "binary_cross_entropy",
                                from_logits ? bce_with_logits : bce_probabilities, from_logits ? 1 : 2,
                                !from_logits);
    }, py::arg("pred"), py::arg("target"), py::arg("from_logits") = true);
    m.def("cross_entropy", [](py::handle logits_obj, py::handle labels_obj) {
        if (DeviceArray* d = device_array_of(logits_obj))
            return cross_entropy_on_device(device_f32(logits_obj, d->device(), -1, "cross_entropy", "logits", "logits"),
                                           logits_obj, labels_obj);
        F32Array logits = matrix_2d(logits_obj, "cross_entropy", "logits");
        const int64_t rows = logits.shape(0), classes = logits.shape(1);
        auto labels = labels_for(labels_obj, rows, classes, "cross_entropy");
        auto grad = new_like(logits);
        double value;
        {
            py::gil_scoped_release nogil;
            value = cross_entropy(logits.data(), labels.data(), grad.mutable_data(), rows, classes);
        }
        return py::tuple(py::make_tuple(value, grad));
    }, py::arg("logits"), py::arg("labels"));
    m.def("argmax_matches", [](py::handle logits_obj, py::handle labels_obj) {
        F32Array logits = matrix_2d(logits_obj, "argmax_matches", "logits");
        const int64_t rows = logits.shape(0), classes = logits.shape(1);
        auto labels = labels_for(labels_obj, rows, classes, "argmax_matches");
        py::gil_scoped_release nogil;
        return argmax_matches(logits.data(), labels.data(), rows, classes);
    }, py::arg("logits"), py::arg("labels"),
       "How many rows of logits have their label as argmax (NumPy's: the first maximum, or the "
       "first NaN): CrossEntropy's correct predictions.");
    m.def("cross_entropy_soft", [](py::handle logits_obj, py::handle target_obj) -> py::tuple {
        if (DeviceArray* d = device_array_of(logits_obj)) {
            const char* fn = "cross_entropy_soft";
            DeviceArray& logits = device_f32(logits_obj, d->device(), -1, fn, "logits", "logits");
            if (logits.shape.size() != 2 || logits.shape[0] < 1 || logits.shape[1] < 1)
                fail_value("cross_entropy_soft: 'logits' must be (rows, classes) with at least one of each");
            DeviceArray& target = device_f32(target_obj, logits.device(), -1, fn, "target", "logits");
            if (target.shape != logits.shape) fail_value("cross_entropy_soft: 'target' must have logits' shape");
            const int64_t rows = logits.shape[0], classes = logits.shape[1];
            DeviceArray grad = DeviceArray::empty(logits.shape, logits.dtype, logits.device());
            const float *x = logits.f32(), *t = target.f32();
            float* g = grad.f32();
            double value = 0.0;
            if (logits.device().type == DeviceType::Cpu) {
                run_on(logits.device(), [&] { value = cross_entropy_soft(x, t, g, rows, classes); }, [] {});
            } else {
                DeviceArray scratch = DeviceArray::empty({rows + 1}, dtype_named("int64"), logits.device());
                [[maybe_unused]] double* s = static_cast<double*>(scratch.data());  // CUDA build
                run_on(logits.device(), [] {},
                       [&] { FASTNN_CUDA_ONLY(value = cuda::cross_entropy_soft(x, t, g, rows, classes, s)); });
            }
            return py::make_tuple(value, result_like(std::move(grad), logits_obj));
        }
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
