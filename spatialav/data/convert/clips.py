"""Cutting one converted recording into the clips that are stored (pure functions).

A recording of D seconds becomes ``floor(D / clip_s)`` clips ``[j clip_s, (j + 1) clip_s)``;
the tail shorter than a clip is dropped and reported. DCASE label rows move with their clip:
frame numbers are re-based to the clip's first 100 ms label frame. With ``clip_s`` None the
recording is one clip. Video frames are on the output grid k / fps, so clip j holds output
frames ``[j n, (j + 1) n)`` with n = clip_s x fps (an integer, checked by ``ConvertConfig``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spatialav.data.transforms import L_FRAME, LABEL_HOP_S


@dataclasses.dataclass
class ClipOut:
    clip_id: str
    audio: np.ndarray  # [T, 4] float32 ambiX at the target rate
    frames: list[bytes]  # JPEGs at the target fps and size
    ground_truth: dict = dataclasses.field(default_factory=dict)  # e.g. {"labels": rows}


def num_clips(duration_s: float, clip_s: float | None) -> int:
    if clip_s is None:
        return 1
    return int(np.floor(duration_s / clip_s + 1e-9))


def cut(item_id: str, audio: np.ndarray, frames: list[bytes], *, sample_rate: int, fps: float,
        clip_s: float | None, labels: np.ndarray | None = None) -> tuple[list[ClipOut], float]:
    """(clips, seconds of tail dropped). Clip ids: ``item_id`` alone for a whole recording,
    else ``item_id/jjjj``. ``frames`` must hold one frame per 1 / fps of the audio (rounded)."""
    duration = audio.shape[0] / sample_rate
    gt = (lambda rows: {"labels": rows}) if labels is not None else (lambda rows: {})
    if clip_s is None:
        return [ClipOut(item_id, audio, list(frames), gt(labels))], 0.0
    n_audio, n_video = int(round(clip_s * sample_rate)), int(round(clip_s * fps))
    n_labels = int(round(clip_s / LABEL_HOP_S))
    out = []
    for j in range(num_clips(duration, clip_s)):
        rows = None
        if labels is not None:
            frame = labels[:, L_FRAME] - j * n_labels
            rows = labels[(frame >= 0) & (frame < n_labels)].copy()
            rows[:, L_FRAME] -= j * n_labels
        out.append(ClipOut(f"{item_id}/{j:04d}", audio[j * n_audio:(j + 1) * n_audio],
                           list(frames[j * n_video:(j + 1) * n_video]), gt(rows)))
    return out, duration - len(out) * clip_s
