"""The in-memory record of one rendered 360° audio-visual clip, with its ground truth.

This is the contract between the scene renderer (``spatialav.synth``) and the dataset
writers (``spatialav.data``). Directions are radians (docs/DESIGN.md §2); the DCASE label
rows and the YOLO boxes use their own file conventions (degrees, centimetres, normalised).
"""

from __future__ import annotations

import dataclasses

import numpy as np

LABEL_HOP_S = 0.1  # DCASE label frames: 100 ms


@dataclasses.dataclass
class Clip:
    audio: np.ndarray  # [T, 4] float32 ambiX mixture (W, Y, Z, X), in [-1, 1]
    frames: np.ndarray  # [N, H, W, 3] uint8 equirect video
    sample_rate: int
    fps: float
    # Sound sources, S of them (1..3). The mixture is sum(source_images) + ambient noise.
    source_images: np.ndarray  # [S, T, 4] float32: each source's own FOA image (separation target)
    dry: np.ndarray  # [S, T] float32: each source's direct sound as it arrives (delay d/c, 1/d)
    source_class: np.ndarray  # [S] int32 index into source_bank.CLASSES
    source_direction: np.ndarray  # [S, 2] float32 (azimuth, elevation), radians
    source_distance: np.ndarray  # [S] float32 metres
    activity: np.ndarray  # [S, n_label_frames] bool: source active in each 100 ms frame
    # Silent visual distractors, D of them (0..).
    distractor_class: np.ndarray  # [D] int32
    distractor_direction: np.ndarray  # [D, 2] float32 radians
    # DCASE rows: frame, class, track (= source index), azimuth deg, elevation deg, distance cm.
    labels: np.ndarray  # [rows, 6] float32
    # YOLO boxes per video frame: frame, class, cx, cy, w, h (normalised), object index
    # (0..S-1 sources, S..S+D-1 distractors).
    boxes: np.ndarray  # [rows, 7] float32
    room: dict = dataclasses.field(default_factory=dict)  # size, rt60, absorption, snr_db, ...

    @property
    def num_sources(self) -> int:
        return int(self.source_class.shape[0])

    @property
    def duration(self) -> float:
        return self.audio.shape[0] / self.sample_rate
