// The extension module fastnn._C: one registration per op family (checks.h lists them).
#include "checks.h"

PYBIND11_MODULE(_C, m) {
    using namespace fastnn::bind;
    m.doc() = "fastnn's C++ kernels (see _C.pyi for the contract)";
    m.attr("__version__") = FASTNN_VERSION;  // pyproject.toml's, through CMake
    bind_config(m);
    bind_gemm(m);
    bind_activation(m);
    bind_loss(m);
    bind_optim(m);
    bind_reduce(m);
    bind_dropout(m);
    bind_augment(m);
    bind_conv(m);
    bind_pool(m);
    bind_norm(m);
    bind_tensor(m);
    warn_about_environment();
}
