"""Device arrays (fastnn.Tensor, _C.DeviceArray): the caching allocator, copies, DLPack both
ways and the errors, on the CPU, where every machine can check them: a DeviceArray made on
"cpu" goes through the same allocator, copies and DLPack code as one on "cuda". The same on
a GPU is in test_cuda.py (marked cuda)."""
import gc
import re

import numpy as np
import pytest

import fastnn
from fastnn import _C
from fastnn.tensor import Tensor

DeviceArray = _C.DeviceArray
DTYPES = [np.float32, np.int64, np.int32, np.uint8]
SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 0, 4), (2, 3, 129)]

try:
    import torch
except ImportError:
    torch = None


def values(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray((rng.standard_normal(shape) * 50).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_through_device_memory(shape, dtype):
    x = values(shape, dtype)
    a = DeviceArray.from_numpy(x, "cpu")
    assert a.shape == shape and a.dtype == np.dtype(dtype).name and a.device == "cpu"
    assert a.nbytes == x.nbytes and a.data_ptr != x.ctypes.data  # a copy
    back = a.numpy()
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, x)


def test_non_contiguous_input_is_copied_in_order():
    x = values((6, 8), np.float32)[::2, 1::3]
    np.testing.assert_array_equal(DeviceArray.from_numpy(x, "cpu").numpy(), x)


def test_caching_allocator_reuses_freed_blocks_by_rounded_size():
    _C.device_empty_cache("cpu")
    start = _C.device_memory_stats("cpu")
    a = DeviceArray.empty([100], "uint8", "cpu")       # 100 bytes: a 512-byte block
    ptr = a.data_ptr
    assert ptr % 64 == 0
    s = _C.device_memory_stats("cpu")
    assert s["device_allocs"] == start["device_allocs"] + 1
    assert s["in_use_bytes"] == start["in_use_bytes"] + 512
    del a
    s = _C.device_memory_stats("cpu")
    assert s["cached_bytes"] == 512 and s["in_use_bytes"] == start["in_use_bytes"]
    b = DeviceArray.empty([50], "float32", "cpu")       # 200 bytes: the same rounded size
    assert b.data_ptr == ptr
    s = _C.device_memory_stats("cpu")
    assert s["reuses"] == start["reuses"] + 1 and s["device_allocs"] == start["device_allocs"] + 1
    c = DeviceArray.empty([1 << 18], "float32", "cpu")  # 1 MiB: rounded to 2 MiB
    assert _C.device_memory_stats("cpu")["in_use_bytes"] == start["in_use_bytes"] + 512 + (2 << 20)
    del b, c
    _C.device_empty_cache("cpu")
    assert _C.device_memory_stats("cpu")["cached_bytes"] == 0


def test_a_steady_loop_allocates_nothing_after_its_first_round():
    x = values((64, 33), np.float32)

    def step():
        a = DeviceArray.from_numpy(x, "cpu")
        b = DeviceArray.empty([64, 33], "float32", "cpu")
        return a.numpy(), b

    step()
    before = _C.device_memory_stats("cpu")["device_allocs"]
    for _ in range(20):
        step()
    assert _C.device_memory_stats("cpu")["device_allocs"] == before


def test_dlpack_export_shares_memory_and_keeps_it_alive():
    x = values((4, 5), np.float32)
    a = DeviceArray.from_numpy(x, "cpu")
    assert a.__dlpack_device__() == (1, 0)
    view = np.from_dlpack(a)
    assert view.ctypes.data == a.data_ptr
    np.testing.assert_array_equal(view, x)
    ptr = a.data_ptr
    del a
    gc.collect()
    other = DeviceArray.from_numpy(np.zeros((4, 5), np.float32), "cpu")  # same rounded size
    assert other.data_ptr != ptr, "a block still exported was handed out again"
    np.testing.assert_array_equal(view, x)
    del view
    gc.collect()
    again = DeviceArray.empty([4, 5], "float32", "cpu")
    assert again.data_ptr == ptr, "the exported block was not returned to the cache"


def test_unconsumed_capsule_frees_its_tensor():
    a = DeviceArray.from_numpy(values((3,), np.int64), "cpu")
    ptr = a.data_ptr
    capsule = a.__dlpack__()
    del a
    assert DeviceArray.empty([3], "int64", "cpu").data_ptr != ptr  # the capsule holds it
    del capsule
    gc.collect()
    assert DeviceArray.empty([3], "int64", "cpu").data_ptr == ptr


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dlpack_import_from_numpy_takes_no_copy(dtype):
    x = values((3, 4), dtype)
    a = DeviceArray.from_dlpack(x.__dlpack__())
    assert a.data_ptr == x.ctypes.data and a.shape == (3, 4) and a.dtype == np.dtype(dtype).name
    x[1, 2] = 7
    assert a.numpy()[1, 2] == 7


@pytest.mark.parametrize("shape", [(0,), (0, 3), (4, 0), (2, 0, 5)], ids=str)
def test_empty_arrays_whatever_their_strides(shape):
    """NumPy exports an empty array with strides of 0: no layout to refuse (random fuzz)."""
    x = np.zeros(shape, np.float32)
    assert DeviceArray.from_dlpack(x.__dlpack__()).numpy().shape == shape
    assert DeviceArray.empty(list(shape), "float32", "cpu").nbytes == 0
    with pytest.raises(ValueError, match="'shape' is too big"):  # as NumPy refuses it
        DeviceArray.empty([2**40, 2**40, 0], "float32", "cpu")
    with pytest.raises(MemoryError):
        DeviceArray.empty([2**40, 2**40], "float32", "cpu")


@pytest.mark.skipif(torch is None, reason="needs torch")
def test_dlpack_with_torch_both_ways_without_a_copy():
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6)[1:]   # an offset into its storage
    a = DeviceArray.from_dlpack(t.__dlpack__())
    assert a.data_ptr == t.data_ptr() and a.shape == (3, 6)
    expected = t.numpy().copy()
    del t
    gc.collect()
    np.testing.assert_array_equal(a.numpy(), expected)  # torch's memory kept alive
    back = torch.from_dlpack(a)
    assert back.data_ptr() == a.data_ptr
    np.testing.assert_array_equal(back.numpy(), expected)


