"""The library's global random generator (weight init, shuffling, splits)."""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def seed(n: int) -> None:
    """Reseed the global generator so that initialisation and shuffling are reproducible."""
    global _generator
    _generator = np.random.default_rng(n)


def generator() -> np.random.Generator:
    """The current global generator (read it at use time: ``seed`` replaces it)."""
    return _generator


def resolve(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A generator for ``seed``: the global one for None, a Generator as is, else a new one."""
    return _generator if seed is None else np.random.default_rng(seed)
