"""Figures as PNG files and as matplotlib Figures (the ``plot`` extra); nothing opens a window.

Every function takes what the library returns (a History, a Comparison, a range-test
result, a confusion matrix) and a path, writes the PNG file there and returns the
matplotlib ``Figure``, whose ``path`` attribute is the file written: a notebook shows the
returned figure inline. With path=None nothing is written (``fig.path`` is None). Every
figure has a title (a default one unless ``title`` is given). Runs drawn together each
get their own (colour, line style) pair, up to 80 runs, and their legend sits outside
the axes, where it covers no curve.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(rows: int, cols: int, width: float = 5.0, height: float = 3.6):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError('plots need matplotlib: pip install "fastnn-learn[plot]"') from e
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _epoch_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


_LINE_STYLES = ("-", "--", ":", "-.")


def _run_style(k: int) -> dict:
    """The k-th run's colour and line style: the ten tab10 colours, then the ten again with
    the next line style; after 40 runs the same with tab20's lighter shade of each colour,
    so that no two of 80 runs look alike."""
    from matplotlib import colormaps
    # tab20's even entries are tab10's colours, its odd ones their lighter shades.
    return {"color": colormaps["tab20"](2 * (k % 10) + (k // 40) % 2),
            "linestyle": _LINE_STYLES[(k // 10) % len(_LINE_STYLES)]}


def _figure_path(path: str | Path) -> Path:
    """The file ``savefig`` writes for ``path``: with no suffix, ``.png`` added (as savefig
    adds it); a folder, or a path ending in a separator (which Path() drops: "figs/" had
    been written as "figs.png"), is a ValueError."""
    p = Path(path).expanduser()
    text = os.fspath(path)
    if p.is_dir() or text.endswith(os.sep) or (os.altsep and text.endswith(os.altsep)):
        raise ValueError(f"{path} is a folder; give a file name such as {p / 'curves.png'}")
    return p if p.suffix else p.with_name(p.name + ".png")


def _class_names(classes: Sequence[str] | None, n: int, owner: str) -> list[str]:
    """``classes`` as a list of at least ``n`` names (the labels shown), or "0" .. "n-1" for
    None; a list too short had been an IndexError, naming nothing."""
    if classes is None:
        return [str(i) for i in range(n)]
    names = [str(c) for c in classes]
    if len(names) < n:
        raise ValueError(f"{owner}: classes holds {len(names)} names; the labels need {n} "
                         f"(0 .. {n - 1})")
    return names


def _save(fig: Figure, path: str | Path | None, title: str) -> Figure:
    """Title the figure, write it to ``path`` (unless None) and return it, ``fig.path`` set."""
    fig.suptitle(title)
    fig.path = None if path is None else _figure_path(path)
    if fig.path is not None:
        fig.path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(fig.path, dpi=100)  # the Agg canvas: a file, never a window
    return fig


def training_curves(history: Any, path: str | Path | None = None, title: str = "") -> Figure:
    """Loss and accuracy per epoch, training and validation, side by side."""
    h = history.history if hasattr(history, "history") else history
    metrics = [m for m in ("loss", "accuracy") if m in h]
    if not metrics:  # matplotlib's own error for a 1 x 0 grid named nothing
        raise ValueError(f"training_curves: the history has no 'loss' or 'accuracy' to draw; "
                         f"got keys {sorted(h)[:10] if hasattr(h, 'keys') else type(h).__name__}")
    fig, axes = _figure(1, len(metrics))
    for ax, metric in zip(axes[0], metrics):
        epochs = np.arange(1, len(h[metric]) + 1)
        # markers: a one-epoch run's single points had drawn nothing but the legend
        ax.plot(epochs, h[metric], marker="o", markersize=3, label=f"train {metric}")
        if f"val_{metric}" in h:
            ax.plot(epochs, h[f"val_{metric}"], marker="o", markersize=3,
                    label=f"validation {metric}")
        if not np.all(np.isfinite(np.asarray(h[metric], dtype=float))):  # drawn as a gap
            ax.text(0.5, 0.5, f"{metric} not finite (diverged)", transform=ax.transAxes,
                    ha="center", color="red")
        _epoch_axis(ax)
        if len(epochs) == 1:  # around the one point, not 0.945 .. 1.05
            ax.set_xlim(0.5, 1.5)
            ax.set_xticks([1])
        ax.set_ylabel(metric)
        ax.legend()
    return _save(fig, path, title or "training curves")


def comparison(result: Any, path: str | Path | None = None, title: str = "") -> Figure:
    """The runs of ``experiments.compare``: training loss (log scale) and validation
    accuracy per epoch, one line per run, each its own colour and line style; a diverged
    run is drawn with crosses and its label says "(diverged)", a run at chance says
    "(chance)"."""
    # Tall enough for the legend's column, one line per run.
    fig, axes = _figure(1, 2, width=6.0, height=max(3.6, 0.8 + 0.2 * len(result.runs)))
    loss_ax, acc_ax = axes[0]
    for k, run in enumerate(result.runs):
        h = run.history.history
        label = run.label if run.status == "ok" else f"{run.label} ({run.status})"
        # Markers keep a run visible that diverged in its first epoch (a single point).
        style = {**_run_style(k), "marker": "x" if run.diverged else "o", "markersize": 3,
                 "label": label}
        finite = [v if math.isfinite(v) else np.nan for v in h["loss"]]
        loss_ax.plot(np.arange(1, len(finite) + 1), finite, **style)
        if "val_accuracy" in h:
            acc_ax.plot(np.arange(1, len(h["val_accuracy"]) + 1), h["val_accuracy"], **style)
    loss_ax.set_yscale("log")
    loss_ax.set_title("training loss")
    acc_ax.set_title("validation accuracy")
    for ax in (loss_ax, acc_ax):
        _epoch_axis(ax)
    runs = len(result.runs)
    fig.legend(*loss_ax.get_legend_handles_labels(), loc="outside right upper",
               fontsize="small")
    return _save(fig, path, title or f"{runs} run{'s' * (runs != 1)} compared")


def lr_range(result: Any, path: str | Path | None = None, title: str = "") -> Figure:
    """The learning-rate range test: smoothed loss against the learning rate."""
    fig, axes = _figure(1, 1)
    ax = axes[0][0]
    ax.plot(result.lrs, result.losses)
    ax.axvline(result.suggested_lr, color="C3", linestyle="--",
               label=f"suggested lr {result.suggested_lr:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path, title or "learning-rate range test")


def gradient_flow(history: Any, path: str | Path | None = None, metric: str = "grad_norm",
                  title: str = "") -> Figure:
    """Per-layer gradient norm (or another diagnostic) over the epochs, log scale: the
    picture of vanishing or exploding gradients. Needs fit(..., diagnostics=True)."""
    diagnostics = getattr(history, "diagnostics", None)
    if not diagnostics:
        raise ValueError("the History has no diagnostics: train with fit(..., diagnostics=True)")
    fig, axes = _figure(1, 1, width=6.0)
    ax = axes[0][0]
    drawn = [(layer, values[metric]) for layer, values in diagnostics.items()
             if metric in values]  # dead/saturated fractions exist only for some activations
    if not drawn:  # an empty figure had been written
        recorded = sorted({key for values in diagnostics.values() for key in values})
        raise ValueError(f"gradient_flow: no layer recorded {metric!r}; recorded: {recorded}")
    for k, (layer, values) in enumerate(drawn):
        series = np.asarray(values, dtype=float)
        ax.plot(np.arange(1, len(series) + 1), series, marker="o", label=layer, **_run_style(k))
    ax.set_yscale("log")
    _epoch_axis(ax)
    ax.set_ylabel(metric.replace("_", " "))
    fig.legend(loc="outside right upper", fontsize="small")
    return _save(fig, path, title or f"gradient flow: {metric.replace('_', ' ')} per layer")


def confusion_matrix(matrix: np.ndarray, path: str | Path | None = None,
                     classes: Sequence[str] | None = None, title: str = "") -> Figure:
    """A confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
        # a (3, 5) matrix was drawn as a 3 x 3 grid, its last columns dropped silently
        raise ValueError(f"confusion_matrix: matrix must be square (classes, classes), as "
                         f"fastnn.metrics.confusion_matrix gives; got shape {matrix.shape}")
    n = len(matrix)
    classes = _class_names(classes, n, "confusion_matrix")[:n]  # all a set's names: fine
    fig, axes = _figure(1, 1, width=1.0 + 0.6 * n, height=1.0 + 0.5 * n)
    ax = axes[0][0]
    ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize="small",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _save(fig, path, title or "confusion matrix")


