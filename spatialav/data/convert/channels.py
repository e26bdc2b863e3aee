"""Declared input channel layouts and their conversion to ambiX (W, Y, Z, X; SN3D).

A layout names what each decoded channel holds, in decoder order: one of ``W``, ``X``, ``Y``,
``Z`` (first-order components) or ``0`` (a channel the format carries but we drop), plus the
normalisation (``sn3d`` = ambiX gains, ``fuma`` = W scaled by 1/√2). Written as a string:
``"X,Y,W,0,Z,0"`` (SN3D) or ``"fuma:W,X,Y,Z"``, or one of the names in ``NAMED``. Datasets
that come with several channel counts declare one layout per count (``pick_layout``).
Whether a declared layout is right is checked against the file and the audio by
``layout_check``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spatialav import ambisonics

NAMED = {
    "ambix": "W,Y,Z,X",  # ACN order, SN3D (STARSS23, YouTube ambiX uploads)
    "fuma": "fuma:W,X,Y,Z",  # Furse-Malham order, W at -3 dB
    # YT-360 (Morgado et al.): the 6-channel AAC decodes as [X, Y, W, 0, Z, 0] (docs/DESIGN.md
    # §2, Real datasets as distributed).
    "yt360": "X,Y,W,0,Z,0",
}
_COMPONENTS = ("W", "Y", "Z", "X")  # ambiX output order
NORMALISATIONS = ("sn3d", "fuma")


@dataclasses.dataclass(frozen=True)
class Layout:
    names: tuple[str, ...]  # per decoded channel: W, X, Y, Z or 0
    normalisation: str = "sn3d"

    def __post_init__(self):
        spec = self.spec
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"channel layout {spec!r}: normalisation must be one of "
                             f"{NORMALISATIONS}, got {self.normalisation!r}")
        bad = [n for n in self.names if n not in (*_COMPONENTS, "0")]
        held = sorted(n for n in self.names if n != "0")
        if bad or held != sorted(_COMPONENTS):
            raise ValueError(f"channel layout {spec!r}: expected each of W, X, Y, Z exactly once "
                             "and otherwise 0 (a dropped channel)")

    @property
    def num_channels(self) -> int:
        return len(self.names)

    @property
    def spec(self) -> str:
        names = ",".join(self.names)
        return names if self.normalisation == "sn3d" else f"{self.normalisation}:{names}"

    @property
    def dropped(self) -> tuple[int, ...]:
        return tuple(i for i, n in enumerate(self.names) if n == "0")

    def to_ambix(self, x: np.ndarray) -> np.ndarray:
        """Decoded audio ``[T, C]`` -> ambiX ``[T, 4]`` float32."""
        if x.ndim != 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"layout {self.spec!r} takes [T, {self.num_channels}] audio, "
                             f"got shape {x.shape}")
        out = x[:, [self.names.index(c) for c in _COMPONENTS]].astype(np.float32)
        if self.normalisation == "fuma":
            out[:, ambisonics.W] *= np.float32(math.sqrt(2.0))
        return out


def parse_layout(text: str) -> Layout:
    """A layout from its string form or a name in ``NAMED``."""
    text = NAMED.get(text.strip().lower(), text.strip())
    norm, _, names = text.rpartition(":")
    return Layout(tuple(n.strip().upper() for n in names.split(",")), norm.lower() or "sn3d")


def ambix_layout(num_channels: int) -> Layout:
    """ACN / SN3D in ``num_channels`` channels: W, Y, Z, X first, the rest (higher orders,
    head-locked stereo) dropped."""
    return Layout((*_COMPONENTS, *["0"] * (num_channels - len(_COMPONENTS))))


def as_argument(layout: Layout) -> str:
    """A layout as a user would pass it: its name in ``NAMED`` if it has one, else its spec."""
    return next((n for n, spec in NAMED.items() if parse_layout(spec) == layout), layout.spec)


def pick_layout(layouts: tuple[Layout, ...], num_channels: int) -> Layout | None:
    """The declared layout for a stream of ``num_channels`` channels, or None."""
    return next((lay for lay in layouts if lay.num_channels == num_channels), None)


def check_layouts(layouts: tuple[Layout, ...]) -> None:
    counts = [lay.num_channels for lay in layouts]
    if not layouts or len(set(counts)) != len(counts):
        raise ValueError("declare one channel layout per channel count, got "
                         f"{[lay.spec for lay in layouts]}")
