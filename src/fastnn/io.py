"""Saving and loading models as safetensors files (the ``io`` extra: pip install "fastnn-learn[io]").

``model.save(path)`` writes every parameter and persistent buffer under its ``state_dict``
name ("0.weight", "0.bias", "2.weight", ... the names and shapes of the matching
``torch.nn.Sequential`` of ``torch.nn.Linear`` layers, so weights move between the two
one-to-one; 0-d buffers keep their shape) and, in the
file's metadata, the architecture as JSON. ``fastnn.load(path)`` rebuilds the model from
that JSON and loads the weights: its predictions are bit-identical to the saved model's.
A compiled model's compile settings are saved too, as Keras does: the loss, the metric
names (those given as names) and the optimizer's settings; ``load`` compiles the model
with them, so that ``fastnn.load(path).evaluate(X, y)`` works (files without them, and
those of a model compiled with a loss or optimizer class of your own, load uncompiled).
``include_optimizer=True`` also stores the optimizer's state arrays (as tensors named
"optimizer.<key>") and what the interrupted ``fit`` needs to go on (its shuffling
generator, its ``Augment``'s stream, the epochs done): ``load`` then returns a model whose
next ``fit`` continues exactly where the saved one stopped (see ``fastnn.train.fit``);
without it the loaded optimizer starts afresh.

Saving is crash-safe: the file is written beside the target, flushed to disk (fsync)
and renamed over it, so the target always holds either the old or the new model.

Loading never executes code from the file: the JSON can only name classes of
``fastnn.nn``, ``fastnn.optim`` and ``fastnn.losses``, and nothing is allocated beyond
what the file's size allows. Every damaged, truncated or inconsistent file raises
``InvalidFileError`` (a ValueError) naming the file; a SHA-256 over the tensors and the
metadata catches damage anywhere. BF16 tensors (common in PyTorch files) load as float32.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import socket
import stat
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping

import numpy as np

from . import memory
from ._checks import number
from ._random import global_rng_kept

FORMAT = "fastnn"
OPTIMIZER_PREFIX = "optimizer."
# The safetensors dtypes that load as NumPy arrays (BF16 is converted to float32).
_NUMPY_DTYPES = ("F64", "F32", "F16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8",
                 "BOOL")
_INSTALL = 'saving and loading models needs the safetensors package: pip install "fastnn-learn[io]"'


class InvalidFileError(ValueError):
    """A file that ``fastnn.load``, ``load_weights`` or ``fastnn.datasets.load_idx``
    cannot use: truncated, corrupted, or holding something other than it claims. The
    message names the file and what is wrong."""


def _safetensors() -> Any:
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as err:
        raise ImportError(_INSTALL) from err
    return safetensors


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a new file beside ``path``, fsync it and rename it over ``path``
    (then fsync the directory): a crash leaves either the old file or the new one at
    ``path``. A failed write removes its temporary file, and the temporary file of a
    writer that was killed is removed by the next write to ``path``; writers that overlap
    each write whole files, the last rename wins. Returns the path."""
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


def user_path(path: str | os.PathLike) -> Path:
    """A path a user gave, its leading ``~`` the home folder, as a shell reads it:
    save("~/models/m.safetensors") had made a folder named "~" in the working one. The
    public functions that read or write files take their paths through it, both ways alike.
    A path that ends in a separator names a folder: IsADirectoryError naming it (Path()
    drops the separator, and save("models/") had written a file named "models")."""
    text = os.fspath(path)
    if isinstance(text, str) and _ends_in_separator(text):
        raise IsADirectoryError(f"{text!r} ends with a path separator, as a folder does; "
                                "give a file name")
    return Path(path).expanduser()


def _ends_in_separator(text: str) -> bool:
    return text.endswith(os.sep) or bool(os.altsep and text.endswith(os.altsep))