def test_capsule_is_consumed_once():
    x = values((5,), np.float32)
    capsule = x.__dlpack__()
    DeviceArray.from_dlpack(capsule)
    with pytest.raises(TypeError, match="unconsumed DLPack capsule"):
        DeviceArray.from_dlpack(capsule)


@pytest.mark.parametrize("make,error,words", [
    (lambda: np.zeros((4, 4), np.float32).T.__dlpack__(), ValueError, "not C-contiguous"),
    (lambda: np.zeros(3, np.float64).__dlpack__(), TypeError, "code 2, bits 64"),
    (lambda: np.zeros(3, bool).__dlpack__(), TypeError, "float32, int64, int32 or uint8"),
    (lambda: np.zeros(3, np.float32), TypeError, "argument 'capsule'"),
    (lambda: 3, TypeError, "argument 'capsule'"),
])
def test_dlpack_import_refuses_what_it_cannot_take_without_a_copy(make, error, words):
    with pytest.raises(error, match=words):
        DeviceArray.from_dlpack(make())


def test_refused_capsule_stays_the_producers():
    x = np.zeros((4, 4), np.float32)
    capsule = x.T.__dlpack__()
    with pytest.raises(ValueError):
        DeviceArray.from_dlpack(capsule)
    del capsule  # its own destructor frees it: no double free, no leak of the view
    gc.collect()
    x[0, 0] = 1.0


