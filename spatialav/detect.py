"""YOLO object detection on equirectangular 360° frames, as directions on the sphere.

``detect(model, frames)`` runs any ultralytics YOLO model (a weights path or a loaded
``YOLO``) on equirect frames ``[N, H, W, 3]`` uint8 and returns ``Detections``: per
detection its video frame, class, score, centre direction (azimuth, elevation, radians,
docs/DESIGN.md §2), angular extent and track. How it handles the sphere:

- **Seam.** Each frame is padded with ``seam_pad`` x W wrapped columns on both sides, so an
  object across the ±180° seam is seen whole. A detection is kept only if its centre falls
  in the original columns (the copy in the padding is the same object again), and the rest
  is merged by NMS on the sphere (IoU of boxes in azimuth / elevation with wrapped azimuth).
- **Tiles (option).** ``tiles='sphere'`` detects on twelve upright gnomonic views
  (``SPHERE_TILES``, ``geometry.gnomonic_crop``) instead, where objects near the poles are
  not stretched; boxes touching a tile's border (cut objects) are dropped, the others mapped
  back to directions through the camera rays of the tile and merged across tiles
  (``merge_tiles``: of the views of one object, the one nearest its tile's centre, where
  the view distorts least, names and places it).
- **Tracks.** Detections of consecutive frames are linked by optimal assignment (Hungarian)
  on great-circle distance, same class only, allowing short gaps.

The angular extent (``width``, ``height``) is the azimuth span and elevation span of the
detection's equirect box, so ``Detections.box`` gives that box back in YOLO form (normalised
cx, cy, w, h; cx in [0, 1), its edges may cross 0 or 1, as ``Clip.boxes``).

Precomputed detections of a dataset (``data_tools/detect.py``) live next to it as
``<dataset_dir>/detections/<split>/part-<start>-<stop>.npz``, one file per range of record
indices, each holding ``clip_id`` [n] str, ``num_frames`` [n] int32, ``offsets`` [n + 1] int64
and ``rows`` [R, 8] float32 in the schema's ``detections`` layout (video frame, class,
azimuth, elevation, width, height, score, track; clip i's rows are
``rows[offsets[i]:offsets[i + 1]]``), with ``config.json`` (weights, ``DetectConfig``,
clip count). ``load_detections`` reads them back; ``with_detections`` (what the input pipeline
uses for ``objects_from='detections'``) adds them to a split's records as a
``DetectionsSource``; ``detections_to_objects`` picks beam directions from them.

torch and ultralytics (the ``detect`` extra) are imported only when a model is loaded, so
this module imports without them. ultralytics always runs offline: ``YOLO_OFFLINE=1`` and its
``sync`` setting off (point ``YOLO_CONFIG_DIR`` elsewhere to keep its settings file away from
the user's).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from spatialav import geometry

DETECTORS_DIR = Path(__file__).resolve().with_name("detectors")
DEFAULT_WEIGHTS = DETECTORS_DIR / "synthetic_yolo.pt"
SIDECAR_DIR = "detections"  # <dataset_dir>/detections/<split>/
# Look directions (az, el) of ``tiles='sphere'``: four views on the horizon and four above
# and four below at +-60 deg, turned 45 deg from them; at 120 deg field of view they cover the
# sphere with overlap. Every view keeps its up axis in the vertical plane, so upright objects
# stay upright: a cube's top and bottom faces would show them turned about the face centre,
# which a detector trained on upright views mostly misnames (results/detector.md).
SPHERE_TILES = np.array(
    [[k * np.pi / 2, 0.0] for k in range(4)]
    + [[(k + 0.5) * np.pi / 2, el] for el in (np.pi / 3, -np.pi / 3) for k in range(4)],
    np.float32)
_STRIDE = 32  # YOLO input sizes are multiples of the largest stride


# --- the record -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Detections:
    """Detections in ``num_frames`` video frames, K of them; every field is ``[K]``.

    Angles in radians (docs/DESIGN.md §2). ``width`` / ``height``: azimuth span and elevation
    span of the equirect box. ``track``: -1 when not tracked.
    """

    frame: np.ndarray  # int32
    cls: np.ndarray  # int32
    score: np.ndarray  # float32
    azimuth: np.ndarray  # float32, (-pi, pi]
    elevation: np.ndarray  # float32
    width: np.ndarray  # float32
    height: np.ndarray  # float32
    track: np.ndarray  # int32
    num_frames: int

    _DTYPES = {"frame": np.int32, "cls": np.int32, "score": np.float32, "azimuth": np.float32,
               "elevation": np.float32, "width": np.float32, "height": np.float32,
               "track": np.int32}

    def __post_init__(self):
        for name, dtype in self._DTYPES.items():
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype).reshape(-1))
        sizes = {name: getattr(self, name).shape[0] for name in self._DTYPES}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Detections fields must have one length, got {sizes}")
        object.__setattr__(self, "num_frames", int(self.num_frames))

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    @classmethod
    def empty(cls, num_frames: int) -> Detections:
        return cls(*([np.zeros(0)] * 8), num_frames=num_frames)

    @property
    def directions(self) -> np.ndarray:
        """``[K, 2]`` (azimuth, elevation)."""
        return np.stack([self.azimuth, self.elevation], -1)

    @property
    def extent(self) -> np.ndarray:
        """``[K, 2]`` (width, height): azimuth and elevation spans."""
        return np.stack([self.width, self.height], -1)

    @property
    def box(self) -> np.ndarray:
        """``[K, 4]`` equirect boxes in YOLO form (cx, cy, w, h), normalised."""
        cx = np.mod((np.pi - self.azimuth) / (2 * np.pi), 1.0)
        cy = (np.pi / 2 - self.elevation) / np.pi
        return np.stack([cx, cy, self.width / (2 * np.pi), self.height / np.pi],
                        -1).astype(np.float32)

    def take(self, index) -> Detections:
        """The detections at ``index`` (a boolean mask or integer indices)."""
        return Detections(*(getattr(self, n)[index] for n in self._DTYPES),
                          num_frames=self.num_frames)

    def to_rows(self) -> np.ndarray:
        """``[K, 8]`` float32 in the schema's ``detections`` layout (see module docstring)."""
        cols = [self.frame, self.cls, self.azimuth, self.elevation, self.width, self.height,
                self.score, self.track]
        return np.stack(cols, -1).astype(np.float32).reshape(-1, 8)

    @classmethod
    def from_rows(cls, rows: np.ndarray, num_frames: int) -> Detections:
        rows = np.asarray(rows, np.float32).reshape(-1, 8)
        f, c, az, el, w, h, s, t = rows.T
        return cls(np.rint(f), np.rint(c), s, az, el, w, h, np.rint(t), num_frames=num_frames)


