"""grain input pipelines: deterministic, per-process sharded, checkpointable batches of clips.

``make_loader`` turns a split (a directory or an open random-access source) into an
iterable of per-process batches, each a dict of fixed-shape numpy arrays: the fields of
``prepare_clip`` with a leading batch dim, plus ``index`` int64 [B] (the clip's record) and
``mask`` bool [B] (False on evaluation padding). The global stream is

    range(N) -> shuffle(seed, reshuffled each epoch) -> repeat(num_epochs)
             -> prepare_clip with an rng seeded by (seed, stream position)
             -> process i of n keeps positions i, i + n, ... -> batch

so global batch b is stream positions [b G, (b + 1) G) (G = n x per-process batch) and each
process holds a disjoint 1/n of it. Everything is a function of (seed, position), never of
worker count or timing, so the same seed gives the same batches and an iterator's state
(``get_state`` / ``set_state``, or ``grain.checkpoint.CheckpointSave`` with orbax) resumes
exactly. Evaluation splits run one epoch in order, padded to whole global batches with
``mask`` False on the padding.

Only int16 audio and JPEG frames (decoded here, to uint8) cross to the device; rotations,
views, beams and features run there (``device_inputs``).
"""

from __future__ import annotations

import dataclasses
import os

import grain
import jax.numpy as jnp
import numpy as np
from absl import flags

from spatialav import ambisonics
from spatialav.data import detections, schema, storage
from spatialav.data import transforms as T

VIEW_SAMPLING = ("uniform", "objects")
SEPARATION_FIELDS = ("dry", "source_images")  # per-source targets: read by downstream/mixtures


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """What one clip becomes. Angles in radians. Hashable, so ``device_inputs`` can jit on it."""

    crop_s: float | None = 1.0  # None: the whole clip (all clips must then have one length)
    frame_stride: int = 1  # keep every n-th video frame of the crop
    rotation: str = "so3"  # training augmentation: 'none' | 'yaw' | 'so3' (eval: none)
    num_views: int = 0  # K viewpoints per clip (AVSA viewpoints); 0: none
    view_min_separation: float = np.pi / 4
    view_elevation: tuple[float, float] = (-np.pi / 4, np.pi / 4)
    # 'uniform' (Morgado et al.: directions uniform on the sphere band) or 'objects': centred
    # on the clip's ground-truth objects (sources and distractors; jittered by up to
    # view_jitter), uniform for the slots left over. Needs source/distractor directions or
    # boxes in the records (synthetic data); clips without them fall back to uniform.
    view_sampling: str = "uniform"
    view_jitter: float = np.pi / 18
    num_objects: int = 0  # M objects per clip (AVSA objects); 0: none
    objects_from: str = "gt"  # 'gt' (boxes) | 'detections'
    detection_min_score: float = 0.0
    max_polyphony: int = 3  # label rows kept per label frame (padded rows are masked)
    max_sources: int = 3  # per-clip ground-truth sources kept (padded, masked)
    # Keep each record read in memory, without the separation targets this pipeline never
    # reads (storage.RecordCache): a synthetic record is ~3 MB of zstd-compressed proto, ~15
    # ms of one CPU core to read, more than a CPU training step's share of it. For datasets
    # that fit in RAM (the default synthetic set: ~2 GB); one cache per grain worker.
    cache_records: bool = False
    # Device side (device_inputs).
    input_format: str = "foa"  # 'foa' | 'stereo' | 'mono'
    view_fov: float = np.pi / 2
    view_size: int | tuple[int, int] = 64
    object_fov: float = np.pi / 3
    object_size: int | tuple[int, int] = 64
    beam_pattern: str | float = "cardioid"

    def __post_init__(self):
        if self.rotation not in T.ROTATIONS:
            raise ValueError(f"rotation must be one of {T.ROTATIONS}, got {self.rotation!r}")
        if self.view_sampling not in VIEW_SAMPLING:
            raise ValueError(f"view_sampling must be one of {VIEW_SAMPLING}, "
                             f"got {self.view_sampling!r}")
        if self.objects_from not in ("gt", "detections"):
            raise ValueError(
                f"objects_from must be 'gt' or 'detections', got {self.objects_from!r}")
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {self.frame_stride}")


# --- host side: one record -> one example ---------------------------------------------------