@pytest.mark.parametrize("call,error,words", [
    (lambda: DeviceArray.from_numpy(np.zeros(3), "cpu"), TypeError, "got dtype float64"),
    (lambda: DeviceArray.from_numpy(np.zeros(3, np.float32), "gpu"), ValueError, "argument 'device'"),
    (lambda: DeviceArray.from_numpy(np.zeros(3, np.float32), "cuda:x"), ValueError, "argument 'device'"),
    (lambda: DeviceArray.from_numpy("abc", "cpu"), TypeError, "argument 'array'"),
    (lambda: DeviceArray.empty([2, -1], "float32", "cpu"), ValueError, "negative size"),
    (lambda: DeviceArray.empty([3], "float16", "cpu"), TypeError, "argument 'dtype'"),
    (lambda: DeviceArray.empty([1 << 62, 4], "float32", "cpu"), MemoryError, None),
    (lambda: DeviceArray.from_numpy(np.zeros(3, np.float32), None), TypeError, "device"),
])
def test_device_array_errors(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_tensor_on_a_device_array():
    x = values((2, 3), np.float32)
    t = Tensor(DeviceArray.from_numpy(x, "cpu"))
    assert t.shape == (2, 3) and t.dtype == np.float32 and t.device == "cpu" and len(t) == 2
    assert t.ndim == 2 and t.size == 6 and t.nbytes == 24
    assert repr(t) == "Tensor(shape=(2, 3), dtype=float32, device='cpu')"
    np.testing.assert_array_equal(t.numpy(), x)
    on_cpu = t.to("cpu")
    assert isinstance(on_cpu, np.ndarray)
    np.testing.assert_array_equal(on_cpu, x)
    np.testing.assert_array_equal(np.from_dlpack(t), x)
    with pytest.raises(TypeError, match=r"call \.numpy\(\)"):
        np.asarray(t)
    assert not hasattr(t, "__cuda_array_interface__")
    with pytest.raises(TypeError, match="fastnn.asarray"):
        Tensor(x)


def test_cpu_arrays_stay_numpy():
    a = fastnn.asarray([[1.5, 2.0]])
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    assert fastnn.asarray([1, 2], device="cpu").dtype.kind == "i"
    assert fastnn.asarray([1.0], np.float64).dtype == np.float64
    x = values((3,), np.float32)
    y = fastnn.from_dlpack(x)
    assert isinstance(y, np.ndarray) and y.ctypes.data == x.ctypes.data
    with pytest.raises(TypeError, match="must support DLPack"):
        fastnn.from_dlpack([1, 2])


CUDA = _C.cuda_info()


@pytest.mark.skipif(CUDA["available"], reason="a usable GPU: test_cuda.py tests the arrays on it")
@pytest.mark.parametrize("call", [
    lambda: fastnn.asarray([1.0], device="cuda"), lambda: fastnn.tensor.memory_stats("cuda:0"),
    lambda: DeviceArray.from_numpy(np.zeros(3, np.float32), "cuda"),
    lambda: DeviceArray.empty([3], "float32", "cuda:1"),
])
def test_no_cuda_arrays_without_a_usable_gpu_saying_why(call):
    """The default build names the build; the CUDA build on a machine without a GPU names
    what is missing (the driver, the device)."""
    with pytest.raises(RuntimeError) as err:
        call()
    assert ("built without CUDA" if not CUDA["built"] else CUDA["reason"]) in str(err.value)


def test_views_of_rows_and_shapes_share_the_memory():
    """What an optimizer's flat parameter buffer needs on a device: views of rows and of
    another shape, written through, read by DLPack at their offset, kept alive by the view."""
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    t = Tensor(DeviceArray.from_numpy(x, "cpu"))
    in_use = _C.device_memory_stats("cpu")["in_use_bytes"]
    rows, row, square = t[2:4], t[-1], t.reshape(4, 6)
    assert _C.device_memory_stats("cpu")["in_use_bytes"] == in_use  # views allocate nothing
    np.testing.assert_array_equal(rows.numpy(), x[2:4])
    np.testing.assert_array_equal(row.numpy(), x[-1])
    np.testing.assert_array_equal(square.numpy(), x.reshape(4, 6))
    np.testing.assert_array_equal(np.from_dlpack(rows), x[2:4])  # the offset travels
    assert rows._array.data_ptr == t._array.data_ptr + 2 * 4 * 4
    rows.fill_(7.0)
    t[0].copy_(np.ones(4))
    expected = x.copy()
    expected[2:4], expected[0] = 7.0, 1.0
    np.testing.assert_array_equal(t.numpy(), expected)
    assert t[6:9].shape == (0, 4) and t[:].shape == (6, 4)
    # -1 inferred, as NumPy's and torch's reshape (it was "a negative size")
    assert t.reshape(-1).shape == (24,) and t.reshape(3, -1).shape == (3, 8)
    assert t.reshape((-1, 2, 3)).shape == (4, 2, 3)
    del t, square
    gc.collect()
    np.testing.assert_array_equal(rows.numpy(), np.full((2, 4), 7.0))  # the storage lives on


def test_ops_on_views_of_one_buffer_check_their_overlap():
    flat = Tensor(DeviceArray.from_numpy(np.zeros(40, np.float32), "cpu"))
    p, g, m, v = flat[0:10], flat[10:20], flat[20:30], flat[30:40]
    g.copy_(np.linspace(-1, 1, 10))
    kw = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    _C.adam_step(p, g, m, v, **kw)  # four disjoint views of one storage: accepted
    ref = [np.zeros(10, np.float32), np.linspace(-1, 1, 10).astype(np.float32),
           np.zeros(10, np.float32), np.zeros(10, np.float32)]
    _C.adam_step(*ref, **kw)
    np.testing.assert_array_equal(flat.numpy(), np.concatenate(ref))
    with pytest.raises(ValueError, match="'param' and 'grad' overlap"):
        _C.adam_step(flat[0:10], flat[5:15], m, v, **kw)
    with pytest.raises(ValueError, match="overlaps this array"):
        flat[0:10].copy_(flat[5:15])


@pytest.mark.parametrize("call,error,words", [
    (lambda t: t[2:1:-1], ValueError, "a step of 1"),
    (lambda t: t[6], IndexError, "row 6 is out of range"),
    (lambda t: t["a"], TypeError, "a row or a slice"),
    (lambda t: t.reshape(5, 5), ValueError, "24 elements cannot take that shape"),
    (lambda t: t.reshape(5, -1), ValueError, r"24 elements\) into \(5, -1\)"),
    (lambda t: t.reshape(-1, -1), ValueError, "at most one dimension may be -1"),
    (lambda t: t._array.view_rows(3, 7), ValueError, r"rows \[3, 7\) are not within \[0, 6\]"),
    (lambda t: Tensor(DeviceArray.from_numpy(np.zeros(3, np.int64), "cpu")).fill_(1), TypeError,
     "only float32"),
    (lambda t: t.copy_(np.zeros((4, 6))), ValueError, "must have this array's shape"),
    (lambda t: t.copy_(t.reshape(4, 6)), ValueError, "shape and dtype"),
])
def test_view_errors(call, error, words):
    t = Tensor(DeviceArray.from_numpy(np.zeros((6, 4), np.float32), "cpu"))
    with pytest.raises(error, match=words):
        call(t)


def test_values_beyond_float32_s_range_are_refused_not_made_inf():
    """An attack: 1e40 became inf with only NumPy's RuntimeWarning in copy_, fill_, fill,
    memory.full and asarray; the layers already refused it (_checks.as_float32)."""
    t = Tensor(DeviceArray.from_numpy(np.zeros(2, np.float32), "cpu"))
    with pytest.raises(ValueError, match=r"Tensor\.copy_: src holds values beyond float32's "
                                         r"range .*up to 1e\+40"):
        t.copy_(np.array([1e40, 1.0]))
    with pytest.raises(ValueError, match=r"Tensor\.copy_: src holds values beyond"):
        t[...] = [1.0, -1e39]
    with pytest.raises(ValueError, match=r"Tensor\.fill_: value must be at most 3\.403e\+38"):
        t.fill_(1e40)
    with pytest.raises(ValueError, match=r"Tensor\.fill: value must be at most"):
        t.fill(-1e40)
    with pytest.raises(TypeError, match=r"Tensor\.fill_: value must be a number; got '3'"):
        t.fill_("3")
    np.testing.assert_array_equal(t.numpy(), [0, 0])  # nothing written
    with pytest.raises(ValueError, match=r"memory\.full: value must be at most"):
        fastnn.memory.full(2, 1e40)
    with pytest.raises(ValueError, match=r"asarray: argument 'x' holds values beyond"):
        fastnn.asarray(np.array([1e40]))
    # what float32 holds is taken: its extremes, infinities and NaN, other dtypes' ranges
    big = float(np.finfo(np.float32).max)
    np.testing.assert_array_equal(t.copy_(np.array([big, -np.inf])).numpy(), [big, -np.inf])
    np.testing.assert_array_equal(t.fill_(-np.inf).numpy(), [-np.inf, -np.inf])
    assert np.isnan(t.fill_(np.nan).numpy()).all()
    np.testing.assert_array_equal(t.fill_(np.float64(-big)).numpy(), [-big, -big])
    np.testing.assert_array_equal(fastnn.memory.full(2, 1e40, np.float64), [1e40, 1e40])
    np.testing.assert_array_equal(fastnn.asarray([1e40], np.float64), [1e40])
    labels = Tensor(DeviceArray.from_numpy(np.zeros(2, np.int64), "cpu"))
    np.testing.assert_array_equal(labels.copy_(np.array([2**40, 3])).numpy(), [2**40, 3])


def test_integer_tensors_refuse_values_their_dtype_cannot_hold_and_take_the_rest_exactly():
    """An attack: int64 copy_([1e30, -1e30, nan]) had made INT64_MIN with only NumPy's
    warning, uint8 copy_([300, -1, 256]) [44, 255, 0] and int32 copy_([2**40, 2.9])
    [-2**31, 2], silently; fastnn.asarray(x, dtype) and memory.asarray(x, like=tensor) too."""
    for dtype, src, shown in [
            (np.int64, np.array([1e30, -1e30, np.nan]), "1e+30, -1e+30, nan"),
            (np.uint8, np.array([300, -1, 256]), "300, -1, 256"),
            (np.int32, np.array([2**40, 2.9]), "1099511627776.0, 2.9"),
            (np.int64, np.array([2.0**63, 1.0]), "9.223372036854776e+18"),  # one past the largest
            (np.int64, np.array([2**64 - 1, 1], np.uint64), "18446744073709551615")]:
        name = np.dtype(dtype).name
        t = Tensor(DeviceArray.from_numpy(np.zeros(len(src), dtype), "cpu"))
        with pytest.raises(ValueError, match=rf"Tensor\.copy_: src \({src.dtype}\) holds values "
                                             rf"{name} cannot hold, such as {re.escape(shown)}: "
                                             rf"{name} holds whole numbers in \["):
            t.copy_(src)
        np.testing.assert_array_equal(t.numpy(), 0)  # nothing written
        with pytest.raises(ValueError, match=rf"asarray: argument 'x' \({src.dtype}\) holds "
                                             rf"values {name} cannot hold"):
            fastnn.asarray(src, dtype)
        with pytest.raises(ValueError, match=r"Tensor\.copy_: src .* cannot hold"):
            fastnn.memory.asarray(src, dtype, like=t)
    # what the dtype holds is taken exactly: its extremes, whole floats, bools
    t = Tensor(DeviceArray.from_numpy(np.zeros(3, np.int64), "cpu"))
    big = np.iinfo(np.int64)
    np.testing.assert_array_equal(t.copy_(np.array([big.max, big.min, 0])).numpy(),
                                  [big.max, big.min, 0])
    np.testing.assert_array_equal(t.copy_(np.array([-2.0**63, 2.0**62, 3.0])).numpy(),
                                  [big.min, 2**62, 3])
    u = Tensor(DeviceArray.from_numpy(np.zeros(3, np.uint8), "cpu"))
    np.testing.assert_array_equal(u.copy_([255, 0, True]).numpy(), [255, 0, 1])
    np.testing.assert_array_equal(fastnn.asarray([2.0, -1.0], np.int32), [2, -1])


def test_memory_full_refuses_a_value_its_dtype_cannot_hold_naming_both():
    """An attack: full(3, 1e30, np.int32) had been a bare OverflowError ("Python int too large
    to convert to C long") and full(3, 1e30, np.float16) inf, silently."""
    for value, dtype, words in [
            (1e30, np.int32, r"value 1e\+30 does not fit int32: it holds whole numbers in "
                             r"\[-2147483648, 2147483647\]"),
            (1e30, np.float16, r"value 1e\+30 does not fit float16: it holds numbers at most "
                               r"6\.55e\+04 in size"),
            (-1, np.uint8, r"value -1 does not fit uint8"),
            (2.5, np.int64, r"value 2\.5 does not fit int64"),
            (np.nan, np.int64, r"value nan does not fit int64"),
            (2**1100, np.float32, r"value \(an integer of 1101 bits\) does not fit float32")]:
        with pytest.raises(ValueError, match=r"memory\.full: " + words):
            fastnn.memory.full(3, value, dtype)
    # what the dtype holds, exactly (a float would have rounded 2**53 + 1)
    assert fastnn.memory.full(2, 2**53 + 1, np.int64)[0] == 2**53 + 1
    assert fastnn.memory.full(2, 2**63 - 1, np.int64)[0] == 2**63 - 1
    np.testing.assert_array_equal(fastnn.memory.full(2, 4.0, np.uint8), [4, 4])
    np.testing.assert_array_equal(fastnn.memory.full(2, -np.inf, np.float16), [-np.inf] * 2)
    np.testing.assert_array_equal(fastnn.memory.full(1, 65504.0, np.float16), [65504])


@pytest.mark.parametrize("device", ["cpu:²", "cpu:٠", "cuda:٣", "cuda:¹"])
def test_device_indices_are_ascii_digits(device):
    """"cpu:²" passed str.isdigit() and int() failed naming nothing; "cpu:٠" and "cuda:٣"
    were taken as 0 and 3."""
    with pytest.raises(ValueError, match=re.escape(f"asarray: device {device!r} is not a device")):
        fastnn.asarray([1.0], device=device)