def _concat(parts: Sequence[Detections], num_frames: int) -> Detections:
    if not parts:
        return Detections.empty(num_frames)
    return Detections(*(np.concatenate([getattr(p, n) for p in parts])
                        for n in Detections._DTYPES), num_frames=num_frames)


@dataclasses.dataclass(frozen=True)
class DetectConfig:
    """How ``detect`` runs (angles in radians)."""

    # Minimum score. 0.35 rather than YOLO's 0.25: on the evaluation scenes of
    # experiments/eval_detector.py (swept over 0.25-0.4) it raises the precision of both
    # modes by 3-5 points for at most 2 points of recall, and in the tiles a confident box is
    # no longer displaced by a more central low-score misnaming.
    conf: float = 0.35
    nms_iou: float = 0.6  # YOLO's own NMS, per image
    merge_iou: float = 0.5  # NMS on the sphere: seam copies, tile overlaps
    class_agnostic: bool = False  # merge across classes too
    seam_pad: float = 0.125  # wrapped columns added on each side, fraction of W
    tiles: str | None = None  # None: the padded equirect frame; 'sphere': SPHERE_TILES views
    tile_fov: float = 2 * np.pi / 3
    # ``merge_tiles``: detections closer than this fraction of the larger one's angular size
    # are one object, whatever class each tile gave it.
    tile_merge: float = 0.5
    imgsz: int | None = None  # width the equirect frame is resized to; None: the model's
    # training image size (``model_imgsz``), or the frame's own width if it has none
    batch: int = 16  # images per YOLO call
    max_det: int = 100  # per image
    track: bool = True
    track_distance: float = math.radians(10.0)  # largest move between linked detections
    track_gap: int = 2  # frames a track may miss and still continue
    device: str = "cpu"

    def __post_init__(self):
        if self.tiles not in (None, "sphere"):
            raise ValueError(f"DetectConfig.tiles: expected None or 'sphere', "
                             f"got {self.tiles!r}")
        if not 0 <= self.seam_pad <= 0.5:
            raise ValueError(f"DetectConfig.seam_pad: expected a fraction in [0, 0.5], "
                             f"got {self.seam_pad}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# --- inputs: frames and model ----------------------------------------------------------------


def as_frames(frames) -> np.ndarray:
    """Equirect frames as uint8 ``[N, H, W, 3]``.

    Accepts that array or a sequence of encoded images (JPEG / PNG bytes, as datasets store
    them). Anything else raises ValueError saying what was expected and what came.
    """
    if isinstance(frames, np.ndarray) and frames.dtype != object:
        if frames.dtype != np.uint8:
            raise ValueError(f"frames: expected uint8 [N, H, W, 3] equirect images, "
                             f"got dtype {frames.dtype}")
        if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[1:3]) < 8:
            raise ValueError(f"frames: expected uint8 [N, H, W, 3] with H, W >= 8, "
                             f"got shape {frames.shape}")
        return frames
    decoded = []
    for i, data in enumerate(frames):
        if not isinstance(data, bytes | bytearray | np.bytes_):
            raise ValueError(f"frame {i}: expected encoded image bytes (JPEG/PNG), "
                             f"got {type(data).__name__}")
        try:
            with Image.open(io.BytesIO(data)) as im:
                decoded.append(np.asarray(im.convert("RGB")))
        except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for bad / truncated data
            raise ValueError(f"frame {i}: expected a decodable JPEG/PNG image, got "
                             f"{len(data)} bytes that do not decode ({e})") from None
    if not decoded:
        raise ValueError("frames: expected at least one encoded frame, got none")
    shapes = sorted({d.shape for d in decoded})
    if len(shapes) > 1:
        raise ValueError(f"frames: expected one frame size, got {shapes}")
    return as_frames(np.stack(decoded))


