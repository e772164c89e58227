"""What every example shares: its command-line options and an aligned result table."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from fastnn import optim


def positive_int(text: str) -> int:
    """An option's integer >= 1 (a usage error otherwise, not a traceback after the parse)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text}")
    return value


def learning_rate(text: str) -> float:
    """An option's learning rate, checked as the optimizers check theirs (optim.check_lr:
    1e-300 passed a "> 0" check here and then failed in the optimizer with a traceback)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0; got {text!r}") from None
    try:
        return optim.check_lr(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63); got {text}")
    return value


def _output_folder(text: str) -> Path:
    """--out: made now, so that a file in its place or a folder no file can be made in is a
    usage error before the example runs, not a traceback after it."""
    path = Path(text).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()  # a folder that exists but takes no file
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot write in the folder {text}: {e.strerror}") from None
    return path


def example_parser(doc: str, quick: str, seed: str) -> argparse.ArgumentParser:
    """--quick, --out and --seed, with the example's own words for --quick and --seed."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--out", type=_output_folder, default=Path(__file__).resolve().parent / "out",
                   help="directory for the figures (default: examples/out)")
    p.add_argument("--seed", type=_seed, default=0, help=seed)
    return p


def print_table(headers: list[str], rows: list[list[str]], left: int = 1) -> None:
    """Columns aligned: the first ``left`` to the left, the others to the right."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    print(fmt(headers))
    print("-" * len(fmt(headers)))
    for r in rows:
        print(fmt(r))


def label_points(ax, xs, ys, labels, colors=None, gap: float = 2.0,
                 marker_radius: float = 4.5) -> list:
    """Write each label beside its point (x, y in data coordinates) so that no label
    overlaps another or covers a point (of ``marker_radius`` points): matplotlib's
    ``annotate`` places each alone, and close points' labels pile up. From the highest point
    down, a label that would overlap moves down below what it overlaps, a thin line joining
    it to its point. The figure's layout is drawn first and then kept fixed, so that moving
    labels cannot move the points. Returns the annotations."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    text_box = Text.get_window_extent  # the label alone: an Annotation's box holds its line

    fig = ax.figure
    notes = [ax.annotate(label, (x, y), textcoords="offset points", xytext=(7, 0),
                         va="center", fontsize="x-small",
                         color=None if colors is None else colors[k],
                         arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5",
                                     "shrinkA": 0, "shrinkB": 3})
             for k, (x, y, label) in enumerate(zip(xs, ys, labels))]
    fig.draw_without_rendering()     # the layout, and each label's size on the canvas
    fig.set_layout_engine("none")
    pixels_to_points = 72.0 / fig.dpi
    r = marker_radius / pixels_to_points
    placed = [Bbox.from_extents(px - r, py - r, px + r, py + r)
              for px, py in ax.transData.transform(np.column_stack([xs, ys]))]
    for note in sorted(notes, key=lambda n: -ax.transData.transform(n.xy)[1]):
        box = text_box(note)
        for _ in range(len(placed)):  # each move clears one placed box at least
            below = [b for b in placed if box.overlaps(b)]
            if not below:
                break
            shift = box.y1 - min(b.y0 for b in below) + gap
            dx, dy = note.xyann
            note.xyann = (dx, dy - shift * pixels_to_points)
            box = text_box(note)
        placed.append(box)
    return notes
