"""``Detections``: what a detector found in a clip's equirect frames, as boxes on the sphere,
and the operations on them that know the sphere (overlap across the seam, NMS, matching).

Angles in radians (docs/DESIGN.md §2). The angular extent (``width``, ``height``) is the
azimuth span and elevation span of the detection's equirect box, so ``Detections.box`` gives
that box back in YOLO form (normalised cx, cy, w, h; cx in [0, 1), its edges may cross 0 or 1,
as ``Clip.boxes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from spatialav import geometry


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


def concat(parts: Sequence[Detections], num_frames: int) -> Detections:
    if not parts:
        return Detections.empty(num_frames)
    return Detections(*(np.concatenate([getattr(p, n) for p in parts])
                        for n in Detections._DTYPES), num_frames=num_frames)


def boxes_to_detections(boxes: np.ndarray, num_frames: int) -> Detections:
    """Ground-truth equirect boxes ``[rows, 7]`` (``Clip.boxes``: frame, class, cx, cy, w, h,
    object) as Detections with score 1 and the object index as track: an oracle detector."""
    b = np.asarray(boxes, np.float32).reshape(-1, 7)
    az = geometry.wrap_azimuth(np.pi - 2 * np.pi * b[:, 2])
    return Detections(b[:, 0], b[:, 1], np.ones(len(b)), az, np.pi / 2 - np.pi * b[:, 3],
                      2 * np.pi * b[:, 4], np.pi * b[:, 5], b[:, 6], num_frames=num_frames)


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


def angular_size(dets: Detections) -> np.ndarray:
    """``[K]`` the larger side of each detection's box in radians on the sphere (its azimuth
    span shrinks by cos(elevation) there)."""
    return np.maximum(np.minimum(dets.width * np.cos(dets.elevation), 2 * np.pi), dets.height)


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
