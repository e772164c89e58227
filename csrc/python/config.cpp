// Bindings of the machine and its settings: config(), threads, the ISA switch, the CPU
// description, the GEMM's blocking and the FMA peak, the CUDA device; and the import-time
// warnings.
#include "checks.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "core/cuda.h"
#include "cpu/gemm/bf16.h"
#include "cpu/isa.h"

namespace fastnn::bind {
namespace {

py::list caches_list(const std::vector<CacheLevel>& caches) {
    py::list out;
    for (const CacheLevel& c : caches) {
        py::dict d;
        d["level"] = c.level;
        d["size"] = c.size_bytes;
        d["ways"] = c.ways;
        d["line"] = c.line_bytes;
        d["sets"] = c.sets();
        d["shared_by"] = c.shared_by;
        out.append(d);
    }
    return out;
}

py::dict cpu_dict() {
    const CpuInfo& cpu = cpu_info();
    py::dict d;
    d["vendor"] = cpu.vendor;
    d["model_name"] = cpu.model_name;
    d["family"] = cpu.family;
    d["model"] = cpu.model;
    d["stepping"] = cpu.stepping;
    py::dict features;
    features["avx2"] = cpu.avx2;
    features["fma"] = cpu.fma;
    features["avx512f"] = cpu.avx512f;
    features["avx512_bf16"] = cpu.avx512_bf16;
    features["amx_bf16"] = cpu.amx_bf16;
    d["features"] = features;
    d["caches"] = caches_list(cpu.caches);
    d["cache_spec"] = cache_spec(cpu.caches);
    d["cache_source"] = cpu.cache_source;
    if (cpu.cache_source == "FASTNN_CACHE") d["detected_cache_spec"] = cache_spec(cpu.detected_caches);
    return d;
}

py::dict blocking_dict(const GemmContext& ctx) {
    py::dict d;
    d["isa"] = ctx.uk->isa;
    d["mr"] = ctx.uk->mr;
    d["nr"] = ctx.uk->nr;
    d["kc"] = ctx.blocking.kc;
    d["nc"] = ctx.blocking.nc;
    d["mc"] = ctx.blocking.mc;
    d["source"] = ctx.source;
    return d;
}

const GemmContext& context_arg(const std::string& isa, const char* fn) {
    const GemmContext* ctx = gemm_context(isa.empty() ? nullptr : isa.c_str());
    if (!ctx) fail_value(std::string(fn) + ": isa '" + isa + "' is not a GEMM path this CPU runs");
    return *ctx;
}

// "amx", "avx512_bf16", or "fp32 (...)" saying why.
// "'a', 'b'": the paths this CPU runs, as supported_isas or supported_bf16_paths lists them.
std::string quoted_names(int (*supported)(const char**)) {
    const char* names[4];
    const int count = supported(names);
    std::string list;
    for (int i = 0; i < count; ++i) list += (i ? ", '" : "'") + std::string(names[i]) + "'";
    return list;
}

std::string bf16_path_description() {
    const std::string path = bf16_path();
    if (path != "fp32") return path;
    if (*bf16_chosen_by()) return "fp32 (" + std::string(bf16_chosen_by()) + ")";
    if (std::strcmp(bf16_auto_path(), "fp32") == 0 && *bf16_auto_reason())
        return std::string("fp32 (") + bf16_auto_reason() + ")";
    const char* names[4];
    if (supported_bf16_paths(names) > 1) return "fp32 (set by set_bf16_path)";
    return std::string("fp32 (no bf16 instructions: ") + bf16_missing_reason("avx512_bf16") + ")";
}

#ifdef FASTNN_CUDA
std::string version_text(int v) {  // CUDA's 1000 * major + 10 * minor
    return v ? std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10) : "";
}
#endif

py::dict cuda_dict() {
    py::dict d;
    d["built"] = cuda_built();
#ifdef FASTNN_CUDA
    const CudaInfo& info = cuda_info();
    d["available"] = info.available;
    d["reason"] = info.reason;
    d["architectures"] = cuda_architectures();
    d["runtime_version"] = version_text(info.runtime_version);
    d["driver_version"] = version_text(info.driver_version);
    d["cublas_version"] = version_text(info.cublas_version);
    d["device_count"] = info.device_count;
    if (info.device_count > 0) {
        d["device"] = info.name;
        d["memory_bytes"] = info.memory_bytes;
        d["compute_capability"] = std::to_string(info.cc_major) + "." + std::to_string(info.cc_minor);
    }
#else
    d["available"] = false;
    d["reason"] = kCudaNotBuilt;
#endif
    return d;
}

}  // namespace

