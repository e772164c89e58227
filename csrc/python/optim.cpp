// Bindings of the optimizer steps and the L1/L2 penalty (csrc/cpu/optim.cpp), in place. SGD
// and Adam also step device arrays (csrc/cuda/optim.cu on a GPU).
#include <cmath>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>

#include "checks.h"
#include "keywords.h"
#include "device_array.h"
#ifdef FASTNN_CUDA
#include "cuda/ops.h"
#endif

namespace fastnn::bind {
namespace {

// An optimizer's arguments on a device: param first, every other array on its device with its
// size, float32, checked not to overlap (all are written but grad).
struct DeviceStep {
    const char* fn;
    DeviceArray& param;
    Operands ops;

    DeviceStep(const char* fn_, DeviceArray& p) : fn(fn_), param(p), ops(fn_) {
        ops.output("param", p.view());
    }
    float* input(py::handle obj, const char* arg) {
        DeviceArray& a = device_f32(obj, param.device(), param.size(), fn, arg, "param");
        ops.input(arg, a.view());
        return a.f32();
    }
    float* output(py::handle obj, const char* arg) {
        DeviceArray& a = device_f32(obj, param.device(), param.size(), fn, arg, "param");
        ops.output(arg, a.view());
        return a.f32();
    }
};

// A buffer of an optimizer: in place, with param's size.
py::array_t<float> state_buffer(py::handle obj, const py::array& param, const char* fn,
                                const char* arg) {
    auto a = in_place(obj, fn, arg);
    require_same_size(param, a, fn, "param", arg);
    return a;
}

// An optimizer's parameter, updated in place, and its gradient, of the same size.
std::pair<py::array_t<float>, F32Array> param_and_grad(py::handle p_obj, py::handle g_obj,
                                                       const char* fn) {
    auto p = in_place(p_obj, fn, "param");
    F32Array g = as_f32(g_obj, fn, "grad");
    require_same_size(p, g, fn, "param", "grad");
    return {p, g};
}

// The `segments` argument: None, or an int64 array of shape (S, 3), rows (offset, rows, cols)
// of the parameters in a flat buffer of n elements, in order and disjoint (ops.h:
// ParamSegment). A segment past the end or overlapping the one before would let two threads
// update one element, so each is checked. On a device it is checked and not needed.
ParamSegments param_segments(py::handle obj, int64_t n, const char* fn) {
    ParamSegments segs;
    if (obj.is_none()) return segs;
    py::array arr = as_numpy(obj, fn, "segments");
    const char kind = arr.dtype().kind();
    if (kind != 'i' && kind != 'u')
        fail_type(std::string(fn) + ": argument 'segments' must hold integers, got dtype " + dtype_str(arr));
    if (arr.ndim() != 2 || arr.shape(1) != 3)
        fail_value(std::string(fn) + ": argument 'segments' must have shape (S, 3) (offset, rows, cols), got " +
                   shape_str(arr));
    auto rows = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    if (!rows) throw py::error_already_set();
    const int64_t* v = rows.data();
    int64_t end = 0;
    for (py::ssize_t i = 0; i < rows.shape(0); ++i) {
        const int64_t off = v[3 * i], r = v[3 * i + 1], c = v[3 * i + 2];
        auto at = [&] {  // built only for an error: this runs on every step
            return std::string(fn) + ": 'segments' row " + std::to_string(i) + " (" + std::to_string(off) + ", " +
                   std::to_string(r) + ", " + std::to_string(c) + ")";
        };
        if (off < 0 || r < 0 || c < 0) fail_value(at() + " has a negative value");
        if (off < end) fail_value(at() + " starts before the end of the one before (" + std::to_string(end) + ")");
        if (c != 0 && r > (n - off) / c) fail_value(at() + " runs past the buffer's " + std::to_string(n) + " elements");
        end = off + r * c;
        segs.push_back({off, r, c});
    }
    return segs;
}

// An optimizer's settings as its kernel takes them, in float32: NaN or inf (1e39 is inf
// there) make NaN weights, and an eps below float32's smallest normal is 0 to the kernels
// (flushed), 0/0 where a gradient's history is zero. The optim classes check the same.
void check_settings(const char* fn, std::initializer_list<std::pair<const char*, float>> settings) {
    for (auto [name, value] : settings)
        if (!std::isfinite(value))
            fail_value(std::string(fn) + ": '" + name + "' must be finite within float32's range, got " +
                       py::str(py::float_(value)).cast<std::string>());
}

void check_eps(const char* fn, float eps) {
    if (!(eps >= std::numeric_limits<float>::min()) || !std::isfinite(eps))
        fail_value(std::string(fn) + ": 'eps' must be a finite number of at least float32's smallest normal (1.175e-38), got " +
                   py::str(py::float_(eps)).cast<std::string>());
}

}  // namespace

void bind_optim(py::module_& m) {
    static const KeywordTable sgd_params{
        required("param"), required("grad"), required("velocity"), keyword_required("lr", "float"),
        keyword("momentum", py::float_(0.0)), keyword("nesterov", py::bool_(false)),
        keyword("weight_decay", py::float_(0.0)), keyword("segments", py::none())};
    def_with_table(m, "sgd_step", sgd_params, "None", "One SGD update of param in place (see _C.pyi).",
                   [](const Arguments& arg) {
        const py::handle p_obj = arg.get<py::handle>("param"), g_obj = arg.get<py::handle>("grad"),
                         seg_obj = arg.get<py::handle>("segments");
        const py::object v_obj = arg.get<py::object>("velocity");
        const float lr = arg.get<float>("lr"), momentum = arg.get<float>("momentum"),
                    weight_decay = arg.get<float>("weight_decay");
        const bool nesterov = arg.get<bool>("nesterov");
        check_settings("sgd_step", {{"lr", lr}, {"momentum", momentum}, {"weight_decay", weight_decay}});
        if (DeviceArray* dp = device_array_of(p_obj)) {
            DeviceStep d("sgd_step", device_f32(p_obj, dp->device(), -1, "sgd_step", "param", "param"));
            const float* g = d.input(g_obj, "grad");
            float* v = nullptr;
            if (momentum != 0.0f) {
                if (v_obj.is_none()) fail_value("sgd_step: 'velocity' is required when momentum != 0");
                v = d.output(v_obj, "velocity");
            }
            d.ops.check();
            float* p = d.param.f32();
            const int64_t n = d.param.size();
            param_segments(seg_obj, n, "sgd_step");
            run_on(d.param.device(), [&] { sgd_step(p, g, v, n, lr, momentum, nesterov, weight_decay); },
                   [&] { FASTNN_CUDA_ONLY(cuda::sgd_step(p, g, v, n, lr, momentum, nesterov, weight_decay)); });
            return;
        }
        auto [p, g] = param_and_grad(p_obj, g_obj, "sgd_step");
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
        const ParamSegments segs = param_segments(seg_obj, p.size(), "sgd_step");
        py::gil_scoped_release nogil;
        sgd_step(p.mutable_data(), g.data(), v, p.size(), lr, momentum, nesterov, weight_decay, &segs);
    });
    static const KeywordTable adam_params{
        required("param"), required("grad"), required("m"), required("v"), keyword_required("lr", "float"),
        keyword_required("beta1", "float"), keyword_required("beta2", "float"), keyword_required("eps", "float"),
        keyword_required("weight_decay", "float"), keyword_required("step", "int"),
        keyword("decoupled", py::bool_(false)), keyword("segments", py::none())};
    def_with_table(m, "adam_step", adam_params, "None", "One Adam (or AdamW) update of param in place (see _C.pyi).",
                   [](const Arguments& arg) {
        const py::handle p_obj = arg.get<py::handle>("param"), g_obj = arg.get<py::handle>("grad"),
                         m_obj = arg.get<py::handle>("m"), v_obj = arg.get<py::handle>("v"),
                         seg_obj = arg.get<py::handle>("segments");
        const float lr = arg.get<float>("lr"), eps = arg.get<float>("eps"), weight_decay = arg.get<float>("weight_decay");
        const double beta1 = arg.get<double>("beta1"), beta2 = arg.get<double>("beta2");
        const int64_t step = arg.get<int64_t>("step");
        const bool decoupled = arg.get<bool>("decoupled");
        if (step < 1) fail_value("adam_step: 'step' counts from 1, got " + std::to_string(step));
        check_settings("adam_step", {{"lr", lr}, {"weight_decay", weight_decay}});
        check_eps("adam_step", eps);
        // As the optim classes and torch: a beta of 1 divides by 1 - beta^t = 0 (NaN weights)
        for (auto [name, beta] : {std::pair{"beta1", beta1}, std::pair{"beta2", beta2}})
            if (!(beta >= 0.0 && beta < 1.0))
                fail_value(std::string("adam_step: '") + name + "' must be in [0, 1), got " + std::to_string(beta));
        if (DeviceArray* dp = device_array_of(p_obj)) {
            DeviceStep d("adam_step", device_f32(p_obj, dp->device(), -1, "adam_step", "param", "param"));
            const float* g = d.input(g_obj, "grad");
            float *m = d.output(m_obj, "m"), *v = d.output(v_obj, "v");
            d.ops.check();
            float* p = d.param.f32();
            const int64_t n = d.param.size();
            param_segments(seg_obj, n, "adam_step");
            run_on(d.param.device(),
                   [&] { adam_step(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, step, decoupled); },
                   [&] { FASTNN_CUDA_ONLY(cuda::adam_step(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay,
                                                          step, decoupled)); });
            return;
        }
        auto [p, g] = param_and_grad(p_obj, g_obj, "adam_step");
        auto m1 = state_buffer(m_obj, p, "adam_step", "m");
        auto v = state_buffer(v_obj, p, "adam_step", "v");
        Operands("adam_step").output("param", p).input("grad", g).output("m", m1).output("v", v)
            .check();
        const ParamSegments segs = param_segments(seg_obj, p.size(), "adam_step");
        py::gil_scoped_release nogil;
        adam_step(p.mutable_data(), g.data(), m1.mutable_data(), v.mutable_data(), p.size(), lr,
                  beta1, beta2, eps, weight_decay, step, decoupled, &segs);
    });

    m.def("adagrad_step", [](py::handle p_obj, py::handle g_obj, py::handle s_obj, float lr,
                             float eps, float weight_decay, float lr_decay, int64_t step,
                             py::handle seg_obj) {
        const char* fn = "adagrad_step";
        if (step < 1) fail_value("adagrad_step: 'step' counts from 1, got " + std::to_string(step));
        check_settings(fn, {{"lr", lr}, {"weight_decay", weight_decay}, {"lr_decay", lr_decay}});
        check_eps(fn, eps);
        if (DeviceArray* dp = device_array_of(p_obj)) {
            DeviceStep d(fn, device_f32(p_obj, dp->device(), -1, fn, "param", "param"));
            const float* g = d.input(g_obj, "grad");
            float* s = d.output(s_obj, "sum_sq");
            d.ops.check();
            float* p = d.param.f32();
            const int64_t n = d.param.size();
            param_segments(seg_obj, n, fn);
            run_on(d.param.device(), [&] { adagrad_step(p, g, s, n, lr, eps, weight_decay, lr_decay, step); },
                   [&] { FASTNN_CUDA_ONLY(cuda::adagrad_step(p, g, s, n, lr, eps, weight_decay, lr_decay, step)); });
            return;
        }
        auto [p, g] = param_and_grad(p_obj, g_obj, fn);
        auto sum_sq = state_buffer(s_obj, p, fn, "sum_sq");
        Operands(fn).output("param", p).input("grad", g).output("sum_sq", sum_sq).check();
        const ParamSegments segs = param_segments(seg_obj, p.size(), fn);
        py::gil_scoped_release nogil;
        adagrad_step(p.mutable_data(), g.data(), sum_sq.mutable_data(), p.size(), lr, eps,
                     weight_decay, lr_decay, step, &segs);
    }, py::arg("param"), py::arg("grad"), py::arg("sum_sq"), py::kw_only(), py::arg("lr"),
          py::arg("eps"), py::arg("weight_decay"), py::arg("lr_decay"), py::arg("step"),
          py::arg("segments") = py::none());

    m.def("rmsprop_step", [](py::handle p_obj, py::handle g_obj, py::handle sq_obj,
                             py::object buf_obj, py::object avg_obj, float lr, double alpha,
                             float eps, float weight_decay, float momentum, bool centered,
                             py::handle seg_obj) {
        const char* fn = "rmsprop_step";
        check_settings(fn, {{"lr", lr}, {"weight_decay", weight_decay}, {"momentum", momentum}});
        check_eps(fn, eps);
        if (!(alpha >= 0.0 && alpha < 1.0))  // as optim.RMSprop: past 1 the average goes negative (NaN)
            fail_value("rmsprop_step: 'alpha' must be in [0, 1), got " + std::to_string(alpha));
        if (!(momentum >= 0.0f))
            fail_value("rmsprop_step: 'momentum' must be >= 0, got " + std::to_string(momentum));
        if (momentum > 0.0f && buf_obj.is_none()) fail_value("rmsprop_step: 'momentum_buf' is required when momentum > 0");
        if (centered && avg_obj.is_none()) fail_value("rmsprop_step: 'grad_avg' is required when centered=True");
        if (DeviceArray* dp = device_array_of(p_obj)) {
            DeviceStep d(fn, device_f32(p_obj, dp->device(), -1, fn, "param", "param"));
            const float* g = d.input(g_obj, "grad");
            float* sq = d.output(sq_obj, "square_avg");
            float* buf = momentum > 0.0f ? d.output(buf_obj, "momentum_buf") : nullptr;
            float* avg = centered ? d.output(avg_obj, "grad_avg") : nullptr;
            d.ops.check();
            float* p = d.param.f32();
            const int64_t n = d.param.size();
            param_segments(seg_obj, n, fn);
            run_on(d.param.device(),
                   [&] { rmsprop_step(p, g, sq, buf, avg, n, lr, alpha, eps, weight_decay, momentum, centered); },
                   [&] { FASTNN_CUDA_ONLY(cuda::rmsprop_step(p, g, sq, buf, avg, n, lr, alpha, eps, weight_decay,
                                                             momentum, centered)); });
            return;
        }
        auto [p, g] = param_and_grad(p_obj, g_obj, fn);
        auto square_avg = state_buffer(sq_obj, p, fn, "square_avg");
        float* sq = square_avg.mutable_data();
        Operands ops(fn);
        ops.output("param", p).input("grad", g).output("square_avg", square_avg);
        float *buf = nullptr, *avg = nullptr;
        if (momentum > 0.0f) {
            auto momentum_buf = state_buffer(buf_obj, p, fn, "momentum_buf");
            ops.output("momentum_buf", momentum_buf);
            buf = momentum_buf.mutable_data();
        }
        if (centered) {
            auto grad_avg = state_buffer(avg_obj, p, fn, "grad_avg");
            ops.output("grad_avg", grad_avg);
            avg = grad_avg.mutable_data();
        }
        ops.check();
        const ParamSegments segs = param_segments(seg_obj, p.size(), fn);
        py::gil_scoped_release nogil;
        rmsprop_step(p.mutable_data(), g.data(), sq, buf, avg, p.size(), lr, alpha, eps,
                     weight_decay, momentum, centered, &segs);
    }, py::arg("param"), py::arg("grad"), py::arg("square_avg"), py::arg("momentum_buf"),
          py::arg("grad_avg"), py::kw_only(), py::arg("lr"), py::arg("alpha"), py::arg("eps"),
          py::arg("weight_decay"), py::arg("momentum"), py::arg("centered"),
          py::arg("segments") = py::none());

    m.def("add_penalty_grad", [](py::handle p_obj, py::handle g_obj, double l1, double l2) {
        const char* fn = "add_penalty_grad";
        if (DeviceArray* dp = device_array_of(p_obj)) {
            DeviceArray& param = device_f32(p_obj, dp->device(), -1, fn, "param", "param");
            DeviceArray& grad = device_f32(g_obj, param.device(), param.size(), fn, "grad", "param");
            nonneg_arg(l1, fn, "l1");
            nonneg_arg(l2, fn, "l2");
            Operands(fn).input("param", param.view()).output("grad", grad.view()).check();
            const float* p = param.f32();
            float* g = grad.f32();
            const int64_t n = param.size();
            return sum_on(param, [&] { return add_penalty_grad(p, g, n, l1, l2); },
                          [&]([[maybe_unused]] double* s) -> double {
                              FASTNN_CUDA_ONLY(return cuda::add_penalty_grad(p, g, n, l1, l2, s));
                          });
        }
        F32Array p = as_f32(p_obj, fn, "param");
        auto g = in_place(g_obj, fn, "grad");
        require_same_size(p, g, fn, "param", "grad");
        nonneg_arg(l1, fn, "l1");
        nonneg_arg(l2, fn, "l2");
        Operands(fn).input("param", p).output("grad", g).check();
        py::gil_scoped_release nogil;
        return add_penalty_grad(p.data(), g.mutable_data(), p.size(), l1, l2);
    }, py::arg("param"), py::arg("grad"), py::arg("l1"), py::arg("l2"));
}

}  // namespace fastnn::bind
