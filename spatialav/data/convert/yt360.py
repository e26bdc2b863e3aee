"""YT-360 (Morgado et al., NeurIPS 2020) -> the ``yt360`` spatialav dataset.

Input layout::

    ROOT/video/{YTID}-{start}.mp4     equirect video (e.g. 640x360 at 24 fps; its own stereo
                                      track is ignored)
    ROOT/audio/{YTID}-{start}.m4a     the ambisonic track, AAC
    ROOT/train.txt, ROOT/test.txt     bare YouTube ids, one per line (``segments.txt`` unused)

YouTube ids may contain ``-``, so a clip name is split at its last ``-``. The split of a clip
is its video's; a validation carve-out takes whole videos out of train. Audio channel maps are
declared per channel count, by default ``yt360`` for 6 channels ([X, Y, W, 0, Z, 0], the
5.1 decode of the 6-channel AAC, docs/DESIGN.md §2 Conventions) and ``ambix`` for 4.
Groups: ``core`` only.
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

DEFAULT_LAYOUTS = ("yt360", "ambix")
LISTS = {"train": "train.txt", "test": "test.txt"}


def split_name(stem: str) -> tuple[str, str] | None:
    """``{YTID}-{start}`` -> (YTID, start), split at the last ``-``; None if there is none."""
    ytid, sep, start = stem.rpartition("-")
    return (ytid, start) if sep and ytid and start else None


def read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def list_items(root, validation_fraction: float = 0.0) -> list[Item]:
    root = Path(root)
    lists = {split: root / name for split, name in LISTS.items() if (root / name).is_file()}
    if not (root / "audio").is_dir() or not lists:
        raise ValueError(f"{root} is not a YT-360 root: expected audio/*.m4a, video/*.mp4 and "
                         "train.txt / test.txt")
    ids = {split: read_list(path) for split, path in lists.items()}
    found: dict[str, dict] = {}
    for role, sub, ext in (("audio", "audio", ".m4a"), ("video", "video", ".mp4")):
        for path in sorted((root / sub).glob(f"*{ext}")):
            found.setdefault(path.stem, {"audio": None, "video": None})[role] = str(path)
    items = []
    for stem, files in sorted(found.items()):
        parts = split_name(stem)
        if parts is None:
            items.append(Item(stem, None, files, f"{stem}: name is not {{YTID}}-{{start}}"))
            continue
        where = [s for s, members in ids.items() if parts[0] in members or stem in members]
        if len(where) != 1:
            why = "in none of" if not where else "in more than one of"
            items.append(Item(stem, None, files, f"{stem}: video {parts[0]!r} is {why} "
                                                 f"{', '.join(LISTS[s] for s in lists)}"))
            continue
        items.append(Item(stem, where[0], files))
    held = splits.carve((split_name(it.id)[0] for it in items if it.split == "train"),
                        validation_fraction)
    return [Item(it.id, "validation", it.files) if it.split == "train"
            and split_name(it.id)[0] in held else it for it in items]


def convert(item: Item, cfg: ConvertConfig) -> Converted:
    layouts = cfg.channel_layouts
    audio = media.decode_audio(require(item, "audio"), [lay.num_channels for lay in layouts],
                               cfg.av_tolerance_s)
    foa, warnings = media.target_audio(audio, layouts, cfg.sample_rate, cfg.force_layout)
    frames, more = load_video(require(item, "video"), foa.shape[0] / cfg.sample_rate, cfg)
    return finish(item, foa, frames, cfg, warnings + more)


DATASET = DatasetDef(
    name="yt360", version="1.0.0", groups=("core",),
    description="YT-360 (Morgado et al. 2020): 360° YouTube videos with first-order ambisonics.",
    convert=convert)
