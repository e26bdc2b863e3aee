"""Directions on the sphere, rotations and equirectangular images.

Conventions (docs/DESIGN.md §2 Conventions, fixed): x = front, y = left, z = up; azimuth
counter-clockwise from the front in (-pi, pi], elevation up-positive; unit vector
u = (cos el cos az, cos el sin az, sin el). An equirect frame of width W and height H has
pixel centre (c, r) at az = pi - 2 pi (c + 1/2) / W, el = pi/2 - pi (r + 1/2) / H, so the
image centre is the front and the left of the image is the left.

Every function works on numpy arrays (data workers) and on JAX arrays (inside jit): the
array module is picked from the inputs, so there is one implementation for both. Images are
``[..., H, W, C]`` with channels last; integer images come back in their own dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def array_module(*xs):
    """``jax.numpy`` if any input is a JAX array (or tracer), else ``numpy``."""
    return jnp if any(isinstance(x, jax.Array) for x in xs) else np


def _asarray(xp, x):
    x = xp.asarray(x)
    return x if xp.issubdtype(x.dtype, xp.floating) else x.astype(xp.float32)


def wrap_azimuth(az):
    """Wrap angles to (-pi, pi]."""
    xp = array_module(az)
    az = _asarray(xp, az)
    return xp.pi - xp.mod(xp.pi - az, 2 * xp.pi)


# --- directions ---------------------------------------------------------------------------


def direction_to_vector(az, el):
    """Unit vectors ``[..., 3]`` (x, y, z) for azimuth / elevation in radians."""
    xp = array_module(az, el)
    az, el = _asarray(xp, az), _asarray(xp, el)
    az, el = xp.broadcast_arrays(az, el)
    c = xp.cos(el)
    return xp.stack([c * xp.cos(az), c * xp.sin(az), xp.sin(el)], axis=-1)


def vector_to_direction(v):
    """(azimuth, elevation) in radians of vectors ``[..., 3]`` (need not be unit length)."""
    xp = array_module(v)
    v = _asarray(xp, v)
    if v.shape[-1] != 3:
        raise ValueError(f"vector_to_direction expects [..., 3] vectors, got shape {v.shape}")
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return wrap_azimuth(xp.arctan2(y, x)), xp.arctan2(z, xp.hypot(x, y))


def angular_distance(az1, el1, az2, el2):
    """Great-circle angle in radians between two directions (broadcasting)."""
    xp = array_module(az1, el1, az2, el2)
    u, v = direction_to_vector(az1, el1), direction_to_vector(az2, el2)
    cross = xp.linalg.norm(xp.cross(u, v), axis=-1)
    return xp.arctan2(cross, xp.sum(u * v, axis=-1))  # stable at 0 and pi, unlike arccos


# --- equirectangular mapping ---------------------------------------------------------------


def equirect_to_direction(col, row, width: int, height: int):
    """Direction of (possibly fractional) pixel coordinates; integers are pixel centres."""
    xp = array_module(col, row)
    col, row = _asarray(xp, col), _asarray(xp, row)
    az = xp.pi - 2 * xp.pi * (col + 0.5) / width
    el = xp.pi / 2 - xp.pi * (row + 0.5) / height
    return wrap_azimuth(az), el


def direction_to_equirect(az, el, width: int, height: int):
    """Fractional pixel coordinates (col in [-0.5, W - 0.5), row) of directions."""
    xp = array_module(az, el)
    az, el = _asarray(xp, az), _asarray(xp, el)
    col = xp.mod((xp.pi - az) * width / (2 * xp.pi), width) - 0.5
    row = (xp.pi / 2 - el) * height / xp.pi - 0.5
    return col, row


def equirect_directions(width: int, height: int, xp=np):
    """(az, el), each ``[H, W]``, at every pixel centre of an equirect frame."""
    col, row = xp.meshgrid(xp.arange(width, dtype=xp.float32), xp.arange(height, dtype=xp.float32))
    return equirect_to_direction(col, row, width, height)


# --- rotations -----------------------------------------------------------------------------


def rotation_matrix(yaw, pitch=0.0, roll=0.0):
    """Rotation ``[..., 3, 3]`` acting on direction vectors.

    A source at the front moves to azimuth = yaw, elevation = pitch; roll (applied first,
    about the front axis) turns the left toward up. R = Rz(yaw) Ry(-pitch) Rx(roll).
    """
    xp = array_module(yaw, pitch, roll)
    yaw, pitch, roll = xp.broadcast_arrays(*(_asarray(xp, a) for a in (yaw, pitch, roll)))
    cy, sy = xp.cos(yaw), xp.sin(yaw)
    cp, sp = xp.cos(pitch), xp.sin(pitch)
    cr, sr = xp.cos(roll), xp.sin(roll)
    # Columns are the images of the x (front), y (left) and z (up) axes.
    rows = [
        [cy * cp, -sy * cr - cy * sp * sr, sy * sr - cy * sp * cr],
        [sy * cp, cy * cr - sy * sp * sr, -cy * sr - sy * sp * cr],
        [sp, cp * sr, cp * cr],
    ]
    return xp.stack([xp.stack(r, axis=-1) for r in rows], axis=-2)


def random_rotation(rng: np.random.Generator, size=None) -> np.ndarray:
    """Uniformly distributed rotations (Haar measure) from a numpy generator."""
    shape = () if size is None else ((size,) if np.isscalar(size) else tuple(size))
    q = rng.standard_normal((*shape, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    ).astype(np.float32)


def rotate_vectors(R, v):
    """Apply rotations ``[..., 3, 3]`` to vectors ``[..., 3]``."""
    xp = array_module(R, v)
    return xp.einsum("...ij,...j->...i", _asarray(xp, R), _asarray(xp, v))


# --- sampling equirect images --------------------------------------------------------------


def _check_image(frame, name="frame"):
    if frame.ndim < 3:
        raise ValueError(f"{name} must be [..., H, W, C] (channels last), got shape {frame.shape}")


def sample_equirect(frame, az, el):
    """Bilinearly sample an equirect image at directions.

    ``frame`` is ``[*B, H, W, C]``; ``az`` and ``el`` are ``[*B, *S]`` (the same batch dims);
    returns ``[*B, *S, C]``. Columns wrap at the +-180 deg seam, and a sample that straddles
    a pole is taken from across the pole (row -1 is row 0 shifted by W/2), so there is no
    seam or pole artefact.
    """
    xp = array_module(frame, az, el)
    frame = xp.asarray(frame)
    _check_image(frame)
    batch = frame.shape[:-3]
    h, w, c = frame.shape[-3:]
    az, el = xp.broadcast_arrays(_asarray(xp, az), _asarray(xp, el))
    if az.shape[: len(batch)] != batch:
        raise ValueError(f"directions {az.shape} must start with the frame's batch dims {batch}")
    sample_shape = az.shape[len(batch) :]
    x, y = direction_to_equirect(az.reshape(*batch, -1), el.reshape(*batch, -1), w, h)
    x0, y0 = xp.floor(x), xp.floor(y)
    fx, fy = x - x0, y - y0
    flat = frame.reshape(*batch, h * w, c)
    work = flat.dtype if xp.issubdtype(flat.dtype, xp.floating) else xp.float32

    def gather(yi, xi):
        # Rows past a pole continue on the other side of the sphere, half a turn away.
        over = (yi < 0) | (yi > h - 1)
        yi = xp.where(yi < 0, -1 - yi, xp.where(yi > h - 1, 2 * h - 1 - yi, yi))
        xi = xp.where(over, xi + w // 2, xi)
        idx = (yi.astype(xp.int32) * w + xp.mod(xi, w).astype(xp.int32))[..., None]
        return xp.take_along_axis(flat, idx, axis=-2).astype(work)

    fx, fy = fx[..., None].astype(work), fy[..., None].astype(work)
    out = (
        gather(y0, x0) * (1 - fx) * (1 - fy)
        + gather(y0, x0 + 1) * fx * (1 - fy)
        + gather(y0 + 1, x0) * (1 - fx) * fy
        + gather(y0 + 1, x0 + 1) * fx * fy
    )
    out = out.reshape(*batch, *sample_shape, c)
    return _like(xp, out, frame.dtype)


def _like(xp, out, dtype):
    if xp.issubdtype(dtype, xp.integer):
        info = xp.iinfo(dtype)
        return xp.clip(xp.round(out), info.min, info.max).astype(dtype)
    return out.astype(dtype)


def rotate_frame(frame, R):
    """Rotate an equirect image ``[*B, H, W, C]`` by ``R [*B, 3, 3]``: out(u) = in(R^T u).

    This moves image content the same way ``ambisonics.rotate`` moves a sound field.
    """
    xp = array_module(frame, R)
    frame, R = xp.asarray(frame), _asarray(xp, R)
    _check_image(frame)
    batch = frame.shape[:-3]
    h, w = frame.shape[-3:-1]
    if R.shape[-2:] != (3, 3) or R.shape[:-2] not in ((), batch):
        raise ValueError(f"R must be [3, 3] or {(*batch, 3, 3)}, got {R.shape}")
    az, el = equirect_directions(w, h, xp)
    u = direction_to_vector(az, el)  # [H, W, 3]
    src = xp.einsum("...ji,hwj->...hwi", R, u)  # R^T u
    src = xp.broadcast_to(src, (*batch, h, w, 3))
    return sample_equirect(frame, *vector_to_direction(src))


def _perspective_rays(size, fov, xp):
    """Camera-frame rays ``[h, w, 3]`` of a pinhole camera looking along +x.

    ``fov`` is the horizontal field of view; pixels are square; image right is the
    camera's right (-y) and image up is +z.
    """
    h, w = size
    t = np.tan(fov / 2) if xp is np else xp.tan(fov / 2)
    j = (xp.arange(w, dtype=xp.float32) + 0.5 - w / 2) / (w / 2) * t
    i = (h / 2 - xp.arange(h, dtype=xp.float32) - 0.5) / (w / 2) * t
    jj, ii = xp.meshgrid(j, i)
    return xp.stack([xp.ones_like(jj), -jj, ii], axis=-1)


def _size2(size):
    return (size, size) if np.isscalar(size) else tuple(int(s) for s in size)


def gnomonic_crop(frame, az, el, fov, size):
    """Perspective (gnomonic) view of an equirect image, looking toward (az, el).

    ``frame`` ``[*B, H, W, C]``; ``az``, ``el`` scalars or ``[*B]``; ``fov`` the horizontal
    field of view in radians; ``size`` an int or (height, width). Returns
    ``[*B, height, width, C]``; the crop's centre column is the look direction and its
    left is the viewer's left.
    """
    xp = array_module(frame, az, el)
    frame = xp.asarray(frame)
    _check_image(frame)
    batch = frame.shape[:-3]
    camera = rotation_matrix(
        xp.broadcast_to(_asarray(xp, az), batch), xp.broadcast_to(_asarray(xp, el), batch)
    )
    return camera_crop(frame, camera, fov, size)


def camera_crop(frame, camera, fov, size):
    """Perspective view of an equirect image ``[*B, H, W, C]`` by a camera ``[*B, 3, 3]``
    whose columns are its front, left and up axes in the frame's world coordinates.

    ``gnomonic_crop`` is the camera ``rotation_matrix(az, el)``; ``Rᵀ rotation_matrix(az,
    el)`` crops the frame rotated by R (``rotate_frame``) without resampling it twice.
    """
    xp = array_module(frame, camera)
    frame = xp.asarray(frame)
    _check_image(frame)
    rays = _perspective_rays(_size2(size), fov, xp)  # [h, w, 3]
    world = xp.einsum("...ij,hwj->...hwi", _asarray(xp, camera), rays)
    return sample_equirect(frame, *vector_to_direction(world))


def paste_perspective(frame, image, az, el, fov, alpha=None):
    """Inverse of ``gnomonic_crop``: draw a perspective image onto an equirect frame.

    ``image`` ``[h, w, C]`` is placed as a camera looking toward (az, el) with horizontal
    field of view ``fov`` would see it; ``alpha`` ``[h, w]`` in [0, 1] (default opaque)
    blends it over ``frame`` ``[H, W, C]``. Only the hemisphere in front of the camera is
    touched, so the image distorts correctly near the poles and wraps across the seam.
    Returns the new frame and the coverage ``[H, W]`` (alpha as seen in the frame).
    """
    xp = array_module(frame, image, az, el)
    frame, image = xp.asarray(frame), xp.asarray(image)
    _check_image(frame)
    _check_image(image, "image")
    fh, fw = frame.shape[-3:-1]
    h, w, c = image.shape
    if c != frame.shape[-1]:
        raise ValueError(f"image has {c} channels, frame has {frame.shape[-1]}")
    if alpha is None:
        alpha = xp.ones((h, w), xp.float32)
    # Frame pixel directions into camera coordinates: v = R^T u.
    R = rotation_matrix(az, el)
    u = direction_to_vector(*equirect_directions(fw, fh, xp))
    v = xp.einsum("ji,hwj->hwi", R, u)
    t = np.tan(fov / 2)
    ahead = v[..., 0] > 1e-6
    vx = xp.where(ahead, v[..., 0], 1.0)
    # Image-plane coordinates -> fractional pixel coordinates of ``image``.
    px = -v[..., 1] / vx / t * (w / 2) + w / 2 - 0.5
    py = h / 2 - v[..., 2] / vx / t * (w / 2) - 0.5
    rgba = xp.concatenate([_asarray(xp, image), _asarray(xp, alpha)[..., None]], axis=-1)
    sampled = _bilinear_clamped(rgba, px, py, xp)
    inside = ahead & (px > -1) & (px < w) & (py > -1) & (py < h)
    a = xp.where(inside, sampled[..., -1], 0.0)[..., None]
    out = _asarray(xp, frame) * (1 - a) + sampled[..., :-1] * a
    return _like(xp, out, frame.dtype), a[..., 0]


def _bilinear_clamped(img, x, y, xp):
    """Bilinear sampling of ``img [h, w, C]`` at fractional (x, y), zero outside."""
    h, w = img.shape[:2]
    padded = xp.pad(img, ((1, 1), (1, 1), (0, 0)))  # zero border: fades edges over one pixel
    x = xp.clip(x + 1, 0, w + 1 - 1e-4)
    y = xp.clip(y + 1, 0, h + 1 - 1e-4)
    x0, y0 = xp.floor(x).astype(xp.int32), xp.floor(y).astype(xp.int32)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x1, y1 = xp.minimum(x0 + 1, w + 1), xp.minimum(y0 + 1, h + 1)
    return (
        padded[y0, x0] * (1 - fx) * (1 - fy)
        + padded[y0, x1] * fx * (1 - fy)
        + padded[y1, x0] * (1 - fx) * fy
        + padded[y1, x1] * fx * fy
    )
