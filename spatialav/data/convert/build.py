"""The shared converter: a parallel, resumable build of a real dataset in the spatialav schema.

A dataset module lists its inputs as ``Item`` s (one recording each: an id, a split and its
files) and converts one item into clips (``DatasetDef.convert``). This module does the rest,
in the synthetic builder's pattern: the sorted items of each split are cut into fixed shards
of ``items_per_shard``, so shard k always holds the same items; workers convert shards in any
order and write each under a temp name, renamed when complete, followed by the shard's
report (``conversion/<shard>.json``), which marks it done. A rerun after a crash (even
SIGKILL) converts only the shards without a report. ``dataset_info.json`` and
``conversion_report.json`` are written last.

Bad input never becomes a record: a ``SkipItem`` from the decoders, or a clip that the schema
rejects, puts the whole item in the report as skipped with its reason. Every item is reported
exactly once, so ``items in = items written + items skipped`` (checked when finishing).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import av
from tqdm import tqdm

from spatialav.data import schema, storage
from spatialav.data.convert import channels, clips, layout_check, media
from spatialav.data.transforms import LABEL_HOP_S

SPLIT_ORDER = ("train", "validation", "test")
REPORT_DIR = "conversion"
REPORT_FILE = "conversion_report.json"
_BUILD_MARK = "build.json"


def clip_on_grid(clip_s: float, fps: float) -> bool:
    """Whether clips of ``clip_s`` seconds hold whole DCASE label frames and video frames."""
    hops, frames = clip_s / LABEL_HOP_S, clip_s * fps
    return clip_s > 0 and abs(hops - round(hops)) <= 1e-6 and abs(frames - round(frames)) <= 1e-6


def longest_clip(duration_s: float, fps: float) -> float | None:
    """The longest clip length on the grid (``clip_on_grid``) that fits in ``duration_s``."""
    for n in range(int(math.floor(duration_s / LABEL_HOP_S + 1e-9)), 0, -1):
        if clip_on_grid(round(n * LABEL_HOP_S, 6), fps):
            return round(n * LABEL_HOP_S, 6)
    return None


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """What every stored clip looks like, whatever the source."""

    sample_rate: int = 24000
    fps: float = 10.0
    frame_size: tuple[int, int] = (128, 256)  # (H, W) of the equirect frames
    clip_s: float | None = None  # cut recordings into clips of this length; None: whole files
    av_tolerance_s: float = 0.5  # largest audio/video (and declared/decoded) length mismatch
    layouts: tuple[str, ...] = ("ambix",)  # declared input channel layouts, one per count
    force_layout: bool = False  # convert with ``layouts`` even where a file declares otherwise
    items_per_shard: int = 8
    jpeg_quality: int = schema.JPEG_QUALITY

    def __post_init__(self):
        object.__setattr__(self, "frame_size", tuple(int(s) for s in self.frame_size))
        object.__setattr__(self, "layouts", tuple(self.layouts))
        channels.check_layouts(self.channel_layouts)
        if self.clip_s is not None and not clip_on_grid(self.clip_s, self.fps):
            raise ValueError(f"clip_s must be a positive multiple of {LABEL_HOP_S} s holding "
                             f"a whole number of frames at {self.fps} fps, got {self.clip_s}")
        if self.items_per_shard < 1:
            raise ValueError(f"items_per_shard must be >= 1, got {self.items_per_shard}")

    @property
    def channel_layouts(self) -> tuple[channels.Layout, ...]:
        return tuple(channels.parse_layout(s) for s in self.layouts)

    @property
    def name(self) -> str:
        """The TFDS config directory: one per output format, so several can coexist."""
        h, w = self.frame_size
        clip = f"_clip{self.clip_s:g}s" if self.clip_s is not None else ""
        return f"sr{self.sample_rate}_fps{self.fps:g}_{h}x{w}{clip}"

    def spec(self, groups: tuple[str, ...]) -> schema.DatasetSpec:
        return schema.DatasetSpec(self.sample_rate, self.fps, self.frame_size, groups)

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclasses.dataclass(frozen=True)
class Item:
    """One input recording. ``files`` maps a role (audio, video, labels) to a path, or to None
    when the dataset's layout says the file should exist but it does not."""

    id: str
    split: str | None  # None: not in any split (then ``skip`` says why)
    files: dict[str, str | None]
    skip: str | None = None  # a reason to skip known when listing (kind 'split')


@dataclasses.dataclass
class Converted:
    clips: list[clips.ClipOut]
    notes: dict = dataclasses.field(default_factory=dict)  # into the item's report entry


