"""Miniature corpora in the real datasets' layouts, for the converters' tests.

The layout writers put given content (ambiX audio, equirect frames, DCASE rows) where each
distribution keeps it: STARSS23 (``foa_dev/``, ``video_dev/``, ``metadata_dev/`` with
``dev-{train,test}-*/``), YT-360 (``video/{ID}-{start}.mp4``, 6-channel ``audio/…m4a`` in the
``[X, Y, W, 0, Z, 0]`` order, ``train.txt`` / ``test.txt``) and a folder of mp4s with 4-channel
ambiX tracks. ``scene`` renders the content from the synthetic scene generator, so the
shipped detector finds its objects and the labels are real DCASE rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from spatialav.data.convert import calibration as cal

YT360_MAP = ("X", "Y", "W", "0", "Z", "0")  # YT-360's decoded 6-channel order


def to_yt360(foa: np.ndarray) -> np.ndarray:
    """ambiX [T, 4] -> the 6 channels in YT-360's decoded order (silent slots zero)."""
    ambix = dict(zip("WYZX", foa.T, strict=True))
    zero = np.zeros(len(foa), np.float32)
    return np.stack([ambix[c] if c != "0" else zero for c in YT360_MAP], axis=1)


def write_starss23(root: Path, item: str, foa: np.ndarray, sample_rate: int,
                   frames: np.ndarray | None, fps: float, csv_text: str) -> None:
    """One STARSS23 recording ``item`` (``dev-train-sony/fold3_room1_mix001``): a 16-bit wav,
    an mp4 (none when ``frames`` is None) and the metadata CSV."""
    subset, stem = item.split("/")
    paths = {d: root / d / subset for d in ("foa_dev", "video_dev", "metadata_dev")}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    sf.write(paths["foa_dev"] / f"{stem}.wav", foa, sample_rate, subtype="PCM_16")
    if frames is not None:
        cal.write_video(paths["video_dev"] / f"{stem}.mp4", frames, fps)
    (paths["metadata_dev"] / f"{stem}.csv").write_text(csv_text)


def write_yt360(root: Path, name: str, foa: np.ndarray, sample_rate: int, frames: np.ndarray,
                fps: float) -> None:
    """One YT-360 clip ``{ID}-{start}``: the mp4 (with a stereo track, as distributed) and the
    6-channel AAC audio. The caller lists the IDs in ``train.txt`` / ``test.txt``."""
    for d in ("video", "audio"):
        (root / d).mkdir(parents=True, exist_ok=True)
    cal.write_video(root / "video" / f"{name}.mp4", frames, fps,
                    audio=np.zeros((len(foa), 2), np.float32), sample_rate=sample_rate)
    cal.write_audio(root / "audio" / f"{name}.m4a", to_yt360(foa), sample_rate)


def write_folder_video(path: Path, foa: np.ndarray, sample_rate: int, frames: np.ndarray,
                       fps: float) -> None:
    """One 360° mp4 with a 4-channel ambiX AAC track."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cal.write_video(path, frames, fps, audio=foa, sample_rate=sample_rate)


def dcase_csv(rows: np.ndarray) -> str:
    """DCASE metadata text of rows [n, 6] (frame, class, track, azimuth°, elevation°, cm)."""
    return "".join(f"{int(f)},{int(c)},{int(t)},{int(round(az))},{int(round(el))},{int(d)}\n"
                   for f, c, t, az, el, d in rows)


def scene(seed: int, seconds: float = 2.0):
    """A rendered synthetic scene: (ambiX float32 [T, 4], sample rate, uint8 equirect frames
    [N, 128, 256, 3], fps, DCASE rows [n, 6] of STARSS23's 13 classes)."""
    from spatialav.synth import SceneConfig, render_clip

    cfg = SceneConfig(duration=seconds, rt60=(0.2, 0.3), room_max=(6.0, 6.0, 3.0),
                      min_active=0.5)
    clip = render_clip(seed, cfg)
    rows = clip.labels[clip.labels[:, 1] < 13]
    return clip.audio.astype(np.float32), cfg.sample_rate, clip.frames, cfg.fps, rows
