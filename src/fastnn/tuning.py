"""The empirical GEMM tuner and its per-user cache file (like FFTW's wisdom).

``fastnn.tune()`` (or ``fastnn tune``) times candidate blockings around the cache model's
choice on the products training uses and saves the fastest to a JSON file: the
``FASTNN_TUNING_FILE`` environment variable, else ``$XDG_CACHE_HOME/fastnn/tuning.json``
(``~/.cache/fastnn/tuning.json``). ``import fastnn`` applies the file's entry for this CPU
(vendor, model, family/model/stepping and cache geometry: a ``FASTNN_CACHE`` override is a
CPU of its own) to every ISA it lists; ``FASTNN_TUNING=off`` ignores the file. A damaged,
edited or unreadable file is never trusted: a RuntimeWarning says what is wrong and the
model's blocking stays. One file holds the entries of several CPUs and ISAs.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import stat
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from . import _C
from ._checks import cache_home

if TYPE_CHECKING:
    from pathlib import Path
# json, hashlib and pathlib are imported where used: ``import fastnn`` without a tuning file
# loads none of them.

FORMAT = "fastnn-tuning"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 1 << 20  # an entry per CPU, a few hundred bytes each
# set_blocking's ranges: a value from the file outside them is a damaged file.
_LIMITS = {"kc": 65536, "nc": 1 << 20, "mc": 1 << 20}
_MAX_ROUNDS = 25  # enough for a stable median; each round re-publishes every candidate
_MIN_ROUNDS = 3   # fewer candidates rather than a median of one or two rounds

# The products of training a 784-512-256-10 MLP at batch 128 and 512, (m, n, k, trans_a,
# trans_b): forward X.W^T, weight gradient dY^T.X, input gradient dY.W (not for the first
# layer, whose input needs none), and the squares 1024 and 2048. The output layer's products
# are left out: 10 wide, they take the small path, which has no blocking.
TRAINING_SHAPES: tuple[tuple[int, int, int, bool, bool], ...] = (
    *((batch, o, i, False, True) for batch in (128, 512) for i, o in ((784, 512), (512, 256))),
    *((o, i, batch, True, False) for batch in (128, 512) for i, o in ((784, 512), (512, 256))),
    *((batch, 512, 256, False, False) for batch in (128, 512)),
    (1024, 1024, 1024, False, False), (2048, 2048, 2048, False, False))

# The tuning file applied to each ISA at import: isa -> (path, (kc, nc, mc)).
_applied: dict[str, tuple[str, tuple[int, int, int]]] = {}


def tuning_path() -> Path:
    """Where the tuning file lives: ``$FASTNN_TUNING_FILE``, else
    ``$XDG_CACHE_HOME/fastnn/tuning.json`` (an unset or relative XDG_CACHE_HOME, which the
    XDG spec says to ignore, means ``~/.cache``)."""
    from pathlib import Path

    return Path(_default_path())


def _default_path() -> str:
    explicit = os.environ.get("FASTNN_TUNING_FILE")
    if explicit:
        return os.path.expanduser(explicit)
    return os.path.join(cache_home("FASTNN_TUNING_FILE"), "fastnn", "tuning.json")


def cpu_key(cpu: dict | None = None) -> str:
    """The key of this CPU's entries: vendor, model name, family/model/stepping and the cache
    geometry in use (under ``FASTNN_CACHE``, the overridden one)."""
    cpu = _C.config()["cpu"] if cpu is None else cpu
    return (f"{cpu['vendor']} | {cpu['model_name']} | family {cpu['family']} model "
            f"{cpu['model']} stepping {cpu['stepping']} | {cpu['cache_spec']}")


def _checksum(payload: dict) -> str:
    import hashlib
    import json

    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class _Damaged(ValueError):
    """The tuning file is not one this fastnn wrote, or was changed since."""


def _read(path: str) -> dict[str, Any] | None:
    """The file's entries (key -> entry); None when there is no file; _Damaged when it is
    unreadable, not JSON, of another format version, or fails its checksum."""
    try:
        # not opened unless a regular file (a FIFO's open waits for a writer), and read no
        # further than a tuning file can be (/dev/zero grew the import to 23 GB)
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise _Damaged("is not a regular file")
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise _Damaged(f"is larger than a tuning file can be ({MAX_FILE_BYTES} bytes)")
        text = data.decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise _Damaged(f"cannot be read ({err})") from None
    import json

    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as err:  # RecursionError: nested beyond the stack
        raise _Damaged(f"is not valid JSON (truncated or corrupt: {str(err)[:200]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _Damaged(f"is not a fastnn tuning file (no \"format\": \"{FORMAT}\")")
    if doc.get("version") != FORMAT_VERSION:
        raise _Damaged(f"has format version {doc.get('version')!r}; this fastnn reads "
                       f"version {FORMAT_VERSION}")
    payload = {k: v for k, v in doc.items() if k != "checksum"}
    if doc.get("checksum") != _checksum(payload):
        raise _Damaged("fails its checksum (edited or damaged since fastnn wrote it)")
    entries = doc.get("entries")
    if not isinstance(entries, dict):
        raise _Damaged("has no \"entries\" object")
    return entries


def _valid_blocking(entry: object, mr: int, nr: int) -> tuple[int, int, int]:
    """(kc, nc, mc) of an ISA's entry, checked as set_blocking would and against the
    kernel's MR x NR (a blocking tuned for another microkernel shape is not this one's)."""
    if not isinstance(entry, dict):
        raise _Damaged("has an ISA entry that is not an object")
    if (entry.get("mr"), entry.get("nr")) != (mr, nr):
        raise LookupError  # tuned for another kernel shape: stale, not damaged
    values = []
    for name, hi in _LIMITS.items():
        v = entry.get(name)
        if type(v) is not int or not 1 <= v <= hi:
            raise _Damaged(f"has {name} = {v!r}; expected an int in [1, {hi}]")
        values.append(v)
    kc, nc, mc = values
    if nc % nr or mc % mr:
        raise _Damaged(f"has nc = {nc}, mc = {mc}; expected multiples of NR = {nr}, MR = {mr}")
    return kc, nc, mc


def _warn(path: str, reason: str) -> None:
    warnings.warn(f"fastnn: ignoring the tuning file {path}: it {reason}; the cache model's "
                  "blocking stays (`fastnn tune` rewrites the file)", RuntimeWarning, stacklevel=3)


def load(path: str | os.PathLike | None = None) -> list[str]:
    """Apply the tuning file's blockings for this CPU (``source="tuned"``), every ISA it
    lists that this CPU runs; returns those ISAs. A damaged file warns (RuntimeWarning) and
    changes nothing; a file without an entry for this CPU, or an ISA entry tuned for another
    microkernel shape (MR x NR, an older fastnn), is silently unused. Called by
    ``import fastnn`` unless ``FASTNN_TUNING=off``; never raises for the file's content."""
    path = (_default_path() if path is None
            else os.path.expanduser(_path_text(path, "tuning.load: path")))
    try:
        entries = _read(path)
        if entries is None:
            return []
        entry = entries.get(cpu_key())
        if entry is None:
            return []
        isas = entry.get("isas") if isinstance(entry, dict) else None
        if not isinstance(isas, dict):
            raise _Damaged("has an entry for this CPU without an \"isas\" object")
        chosen = {}
        for isa in _C.supported_isas():
            if isa in isas:
                info = _C.blocking(isa)
                try:
                    chosen[isa] = _valid_blocking(isas[isa], info["mr"], info["nr"])
                except LookupError:
                    pass
    except _Damaged as err:
        _warn(path, str(err))
        return []
    for isa, (kc, nc, mc) in chosen.items():  # all valid: apply all or none
        _C.set_blocking(kc, nc, mc, source="tuned", isa=isa)
        _applied[isa] = (path, (kc, nc, mc))
    return list(chosen)