def prepare_clip(record: dict, rng: np.random.Generator, cfg: PipelineConfig, *,
                 augment: bool) -> dict:
    """One stored record -> one example of fixed shapes (the batch contract, per clip).

    Always: ``audio`` int16 [T, 4] (T = crop_s x sample rate), ``frames`` uint8
    [n, H, W, 3] (n = ceil(crop_s x fps / frame_stride)), ``rotation`` float32 [3, 3] (the R
    to apply on device with ``rotate_clip``; identity unless ``augment``), ``t0`` float32
    (crop start, s). With K views: ``view_dirs`` float32 [K, 2]. With M objects:
    ``object_dirs`` float32 [M, 2] (already moved by R), ``object_valid`` bool [M],
    ``object_class`` / ``object_id`` int32 [M] (-1 padding; ground-truth ids < S are the
    sources). If the record has labels: ``labels`` float32 [L, 6] DCASE rows relative to the
    crop, directions moved by R (L = label frames x max_polyphony), ``label_mask`` bool [L].
    If it has sources: ``source_direction`` float32 [S', 2] (moved by R), ``source_class``
    int32 [S'] (-1 padding), ``source_mask`` bool [S'] (S' = max_sources).

    ``rng`` draws, in order: crop start, rotation, viewpoints, object subset. Without
    ``augment`` (evaluation) the crop is centred and R is the identity.
    """
    sr, fps = int(record["sample_rate"]), float(record["fps"])
    audio = record["audio"]
    duration = audio.shape[0] / sr
    crop_s = cfg.crop_s if cfg.crop_s is not None else duration
    t0 = T.crop_start(rng if augment else None, duration, crop_s, T.crop_grid(fps))
    labels = record.get("labels", np.zeros((0, 6), np.float32))
    rows_key = "boxes" if cfg.objects_from == "gt" else "detections"
    if cfg.num_objects and rows_key not in record:
        raise KeyError(f"num_objects={cfg.num_objects} needs {rows_key!r} in the records, "
                       f"which have {sorted(record)}")
    rows = record.get(rows_key, np.zeros((0, 8), np.float32))
    audio, jpegs, labels, rows = T.time_crop(
        audio, record["frames"], labels, rows, t0=t0, crop_s=crop_s, sample_rate=sr,
        fps=fps, frame_stride=cfg.frame_stride,
    )
    R = T.sample_rotation(rng, cfg.rotation if augment else "none")
    out = {
        "audio": audio,
        "frames": schema.decode_frames(jpegs),
        "rotation": R,
        "t0": np.float32(t0),
    }
    centre = (len(jpegs) - 1) / 2  # in kept-frame numbers, as the cropped rows are
    if cfg.num_views:
        centres = None
        if cfg.view_sampling == "objects":
            centres = T.rotate_directions(R, object_centres(record, rows, centre, cfg))
        out["view_dirs"] = T.sample_viewpoints(
            rng, cfg.num_views, cfg.view_min_separation, cfg.view_elevation,
            centres=centres, jitter=cfg.view_jitter)
    if cfg.num_objects:
        dirs, valid, cls, ids = T.select_objects(rng, crop_objects(rows, centre, cfg),
                                                 cfg.num_objects, centre)
        out.update(object_dirs=T.rotate_directions(R, dirs), object_valid=valid,
                   object_class=cls, object_id=ids)
    if "labels" in record:
        n_rows = int(round(crop_s / T.LABEL_HOP_S)) * cfg.max_polyphony
        out["labels"], out["label_mask"] = T.pad_rows(T.rotate_labels(R, labels), n_rows)
    if "source_direction" in record:
        dirs, mask = T.pad_rows(record["source_direction"], cfg.max_sources)
        cls = np.full(cfg.max_sources, -1, np.int32)
        cls[mask] = record["source_class"][: cfg.max_sources]
        out.update(source_direction=T.rotate_directions(R, dirs), source_class=cls,
                   source_mask=mask)
    return out


def crop_objects(rows: np.ndarray, centre: float, cfg: PipelineConfig) -> np.ndarray:
    """The object table (``transforms.O_*`` columns) of a crop's boxes or detections rows,
    cut to the crop by ``time_crop``: only objects seen in the frames the crop keeps."""
    if cfg.objects_from == "gt":
        return T.box_objects(rows)
    return T.detection_objects(rows, centre, cfg.detection_min_score)


