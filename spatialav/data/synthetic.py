"""The ``spatialav_synthetic`` dataset: presets, and a parallel, resumable, deterministic build.

A preset fixes the scene distribution (``SceneConfig``), the clip counts per split and the
shard size. Clip ``i`` of split ``s`` is rendered from a seed derived from (preset seed, s, i)
alone, and shard ``k`` always holds the same index range, so shards are independent jobs:
workers render them in any order, each is written under a temp name and renamed when
complete, and a rerun after a crash (even SIGKILL) skips the shards already on disk. Records
are serialized deterministically and ``dataset_info.json`` (the completion mark) is written
last with no timestamps, so a resumed build is byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spatialav.data import schema, storage
from spatialav.synth.render import render_clip
from spatialav.synth.scene import SceneConfig

NAME = "spatialav_synthetic"
# Bump when the schema or the renderer changes on purpose: each version has its own directory,
# so old and new datasets can coexist (a build also refuses to mix code, see build_identity).
VERSION = "1.0.0"
SPLITS = ("train", "validation", "test")
GROUPS = ("core", "labels", "boxes", "sources", "distractors")
_CLIPS_PER_WORKER = 50
_BUILD_MARK = "build.json"  # the identity of a build in progress; removed when it completes
_PKG = Path(__file__).resolve().parents[1]
# What a clip's bytes depend on besides the preset: renderer code, source bank, serialization.
# Extend when the renderer starts importing other spatialav modules.
_FINGERPRINTED = ("synth", "geometry.py", "ambisonics.py", "data/schema.py", "data/storage.py")


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    scene: SceneConfig
    num_clips: tuple[int, int, int]  # train, validation, test
    clips_per_shard: int
    seed: int = 0

    @property
    def spec(self) -> schema.DatasetSpec:
        s = self.scene
        return schema.DatasetSpec(s.sample_rate, s.fps, tuple(s.frame_size), GROUPS)

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples -> lists


def tiny() -> Preset:
    """Tests: 16 clips of 2 s at low resolution, small dry rooms (seconds to build)."""
    scene = SceneConfig(duration=2.0, fps=5.0, frame_size=(32, 64),
                        rt60=(0.2, 0.4), room_max=(6.0, 6.0, 3.0), min_active=0.5)
    return Preset("tiny", scene, (8, 4, 4), clips_per_shard=2)


def small() -> Preset:
    """Quick CPU experiments: 240 clips of 4 s (16 min of audio)."""
    return Preset("small", SceneConfig(), (160, 40, 40), clips_per_shard=20)


def default() -> Preset:
    """The CPU demo: 2200 clips of 4 s (2.4 h of audio) at the SceneConfig defaults. The test
    split has 400 clips so that downstream bootstrap CIs rest on >= 400 clips; clip i of a
    split depends only on (seed, split, i), so train and validation are unchanged by that."""
    return Preset("default", SceneConfig(), (1600, 200, 400), clips_per_shard=25)


def large() -> Preset:
    """Longer CPU runs and GPUs: 5400 clips of 4 s (6 h of audio); its first 1600 train
    clips and its validation and test splits are the ``default`` preset's (same seeds)."""
    return Preset("large", SceneConfig(), (4800, 200, 400), clips_per_shard=25)


PRESETS = {"tiny": tiny, "small": small, "default": default, "large": large}


def get_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; choose from {list(PRESETS)}")
    return PRESETS[preset]()


def clip_seed(preset_seed: int, split: str, index: int) -> int:
    """The render seed of clip ``index`` of ``split``: stable across runs, machines, versions."""
    seq = np.random.SeedSequence([preset_seed, zlib.crc32(split.encode()), index])
    return int(seq.generate_state(1, np.uint64)[0] >> 1)  # 63 bits: a valid int64 seed


@dataclasses.dataclass(frozen=True)
class Shard:
    split: str
    index: int
    num_shards: int
    start: int  # clip indices [start, stop)
    stop: int

    @property
    def filename(self) -> str:
        return storage.shard_filename(NAME, self.split, self.index, self.num_shards)


