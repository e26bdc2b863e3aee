"""Equirect video of a scene: the room as seen from the listener, with sprites composited.

The background is ray-cast from the listener into the shoebox room (floor, ceiling and four
walls with their textures, edges and a window), so it is a function of direction: it is
seamless across the +-180 deg columns and matches the room the audio was rendered in.

Sprites are projected with ``geometry.paste_perspective``. An object does not move during a
clip, so its projection is computed once: pasting the sprite's own pixel-coordinate grid
tells, for every frame pixel it covers, where that pixel lands in the sprite; each animation
frame is then a cheap bilinear gather at those coordinates.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spatialav import geometry
from spatialav.synth.scene import SceneSpec

_SUPERSAMPLE = 2  # background rays per pixel side
BOX_THRESHOLD = 0.5  # a pixel belongs to a sprite's box when its coverage exceeds this


# --- background ----------------------------------------------------------------------------


def _smooth_noise(rng, points, scale: float, n: int = 4):
    """A smooth random field of 3-D points ``[..., 3]``, about unit variance (random sinusoids)."""
    k = (rng.normal(size=(n, 3)) * scale).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    return np.mean(np.sin(points @ k.T + phase), axis=-1) * np.sqrt(2)


def _palette(rng):
    wall = rng.uniform([0.55, 0.5, 0.45], [0.95, 0.92, 0.85])
    floors = [(0.55, 0.36, 0.2), (0.42, 0.42, 0.45), (0.65, 0.58, 0.45), (0.3, 0.35, 0.45)]
    return {
        "walls": np.clip(wall + rng.uniform(-0.1, 0.1, (4, 3)), 0, 1).astype(np.float32),
        "floor": np.float32(floors[rng.integers(len(floors))]) * np.float32(
            rng.uniform(0.85, 1.15)),
        "ceiling": np.float32(rng.uniform(0.85, 0.97)) * np.ones(3, np.float32),
        "floor_kind": rng.choice(["planks", "tiles", "carpet"]),
        "plank": rng.uniform(0.12, 0.25),
        "tile": rng.uniform(0.3, 0.6),
        "stripes": rng.random() < 0.4,
    }


def _ray_hits(spec: SceneSpec, az, el):
    """Where rays from the listener hit the room: (points [..., 3], surface [...], distance).

    Surfaces: 0, 1 the x = 0 / x = Lx walls, 2, 3 the y walls, 4 the floor, 5 the ceiling.
    """
    v = geometry.direction_to_vector(az, el) @ geometry.rotation_matrix(
        np.float32(spec.listener_yaw)).T
    size, p = np.float32(spec.room_size), np.float32(spec.listener)  # float32: speed
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(v > 0, (size - p) / v, np.where(v < 0, -p / v, np.inf))
    axis = np.argmin(t, axis=-1)
    dist = np.take_along_axis(t, axis[..., None], -1)[..., 0]
    surface = 2 * axis + (np.take_along_axis(v, axis[..., None], -1)[..., 0] > 0)
    return p + dist[..., None] * v, surface, dist


def _floor_texture(pal, x, y, noise):
    if pal["floor_kind"] == "planks":
        idx = np.floor(x / pal["plank"])
        shade = 0.85 + 0.3 * np.mod(np.sin(idx * 12.9898 + 7) * 43758.5453, 1.0)  # hash
        return shade * np.where(np.mod(x / pal["plank"], 1.0) < 0.08, 0.6, 1.0)
    if pal["floor_kind"] == "tiles":
        check = (np.floor(x / pal["tile"]) + np.floor(y / pal["tile"])) % 2
        grout = (np.mod(x / pal["tile"], 1) < 0.05) | (np.mod(y / pal["tile"], 1) < 0.05)
        return np.where(grout, 0.55, 0.85 + 0.25 * check)
    return 1.0 + 0.15 * noise  # carpet


def panorama(spec: SceneSpec, height: int, width: int) -> np.ndarray:
    """The room around the listener as an equirect image ``[H, W, 3]`` uint8."""
    rng = np.random.default_rng(spec.visual_seed)
    pal = _palette(rng)
    s = _SUPERSAMPLE
    cols, rows = np.meshgrid((np.arange(width * s) + 0.5) / s - 0.5,
                             (np.arange(height * s) + 0.5) / s - 0.5)
    az, el = geometry.equirect_to_direction(cols, rows, width, height)
    q, surface, dist = _ray_hits(spec, az, el)
    size = np.float32(spec.room_size)
    x, y, z = q[..., 0], q[..., 1], q[..., 2]
    noise = _smooth_noise(rng, q, 4.0)
    # Walls: own colour, optional wallpaper stripes, a dark skirting board.
    along = np.where(surface < 2, y, x)
    wall = 1.0 + 0.06 * noise
    if pal["stripes"]:
        wall = wall * (1 - 0.08 * (np.mod(along / 0.25, 1.0) < 0.5))
    wall = pal["walls"][np.minimum(surface, 3)] * np.where(z < 0.1, 0.45, wall)[..., None]
    floor = pal["floor"] * _floor_texture(pal, x, y, noise)[..., None]
    img = np.where((surface < 4)[..., None], wall,
                   np.where((surface == 4)[..., None], floor, pal["ceiling"]))
    # A window on one wall: a sky gradient behind a cross-shaped frame.
    k = int(rng.integers(4))
    c0 = rng.uniform(0.2, 0.8) * (size[1] if k < 2 else size[0])
    window = (surface == k) & (np.abs(along - c0) < 0.6) & (z > 1.0) & (z < 2.1)
    sky = np.stack([0.45 + 0.2 * (z - 1.0), 0.65 + 0.2 * (z - 1.0), np.full_like(z, 0.95)], -1)
    bar = (np.abs(along - c0) < 0.03) | (np.abs(z - 1.55) < 0.03)
    img = np.where(window[..., None], np.where(bar[..., None], 0.95, sky), img)
    # Ceiling lamp above the room centre.
    lamp = (surface == 5) & (np.hypot(x - size[0] / 2, y - size[1] / 2) < 0.35)
    img[lamp] = 1.0
    # Edges of the room: dark lines about one pixel wide wherever a ray meets two surfaces.
    eps = dist * (np.pi / height) * 0.8
    edge = (np.minimum(q, size - q) < eps[..., None]).sum(-1) >= 2
    img[edge] *= 0.4
    # Light falls off a little with distance; floor and ceiling a touch darker than walls.
    img *= ((1.0 / (1.0 + 0.04 * dist)) * np.where(surface >= 4, 0.95, 1.0))[..., None]
    img = img.reshape(height, s, width, s, 3).mean(axis=(1, 3))
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


# --- sprites -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpriteMap:
    """Where a sprite placed at a direction lands in an equirect frame."""

    pixels: np.ndarray  # [P] flat indices (row * W + col) of the frame pixels it touches
    coords: np.ndarray  # [P, 2] fractional (col, row) in the sprite image
    edge: np.ndarray  # [P] coverage of the sprite's square (fades over its border pixel)


def sprite_map(az: float, el: float, fov: float, size: int, height: int, width: int):
    """Project a ``size``-pixel square sprite looking toward (az, el) with ``fov`` radians."""
    cols, rows = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size,
                                                                          dtype=np.float32))
    out, cover = geometry.paste_perspective(
        np.zeros((height, width, 2), np.float32), np.stack([cols, rows], -1), az, el, fov)
    pixels = np.flatnonzero(cover > 1e-6)
    a = cover.ravel()[pixels]
    # paste_perspective returns a^2 * (alpha-weighted mean of the neighbours' coordinates).
    coords = out.reshape(-1, 2)[pixels] / (a * a)[:, None]
    return SpriteMap(pixels, np.clip(coords, 0, size - 1), a)


def sample_sprites(sprites, coords):
    """Bilinear gather from ``sprites [N, S, S, C]`` at ``coords [P, 2]`` -> ``[N, P, C]``."""
    size = sprites.shape[1]
    x0 = np.minimum(np.floor(coords[:, 0]).astype(int), size - 2)
    y0 = np.minimum(np.floor(coords[:, 1]).astype(int), size - 2)
    fx = (coords[:, 0] - x0)[None, :, None]
    fy = (coords[:, 1] - y0)[None, :, None]
    return (sprites[:, y0, x0] * (1 - fx) * (1 - fy) + sprites[:, y0, x0 + 1] * fx * (1 - fy)
            + sprites[:, y0 + 1, x0] * (1 - fx) * fy + sprites[:, y0 + 1, x0 + 1] * fx * fy)


def composite(background, layers):
    """Draw premultiplied sprite animations over a background.

    ``background [H, W, 3]`` uint8; ``layers``: (SpriteMap, sprites [N, S, S, 4]) back to
    front. Returns frames ``[N, H, W, 3]`` uint8 and, per layer, its coverage ``[N, P]`` of
    the layer's ``pixels``.
    """
    h, w, _ = background.shape
    n = layers[0][1].shape[0] if layers else 1
    frames = np.repeat(background.reshape(1, h * w, 3).astype(np.float32) / 255, n, axis=0)
    coverages = []
    for smap, sprites in layers:
        rgba = sample_sprites(sprites, smap.coords) * smap.edge[None, :, None]
        alpha = rgba[..., 3]
        frames[:, smap.pixels] = frames[:, smap.pixels] * (1 - alpha[..., None]) + rgba[..., :3]
        coverages.append(alpha)
    frames = np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)
    return frames.reshape(n, h, w, 3), coverages


def box_from_pixels(pixels, height: int, width: int):
    """YOLO box (cx, cy, w, h), normalised, of flat pixel indices; None when empty.

    Columns are circular: the box is the shortest column arc holding every pixel, so a
    sprite across the +-180 deg seam gets a box of its true width whose centre cx (in
    [0, 1)) may lie near 0 or 1, and whose left edge cx - w/2 may be negative or its right
    edge past 1 (a consumer draws it wrapped). A sprite around a pole that fills every
    column gets cx = 0.5, w = 1.
    """
    if len(pixels) == 0:
        return None
    rows, cols = np.divmod(np.asarray(pixels), width)
    cy = (rows.min() + rows.max() + 1) / 2 / height
    bh = (rows.max() - rows.min() + 1) / height
    c = np.unique(cols)
    gaps = np.diff(np.append(c, c[0] + width))  # distance to the next occupied column
    if gaps.max() <= 1:
        return 0.5, cy, 1.0, bh
    i = int(np.argmax(gaps))
    start, span = c[(i + 1) % len(c)], width - gaps[i] + 1
    return ((start + span / 2) / width) % 1.0, cy, span / width, bh