def sample_images(X: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                  path: str | Path | None, image_shape: tuple[int, int],
                  classes: Sequence[str] | None = None, count: int = 25,
                  title: str = "") -> Figure:
    """A grid of images titled with predicted and true labels (red when wrong). Labels, or
    score rows (``model.predict``'s) and one-hot rows, whose argmax is the label.
    image_shape: (height, width), or with colour channels first as the datasets give them,
    (3, height, width), or last, (height, width, 3)."""
    count = min(count, len(X))
    if count < 1:  # the grid's ZeroDivisionError named nothing
        raise ValueError(f"sample_images: nothing to draw: {len(X)} images, count={count}")
    # labels as the metrics read them: score rows (predict's) by argmax, a column of labels
    # or binary scores (int() of a score row had raised "only 0-dimensional arrays ...")
    from . import metrics

    y_true, y_pred = metrics.true_labels(y_true), metrics.predicted_labels(y_pred)
    image_shape = tuple(image_shape)
    channels_first = len(image_shape) == 3 and image_shape[0] in (1, 3, 4) and image_shape[-1] not in (1, 3, 4)
    if classes is not None:
        top = max(int(np.max(y_true[:count])), int(np.max(y_pred[:count])))
        classes = _class_names(classes, top + 1, "sample_images")
    cols = int(math.ceil(math.sqrt(count)))
    rows = int(math.ceil(count / cols))
    fig, axes = _figure(rows, cols, width=1.6, height=1.8)
    name = (lambda c: classes[c]) if classes is not None else str
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= count:
            continue
        image = np.asarray(X[k], dtype=np.float64).reshape(image_shape)
        if channels_first:  # (3, 32, 32) as load("cifar10") gives it: matplotlib's is last
            image = np.moveaxis(image, 0, -1)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if image.ndim == 3:  # colour, scaled into [0, 1] as imshow needs
            low, high = image.min(), image.max()
            ax.imshow((image - low) / (high - low) if high > low else image * 0 + 0.5)
        else:
            ax.imshow(image, cmap="gray_r")
        right = y_true[k] == y_pred[k]
        ax.set_title(f"{name(int(y_pred[k]))}\n(true {name(int(y_true[k]))})", fontsize=7,
                     color="black" if right else "red")
    return _save(fig, path, title or "predicted (true) labels; red: wrong")