@dataclasses.dataclass(frozen=True)
class DatasetDef:
    name: str  # TFDS dataset name
    version: str
    groups: tuple[str, ...]
    description: str
    convert: Callable[[Item, ConvertConfig], Converted]  # module-level (workers pickle it)
    metadata: dict = dataclasses.field(default_factory=dict)  # e.g. class names


@dataclasses.dataclass(frozen=True)
class Shard:
    split: str
    index: int
    num_shards: int
    items: tuple[Item, ...]

    def filename(self, name: str) -> str:
        return storage.shard_filename(name, self.split, self.index, self.num_shards)


# --- the common per-item steps ---------------------------------------------------------------


def require(item: Item, role: str) -> str:
    path = item.files.get(role)
    if path is None or not os.path.isfile(path):
        raise media.SkipItem("missing-file", f"{item.id}: no {role} file"
                                             + (f" ({path})" if path else ""))
    return path


def load_video(path: str, audio_s: float, cfg: ConvertConfig) -> tuple[list[bytes], list[str]]:
    """Frames covering ``audio_s`` at the target rate and size; the video must last as long as
    the audio within ``av_tolerance_s``."""
    video = media.decode_video(path, cfg.fps, cfg.frame_size, int(round(audio_s * cfg.fps)),
                               cfg.jpeg_quality)
    if abs(video.duration - audio_s) > cfg.av_tolerance_s:
        raise media.SkipItem("duration-mismatch", f"{path}: video lasts {video.duration:.2f} s, "
                                                  f"the audio {audio_s:.2f} s (tolerance "
                                                  f"{cfg.av_tolerance_s} s)")
    warnings = []
    h, w = video.source_size
    if w != 2 * h:
        warnings.append(f"source frames are {w}x{h}, not 2:1 equirect; stretched to "
                        f"{cfg.frame_size[1]}x{cfg.frame_size[0]}")
    return video.jpegs, warnings


def finish(item: Item, audio, frames, cfg: ConvertConfig, warnings: list[str],
           labels=None) -> Converted:
    """Cut a converted recording into clips (``clips.cut``); none fitting is a skip. The
    audio's layout check (``layout_check.check``) goes into the report entry."""
    out, tail = clips.cut(item.id, audio, frames, sample_rate=cfg.sample_rate, fps=cfg.fps,
                          clip_s=cfg.clip_s, labels=labels)
    if not out:
        duration = audio.shape[0] / cfg.sample_rate
        raise media.SkipItem("too-short", f"{item.id}: {duration:.2f} s is shorter than one "
                                          f"clip ({cfg.clip_s} s)", duration_s=round(duration, 6))
    checked, implausible = layout_check.check(audio, cfg.sample_rate)
    warnings = warnings + implausible
    notes = {"layout_check": checked} | ({"warnings": warnings} if warnings else {})
    if tail > 1e-6:
        notes["dropped_tail_s"] = round(tail, 3)
    return Converted(out, notes)


# --- planning ------------------------------------------------------------------------------


def split_order(splits) -> list[str]:
    return sorted(set(splits), key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER
                                              else len(SPLIT_ORDER), s))


def shard_plan(items: Sequence[Item], items_per_shard: int) -> list[Shard]:
    """Fixed shards of each split's items sorted by id (items with ``skip`` set get none)."""
    items = [it for it in items if it.skip is None]
    shards = []
    for split in split_order(it.split for it in items):
        mine = sorted((it for it in items if it.split == split), key=lambda it: it.id)
        k = math.ceil(len(mine) / items_per_shard)
        shards += [Shard(split, i, k, tuple(mine[i * items_per_shard:(i + 1) * items_per_shard]))
                   for i in range(k)]
    return shards


def items_fingerprint(items: Sequence[Item]) -> str:
    """sha256 of the item list: ids, splits, file names and sizes (what the shards hold)."""
    h = hashlib.sha256()
    for it in sorted(items, key=lambda it: it.id):
        files = {role: (os.path.basename(p), os.path.getsize(p) if os.path.isfile(p) else None)
                 if p else None for role, p in sorted(it.files.items())}
        h.update(json.dumps([it.id, it.split, files]).encode() + b"\n")
    return h.hexdigest()


def build_identity(dataset: DatasetDef, items: Sequence[Item], cfg: ConvertConfig) -> dict:
    """What must match for shards to belong together: dataset, output format and inputs."""
    return {"dataset": dataset.name, "version": dataset.version, "config": cfg.to_json(),
            "items_sha256": items_fingerprint(items)}


