"""Any folder of 360° videos whose audio track is first-order ambisonics -> ``folder360``.

Every ``*.mp4`` / ``*.m4v`` / ``*.mov`` below ROOT is one item (id: its path relative to ROOT,
without the suffix). The audio is the file's first audio stream with a declared channel count
(``ambix``: ACN/SN3D, 4 channels; ``fuma``: W, X, Y, Z with W at -3 dB, converted to ambiX);
the video its first video stream, expected equirectangular. Everything goes to ``train``
unless validation / test fractions are carved out (by a hash of the id). Groups: ``core``.
"""

from __future__ import annotations

from pathlib import Path

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

SUFFIXES = (".mp4", ".m4v", ".mov")


def list_items(root, validation_fraction: float = 0.0, test_fraction: float = 0.0) -> list[Item]:
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(f"the validation and test fractions must sum to less than 1, got "
                         f"{validation_fraction} + {test_fraction}")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory of 360° videos")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if not paths:
        raise ValueError(f"{root} holds no video: expected {' / '.join(SUFFIXES)} files below it")
    ids = [p.relative_to(root).with_suffix("").as_posix() for p in paths]
    test = splits.carve(ids, test_fraction)
    validation = splits.carve([i for i in ids if i not in test],
                              validation_fraction / (1.0 - test_fraction))
    return [Item(i, "test" if i in test else "validation" if i in validation else "train",
                 {"video": str(p)}) for i, p in zip(ids, paths, strict=True)]


def convert(item: Item, cfg: ConvertConfig) -> Converted:
    path = require(item, "video")
    layouts = cfg.channel_layouts
    audio = media.decode_audio(path, [lay.num_channels for lay in layouts], cfg.av_tolerance_s)
    foa, warnings = media.target_audio(audio, layouts, cfg.sample_rate, cfg.force_layout)
    frames, more = load_video(path, foa.shape[0] / cfg.sample_rate, cfg)
    return finish(item, foa, frames, cfg, warnings + more)


DATASET = DatasetDef(
    name="folder360", version="1.0.0", groups=("core",),
    description="A folder of 360° videos with first-order ambisonic audio.",
    convert=convert)
