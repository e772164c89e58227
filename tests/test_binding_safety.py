"""What the bindings refuse or survive (issue 10, defects 1-6 minus the guard pages): failed
conversions, indices changed by another thread, thread counts, undefined behaviour on NaN
and misaligned views, aliasing between outputs and inputs. Calls that used to crash run in
a subprocess, so a crash fails the test instead of killing pytest."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _ref import UNDER_ASAN, assert_close, cross_entropy, names_argument, run_python

import fastnn
from fastnn import _C

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(HERE), "csrc")


def run_isolated(code, env_extra=None, timeout=300):
    """Run code in a fresh interpreter (tests/ importable); fail on any non-zero exit."""
    proc = run_python(f"import sys; sys.path.insert(0, {HERE!r})\n" + textwrap.dedent(code),
                      env_extra=env_extra, timeout=timeout)
    signal = f" (killed by signal {-proc.returncode})" if proc.returncode < 0 else ""
    assert proc.returncode == 0, f"exit status {proc.returncode}{signal}\n{proc.stderr[-3000:]}"
    return proc


def f32(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# ---------------------------------------------------------------- 1. failed conversions

HUGE = {  # each call converts a (2**30, 2**30) broadcast view: 4 EiB as C-contiguous float32
    "matmul": ("fastnn.matmul(big, np.ones((1, 1), np.float32))", "gemm: argument 'a'"),
    "activation_forward": ("_C.activation_forward('relu', big)", "activation_forward: argument 'x'"),
    "sum_squares": ("_C.sum_squares(big)", "sum_squares: argument 'x'"),
    "gather_rows": ("_C.gather_rows(big, np.array([0]))", "gather_rows: argument 'x'"),
    "cross_entropy": ("_C.cross_entropy(big, np.zeros(1, np.int64))",
                      "cross_entropy: argument 'logits'"),
    "augment_images": ("_C.augment_images(big[None], seed=1, offset=0)",
                       "augment_images: argument 'x'"),
}


@pytest.mark.parametrize("fn", sorted(HUGE))
def test_conversion_that_cannot_allocate_raises_memory_error(fn):
    proc = run_isolated(f"""
        import numpy as np, fastnn
        from fastnn import _C
        big = np.broadcast_to(np.float32(1), (2**30, 2**30))
        try:
            {HUGE[fn][0]}
        except MemoryError as e:
            print("MemoryError:", e)
        """)
    assert proc.stdout.startswith("MemoryError: " + HUGE[fn][1]), proc.stdout


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's shadow memory needs terabytes of address space")
def test_conversion_under_an_address_space_limit_raises_memory_error():
    """The issue's `ulimit -v` case, scaled down: a float64 matrix that fits, whose float32
    copy does not (the limit is set just above what the process holds)."""
    proc = run_isolated("""
        import resource, numpy as np, fastnn
        a = np.ones((6000, 6000))                    # 288 MB float64; its float32 copy: 144 MB
        b = np.ones((6000, 1), np.float32)
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + 64 * 2**20, resource.RLIM_INFINITY))
        try:
            fastnn.matmul(a, b)
        except MemoryError as e:
            print("MemoryError:", e)
        """)
    # matmul converts a float64 operand itself (checking float32's range): its name for it
    assert proc.stdout.startswith("MemoryError: matmul: a: its float32 copy"), proc.stdout


def test_failed_cast_is_a_type_error_naming_the_argument():
    with pytest.raises(TypeError) as e:
        _C.gemm(np.ones((2, 2), np.float32), [[1.0, 2.0], [3.0]])
    assert "gemm" in str(e.value) and names_argument(str(e.value), "'b'")
    with pytest.raises(TypeError) as e:
        _C.cross_entropy(np.ones((2, 2), np.float32), [[0], 1])
    assert "cross_entropy" in str(e.value) and "'labels'" in str(e.value)


def test_failed_conversion_gives_the_cause_without_its_traceback():
    """A device array where a host array is wanted: the cause's own words, not the Python
    traceback that pybind11's what() appends ("At: .../tensor.py(185): __array__")."""
    t = fastnn.Tensor(_C.DeviceArray.from_numpy(np.ones((3, 4), np.float32), "cpu"))
    with pytest.raises(TypeError) as e:
        fastnn.matmul(np.ones((2, 3), np.float32), t)
    msg = str(e.value)
    assert names_argument(msg, "'b'") and "not a NumPy array" in msg, msg
    assert "At:" not in msg and ".py(" not in msg, msg


