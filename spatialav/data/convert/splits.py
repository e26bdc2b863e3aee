"""Deterministic carve-outs of held-out splits, by a hash of a grouping key.

Whole recordings (STARSS23) or whole source videos (YT-360: every segment of one YouTube
video) move together, so no scene leaks between splits. The choice depends on the set of keys
only, not on their order or on the machine: the ``round(f n)`` keys of lowest sha256 go out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def carve(keys: Iterable[str], fraction: float) -> set[str]:
    """The ``round(fraction x n)`` distinct keys of lowest sha256."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"a held-out fraction must be in [0, 1), got {fraction}")
    keys = sorted(set(keys), key=key_hash)
    return set(keys[: int(round(fraction * len(keys)))])
