"""Callbacks: hooks that ``fit`` calls at the start and end of training and of each epoch."""

from __future__ import annotations

from typing import Any


class Callback:
    """Base class; override the hooks you need.

    ``self.model`` is the model being trained. ``logs`` holds the epoch's metrics
    (loss, accuracy, val_loss, val_accuracy). Setting ``self.model.stop_training = True``
    ends training after the current epoch.
    """

    model: Any = None

    def set_model(self, model: Any) -> None:
        self.model = model

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        """Called once after the last epoch, with the last epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Called before each epoch (counted from 0)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Called after each epoch, validation included, with its metrics."""
