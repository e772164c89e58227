"""Devices: where arrays live. NumPy arrays on the CPU; in the CUDA build
(``pip install . -Ccmake.define.FASTNN_CUDA=ON``) also ``fastnn.Tensor`` on the GPU, where
models train (``model.to("cuda")``, ``fit(..., device="cuda")``) with the layers and losses
that have CUDA kernels (every optimizer has); the others say so by name."""
from __future__ import annotations

from typing import Any

CUDA_BUILD_HINT = "pip install . -Ccmake.define.FASTNN_CUDA=ON"


def check_device(device: Any, what: str = "device") -> str:
    """The device named by ``device`` ("cpu", "cuda", "cuda:N"; or an object with ``.type``
    and ``.index``, such as a torch.device), as a string, if this build and machine have it:
    ValueError for a name that is no device (or an index beyond the GPUs), RuntimeError for a
    device this build or machine lacks."""
    if hasattr(device, "type") and not isinstance(device, str):
        index = getattr(device, "index", None)
        device = device.type if index is None else f"{device.type}:{index}"
    if not isinstance(device, str):
        raise TypeError(f"{what} must be a device name such as 'cpu' or 'cuda' (a str), got "
                        f"{type(device).__name__}")
    kind, sep, index = device.partition(":")
    # ASCII digits only: str.isdigit() took "²" (which int() refused, naming nothing) and
    # int() took other scripts' digits ("cuda:٣" was cuda:3)
    if (kind not in ("cpu", "cuda") or (sep and not (index.isascii() and index.isdecimal()))
            or (kind == "cpu" and index and int(index) != 0)):
        raise ValueError(f"{what} {device!r} is not a device; expected 'cpu', 'cuda' or 'cuda:N'")
    if kind == "cpu":
        return "cpu"  # "cpu:0" too, as torch names the host
    if kind == "cuda":
        from . import _C

        cuda = _C.cuda_info()
        if not cuda["built"]:
            raise RuntimeError(f"{what} {device!r}: this fastnn was built without CUDA; "
                               f"build it with `{CUDA_BUILD_HINT}` on a machine with nvcc")
        if not cuda["available"]:
            raise RuntimeError(f"{what} {device!r}: {cuda['reason']}")
        if index and int(index) >= cuda["device_count"]:
            raise ValueError(f"{what} {device!r}: this machine has {cuda['device_count']} CUDA "
                             "device(s)")
    return device


def check_on_device(model: Any, where: str) -> None:
    """NotImplementedError naming the first module of a model on ``where`` that cannot run there
    yet: one whose backward is derived from a forward of its own (fastnn.functional's recorded
    ops work on NumPy arrays only). Every built-in layer has CUDA kernels; a layer class of
    your own with its own forward and backward is taken as it is (they see the Tensors)."""
    from .nn.module import _records

    for name, module in model.named_modules():
        if _records(module):
            raise NotImplementedError(
                f"{type(module).__name__} ({'layer ' + name if name else 'the model'}) derives its backward from a "
                f"forward of its own (fastnn.functional's recorded ops), which runs on NumPy arrays only: "
                f"it cannot run on {where} yet; a Sequential of built-in layers can")
