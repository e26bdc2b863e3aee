"""Deterministic carve-outs of held-out splits, by a hash of a grouping key.

Whole recordings (STARSS23) or whole source videos (YT-360: every segment of one YouTube
video) move together, so no scene leaks between splits. The choice depends on the set of keys
only, not on their order or on the machine: the ``round(f n)`` keys of lowest sha256 go out.
A fraction above 0 holds out at least one key when there are two or more, so a small corpus
still gets a validation split, and never every key, so the split it comes from keeps one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def held_out_count(n: int, fraction: float) -> int:
    """How many of ``n`` keys ``carve`` holds out: ``round(fraction x n)`` clamped to
    ``[1, n - 1]`` when ``fraction > 0`` (0 when n < 2)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"a held-out fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or n < 2:
        return 0
    return min(max(int(round(fraction * n)), 1), n - 1)


def carve(keys: Iterable[str], fraction: float) -> set[str]:
    """The ``held_out_count(n, fraction)`` distinct keys of lowest sha256."""
    keys = sorted(set(keys), key=key_hash)
    return set(keys[: held_out_count(len(keys), fraction)])
