import os

# The suite never reads the user's tuning file (~/.cache/fastnn/tuning.json): a tuned blocking
# would change what the tests see of the model's. test_tuning.py turns it on per subprocess.
os.environ["FASTNN_TUNING"] = "off"
# Nor does it let the load guard (csrc/parallel.h) cut the threads while the machine is busy:
# a test that compares 1 and 2 threads would then compare 1 with 1 and pass whatever the
# code does. test_load_guard.py turns the guard on in its subprocesses.
os.environ["FASTNN_ADAPTIVE_THREADS"] = "0"

import numpy as np
import pytest

import fastnn
from fastnn import _C

ISAS = list(_C.supported_isas())


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Every test leaves the thread count and the GEMM paths (fp32, bf16) as it found them."""
    threads = fastnn.get_num_threads()
    isa, bf16 = _C.get_isa(), _C.bf16_path()
    yield
    fastnn.set_num_threads(threads)
    if _C.get_isa() != isa:
        _C.set_isa(isa)
    if _C.bf16_path() != bf16:
        _C.set_bf16_path("auto")  # as it most likely was: following the ISA
        if _C.bf16_path() != bf16:
            _C.set_bf16_path(bf16)


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once per GEMM path this CPU supports."""
    old = _C.get_isa()
    _C.set_isa(request.param)
    assert _C.get_isa() == request.param
    try:
        yield request.param
    finally:
        _C.set_isa(old)