def import_ultralytics():
    """``ultralytics``, imported to run offline (``YOLO_OFFLINE=1``, settings ``sync`` off)."""
    os.environ["YOLO_OFFLINE"] = "1"  # read when ultralytics is first imported
    import ultralytics

    if ultralytics.settings.get("sync", True):
        ultralytics.settings.update({"sync": False})
    return ultralytics


def check_weights(weights) -> Path:
    """The weights path; FileNotFoundError if it is not a file (before importing anything)."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"YOLO weights file {str(path)!r} does not exist")
    return path


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float):
    ultralytics = import_ultralytics()
    try:
        return ultralytics.YOLO(path, task="detect")
    except Exception as err:  # whatever the file holds instead of a checkpoint
        raise ValueError(f"YOLO weights file {path!r} could not be loaded as a model "
                         f"({type(err).__name__}: {err})") from err


def load_model(weights=DEFAULT_WEIGHTS):
    """A YOLO model from a weights path (cached), or ``weights`` itself if already a model."""
    if isinstance(weights, str | os.PathLike):
        path = check_weights(weights).resolve()
        return _load(str(path), path.stat().st_mtime)
    return weights


# --- detection ---------------------------------------------------------------------------------


def detect(model, frames, cfg: DetectConfig = DetectConfig()) -> Detections:
    """Detect objects in equirect ``frames`` (see ``as_frames``) with ``model`` (a weights
    path or a YOLO model); ``Detections`` in the frames' numbering, empty if none."""
    if isinstance(model, str | os.PathLike):
        check_weights(model)
    frames = as_frames(frames)
    if len(frames) == 0:
        return Detections.empty(0)
    model = load_model(model)
    if cfg.tiles:
        dets, tile = _detect_tiles(model, frames, cfg)
        dets = merge_tiles(dets, tile, SPHERE_TILES, cfg.tile_merge)
    else:
        dets = merge_duplicates(_concat(_detect_padded(model, frames, cfg), len(frames)),
                                cfg.merge_iou, cfg.class_agnostic)
    return link_tracks(dets, cfg.track_distance, cfg.track_gap) if cfg.track else dets


