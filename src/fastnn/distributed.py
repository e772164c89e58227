"""Data-parallel training across processes and machines, on MPI (mpi4py).

Start the same script in N processes with ``mpirun -np N python train.py``; each process
(a *rank*, 0 to N-1) holds a full copy of the model, trains on its own share of every
batch, and the gradients are averaged across the ranks before each step, so that every
rank takes the same step and the weights stay identical. ``fit(..., distributed=True)``
does all of it; the primitives below are usable alone::

    from fastnn import distributed as dist
    total = dist.all_reduce(np.array([local_count]), op="sum")
    if dist.is_main():
        print(total)

Needs ``pip install "fastnn-learn[mpi]"`` (mpi4py) and an MPI library (OpenMPI:
``apt-get install openmpi-bin libopenmpi-dev``). A process not started by ``mpirun``
works as a world of one (rank 0 of 1), with or without mpi4py, so the same script runs
on a laptop unchanged. Under ``mpirun``, an exception that no code catches on one rank
prints its traceback and aborts the whole job (``MPI_Abort``), so that no rank is left
waiting in a collective.
"""

from __future__ import annotations

import os
import sys
import warnings
import weakref
from typing import Any, Iterator, Sequence

import numpy as np

from . import _C, memory
from .data import _gathered

__all__ = ["all_reduce", "barrier", "broadcast", "init", "is_main", "rank", "world_size"]

_OPS = ("sum", "mean", "max", "min")
# Set by the launchers (OpenMPI's mpirun; MPICH's and Intel MPI's hydra): a process that
# has them was started as one of several, and must not go on alone as a world of one.
_LAUNCHER_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
_INSTALL = ('pip install "fastnn-learn[mpi]" (mpi4py) and an MPI library (OpenMPI: '
            "apt-get install openmpi-bin libopenmpi-dev)")

_comm: Any = None  # mpi4py's COMM_WORLD, or _World1 for a process that mpirun did not start
_MPI: Any = None   # the mpi4py.MPI module when in use
_ALL_REDUCE_KINDS = ("auto", "shared", "ring")


class _World1:
    """The part of mpi4py's communicator that this module uses, for a world of one."""

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def Barrier(self) -> None:
        pass

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj


def _launcher() -> tuple[str, int]:
    """The launcher's variable that says how many processes it started, and that count
    (``("", 1)`` for a process started on its own); ValueError naming the variable for a
    value that is no whole number."""
    for name in _LAUNCHER_SIZE:
        value = os.environ.get(name, "")
        if not value:
            continue
        # ASCII digits only: str.isdigit() took "²" (int() then failed naming nothing)
        # and int() took Arabic-Indic digits
        if not (value.isascii() and value.isdecimal()):
            raise ValueError(f"fastnn.distributed: the environment variable {name} (set by "
                             "mpirun or mpiexec) must be a whole number of processes; "
                             f"got {value!r}")
        return name, int(value)
    return "", 1


def _library(MPI: Any) -> str:
    """mpi4py's MPI library, in a few words ("Open MPI v4.1.4"), for an error message."""
    try:
        return "mpi4py's is " + MPI.Get_library_version().strip().splitlines()[0].split(",")[0]
    except Exception:  # an mpi4py or MPI too old to say
        return "mpi4py's library did not say which it is"


