"""Frozen-encoder outputs computed once per clip and augmentation and kept on disk, so a head
trains for thousands of steps in seconds.

``train_features``: every training clip x ``n_augment`` augmentations, each exactly the probe
pipeline's training example (``pipeline.prepare_clip`` with augmentation: a random crop of
``crop_s`` and a rotation of the sound field, by default a yaw, with the DCASE rows turned the
same way), drawn with an rng seeded by (cache seed, clip, augmentation).
``eval_features``: every clip of the evaluation split once, unrotated: the centred crop that
classification scores, and the whole clip cut into consecutive crop-long windows (the last
zero-padded) that SELD and DOA score, with the clip's reference rows.

Each crop keeps the pooled audio embedding ``[D]`` and the encoder sequence ``[T', D]`` (and,
for ``head.use_video``, the pooled visual embedding of its rotated frames). The same functions
encode the evaluation split of a fine-tuned encoder (in memory, once per trained head).

``cached_features`` stores the arrays under ``<cache dir>/<key>/`` where the key is a digest of
the encoder weights, input format and features, the dataset, the pipeline settings,
``n_augment`` and the cache seed: a second head, another probe seed or a rerun on the same
encoder reuses them; anything else computes new ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path

import grain
import jax
import numpy as np
from flax import nnx

from spatialav import configs, features
from spatialav.data import pipeline, storage
from spatialav.downstream import seld

VERSION = 1  # bump when what is stored changes


def make_encode(audio: nnx.Module, fmt: str, feature_cfg, pcfg, video: nnx.Module | None = None):
    """``encode(batch) -> {"pooled" [B, D], "seq" [B, T', D](, "video" [B, D])}`` of a batch of
    crops (``audio`` int16 [B, T, 4], ``rotation`` [B, 3, 3], ``frames`` with ``video``), the
    very computation the probes' forward passes start with; jitted once."""
    graphdef, state = nnx.split((audio, video))

    @jax.jit
    def run(state, batch):
        audio_m, video_m = nnx.merge(graphdef, state)
        x = pipeline.device_audio(batch, fmt)
        pooled, seq = audio_m(features.encoder_input(x, fmt, feature_cfg))
        out = {"pooled": pooled, "seq": seq}
        if video_m is not None:
            out["video"] = video_m(pipeline.device_inputs(batch, pcfg)["frames"])[0]
        return out

    return lambda batch: jax.device_get(run(state, batch))


def _encode_all(encode, crops, batch_size: int) -> dict[str, np.ndarray]:
    """Every crop (dicts of one crop's inputs) through ``encode`` in fixed-size batches, the
    last zero-padded, so the encoder compiles once."""
    outs, chunk = [], []

    def flush():
        n = len(chunk)
        batch = {k: np.stack([c[k] for c in chunk] + [np.zeros_like(chunk[0][k])] *
                             (batch_size - n)) for k in chunk[0]}
        outs.append({k: np.asarray(v)[:n] for k, v in encode(batch).items()})
        chunk.clear()

    for crop in crops:
        chunk.append(crop)
        if len(chunk) == batch_size:
            flush()
    if chunk:
        flush()
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _crop_inputs(example: dict, use_video: bool) -> dict:
    keys = ("audio", "rotation", "frames") if use_video else ("audio", "rotation")
    return {k: example[k] for k in keys}


class _Augmented:
    """Clip index -> its ``n_augment`` training examples (a grain map, run in reader threads)."""

    def __init__(self, source, pcfg, n_augment: int, seed: int, use_video: bool):
        self.source, self.pcfg, self.n_augment = source, pcfg, n_augment
        self.seed, self.use_video = seed, use_video

    def __call__(self, clip: int) -> list[dict]:
        record = self.source[clip]
        out = []
        for a in range(self.n_augment):
            ex = pipeline.prepare_clip(record, np.random.default_rng([self.seed, clip, a]),
                                       self.pcfg, augment=True)
            if not self.use_video:
                ex.pop("frames")
            out.append(ex)
        return out


def _reader(source, fn):
    """``fn(i)`` for every index of ``source``, in order, read ahead by two threads."""
    ds = grain.MapDataset.range(len(source)).map(fn)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)))


