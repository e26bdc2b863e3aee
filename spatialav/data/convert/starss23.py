"""STARSS23 (DCASE 2023 Task 3) -> the ``starss23`` spatialav dataset.

Input layout (as distributed)::

    ROOT/foa_dev/dev-{train,test}-{sony,tau}/fold{3,4}_room{N}_mix{NNN}.wav   24 kHz 4-ch W,Y,Z,X
    ROOT/video_dev/dev-{train,test}-{sony,tau}/<same stem>.mp4               1920x960 @ 29.97
    ROOT/metadata_dev/dev-{train,test}-{sony,tau}/<same stem>.csv            DCASE rows

One item per recording (id ``dev-train-sony/fold3_room21_mix001``); dev-train -> ``train``,
dev-test -> ``test``, and optionally a ``validation`` carve-out of whole train recordings.
Labels are stored in the schema's DCASE layout (100 ms frames, class, track = the CSV's source
number, integer azimuth / elevation in degrees with DCASE's counter-clockwise azimuth = ours,
distance in cm) and re-based per clip. The dataset's groups are ``core`` + ``labels``: no
per-source signals, boxes or distractors exist, so those fields are absent, not empty.

Clips need frames (the schema's core), so a recording without video is skipped and reported
(kind ``missing-file``) rather than stored with invented frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spatialav.data.convert import media, splits
from spatialav.data.convert.build import (
    ConvertConfig,
    Converted,
    DatasetDef,
    Item,
    finish,
    load_video,
    require,
)
from spatialav.data.transforms import L_FRAME, LABEL_HOP_S
from spatialav.metrics import dcase_io

CLASSES = (
    "Female speech, woman speaking", "Male speech, man speaking", "Clapping", "Telephone",
    "Laughter", "Domestic sounds", "Walk, footsteps", "Door, open or close", "Music",
    "Musical instrument", "Water tap, faucet", "Bell", "Knock",
)
DIRS = {"audio": ("foa_dev", ".wav"), "video": ("video_dev", ".mp4"),
        "labels": ("metadata_dev", ".csv")}
SPLITS = {"dev-train": "train", "dev-test": "test"}


def list_items(root, validation_fraction: float = 0.0) -> list[Item]:
    """Every recording found in any of the three trees (a missing file is the item's skip)."""
    root = Path(root)
    if not any((root / d).is_dir() for d, _ in DIRS.values()):
        raise ValueError(f"{root} is not a STARSS23 root: expected foa_dev/, video_dev/ and "
                         "metadata_dev/ holding dev-{train,test}-{sony,tau}/")
    found: dict[tuple[str, str], dict] = {}
    for role, (top, ext) in DIRS.items():
        for path in sorted((root / top).glob(f"dev-*/*{ext}")):
            files = found.setdefault((path.parent.name, path.stem), dict.fromkeys(DIRS))
            files[role] = str(path)
    items = []
    for (subset, stem), files in sorted(found.items()):
        split = next((s for prefix, s in SPLITS.items() if subset.startswith(prefix)), None)
        skip = None if split else (f"{subset}/{stem}: folder {subset!r} is neither dev-train-* "
                                   "nor dev-test-*")
        items.append(Item(f"{subset}/{stem}", split, files, skip))
    held = splits.carve((it.id for it in items if it.split == "train"), validation_fraction)
    return [Item(it.id, "validation", it.files) if it.id in held else it for it in items]


def read_labels(path: str, duration_s: float,
                tolerance_s: float) -> tuple[np.ndarray, list[str]]:
    """DCASE rows [n, 6] float32 of one metadata CSV, checked against the audio's length, and
    warnings (rows of a class outside the 13 dropped, as DCASE scoring drops them)."""
    try:
        with open(path) as f:
            rows, ignored = dcase_io.parse_dcase_lines(f, path, n_classes=len(CLASSES))
    except (ValueError, UnicodeDecodeError) as err:
        raise media.SkipItem("labels", f"unreadable metadata: {err}") from None
    if len(rows):
        end = (rows[:, L_FRAME].max() + 1) * LABEL_HOP_S
        if end > duration_s + tolerance_s:
            raise media.SkipItem("labels", f"{path}: labels run to {end:.1f} s, past the "
                                           f"audio's {duration_s:.2f} s")
    return rows, [dcase_io.ignored_message(path, ignored, len(CLASSES))] if ignored else []


def convert(item: Item, cfg: ConvertConfig) -> Converted:
    audio = media.read_wav(require(item, "audio"))
    foa, warnings = media.target_audio(audio, cfg.channel_layouts, cfg.sample_rate)
    duration = foa.shape[0] / cfg.sample_rate
    labels, dropped = read_labels(require(item, "labels"), duration, cfg.av_tolerance_s)
    frames, more = load_video(require(item, "video"), duration, cfg)
    return finish(item, foa, frames, cfg, warnings + dropped + more, labels)


DATASET = DatasetDef(
    name="starss23", version="1.0.0", groups=("core", "labels"),
    description="STARSS23 (DCASE 2023 Task 3) development set: ambiX FOA, equirect video, "
                "DCASE SELD labels (13 classes).",
    convert=convert, metadata={"classes": list(CLASSES), "label_hop_s": LABEL_HOP_S})
