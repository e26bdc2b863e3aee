"""How the sphere is shown to a planar detector, and its boxes mapped back to directions.

- **Seam.** Each frame is padded with wrapped columns on both sides (``pad_seam``), so an
  object across the ±180° seam is seen whole. A detection is kept only if its centre falls in
  the original columns (``padded_boxes_to_detections``: the copy in the padding is the same
  object again); the rest is merged by NMS on the sphere (``record.merge_duplicates``).
- **Tiles.** Twelve upright gnomonic views (``SPHERE_TILES``, ``geometry.gnomonic_crop``),
  where objects near the poles are not stretched. Boxes touching a tile's border (cut
  objects) are dropped, the others mapped back through the camera rays of the tile
  (``tile_boxes_to_detections``) and merged across tiles (``merge_tiles``: of the views of
  one object, the one nearest its tile's centre, where the view distorts least, names and
  places it).
"""

from __future__ import annotations

import math

import numpy as np

from spatialav import geometry
from spatialav.detect.record import Detections, angular_size

# Look directions (az, el) of ``tiles='sphere'``: four views on the horizon and four above
# and four below at +-60 deg, turned 45 deg from them; at 120 deg field of view they cover the
# sphere with overlap. Every view keeps its up axis in the vertical plane, so upright objects
# stay upright: a cube's top and bottom faces would show them turned about the face centre,
# which a detector trained on upright views mostly misnames (results/detector.md).
SPHERE_TILES = np.array(
    [[k * np.pi / 2, 0.0] for k in range(4)]
    + [[(k + 0.5) * np.pi / 2, el] for el in (np.pi / 3, -np.pi / 3) for k in range(4)],
    np.float32)
STRIDE = 32  # YOLO input sizes are multiples of the largest stride


def round_up(x: float) -> int:
    return max(STRIDE, int(math.ceil(x / STRIDE)) * STRIDE)


def pad_seam(frames: np.ndarray, pad: int) -> np.ndarray:
    """Frames ``[..., H, W, C]`` with ``pad`` wrapped columns added on both sides."""
    if pad == 0:
        return frames
    return np.concatenate([frames[..., -pad:, :], frames, frames[..., :pad, :]], axis=-2)


def padded_boxes_to_detections(raw: np.ndarray, frame: int, pad: int, width: int, height: int,
                               num_frames: int) -> Detections:
    """Boxes ``[k, 6]`` found in a seam-padded frame -> detections whose centre lies in the
    original columns (the wrapped copies of the padding are dropped)."""
    x1, y1, x2, y2, score, cls = raw.T
    cx = ((x1 + x2) / 2 - pad) / width
    keep = (cx >= 0) & (cx < 1)
    cy = (y1 + y2) / 2 / height
    az = geometry.wrap_azimuth(np.pi - 2 * np.pi * cx[keep])
    return Detections(
        np.full(int(keep.sum()), frame), cls[keep], score[keep], az,
        np.pi / 2 - np.pi * cy[keep], 2 * np.pi * (x2 - x1)[keep] / width,
        np.pi * (y2 - y1)[keep] / height, np.full(int(keep.sum()), -1), num_frames=num_frames)


def tile_size(width: int, fov: float) -> int:
    """Pixel size of a tile whose centre resolution (pixels per radian) matches that of an
    equirect frame ``width`` pixels wide."""
    return round_up(width / (2 * np.pi) * 2 * np.tan(fov / 2))


def tile_rays(x, y, size: int, fov: float) -> np.ndarray:
    """Camera rays ``[..., 3]`` of tile pixel coordinates (x right, y down, edges at 0 and
    ``size``), for a tile made by ``geometry.gnomonic_crop`` (camera looking along +x)."""
    t = np.tan(fov / 2)
    j = (np.asarray(x, np.float64) - size / 2) / (size / 2) * t
    i = (size / 2 - np.asarray(y, np.float64)) / (size / 2) * t
    return np.stack([np.ones_like(j), -j, i], -1)