def model_imgsz(model) -> int | None:
    """The image size (long side) a YOLO model was trained at, if its checkpoint says."""
    size = getattr(model, "overrides", {}).get("imgsz")
    return int(max(size)) if isinstance(size, list | tuple) else (int(size) if size else None)


def _scale(model, width: int, cfg: DetectConfig) -> float:
    """Resize factor of the equirect frame (see ``DetectConfig.imgsz``)."""
    return (cfg.imgsz or model_imgsz(model) or width) / width


def _round_up(x: float) -> int:
    return max(_STRIDE, int(math.ceil(x / _STRIDE)) * _STRIDE)


def predict(model, images: Sequence[np.ndarray], imgsz, cfg: DetectConfig) -> list[np.ndarray]:
    """Raw YOLO output per RGB image: ``[k, 6]`` (x1, y1, x2, y2 pixels, score, class)."""
    out = []
    for i in range(0, len(images), cfg.batch):
        # ultralytics takes numpy images as OpenCV does: BGR.
        chunk = [np.ascontiguousarray(im[..., ::-1]) for im in images[i : i + cfg.batch]]
        results = model.predict(chunk, imgsz=list(imgsz), conf=cfg.conf, iou=cfg.nms_iou,
                                max_det=cfg.max_det, device=cfg.device, verbose=False)
        out += [r.boxes.data.cpu().numpy()[:, :6].astype(np.float32) for r in results]
    return out


def pad_seam(frames: np.ndarray, pad: int) -> np.ndarray:
    """Frames ``[..., H, W, C]`` with ``pad`` wrapped columns added on both sides."""
    if pad == 0:
        return frames
    return np.concatenate([frames[..., -pad:, :], frames, frames[..., :pad, :]], axis=-2)


def _detect_padded(model, frames, cfg: DetectConfig) -> list[Detections]:
    n, h, w, _ = frames.shape
    pad = int(math.ceil(cfg.seam_pad * w))
    scale = _scale(model, w, cfg)
    imgsz = (_round_up(h * scale), _round_up((w + 2 * pad) * scale))
    raw = predict(model, list(pad_seam(frames, pad)), imgsz, cfg)
    return [padded_boxes_to_detections(r, f, pad, w, h, n) for f, r in enumerate(raw)]


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
    return _round_up(width / (2 * np.pi) * 2 * np.tan(fov / 2))


def _detect_tiles(model, frames, cfg: DetectConfig) -> tuple[Detections, np.ndarray]:
    """Every tile's detections, and the index in ``SPHERE_TILES`` of the tile of each."""
    n, h, w, _ = frames.shape
    size = tile_size(w * _scale(model, w, cfg), cfg.tile_fov)
    tiles = [geometry.gnomonic_crop(frames, az, el, cfg.tile_fov, size)
             for az, el in SPHERE_TILES]
    images = [t[f] for f in range(n) for t in tiles]  # frame-major
    raw = predict(model, images, (size, size), cfg)
    out, tile = [], []
    for i, r in enumerate(raw):
        f, t = divmod(i, len(SPHERE_TILES))
        out.append(tile_boxes_to_detections(r, f, SPHERE_TILES[t], cfg.tile_fov, size, n))
        tile.append(np.full(len(out[-1]), t))
    return _concat(out, n), np.concatenate(tile)


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


# --- the sphere: duplicates and tracks -------------------------------------------------------