def train_features(encode, source, pcfg, *, n_augment: int, seed: int, use_video: bool,
                   batch_size: int = 32) -> dict[str, np.ndarray]:
    """Items ``[M = clips x n_augment]``: ``pooled``, ``seq``, (``video``), ``labels`` [M, L, 6]
    and ``label_mask`` (the crop's rows, rotated with it), ``clip`` (its record index)."""
    meta = []

    def crops():
        for clip, examples in enumerate(_reader(source, _Augmented(source, pcfg, n_augment,
                                                                   seed, use_video))):
            for ex in examples:
                meta.append((ex["labels"], ex["label_mask"], clip))
                yield _crop_inputs(ex, use_video)

    out = _encode_all(encode, crops(), batch_size)
    labels, mask, clip = zip(*meta, strict=True)
    return {**out, "labels": np.stack(labels), "label_mask": np.stack(mask),
            "clip": np.asarray(clip, np.int64)}


class _EvalClip:
    """Clip index -> (centred crop, windows, reference) of one evaluation clip."""

    def __init__(self, source, pcfg, use_video: bool):
        self.source, self.pcfg, self.use_video = source, pcfg, use_video

    def __call__(self, i: int):
        record = self.source[i]
        centre = pipeline.prepare_clip(record, np.random.default_rng(0), self.pcfg,
                                       augment=False)
        sr = int(record["sample_rate"])
        win = seld.windows(record["audio"], int(round(self.pcfg.crop_s * sr)))
        n_frames = math.ceil(record["audio"].shape[0] / sr / seld.LABEL_HOP_S - 1e-6)
        clip_id = record["clip_id"]
        ref = {"rows": np.asarray(record["labels"], np.float32), "n_frames": n_frames,
               "clip_id": clip_id.decode() if isinstance(clip_id, bytes) else str(clip_id)}
        return centre, win, ref


def eval_features(encode, source, pcfg, *, n_clips: int, use_video: bool,
                  batch_size: int = 32) -> dict[str, np.ndarray]:
    """Clips ``[N]``: the centred crop's ``pooled`` (, ``video``), ``labels``, ``label_mask``;
    ``windows`` [N, W, T', D] (the sequences of the clip's consecutive crop-long windows, padded
    to the longest clip's W) with ``n_windows``; the clip's reference ``rows`` [N, R, 6] (padded)
    with ``row_mask``, ``n_frames`` (label frames of the clip) and ``clip_id``."""
    eye = np.eye(3, dtype=np.float32)
    n_clips = min(n_clips, len(source))
    clips = []

    def crops():
        for i, (centre, win, ref) in enumerate(_reader(source, _EvalClip(source, pcfg,
                                                                          use_video))):
            if i >= n_clips:
                break
            clips.append((centre, len(win), ref))
            yield _crop_inputs(centre, use_video)
            for w in win:  # windows are scored by their sequences only
                yield {"audio": w, "rotation": eye,
                       **({"frames": centre["frames"]} if use_video else {})}

    out = _encode_all(encode, crops(), batch_size)
    n_win = np.asarray([w for _, w, _ in clips], np.int64)
    starts = np.r_[0, np.cumsum(n_win + 1)[:-1]]  # each clip: its centre crop, then windows
    seq = out["seq"]
    windows = np.zeros((len(clips), n_win.max(), *seq.shape[1:]), seq.dtype)
    for c, (s, w) in enumerate(zip(starts, n_win, strict=True)):
        windows[c, :w] = seq[s + 1: s + 1 + w]
    refs = [r for _, _, r in clips]
    rows = [r["rows"] for r in refs]
    n_rows = max(1, max(len(r) for r in rows))
    padded, row_mask = np.zeros((len(rows), n_rows, 6), np.float32), np.zeros((len(rows),
                                                                              n_rows), bool)
    for c, r in enumerate(rows):
        padded[c, : len(r)], row_mask[c, : len(r)] = r, True
    arrays = {"pooled": out["pooled"][starts], "windows": windows, "n_windows": n_win,
              "labels": np.stack([c["labels"] for c, _, _ in clips]),
              "label_mask": np.stack([c["label_mask"] for c, _, _ in clips]),
              "rows": padded, "row_mask": row_mask,
              "n_frames": np.asarray([r["n_frames"] for r in refs], np.int64),
              "clip_id": np.asarray([r["clip_id"] for r in refs])}
    if use_video:
        arrays["video"] = out["video"][starts]
    return arrays


