"""Devices: where arrays live. NumPy arrays on the CPU; in the CUDA build
(``pip install . -Ccmake.define.FASTNN_CUDA=ON``) also ``fastnn.Tensor`` on the GPU. Models,
layers and training run on the CPU only until the CUDA ops exist; "cuda" for them is refused
with the reason."""
from __future__ import annotations

from typing import Any

CUDA_BUILD_HINT = "pip install . -Ccmake.define.FASTNN_CUDA=ON"


def check_device(device: Any, what: str = "device", needs: str = "ops") -> str:
    """The device named by ``device`` ("cpu", "cuda", "cuda:N"; or an object with ``.type``
    and ``.index``, such as a torch.device), as a string, if this build and machine have it:
    ValueError for a name that is no device (or an index beyond the GPUs), RuntimeError for a
    device this build or machine lacks. ``needs="arrays"``: device memory is enough
    (fastnn.Tensor); ``needs="ops"`` (models, layers, training): the CUDA build has no ops
    yet, which NotImplementedError says."""
    if hasattr(device, "type") and not isinstance(device, str):
        index = getattr(device, "index", None)
        device = device.type if index is None else f"{device.type}:{index}"
    if not isinstance(device, str):
        raise TypeError(f"{what} must be a str such as 'cpu' or 'cuda', got {type(device).__name__}")
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ValueError(f"{what} {device!r} is not a device; expected 'cpu', 'cuda' or 'cuda:N'")
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
        if needs != "arrays":
            raise NotImplementedError(
                f"{what} {device!r}: fastnn's CUDA build has device arrays (fastnn.asarray(x, "
                f"device='cuda'), DLPack) but no ops on them yet (found: "
                f"{cuda.get('device', 'a GPU')}); models and training stay on the CPU")
    return device
