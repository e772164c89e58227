"""The CUDA build's device query, self-test and errors.

What needs no GPU runs everywhere: the default build says it has no CUDA and why, the rule
that says which compute capabilities a build's code runs on, and the errors that "cuda"
raises in each kind of build. Tests marked ``cuda`` need fastnn's CUDA build on a machine
with a GPU (scripts/gpu_check.sh runs them there) and skip elsewhere, saying which is missing.
"""
import numpy as np
import pytest

import fastnn
from fastnn import _C, memory, nn
from fastnn._device import check_device

CUDA = _C.cuda_info()
needs_gpu = pytest.mark.skipif(not CUDA["available"], reason=f"no usable CUDA: {CUDA['reason']}")


def test_config_says_whether_cuda_is_built_and_why_not_available():
    cuda = fastnn.config()["cuda"]
    assert set(cuda) >= {"built", "available", "reason"}
    assert isinstance(cuda["built"], bool) and isinstance(cuda["available"], bool)
    assert cuda["available"] <= cuda["built"]
    assert bool(cuda["reason"]) != cuda["available"], "a reason exactly when not available"
    if not cuda["built"]:
        assert "FASTNN_CUDA=OFF" in cuda["reason"]
    else:  # the CUDA build names what it was built for and with, GPU or not
        assert cuda["architectures"] and cuda["runtime_version"] and cuda["cublas_version"]


@pytest.mark.parametrize("archs,cc,runs", [
    ("80-real,90", (8, 0), True), ("80-real,90", (8, 6), True), ("80-real,90", (8, 9), True),
    ("80-real,90", (9, 0), True), ("80-real,90", (10, 0), True),  # compute_90 PTX, JIT-compiled
    ("80-real,90", (12, 0), True), ("80-real,90", (7, 5), False),
    ("80-real,90-real", (10, 0), False), ("80-real,90-real", (9, 0), True),
    ("80-real", (9, 0), False),           # machine code runs within its major only
    ("86-real", (8, 0), False),           # ... and from its minor up
    ("80-virtual", (8, 6), True), ("80-virtual", (9, 0), True), ("75", (7, 5), True),
    ("90a-real", (9, 0), False),          # an arch-specific target: not claimed by this rule
    ("", (9, 0), False), ("native", (9, 0), False),
])
def test_which_compute_capabilities_a_build_runs_on(archs, cc, runs):
    assert _C.cuda_arch_runs(archs, *cc) is runs


@pytest.mark.skipif(CUDA["built"], reason="the default build's errors; this one is the CUDA build")
def test_default_build_refuses_cuda_naming_the_build_flag():
    with pytest.raises(RuntimeError, match="FASTNN_CUDA=OFF"):
        _C.cuda_selftest()
    for call in (lambda: check_device("cuda"), lambda: memory.empty(3, device="cuda:0"),
                 lambda: nn.Dense(2, 2).to("cuda")):
        with pytest.raises(RuntimeError, match=r"built without CUDA.*FASTNN_CUDA=ON"):
            call()


def test_device_names_as_torch_reads_them():
    assert check_device("cpu") == check_device("cpu:0") == "cpu"
    for bad in ("cuda:", "cpu:", "cpu:1", "gpu", "cuda:x", "cuda:-1"):
        with pytest.raises(ValueError, match="is not a device"):
            check_device(bad)


@pytest.mark.parametrize("info,error,words", [
    ({"built": True, "available": False, "reason": "no CUDA driver on this machine (libcuda.so.1)"},
     RuntimeError, "no CUDA driver on this machine"),
])
def test_cuda_build_refuses_cuda_saying_why(monkeypatch, info, error, words):
    """What "cuda" raises in the CUDA build without a GPU: the reason it found (never a
    silent CPU fallback)."""
    monkeypatch.setattr(_C, "cuda_info", lambda: info)
    with pytest.raises(error, match=words):
        nn.Dense(2, 2).to("cuda:0")
    with pytest.raises(error, match=words):
        memory.empty(3, device="cuda")


@pytest.mark.cuda
@needs_gpu
def test_selftest_runs_this_builds_kernel_on_the_gpu():
    _C.cuda_selftest()  # raises with CUDA's message where the build and the device disagree
    cuda = fastnn.config()["cuda"]
    assert cuda["device_count"] >= 1 and cuda["memory_bytes"] > 0
    major, minor = map(int, cuda["compute_capability"].split("."))
    assert _C.cuda_arch_runs(cuda["architectures"], major, minor)
    assert cuda["driver_version"] and np.isfinite(cuda["memory_bytes"])


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32, np.uint8], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (7,), (127, 129), (3, 1000)], ids=str)
def test_tensor_round_trip_on_the_gpu(shape, dtype):
    x = np.asarray((np.random.default_rng(1).standard_normal(shape) * 50).astype(dtype))
    t = fastnn.asarray(x, device="cuda")
    assert isinstance(t, fastnn.Tensor) and t.device == "cuda:0" and t.shape == shape
    assert t.to("cuda") is t and t.__dlpack_device__() == (2, 0)
    np.testing.assert_array_equal(t.numpy(), x)
    np.testing.assert_array_equal(t.to("cpu"), x)
    cai = t.__cuda_array_interface__
    assert cai["data"][0] == t._array.data_ptr and cai["shape"] == shape and cai["version"] == 3


@pytest.mark.cuda
@needs_gpu
def test_gpu_allocator_reaches_a_steady_state():
    x = np.ones((256, 1000), np.float32)
    fastnn.asarray(x, device="cuda").numpy()
    before = fastnn.tensor.memory_stats("cuda")["device_allocs"]
    for _ in range(50):
        fastnn.asarray(x, device="cuda").numpy()
    stats = fastnn.tensor.memory_stats("cuda")
    assert stats["device_allocs"] == before and stats["reuses"] >= 50
    fastnn.tensor.empty_cache("cuda")
    assert fastnn.tensor.memory_stats("cuda")["cached_bytes"] == 0


@pytest.mark.cuda
@needs_gpu
def test_dlpack_and_cuda_array_interface_with_torch_and_cupy_without_a_copy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    src = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4)
    t = fastnn.from_dlpack(src)
    assert isinstance(t, fastnn.Tensor) and t._array.data_ptr == src.data_ptr()
    np.testing.assert_array_equal(t.numpy(), src.cpu().numpy())
    back = torch.from_dlpack(t)
    assert back.data_ptr() == src.data_ptr() and back.device.type == "cuda"
    mine = fastnn.asarray(np.arange(6, dtype=np.int64), device="cuda")
    shared = torch.as_tensor(mine, device="cuda")  # through __cuda_array_interface__
    assert shared.data_ptr() == mine._array.data_ptr
    assert shared.cpu().tolist() == list(range(6))
    try:
        import cupy
    except ImportError:
        return
    c = cupy.asarray(mine)
    assert c.data.ptr == mine._array.data_ptr
    from_cupy = fastnn.from_dlpack(cupy.arange(5, dtype=cupy.int32))
    assert from_cupy.numpy().tolist() == list(range(5))
