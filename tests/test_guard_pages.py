"""Every kernel on inputs and outputs that end exactly at an unreadable page (tests/_guard.py):
a read or write past the end faults. Each batch runs in its own interpreter so that a fault
fails the test instead of killing pytest. Values are also checked, against float64
references where tests/_ref.py has one, else against the same call on ordinary arrays.

The AVX-512 batch needs an AVX-512 CPU; elsewhere it is skipped (not passed)."""

import os
import sys

import numpy as np
import pytest

from _ref import act_forward, assert_close, cross_entropy, mse, run_python, softmax

from fastnn import _C

HERE = os.path.dirname(os.path.abspath(__file__))

# Around every vector and tile width: 1..130 (the AVX-512 small path takes 64 columns at a
# time; tiles are 8 x 48, 6 x 16 and 4 x 16), and 48..64 densely.
SWEEP = range(1, 131)
PANEL = range(48, 65)


def gemm_shapes():
    shapes = set()
    for d in SWEEP:
        shapes.update({(1, d, 1), (d, 1, 1), (1, 1, d), (3, d, 5), (d, 5, 3), (5, 3, d)})
    for n in PANEL:
        for m in (1, 2, 3, 4, 5, 8, 9, 17):
            for k in (1, 2, 17, 33):
                shapes.add((m, n, k))
    # Large enough for the packed path (m n k > 2**18 and every side > 16), with edges.
    shapes.update({(70, 130, 33), (100, 60, 50), (130, 130, 17), (65, 63, 65), (49, 127, 50),
                   (17, 64, 257),
                   (16, 60, 1024),  # the issue's fit case: Dense(60, 16)'s weight gradient
                   # B transposed, k at least 4 x m rounded up to 16: the transposed path's
                   # kernels read B's rows in place, in assembly on AVX2 (unseen by the
                   # sanitizer); k % 4 of 1-3 left after the unrolled steps
                   (40, 30, 194), (69, 37, 321), (32, 100, 300), (16, 20, 67)})
    return sorted(shapes)


def _run_gemm_batch(isa):
    from _guard import guarded, guarded_rows

    _C.set_isa(isa)
    rng = np.random.default_rng(7)
    for count, (m, n, k) in enumerate(gemm_shapes()):
        a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
        b = rng.uniform(-1, 1, (k, n)).astype(np.float32)
        bias = rng.uniform(-1, 1, n).astype(np.float32)
        c0 = rng.uniform(-1, 1, (m, n)).astype(np.float32)
        tol = dict(rtol=1e-5, atol=2e-6 * k + 1e-6)
        for ta in (False, True):
            for tb in (False, True):
                beta = 0.5 if (m + n + k) % 2 else 0.0
                a_in = guarded(a.T if ta else a)
                b_in = guarded(b.T if tb else b)
                out = guarded(c0)
                kw = dict(transpose_a=ta, transpose_b=tb, beta=beta)
                if count % 3 == 0:
                    kw.update(bias=guarded(bias), activation="relu")
                _C.gemm(a_in, b_in, out, **kw)
                ref = a.astype(np.float64) @ b + beta * c0
                if "bias" in kw:
                    ref = act_forward("relu", ref + bias)
                assert_close(out, ref, what=f"{isa} gemm {(m, n, k)} ta={ta} tb={tb}", **tol)
        # Slices of wider matrices (leading dimension > columns), ending at the guard.
        out = guarded_rows(np.zeros((m, n), np.float32), n + 3)
        _C.gemm(guarded_rows(a, k + 5), guarded_rows(b, n + 7), out)
        assert_close(out, a.astype(np.float64) @ b, what=f"{isa} strided gemm {(m, n, k)}", **tol)
        # Transposed views (column-major storage), also used without a copy.
        got = _C.gemm(guarded(a.T).T, guarded(b.T).T)
        assert_close(got, a.astype(np.float64) @ b, what=f"{isa} column-major gemm {(m, n, k)}",
                     **tol)


