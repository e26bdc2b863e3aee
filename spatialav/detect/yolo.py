"""Running an ultralytics YOLO model on equirect frames: ``detect(model, frames, cfg)``.

torch and ultralytics (the ``detect`` extra) are imported only when a model is loaded, so
this module imports without them. ultralytics always runs offline: ``YOLO_OFFLINE=1`` and its
``sync`` setting off (point ``YOLO_CONFIG_DIR`` elsewhere to keep its settings file away from
the user's).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spatialav import geometry
from spatialav.data import schema
from spatialav.detect.record import Detections, concat, merge_duplicates
from spatialav.detect.tracking import link_tracks
from spatialav.detect.views import (
    SPHERE_TILES,
    merge_tiles,
    pad_seam,
    padded_boxes_to_detections,
    round_up,
    tile_boxes_to_detections,
    tile_size,
)

DETECTORS_DIR = Path(__file__).resolve().parents[1] / "detectors"
DEFAULT_WEIGHTS = DETECTORS_DIR / "synthetic_yolo.pt"


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
    them: ``schema.decode_frames``). Anything else raises ValueError saying what was expected
    and what came.
    """
    if isinstance(frames, np.ndarray) and frames.dtype != object:
        if frames.dtype != np.uint8:
            raise ValueError(f"frames: expected uint8 [N, H, W, 3] equirect images, "
                             f"got dtype {frames.dtype}")
        if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[1:3]) < 8:
            raise ValueError(f"frames: expected uint8 [N, H, W, 3] with H, W >= 8, "
                             f"got shape {frames.shape}")
        return frames
    return as_frames(schema.decode_frames(frames))


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
        dets = merge_duplicates(concat(_detect_padded(model, frames, cfg), len(frames)),
                                cfg.merge_iou, cfg.class_agnostic)
    return link_tracks(dets, cfg.track_distance, cfg.track_gap) if cfg.track else dets


def model_imgsz(model) -> int | None:
    """The image size (long side) a YOLO model was trained at, if its checkpoint says."""
    size = getattr(model, "overrides", {}).get("imgsz")
    return int(max(size)) if isinstance(size, list | tuple) else (int(size) if size else None)


def _scale(model, width: int, cfg: DetectConfig) -> float:
    """Resize factor of the equirect frame (see ``DetectConfig.imgsz``)."""
    return (cfg.imgsz or model_imgsz(model) or width) / width


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


def _detect_padded(model, frames, cfg: DetectConfig) -> list[Detections]:
    n, h, w, _ = frames.shape
    pad = int(math.ceil(cfg.seam_pad * w))
    scale = _scale(model, w, cfg)
    imgsz = (round_up(h * scale), round_up((w + 2 * pad) * scale))
    raw = predict(model, list(pad_seam(frames, pad)), imgsz, cfg)
    return [padded_boxes_to_detections(r, f, pad, w, h, n) for f, r in enumerate(raw)]


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
    return concat(out, n), np.concatenate(tile)