def check_output_path(path: str | Path) -> Path:
    """``path`` as a file to write, as ``open(path, "w")`` would take it: IsADirectoryError
    for a folder (an empty path is the working folder) or a path that ends in a separator,
    NotADirectoryError where a file stands in the place of a folder on the way,
    FileExistsError for something there that is not a regular file (a FIFO, a device, a
    socket: a rename over it had replaced it, /dev/null included); all name the path given.
    A symbolic link is followed: the file returned, to be written, is its target (a
    dangling link's target is created), so the link stays."""
    text = os.fspath(path)
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{text!r} is a folder; give a file name")
    if _ends_in_separator(text):
        raise IsADirectoryError(f"{text!r} ends with a path separator, as a folder does; "
                                "give a file name")
    if p.is_symlink():
        p = Path(os.path.realpath(p))
        if p.is_symlink():  # a loop: realpath gave up
            raise OSError(errno.ELOOP, f"cannot write {text!r}: too many levels of symbolic links")
        if p.is_dir():
            raise IsADirectoryError(f"{text!r} links to a folder; give a file name")
    if p.exists() and not p.is_file():
        raise FileExistsError(errno.EEXIST, f"cannot write {text!r}: it is not a regular file "
                              "(a FIFO, a device or a socket)")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"cannot write {text!r}: {str(parent)!r} is a "
                                         "file, not a folder")
            break
    return p


_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"  # names this host's temporary files