# The bindings a training step calls bind their arguments themselves (csrc/python/keywords.h):
# as Python binds them, with CPython's errors. Twins of their signatures, for the errors:
def gemm(a, b, out=None, *, transpose_a=False, transpose_b=False, alpha=1.0, beta=0.0, bias=None,
         activation="identity", activation_alpha=0.01, precision="fp32"):
    pass


def adam_step(param, grad, m, v, *, lr, beta1, beta2, eps, weight_decay, step, decoupled=False,
              segments=None):
    pass


def column_sum(x, out, beta=0.0):
    pass


def test_hand_bound_arguments_behave_as_pythons():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    want = a.astype(np.float64) @ a.T.astype(np.float64)
    # by position, by keyword (in any order), and a key that is not the interned literal
    for got in (_C.gemm(a, a, None, transpose_b=True), _C.gemm(b=a, transpose_b=True, a=a),
                _C.gemm(a, a, **{"".join(["transpose", "_b"]): True})):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    out = np.empty((2, 2), np.float32)
    assert _C.gemm(a, a, out=out, transpose_b=True, beta=0.0) is out
    z = np.zeros(3, np.float32)
    bad_calls = ["gemm(a)", "gemm()", "gemm(a, a, None, True)", "gemm(a, a, None, True, False)",
                 "gemm(a, a, None, True, transpose_a=True)", "gemm(a, a, transpose=True)",
                 "gemm(a, a, None, True, transpose=True)", "gemm(a, a, a=a)",
                 "adam_step(a, a, a, a, lr=0.1)", "adam_step(a, a, a)", "adam_step(a, a, a, a, 0.1)",
                 "column_sum(a, z, 1.0, beta=1.0)", "column_sum(a)"]
    for call in bad_calls:
        with pytest.raises(TypeError) as python:
            eval(call)
        with pytest.raises(TypeError) as bound:
            eval("_C." + call)
        assert str(bound.value) == str(python.value), call
    # and a value of the wrong type is named
    for call, message in {
        "_C.gemm(a, a, alpha='2')": "gemm: argument 'alpha' must be float, got str",
        "_C.gemm(a, a, activation=3)": "gemm: argument 'activation' must be str, got int",
        "_C.adam_step(a, a, a, a, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0, "
        "step=1.5)": "adam_step: argument 'step' must be int, got float",
    }.items():
        with pytest.raises(TypeError) as e:
            eval(call)
        assert str(e.value) == message, call


HAND_BOUND = ["gemm", "gemm_reference", "activation_forward", "activation_backward", "column_sum",
              "gather_rows", "sgd_step", "adam_step"]


@pytest.mark.parametrize("name", HAND_BOUND)
def test_hand_bound_functions_are_module_functions(name):
    """Vectorcall functions of the module, as pybind11's: named, documented, picklable."""
    import pickle
    fn = getattr(_C, name)
    assert fn.__name__ == name and fn.__module__ == "fastnn._C" and fn.__self__ is _C
    assert repr(fn) == f"<built-in function {name}>"
    assert fn.__doc__.startswith(name + "(")
    assert pickle.loads(pickle.dumps(fn)) is fn


