"""Saving and loading models as safetensors files (the ``io`` extra: pip install "fastnn[io]").

``model.save(path)`` writes every parameter under its ``state_dict`` name ("0.weight",
"0.bias", "2.weight", ... the names and shapes of the matching ``torch.nn.Sequential`` of
``torch.nn.Linear`` layers, so weights move between the two one-to-one) and, in the
file's metadata, the architecture as JSON. ``fastnn.load(path)`` rebuilds the model from
that JSON and loads the weights: its predictions are bit-identical to the saved model's.
``include_optimizer=True`` also stores the loss, the metric names, the optimizer's
settings and its state arrays (as tensors named "optimizer.<key>"), and ``load`` then
returns a compiled model whose training continues exactly where it stopped.

Loading never executes code from the file: the JSON can only name classes of
``fastnn.nn``, ``fastnn.optim`` and ``fastnn.losses``. A truncated or corrupted file, or
weights that do not fit the architecture, raise ValueError saying so; a SHA-256 of the
tensors kept in the metadata catches damage inside the data too.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import _random

FORMAT = "fastnn"
OPTIMIZER_PREFIX = "optimizer."
_INSTALL = 'saving and loading models needs the safetensors package: pip install "fastnn[io]"'


def _safetensors() -> Any:
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as err:
        raise ImportError(_INSTALL) from err
    return safetensors


def _digest(tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def save(model: Any, path: str | Path, *, include_optimizer: bool = False) -> Path:
    """Write ``model`` (weights and architecture) to ``path`` as safetensors; returns the
    path. include_optimizer=True (a compiled model only) adds the loss, the metric names
    and the optimizer's settings and state, for resuming training. The file is written
    beside the target and renamed over it, so an interrupted save never leaves a
    half-written file at ``path``."""
    safetensors = _safetensors()
    path = Path(path)
    tensors = {name: np.ascontiguousarray(value) for name, value in model.state_dict().items()}
    metadata = {"format": FORMAT,
                "model": json.dumps({"class": type(model).__name__,
                                     "config": model.get_config()})}
    if include_optimizer:
        compiled = getattr(model, "_compiled", None)
        if compiled is None:
            raise ValueError("save(include_optimizer=True) needs a compiled model: call "
                             "model.compile(...) first, or save without the optimizer")
        loss = compiled.loss
        metadata["training"] = json.dumps({
            "optimizer": compiled.optimizer.get_config(),
            "loss": {"class": type(loss).__name__,
                     "config": {k: v for k, v in vars(loss).items() if not k.startswith("_")}},
            "metrics": [m for m in compiled.metric_names if isinstance(m, str)],
        })
        for key, value in compiled.optimizer.state_arrays().items():
            tensors[OPTIMIZER_PREFIX + key] = np.ascontiguousarray(value)
    metadata["sha256"] = _digest(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    safetensors.numpy.save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)
    return path


def _read(path: str | Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The metadata and tensors of a safetensors file; ValueError if it is damaged."""
    safetensors = _safetensors()
    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except safetensors.SafetensorError as err:
        raise ValueError(f"{path} is not a valid safetensors file (truncated or corrupted?): "
                         f"{err}") from err
    digest = metadata.get("sha256")
    if digest is not None and digest != _digest(tensors):
        raise ValueError(f"{path} is corrupted: its tensors do not match the checksum "
                         "stored when it was saved")
    return metadata, tensors


def _json(metadata: Mapping[str, str], key: str, path: str | Path) -> dict:
    try:
        value = json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: the metadata entry {key!r} is missing or not valid "
                         "JSON") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path}: the metadata entry {key!r} must be a JSON object; got "
                         f"{metadata[key]!r:.200}")
    return value


def _known_class(namespace: Any, spec: Mapping[str, Any], base: type, what: str,
                 path: str | Path) -> type:
    name = spec.get("class")
    cls = getattr(namespace, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{path}: unknown {what} class {name!r} (only classes of "
                         f"{namespace.__name__} can be loaded)")
    return cls


def _load_weights(model: Any, tensors: Mapping[str, np.ndarray], path: str | Path) -> None:
    weights = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    try:
        model.load_state_dict(weights)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the weights do not fit the model's architecture: "
                         f"{err}") from err


def load(path: str | Path) -> Any:
    """The model saved at ``path`` by ``save``, rebuilt with its weights. If the optimizer
    was saved, the model comes back compiled with the same loss, metrics, optimizer
    settings and optimizer state. Loading leaves ``fastnn.seed``'s generator untouched."""
    from . import losses, nn, optim

    metadata, tensors = _read(path)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} holds no fastnn architecture (a safetensors file from "
                         "elsewhere?); build the model and use "
                         "fastnn.io.load_weights(model, path)")
    spec = _json(metadata, "model", path)
    cls = _known_class(nn, spec, nn.Module, "model", path)
    state = _random.generator().bit_generator.state
    try:
        model = cls.from_config(spec.get("config", {}))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: cannot build the {spec['class']} it describes: "
                         f"{err}") from err
    finally:  # building draws initial weights; they are overwritten below
        _random.generator().bit_generator.state = state
    _load_weights(model, tensors, path)
    if "training" in metadata:
        training = _json(metadata, "training", path)
        loss_spec = training.get("loss", {})
        loss_cls = _known_class(losses, loss_spec, losses.Loss, "loss", path)
        try:
            optimizer = optim.from_config(training["optimizer"])
            model.compile(loss=loss_cls(**loss_spec.get("config", {})), optimizer=optimizer,
                          metrics=training.get("metrics", []))
            optimizer.load_state_arrays(
                {k[len(OPTIMIZER_PREFIX):]: v for k, v in tensors.items()
                 if k.startswith(OPTIMIZER_PREFIX)})
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: cannot restore the saved training state: "
                             f"{err!r}") from err
    return model


def load_weights(model: Any, path: str | Path) -> Any:
    """Load the weights of a safetensors file into an existing ``model`` (in place) and
    return it: a file of ``save``, or one written from a PyTorch model with the same
    layer layout (``safetensors.torch.save_file(torch_model.state_dict(), path)``).
    ValueError names the missing, unexpected or misshapen tensors."""
    _, tensors = _read(path)
    _load_weights(model, tensors, path)
    return model