def shard_plan(preset: Preset) -> list[Shard]:
    shards = []
    for split, n in zip(SPLITS, preset.num_clips, strict=True):
        k = -(-n // preset.clips_per_shard)
        for i in range(k):
            start = i * preset.clips_per_shard
            shards.append(Shard(split, i, k, start, min(n, start + preset.clips_per_shard)))
    return shards


def dataset_dir(root: str | os.PathLike, preset: str | Preset) -> Path:
    return Path(root).expanduser() / NAME / get_preset(preset).name / VERSION


def render_shard(preset: Preset, shard: Shard, out_dir: Path) -> int:
    """Render, validate, serialize and write one shard; returns its clip count."""
    serialize = storage.Serializer(schema.features(GROUPS))
    parent = os.getppid()
    records = []
    for i in range(shard.start, shard.stop):
        if os.getppid() != parent:  # the build was killed: don't outlive it
            raise SystemExit(1)
        clip = render_clip(clip_seed(preset.seed, shard.split, i), preset.scene)
        records.append(serialize(schema.example_from_clip(clip, f"{shard.split}/{i:06d}",
                                                          preset.spec)))
    storage.write_shard(out_dir / shard.filename, records)
    return len(records)


def code_fingerprint() -> str:
    """sha256 over the files in ``_FINGERPRINTED`` (source bank included)."""
    h = hashlib.sha256()
    for entry in _FINGERPRINTED:
        path = _PKG / entry
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(_PKG)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def build_identity(preset: Preset) -> dict:
    """What must match for shards to belong together: the preset and the code that renders it."""
    return {"preset": preset.to_json(), "code_sha256": code_fingerprint()}


def _render_shard_job(args) -> int:
    return render_shard(*args)


def build_synthetic(
    root: str | os.PathLike,
    preset: str | Preset = "tiny",
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Build (or finish building) the preset's dataset under ``root``; returns its directory.

    ``workers`` processes render shards in parallel (default: one per ``_CLIPS_PER_WORKER``
    clips left, at most one per CPU); with 1 the build runs in this process. Shards already
    on disk are kept as they are.
    """
    preset = get_preset(preset)
    out = dataset_dir(root, preset)
    out.mkdir(parents=True, exist_ok=True)
    identity = build_identity(preset)
    _claim(out, identity)
    storage.remove_temp_files(out)
    todo = [s for s in shard_plan(preset) if not (out / s.filename).exists()]
    total, todo_clips = sum(preset.num_clips), sum(s.stop - s.start for s in todo)
    bar = tqdm(total=total, initial=total - todo_clips,
               desc=f"{NAME}/{preset.name}", unit="clip", disable=not progress)
    # A worker process spends seconds importing the renderer: only worth it for many clips.
    workers = workers or max(1, min(os.cpu_count() or 1, todo_clips // _CLIPS_PER_WORKER))
    workers = max(1, min(workers, len(todo) or 1))
    jobs = [(preset, s, out) for s in todo]
    if workers == 1:
        for job in jobs:
            bar.update(_render_shard_job(job))
    else:
        # spawn: forking a process that has imported JAX (threads) can deadlock.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for n in pool.imap_unordered(_render_shard_job, jobs):
                bar.update(n)
    bar.close()
    lengths = {}
    for s in shard_plan(preset):
        lengths.setdefault(s.split, []).append(s.stop - s.start)
    storage.write_info(
        out, name=NAME, config=preset.name, version=VERSION,
        description=f"spatialav synthetic 360° FOA scenes, preset {preset.name!r}.",
        spec=preset.spec, shard_lengths=lengths, metadata=identity)
    (out / _BUILD_MARK).unlink()
    return out


def _claim(out: Path, identity: dict) -> None:
    """Record what is being built; refuse to mix shards of another preset or renderer."""
    mark = out / _BUILD_MARK
    if (out / "dataset_info.json").exists() and not mark.exists():
        _check_identity(out, identity)
    elif mark.exists() and json.loads(mark.read_text()) != identity:
        raise ValueError(f"{out} holds a partial build by a different preset definition or "
                         f"renderer code ({mark}); delete the directory to start over")
    mark.write_text(json.dumps(identity, indent=1, sort_keys=True))


def _check_identity(out: Path, identity: dict, *, code_must_match: bool = True) -> None:
    meta = json.loads((out / "metadata.json").read_text())
    found = {k: meta.get(k) for k in identity}
    what = [k for k in identity if found[k] != identity[k]]
    if what == ["code_sha256"] and not code_must_match:
        # A finished dataset is self-consistent; newer renderer code only makes it stale.
        warnings.warn(f"{out} was built by other renderer code than the current one; using it "
                      "anyway (delete it to rebuild with the current code)", stacklevel=3)
    elif what:
        raise ValueError(f"{out} was built with a different {' and '.join(what)} than the "
                         "current code's; delete it to rebuild")


def ensure_synthetic(
    root: str | os.PathLike, preset: str | Preset = "tiny", workers: int | None = None
) -> Path:
    """The preset's dataset directory, built first if it is missing or unfinished."""
    out = dataset_dir(root, preset)
    if (out / "dataset_info.json").exists() and not (out / _BUILD_MARK).exists():
        _check_identity(out, build_identity(get_preset(preset)), code_must_match=False)
        return out
    return build_synthetic(root, preset, workers=workers)