def test_hand_bound_errors_keep_their_type():
    """A C++ exception inside a vectorcall binding reaches Python as the type it was thrown as."""
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        _C.gemm(a, a)
    with pytest.raises(TypeError, match="must be float, got str"):
        _C.gemm(a, a, transpose_b=True, alpha="x")
    with pytest.raises(ValueError):
        _C.activation_forward("no-such-activation", a, 0.0)


# ---------------------------------------------------------------- 3. indices changed meanwhile

# numpy copies a large array without the GIL, and a byte-wise copy (rep movsb) can tear the
# other thread's 8-byte write: the private copy may then hold a third value, in range or not.
# What the bindings guarantee is that the values checked are the values read: a value out
# of range is refused, one in range gives the answer for the copy that was read.
RACE = """
    import threading, numpy as np, fastnn
    from fastnn import _C
    from _ref import cross_entropy
    sys.setswitchinterval(1e-6)
    rows, classes = 3000, 50
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((rows, classes)).astype(np.float32)
    x = rng.standard_normal((rows, 40)).astype(np.float32)
    labels = rng.integers(0, classes, rows)      # the user's int64 array, passed uncopied
    last = int(labels[-1])
    stop = False
    def flip():                                  # the last entry, read last by the kernel
        while not stop:
            labels[-1] = 10**12
            labels[-1] = last
    t = threading.Thread(target=flip)
    t.start()
    def agrees(result, ref_loss, ref_grad):
        return (abs(result[0] - ref_loss) < 1e-5 * abs(ref_loss)
                and np.abs(result[1] - ref_grad).max() < 1e-6)
    ok = errors = 0
    try:
        for _ in range(ITERATIONS):
            try:
                result = CALL
            except ValueError as e:  # the copy may catch a value half written: any is refused
                assert "is outside" in str(e), e
                errors += 1
                continue
            CHECK
            ok += 1
    finally:
        stop = True
        t.join()
    print(ok, errors)
"""


def _race(call, check, setup=""):
    check = textwrap.indent(textwrap.dedent(check), " " * 8).strip()
    code = textwrap.dedent(RACE).replace("CHECK", check)
    code = code.replace("CALL", call).replace("ITERATIONS", "400")
    proc = run_isolated(setup + code)
    ok, errors = map(int, proc.stdout.split())
    assert ok > 0, "no call completed"


def test_cross_entropy_labels_changed_by_another_thread():
    _race("_C.cross_entropy(logits, labels)",
          """
            labels_now = labels.copy(); labels_now[-1] = last
            if not agrees(result, *cross_entropy(logits, labels_now)):
                # the copy may hold a write torn by the other thread: any in-range last label
                assert any(agrees(result, *cross_entropy(logits, np.append(labels_now[:-1], c)))
                           for c in range(classes)), result[0]""")


def test_cross_entropy_loss_labels_changed_by_another_thread():
    _race("(loss_fn(logits, labels), loss_fn.backward())",
          """
            labels_now = labels.copy(); labels_now[-1] = last
            if not agrees(result, *cross_entropy(logits, labels_now)):
                # the copy may hold a write torn by the other thread: any in-range last label
                assert any(agrees(result, *cross_entropy(logits, np.append(labels_now[:-1], c)))
                           for c in range(classes)), result[0]""",
          setup="import fastnn.losses\nloss_fn = fastnn.losses.CrossEntropy()\n")


def test_gather_rows_index_changed_by_another_thread():
    _race("_C.gather_rows(x, labels)",
          """
            idx = labels.copy(); idx[-1] = last
            if not np.array_equal(result, x[idx]):
                # the copy may hold a write torn by the other thread: any in-range last index
                assert np.array_equal(result[:-1], x[idx[:-1]])
                assert (result[-1] == x).all(axis=1).any()""")


# ---------------------------------------------------------------- 4. thread counts

ONLINE_CPUS = os.sysconf("SC_NPROCESSORS_ONLN")


@pytest.mark.parametrize("call", [
    lambda idx: _C.cross_entropy(np.zeros((1, 3), np.float32), idx),
    lambda idx: _C.gather_rows(np.zeros((1, 3), np.float32), idx)])