def init() -> None:
    """Join the MPI job this process belongs to (idempotent; every function here calls it).

    Under ``mpirun`` it needs mpi4py and an MPI library, and raises an ImportError that
    says how to install them when either is missing, and a RuntimeError when mpi4py's MPI
    sees another number of processes than the launcher started (mpi4py built against
    another MPI than the launcher's); a process started on its own works as a world of
    one. Under MPI it also makes an uncaught exception abort the whole job
    after printing its traceback (the previous ``sys.excepthook`` still prints it).
    """
    global _comm, _MPI
    if _comm is not None:
        return
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as err:  # no mpi4py, or no libmpi under it
        size = _launcher()[1]
        if size > 1:
            raise ImportError(f"fastnn.distributed: this process is one of {size} started by "
                              f"mpirun, but MPI cannot be used from Python ({err}); "
                              f"{_INSTALL}") from err
        _comm = _World1()
        return
    variable, launched = _launcher()
    size = MPI.COMM_WORLD.Get_size()
    if launched > 1 and size != launched:
        # mpi4py built against another MPI than the launcher's (MPICH's mpiexec with an Open
        # MPI mpi4py): each process would init alone and train as a world of one, silently
        raise RuntimeError(
            f"fastnn.distributed: this process is one of {launched} started by the launcher "
            f"({variable}={launched}), but mpi4py's MPI sees a world of {size}: mpi4py's MPI "
            "is not the launcher's (e.g. MPICH's mpiexec with an Open MPI mpi4py; "
            f"{_library(MPI)}). Start the job with the mpirun of the MPI that mpi4py was "
            "built with (python -c \"import mpi4py; print(mpi4py.get_config())\"), or "
            "reinstall mpi4py against this launcher's MPI (pip install --no-binary mpi4py "
            "--force-reinstall mpi4py)")
    _MPI, _comm = MPI, MPI.COMM_WORLD
    if _comm.Get_size() > 1:
        previous = sys.excepthook

        def abort_job(kind: type, value: BaseException, tb: Any) -> None:
            previous(kind, value, tb)
            sys.stderr.write(f"fastnn.distributed: rank {_comm.Get_rank()} raised; "
                             "aborting the MPI job\n")
            sys.stderr.flush()
            sys.stdout.flush()
            _comm.Abort(1)

        sys.excepthook = abort_job


def rank() -> int:
    """This process's rank, 0 to ``world_size() - 1`` (0 outside ``mpirun``)."""
    init()
    return _comm.Get_rank()


def world_size() -> int:
    """The number of processes in the job (1 outside ``mpirun``)."""
    init()
    return _comm.Get_size()


def is_main() -> bool:
    """Whether this is rank 0, the one that prints and writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank has reached this call."""
    init()
    _comm.Barrier()


def _numeric(array: Any, name: str, root: int | None = None) -> np.ndarray:
    """A C-contiguous copy of ``array``, numbers checked to have the same shape and dtype
    on every rank (``root``'s, when given), else a ValueError on every rank."""
    a = np.array(array, order="C")
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name}: array must hold integers or floats; got dtype {a.dtype}")
    described = _comm.allgather((a.shape, a.dtype.str))
    expected = described[0 if root is None else root]
    if any(d != expected for d in described):
        listed = ", ".join(f"rank {r}: shape {s} dtype {t}" for r, (s, t) in enumerate(described))
        raise ValueError(f"{name}: array must have the same shape and dtype on every rank; "
                         f"got {listed}")
    return a


def all_reduce(array: Any, op: str = "sum") -> np.ndarray:
    """The element-wise ``op`` ("sum", "mean", "max" or "min") of ``array`` over all ranks,
    returned on every rank as a new array (``array`` is left as it is).

    Every rank must pass an array of the same shape and dtype (integers or floats; a
    ValueError on every rank otherwise). "mean" of integers gives float64.
    """
    init()
    if op not in _OPS:
        raise ValueError(f"all_reduce: op must be one of {', '.join(map(repr, _OPS))}; "
                         f"got {op!r}")
    out = _numeric(array, "all_reduce")
    if _MPI is not None and _comm.Get_size() > 1:
        _comm.Allreduce(_MPI.IN_PLACE, out, op=_MPI.MAX if op == "max" else
                        _MPI.MIN if op == "min" else _MPI.SUM)
    if op == "mean":
        out = out / _comm.Get_size() if out.dtype.kind != "f" else \
            np.divide(out, _comm.Get_size(), out=out)
    return out


def broadcast(array: Any, root: int = 0) -> np.ndarray:
    """Rank ``root``'s ``array``, returned on every rank as a new array. Every rank passes
    an array of the same shape and dtype (its values are ignored except on ``root``)."""
    init()
    size = _comm.Get_size()
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < size:
        raise ValueError(f"broadcast: root must be a rank in [0, {size}); got {root!r}")
    out = _numeric(array, "broadcast", int(root))
    if _MPI is not None and size > 1:
        _comm.Bcast(out, root=int(root))
    return out


def _split(m: int, parts: int) -> np.ndarray:
    """Where each of ``parts`` near-equal parts of m things begins, and the end: part i is
    [edges[i], edges[i + 1]), the first parts one shorter where m does not divide."""
    return np.arange(parts + 1) * m // parts