def dataset_dir(out_root, dataset: DatasetDef, cfg: ConvertConfig) -> Path:
    return Path(out_root) / dataset.name / cfg.name / dataset.version


# --- one shard (runs in a worker) ------------------------------------------------------------

_SKIPPABLE = (media.SkipItem, ValueError, OSError)


def convert_item(dataset: DatasetDef, cfg: ConvertConfig, item: Item, spec: schema.DatasetSpec,
                 serialize: storage.Serializer) -> tuple[list[bytes], dict]:
    """(records, report entry) of one item; any bad input makes it a skip with no records."""
    entry = {"item": item.id, "split": item.split, "files": item.files}
    try:
        converted = dataset.convert(item, cfg)
        records = [serialize(schema.make_example(
            c.clip_id, spec, audio=c.audio, frames=c.frames, sample_rate=cfg.sample_rate,
            fps=cfg.fps, **c.ground_truth)) for c in converted.clips]
    except _SKIPPABLE as err:
        if isinstance(err, media.SkipItem):
            kind = err.kind
        elif isinstance(err, ValueError) and not isinstance(err, av.FFmpegError):
            kind = "schema"  # make_example's checks
        else:
            kind = "corrupt"
        details = err.details if isinstance(err, media.SkipItem) else {}
        return [], entry | {"status": "skipped", "kind": kind, "reason": str(err)} | details
    return records, entry | {"status": "written", "clips": [c.clip_id for c in converted.clips],
                             **converted.notes}


def convert_shard(dataset: DatasetDef, cfg: ConvertConfig, shard: Shard, out: Path) -> int:
    """Convert, write and report one shard; returns its item count."""
    spec = cfg.spec(dataset.groups)
    serialize = storage.Serializer(schema.features(dataset.groups))
    parent = os.getppid()
    records, entries = [], []
    for item in shard.items:
        if os.getppid() != parent:  # the build was killed: don't outlive it
            raise SystemExit(1)
        recs, entry = convert_item(dataset, cfg, item, spec, serialize)
        records += recs
        entries.append(entry)
    name = shard.filename(dataset.name)
    storage.write_shard(out / name, records)
    report = out / REPORT_DIR / f"{name}.json"
    tmp = report.with_name(f"{report.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"shard": name, "num_records": len(records), "items": entries},
                              indent=1))
    os.replace(tmp, report)
    return len(shard.items)


def _convert_shard_job(args) -> int:
    return convert_shard(*args)


# --- the build -----------------------------------------------------------------------------


def build(dataset: DatasetDef, items: Sequence[Item], out_root, cfg: ConvertConfig,
          workers: int = 1, progress: bool = True) -> Path:
    """Convert ``items`` (or finish converting them) under ``out_root``; returns the dataset
    directory. Shards already converted are kept as they are."""
    if not items:
        raise ValueError(f"{dataset.name}: no input recordings found")
    ids = Counter(it.id for it in items)
    if dup := [i for i, n in ids.items() if n > 1]:
        raise ValueError(f"{dataset.name}: item ids must be unique, repeated: {dup[:5]}")
    out = dataset_dir(out_root, dataset, cfg)
    (out / REPORT_DIR).mkdir(parents=True, exist_ok=True)
    identity = build_identity(dataset, items, cfg)
    _claim(out, identity)
    storage.remove_temp_files(out)
    for p in (out / REPORT_DIR).glob("*.tmp-*"):
        p.unlink()
    plan = shard_plan(items, cfg.items_per_shard)
    todo = [s for s in plan if not (out / REPORT_DIR / f"{s.filename(dataset.name)}.json").exists()]
    left = sum(len(s.items) for s in todo)
    bar = tqdm(total=len(items), initial=len(items) - left, desc=f"{dataset.name}/{cfg.name}",
               unit="file", disable=not progress)
    jobs = [(dataset, cfg, s, out) for s in todo]
    workers = max(1, min(workers, len(todo) or 1))
    if workers == 1:
        for job in jobs:
            bar.update(_convert_shard_job(job))
    else:
        # spawn: forking a process that has imported JAX (threads) can deadlock.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for n in pool.imap_unordered(_convert_shard_job, jobs):
                bar.update(n)
    bar.close()
    listed = [{"item": it.id, "split": it.split, "files": it.files, "status": "skipped",
               "kind": "split", "reason": it.skip} for it in items if it.skip is not None]
    report = _merge_reports(out, dataset, plan, identity, listed, len(items))
    lengths = {}
    for s, n in zip(plan, report.pop("_shard_lengths"), strict=True):
        lengths.setdefault(s.split, []).append(n)
    storage.write_info(out, name=dataset.name, config=cfg.name, version=dataset.version,
                       description=dataset.description, spec=cfg.spec(dataset.groups),
                       shard_lengths=lengths,
                       metadata=identity | dataset.metadata | {"summary": report["summary"]})
    tmp = out / f"{REPORT_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out / REPORT_FILE)
    (out / _BUILD_MARK).unlink()
    return out