def test_a_uint64_index_from_2_63_is_reported_as_given(call):
    with pytest.raises(ValueError, match=r"\[0\] = 9223372036854775808 is too large"):
        call(np.array([2**63], np.uint64))
    with pytest.raises(ValueError, match=r"\[1\] = 18446744073709551615 is too large"):
        call(np.array([0, 2**64 - 1], np.uint64))


def test_thread_count_is_bounded_by_the_machine():
    top = fastnn.max_num_threads()
    assert top == 4 * ONLINE_CPUS
    before = fastnn.get_num_threads()
    for set_threads in (fastnn.set_num_threads, _C.set_num_threads):
        for n in (top + 1, 100000):
            with pytest.raises(ValueError) as e:
                set_threads(n)
            assert names_argument(str(e.value), "n") and str(top) in str(e.value)
            assert fastnn.get_num_threads() == before
    fastnn.set_num_threads(top)
    assert fastnn.get_num_threads() == (top if fastnn.config()["openmp"] else 1)
    with pytest.raises(ValueError) as e:
        _C.fma_peak_gflops(threads=100000)
    assert "threads" in str(e.value) and str(top) in str(e.value)
    with pytest.raises(ValueError):
        _C.fma_peak_gflops(threads=0)


def test_absurd_thread_count_does_not_kill_the_process():
    """The issue's repro: set_num_threads(100000), then a 2048 x 2048 matmul (libgomp could
    not create the threads and exited the process)."""
    proc = run_isolated("""
        import numpy as np, fastnn
        try:
            fastnn.set_num_threads(100000)
        except ValueError:
            pass
        a = np.ones((2048, 2048), np.float32)
        c = fastnn.matmul(a, a)
        assert c[0, 0] == 2048 and c[-1, -1] == 2048
        from fastnn import _C
        try:
            _C.fma_peak_gflops(threads=100000, seconds=0.01)
        except ValueError:
            pass
        print("ok")
        """)
    assert proc.stdout.strip() == "ok"


def test_omp_num_threads_beyond_the_bound_is_clamped_with_a_warning():
    proc = run_isolated("""
        import warnings
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import fastnn
        import numpy as np
        a = np.ones((1024, 1024), np.float32)
        assert fastnn.matmul(a, a)[0, 0] == 1024
        print(fastnn.get_num_threads(), fastnn.max_num_threads(), [str(x.message) for x in w])
        """, env_extra={"OMP_NUM_THREADS": "100000"})
    threads, top, warned = proc.stdout.split(" ", 2)
    assert int(threads) == int(top) == 4 * ONLINE_CPUS
    assert "OMP_NUM_THREADS" in warned and "100000" in warned


_FORK_CHILD = """
    import os, warnings, numpy as np
    {other}
    import fastnn
    fastnn.set_num_threads(2)
    a = np.ones((512, 512), np.float32)
    {parent_region}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        import signal
        signal.alarm(30)  # a hang ends the child (status 142 below) instead of the test
        os.close(r)
        threads = fastnn.get_num_threads()
        ok = fastnn.matmul(a, a)[0, 0] == 512
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fastnn.set_num_threads(2)
        ok = ok and fastnn.matmul(a, a)[-1, -1] == 512 and fastnn._C.fma_peak_gflops(2, 0.01) > 0
        os.write(w, f"{{threads}} {{fastnn.get_num_threads()}} {{ok}} {{len(caught)}} "
                    f"{{fastnn.config()['forked_after_threads']}}".encode())
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    ok = fastnn.matmul(a, a)[0, 0] == 512  # the parent's next region: a new pool
    print(os.read(r, 200).decode(), os.waitstatus_to_exitcode(status), ok, fastnn.get_num_threads())
    """


