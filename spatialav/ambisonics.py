"""First-order ambisonics in ambiX: ACN channel order (W, Y, Z, X), SN3D normalisation.

A plane wave s(t) from unit direction u encodes as (W, Y, Z, X) = s (1, uy, uz, ux). Signals
are ``[..., time, channels]``. Like ``geometry``, every function takes numpy or JAX arrays.
"""

from __future__ import annotations

import numpy as np

from spatialav import geometry
from spatialav.geometry import array_module

W, Y, Z, X = range(4)  # ACN channel indices
XYZ = (X, Y, Z)  # channels holding the x, y, z (front, left, up) dipoles, in that order

PATTERNS = {
    "omni": 1.0,
    "cardioid": 0.5,
    "supercardioid": (np.sqrt(3.0) - 1.0) / 2.0,  # = max-rE for first order
    "max-re": (np.sqrt(3.0) - 1.0) / 2.0,
    "hypercardioid": 0.25,  # = max-DI
    "max-di": 0.25,
}

FORMATS = {"foa": 4, "stereo": 2, "mono": 1}


def _is_concrete(x) -> bool:
    import jax

    return not isinstance(x, jax.core.Tracer)


def check_foa(foa, name: str = "foa"):
    """Validate an ambiX signal ``[..., time, 4]``; returns it as an array."""
    xp = array_module(foa)
    foa = xp.asarray(foa)
    if foa.ndim < 2 or foa.shape[-1] != 4:
        raise ValueError(f"{name} must be [..., time, 4] ambiX (W, Y, Z, X), got shape {foa.shape}")
    if _is_concrete(foa) and not bool(xp.all(xp.isfinite(foa))):
        bad = int(xp.sum(~xp.isfinite(foa)))
        raise ValueError(f"{name} has {bad} non-finite samples (NaN or inf); expected finite audio")
    return foa


def pattern_coefficient(pattern) -> float:
    """The omni weight ``a`` of a named first-order pattern, or a free coefficient in [0, 1]."""
    if isinstance(pattern, str):
        try:
            return PATTERNS[pattern.lower()]
        except KeyError:
            raise ValueError(
                f"unknown beam pattern {pattern!r}; expected one of {sorted(PATTERNS)} "
                "or a coefficient a in [0, 1]"
            ) from None
    a = float(pattern)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"beam coefficient must be in [0, 1], got {a}")
    return a


def encode(signal, az, el):
    """Encode a mono signal ``[..., time]`` as a plane wave from (az, el): ``[..., time, 4]``.

    ``az`` and ``el`` are scalars or broadcast against the signal's leading dims.
    """
    xp = array_module(signal, az, el)
    signal = xp.asarray(signal)
    u = geometry.direction_to_vector(az, el)  # [..., 3]
    gains = xp.stack([xp.ones_like(u[..., 0]), u[..., 1], u[..., 2], u[..., 0]], axis=-1)
    return signal[..., :, None] * gains[..., None, :]


def fuma_to_ambix(fuma):
    """FuMa (W, X, Y, Z; W scaled by 1/sqrt 2) to ambiX (W, Y, Z, X; SN3D)."""
    xp = array_module(fuma)
    fuma = check_foa(fuma, "fuma")
    w, x, y, z = (fuma[..., i] for i in range(4))
    return xp.stack([w * np.sqrt(2.0), y, z, x], axis=-1)


def ambix_to_fuma(foa):
    """ambiX (W, Y, Z, X) to FuMa (W, X, Y, Z; W scaled by 1/sqrt 2)."""
    xp = array_module(foa)
    foa = check_foa(foa)
    w, y, z, x = (foa[..., i] for i in range(4))
    return xp.stack([w / np.sqrt(2.0), x, y, z], axis=-1)


def beam_weights(az, el, pattern="cardioid"):
    """Channel weights ``[..., 4]`` of a first-order beam steered to (az, el), unit gain on axis."""
    xp = array_module(az, el)
    a = pattern_coefficient(pattern)
    u = geometry.direction_to_vector(az, el)
    return xp.stack(
        [xp.full_like(u[..., 0], a), (1 - a) * u[..., 1], (1 - a) * u[..., 2], (1 - a) * u[..., 0]],
        axis=-1,
    )


def beam(foa, az, el, pattern="cardioid"):
    """y = a W + (1 - a)(ux X + uy Y + uz Z): ``[..., time, 4]`` -> ``[..., time]``.

    (az, el) are scalars or broadcast against the leading dims of ``foa``; ``beams`` forms
    several beams per signal.
    """
    xp = array_module(foa, az, el)
    foa = check_foa(foa)
    wts = beam_weights(az, el, pattern)
    return xp.einsum("...tc,...c->...t", foa, wts)


def beams(foa, az, el, pattern="cardioid"):
    """Several beams at once: ``foa [..., time, 4]``, ``az, el [..., K]`` -> ``[..., K, time]``."""
    xp = array_module(foa, az, el)
    foa = check_foa(foa)
    wts = beam_weights(az, el, pattern)  # [..., K, 4]
    return xp.einsum("...tc,...kc->...kt", foa, wts)


def rotate(foa, R):
    """Rotate a sound field by ``R [..., 3, 3]``: [X, Y, Z] <- R [X, Y, Z], W unchanged.

    A source at u moves to R u, exactly as ``geometry.rotate_frame`` moves image content.
    """
    xp = array_module(foa, R)
    foa = check_foa(foa)
    R = xp.asarray(R)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"R must be [..., 3, 3], got shape {R.shape}")
    xyz = foa[..., list(XYZ)]  # explicit (x, y, z) <- (X, Y, Z) channel mapping
    xyz = xp.einsum("...ij,...tj->...ti", R.astype(foa.dtype), xyz)
    return xp.stack([foa[..., W], xyz[..., 1], xyz[..., 2], xyz[..., 0]], axis=-1)


def to_format(foa, fmt: str, look=(0.0, 0.0), mono_pattern="omni"):
    """An input-format variant of an ambiX signal ``[..., time, 4]``.

    ``foa``: unchanged. ``stereo``: two cardioids at +-90 deg from the look direction
    (left first), perpendicular to it in the horizontal plane of the view. ``mono``: the
    omni W, or a beam of ``mono_pattern`` toward the look direction.
    """
    xp = array_module(foa)
    foa = check_foa(foa)
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}; expected one of {sorted(FORMATS)}")
    if fmt == "foa":
        return foa
    az, el = look
    if fmt == "mono":
        if pattern_coefficient(mono_pattern) == 1.0:
            return foa[..., :1]
        return beam(foa, az, el, mono_pattern)[..., None]
    # The ears sit on the view's left/right axis: R(look) applied to +-y.
    R = geometry.rotation_matrix(az, el)
    left = geometry.vector_to_direction(R[..., :, 1])
    right = geometry.vector_to_direction(-R[..., :, 1])
    return xp.stack([beam(foa, *left, "cardioid"), beam(foa, *right, "cardioid")], axis=-1)