void bind_config(py::module_& m) {
    m.def("config", [] {
        py::dict d;
        const char* names[4];
        int count = supported_isas(names);
        py::list isas;
        for (int i = 0; i < count; ++i) isas.append(names[i]);
        d["isa"] = active_isa();
        d["isa_supported"] = isas;
        d["openmp"] = have_openmp();
        d["num_threads"] = get_num_threads();
        d["forked_after_threads"] = forked_after_team();
        d["load_pauses"] = load_guard::pauses();
        d["flush_denormals"] = flush_denormals();
        d["cpu"] = cpu_dict();
        d["blocking"] = blocking_dict(*gemm_context());
        d["bf16"] = bf16_path_description();
        return d;
    });
    m.def("cuda_info", &cuda_dict,
          "The CUDA build's device: built, available, reason (why not), architectures; with "
          "a device: device, memory_bytes, compute_capability, driver, runtime and cuBLAS "
          "versions. Queried once.");
    m.def("cuda_selftest", [] {
#ifdef FASTNN_CUDA
        py::gil_scoped_release release;
        cuda_selftest();
#else
        throw std::runtime_error(std::string("CUDA self-test: ") + kCudaNotBuilt);
#endif
    }, "Run one kernel of this build on device 0 and check its output; RuntimeError saying "
       "why not.");
    m.def("cuda_arch_runs", [](const std::string& archs, int major, int minor) {
        return cuda_arch_runs(archs, major, minor);
    }, py::arg("archs"), py::arg("major"), py::arg("minor"),
       "Whether code built for archs ('80-real,90') runs at compute capability major.minor.");
    m.def("bf16_path", [] { return std::string(bf16_path()); },
          "The bf16 GEMM path in use: 'amx', 'avx512_bf16' or 'fp32'.");
    m.def("bf16_path_description", &bf16_path_description,
          "bf16_path(), with why for 'fp32' (config()'s 'bf16').");
    m.def("bf16_auto_path", [] { return std::string(bf16_auto_path()); },
          "The bf16 path fastnn picked for this CPU, before FASTNN_BF16, FASTNN_ISA or set_bf16_path.");
    m.def("_bf16_choice", [](bool amx, bool avx512_bf16, double dot_gflops, double fma_gflops) {
        return std::string(choose_bf16_path(amx, avx512_bf16, dot_gflops, fma_gflops));
    }, py::arg("amx"), py::arg("avx512_bf16"), py::arg("dot_gflops"), py::arg("fma_gflops"),
       "The rule bf16_auto_path follows, for the tests: the path for a CPU that runs these "
       "kernels, its bf16 dot products and float32 FMAs measured at these rates.");
    m.def("supported_bf16_paths", [] {
        const char* names[4];
        const int count = supported_bf16_paths(names);
        return std::vector<std::string>(names, names + count);
    });
    m.def("set_bf16_path", [](const std::string& name) {
        if (name == "auto") return reset_bf16_path();
        if (!set_bf16_path(name.c_str()))
            fail_value("set_bf16_path: '" + name + "' is not a bf16 path this CPU runs (" +
                       bf16_missing_reason(name.c_str()) + "); supported: " +
                       quoted_names(supported_bf16_paths) + ", or 'auto'");
    }, py::arg("name"), "Force a bf16 path ('amx', 'avx512_bf16', 'fp32'), as FASTNN_BF16 at "
       "import; 'auto': the one picked for this CPU and the ISA in use (set_isa moves it again).");
    m.def("bf16_blocking", [](const std::string& name) {
        if (std::strcmp(bf16_missing_reason(name.c_str()), "not a bf16 path of this build") == 0 ||
            name == "fp32")
            fail_value("bf16_blocking: '" + name + "' is not a bf16 kernel of this build");
        const Blocking b = bf16_blocking(name.c_str());
        return py::make_tuple(b.kc, b.nc, b.mc);
    }, py::arg("name"), "(kc, nc, mc) of a bf16 kernel: blocking.h model_blocking_bf16 for this CPU.");
    m.def("fma_peak_per_core", [](const std::string& isa) {
        // Measured once per ISA (0.1 s), for config() and the benchmarks' %-of-peak.
        static std::mutex mutex;
        static std::map<std::string, double> measured;
        const GemmContext& ctx = context_arg(isa, "fma_peak_per_core");
        std::lock_guard<std::mutex> lock(mutex);
        auto it = measured.find(ctx.uk->isa);
        if (it != measured.end()) return it->second;
        double peak;
        {
            py::gil_scoped_release nogil;
            peak = measure_fma_peak(*ctx.uk, 1, 0.1);
        }
        measured[ctx.uk->isa] = peak;
        return peak;
    }, py::arg("isa") = "", "Measured float32 FMA peak of one core in GFLOP/s on `isa`'s "
       "widest vectors (default: the active ISA), measured once and remembered.");
    m.def("blocking", [](const std::string& isa) { return blocking_dict(context_arg(isa, "blocking")); },
          py::arg("isa") = "", "The GEMM blocking in use for `isa` (default: the active ISA).");
    m.def("set_blocking", [](py::handle kc_obj, py::handle nc_obj, py::handle mc_obj,
                             const std::string& source, const std::string& isa) {
        const int64_t kc = int_in(kc_obj, 1, 65536, "set_blocking", "kc");
        const int64_t nc = int_in(nc_obj, 1, int64_t{1} << 20, "set_blocking", "nc");
        const int64_t mc = mc_obj.is_none() ? context_arg(isa, "set_blocking").blocking.mc
                                            : int_in(mc_obj, 1, int64_t{1} << 20, "set_blocking", "mc");
        static const char* const sources[] = {"tuned", "override"};
        const char* src = nullptr;
        for (const char* s_ : sources)
            if (source == s_) src = s_;
        if (!src) fail_value("set_blocking: source must be 'tuned' or 'override', got '" + source + "'");
        context_arg(isa, "set_blocking");
        set_blocking(isa.empty() ? nullptr : isa.c_str(), Blocking{kc, nc, mc}, src);
    }, py::arg("kc"), py::arg("nc"), py::arg("mc") = py::none(), py::kw_only(),
       py::arg("source") = "override",
       py::arg("isa") = "");
    m.def("reset_blocking", [](const std::string& isa) {
        context_arg(isa, "reset_blocking");
        reset_blocking(isa.empty() ? nullptr : isa.c_str());
    }, py::arg("isa") = "");
    m.def("model_blocking", [](const std::string& isa, py::object cache) {
        // Any ISA built in, even one this CPU lacks: the model's answer for another machine.
        const Microkernel* uk = isa.empty() ? gemm_context()->uk : kernel_named(isa.c_str());
        if (!uk) fail_value("model_blocking: isa '" + isa + "' is not a GEMM path of this build");
        std::vector<CacheLevel> caches = cpu_info().caches;
        if (!cache.is_none()) {
            if (!py::isinstance<py::str>(cache))
                throw py::type_error("model_blocking: cache must be a str such as '48K:12,2M:16,300M:15' or None");
            const std::string err = parse_cache_spec(cache.cast<std::string>(), caches);
            if (!err.empty()) fail_value("model_blocking: cache '" + cache.cast<std::string>() + "': " + err);
        }
        const Blocking b = model_blocking(caches, uk->mr, uk->nr);
        return py::make_tuple(b.kc, b.nc, b.mc);
    }, py::arg("isa") = "", py::arg("cache") = py::none(),
       "(kc, nc, mc) that the cache model gives `isa`'s kernel for a geometry (default: this CPU's).");
    m.def("set_num_threads", [](py::handle n) {
        set_num_threads(thread_count(n, "set_num_threads", "n"));
    }, py::arg("n"));
    m.def("set_flush_denormals", [](py::handle on) {
        if (!py::isinstance<py::bool_>(on))
            throw py::type_error("set_flush_denormals: on must be a bool, got " +
                                 std::string(py::str(py::type::handle_of(on).attr("__name__"))));
        set_flush_denormals(on.cast<bool>());
    }, py::arg("on"));
    m.def("max_num_threads", &max_threads);
    m.def("get_num_threads", &get_num_threads);
    m.def("get_isa", [] { return std::string(active_isa()); });
    m.def("supported_isas", [] {
        const char* names[4];
        int count = supported_isas(names);
        std::vector<std::string> out(names, names + count);
        return out;
    });
    m.def("set_isa", [](const std::string& name) {
        if (!set_isa(name.c_str()))
            fail_value("set_isa: '" + name + "' is not a GEMM path this CPU runs; supported: " +
                       quoted_names(supported_isas));
        bf16_follow_isa(name.c_str());  // as FASTNN_ISA at import
    }, py::arg("name"), "Pick the ISA of every kernel, as FASTNN_ISA does at import: the GEMM's, "
       "the elementwise ones', and bf16's (fp32 off AVX-512) unless FASTNN_BF16 or "
       "set_bf16_path chose that.");
    // For the tests: the ISA whose copies the elementwise kernels run now (cpu/isa.h).
    m.def("_elementwise_isa", [] { return std::string(isa_name(elementwise_isa())); });

    m.def("fma_peak_gflops", [](py::handle threads_arg, double seconds) -> double {
        const int threads = thread_count(threads_arg, "fma_peak_gflops", "threads");
        nonneg_arg(seconds, "fma_peak_gflops", "seconds");
        const Microkernel& uk = *gemm_context()->uk;
        py::gil_scoped_release nogil;
        return measure_fma_peak(uk, threads, seconds);
    }, py::arg("threads") = 1, py::arg("seconds") = 0.5,
       "Measured float32 FMA peak in GFLOP/s on `threads` threads, on the active ISA's widest "
       "vectors (AVX-512, AVX2+FMA, or the baseline's multiply and add).");
}