@pytest.mark.parametrize("started_by", ["fastnn", "torch"])
def test_a_child_forked_after_parallel_regions_runs_them_on_its_threads(started_by):
    """GNU OpenMP's thread pool does not survive fork(): the child's first parallel region
    hung (a multiprocessing pool with the fork start method, on its first batch), whichever
    library had run a region on the forking thread (fastnn's own had been caught, PyTorch's,
    sharing the process's one libgomp, not). The pool is released before the fork."""
    if started_by == "torch":
        pytest.importorskip("torch")
        other = "import torch; torch.set_num_threads(2)"
        region = "torch.ones(512, 512) @ torch.ones(512, 512)  # PyTorch's OpenMP region"
    else:
        other, region = "", "assert fastnn.matmul(a, a)[0, 0] == 512  # a region on two threads"
    proc = run_isolated(_FORK_CHILD.format(other=other, parent_region=region), timeout=90)
    # the child: 2 threads (kept, and again after asking), right products, no warning, not
    # flagged; its exit status 0; the parent: right products, 2 threads
    if fastnn.config()["openmp"]:
        assert proc.stdout.split() == ["2", "2", "True", "0", "False", "0", "True", "2"]
    else:  # one thread: the build's own one-thread warning, nothing flagged
        assert proc.stdout.split() == ["1", "1", "True", "1", "False", "0", "True", "1"]


def test_cli_threads_outside_the_bound_is_a_usage_error(capsys):
    from fastnn import cli
    top = fastnn.max_num_threads()
    for bad in (str(top + 1), "100000", "0"):
        with pytest.raises(SystemExit) as e:
            cli.main(["train", "--data", "xor", "--threads", bad])
        assert e.value.code == 2
        assert "--threads" in capsys.readouterr().err


# ---------------------------------------------------------------- 5. undefined behaviour

UBSAN_MAIN = r"""
#include <cmath>
#include <cstdio>
#include <limits>
#include "ops.h"
#include "cpu/vmath.h"
using namespace fastnn;
int main() {
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = HUGE_VALF;
    const float xs[] = {nan, -nan, inf, -inf, 1e30f, -1e30f, 88.0f, -103.0f, 0.0f};
    for (float x : xs) std::printf("%g %g %g\n", x, exp_f(x), expm1_f(x));
    // cross_entropy (shifted_exp in loss.cpp) and softmax with NaN and infinite logits
    const float logits[] = {nan, 1.0f, 2.0f, inf, 0.0f, 1.0f, -inf, -inf, -inf};
    const int64_t labels[] = {1, 0, 2};
    float grad[9], y[9];
    const double loss = cross_entropy(logits, labels, grad, 3, 3);
    softmax_forward(logits, y, 3, 3);
    std::printf("loss %g softmax %g %g\n", loss, y[0], y[1]);
    // every activation on the same values
    float out[9], gx[9];
    for (int a = 0; a <= static_cast<int>(Activation::Softplus); ++a) {
        activation_forward(static_cast<Activation>(a), xs, out, 9, 0.5f);
        activation_backward(static_cast<Activation>(a), xs, out, xs, gx, 9, 0.5f);
    }
    return 0;
}
"""


