"""What every example shares: an aligned result table."""

from __future__ import annotations


def print_table(headers: list[str], rows: list[list[str]], left: int = 1) -> None:
    """Columns aligned: the first ``left`` to the left, the others to the right."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    fmt = lambda r: "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    print(fmt(headers))
    print("-" * len(fmt(headers)))
    for r in rows:
        print(fmt(r))