def object_centres(record: dict, rows: np.ndarray, centre: float,
                   cfg: PipelineConfig) -> np.ndarray:
    """Object directions ``[N, 2]`` for object-centred views (before the clip's rotation):
    with ``objects_from='gt'`` the sources and distractors of a synthetic clip, else each
    object of the crop's boxes or detections (``crop_objects``) where it is seen nearest the
    crop's centre frame."""
    if cfg.objects_from == "gt" and "source_direction" in record:
        parts = [record["source_direction"], record.get("distractor_direction")]
        return np.concatenate([p.reshape(-1, 2) for p in parts if p is not None]).astype(
            np.float32)
    objects = crop_objects(rows, centre, cfg)
    dirs, valid, _, _ = T.select_objects(None, objects, len(np.unique(objects[:, T.O_ID])),
                                         centre)
    return dirs[valid]


class _Prepare(grain.transforms.MapWithIndex):
    """Stream position + record index -> example; picklable for grain's worker processes."""

    def __init__(self, source, cfg: PipelineConfig, seed: int, augment: bool):
        self.source, self.cfg, self.seed, self.augment = source, cfg, seed, augment

    def map_with_index(self, position: int, index: int) -> dict:
        n = len(self.source)
        rng = np.random.default_rng([self.seed, position])
        out = prepare_clip(self.source[index % n], rng, self.cfg, augment=self.augment)
        out["index"] = np.int64(index % n)  # the record (clip) it came from
        out["mask"] = np.bool_(index < n)  # False on evaluation padding
        return out


# --- the loader ------------------------------------------------------------------------------


def resolve_shard(shard) -> tuple[int, int]:
    """(index, count) of this process from ``None`` (jax processes), ShardOptions or a pair."""
    if shard is None:
        shard = grain.sharding.ShardByJaxProcess()
    if isinstance(shard, grain.sharding.ShardOptions):
        return shard.shard_index, shard.shard_count
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, {count}), got {index}")
    return int(index), int(count)


def needs_detections(cfg: PipelineConfig) -> bool:
    """Whether ``cfg`` reads a record's ``detections`` rows (objects or object-centred views)."""
    uses_objects = cfg.num_objects > 0 or (cfg.num_views > 0 and cfg.view_sampling == "objects")
    return cfg.objects_from == "detections" and uses_objects


def open_source(dataset_dir, split: str, cfg: PipelineConfig):
    """A split of a dataset directory as ``cfg`` reads it: when it takes objects from
    detections that the dataset does not store inline, each record gets the split's
    precomputed detections sidecar (``detections.with_detections``; ``data_tools/detect.py``
    writes it)."""
    source = storage.open_split(dataset_dir, split)
    if needs_detections(cfg) and "detections" not in storage.read_spec(dataset_dir).groups:
        source = detections.with_detections(source, storage.find_dataset_dir(dataset_dir), split)
    return source