def test_nan_and_infinite_inputs_are_defined_behaviour(tmp_path):
    """exp_f / expm1_f (vmath.h) and the kernels built on them, compiled with UBSan (no
    recovery): a NaN input used to left-shift a negative value in pow2i, from the
    conversion of a NaN to int32. NaN in gives NaN out."""
    cxx = shutil.which("g++") or shutil.which("c++")
    assert cxx, "a C++ compiler is needed to build the UBSan probe"
    src = tmp_path / "probe.cpp"
    src.write_text(UBSAN_MAIN)
    exe = tmp_path / "probe"
    cmd = [cxx, "-std=c++17", "-O1", "-g", "-fsanitize=undefined,float-cast-overflow",
           "-fno-sanitize-recover=all", "-I", CSRC, str(src),
           *(os.path.join(CSRC, f) for f in ("parallel.cpp", "cpu/loss.cpp", "cpu/activation.cpp")),
           "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "runtime error" not in run.stderr, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    for line in lines[:2]:  # exp and expm1 of NaN
        x, e, em1 = line.split()
        assert e.endswith("nan") and em1.endswith("nan"), line
    by_x = {line.split()[0]: line.split()[1:] for line in lines[2:9]}
    assert by_x["inf"] == ["inf", "inf"] and by_x["-inf"] == ["0", "-1"]
    assert lines[9].split()[1].endswith("nan")  # the loss over a NaN logit


def misaligned(values):
    """A float32 copy of values at an odd byte offset: not aligned for float32."""
    values = np.ascontiguousarray(values, np.float32)
    buf = bytearray(values.nbytes + 1)
    out = np.frombuffer(buf, np.float32, count=values.size, offset=1).reshape(values.shape)
    out[...] = values
    assert not out.flags.aligned
    return out


def test_misaligned_inputs_are_copied_and_give_the_right_result():
    x, g = f32(37), f32(37, seed=1)
    got = _C.activation_forward("tanh", misaligned(x))
    assert got.flags.aligned
    assert_close(got, np.tanh(x.astype(np.float64)), rtol=1e-5, atol=1e-6, what="tanh")
    assert abs(_C.sum_squares(misaligned(x)) - float(np.sum(x.astype(np.float64) ** 2))) < 1e-5
    logits, labels = f32(5, 7), np.arange(5) % 7
    value, grad = _C.cross_entropy(misaligned(logits), labels)
    ref_value, ref_grad = cross_entropy(logits, labels)
    assert abs(value - ref_value) < 1e-5
    assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7, what="cross_entropy")
    p = np.zeros(37, np.float32)
    _C.sgd_step(p, misaligned(g), None, lr=1.0)
    np.testing.assert_array_equal(p, -g)
    a, b = f32(9, 5), f32(5, 3)
    assert_close(_C.gemm(misaligned(a), misaligned(b)), a.astype(np.float64) @ b, rtol=1e-5,
                 atol=1e-5, what="gemm")



def swapped(x):
    """x as float32 of the other byte order: the same values, bytes reversed in memory."""
    other = np.dtype(np.float32).newbyteorder("S")
    return x.astype(other)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("which", ["a", "b", "both"])
def test_inputs_of_the_other_byte_order_are_converted(which, precision):
    # A big-endian float32 (on x86-64) had been read as native floats by the GEMM: garbage of
    # +-3e38, no error (found by an attack on the bf16 paths).
    a, b = f32(9, 5), f32(5, 3, seed=1)
    sa = swapped(a) if which in ("a", "both") else a
    sb = swapped(b) if which in ("b", "both") else b
    want = _C.gemm(a, b, precision=precision)
    np.testing.assert_array_equal(_C.gemm(sa, sb, precision=precision), want)
    np.testing.assert_array_equal(fastnn.matmul(sa, sb, precision=precision), want)
    np.testing.assert_array_equal(
        _C.gemm(sb, sa, transpose_a=True, transpose_b=True, precision=precision),
        _C.gemm(b, a, transpose_a=True, transpose_b=True, precision=precision))
    np.testing.assert_array_equal(_C.gemm_reference(sa, sb, precision=precision),
                                  _C.gemm_reference(a, b, precision=precision))


def test_other_kernels_convert_inputs_of_the_other_byte_order():
    x = f32(37)
    np.testing.assert_array_equal(_C.activation_forward("tanh", swapped(x)),
                                  _C.activation_forward("tanh", x))
    assert _C.sum_squares(swapped(x)) == _C.sum_squares(x)
    logits, labels = f32(5, 7), np.arange(5) % 7
    assert _C.cross_entropy(swapped(logits), labels)[0] == _C.cross_entropy(logits, labels)[0]
    p, q = np.zeros(37, np.float32), np.zeros(37, np.float32)
    _C.sgd_step(p, swapped(x), None, lr=1.0)
    _C.sgd_step(q, x, None, lr=1.0)
    np.testing.assert_array_equal(p, q)
    with pytest.raises(TypeError, match="float32"):
        _C.scale_(swapped(x), 2.0)  # written in place: must be native float32

