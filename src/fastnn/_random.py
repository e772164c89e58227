"""The library's global random generator (weight init, shuffling, splits)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np

from ._checks import deferred_interrupt

# Made on first use rather than at import: np.random (numpy.random) is a costly import
# that ``import fastnn`` need not pay.
_generator: np.random.Generator | None = None


def is_seed_object(seed: object) -> bool:
    """What np.random.default_rng takes beside an integer, passed on as it is: a Generator,
    BitGenerator or SeedSequence (numpy.random looked up here, not at import: it costs)."""
    return isinstance(seed, (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence))


def check_seed(seed: object, owner: str) -> None:
    """seed an integer >= 0: TypeError/ValueError naming owner otherwise."""
    integer = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    if integer and seed >= 0:
        return
    raise (ValueError if integer else TypeError)(
        f"{owner} must be an integer >= 0 (or None, or a NumPy Generator where one is taken); "
        f"got {type(seed).__name__} {seed!r:.100}")


def seed(n: int | None) -> None:
    """Reseed the global generator so that initialisation and shuffling are reproducible."""
    global _generator
    if n is not None:  # None: fresh entropy, as NumPy takes it
        check_seed(n, "fastnn.seed: n")
    _generator = np.random.default_rng(n)


def generator() -> np.random.Generator:
    """The current global generator (read it at use time: ``seed`` replaces it)."""
    global _generator
    if _generator is None:
        _generator = np.random.default_rng()
    return _generator


def resolve(seed: int | np.random.Generator | None, owner: str = "seed") -> np.random.Generator:
    """A generator for ``seed``: the global one for None, a Generator as is, else a new one
    (``seed`` an integer >= 0; TypeError/ValueError naming ``owner`` otherwise)."""
    if seed is None:
        return generator()
    if not is_seed_object(seed):
        check_seed(seed, owner)
    return np.random.default_rng(seed)


@contextmanager
def global_rng_kept() -> Iterator[None]:
    """Within the block, draws from (or a reseeding of) ``fastnn.seed``'s global generator
    leave it as it was after the block: the user's next draws are those they seeded."""
    state = generator().bit_generator.state
    try:
        yield
    finally:
        with deferred_interrupt():
            generator().bit_generator.state = state