def make_dataset(
    source,
    cfg: PipelineConfig,
    *,
    split: str,
    batch_size: int,
    seed: int,
    shard=None,
    num_epochs: int | None = None,
    train: bool | None = None,
) -> grain.MapDataset:
    """This process's batches as a random-access ``grain.MapDataset`` (see ``make_loader``)."""
    if isinstance(source, str | os.PathLike):
        source = open_source(source, split, cfg)
    if cfg.cache_records:
        source = storage.RecordCache(source, drop=SEPARATION_FIELDS)
    train = split == "train" if train is None else train
    index, count = resolve_shard(shard)
    n, global_batch = len(source), batch_size * count
    ds = grain.MapDataset.range(n)
    if train:
        ds = ds.shuffle(seed).repeat(num_epochs)
        if num_epochs is not None:  # whole global batches only, so processes stay in step
            ds = ds[: len(ds) // global_batch * global_batch]
    else:
        # One ordered epoch padded to whole global batches (indices >= n are masked copies).
        ds = grain.MapDataset.range(-(-n // global_batch) * global_batch)
    if len(ds) < global_batch:
        raise ValueError(f"{split!r} has {n} clips: too few for a global batch of {global_batch}")
    ds = ds.map_with_index(_Prepare(source, cfg, seed, augment=train))
    return ds[index::count].batch(batch_size, drop_remainder=True)


def make_loader(
    source,
    cfg: PipelineConfig,
    *,
    split: str,
    batch_size: int,
    seed: int,
    shard=None,
    workers: int = 0,
    num_epochs: int | None = None,
    train: bool | None = None,
    read_threads: int = 1,
    prefetch: int = 2,
) -> grain.IterDataset:
    """Per-process batches of ``split`` as a ``grain.IterDataset``.

    ``source``: a dataset directory (``open_source``: with its detections sidecar when ``cfg``
    takes objects from detections) or a random-access source.
    ``batch_size``: per process. ``seed``: in [0, 2**32); fixes order and augmentations.
    ``shard``: None (this JAX process of all), a ``grain.sharding.ShardOptions`` or an
    explicit (index, count). ``workers``: grain worker processes (0: in this process).
    ``num_epochs``: None repeats forever; training only (evaluation runs one padded epoch).
    ``train``: shuffle + augment + repeat; defaults to ``split == 'train'``.
    ``read_threads`` / ``prefetch``: threads and buffered batches per process.

    ``iter(loader)`` is a ``grain.DatasetIterator``: ``get_state()`` returns a small JSON-able
    dict and ``set_state`` on a fresh iterator of the same loader resumes exactly.
    """
    ds = make_dataset(source, cfg, split=split, batch_size=batch_size, seed=seed,
                      shard=shard, num_epochs=num_epochs, train=train)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                              prefetch_buffer_size=prefetch))
    if workers:
        # grain's workers read absl flags; programs that are not absl apps never parse them.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                         per_worker_buffer_size=prefetch))
    return it


# --- device side -----------------------------------------------------------------------------


def device_audio(batch: dict, fmt: str):
    """The batch's audio as the audio encoder takes it: float32 [B, T, C] in ``fmt``, turned
    by the batch's ``rotation``. ``device_inputs``' ``audio``, and what the audio-only heads
    read (they skip the frame resampling)."""
    audio = T.audio_to_float(batch["audio"])
    return T.to_format(ambisonics.rotate(audio, jnp.asarray(batch["rotation"], jnp.float32)), fmt)


def device_inputs(batch: dict, cfg: PipelineConfig) -> dict:
    """Model inputs of a batch, on the accelerator (jit with ``cfg`` static).

    ``audio`` float32 [B, T, C] in ``cfg.input_format`` and ``frames`` uint8 [B, n, H, W, 3],
    both rotated by the batch's ``rotation``; with views, ``view_audio`` [B, K, T, C] (the
    field turned so each viewpoint is in front, then put in the input format) and
    ``view_frames`` uint8 [B, K, n, h, w, 3]; with objects, the same per object as
    ``object_audio`` [B, M, T, C] / ``object_frames`` plus ``object_valid`` [B, M]. For
    ``mono`` the object audio is the ``beam_pattern`` beam toward the object (the object is in
    front after the turn), as in object-level AVSA; ``foa`` and ``stereo`` keep more of the
    field, so input formats stay comparable across tasks.

    The view audio is also given as ``stored_audio`` float32 [B, T, 4] (the clip as stored)
    and ``view_mix`` / ``object_mix`` [B, K, 4, C] (``transforms.view_mix``), from which
    ``features.encoder_input_mixed`` computes the encoder features with one STFT per clip.
    Crops are sampled once from the stored frames. Under jit, what a caller does not use
    (the rotated whole clip, the view waveforms) is never computed.
    """
    audio = T.audio_to_float(batch["audio"])
    R, fmt = batch["rotation"], cfg.input_format
    frames = T.rotate_clip(audio, batch["frames"], R)[1]  # its audio: unused, never computed
    out = {"audio": device_audio(batch, fmt), "frames": frames, "stored_audio": audio}
    if "view_dirs" in batch:
        mix = T.view_mix(R, batch["view_dirs"], fmt)
        out.update(view_mix=mix, view_audio=T.apply_mix(audio, mix),
                   view_frames=T.view_crops(batch["frames"], R, batch["view_dirs"],
                                            cfg.view_fov, cfg.view_size))
    if "object_dirs" in batch:
        valid = jnp.asarray(batch["object_valid"], bool)
        mix = T.view_mix(R, batch["object_dirs"], fmt, cfg.beam_pattern)
        mix = jnp.where(valid[..., None, None], mix, 0.0)  # padded objects: silence
        crops = T.view_crops(batch["frames"], R, batch["object_dirs"], cfg.object_fov,
                             cfg.object_size)
        out.update(
            object_mix=mix,
            object_audio=T.apply_mix(audio, mix),
            object_frames=jnp.where(valid[..., None, None, None, None], crops,
                                    jnp.zeros((), crops.dtype)),
            object_valid=valid,
        )
    return out
