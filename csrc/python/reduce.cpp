// Bindings of the reductions, gathers and in-place helpers (csrc/cpu/reduce.cpp). gather_rows
// and column_sum also take device arrays, as do sum_squares, sum_abs, scale_ and clip_ (csrc/cuda/reduce.cu on a GPU).
#include <cstring>

#include "checks.h"
#include "keywords.h"
#include "device_array.h"
#ifdef FASTNN_CUDA
#include "cuda/ops.h"
#endif

namespace fastnn::bind {
namespace {

// gather_rows with `x` a device array of any dtype (features, or labels): index an int64 device
// array there (checked by the kernel, which costs a wait for the GPU), or integers on the host
// (checked here, then copied over without waiting: a batch's indices every step); out (n, ...)
// of x's dtype on x's device, a new one when None.
py::object gather_rows_on_device(DeviceArray& x, py::handle x_obj, py::handle idx_obj, py::handle out_obj) {
    const char* fn = "gather_rows";
    const Device& dev = x.device();
    if (x.shape.empty()) fail_value("gather_rows: 'x' must have a first (sample) axis");
    DeviceArray idx;
    if (DeviceArray* d = device_array_of(idx_obj)) {
        if (d->device() != dev)
            fail_value("gather_rows: 'index' is on " + d->device().name() + " but 'x' on " + dev.name() +
                       "; the arrays of one call must be on one device");
        if (d->dtype != dtype_named("int64"))
            fail_type(std::string("gather_rows: a device 'index' must be int64, got ") + d->dtype->name);
        if (d->shape.size() != 1) fail_value("gather_rows: 'index' must have 1 dimension");
        idx = *d;
    }
    const int64_t rows = x.shape[0];
    int64_t bad = -1;
    if (!device_array_of(idx_obj)) {  // integers on the host: checked here, then copied to the device
        auto host = as_indices(idx_obj, fn, "index", "integers");
        bad = first_label_out_of_range(host.data(), host.shape(0), rows);
        if (bad >= 0)
            fail_value("gather_rows: index[" + std::to_string(bad) + "] = " + std::to_string(host.data()[bad]) +
                       " is outside [0, " + std::to_string(rows) + ")");
        idx = DeviceArray::empty({host.shape(0)}, dtype_named("int64"), dev);
        py::gil_scoped_release nogil;
        device_upload(dev, idx.data(), host.data(), static_cast<size_t>(idx.nbytes()));
    }
    const bool checked = device_array_of(idx_obj) != nullptr;
    const int64_t n = idx.shape[0], cols = rows ? x.size() / rows : 0;
    std::vector<int64_t> shape = x.shape;
    shape[0] = n;
    const bool fresh = out_obj.is_none();
    DeviceArray out = fresh ? DeviceArray::empty(shape, x.dtype, dev)
                            : device_array(out_obj, dev, n * cols, fn, "out", "x", x.dtype);
    if (!fresh && (out.shape.size() != shape.size() || out.shape[0] != n))
        fail_value("gather_rows: 'out' must have shape (" + std::to_string(n) + ", ...) like x's rows");
    Operands(fn).input("x", x.view()).input("index", idx.view()).output("out", out.view()).check();
    const void* xp = x.data();
    const int64_t* ip = static_cast<const int64_t*>(idx.data());
    void* o = out.data();
    const int64_t row_bytes = cols * x.dtype->itemsize;
    if (dev.type == DeviceType::Cpu) {
        if (checked) bad = first_label_out_of_range(ip, n, rows);
        if (bad < 0) {
            py::gil_scoped_release nogil;
            if (x.dtype == dtype_named("float32"))
                gather_rows(static_cast<const float*>(xp), ip, static_cast<float*>(o), n, cols);
            else
                for (int64_t i = 0; i < n; ++i)
                    std::memcpy(static_cast<char*>(o) + i * row_bytes, static_cast<const char*>(xp) + ip[i] * row_bytes,
                                static_cast<size_t>(row_bytes));
        }
    } else {
        DeviceArray flag = checked ? DeviceArray::empty({1}, dtype_named("int64"), dev) : DeviceArray();
        [[maybe_unused]] auto* f = static_cast<unsigned long long*>(checked ? flag.data() : nullptr);  // CUDA build
        py::gil_scoped_release nogil;
        FASTNN_CUDA_ONLY(bad = cuda::gather_rows(xp, ip, o, n, row_bytes, rows, f));
    }
    if (bad >= 0)
        fail_value("gather_rows: index[" + std::to_string(bad) + "] is outside [0, " + std::to_string(rows) + ")");
    return fresh ? result_like(std::move(out), x_obj) : py::reinterpret_borrow<py::object>(out_obj);
}

// A sum over the elements of x, a NumPy array's or a device array's: host(p, n) on host memory,
// gpu(p, n, scratch) on a GPU.
template <class Host, class Gpu>
double array_sum(py::handle x_obj, const char* fn, Host host, Gpu gpu) {
    if (DeviceArray* d = device_array_of(x_obj)) {
        DeviceArray& x = device_f32(x_obj, d->device(), -1, fn, "x", "x");
        const float* p = x.f32();
        const int64_t n = x.size();
        return sum_on(x, [&] { return host(p, n); }, [&](double* s) { return gpu(p, n, s); });
    }
    F32Array x = as_f32(x_obj, fn, "x");
    py::gil_scoped_release nogil;
    return host(x.data(), x.size());
}

}  // namespace

void bind_reduce(py::module_& m) {
    static const KeywordTable column_sum_params{required("x"), required("out"), optional("beta", py::float_(0.0))};
    def_with_table(m, "column_sum", column_sum_params, "None", "out = beta * out + the column sums of x (see _C.pyi).",
                   [](const Arguments& arg) {
        const py::handle x_obj = arg.get<py::handle>("x"), out_obj = arg.get<py::handle>("out");
        const float beta = arg.get<float>("beta");
        if (DeviceArray* d = device_array_of(x_obj)) {
            DeviceArray& x = device_f32(x_obj, d->device(), -1, "column_sum", "x", "x");
            if (x.shape.size() != 2)
                fail_value("column_sum: 'x' must be 2-D, got " + std::to_string(x.shape.size()) + "-D");
            const int64_t rows = x.shape[0], cols = x.shape[1];
            DeviceArray& out = device_f32(out_obj, x.device(), cols, "column_sum", "out", "x");
            Operands("column_sum").input("x", x.view()).output("out", out.view()).check();
            const float* xp = x.f32();
            float* op = out.f32();
            run_on(x.device(), [&] { column_sum(xp, op, rows, cols, beta); },
                   [&] { FASTNN_CUDA_ONLY(cuda::column_sum(xp, op, rows, cols, beta)); });
            return;
        }
        F32Array x = as_f32(x_obj, "column_sum", "x");
        require_rank(x, 2, "column_sum", "x");
        auto out = in_place(out_obj, "column_sum", "out");
        if (out.ndim() != 1 || out.shape(0) != x.shape(1))
            fail_value("column_sum: 'out' must have shape (" + std::to_string(x.shape(1)) +
                       ",), got " + shape_str(out));
        Operands("column_sum").input("x", x).output("out", out).check();
        py::gil_scoped_release nogil;
        column_sum(x.data(), out.mutable_data(), x.shape(0), x.shape(1), beta);
    });

    static const KeywordTable gather_params{required("x"), required("index"), optional("out", py::none())};
    def_with_table(m, "gather_rows", gather_params, "object", "out[i] = x[index[i]]: a shuffled mini-batch, copied in parallel.",
                   [](const Arguments& arg) {
        const py::handle x_obj = arg.get<py::handle>("x"), idx_obj = arg.get<py::handle>("index");
        const py::object out_obj = arg.get<py::object>("out");
        const char* fn = "gather_rows";
        if (DeviceArray* d = device_array_of(x_obj))
            return gather_rows_on_device(*d, x_obj, idx_obj, out_obj);
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
        py::array_t<float> out = out_obj.is_none() ? py::array_t<float>(shape) : in_place(out_obj, fn, "out");
        if (!out_obj.is_none() && (out.size() != n * cols || out.ndim() != x.ndim() || out.shape(0) != n))
            fail_value("gather_rows: 'out' must have shape (" + std::to_string(n) +
                       ", ...) like x's rows, got " + shape_str(out));
        Operands(fn).input("x", x).output("out", out).check();
        float* o = out.mutable_data();
        py::gil_scoped_release nogil;
        gather_rows(x.data(), idx.data(), o, n, cols);
        return py::object(std::move(out));
    });
    // ---- reductions for gradient clipping ----
    m.def("sum_squares", [](py::handle x_obj) {
        return array_sum(x_obj, "sum_squares", sum_squares,
                         []([[maybe_unused]] const float* p, [[maybe_unused]] int64_t n,
                            [[maybe_unused]] double* s) -> double { FASTNN_CUDA_ONLY(return cuda::sum_squares(p, n, s)); });
    }, py::arg("x"));
    m.def("sum_abs", [](py::handle x_obj) {
        return array_sum(x_obj, "sum_abs", sum_abs,
                         []([[maybe_unused]] const float* p, [[maybe_unused]] int64_t n,
                            [[maybe_unused]] double* s) -> double { FASTNN_CUDA_ONLY(return cuda::sum_abs(p, n, s)); });
    }, py::arg("x"), "sum |x| in double (an L1 penalty), the same value whatever the thread count.");
    m.def("scale_", [](py::handle x_obj, double factor) {
        if (DeviceArray* d = device_array_of(x_obj)) {
            DeviceArray& x = device_f32(x_obj, d->device(), -1, "scale_", "x", "x");
            float* p = x.f32();
            const int64_t n = x.size();
            const float f = static_cast<float>(factor);
            run_on(x.device(), [&] { scale(p, n, f); }, [&] { FASTNN_CUDA_ONLY(cuda::scale(p, n, f)); });
            return;
        }
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
        if (std::isnan(low) || std::isnan(high) || low > high)
            fail_value("clip_: needs low <= high, got low=" + std::to_string(low) +
                       ", high=" + std::to_string(high));
        if (DeviceArray* d = device_array_of(x_obj)) {
            DeviceArray& x = device_f32(x_obj, d->device(), -1, "clip_", "x", "x");
            float* p = x.f32();
            const int64_t n = x.size();
            const float lo = static_cast<float>(low), hi = static_cast<float>(high);
            run_on(x.device(), [&] { clip(p, n, lo, hi); }, [&] { FASTNN_CUDA_ONLY(cuda::clip(p, n, lo, hi)); });
            return;
        }
        auto x = in_place(x_obj, "clip_", "x");
        py::gil_scoped_release nogil;
        clip(x.mutable_data(), x.size(), static_cast<float>(low), static_cast<float>(high));
    }, py::arg("x"), py::arg("low"), py::arg("high"));
}

}  // namespace fastnn::bind