// What the environment asked for and did not get is said at import, not silently ignored.
void warn_about_environment() {
    // Nor is an OMP_NUM_THREADS past max_threads(), which the kernels clamp.
    if (requested_threads() > max_threads())
        if (PyErr_WarnEx(PyExc_RuntimeWarning,
                         ("OMP_NUM_THREADS asks for " + std::to_string(requested_threads()) +
                          " threads; fastnn uses at most " + std::to_string(max_threads()) + " (" +
                          std::to_string(kThreadsPerCpu) + " per online CPU)").c_str(), 1) < 0)
            throw py::error_already_set();
    // Nor is a FASTNN_CACHE that does not parse.
    if (const std::string& err = cpu_info().cache_override_error; !err.empty())
        if (PyErr_WarnEx(PyExc_RuntimeWarning,
                         ("FASTNN_CACHE=" + std::string(std::getenv("FASTNN_CACHE")) + " ignored: " +
                          err + "; using the detected " + cache_spec(cpu_info().caches)).c_str(), 1) < 0)
            throw py::error_already_set();
    // Nor a FASTNN_BF16 that names no path this CPU runs (read as gemm_bf16.cpp reads it).
    if (const std::string forced = env_setting("FASTNN_BF16");
        !forced.empty() && forced != "auto" && forced != bf16_path())
        if (PyErr_WarnEx(PyExc_RuntimeWarning,
                         ("FASTNN_BF16=" + std::string(std::getenv("FASTNN_BF16")) +
                          " is not a bf16 path this CPU runs (" + bf16_missing_reason(forced.c_str()) +
                          "; it runs " + quoted_names(supported_bf16_paths) + " or 'auto'); using " +
                          bf16_path()).c_str(), 1) < 0)
            throw py::error_already_set();
    // A FASTNN_ISA this CPU cannot run is not silently ignored.
    if (const std::string forced = env_setting("FASTNN_ISA"); !forced.empty() && forced != active_isa())
        if (PyErr_WarnEx(PyExc_RuntimeWarning,
                         ("FASTNN_ISA=" + std::string(std::getenv("FASTNN_ISA")) +
                          " is not a path this CPU runs (it runs " + quoted_names(supported_isas) +
                          "); using " + active_isa()).c_str(), 1) < 0)
            throw py::error_already_set();
}

}  // namespace fastnn::bind
