"""GEMM side by side: fastnn, NumPy (OpenBLAS) and PyTorch (CPU) on the same inputs.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/bench_gemm.py [--quick] [--precision bf16]
        [--random N [--seed S]]

For each shape and thread count: check that the three agree, then report median GFLOP/s,
fastnn's ratio to each, and fastnn's share of the measured FMA peak for that many
threads (a probe of independent AVX-512 FMAs, fastnn._C.fma_peak_gflops). JSON goes to
bench/results/. --random N times N products of random shapes (thin ones included) instead
of the squares and an MLP's products: the shapes nothing was tuned on.

--precision bf16: fastnn's bf16 product (matmul(precision="bf16"), on config()["bf16"]'s
path) against fastnn fp32, torch fp32 and torch bf16 (torch.matmul on bf16 tensors, made
once beforehand; its result is bf16), each checked first: fastnn bf16 against the float64
product of the bf16-rounded inputs; ratios are medians of per-round ratios.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np

import fastnn
from fastnn import _C
from common import (description, interleaved, machine_line, positive_int, positive_ints,
                    ratio_to_best, speedups, thread_counts, threads, try_import_torch,
                    warn_openblas_env, write_json)

BF16_RIVALS = ["fastnn_fp32", "torch", "torch_bf16"]

SQUARES = [64, 128, 256, 512, 1024, 2048, 4096]
LAYERS = [784, 512, 256, 10]
BATCHES = [32, 128, 512]


def mlp_shapes() -> list[tuple[str, int, int, int, bool, bool]]:
    """(label, m, n, k, transpose_a, transpose_b) of an MLP's training products."""
    shapes = []
    for batch in BATCHES:
        for fan_in, fan_out in zip(LAYERS[:-1], LAYERS[1:]):
            tag = f"b{batch} {fan_in}->{fan_out}"
            shapes.append((f"fwd  X.W^T  {tag}", batch, fan_out, fan_in, False, True))
            shapes.append((f"dW   dY^T.X {tag}", fan_out, fan_in, batch, True, False))
            shapes.append((f"dX   dY.W   {tag}", batch, fan_in, fan_out, False, False))
    return shapes


def random_shapes(count: int, seed: int) -> list[tuple[str, int, int, int, bool, bool]]:
    """`count` products no one tuned for: m, n and k log-uniform in [1, 4096] (thin ones
    included), 2 m n k between 2e5 and 3e9 flops, each transpose pair equally likely."""
    rng = np.random.default_rng(seed)
    shapes = []
    while len(shapes) < count:
        m, n, k = (int(round(np.exp(rng.uniform(0.0, np.log(4096))))) for _ in range(3))
        if not 2e5 <= 2.0 * m * n * k <= 3e9:
            continue
        ta, tb = bool(rng.integers(2)), bool(rng.integers(2))
        shapes.append((f"random {m}x{n}x{k} {'T' if ta else 'N'}{'T' if tb else 'N'}", m, n, k, ta, tb))
    return shapes


def operands(m, n, k, ta, tb, rng):
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    return a, b


def run_shape(label, m, n, k, ta, tb, nthreads, torch, rounds, rng):
    a, b = operands(m, n, k, ta, tb, rng)
    a_op, b_op = (a.T if ta else a), (b.T if tb else b)  # NumPy and torch take the views
    out = np.empty((m, n), np.float32)
    ref = a_op.astype(np.float64) @ b_op.astype(np.float64)
    tol = 1e-4 * np.sqrt(k) * np.abs(ref).max()
    with threads(nthreads, torch):
        got = fastnn.matmul(a, b, transpose_a=ta, transpose_b=tb)
        assert np.abs(got - ref).max() <= tol, f"fastnn disagrees on {label}"
        assert np.abs(a_op @ b_op - ref).max() <= tol, f"numpy disagrees on {label}"
        fns = {"fastnn": lambda: _C.gemm(a, b, out, transpose_a=ta, transpose_b=tb),
               "numpy": lambda: np.matmul(a_op, b_op, out=out)}
        if torch:
            ta_t, tb_t, out_t = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
            top = (lambda x: x.T) if ta else (lambda x: x)
            tob = (lambda x: x.T) if tb else (lambda x: x)
            assert np.abs(torch.matmul(top(ta_t), tob(tb_t)).numpy() - ref).max() <= tol
            fns["torch"] = lambda: torch.matmul(top(ta_t), tob(tb_t), out=out_t)
        times, per_round = interleaved(fns, rounds)
    flops = 2.0 * m * n * k
    return ({name: flops / t / 1e9 for name, t in times.items()}, ratio_to_best(per_round),
            speedups(per_round))