def _weighted_sum(buf: np.ndarray, weights: np.ndarray, received: np.ndarray) -> None:
    """buf <- sum over the ranks r of weights[r] x rank r's buf, in place and bit-identical on
    every rank: a ring all-reduce whose reduction weights as it adds.

    MPI's all-reduce only sums, so weighting first took a pass of its own over the buffer
    (with it, 1.5x MPI_Allreduce's time for a 2 MB gradient, 1.3x for 7.5 MB; 2 ranks on one
    machine);
    here the weights ride on the additions. The buffer is cut into N chunks; in N-1 steps
    each rank passes a chunk to the next (rank r+1), which adds its own weighted chunk
    (MPI_Sendrecv into ``received``, then ``_C.axpby_``), so that after them rank r holds
    chunk r+1 complete; N-1 more steps pass the complete chunks round (the all-gather). Each
    rank sends and receives 2 (N-1)/N of the buffer in 2 (N-1) messages, the bandwidth
    optimum that README's cost model counts. ``weights`` are the same on every rank;
    ``received`` holds at least one chunk."""
    size = _comm.Get_size()
    if size == 1:
        return
    r = _comm.Get_rank()
    nxt, prev = (r + 1) % size, (r - 1) % size
    edges = _split(buf.size, size)
    chunk = [buf[edges[c]:edges[c + 1]] for c in range(size)]
    for step in range(size - 1):
        send, recv = (r - step) % size, (r - step - 1) % size
        into = received[:chunk[recv].size]
        _comm.Sendrecv(chunk[send], dest=nxt, recvbuf=into, source=prev)
        # the first chunk arrives unweighted, from rank prev; later ones are partial sums
        _C.axpby_(chunk[recv], into, weights[r], weights[prev] if step == 0 else 1.0)
    for step in range(size - 1):
        send, recv = (r + 1 - step) % size, (r - step) % size
        _comm.Sendrecv(chunk[send], dest=nxt, recvbuf=chunk[recv], source=prev)