# --- the on-disk cache ------------------------------------------------------------------------


def weights_digest(*modules: nnx.Module | None) -> str:
    """sha256 of the modules' variables (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for m in modules:
        if m is None:
            continue
        for path, leaf in jax.tree_util.tree_flatten_with_path(nnx.state(m))[0]:
            a = np.asarray(leaf)
            h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def cache_identity(enc, dataset, pcfg, *, n_augment: int, seed: int, use_video: bool,
                   eval_split: str, eval_clips: int) -> dict:
    """What the cached arrays are a function of (JSON-able); its digest names the folder."""
    dataset = Path(dataset).resolve()
    info = "".join((dataset / f).read_text() for f in ("dataset_info.json", "metadata.json"))
    return {"version": VERSION,
            "weights": weights_digest(enc.audio, enc.video if use_video else None),
            "format": enc.fmt, "features": dataclasses.asdict(enc.feature_cfg),
            "dataset": str(dataset), "dataset_info": hashlib.sha256(info.encode()).hexdigest(),
            "pipeline": configs.json_safe(dataclasses.asdict(pcfg)), "n_augment": n_augment,
            "seed": seed, "use_video": use_video, "eval_split": eval_split,
            "eval_clips": eval_clips}


def cached_features(enc, dataset, pcfg, cache_dir: str | os.PathLike, *, n_augment: int,
                    seed: int, use_video: bool, eval_split: str, eval_clips: int):
    """(train arrays, eval arrays, info) for frozen encoders ``enc``: loaded from the cache, or
    computed and stored. ``info``: the folder, whether it was computed now, and the seconds the
    feature pass took (0 when loaded)."""
    ident = cache_identity(enc, dataset, pcfg, n_augment=n_augment, seed=seed,
                           use_video=use_video, eval_split=eval_split, eval_clips=eval_clips)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    folder = Path(os.path.expanduser(cache_dir)) / key
    files = {"train": folder / "train.npz", "eval": folder / f"{eval_split}.npz"}
    if all(f.is_file() for f in files.values()):
        loaded = [dict(np.load(files[s])) for s in ("train", "eval")]
        return (*loaded, {"dir": str(folder), "computed": False, "seconds": 0.0})
    t0 = time.perf_counter()
    encode = make_encode(enc.audio, enc.fmt, enc.feature_cfg, pcfg,
                         enc.video if use_video else None)
    train = train_features(encode, storage.open_split(dataset, "train"), pcfg,
                           n_augment=n_augment, seed=seed, use_video=use_video)
    ev = eval_features(encode, storage.open_split(dataset, eval_split), pcfg,
                       n_clips=eval_clips, use_video=use_video)
    seconds = time.perf_counter() - t0
    if jax.process_index() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "identity.json").write_text(json.dumps(ident, indent=2))
        for split, arrays in (("train", train), ("eval", ev)):
            tmp = files[split].with_name(f"{files[split].stem}.tmp-{os.getpid()}.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, files[split])  # a killed writer leaves no half file under the name
    return train, ev, {"dir": str(folder), "computed": True, "seconds": seconds}


# --- training on cached arrays ------------------------------------------------------------------


class _Rows:
    """Item i of a cached dataset -> the dict of row ``index[i]`` of every array."""

    def __init__(self, arrays: dict[str, np.ndarray], index: np.ndarray):
        self.arrays, self.index = arrays, index

    def __call__(self, i: int) -> dict:
        j = self.index[i]
        return {k: v[j] for k, v in self.arrays.items()}


def cached_loader(arrays: dict[str, np.ndarray], index: np.ndarray, *, batch_size: int,
                  seed: int, shard=None) -> grain.IterDataset:
    """Shuffled, repeated per-process batches of the rows ``index`` of in-memory arrays; its
    iterator's position is checkpointed by the trainer like the clip loader's."""
    shard_index, count = pipeline.resolve_shard(shard)
    ds = grain.MapDataset.range(len(index)).shuffle(seed).repeat().map(_Rows(arrays, index))
    return ds[shard_index::count].batch(batch_size, drop_remainder=True).to_iter_dataset()