def bf16_round(x):
    """x rounded to bfloat16 (nearest even; finite inputs), as float32."""
    u = x.view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


def run_shape_bf16(label, m, n, k, ta, tb, nthreads, torch, rounds, rng):
    """GFLOP/s of fastnn bf16 and its rivals, and fastnn bf16's median per-round speed-up on each."""
    a, b = operands(m, n, k, ta, tb, rng)
    out, out32 = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
    # A CPU without bf16 instructions runs precision="bf16" as float32 products (with a warning)
    as_bf16 = bf16_round if _C.bf16_path() != "fp32" else (lambda x: x)
    ra, rb = as_bf16(a).astype(np.float64), as_bf16(b).astype(np.float64)
    ref = (ra.T if ta else ra) @ (rb.T if tb else rb)
    tol = 1e-5 * np.sqrt(k) * np.abs(ref).max()
    with threads(nthreads, torch):
        got = fastnn.matmul(a, b, transpose_a=ta, transpose_b=tb, precision="bf16")
        assert np.abs(got - ref).max() <= tol, f"fastnn bf16 disagrees on {label}"
        fns = {"fastnn": lambda: _C.gemm(a, b, out, transpose_a=ta, transpose_b=tb, precision="bf16"),
               "fastnn_fp32": lambda: _C.gemm(a, b, out32, transpose_a=ta, transpose_b=tb)}
        if torch:
            top = (lambda x: x.T) if ta else (lambda x: x)
            tob = (lambda x: x.T) if tb else (lambda x: x)
            a32, b32, o32 = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out32)
            a16, b16 = a32.to(torch.bfloat16), b32.to(torch.bfloat16)
            o16 = torch.empty((m, n), dtype=torch.bfloat16)
            # bf16 output, rounded: within a few bf16 ulps of the product
            t16 = torch.matmul(top(a16), tob(b16)).float().numpy()
            assert np.abs(t16 - ref).max() <= 2 ** -7 * np.abs(ref).max() + tol, f"torch bf16 disagrees on {label}"
            fns["torch"] = lambda: torch.matmul(top(a32), tob(b32), out=o32)
            fns["torch_bf16"] = lambda: torch.matmul(top(a16), tob(b16), out=o16)
        times, per_round = interleaved(fns, rounds)
    flops = 2.0 * m * n * k
    return {name: flops / t / 1e9 for name, t in times.items()}, speedups(per_round)