def _image_grid(images: Sequence[np.ndarray], labels: Sequence[str], path: str | Path | None,
                title: str, cmap: str, centered: bool) -> Figure:
    """Small images in a near-square grid, each scaled to its own range (around zero when
    centered: a weight's sign is its meaning)."""
    cols = int(math.ceil(math.sqrt(len(images))))
    rows = int(math.ceil(len(images) / cols))
    fig, axes = _figure(rows, cols, width=1.3, height=1.45)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(images):
            continue
        image = np.asarray(images[k], dtype=np.float64)
        if image.ndim == 3:                                  # RGB, scaled into [0, 1]
            low, high = image.min(), image.max()
            ax.imshow((image - low) / (high - low) if high > low else image * 0 + 0.5)
        elif centered:
            limit = float(np.abs(image).max()) or 1.0
            ax.imshow(image, cmap=cmap, vmin=-limit, vmax=limit)
        else:
            ax.imshow(image, cmap=cmap)
        ax.set_title(labels[k], fontsize=7)
    return _save(fig, path, title)


def filters(weight: np.ndarray, path: str | Path | None = None, title: str = "") -> Figure:
    """A convolution's learned filters (``Conv2d.weight``, shape (out, in, kh, kw)), one
    small image each: red-blue around zero for one input channel, colour for three (the
    RGB the filter looks for), the mean over the input channels otherwise."""
    weight = np.asarray(weight)
    if weight.ndim != 4:
        raise ValueError(f"filters: expected a Conv2d weight of shape (out, in, kh, kw); got "
                         f"shape {weight.shape}")
    if weight.shape[0] == 0:  # the grid's ZeroDivisionError named nothing
        raise ValueError(f"filters: the weight holds no filters to draw; got shape {weight.shape}")
    if weight.shape[1] == 3:
        images = list(weight.transpose(0, 2, 3, 1))
    else:
        images = list(weight.mean(axis=1))
    return _image_grid(images, [str(k) for k in range(len(images))], path,
                       title or f"{len(images)} filters", "RdBu_r", centered=True)


def feature_maps(maps: np.ndarray, path: str | Path | None = None,
                 image: np.ndarray | None = None, title: str = "") -> Figure:
    """One image's feature maps (channels, height, width), each on its own colour scale, the
    input image first when given (its shape (h, w), (1, h, w) or (3, h, w))."""
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"feature_maps: expected one image's maps, shape (channels, height, "
                         f"width); got shape {maps.shape}")
    if len(maps) == 0:  # the grid's ZeroDivisionError named nothing
        raise ValueError(f"feature_maps: no channels to draw; got shape {maps.shape}")
    images, labels = list(maps), [f"channel {k}" for k in range(len(maps))]
    if image is not None:
        image = np.asarray(image)
        image = image.transpose(1, 2, 0) if image.ndim == 3 and image.shape[0] == 3 else \
            image.reshape(image.shape[-2:])
        images, labels = [image, *images], ["input", *labels]
    return _image_grid(images, labels, path, title or f"{len(maps)} feature maps", "viridis",
                       centered=False)