def _load_at_import() -> None:
    switch = os.environ.get("FASTNN_TUNING", "").strip(" \t\n\r\f\v").lower()  # as __init__
    if switch in ("off", "0", "false", "no"):  # as the other FASTNN_ switches read them
        return
    if switch not in ("", "on", "1", "true", "yes"):
        warnings.warn(f"FASTNN_TUNING={os.environ['FASTNN_TUNING']!r} is not 'on' or 'off'; "
                      "the tuning file is used", RuntimeWarning, stacklevel=3)
    try:
        path = _default_path()
    except RuntimeError:  # no home folder, so no file there (tune() says what to set)
        return
    try:
        load(path)
    except Warning:  # load's own warning, made an error by -W error: it says why already
        raise
    except Exception as err:  # import never fails because of the file
        _warn(path, f"could not be applied ({type(err).__name__}: {err})")


def applied_file(blocking: dict) -> str | None:
    """The tuning file that ``blocking`` (a ``_C.blocking()`` dict) came from, or None when
    it is not a blocking loaded from or saved to a file (the model's, an override)."""
    applied = _applied.get(blocking["isa"])
    if blocking["source"] != "tuned" or applied is None:
        return None
    path, values = applied
    return path if values == (blocking["kc"], blocking["nc"], blocking["mc"]) else None