def angular_iou(a: Detections, b: Detections) -> np.ndarray:
    """``[len(a), len(b)]`` IoU of the detections' boxes in (azimuth, elevation), with
    azimuth differences wrapped, so boxes on both sides of the seam overlap."""
    daz = geometry.wrap_azimuth(b.azimuth[None] - a.azimuth[:, None])  # b relative to a
    wa, wb = a.width[:, None] / 2, b.width[None] / 2
    ox = np.clip(np.minimum(wa, daz + wb) - np.maximum(-wa, daz - wb), 0, None)
    ha, hb = a.height[:, None] / 2, b.height[None] / 2
    ea, eb = a.elevation[:, None], b.elevation[None]
    oy = np.clip(np.minimum(ea + ha, eb + hb) - np.maximum(ea - ha, eb - hb), 0, None)
    inter = ox * oy
    union = (a.width * a.height)[:, None] + (b.width * b.height)[None] - inter
    return inter / np.maximum(union, 1e-12)


def merge_duplicates(dets: Detections, iou: float = 0.5, class_agnostic: bool = False):
    """Greedy NMS on the sphere per frame: of detections overlapping by ``angular_iou`` >=
    ``iou`` (same class unless ``class_agnostic``), keep the highest-scoring one."""
    keep = np.zeros(len(dets), bool)
    for f in np.unique(dets.frame):
        idx = np.flatnonzero(dets.frame == f)
        idx = idx[np.argsort(-dets.score[idx], kind="stable")]
        group = dets.take(idx)
        overlap = angular_iou(group, group) >= iou
        if not class_agnostic:
            overlap &= group.cls[:, None] == group.cls[None]
        alive = np.ones(len(idx), bool)
        for i in range(len(idx)):
            if alive[i]:
                alive[i + 1 :] &= ~overlap[i, i + 1 :]
        keep[idx[alive]] = True
    return dets.take(np.flatnonzero(keep))


def angular_size(dets: Detections) -> np.ndarray:
    """``[K]`` the larger side of each detection's box in radians on the sphere (its azimuth
    span shrinks by cos(elevation) there)."""
    return np.maximum(np.minimum(dets.width * np.cos(dets.elevation), 2 * np.pi), dets.height)


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


def link_tracks(dets: Detections, max_distance: float = math.radians(10.0),
                max_gap: int = 2) -> Detections:
    """Detections with ``track`` ids (0, 1, ... by first appearance).

    Frame by frame, detections are matched to the tracks seen within the last
    ``max_gap + 1`` frames by minimum total great-circle distance (Hungarian), same class
    only and at most ``max_distance`` from the track's last position; the others start
    new tracks.
    """
    from scipy.optimize import linear_sum_assignment

    track = np.full(len(dets), -1, np.int32)
    last = []  # per track: (frame, azimuth, elevation, class)
    for f in np.unique(dets.frame):
        idx = np.flatnonzero(dets.frame == f)
        live = [t for t, (lf, *_) in enumerate(last) if f - lf <= max_gap + 1]
        matched = {}
        if live:
            t_az, t_el, t_cls = (np.array([last[t][k] for t in live]) for k in (1, 2, 3))
            cost = geometry.angular_distance(dets.azimuth[idx, None], dets.elevation[idx, None],
                                             t_az[None], t_el[None])
            cost = np.where((dets.cls[idx, None] == t_cls[None]) & (cost <= max_distance),
                            cost, 1e6)
            rows, cols = linear_sum_assignment(cost)
            matched = {r: live[c] for r, c in zip(rows, cols, strict=True) if cost[r, c] < 1e6}
        for r, i in enumerate(idx):
            t = matched.get(r)
            if t is None:
                t = len(last)
                last.append(None)
            last[t] = (f, dets.azimuth[i], dets.elevation[i], dets.cls[i])
            track[i] = t
    return dataclasses.replace(dets, track=track)


def boxes_to_detections(boxes: np.ndarray, num_frames: int) -> Detections:
    """Ground-truth equirect boxes ``[rows, 7]`` (``Clip.boxes``: frame, class, cx, cy, w, h,
    object) as Detections with score 1 and the object index as track: an oracle detector."""
    b = np.asarray(boxes, np.float32).reshape(-1, 7)
    az = geometry.wrap_azimuth(np.pi - 2 * np.pi * b[:, 2])
    return Detections(b[:, 0], b[:, 1], np.ones(len(b)), az, np.pi / 2 - np.pi * b[:, 3],
                      2 * np.pi * b[:, 4], np.pi * b[:, 5], b[:, 6], num_frames=num_frames)