def _in_place_calls(target):
    """Calls whose argument `target` (written in place) is the misaligned array m."""
    n = 12
    z = lambda: np.zeros(n, np.float32)  # noqa: E731
    adam = dict(lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0, step=1)
    rms = dict(lr=0.1, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.9, centered=True)
    return {
        "scale_/x": lambda m: _C.scale_(m, 2.0),
        "axpby_/y": lambda m: _C.axpby_(m, z(), 0.5, 1.0),
        "clip_/x": lambda m: _C.clip_(m, -1.0, 1.0),
        "sgd_step/param": lambda m: _C.sgd_step(m, z(), z(), lr=0.1, momentum=0.9),
        "sgd_step/velocity": lambda m: _C.sgd_step(z(), z(), m, lr=0.1, momentum=0.9),
        "adam_step/param": lambda m: _C.adam_step(m, z(), z(), z(), **adam),
        "adam_step/m": lambda m: _C.adam_step(z(), z(), m, z(), **adam),
        "adam_step/v": lambda m: _C.adam_step(z(), z(), z(), m, **adam),
        "adagrad_step/sum_sq": lambda m: _C.adagrad_step(z(), z(), m, lr=0.1, eps=1e-10,
                                                         weight_decay=0.0, lr_decay=0.0, step=1),
        "rmsprop_step/square_avg": lambda m: _C.rmsprop_step(z(), z(), m, z(), z(), **rms),
        "rmsprop_step/momentum_buf": lambda m: _C.rmsprop_step(z(), z(), z(), m, z(), **rms),
        "rmsprop_step/grad_avg": lambda m: _C.rmsprop_step(z(), z(), z(), z(), m, **rms),
        "add_penalty_grad/grad": lambda m: _C.add_penalty_grad(z(), m, 0.1, 0.1),
        "column_sum/out": lambda m: _C.column_sum(np.ones((2, n), np.float32), m),
        "activation_backward/out": lambda m: _C.activation_backward("relu", z(), z(), out=m),
        "activation_backward/bias_grad": lambda m: _C.activation_backward(
            "relu", np.zeros((2, n), np.float32), np.zeros((2, n), np.float32), bias_grad=m),
        "gather_rows/out": lambda m: _C.gather_rows(np.ones((3, n), np.float32), np.array([1]),
                                                    out=m.reshape(1, n)),
        "gemm/out": lambda m: _C.gemm(np.ones((1, 2), np.float32), np.ones((2, n), np.float32),
                                      m.reshape(1, n)),
    }[target]


@pytest.mark.parametrize("target", [
    "scale_/x", "axpby_/y", "clip_/x", "sgd_step/param", "sgd_step/velocity", "adam_step/param",
    "adam_step/m", "adam_step/v", "adagrad_step/sum_sq", "rmsprop_step/square_avg",
    "rmsprop_step/momentum_buf", "rmsprop_step/grad_avg", "add_penalty_grad/grad",
    "column_sum/out", "activation_backward/out", "activation_backward/bias_grad",
    "gather_rows/out", "gemm/out"])
def test_misaligned_output_written_in_place_is_refused(target):
    fn, arg = target.split("/")
    m = misaligned(np.full(12, 3.0, np.float32))
    with pytest.raises(ValueError) as e:
        _in_place_calls(target)(m)
    msg = str(e.value)
    assert msg.startswith(fn) and f"'{arg}'" in msg and "aligned" in msg, msg
    np.testing.assert_array_equal(m, 3.0)  # untouched