def _merge_reports(out: Path, dataset: DatasetDef, plan: list[Shard], identity: dict,
                   listed: list[dict], num_items: int) -> dict:
    """The shard reports and the items skipped when listing as one report, with totals;
    checks that every item is accounted for."""
    entries, lengths = [], []
    for s in plan:
        shard_report = json.loads((out / REPORT_DIR / f"{s.filename(dataset.name)}.json")
                                  .read_text())
        got = [e["item"] for e in shard_report["items"]]
        if got != [it.id for it in s.items]:
            raise RuntimeError(f"{out}: the report of {s.filename(dataset.name)} covers other "
                               "items than the plan; delete the directory to start over")
        entries += shard_report["items"]
        lengths.append(shard_report["num_records"])
    entries += listed
    summary = {"items_in": num_items, "items_written": 0, "items_skipped": 0,
               "clips_written": sum(lengths), "skipped_by_kind": {}, "per_split": {}}
    for e in entries:
        split = summary["per_split"].setdefault(
            str(e["split"]), {"items_in": 0, "items_written": 0, "items_skipped": 0, "clips": 0})
        split["items_in"] += 1
        if e["status"] == "written":
            summary["items_written"] += 1
            split["items_written"] += 1
            split["clips"] += len(e["clips"])
        else:
            summary["items_skipped"] += 1
            split["items_skipped"] += 1
            kinds = summary["skipped_by_kind"]
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    if summary["items_in"] != summary["items_written"] + summary["items_skipped"] or (
            sum(len(e.get("clips", [])) for e in entries) != summary["clips_written"]):
        raise RuntimeError(f"{out}: the shard reports do not account for every item and clip")
    return {"identity": identity, "summary": summary, "items": entries, "_shard_lengths": lengths}


def _claim(out: Path, identity: dict) -> None:
    """Record what is being built; refuse to mix shards of another input or configuration."""
    mark = out / _BUILD_MARK
    if (out / "dataset_info.json").exists() and not mark.exists():
        meta = json.loads((out / "metadata.json").read_text())
        found = {k: meta.get(k) for k in identity}
        if found != identity:
            what = [k for k in identity if found[k] != identity[k]]
            raise ValueError(f"{out} was converted from other inputs or settings (different "
                             f"{', '.join(what)}); delete it or choose another --out")
    elif mark.exists() and json.loads(mark.read_text()) != identity:
        raise ValueError(f"{out} holds a partial conversion of other inputs or settings "
                         f"({mark}); delete the directory to start over")
    mark.write_text(json.dumps(identity, indent=1, sort_keys=True))


def load_report(dataset_dir) -> dict:
    return json.loads((storage.find_dataset_dir(dataset_dir) / REPORT_FILE).read_text())


def format_summary(report: dict, max_listed: int = 30) -> str:
    """The printed validation summary: counts per split, skip reasons, warnings."""
    s = report["summary"]
    lines = [f"items in {s['items_in']}: written {s['items_written']} "
             f"({s['clips_written']} clips), skipped {s['items_skipped']}"]
    for split, c in s["per_split"].items():
        lines.append(f"  {split}: {c['items_in']} in, {c['items_written']} written "
                     f"({c['clips']} clips), {c['items_skipped']} skipped")
    if s["skipped_by_kind"]:
        lines.append("skipped by kind: " + ", ".join(
            f"{k} {n}" for k, n in sorted(s["skipped_by_kind"].items())))
    skipped = [e for e in report["items"] if e["status"] == "skipped"]
    for e in skipped[:max_listed]:
        lines.append(f"  skipped {e['item']} [{e['kind']}]: {e['reason']}")
    if len(skipped) > max_listed:
        lines.append(f"  ... and {len(skipped) - max_listed} more (see {REPORT_FILE})")
    warned = [(e["item"], w) for e in report["items"] for w in e.get("warnings", [])]
    for item, w in warned[:max_listed]:
        lines.append(f"  warning {item}: {w}")
    if len(warned) > max_listed:
        lines.append(f"  ... and {len(warned) - max_listed} more warnings")
    return "\n".join(lines)
