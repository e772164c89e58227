"""The library's global random generator (weight init, shuffling, splits)."""

from __future__ import annotations

import numpy as np

# Made on first use rather than at import: np.random (numpy.random) is a costly import
# that ``import fastnn`` need not pay.
_generator: np.random.Generator | None = None


def seed(n: int) -> None:
    """Reseed the global generator so that initialisation and shuffling are reproducible."""
    global _generator
    _generator = np.random.default_rng(n)


def generator() -> np.random.Generator:
    """The current global generator (read it at use time: ``seed`` replaces it)."""
    global _generator
    if _generator is None:
        _generator = np.random.default_rng()
    return _generator


def resolve(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A generator for ``seed``: the global one for None, a Generator as is, else a new one."""
    return generator() if seed is None else np.random.default_rng(seed)