def _run_gather_batch():
    from _guard import guarded

    rng = np.random.default_rng(8)
    for cols in SWEEP:
        for rows in (1, 2, 7):
            x = rng.uniform(-1, 1, (rows, cols)).astype(np.float32)
            idx = rng.integers(0, rows, 5)
            out = guarded(np.zeros((5, cols), np.float32))
            _C.gather_rows(guarded(x), guarded(idx, np.int64), out=out)
            np.testing.assert_array_equal(out, x[idx])
            np.testing.assert_array_equal(_C.gather_rows(guarded(x), guarded(idx, np.int64)), x[idx])


ACTIVATIONS = ["identity", "sigmoid", "relu", "tanh", "leaky_relu", "elu", "gelu", "softplus"]


def _run_elementwise_batch():
    from _guard import guarded

    rng = np.random.default_rng(9)

    def same_on_plain(fn, *args, **kw):
        """fn on guarded copies of the array arguments equals fn on ordinary ones."""
        plain = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        fenced = [guarded(a) if isinstance(a, np.ndarray) else a for a in args]
        r_plain, r_fenced = fn(*plain, **kw), fn(*fenced, **kw)
        for p, f in zip(plain, fenced):  # arguments updated in place
            if isinstance(p, np.ndarray):
                np.testing.assert_array_equal(f, p)
        if r_plain is not None:
            for p, f in zip(*(r if isinstance(r, tuple) else (r,) for r in (r_plain, r_fenced))):
                np.testing.assert_array_equal(np.asarray(f), np.asarray(p))

    sizes = list(SWEEP) + [255, 256, 257, 1023, 1024, 1025, 4095, 4096, 4097]
    for n in sizes:
        x = rng.uniform(-3, 3, n).astype(np.float32)
        g = rng.uniform(-1, 1, n).astype(np.float32)
        t = rng.uniform(0.05, 0.95, n).astype(np.float32)
        for name in ("identity", "sigmoid", "relu", "tanh", "leaky_relu"):
            assert_close(_C.activation_forward(name, guarded(x)), act_forward(name, x),
                         rtol=1e-5, atol=1e-6, what=f"{name} n={n}")
        for name in ACTIVATIONS:
            same_on_plain(_C.activation_forward, name, x)
            y = _C.activation_forward(name, x)
            same_on_plain(lambda yy, gg, xx: _C.activation_backward(name, yy, gg, 0.5, x=xx),
                          y, g, x)
            out = guarded(np.zeros(n, np.float32))
            _C.activation_backward(name, guarded(y), guarded(g), 0.5, x=guarded(x), out=out)
            np.testing.assert_array_equal(out, _C.activation_backward(name, y, g, 0.5, x=x))
        value, grad = _C.mse(guarded(x), guarded(g))
        ref_value, ref_grad = mse(x, g)
        assert abs(value - ref_value) <= 1e-5 * abs(ref_value)
        assert_close(grad, ref_grad, rtol=1e-5, atol=1e-9, what=f"mse n={n}")
        same_on_plain(_C.binary_cross_entropy, x, t)
        same_on_plain(lambda p, tt: _C.binary_cross_entropy(p, tt, from_logits=False), t, t)
        same_on_plain(_C.sum_squares, x)
        same_on_plain(_C.scale_, x, 0.5)
        same_on_plain(_C.axpby_, x, g, 0.5, -2.0)
        same_on_plain(_C.clip_, x, -1.0, 1.0)
        same_on_plain(_C.add_penalty_grad, x, g, 0.1, 0.2)
        same_on_plain(_C.dropout_forward, x, 0.3, 5, 11)
        same_on_plain(_C.dropout_backward, g, 0.3, 5, 11)
        zeros = np.zeros(n, np.float32)
        same_on_plain(lambda p, gg, v: _C.sgd_step(p, gg, v, lr=0.1, momentum=0.9), x, g, zeros)
        same_on_plain(lambda p, gg, m, v: _C.adam_step(p, gg, m, v, lr=0.1, beta1=0.9, beta2=0.99,
                                                        eps=1e-8, weight_decay=0.01, step=1),
                      x, g, zeros, zeros)
        same_on_plain(lambda p, gg, s: _C.adagrad_step(p, gg, s, lr=0.1, eps=1e-10,
                                                        weight_decay=0.0, lr_decay=0.0, step=1),
                      x, g, zeros)
        same_on_plain(lambda p, gg, s, b, a: _C.rmsprop_step(p, gg, s, b, a, lr=0.1, alpha=0.9,
                                                              eps=1e-8, weight_decay=0.0,
                                                              momentum=0.9, centered=True),
                      x, g, zeros, zeros, zeros)
        # Row-wise kernels: 3 rows of n columns.
        x2 = rng.uniform(-3, 3, (3, n)).astype(np.float32)
        g2 = rng.uniform(-1, 1, (3, n)).astype(np.float32)
        labels = rng.integers(0, n, 3)
        assert_close(_C.softmax_forward(guarded(x2)), softmax(x2), rtol=1e-5, atol=1e-7,
                     what=f"softmax n={n}")
        same_on_plain(_C.softmax_backward, softmax(x2).astype(np.float32), g2)
        value, grad = _C.cross_entropy(guarded(x2), guarded(labels, np.int64))
        ref_value, ref_grad = cross_entropy(x2, labels)
        assert abs(value - ref_value) <= 1e-5 * max(1.0, abs(ref_value))
        assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7, what=f"cross_entropy n={n}")
        same_on_plain(_C.cross_entropy_soft, x2, softmax(g2).astype(np.float32))
        out = guarded(np.zeros(n, np.float32))
        _C.column_sum(guarded(x2), out)
        assert_close(out, x2.astype(np.float64).sum(axis=0), rtol=1e-6, atol=1e-6,
                     what=f"column_sum n={n}")
        bias_grad = guarded(np.zeros(n, np.float32))
        _C.activation_backward("tanh", guarded(x2), guarded(g2), out=guarded(np.zeros_like(x2)),
                               bias_grad=bias_grad)
        assert np.isfinite(bias_grad).all()
    for h in range(1, 12):
        for w in (1, 5, 16, 17):
            imgs = rng.uniform(0, 1, (2, h, w)).astype(np.float32)
            same_on_plain(lambda im: _C.augment_images(im, seed=3, offset=0, max_shift=2.0,
                                                       flip=True, max_rotation=10.0,
                                                       noise_std=0.1), imgs)