# ---------------------------------------------------------------- 6. aliasing

def _refused(call, *names):
    with pytest.raises(ValueError) as e:
        call()
    msg = str(e.value)
    assert "overlap" in msg and all(f"'{n}'" in msg for n in names), msg


def test_writing_bindings_refuse_overlapping_arguments():
    x = f32(10, 4)
    before = x.copy()
    _refused(lambda: _C.gather_rows(x, np.array([1, 0]), out=x[:2]), "out", "x")
    _refused(lambda: _C.gather_rows(x, np.arange(10)[::-1], out=x), "out", "x")
    p = f32(40)
    adam = dict(lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0, step=1)
    rms = dict(lr=0.1, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.9, centered=True)
    z = lambda: np.zeros(40, np.float32)  # noqa: E731
    _refused(lambda: _C.sgd_step(p[1:], p[:-1], None, lr=0.1), "param", "grad")
    _refused(lambda: _C.sgd_step(p, p, None, lr=0.1), "param", "grad")
    _refused(lambda: _C.sgd_step(p, z(), p, lr=0.1, momentum=0.9), "velocity", "param")
    m = z()
    _refused(lambda: _C.adam_step(z(), z(), m, m, **adam), "v", "m")
    _refused(lambda: _C.adam_step(p, p, z(), z(), **adam), "param", "grad")
    _refused(lambda: _C.adam_step(p[:20], z()[:20], p[20:], p[10:30], **adam), "v")
    _refused(lambda: _C.adagrad_step(p, z(), p, lr=0.1, eps=1e-10, weight_decay=0.0,
                                     lr_decay=0.0, step=1), "sum_sq", "param")
    _refused(lambda: _C.rmsprop_step(z(), z(), m, m, z(), **rms), "momentum_buf", "square_avg")
    _refused(lambda: _C.rmsprop_step(z(), p, z(), z(), p, **rms), "grad_avg", "grad")
    _refused(lambda: _C.add_penalty_grad(p, p, 0.1, 0.1), "grad", "param")
    out = np.zeros((4, 4), np.float32)
    _refused(lambda: _C.gemm(f32(4, 3), f32(3, 4), out, bias=out[0]), "out", "bias")
    _refused(lambda: _C.gemm(out[:, :3], f32(3, 4), out), "out", "a")
    _refused(lambda: _C.column_sum(x, x[0]), "out", "x")
    y, g = f32(6, 4), f32(6, 4, seed=1)
    _refused(lambda: _C.activation_backward("tanh", y, g, bias_grad=g[0]), "bias_grad", "grad_y")
    flat = f32(28)
    yy, gg = flat[:24].reshape(6, 4), f32(6, 4)
    _refused(lambda: _C.activation_backward("tanh", yy, gg, out=flat[4:].reshape(6, 4)), "out", "y")
    np.testing.assert_array_equal(x, before)
    assert np.all(m == 0)


def test_activation_backward_in_place_on_its_input_is_allowed_and_correct():
    """out may be exactly grad_y (or y): the kernel reads element i before writing it."""
    y = np.tanh(f32(6, 5)).astype(np.float32)
    g = f32(6, 5, seed=1)
    ref = (1.0 - y.astype(np.float64) ** 2) * g
    g_in = g.copy()
    assert _C.activation_backward("tanh", y, g_in, out=g_in) is not None
    assert_close(g_in, ref, rtol=1e-6, atol=1e-7, what="out is grad_y")
    y_in = y.copy()
    _C.activation_backward("tanh", y_in, g, out=y_in)
    assert_close(y_in, ref, rtol=1e-6, atol=1e-7, what="out is y")
    bias_grad = np.zeros(5, np.float32)
    g_in = g.copy()
    _C.activation_backward("tanh", y, g_in, out=g_in, bias_grad=bias_grad)
    assert_close(bias_grad, ref.sum(axis=0), rtol=1e-5, atol=1e-6, what="bias_grad")
