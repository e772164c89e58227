"""What every example shares: its command-line options and an aligned result table."""

from __future__ import annotations

import argparse
from pathlib import Path


def example_parser(doc: str, quick: str, seed: str) -> argparse.ArgumentParser:
    """--quick, --out and --seed, with the example's own words for --quick and --seed."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out",
                   help="directory for the figures (default: examples/out)")
    p.add_argument("--seed", type=int, default=0, help=seed)
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
