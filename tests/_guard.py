"""Arrays whose last byte is the last readable byte: the page after them is PROT_NONE, so a
kernel that reads or writes even one element past the end faults instead of reading a
neighbour's memory. Used by test_guard_pages.py, in subprocesses (a fault kills only them)."""

import ctypes
import mmap

import numpy as np

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.restype = ctypes.c_int


def _ending_at_guard(nbytes, dtype):
    """A writeable 1-D array of nbytes // itemsize elements ending just before a PROT_NONE
    page. The mapping lives as long as the array (numpy holds the buffer)."""
    data_pages = max(1, -(-nbytes // PAGE))
    buf = mmap.mmap(-1, (data_pages + 1) * PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    if _libc.mprotect(base + data_pages * PAGE, PAGE, 0) != 0:  # PROT_NONE
        raise OSError(ctypes.get_errno(), "mprotect failed")
    count = nbytes // np.dtype(dtype).itemsize
    return np.frombuffer(buf, dtype=dtype, count=count, offset=data_pages * PAGE - nbytes)


def guarded(values, dtype=None):
    """A C-contiguous copy of values ending exactly at a guard page."""
    values = np.ascontiguousarray(values, dtype=dtype)
    flat = _ending_at_guard(max(values.nbytes, values.itemsize), values.dtype)
    out = flat[flat.size - values.size:].reshape(values.shape)
    out[...] = values
    return out


def guarded_rows(values, ld):
    """A 2-D view of values with row stride ld elements (ld >= columns) whose last element is
    the last one before a guard page: a slice of a wider matrix, at the worst place."""
    values = np.asarray(values)
    rows, cols = values.shape
    span = (rows - 1) * ld + cols
    flat = _ending_at_guard(span * values.itemsize, values.dtype)
    view = np.lib.stride_tricks.as_strided(flat, shape=(rows, cols),
                                           strides=(ld * values.itemsize, values.itemsize))
    view[...] = values
    return view