def _in_subprocess(call):
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import test_guard_pages as t; "
            f"t.{call}; print('ok')")
    proc = run_python(code, timeout=900)
    signal = f" (killed by signal {-proc.returncode})" if proc.returncode < 0 else ""
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"exit status {proc.returncode}{signal}\n{proc.stderr[-3000:]}")


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_gemm_reads_and_writes_nothing_past_its_operands(isa):
    if isa not in _C.supported_isas():
        pytest.skip(f"this CPU does not run the {isa} path")
    _in_subprocess(f"_run_gemm_batch({isa!r})")


def test_gather_rows_reads_and_writes_nothing_past_its_operands():
    _in_subprocess("_run_gather_batch()")


def test_elementwise_kernels_read_and_write_nothing_past_their_operands():
    _in_subprocess("_run_elementwise_batch()")


def test_guard_page_faults_on_a_read_past_the_end():
    """The fence itself works: touching the element after a guarded array kills the process."""
    code = (f"import sys, ctypes; sys.path.insert(0, {HERE!r}); from _guard import guarded; "
            "import numpy as np; a = guarded(np.ones(5, np.float32)); "
            "ctypes.c_float.from_address(a.ctypes.data + 20).value")
    proc = run_python(code)
    # Under the sanitizer, ASan reports the fault (and exits 1) instead of the signal.
    assert proc.returncode < 0 or "AddressSanitizer: SEGV" in proc.stderr, \
        (proc.returncode, proc.stderr)
