import os

# The suite never reads the user's tuning file (~/.cache/fastnn/tuning.json): a tuned blocking
# would change what the tests see of the model's. test_tuning.py turns it on per subprocess.
os.environ["FASTNN_TUNING"] = "off"

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
    """Every test leaves the thread count and the GEMM path as it found them."""
    threads = fastnn.get_num_threads()
    isa = _C.get_isa()
    yield
    fastnn.set_num_threads(threads)
    if _C.get_isa() != isa:
        _C.set_isa(isa)


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

