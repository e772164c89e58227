"""Batch normalization: BatchNorm1d and BatchNorm2d, as torch's."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _C, memory
from .._checks import as_float32, flag, float32_epsilon, number, positive_int
from .layers import _check_grad, _check_same_memory
from .module import Parameter, Workspace, WorkspaceLayer, reserve_parameters


class _BatchNorm(WorkspaceLayer):
    """Normalizes each channel (axis 1) by its mean and variance: in training those of the
    batch (biased), which also move the running statistics by ``momentum`` (toward the
    batch's unbiased variance; ``momentum=None``: their cumulative average), in evaluation
    the running ones; then scales by ``weight`` and shifts by ``bias`` (``affine=True``).
    Parameters ``weight`` and ``bias`` and buffers ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` have torch's names and meaning, so a torch state dict loads
    one-to-one and the running statistics match torch's step for step."""

    _forward_caches = ("_x",)

    _ranks: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(num_features, f"{name}: num_features")
        self.eps = float32_epsilon(eps, f"{name}: eps")
        if momentum is not None:
            momentum = number(momentum, f"{name}: momentum")
            if not 0.0 <= momentum <= 1.0:
                raise ValueError(f"{name}: momentum must be in [0, 1] or None; got {momentum!r}")
        self.momentum = momentum
        self.affine = flag(affine, f"{type(self).__name__}: affine")
        c = self.num_features
        # weight and bias, the running statistics and the count: what a model file holds of it
        reserve_parameters(c * (4 if self.affine else 2) + 1, f"{name}({c})")
        self.weight = Parameter(memory.full(c, 1.0), "weight") if self.affine else None
        self.bias = Parameter(memory.zeros(c), "bias") if self.affine else None
        self.register_buffer("running_mean", memory.zeros(c))
        self.register_buffer("running_var", memory.full(c, 1.0))
        self.register_buffer("num_batches_tracked", memory.zeros((), np.int64))
        self._save_mean, self._save_invstd = memory.zeros(c), memory.zeros(c)
        self._x: np.ndarray | None = None
        self._trained = False  # whether the last forward used the batch's statistics
        self._fused_relu = False  # whether the last forward fused a ReLU

    def _check_input(self, x: Any) -> np.ndarray:
        x = as_float32(x, lambda: f"{self!r} input")
        if x.ndim not in self._ranks or x.shape[1] != self.num_features:
            axes = " or ".join(str(r) for r in self._ranks)
            raise ValueError(f"{self!r}: expected a {axes}-D input with {self.num_features} "
                             f"channels on axis 1; got shape {x.shape}")
        return x

    def _forward(self, x: np.ndarray, workspace: Workspace | None, internal: bool) -> np.ndarray:
        return self._normalize(x, workspace, internal, relu=False)

    def _forward_fused_relu(self, x: np.ndarray, workspace: Workspace | None,
                            internal: bool) -> np.ndarray:
        """The forward pass and a ReLU after it, in one pass over the output: Sequential's,
        for a ReLU layer that follows (CPU arrays). The backward pass then takes the ReLU's
        output gradient and applies the ReLU's derivative itself."""
        return self._normalize(x, workspace, internal, relu=True)

    def _normalize(self, x: np.ndarray, workspace: Workspace | None, internal: bool,
                   relu: bool) -> np.ndarray:
        x = self._check_input(x)
        _check_same_memory(self, x, self.running_mean)
        if memory.is_tensor(x) != memory.is_tensor(self._save_mean) or (
                memory.device_of(x) != memory.device_of(self._save_mean)):  # the statistics' scratch, where x is
            self._save_mean = memory.zeros(self.num_features, like=x)
            self._save_invstd = memory.zeros(self.num_features, like=x)
        if self.training:
            values = x.size // max(self.num_features, 1)
            if values < 2:  # the kernel's own error named no layer
                raise ValueError(f"{self!r}: training needs more than one value per channel (the "
                                 f"batch's variance); got input shape {tuple(x.shape)}: give batches "
                                 "of 2 or more, or call it in evaluation mode (model.eval())")
            momentum = (1.0 / float(self.num_batches_tracked + 1) if self.momentum is None
                        else self.momentum)
        else:
            momentum = 0.0
        y = _C.batchnorm_forward(x, None if self.weight is None else self.weight.data,
                                 None if self.bias is None else self.bias.data,
                                 self.running_mean, self.running_var, self._save_mean,
                                 self._save_invstd, training=self.training, momentum=momentum,
                                 eps=self.eps, relu=relu,
                                 out=self.output(workspace, internal, "output", x.shape))
        if self.training:  # after the call: a failed one counts no batch
            self.num_batches_tracked += 1
        self._x, self._trained, self._fused_relu = x, self.training, relu
        return y

    def _backward(self, grad_out: np.ndarray, workspace: Workspace | None, internal: bool,
                  input_grad: bool) -> np.ndarray | None:
        if self._x is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        g = _check_grad(self, grad_out, self._x.shape)
        grad_weight = grad_bias = None
        beta = 0.0
        if self.affine:
            grad_weight, beta = self.weight.grad_to_write()
            grad_bias, bias_beta = self.bias.grad_to_write()
            if bias_beta != beta:  # one reset alone (weight.zero_grad()): the kernel takes one
                # beta for both, so the reset one is zeroed here and both are added to
                (grad_weight if beta == 0.0 else grad_bias).fill(0.0)
                beta = 1.0
        # a fused ReLU's zeros are found again from x, the weight and the bias
        shift = self.bias.data if self._fused_relu and self.bias is not None else None
        return _C.batchnorm_backward(self._x, g, None if self.weight is None else self.weight.data,
                                     self._save_mean, self._save_invstd, training=self._trained,
                                     grad_weight=grad_weight, grad_bias=grad_bias, beta=beta,
                                     input_grad=input_grad, relu=self._fused_relu, bias=shift,
                                     out=self.output(workspace, internal, "grad_x", self._x.shape))

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) not in self._ranks or input_shape[1] != self.num_features:
            raise ValueError(f"{self!r}: expected a {' or '.join(map(str, self._ranks))}-D input "
                             f"with {self.num_features} channels on axis 1; got {input_shape}")
        return input_shape

    def get_config(self) -> dict:
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine}

    def __repr__(self) -> str:
        extra = "" if self.eps == 1e-5 else f", eps={self.eps:g}"
        extra += "" if self.momentum == 0.1 else f", momentum={self.momentum}"
        extra += "" if self.affine else ", affine=False"
        return f"{type(self).__name__}({self.num_features}{extra})"


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (batch, features) or (batch, channels, length) inputs, as
    ``torch.nn.BatchNorm1d`` (see the base class, ``_BatchNorm``, for what it computes)."""

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (batch, channels, height, width) images, as
    ``torch.nn.BatchNorm2d`` (see the base class, ``_BatchNorm``, for what it computes)."""

    _ranks = (4,)
