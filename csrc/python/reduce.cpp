// Bindings of the reductions, gathers and in-place helpers (csrc/cpu/reduce.cpp).
#include "checks.h"

namespace fastnn::bind {

void bind_reduce(py::module_& m) {
    m.def("column_sum", [](py::handle x_obj, py::handle out_obj, float beta) {
        F32Array x = as_f32(x_obj, "column_sum", "x");
        require_rank(x, 2, "column_sum", "x");
        auto out = in_place(out_obj, "column_sum", "out");
        if (out.ndim() != 1 || out.shape(0) != x.shape(1))
            fail_value("column_sum: 'out' must have shape (" + std::to_string(x.shape(1)) +
                       ",), got " + shape_str(out));
        Operands("column_sum").input("x", x).output("out", out).check();
        py::gil_scoped_release nogil;
        column_sum(x.data(), out.mutable_data(), x.shape(0), x.shape(1), beta);
    }, py::arg("x"), py::arg("out"), py::arg("beta") = 0.0f);

    m.def("gather_rows", [](py::handle x_obj, py::handle idx_obj, py::object out_obj) {
        const char* fn = "gather_rows";
        F32Array x = as_f32(x_obj, fn, "x");
        if (x.ndim() < 1) fail_value("gather_rows: 'x' must have a first (sample) axis");
        auto idx = as_indices(idx_obj, fn, "index", "integers");
        const int64_t n = idx.shape(0), rows = x.shape(0), cols = rows ? x.size() / rows : 0;
        int64_t bad = first_label_out_of_range(idx.data(), n, rows);
        if (bad >= 0)
            fail_value("gather_rows: index[" + std::to_string(bad) + "] = " +
                       std::to_string(idx.data()[bad]) + " is outside [0, " + std::to_string(rows) + ")");
        std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
        shape[0] = n;
        py::array_t<float> out;
        if (out_obj.is_none()) {
            out = py::array_t<float>(shape);
        } else {
            out = in_place(out_obj, fn, "out");
            if (out.size() != n * cols || out.ndim() != x.ndim() || out.shape(0) != n)
                fail_value("gather_rows: 'out' must have shape (" + std::to_string(n) +
                           ", ...) like x's rows, got " + shape_str(out));
        }
        Operands(fn).input("x", x).output("out", out).check();
        float* o = out.mutable_data();
        py::gil_scoped_release nogil;
        gather_rows(x.data(), idx.data(), o, n, cols);
        return out;
    }, py::arg("x"), py::arg("index"), py::arg("out") = py::none(),
       "out[i] = x[index[i]]: a shuffled mini-batch, copied in parallel.");
    // ---- reductions for gradient clipping ----
    m.def("sum_squares", [](py::handle x_obj) {
        F32Array x = as_f32(x_obj, "sum_squares", "x");
        py::gil_scoped_release nogil;
        return sum_squares(x.data(), x.size());
    }, py::arg("x"));
    m.def("scale_", [](py::handle x_obj, double factor) {
        auto x = in_place(x_obj, "scale_", "x");
        py::gil_scoped_release nogil;
        scale(x.mutable_data(), x.size(), static_cast<float>(factor));
    }, py::arg("x"), py::arg("factor"));
    m.def("axpby_", [](py::handle y_obj, py::handle x_obj, double a, double b) {
        const char* fn = "axpby_";
        auto y = in_place(y_obj, fn, "y");
        F32Array x = as_f32(x_obj, fn, "x");
        require_same_shape(y, x, fn, "y", "x");
        Operands(fn).input("x", x).output("y", y, /*elementwise=*/true).check();
        py::gil_scoped_release nogil;
        axpby(y.mutable_data(), x.data(), y.size(), static_cast<float>(a), static_cast<float>(b));
    }, py::arg("y"), py::arg("x"), py::arg("a"), py::arg("b"),
       "y = a * y + b * x in place (BLAS's axpby): a weighted sum of two ranks' gradients.");
    m.def("clip_", [](py::handle x_obj, double low, double high) {
        auto x = in_place(x_obj, "clip_", "x");
        if (std::isnan(low) || std::isnan(high) || low > high)
            fail_value("clip_: needs low <= high, got low=" + std::to_string(low) +
                       ", high=" + std::to_string(high));
        py::gil_scoped_release nogil;
        clip(x.mutable_data(), x.size(), static_cast<float>(low), static_cast<float>(high));
    }, py::arg("x"), py::arg("low"), py::arg("high"));
}

}  // namespace fastnn::bind