# ----------------------------------------------------------------------------- tuning
def _shapes(shapes: Iterable[Sequence] | None) -> list[tuple[int, int, int, bool, bool]]:
    import numpy as np

    if shapes is None:
        return list(TRAINING_SHAPES)
    out = []
    for shape in shapes:
        s = tuple(shape) if isinstance(shape, (tuple, list)) else ()
        dims, flags = s[:3], s[3:]
        # NumPy's ints and bools too (a shape taken from an array's), stored as Python's
        if (len(s) not in (3, 5)
                or any(isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer))
                       or d < 1 for d in dims)
                or any(not isinstance(f, (bool, np.bool_)) for f in flags)):
            raise ValueError(f"tune: shapes must hold (m, n, k) or (m, n, k, transpose_a, "
                             f"transpose_b) with ints >= 1 and bools; got {shape!r}")
        dims, flags = tuple(int(d) for d in dims), tuple(bool(f) for f in flags)
        out.append((*dims, *flags) if flags else (*dims, False, False))
    if not out:
        raise ValueError("tune: shapes is empty; expected at least one (m, n, k)")
    return out


def _canonical(kc: float, nc: float, mc: float, mr: int, nr: int) -> tuple[int, int, int]:
    """Clamped to set_blocking's ranges, nc and mc rounded up to multiples of NR and MR as
    set_blocking rounds them (the GEMM rounds its caps alike, so this changes no product)."""
    def fit(v: float, multiple: int, hi: int) -> int:
        return -(-max(1, min(hi // multiple * multiple, int(v))) // multiple) * multiple
    return max(1, min(_LIMITS["kc"], int(kc))), fit(nc, nr, _LIMITS["nc"]), fit(mc, mr, _LIMITS["mc"])


def candidates(model: tuple[int, int, int], mr: int, nr: int,
               largest: tuple[int, int, int] | None = None) -> list[tuple[int, int, int]]:
    """Blockings around the model's (kc, nc, mc): kc x {0.5, 0.75, 1, 1.5, 2}, nc x {0.5, 1,
    2, 4}, mc x {1, 4}, clamped, rounded as set_blocking rounds, deduplicated; the model's
    first, then by distance from it (a short budget keeps the nearest). With ``largest``,
    the largest (k, n, m) timed, a candidate that runs every product as a nearer one does
    (both blocks as large as the products or larger) is left out."""
    kc0, nc0, mc0 = model
    distance: dict[tuple[int, int, int], float] = {}
    for fk in (1, 0.75, 1.5, 0.5, 2):
        for fn in (1, 0.5, 2, 4):
            for fm in (1, 4):
                c = _canonical(kc0 * fk, nc0 * fn, mc0 * fm, mr, nr)
                d = abs(math.log(fk)) + abs(math.log(fn)) + abs(math.log(fm))
                distance[c] = min(d, distance.get(c, d))
    chosen: dict[tuple[int, ...], tuple[int, int, int]] = {}
    for c in sorted(distance, key=lambda c: distance[c]):
        seen_as = tuple(map(min, c, largest)) if largest else c
        chosen.setdefault(seen_as, c)
    return list(chosen.values())


class _Bar:
    """tqdm on stderr when installed and stderr is a terminal (or a notebook), else one line
    redrawn on a terminal's stderr; nothing on a file or a pipe."""

    def __init__(self, total: int, enabled: bool) -> None:
        from .train import _is_terminal, _tqdm

        self.total, self.done = total, 0
        tqdm = _tqdm(sys.stderr) if enabled else None
        self._tqdm = tqdm(total=total, desc="fastnn tune", file=sys.stderr, leave=False) \
            if tqdm else None
        self._line = enabled and tqdm is None and _is_terminal(sys.stderr)

    def step(self, note: str) -> None:
        self.done += 1
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(note, refresh=False)
            self._tqdm.update(1)
        elif self._line:
            sys.stderr.write(f"\rfastnn tune: {self.done}/{self.total} {note}   ")
            sys.stderr.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._line:
            sys.stderr.write("\n")


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path``.lock (POSIX flock) while the file is read, merged
    and rewritten: tuners of several ISAs (or hosts sharing a home folder) run at once had
    each written back the file it read, the last rename dropping the others' entries.
    Elsewhere the last writer wins."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _path_text(path: object, name: str) -> str:
    """``path`` (a str or os.PathLike) as a str; TypeError naming ``name`` for another type
    (bytes included: the lock file's name is made by adding to it), ValueError for an empty
    one (check_output_path had called it the working folder)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike (a file name); got "
                        f"{type(path).__name__} {path!r:.100}"
                        + (" (decode it: os.fsdecode(path))" if isinstance(path, bytes) else ""))
    text = os.fspath(path)
    if not isinstance(text, str):  # a PathLike of bytes
        raise TypeError(f"{name} must name a file as a str; got {type(path).__name__} whose "
                        f"os.fspath is {type(text).__name__} {text!r:.100}")
    if not text:
        raise ValueError(f"{name} is empty; give a file name (such as 'tuning.json')")
    return text


def _check_writable(path: str, given: bool) -> None:
    """Make (or open) the lock file that ``_save`` takes, now: a tuning file whose folder
    takes no file (/proc, a read-only one) had failed after the whole timing, naming the lock
    file only."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        os.close(os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o666))
    except OSError as err:
        origin = ("path" if given else "FASTNN_TUNING_FILE" if os.environ.get("FASTNN_TUNING_FILE")
                  else "the default location")
        raise OSError(err.errno, f"cannot write the tuning file {path!r} (from {origin}): "
                      f"{err.strerror}") from None


def _save(path: str, key: str, cpu: dict, isa: str, record: dict) -> None:
    """Merge this CPU's ISA entry into the file (other CPUs' and ISAs' entries kept; a
    damaged file is replaced, and so is an entry of this CPU that ``load`` would refuse,
    since it applies all of a CPU's entries or none) and write it atomically, under a lock."""
    import json

    from . import __version__
    from .io import write_atomic

    with _locked(path):
        try:
            entries = _read(path) or {}
        except _Damaged as err:
            warnings.warn(f"fastnn.tune: replacing the tuning file {path}: it {err}",
                          RuntimeWarning, stacklevel=3)
            entries = {}
        entry = entries.get(key) if isinstance(entries.get(key), dict) else None
        entry = entry or {"cpu": {k: cpu[k] for k in ("vendor", "model_name", "family",
                                                     "model", "stepping", "cache_spec")}}
        if not isinstance(entry.get("isas"), dict):
            entry["isas"] = {}
        for other in [i for i in entry["isas"] if i != isa and i in _C.supported_isas()]:
            info = _C.blocking(other)
            try:
                _valid_blocking(entry["isas"][other], info["mr"], info["nr"])
            except LookupError:
                pass  # another microkernel shape: unused, as load leaves it
            except _Damaged as err:
                warnings.warn(f"fastnn.tune: dropping the tuning file's {other} entry for "
                              f"this CPU: it {err}", RuntimeWarning, stacklevel=3)
                del entry["isas"][other]
        entry["isas"][isa] = record
        entries[key] = entry
        payload = {"format": FORMAT, "version": FORMAT_VERSION, "fastnn": __version__,
                   "entries": entries}
        doc = {**payload, "checksum": _checksum(payload)}
        write_atomic(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def tune(seconds: float = 60.0, *, shapes: Iterable[Sequence] | None = None,
         threads: int | None = None, progress: bool = True,
         path: str | os.PathLike | None = None) -> dict:
    """Time candidate GEMM blockings around the cache model's on the products training uses,
    for the active ISA, in at most about ``seconds``; save the fastest to the tuning file
    and use it from now on (``source="tuned"``).

    shapes: (m, n, k) or (m, n, k, transpose_a, transpose_b) tuples (default:
    ``TRAINING_SHAPES``, an MLP 784-512-256-10 at batch 128 and 512, and squares 1024 and
    2048). threads: the thread count to time on (default: the current one). progress: a bar
    on stderr (tqdm when installed). path: the file (default: ``tuning_path()``).

    The candidates (``candidates()``) run in rounds, each round every candidate once in a
    shuffled order, so that machine noise hits all alike. A candidate's score is the median
    over rounds of the sum over shapes of seconds per GFLOP (each shape counts alike, not the
    largest alone). The model's own blocking is a candidate, so the winner is never slower
    than it on this measurement.

    Returns {"isa", "cpu_key", "threads", "model", "winner" (each {"kc", "nc", "mc"}),
    "speedup" (model's score / winner's), "candidates", "rounds", "seconds", "path"}.
    """
    import numpy as np

    from ._checks import flag, thread_count

    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
        raise TypeError(f"tune: seconds must be a number; got {type(seconds).__name__} "
                        f"{seconds!r:.100}")
    try:
        seconds = float(seconds)  # numpy's scalars, an int beyond float's range
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"tune: seconds must be a finite number > 0; got {seconds!r}")
    work = _shapes(shapes)
    threads = _C.get_num_threads() if threads is None else thread_count(threads, "threads")
    progress = flag(progress, "tune: progress")
    given = path is not None
    path = _default_path() if path is None else os.path.expanduser(_path_text(path, "tune: path"))
    from .io import check_output_path

    check_output_path(path)  # before the timing, not after it
    _check_writable(path, given)
    isa = _C.get_isa()
    before = _C.blocking(isa)
    mr, nr = before["mr"], before["nr"]
    model = tuple(_C.model_blocking(isa))
    largest = tuple(max(s[i] for s in work) for i in (2, 1, 0))  # k, n, m
    cands = candidates(model, mr, nr, largest)
    base = cands[0]  # the model's, as set_blocking keeps it

    rng = np.random.default_rng(0)
    operands = [(rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32),
                 rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32),
                 np.empty((m, n), np.float32), ta, tb) for m, n, k, ta, tb in work]
    gflop = [2e-9 * m * n * k for m, n, k, _, _ in work]

    def run(blocking: tuple[int, int, int]) -> float:
        _C.set_blocking(*blocking, source="override", isa=isa)
        score = 0.0
        for (a, b, out, ta, tb), g in zip(operands, gflop):
            t0 = time.perf_counter()
            _C.gemm(a, b, out, transpose_a=ta, transpose_b=tb)
            score += (time.perf_counter() - t0) / g
        return score

    old_threads = _C.get_num_threads()
    start = time.perf_counter()
    applied = False
    try:
        _C.set_num_threads(threads)
        run(cands[0])  # warm-up: page in the operands, grow the packing buffers
        per_run = time.perf_counter() - start
        if per_run < seconds / 5:  # else the warm-up's time stands in (a pass took 16 s
            t0 = time.perf_counter()  # on the portable kernel: seconds=1 ran 16.5)
            run(cands[0])
            per_run = time.perf_counter() - t0
        left = seconds - (time.perf_counter() - start)
        # Fewer candidates (the nearest the model's) rather than fewer than _MIN_ROUNDS rounds.
        # (as a float first: seconds=1e308 gave an infinite quotient, which int() refused)
        fit = int(min(left / (per_run * _MIN_ROUNDS), 2**31)) if per_run > 0 else len(cands)
        if fit < 2:
            warnings.warn(f"fastnn.tune: seconds={seconds:g} leaves no time to compare "
                          f"blockings (one pass over the shapes takes {per_run:.2g} s; give at "
                          f"least {(2 * _MIN_ROUNDS + 2) * per_run:.2g} s, or fewer shapes): "
                          "the model's blocking is saved as the result", RuntimeWarning,
                          stacklevel=2)
        cands = cands[:max(1, min(len(cands), fit))]
        rounds = max(1, int(min(_MAX_ROUNDS, left / (per_run * len(cands)))))
        scores: dict[tuple[int, int, int], list[float]] = {c: [] for c in cands}
        bar = _Bar(rounds * len(cands), progress)
        first = time.perf_counter()
        try:
            done = 0
            for r in range(rounds):
                now = time.perf_counter()
                if r and now - start + (now - first) / r > seconds:  # a round would overrun
                    break
                for c in (cands[i] for i in rng.permutation(len(cands))):
                    scores[c].append(run(c))
                    bar.step(f"round {r + 1}/{rounds}")
                done = r + 1
        finally:
            bar.close()
        median = {c: float(np.median(s)) for c, s in scores.items()}
        winner = min(cands, key=lambda c: (median[c], c != base))
        _C.set_blocking(*winner, source="tuned", isa=isa)
        key = cpu_key()
        record = {"kc": winner[0], "nc": winner[1], "mc": winner[2], "mr": mr, "nr": nr,
                  "threads": threads, "rounds": done,
                  "model": dict(zip(("kc", "nc", "mc"), model)),
                  "shapes": [list(s) for s in work],
                  "score_unit": "median over rounds of the sum over shapes of s/GFLOP",
                  "scores": [{"kc": c[0], "nc": c[1], "mc": c[2], "score": median[c]}
                             for c in cands],
                  "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _save(path, key, _C.config()["cpu"], isa, record)
        _applied[isa] = (path, winner)
        applied = True
    finally:
        _C.set_num_threads(old_threads)
        if not applied:  # interrupted or failed: the blocking in use before
            if before["source"] == "model":
                _C.reset_blocking(isa)
            else:
                _C.set_blocking(before["kc"], before["nc"], before["mc"],
                                source=before["source"], isa=isa)
    return {"isa": isa, "cpu_key": key, "threads": threads,
            "model": dict(zip(("kc", "nc", "mc"), model)),
            "winner": dict(zip(("kc", "nc", "mc"), winner)),
            "speedup": median[base] / median[winner],
            "candidates": len(cands), "rounds": done,
            "seconds": time.perf_counter() - start, "path": path}