def match(dets: Detections, truth: Detections, iou: float = 0.5) -> np.ndarray:
    """Greedy one-to-one matching per frame, same class, highest ``angular_iou`` first, down
    to ``iou``: ``[pairs, 2]`` (index in ``dets``, index in ``truth``), for evaluation."""
    pairs = []
    for f in np.unique(truth.frame):
        di, ti = np.flatnonzero(dets.frame == f), np.flatnonzero(truth.frame == f)
        if not len(di):
            continue
        m = angular_iou(dets.take(di), truth.take(ti))
        m = np.where(dets.cls[di, None] == truth.cls[None, ti], m, 0.0)
        while m.size and m.max() >= iou:
            a, b = np.unravel_index(np.argmax(m), m.shape)
            pairs.append((di[a], ti[b]))
            m[a, :], m[:, b] = 0.0, 0.0
    return np.array(pairs, int).reshape(-1, 2)


# --- objects for the beams --------------------------------------------------------------------


def detections_to_objects(dets: Detections, m: int, centre_frame: float,
                          rng: np.random.Generator | None = None, min_score: float = 0.0):
    """Up to M object directions for ``transforms.object_views`` from a clip's detections.

    The detections counterpart of ``transforms.select_objects`` on ground-truth boxes:
    each track (or, untracked, each detection of the frame nearest ``centre_frame``) is one
    object, placed where it is seen nearest ``centre_frame``. Returns (directions ``[M, 2]``
    float32, valid ``[M]`` bool, class ``[M]`` int32, object id ``[M]`` int32), padded.
    """
    from spatialav.data import transforms

    objects = transforms.detection_objects(dets.to_rows(), centre_frame, min_score)
    return transforms.select_objects(rng, objects, m, centre_frame)


# --- precomputed detections of a dataset ------------------------------------------------------


def sidecar_dir(dataset_dir, split: str) -> Path:
    """Where ``data_tools/detect.py`` writes a split's detections (module docstring)."""
    from spatialav.data import storage

    return storage.find_dataset_dir(dataset_dir) / SIDECAR_DIR / split


def part_name(start: int, stop: int) -> str:
    return f"part-{start:06d}-{stop:06d}.npz"


def save_part(path: Path, clips: Mapping[str, Detections]) -> None:
    """Write one part file atomically (a temp name, then a rename)."""
    dets = list(clips.values())
    offsets = np.cumsum([0] + [len(d) for d in dets]).astype(np.int64)
    rows = np.concatenate([d.to_rows() for d in dets]) if dets else np.zeros((0, 8), np.float32)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, clip_id=np.array(list(clips), dtype=str),
                 num_frames=np.array([d.num_frames for d in dets], np.int32),
                 offsets=offsets, rows=rows)
    os.replace(tmp, path)


def load_part(path: Path) -> dict[str, Detections]:
    with np.load(path) as z:
        ids, n, off, rows = z["clip_id"], z["num_frames"], z["offsets"], z["rows"]
    return {str(c): Detections.from_rows(rows[off[i] : off[i + 1]], n[i])
            for i, c in enumerate(ids)}


def detect_command(dataset_dir, splits: Sequence[str]) -> str:
    """The command that writes the detections sidecar of ``splits``."""
    return f"python data_tools/detect.py --data {dataset_dir} --split {' '.join(splits)}"