class _RingAllReduce:
    """fit's gradient all-reduce between machines: ``_weighted_sum`` over MPI messages, on
    the optimizer's own gradient buffer."""

    def __init__(self, grad: np.ndarray) -> None:
        self.grad = grad
        self._received = np.empty(-(-grad.size // _comm.Get_size()), np.float32)

    def __call__(self, weights: np.ndarray) -> None:
        _weighted_sum(self.grad, weights, self._received)


class _SharedAllReduce:
    """fit's gradient all-reduce between ranks on one machine, through memory they share.

    Every rank's gradient buffer lives in one MPI shared-memory window
    (``MPI_Win_allocate_shared``), so no message copies it: rank r sums the r-th chunk of
    every rank's gradient, weighted (``_C.axpby_``, in rank order), and writes the sum into
    every rank's r-th chunk, between two barriers. Each rank reads and writes about its
    gradient's size once, as a one-way transfer does, and all ranks work at once; the ring's
    messages instead copy each chunk through MPI's shared-memory queues (1.5x a one-way
    transfer of the same bytes, against 0.75-1.0x here: ``bench/bench_distributed.py``,
    2 ranks). One rank computes each element, so every rank holds the same bits.

    The window lives as long as the process (``_windows``): the parameters' ``grad`` are
    views of it, which a user may keep past the fit."""

    def __init__(self, size: int, node: Any) -> None:
        self._node, ranks = node, node.Get_size()
        nbytes = 4 * size + memory.ALIGNMENT   # room to start on an aligned address
        self._win = _MPI.Win.Allocate_shared(nbytes, 1, comm=node)
        _windows.append(self._win)
        self._win.Lock_all(_MPI.MODE_NOCHECK)  # Win_sync's epoch, open for good
        self.views = []
        for q in range(ranks):
            raw = np.frombuffer(self._win.Shared_query(q)[0], np.uint8)
            skip = -raw.ctypes.data % memory.ALIGNMENT  # the same in every process
            self.views.append(raw[skip:skip + 4 * size].view(np.float32))
        self.grad = self.views[node.Get_rank()]
        # chunks of whole cache lines, so that no two ranks write into one line
        line = memory.ALIGNMENT // 4
        self._edges = np.minimum(_split(-(-size // line), ranks) * line, size)

    def __call__(self, weights: np.ndarray) -> None:
        r = self._node.Get_rank()
        begin, end = self._edges[r], self._edges[r + 1]
        self._win.Sync()
        self._node.Barrier()  # every rank's gradient is written
        if end > begin:
            chunks = [view[begin:end] for view in self.views]
            total = chunks[0]
            _C.axpby_(total, chunks[1], float(weights[0]), float(weights[1]))
            for q in range(2, len(chunks)):
                _C.axpby_(total, chunks[q], 1.0, float(weights[q]))
            for chunk in chunks[1:]:
                np.copyto(chunk, total)
        self._win.Sync()
        self._node.Barrier()  # every chunk is summed before any rank reads its gradient


_windows: list[Any] = []   # the shared windows made, kept until MPI finalizes
_all_reduces: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # optimizer._flat's
_node_comm: Any = None


def _gradient_all_reduce(optimizer: Any) -> _RingAllReduce | _SharedAllReduce:
    """The all-reduce of ``optimizer``'s flat gradient buffer (collective: every rank calls
    it), made at its first distributed fit: through shared memory when every rank runs on
    this machine, else the ring; ``FASTNN_ALLREDUCE=ring|shared`` chooses. The shared one
    moves the gradients into its window (``_Flat.move_grad``)."""
    global _node_comm
    flat = optimizer._flat
    if flat in _all_reduces:
        return _all_reduces[flat]
    kind = os.environ.get("FASTNN_ALLREDUCE", "auto").strip().lower() or "auto"
    if kind not in _ALL_REDUCE_KINDS:
        raise ValueError("FASTNN_ALLREDUCE must be one of "
                         f"{', '.join(_ALL_REDUCE_KINDS)}; got {os.environ['FASTNN_ALLREDUCE']!r}")
    if _node_comm is None:
        _node_comm = _comm.Split_type(_MPI.COMM_TYPE_SHARED, key=_comm.Get_rank())
    one_machine = _node_comm.Get_size() == _comm.Get_size()
    if kind == "shared" and not one_machine:
        raise RuntimeError("FASTNN_ALLREDUCE=shared needs every rank on one machine; this "
                           f"one runs {_node_comm.Get_size()} of the {_comm.Get_size()} ranks "
                           "(unset it, or set ring)")
    reduce: _RingAllReduce | _SharedAllReduce | None = None
    if kind != "ring" and one_machine:
        try:
            reduce = _SharedAllReduce(flat.grad.size, _node_comm)
            failure = ""
        except _MPI.Exception as err:  # no room for the window (a small /dev/shm, /tmp)
            failure = f"rank {_comm.Get_rank()}: {err}"
        failures = [f for f in _comm.allgather(failure) if f]
        if failures:
            if kind == "shared":
                raise RuntimeError("FASTNN_ALLREDUCE=shared: MPI could not allocate the "
                                   f"shared window: {'; '.join(failures)}")
            if _comm.Get_rank() == 0:
                warnings.warn("fastnn.distributed: no shared memory for the gradients "
                              f"({'; '.join(failures)}); all-reducing with MPI messages",
                              RuntimeWarning, stacklevel=3)
            reduce = None
        else:
            flat.move_grad(reduce.grad, optimizer.params)
    if reduce is None:
        reduce = _RingAllReduce(flat.grad)
    _all_reduces[flat] = reduce
    return reduce


def _rank_seed(seed: int, r: int) -> int:
    """Rank r's seed of a random stream whose rank-0 seed is ``seed``: rank 0 keeps it,
    so that a world of one repeats a run without MPI bit for bit."""
    if r == 0:
        return seed
    return int(np.random.SeedSequence([seed, r]).generate_state(1, np.uint64)[0])


class FitSync:
    """What ``fit(..., distributed=True)`` does with MPI, at a few points of its loop.

    On creation: rank 0's weights, buffers, optimizer state and step count, and the state
    of fit's generators (``generators``: the validation split's and the shuffling's, so
    that every rank draws the same permutations), are copied to every rank; Dropout
    layers and an ``Augment`` get per-rank streams derived from rank 0's seeds, whose
    offsets all move on to the furthest rank's after each epoch, so that rank 0's
    checkpoint resumes every rank's streams where they were.

    ``batch_size`` is per rank: a step takes a global batch of ``batch_size`` x
    world_size samples of the epoch's permutation and rank r trains on its r-th share of
    it (the shares differ by at most one sample at the end of an epoch); batch_size=None
    splits the whole set. ``reduce_gradients`` weights each rank's gradient by its share
    and sums them, so the step equals one process's on the global batch.
    """

    def __init__(self, model: Any, optimizer: Any, generators: Sequence[np.random.Generator],
                 augment: Any, settings: dict[str, Any] | None = None) -> None:
        from . import data
        from .nn import Dropout

        init()
        self.rank, self.size = _comm.Get_rank(), _comm.Get_size()
        self.is_main = self.rank == 0
        self.optimizer = optimizer
        flat = optimizer._flat
        if not isinstance(flat.data, np.ndarray):
            raise ValueError("fit(distributed=True) trains on the CPU for now; got a model "
                             f"on {getattr(flat.data, 'device', 'another device')}")
        self.buffers = [b for _, b in model.named_buffers()
                        if isinstance(b, np.ndarray) and b.dtype.kind == "f"]
        self._weights = np.full(self.size, 1.0 / self.size)
        self.streams = [m for _, m in model.named_modules() if isinstance(m, Dropout)]
        if isinstance(augment, data.Augment):
            self.streams.append(augment)
        if self.size == 1:
            return
        # Every rank takes as many steps as rank 0 only if fit's settings agree: ranks given
        # other sample counts, epochs or batch sizes had waited for ever in an all-reduce,
        # and another model had failed in MPI (MPI_ERR_TRUNCATE). Refused on every rank.
        mine = {**(settings or {}), "parameters": int(flat.data.size)}
        everyone = _comm.allgather(mine)
        differ = [k for k in mine if any(other.get(k) != mine[k] for other in everyone)]
        if differ:
            raise ValueError("fit(distributed=True): the ranks must call fit alike, but "
                             + "; ".join(f"{k} is " + ", ".join(f"{other.get(k)!r} on rank {r}"
                                                                 for r, other in enumerate(everyone))
                                         for k in differ))
        self._all_reduce = _gradient_all_reduce(optimizer)
        for array in (flat.data, *optimizer._flat_state.values(), *self.buffers):
            _comm.Bcast(array, root=0)  # C-contiguous, the same shape on every rank
        optimizer.step_count = _comm.bcast(optimizer.step_count)
        for gen in generators:
            gen.bit_generator.state = _comm.bcast(gen.bit_generator.state)
        for stream in self.streams:
            stream.seed = _rank_seed(_comm.bcast(stream.seed), self.rank)
            stream.offset = _comm.bcast(stream.offset)

    def stop_reason(self, reason: str | None) -> str | None:
        """fit's stop on non-finite weights, decided together: the first rank's reason where
        any rank has one (a rank stopping alone had left the others in the next all-reduce)."""
        if self.size == 1:
            return reason
        return next((r for r in _comm.allgather(reason) if r is not None), None)

    def verbose(self, verbose: int) -> int:
        """fit's ``verbose`` on this rank: 0 but on rank 0, where a progress bar (1) becomes
        one line per epoch (2): mpirun hands the ranks a terminal of no width."""
        if not self.is_main:
            return 0
        return 2 if verbose == 1 and self.size > 1 else verbose

    def callbacks(self, callbacks: list[Any]) -> list[Any]:
        """The callbacks this rank runs: all on rank 0; on the others, all but those that
        write files (ModelCheckpoint, CSVLogger, TensorBoard). The logs are reduced across ranks first,
        so the rest (EarlyStopping, schedulers) decide alike on every rank; and a last one
        makes rank 0's ``stop_training`` every rank's, so that a callback given on rank 0
        alone cannot leave the others waiting in the next epoch's all-reduce."""
        from .callbacks import Callback, CSVLogger, ModelCheckpoint, TensorBoard

        class StopTogether(Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                self.model.stop_training = _comm.bcast(bool(self.model.stop_training))

        if not self.is_main:
            callbacks = [cb for cb in callbacks
                         if not isinstance(cb, (CSVLogger, ModelCheckpoint, TensorBoard))]
        return callbacks + [StopTogether()] if self.size > 1 else callbacks

    def share(self, n: int, batch_size: int | None) -> int:
        """How many of an epoch's ``n`` samples this rank trains on."""
        size = n if batch_size is None else batch_size * self.size
        edges = (_split(min(size, n - start), self.size) for start in range(0, n, size))
        return sum(int(e[self.rank + 1] - e[self.rank]) for e in edges)

    def batches(self, X: np.ndarray, y: np.ndarray, batch_size: int | None,
                rng: np.random.Generator | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's share of each global batch of one epoch, shuffled by ``rng``
        (None: in order), drawn as ``fastnn.data.batches`` draws its permutation, gathered
        into the same arrays every step (use each batch before asking for the next)."""
        return _gathered(X, y, self._shards(len(X), batch_size, rng), reuse=True)

    def _shards(self, n: int, batch_size: int | None,
                rng: np.random.Generator | None) -> Iterator[np.ndarray]:
        order = rng.permutation(n) if rng is not None else np.arange(n)
        size = n if batch_size is None else batch_size * self.size
        for start in range(0, n, size):
            idx = order[start:start + size]
            edges = _split(len(idx), self.size)
            begin, end = edges[self.rank], edges[self.rank + 1]
            self._weights = np.diff(edges) / len(idx)
            if begin == end:  # a last global batch smaller than the world: nothing here,
                self._empty_step()  # but this rank still joins the all-reduce and the step
                continue
            yield idx[begin:end]

    def _empty_step(self) -> None:
        opt = self.optimizer
        opt.zero_grad()
        self.reduce_gradients()  # settles the zeros, then adds the other ranks' gradients
        opt.step()
        opt.zero_grad()

    def reduce_gradients(self) -> None:
        """Replace this rank's gradients by the global batch's: its share-weighted sum over
        the ranks (one all-reduce of the optimizer's flat gradient buffer,
        ``_gradient_all_reduce``)."""
        if self.size == 1:
            return
        for p in self.optimizer.params:
            p.settle_grad()  # a parameter that backward left untouched contributes zeros
        self._all_reduce(self._weights)

    def shard(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This rank's contiguous share of (X, y): fit's validation set, split to evaluate."""
        edges = _split(len(X), self.size)
        return X[edges[self.rank]:edges[self.rank + 1]], y[edges[self.rank]:edges[self.rank + 1]]

    def reduce_tally(self, tally: Any) -> dict[str, float]:
        """The logs of a pass (a ``train._Tally``) that each rank made over its share: the
        loss, and the metrics that define ``Metric.merge`` (the built-in ones), exactly
        over every rank's samples; a metric without it as the ranks' results' mean weighted
        by their sample counts."""
        if self.size == 1:
            return tally.logs()
        mine = []
        for metric in tally.metrics:
            state = metric.state()
            mine.append((state, metric.result() if state is None and tally.count else None))
        every = _comm.allgather((tally.loss, tally.count, mine))
        if any(len(e[2]) != len(mine) for e in every):
            raise RuntimeError("fit(distributed=True): the ranks compiled different metrics: "
                               f"{[len(e[2]) for e in every]} of them")
        logs = {"loss": sum(e[0] for e in every) / sum(e[1] for e in every)}
        for i, metric in enumerate(tally.metrics):
            states = [e[2][i][0] for e in every]
            if all(state is not None for state in states):
                metric.merge(states)
                value = metric.result()
            else:
                results = [(e[2][i][1], e[1]) for e in every if e[2][i][1] is not None]
                value = (sum(v * n for v, n in results) / sum(n for _, n in results)
                         if results else None)
            if value is not None:
                logs[metric.name] = float(value)
        return logs

    def end_epoch(self) -> None:
        """Averages the float buffers (BatchNorm's running statistics), so that the ranks
        evaluate alike, and moves the random streams' offsets on to the furthest rank's."""
        if self.size == 1:
            return
        for array in self.buffers:
            _comm.Allreduce(_MPI.IN_PLACE, array, op=_MPI.SUM)
            array /= self.size
        offsets = np.array([stream.offset for stream in self.streams], np.uint64)
        _comm.Allreduce(_MPI.IN_PLACE, offsets, op=_MPI.MAX)
        for stream, offset in zip(self.streams, offsets):
            stream.offset = int(offset)