def _abandoned(partial: Path, host: str | None, pid: str | None) -> bool:
    """Whether a temporary file's writer is gone: one of this host whose process no longer
    exists, another host's after a day, or one named before writers were (no host, no pid)."""
    if host is None:
        return True
    if host != _HOST:
        try:
            return time.time() - partial.stat().st_mtime > 86400
        except OSError:
            return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # another user's; a number no pid can be
        return False
    return False


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """The file that ``write_atomic`` writes, open for writing in pieces (a download):
    ``path`` appears, complete, only when the ``with`` block ends without an exception;
    an exception (a failed check of what was written, say) removes the temporary file
    and leaves ``path`` as it was. ``path`` is taken as given: the public functions expand a
    leading ``~`` (``user_path``) before they read or write. As ``open(path, "w")``: a
    symbolic link's target is written (``check_output_path``), an existing file keeps its
    permissions, and one this process may not write is refused (PermissionError) rather
    than replaced."""
    given = os.fspath(path)
    path = check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None  # a new file: 0o666 less the umask, as open() makes it
    if mode is not None and not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, f"cannot write {given!r}: the file is read-only")
    # A process killed while writing leaves its temporary file, named with its host and pid:
    # the next write removes it once that process is gone (not while it writes: two processes
    # saving one file at once, the ranks of an MPI job tuning, each keep theirs; the last
    # rename wins). Another host's processes cannot be seen from here: its files go after a day.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):
        tag = re.fullmatch(r"(?:(?:([0-9a-f]{8})-)?(\d+)\.)?[0-9a-f]{8}",
                           stale.name[len(path.name) + 2:-len(".partial")])
        if tag and _abandoned(stale, tag.group(1) or (_HOST if tag.group(2) else None), tag.group(2)):
            stale.unlink(missing_ok=True)
    partial = path.parent / f".{path.name}.{_HOST}-{os.getpid()}.{os.urandom(4).hex()}.partial"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:  # named by the path asked for, not by the temporary file's
        raise type(err)(err.errno, f"cannot write {given!r} ({err.strerror})") from None
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _digest(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, and every metadata entry
    but the digest itself, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        h.update(array.tobytes())
    for key in sorted(k for k in metadata if k != "sha256"):
        h.update(json.dumps([key, metadata[key]]).encode())
    return h.hexdigest()


def save(model: Any, path: str | Path, *, include_optimizer: bool = False,
         logs: Mapping[str, float] | None = None) -> Path:
    """Write ``model`` (weights and architecture, and a compiled model's loss, metric names
    and optimizer settings) to ``path`` as safetensors (a leading ``~`` the home folder);
    returns the path.
    include_optimizer=True (a compiled model only) adds the optimizer's state and the
    state of the last ``fit`` (see the module's docstring), for resuming training.
    logs: an epoch's metrics, kept in the metadata (``read_logs``; ``ModelCheckpoint``
    compares a new model with them). The write is crash-safe (``write_atomic``)."""
    from . import nn

    _check_model(model, "save")
    path = user_path(path)
    safetensors = _safetensors()
    # host copies of a model on a device (safetensors.numpy takes NumPy arrays)
    tensors = {name: memory.to_host(value) for name, value in model.state_dict().items()}
    spec = {"class": type(model).__name__, "config": model.get_config()}
    # A class of the user's (a forward of their own), the model's or a layer's inside it: only
    # its weights can be loaded. A layer's was rebuilt as fastnn's class of the same name (a
    # ReLU of one's own came back as nn.ReLU), silently.
    for where, module in model.named_modules():
        if getattr(nn, type(module).__name__, None) is not type(module):
            spec["user_class"] = (f"{type(module).__module__}.{type(module).__qualname__}"
                                  + (f" (layer {where!r})" if where else ""))
            break
    if "user_class" not in spec:  # one's own class ties its weights again itself (load_weights)
        _check_untied(model)
    metadata = {"format": FORMAT, "model": json.dumps(spec)}
    if logs is not None:
        metadata["logs"] = json.dumps(_checked_logs(logs))
    compiled = getattr(model, "compiled", None)
    if include_optimizer and compiled is None:
        raise ValueError("save(include_optimizer=True) needs a compiled model: call "
                         "model.compile(...) first, or save without the optimizer")
    # Without include_optimizer, settings that load could not rebuild (a loss or optimizer
    # class of the user's own) are left out: the file then loads uncompiled.
    if compiled is not None and (include_optimizer or _loadable(compiled)):
        loss = compiled.loss
        training = {
            "optimizer": compiled.optimizer.get_config(),
            "loss": {"class": type(loss).__name__,
                     "config": {k: v for k, v in vars(loss).items() if not k.startswith("_")}},
            "metrics": [m for m in compiled.metric_names if isinstance(m, str)],
            "precision": compiled.precision,
        }
        if include_optimizer:
            if getattr(compiled, "mid_epoch", False):
                warnings.warn(
                    "save(include_optimizer=True) in the middle of an epoch (from a batch "
                    "callback, or after a fit broken off): the weights and the optimizer's "
                    "state are saved, but not the run's position, which only an epoch's end "
                    "has; the loaded model's next fit starts a new run instead of resuming",
                    UserWarning, stacklevel=2)
            elif compiled.run is not None:
                training["run"] = compiled.run
            for key, value in _optimizer_state_in_model_order(model, compiled.optimizer).items():
                if OPTIMIZER_PREFIX + key in tensors:
                    raise ValueError(f"save(include_optimizer=True): the model's "
                                     f"{OPTIMIZER_PREFIX + key!r} and the optimizer's state "
                                     f"{key!r} would share a name in the file; rename the "
                                     "model's submodule 'optimizer'")
                tensors[OPTIMIZER_PREFIX + key] = memory.to_host(value)
        metadata["training"] = json.dumps(training)
    metadata["sha256"] = _digest(tensors, metadata)
    return write_atomic(path, safetensors.numpy.save(tensors, metadata=metadata))


def _check_model(model: Any, owner: str) -> None:
    """TypeError naming ``owner``'s model argument unless it is a fastnn Module (a string
    or None had been an AttributeError on state_dict)."""
    from .nn import Module

    if not isinstance(model, Module):
        raise TypeError(f"{owner}: model must be a fastnn.nn.Module; got "
                        f"{type(model).__name__} {model!r:.100}")


def _checked_logs(logs: Any) -> dict[str, float]:
    """``save``'s logs as {name: float}: a mapping of strings to real numbers; TypeError or
    ValueError naming logs otherwise (a list was an AttributeError, "abc" float()'s error,
    and 10**400 an OverflowError)."""
    if not isinstance(logs, Mapping):
        raise TypeError(f"save: logs must be a mapping of metric names to numbers (an epoch's "
                        f"logs); got {type(logs).__name__} {logs!r:.100}")
    out = {}
    for key, value in logs.items():
        if not isinstance(key, str):
            raise TypeError(f"save: logs' keys must be metric names (strings); got "
                            f"{type(key).__name__} {key!r:.100}")
        try:
            out[key] = number(value, f"save: logs[{key!r}]")
        except OverflowError:  # an int beyond a float's range
            raise ValueError(f"save: logs[{key!r}] is an integer of {int(value).bit_length()} "
                             "bits, beyond a float's range") from None
    return out


def _check_untied(model: Any) -> None:
    """ValueError naming both places where one parameter belongs to two layers (weights tied
    by assignment, or one layer instance at two places): the file's architecture gives each
    layer weights of its own, so load could not rebuild the model (and had blamed the file)."""
    from .nn.module import Parameter

    places: dict[int, str] = {}
    for where, module in model.named_modules():
        for key, value in vars(module).items():
            if isinstance(value, Parameter):
                name = f"{where}.{key}" if where else key
                if id(value) in places and places[id(value)] != name:
                    raise ValueError(f"save: {places[id(value)]!r} and {name!r} are the same "
                                     "parameter (tied weights, or one layer at two places); a "
                                     "file gives every layer weights of its own, so load could "
                                     "not rebuild this model. Build it in a class of your own "
                                     "that ties them (its file then loads with "
                                     "fastnn.io.load_weights)")
                places[id(value)] = name


def _optimizer_state_in_model_order(model: Any, optimizer: Any) -> dict[str, np.ndarray]:
    """The optimizer's state with each parameter's arrays under the index of that parameter
    in ``model.parameters()``, the order load binds the rebuilt model's: the optimizer holds
    them in the order of its bind (layers swapped since had their moments swapped on load),
    and a layer added or removed since is an error here, not a file that load refuses."""
    state = optimizer.state_arrays()
    if not optimizer.params:
        return state
    index = {id(p): j for j, p in enumerate(model.parameters())}
    held = [index.get(id(p)) for p in optimizer.params]
    if None in held or len(set(held)) != len(index):
        raise ValueError("save(include_optimizer=True): the optimizer holds other parameters "
                         f"than the model has now ({len(optimizer.params)} bound at compile, "
                         f"{len(index)} in the model: layers added, removed or replaced since?); compile "
                         "the model again, or save without the optimizer")
    return {key if key == "step" else f"{held[int(key.split('.', 1)[0])]}.{key.split('.', 1)[1]}": value
            for key, value in state.items()}


def _loadable(compiled: Any) -> bool:
    """Whether ``load`` can rebuild the compiled loss and optimizer: classes of
    ``fastnn.losses`` and ``fastnn.optim``, by the name they are saved under."""
    from . import losses, optim

    return all(getattr(module, type(obj).__name__, None) is type(obj)
               for module, obj in ((losses, compiled.loss), (optim, compiled.optimizer)))


def _read(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The metadata and tensors of a safetensors file; InvalidFileError if it is damaged."""
    safetensors = _safetensors()
    path = Path(path)
    if path.is_dir():  # safe_open's OSError said "No such device", naming no path
        raise IsADirectoryError(f"{path} is a folder, not a model file")
    if path.exists() and not path.is_file():  # a device or a FIFO (which would block)
        raise InvalidFileError(f"{path} is not a regular file (a device, FIFO or socket), "
                               "not a model file")
    tensors = {}
    try:
        # safe_open checks the header against the file's size before reading any data.
        with safetensors.safe_open(str(path), framework="np") as f:
            metadata = dict(f.metadata() or {})
            names = list(f.keys())
            dtypes = {name: f.get_slice(name).get_dtype() for name in names}
            bf16 = {name: f.get_slice(name).get_shape() for name in names
                    if dtypes[name] == "BF16"}
            for name in names:
                if name in bf16:
                    continue
                if dtypes[name] not in _NUMPY_DTYPES:
                    raise InvalidFileError(
                        f"{path}: tensor {name!r} has dtype {dtypes[name]}, which fastnn "
                        f"cannot load (it loads {', '.join(_NUMPY_DTYPES)} and BF16)")
                tensors[name] = f.get_tensor(name)
    except safetensors.SafetensorError as err:
        raise InvalidFileError(f"{path} is not a valid safetensors file (truncated or "
                               f"corrupted?): {err}") from err
    except OSError as err:  # safe_open's named no file: "No such device (os error 19)"
        if err.filename is not None or str(path) in str(err):
            raise
        code = re.search(r"\(os error (\d+)\)", str(err))
        errnum = int(code.group(1)) if code else err.errno
        why = os.strerror(errnum) if errnum else str(err)
        if errnum == errno.ENODEV:  # mmap refused: /proc's and /sys's files
            why += " (it cannot be memory-mapped, as a /proc or /sys file: not a model file)"
        raise type(err)(errnum, f"cannot read {str(path)!r}: {why}") from err
    tensors.update(_read_bf16(path, bf16))
    digest = metadata.get("sha256")
    if digest is None and metadata.get("format") == FORMAT:
        raise InvalidFileError(f"{path} is corrupted: its checksum entry is missing")
    if digest is not None and digest != _digest(tensors, metadata):
        raise InvalidFileError(f"{path} is corrupted: its tensors or metadata do not match "
                               "the checksum stored when it was saved")
    return metadata, tensors


def _read_bf16(path: str | Path, shapes: Mapping[str, list[int]]) -> dict[str, np.ndarray]:
    """The BF16 tensors ``shapes`` names, as float32 (numpy has no bfloat16): a bfloat16
    is the high half of a float32. The header was validated by safe_open."""
    if not shapes:
        return {}
    out = {}
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        for name, shape in shapes.items():
            begin, end = header[name]["data_offsets"]
            f.seek(8 + size + begin)
            halves = np.frombuffer(f.read(end - begin), "<u2")
            out[name] = (halves.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return out


def read_logs(path: str | Path) -> dict[str, float] | None:
    """The epoch metrics saved with the model at ``path`` (``save(logs=...)``, as
    ``ModelCheckpoint`` does), or None if it has none."""
    metadata, _ = _read(user_path(path))
    if "logs" not in metadata:
        return None
    logs = _json(metadata, "logs", path)
    out = {}
    for key, value in logs.items():  # save writes floats: a string had failed a comparison later
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidFileError(f"{path}: the logged {key!r} must be a number; got "
                                   f"{value!r:.100}")
        try:
            out[key] = float(value)
        except OverflowError:  # JSON's ints have no bound: 1e400 written as an int
            raise InvalidFileError(f"{path}: the logged {key!r} is an integer beyond a float's "
                                   f"range ({value.bit_length()} bits)") from None
    return out


def _json(metadata: Mapping[str, str], key: str, path: str | Path) -> dict:
    try:
        value = json.loads(metadata[key])
    except (KeyError, ValueError, RecursionError) as err:
        raise InvalidFileError(f"{path}: the metadata entry {key!r} is missing or not valid "
                               "JSON") from err
    return _mapping(value, f"the metadata entry {key!r}", path)


def _mapping(value: Any, what: str, path: str | Path) -> dict:
    if not isinstance(value, dict):
        raise InvalidFileError(f"{path}: {what} must be a JSON object; got {value!r:.200}")
    return value


def _known_class(namespace: Any, spec: Any, base: type, what: str, path: str | Path) -> type:
    name = _mapping(spec, f"the {what}", path).get("class")
    cls = getattr(namespace, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise InvalidFileError(f"{path}: unknown {what} class {name!r:.200} (only classes of "
                               f"{namespace.__name__} can be loaded)")
    return cls


def _optimizer_keys(tensors: Mapping[str, np.ndarray], model: Any) -> list[str]:
    """The file's optimizer state: its "optimizer."-prefixed tensors that are not the model's
    own (a submodule may be named "optimizer"; save refuses a name both would claim)."""
    own = {name for name, _ in model.named_parameters()}  # state_dict's names, not its copies
    own.update(name for name, _ in model.named_buffers(persistent_only=True))
    return [k for k in tensors if k.startswith(OPTIMIZER_PREFIX) and k not in own]


def _load_weights(model: Any, tensors: Mapping[str, np.ndarray], path: str | Path) -> None:
    state = set(_optimizer_keys(tensors, model))
    weights = {k: v for k, v in tensors.items() if k not in state}
    try:
        model.load_state_dict(weights)
    except (TypeError, ValueError) as err:
        raise InvalidFileError(f"{path}: the weights do not fit the model's architecture: "
                               f"{err}") from err


MAX_LAYERS_WITHOUT_WEIGHTS = 10_000  # beyond one layer per 16 weight values the file holds


def _described_layers(spec: Any) -> int:
    """How many layer descriptions (objects with a "class") an architecture holds, walked
    without recursion (a file's nesting is not bounded)."""
    count, stack = 0, [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += "class" in node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def load(path: str | Path) -> Any:
    """The model saved at ``path`` by ``save``, rebuilt with its weights. A model saved
    compiled comes back compiled with the same loss, metrics and optimizer settings; if
    the optimizer was saved (include_optimizer=True), with its state too, and its next
    ``fit`` resumes the saved one. Loading
    leaves ``fastnn.seed``'s generator untouched. InvalidFileError (a ValueError) for any
    damaged or inconsistent file; ImportError without safetensors; OSError if the file
    cannot be read."""
    from . import losses, nn, optim, train
    from .nn.module import parameter_budget

    path = user_path(path)
    metadata, tensors = _read(path)
    if metadata.get("format") != FORMAT:
        raise InvalidFileError(f"{path} holds no fastnn architecture (a safetensors file "
                               "from elsewhere?); build the model and use "
                               "fastnn.io.load_weights(model, path)")
    spec = _json(metadata, "model", path)
    if "user_class" in spec:
        name = spec.get("class")
        raise InvalidFileError(
            f"{path} holds the weights of {spec['user_class']!r}, a model class of your own: "
            "a file cannot hold its code (its forward), so fastnn.load cannot rebuild it. "
            f"Build the model and load the weights into it: model = {name}(...); "
            "fastnn.io.load_weights(model, path)")
    cls = _known_class(nn, spec, nn.Module, "model", path)
    weights = sum(v.size for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX))
    # Layers without weights cost no parameter budget, yet each is an object of ~600 bytes:
    # 3.5 million ReLUs in 70 MB of JSON had taken 2.3 GB and ended in a bare MemoryError
    layers = _described_layers(spec)
    if layers > MAX_LAYERS_WITHOUT_WEIGHTS + weights // 16:
        raise InvalidFileError(f"{path} describes {layers:,} layers for {weights:,} weight "
                               "values, far more than any model of them has (a damaged or "
                               "crafted file); refused before building them")
    # building draws initial weights (overwritten below); the file's weights bound what
    # may be allocated
    try:
        with global_rng_kept(), parameter_budget(weights):
            model = cls.from_config(_mapping(spec.get("config", {}), "the model config", path))
    except (TypeError, ValueError, RecursionError) as err:
        raise InvalidFileError(f"{path}: cannot build the {spec['class']} it describes: "
                               f"{err}") from err
    _load_weights(model, tensors, path)
    if "training" in metadata:
        training = _json(metadata, "training", path)
        loss_spec = training.get("loss")
        loss_cls = _known_class(losses, loss_spec, losses.Loss, "loss", path)
        metrics = training.get("metrics", [])
        if not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)):
            raise InvalidFileError(f"{path}: the saved metrics must be a list of names; got "
                                   f"{metrics!r:.200}")
        if metrics == list(train._DEFAULT_METRICS):
            metrics = train._DEFAULT_METRICS  # as compile's default: quiet where undefined
        state = {k[len(OPTIMIZER_PREFIX):]: tensors[k] for k in _optimizer_keys(tensors, model)}
        try:
            optimizer = optim.from_config(training.get("optimizer"))
            loss = loss_cls(**_mapping(loss_spec.get("config", {}), "the loss config", path))
            model.compile(loss=loss, optimizer=optimizer, metrics=metrics,
                          precision=training.get("precision", "fp32"))
            if state:  # saved with include_optimizer=True
                optimizer.load_state_arrays(state)
            if "run" in training:
                model.compiled.resume = train.RunState.from_json(training["run"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise InvalidFileError(f"{path}: cannot restore the saved training state: "
                                   f"{err!r}") from err
        _check_resumable(model.compiled, path)
    return model


# More optimizer steps than any training takes (146 years at one a nanosecond), with room
# for as many again: the kernels count steps in an int64, which the next fit's steps
# after 2**63 - 2 overflowed ("adam_step: argument 'step' is out of range").
MAX_STEP = 2**62


def _check_resumable(compiled: Any, path: str | Path) -> None:
    """InvalidFileError naming the file and the field for a saved training state that loads
    but that the next ``fit`` could not go on from: an optimizer step past ``MAX_STEP``, an
    Augment stream position (seed, offset) outside [0, 2**64), the range of its counter."""
    step = compiled.optimizer.step_count
    if not 0 <= step <= MAX_STEP:
        raise InvalidFileError(f"{path}: the saved optimizer state's 'step' ({OPTIMIZER_PREFIX}"
                               f"step) is {step}, more steps than any training takes (at most "
                               f"2**62): corrupted?")
    augment = compiled.resume.augment if compiled.resume is not None else None
    for what, value in zip(("seed", "offset"), augment or ()):
        if not 0 <= value < 2**64:
            raise InvalidFileError(f"{path}: the saved fit state's augment {what} is {value}, "
                                   "outside [0, 2**64) (the range of Augment's counter): "
                                   "corrupted?")


def load_weights(model: Any, path: str | Path) -> Any:
    """Load the weights of a safetensors file into an existing ``model`` (in place) and
    return it: a file of ``save``, or one written from a PyTorch model with the same
    layer layout (``safetensors.torch.save_file(torch_model.state_dict(), path)``; BF16
    tensors are converted to float32). InvalidFileError names the missing, unexpected or
    misshapen tensors."""
    _check_model(model, "load_weights")
    path = user_path(path)
    _, tensors = _read(path)
    _load_weights(model, tensors, path)
    return model