def load_detections(dataset_dir, split: str, directory=None) -> dict[str, Detections]:
    """``{clip_id: Detections}`` of a split, precomputed by ``data_tools/detect.py``.

    ``directory`` overrides the default ``sidecar_dir(dataset_dir, split)``. Raises
    FileNotFoundError when there are none and ValueError when the run is unfinished; both
    name the folder and the command that (re)makes it.
    """
    root = Path(directory) if directory is not None else sidecar_dir(dataset_dir, split)
    redo = detect_command(dataset_dir if dataset_dir is not None else "DATASET_DIR", [split])
    config = root / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"no detections for split {split!r}: {root} does not exist or "
                                f"has no config.json; compute them with {redo}")
    total = json.loads(config.read_text())["num_clips"]
    out, covered = {}, 0
    for path in sorted(root.glob("part-*.npz")):
        start, stop = (int(v) for v in path.stem.split("-")[1:])
        if start != covered:
            break
        out.update(load_part(path))
        covered = stop
    if covered != total:
        raise ValueError(f"{root} covers clips [0, {covered}) of {total}: unfinished; run "
                         f"{redo} again to finish it")
    return out


def with_detections(source, dataset_dir, split: str) -> DetectionsSource:
    """``source`` (the split ``split`` of ``dataset_dir``) with its precomputed detections;
    ValueError when the sidecar is of another number of clips (another build of the set)."""
    dets = load_detections(dataset_dir, split)
    if len(dets) != len(source):
        where = sidecar_dir(dataset_dir, split)
        raise ValueError(f"{where} holds detections of {len(dets)} clips but split {split!r} "
                         f"of {dataset_dir} has {len(source)}: they were made for another "
                         f"build of it; delete {where} and run "
                         f"{detect_command(dataset_dir, [split])}")
    return DetectionsSource(source, dets, origin=str(sidecar_dir(dataset_dir, split)))


class DetectionsSource:
    """A split's random-access source whose records also hold ``detections`` rows ``[R, 8]``
    (the schema layout that ``pipeline.PipelineConfig(objects_from='detections')`` reads).
    A record whose frame count differs from the one its detections were made on (so their
    frame numbers would point at other times) raises ValueError naming ``origin``.
    Picklable, for grain workers (it holds only the rows: a few KB per clip)."""

    def __init__(self, source, detections: Mapping[str, Detections], origin: str = "detections"):
        self.source, self.origin = source, origin
        self.rows = {k: d.to_rows() for k, d in detections.items()}
        self.num_frames = {k: d.num_frames for k, d in detections.items()}

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index):
        record = dict(self.source[index])
        clip_id = record["clip_id"]
        clip_id = clip_id.decode() if isinstance(clip_id, bytes) else str(clip_id)
        if clip_id not in self.rows:
            raise ValueError(f"{self.origin} has no detections for clip {clip_id!r}: they "
                             "were made for another build of the dataset; recompute them")
        if "frames" in record and len(record["frames"]) != self.num_frames[clip_id]:
            raise ValueError(f"{self.origin}: clip {clip_id!r} has {len(record['frames'])} "
                             f"frames but its detections were made on "
                             f"{self.num_frames[clip_id]}; recompute them")
        record["detections"] = self.rows[clip_id]
        return record


def beam_correlations(clip, dirs, valid, pattern: str = "hypercardioid",
                      max_offset: float = math.radians(10)) -> tuple[list[float], list[float]]:
    """How well beams steered to ``dirs [M, 2]`` (``valid [M]``) pick out a synthetic clip's
    sources: for each beam within ``max_offset`` of a source, |corr| of the beamformed FOA
    with that source's dry signal (own) and with every other source's (other). Beams toward
    silent distractors are skipped. Returns (own, other) lists."""
    from spatialav.data import transforms  # the data package imports this module

    beams, _ = transforms.object_views(clip.audio[None], clip.frames[None, :1], dirs[None],
                                       valid[None], pattern, np.pi / 3, 16)
    beams = np.asarray(beams[0])
    own, other = [], []
    for j in np.flatnonzero(valid):
        dist = geometry.angular_distance(*dirs[j], *clip.source_direction.T)
        s = int(np.argmin(dist))
        if dist[s] > max_offset:
            continue
        corr = [abs(np.corrcoef(beams[j], dry)[0, 1]) for dry in clip.dry]
        own.append(corr[s])
        other += [c for k, c in enumerate(corr) if k != s]
    return own, other