def tile_pixels(vectors, look, fov: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tile pixel coordinates (x, y) of direction ``vectors [..., 3]`` in the tile looking
    toward ``look`` (az, el): the inverse of ``tile_rays``; NaN behind the camera."""
    R = geometry.rotation_matrix(np.float64(look[0]), np.float64(look[1]))
    v = np.asarray(vectors, np.float64) @ R  # camera coordinates: front, left, up
    front = np.where(v[..., 0] > 1e-9, v[..., 0], np.nan)
    t = np.tan(fov / 2)
    return (size / 2 - v[..., 1] / front / t * size / 2,
            size / 2 - v[..., 2] / front / t * size / 2)


def tile_boxes_to_detections(raw: np.ndarray, frame: int, look, fov: float, size: int,
                             num_frames: int, border: float = 1.0) -> Detections:
    """Boxes ``[k, 6]`` found in a gnomonic tile looking toward ``look`` (az, el) ->
    detections. Boxes within ``border`` pixels of the tile's edge (cut objects) are dropped;
    the extent is the azimuth / elevation span of the box outline."""
    x1, y1, x2, y2 = raw[:, :4].T
    keep = (x1 > border) & (y1 > border) & (x2 < size - border) & (y2 < size - border)
    raw = raw[keep]
    R = geometry.rotation_matrix(np.float64(look[0]), np.float64(look[1]))
    x1, y1, x2, y2 = (raw[:, i : i + 1] for i in range(4))
    s = np.linspace(0, 1, 9)[None]
    outline_x = np.concatenate([x1 + (x2 - x1) * s, x2 + 0 * s, x1 + (x2 - x1) * s, x1 + 0 * s], 1)
    outline_y = np.concatenate([y1 + 0 * s, y1 + (y2 - y1) * s, y2 + 0 * s, y1 + (y2 - y1) * s], 1)
    az_c, el_c = geometry.vector_to_direction(
        tile_rays((x1 + x2)[:, 0] / 2, (y1 + y2)[:, 0] / 2, size, fov) @ R.T)
    az_o, el_o = geometry.vector_to_direction(tile_rays(outline_x, outline_y, size, fov) @ R.T)
    daz = geometry.wrap_azimuth(az_o - az_c[:, None])
    k = len(raw)
    return Detections(
        np.full(k, frame), raw[:, 5], raw[:, 4], az_c, el_c,
        np.minimum(daz.max(1, initial=0) - daz.min(1, initial=0), 2 * np.pi),
        el_o.max(1, initial=0) - el_o.min(1, initial=0), np.full(k, -1), num_frames=num_frames)


def merge_tiles(dets: Detections, tile: np.ndarray, looks, factor: float = 0.5) -> Detections:
    """One detection per object of tile detections (``tile`` [K]: index into ``looks``, the
    tiles' (az, el)). An object near a tile's edge is seen by the overlapping tiles too,
    and YOLO's per-class NMS may name one object twice in a tile, so their boxes neither
    match nor share a class, and ``merge_duplicates`` misses them.

    Per frame, detections nearest their own tile's centre first (where the view distorts
    least: an object's first is the one from the tile that owns its direction, as the seam
    padding keeps the copy in the original columns), each takes every remaining one whose
    centre is closer than ``factor`` times the larger of their ``angular_size`` (any class)
    as the same object, and is kept for it."""
    looks = np.asarray(looks, np.float64)
    centre = geometry.direction_to_vector(looks[np.asarray(tile, int), 0],
                                          looks[np.asarray(tile, int), 1])
    central = np.sum(geometry.direction_to_vector(dets.azimuth, dets.elevation) * centre, -1)
    size = angular_size(dets)
    keep = []
    for f in np.unique(dets.frame):
        idx = np.flatnonzero(dets.frame == f)
        idx = idx[np.argsort(-central[idx], kind="stable")]
        dist = geometry.angular_distance(dets.azimuth[idx, None], dets.elevation[idx, None],
                                         dets.azimuth[None, idx], dets.elevation[None, idx])
        near = dist < factor * np.maximum(size[idx, None], size[None, idx])
        alive = np.ones(len(idx), bool)
        for i in range(len(idx)):
            if alive[i]:
                keep.append(idx[i])
                alive &= ~near[i]
                alive[i] = False
    return dets.take(np.sort(np.array(keep, int)))