def main_bf16(shapes, thread_counts, torch, repeats, rng) -> int:
    print(f"bf16 path: {fastnn.config()['bf16']}")
    rows = []
    for nthreads in thread_counts:
        print(f"\n== {nthreads} thread(s); GFLOP/s, then fastnn bf16's speed-up on each ==")
        print(f"{'shape':32s} {'bf16':>8s} {'fp32':>8s} {'torch':>8s} {'t.bf16':>8s} "
              f"{'/fp32':>7s} {'/torch':>7s} {'/t.bf16':>7s}")
        for label, m, n, k, ta, tb in shapes:
            g, speedup = run_shape_bf16(label, m, n, k, ta, tb, nthreads, torch, repeats, rng)
            rows.append({"shape": label, "m": m, "n": n, "k": k, "threads": nthreads, **g, **speedup})
            cells = [f"{g[name]:8.1f}" if name in g else f"{'-':>8s}" for name in ["fastnn"] + BF16_RIVALS]
            ratios = [f"{speedup['vs_' + name]:7.2f}" if "vs_" + name in speedup else f"{'-':>7s}"
                      for name in BF16_RIVALS]
            print(f"{label:32s} {' '.join(cells)} {' '.join(ratios)}", flush=True)
    path = write_json("gemm-bf16", {"precision": "bf16", "bf16_path": _C.bf16_path(),
                                    "bf16": fastnn.config()["bf16"], "rows": rows})
    print(f"\nwrote {path}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=description(__doc__))
    p.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    p.add_argument("--threads", type=thread_counts, default=[1, 2], help="e.g. 1,2")
    p.add_argument("--repeats", type=positive_int, default=7, help="interleaved rounds per shape")
    p.add_argument("--squares", type=positive_ints,
                   help="comma-separated square sizes instead of the default set")
    p.add_argument("--no-mlp", action="store_true", help="squares only")
    p.add_argument("--random", type=positive_int, metavar="N",
                   help="N random shapes (thin ones included; see random_shapes) instead of the default set")
    p.add_argument("--seed", type=int, default=0, help="the random shapes' seed")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: fastnn's bf16 product against fastnn fp32, torch fp32 and torch bf16")
    args = p.parse_args(argv)
    warn_openblas_env()
    torch = try_import_torch()
    rng = np.random.default_rng(0)
    squares = (args.squares if args.squares
               else [64, 256, 1024] if args.quick else SQUARES)
    repeats = 3 if args.quick else args.repeats
    shapes = [(f"square {s}", s, s, s, False, False) for s in squares] + ([] if args.no_mlp else mlp_shapes())
    if args.random:
        shapes = random_shapes(args.random, args.seed)
    print(machine_line())
    print(f"fastnn {fastnn.__version__} isa={_C.get_isa()}  torch={'yes' if torch else 'not installed'}")
    if args.precision == "bf16":
        return main_bf16(shapes, args.threads, torch, repeats, rng)
    rows = []
    for nthreads in args.threads:
        peak = _C.fma_peak_gflops(nthreads, 0.5)
        print(f"\n== {nthreads} thread(s); measured FMA peak {peak:.0f} GFLOP/s ==")
        print(f"{'shape':32s} {'fastnn':>8s} {'numpy':>8s} {'torch':>8s} {'/numpy':>7s} {'/torch':>7s} {'/best':>6s} {'%peak':>6s}")
        for label, m, n, k, ta, tb in shapes:
            g, vs_best, vs = run_shape(label, m, n, k, ta, tb, nthreads, torch, repeats, rng)
            row = {"shape": label, "m": m, "n": n, "k": k, "threads": nthreads, "peak": peak, **g,
                   "vs_best": vs_best, "vs_numpy": vs["vs_numpy"], "vs_torch": vs.get("vs_torch"),
                   "share_of_peak": g["fastnn"] / peak if peak else None}
            rows.append(row)
            tt = f"{g['torch']:8.1f}" if torch else f"{'-':>8s}"
            vt = f"{row['vs_torch']:7.2f}" if torch else f"{'-':>7s}"
            share = f"{100 * row['share_of_peak']:5.0f}%" if peak else "   n/a"
            print(f"{label:32s} {g['fastnn']:8.1f} {g['numpy']:8.1f} {tt} {row['vs_numpy']:7.2f} {vt} {vs_best:6.2f} {share}", flush=True)
        mine = [r for r in rows if r["threads"] == nthreads]
        for label, group in (("MLP products", [r for r in mine if r["shape"].split()[0] in ("fwd", "dW", "dX")]),
                             ("random shapes", [r for r in mine if r["shape"].startswith("random")])):
            if group:
                ratios = [r["vs_best"] for r in group]
                worst = min(group, key=lambda r: r["vs_best"])
                print(f"{label}, {nthreads} thread(s): median fastnn/best {statistics.median(ratios):.2f}, "
                      f"min {min(ratios):.2f} ({worst['shape']})")
    path = write_json("gemm", {"rows": rows})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
