"""Mix-and-separate data for query-guided separation (Sound of Pixels / Looking to Listen).

A synthetic clip stores every source's own ambiX image (``source_images``), class, direction
and per-label-frame activity (``spatialav.data.schema``). The training signal needs no labels
beyond that: take a *target* source, add the images of one or more *interferers* (other
sources of other clips, or of the same clip), and ask the separator to recover the target's W
(omni) channel from the mixture, given a query that names the target:

- ``visual``: the gnomonic crop sequence of the target's clip toward the target's direction
  (the object crop, ``geometry.gnomonic_crop``), through the (frozen) visual encoder, one
  feature per video frame;
- ``label``: the target's class; ``text``: an embedded description of that class.

Mixture kinds: ``different`` (interferers of other classes) and ``same`` (one interferer of the
target's class; two talkers by default), where a label or a text query is ambiguous by
construction and only the visual query, whose mouth moves with its own voice, can tell the
sources apart.

Host side (numpy): ``SourceTable`` (one row per source of a split: class, direction,
activity, object crops), pair sampling, activity-aware time crops on the video grid, and
mixing at a sampled target-to-interferer ratio. Each example is a pure function of (seed,
stream position), so the grain datasets here are deterministic and their iterators resume
exactly from a checkpoint. With ``foa`` input and a visual query the mixture's sound field is
turned so that the crop's look direction is in front (as ``transforms.view_mix`` turns
views): the object's position, known from where its crop was taken, becomes a spatial cue.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import grain
import numpy as np
from flax import nnx

from spatialav import ambisonics, geometry
from spatialav.data import schema
from spatialav.data import transforms as T
from spatialav.models.separation import QUERY_KINDS
from spatialav.train import evaluate

MIXTURE_KINDS = ("different", "same")
TALKERS = ("female_speech", "male_speech", "femaleSpeech", "maleSpeech")


@dataclasses.dataclass(frozen=True)
class MixConfig:
    """How mixtures are drawn. Angles in radians."""

    crop_s: float = 1.0  # mixture length
    num_interferers: int = 1  # sources added to the target (>= 1)
    same_class_prob: float = 0.25  # training: fraction of same-class mixtures
    same_classes: tuple[str, ...] = TALKERS  # same-class pool (falls back to any class)
    snr_db: tuple[float, float] = (-5.0, 5.0)  # target-to-interferer W energy, training
    eval_snr_db: float = 0.0
    min_active: float = 0.5  # fraction of the crop the target (and interferers) sound in
    input_format: str = "mono"  # 'mono' (W) | 'foa'
    query_kinds: tuple[str, ...] = QUERY_KINDS  # training draws one per example, uniformly
    crop_fov: float = math.pi / 4  # object crop: horizontal field of view ...
    crop_size: int = 32  # ... and pixels
    peak: float = 0.9  # mixture and sources are scaled together to this peak

    def __post_init__(self):
        bad = set(self.query_kinds) - set(QUERY_KINDS)
        if bad or not self.query_kinds:
            raise ValueError(f"query_kinds must be a non-empty subset of {QUERY_KINDS}, "
                             f"got {self.query_kinds}")
        if self.num_interferers < 1:
            raise ValueError(f"num_interferers must be >= 1, got {self.num_interferers}")
        if self.input_format not in ("mono", "foa"):
            raise ValueError(f"input_format must be 'mono' or 'foa', got {self.input_format!r}")


# --- the sources of a split --------------------------------------------------------------


@dataclasses.dataclass
class SourceTable:
    """One row per source of a split (``N`` rows). ``crops`` are the object crop sequences
    toward each source over the whole clip; ``queries`` (set by ``encode_queries``) their
    per-frame visual features."""

    clip: np.ndarray  # [N] record index
    slot: np.ndarray  # [N] source index inside the clip
    cls: np.ndarray  # [N] class index
    direction: np.ndarray  # [N, 2] azimuth, elevation (rad)
    activity: np.ndarray  # [N, L] bool per 100 ms label frame
    crops: np.ndarray  # [N, n, h, w, 3] uint8
    sample_rate: int
    fps: float
    num_samples: int
    queries: np.ndarray | None = None  # [N, n, D] float32

    def __len__(self) -> int:
        return len(self.clip)


def object_crops(jpegs, directions: np.ndarray, fov: float, size: int) -> np.ndarray:
    """Gnomonic crop sequences ``[S, n, size, size, 3]`` uint8 of a clip's frames toward each
    of ``directions [S, 2]``: the view of each object, in every frame."""
    frames = schema.decode_frames(jpegs)  # [n, H, W, 3]
    n, h, w, _ = frames.shape
    stacked = np.moveaxis(frames, 0, 2).reshape(h, w, 3 * n).astype(np.float32)
    out = []
    for az, el in directions:
        crop = geometry.gnomonic_crop(stacked, float(az), float(el), fov, size)
        out.append(np.moveaxis(crop.reshape(size, size, n, 3), 2, 0))
    return np.clip(np.rint(np.stack(out)), 0, 255).astype(np.uint8).reshape(-1, n, size, size, 3)


def build_source_table(source, cfg: MixConfig) -> SourceTable:
    """All sources of a split (a random-access source of records with the ``sources`` group)."""
    rows = {k: [] for k in ("clip", "slot", "cls", "direction", "activity", "crops")}
    sr = fps = n_samples = None
    for i in range(len(source)):
        rec = source[i]
        if "source_images" not in rec:
            raise ValueError(f"record {i} has no separation ground truth (fields "
                             f"{sorted(rec)}); separation needs a dataset with the 'sources' "
                             "group, e.g. the synthetic set")
        this = (int(rec["sample_rate"]), float(rec["fps"]), rec["audio"].shape[0])
        if sr is None:
            sr, fps, n_samples = this
        elif this != (sr, fps, n_samples):
            raise ValueError(f"record {i} has (sample rate, fps, samples) {this}, the first "
                             f"record {(sr, fps, n_samples)}: mixing needs one clip format")
        s = len(rec["source_class"])
        rows["clip"].append(np.full(s, i))
        rows["slot"].append(np.arange(s))
        rows["cls"].append(rec["source_class"])
        rows["direction"].append(rec["source_direction"])
        rows["activity"].append(rec["activity"])
        rows["crops"].append(object_crops(rec["frames"], rec["source_direction"],
                                          cfg.crop_fov, cfg.crop_size))
    if not rows["clip"]:
        raise ValueError("the split holds no clips")
    cat = {k: np.concatenate(v) for k, v in rows.items()}
    return SourceTable(cat["clip"].astype(np.int64), cat["slot"].astype(np.int64),
                       cat["cls"].astype(np.int32), cat["direction"].astype(np.float32),
                       cat["activity"].astype(bool), cat["crops"], sr, fps, n_samples)


def encode_queries(table: SourceTable, video: nnx.Module, batch: int = 16) -> np.ndarray:
    """Per-frame features ``[N, n, D]`` of every source's crop sequence by a frozen visual
    encoder (``VisualEncoder``: frames -> (pooled, per-frame)), computed once on the host."""
    per_frame = evaluate.bind(video, _per_frame_features)
    return evaluate.batched(per_frame, table.crops, batch).astype(np.float32)


def _per_frame_features(video, crops):
    return video(crops)[1]


# --- sampling one mixture ------------------------------------------------------------------


def same_class_pool(table: SourceTable, class_names: Sequence[str],
                    preferred: Sequence[str], need: int = 2) -> np.ndarray:
    """Class indices with at least ``need`` sources, restricted to ``preferred`` names when
    any of those qualify (two talkers), else all that qualify; empty if none does."""
    counts = np.bincount(table.cls, minlength=len(class_names))
    ok = np.flatnonzero(counts >= need)
    pref = [c for c in ok if class_names[c] in set(preferred)]
    return np.asarray(pref if pref else ok, np.int64)


def sample_sources(rng: np.random.Generator, table: SourceTable, mixture: str,
                   num_interferers: int, pool: np.ndarray,
                   target: int | None = None) -> tuple[int, np.ndarray]:
    """(target row, interferer rows ``[num_interferers]``) of a ``mixture`` kind.

    ``different``: interferers of other classes than the target (``target`` given or drawn
    uniformly). ``same``: a class drawn from ``pool``, target and first interferer two distinct
    sources of it; further interferers of other classes. Interferers come from other clips
    than the target's where possible: a clip's sources need not sound at the same time, and
    a silent interferer makes a trivial mixture.
    """
    if mixture == "same":
        if not len(pool):
            raise ValueError("no class has two sources in this split: same-class mixtures "
                             "are impossible (use a larger split)")
        cls = rng.choice(pool)
        members = np.flatnonzero(table.cls == cls)
        target = int(rng.choice(members))
        mates = np.flatnonzero((table.cls == cls) & (table.clip != table.clip[target]))
        first = rng.choice(mates if len(mates) else np.setdiff1d(members, [target]))
        others = _other_class(rng, table, target, num_interferers - 1)
        return target, np.concatenate([[first], others]).astype(np.int64)
    if mixture != "different":
        raise ValueError(f"mixture kind must be one of {MIXTURE_KINDS}, got {mixture!r}")
    target = int(rng.integers(len(table))) if target is None else int(target)
    return target, _other_class(rng, table, target, num_interferers)


def _other_class(rng, table: SourceTable, target: int, k: int) -> np.ndarray:
    """k sources of other classes than the target's, from other clips when there are any."""
    candidates = np.flatnonzero(table.cls != table.cls[target])
    elsewhere = candidates[table.clip[candidates] != table.clip[target]]
    candidates = elsewhere if len(elsewhere) >= k else candidates
    if k and not len(candidates):
        raise ValueError("every source of this split has the same class: no different-class "
                         "interferer exists")
    return rng.choice(candidates, k, replace=len(candidates) < k).astype(np.int64)


def active_crop_start(rng: np.random.Generator, activity: np.ndarray, duration: float,
                      crop_s: float, grid: float, min_active: float) -> float:
    """A crop start on multiples of ``grid`` (the video and label grid) where the source is
    active at least ``min_active`` of the crop; uniform among those, else the most active."""
    last = int(math.floor((duration - crop_s) / grid + 1e-6))
    if last < 0:
        raise ValueError(f"crop of {crop_s} s does not fit a clip of {duration} s")
    starts = np.arange(last + 1) * grid
    n_lab = max(1, int(round(crop_s / T.LABEL_HOP_S)))
    first = np.rint(starts / T.LABEL_HOP_S).astype(int)
    frac = np.array([activity[f : f + n_lab].mean() if f < len(activity) else 0.0
                     for f in first])
    ok = np.flatnonzero(frac >= min_active - 1e-9)
    return float(starts[rng.choice(ok)] if len(ok) else starts[int(np.argmax(frac))])


def mix(target: np.ndarray, interferers: np.ndarray, snr_db: np.ndarray, peak: float):
    """Mixture of a target ``[T, C]`` and interferers ``[K, T, C]`` (float).

    Interferer k is scaled so that the target's W energy is ``snr_db[k]`` dB above its W
    energy; then everything is scaled by one gain so the largest peak is ``peak``. Returns
    (mixture ``[T, C]``, scaled sources ``[1 + K, T, C]``, target first): the mixture is
    exactly their sum.
    """
    e_t = np.sum(target[:, 0].astype(np.float64) ** 2)
    e_i = np.sum(interferers[..., 0].astype(np.float64) ** 2, axis=-1)
    gains = np.sqrt(e_t / np.maximum(e_i, 1e-12) * 10.0 ** (-np.asarray(snr_db) / 10.0))
    sources = np.concatenate([target[None], interferers * gains[:, None, None]])
    mixture = sources.sum(0)
    gain = peak / max(np.abs(mixture).max(), np.abs(sources).max(), 1e-9)
    sources = (sources * gain).astype(np.float32)
    return sources.sum(0, dtype=np.float32), sources


def source_audio(source, table: SourceTable, row: int, t0: float, crop_s: float,
                 channels: int) -> np.ndarray:
    """The ``[round(crop_s * sr), channels]`` float32 image of source ``row`` from ``t0``."""
    rec = source[int(table.clip[row])]
    image = rec["source_images"][int(table.slot[row]), :, :channels]
    a0, n = int(round(t0 * table.sample_rate)), int(round(crop_s * table.sample_rate))
    out = np.zeros((n, channels), np.float32)
    piece = schema.to_float(image[a0 : a0 + n])
    out[: len(piece)] = piece
    return out


class MixtureMaker:
    """(rng, mixture kind, query kind) -> one example; the host-side sampler, picklable.

    Example fields: ``mixture`` float32 [T, 1 | 4] (ambiX, W first), ``target`` float32 [T]
    (the target's W, scaled as in the mixture), ``interferers`` float32 [K, T] (their W),
    ``kind`` int32 (index into ``QUERY_KINDS``), ``label`` int32 (target class), ``text``
    float32 [E] (an embedded description; zeros without a text table), ``visual`` [n, D]
    float32 features (or [n, h, w, 3] uint8 crops when the encoder is fine-tuned),
    ``same_class`` bool, ``target_row`` int64, ``interferer_rows`` int64 [K] (table rows).
    """

    def __init__(self, source, table: SourceTable, cfg: MixConfig, class_names: Sequence[str],
                 text_table: np.ndarray | None = None, raw_crops: bool = False):
        if not raw_crops and table.queries is None:
            raise ValueError("the source table has no visual query features: run "
                             "encode_queries first, or pass raw_crops=True")
        self.source, self.table, self.cfg, self.raw_crops = source, table, cfg, raw_crops
        self.pool = same_class_pool(table, class_names, cfg.same_classes)
        self.text_table = text_table
        self.grid = T.crop_grid(table.fps)
        self.duration = table.num_samples / table.sample_rate
        self.n_video = int(round(cfg.crop_s * table.fps))

    def __call__(self, rng: np.random.Generator, mixture: str, kind: str, *,
                 target: int | None = None, snr_db=None, text_choice: int | None = None):
        cfg, table = self.cfg, self.table
        tgt, interf = sample_sources(rng, table, mixture, cfg.num_interferers, self.pool, target)
        if snr_db is None:
            snr_db = rng.uniform(*cfg.snr_db, size=len(interf))
        snr_db = np.broadcast_to(np.asarray(snr_db, np.float64), (len(interf),))
        channels = 4 if cfg.input_format == "foa" else 1
        starts = {}

        def start(row):
            clip = int(table.clip[row])  # sources of one clip share one crop: a real mixture
            if clip not in starts:
                starts[clip] = active_crop_start(rng, table.activity[row], self.duration,
                                                 cfg.crop_s, self.grid, cfg.min_active)
            return starts[clip]

        t_target = start(tgt)
        target = source_audio(self.source, table, tgt, t_target, cfg.crop_s, channels)
        others = np.stack([source_audio(self.source, table, r, start(r), cfg.crop_s, channels)
                           for r in interf])
        mixture_audio, sources = mix(target, others, snr_db, cfg.peak)
        if cfg.input_format == "foa" and kind == "visual":
            az, el = table.direction[tgt]
            to_front = np.asarray(geometry.rotation_matrix(float(az), float(el))).T
            mixture_audio = ambisonics.rotate(mixture_audio, to_front.astype(np.float32))
        v0 = int(round(t_target * table.fps))
        frames = np.minimum(v0 + np.arange(self.n_video), table.crops.shape[1] - 1)
        visual = (table.crops[tgt, frames] if self.raw_crops else table.queries[tgt, frames])
        label = int(table.cls[tgt])
        if self.text_table is not None:
            row = self.text_table[label]
            pick = rng.integers(len(row)) if text_choice is None else text_choice % len(row)
            text = row[pick]
        else:
            text = np.zeros(1, np.float32)
        return {
            "mixture": mixture_audio.astype(np.float32),
            "target": sources[0, :, 0],
            "interferers": sources[1:, :, 0],
            "kind": np.int32(QUERY_KINDS.index(kind)),
            "label": np.int32(label),
            "text": np.asarray(text, np.float32),
            "visual": visual,
            "same_class": np.bool_(mixture == "same"),
            "target_row": np.int64(tgt),
            "interferer_rows": interf,
        }


# --- grain datasets ------------------------------------------------------------------------


class _TrainExample(grain.transforms.MapWithIndex):
    """Stream position -> a random mixture (kind and query drawn from (seed, position))."""

    def __init__(self, maker: MixtureMaker, seed: int):
        self.maker, self.seed = maker, seed

    def map_with_index(self, position: int, row: int) -> dict:
        cfg = self.maker.cfg
        rng = np.random.default_rng([self.seed, position])
        mixture = "same" if (len(self.maker.pool) and rng.random() < cfg.same_class_prob) \
            else "different"
        kind = cfg.query_kinds[int(rng.integers(len(cfg.query_kinds)))]
        target = None if mixture == "same" else row
        return self.maker(rng, mixture, kind, target=target)


def train_dataset(maker: MixtureMaker, *, batch_size: int, seed: int,
                  shard: tuple[int, int] = (0, 1)) -> grain.MapDataset:
    """Endless batches of random mixtures; every source is a different-class target once per
    pass over the (shuffled) table. ``shard`` (index, count): this process keeps stream
    positions index, index + count, ... (batch_size is per process), as ``pipeline``."""
    index, count = shard
    ds = grain.MapDataset.range(len(maker.table)).shuffle(seed).repeat(None)
    ds = ds.map_with_index(_TrainExample(maker, seed))
    return ds[index::count].batch(batch_size, drop_remainder=True)


class _EvalExample(grain.transforms.MapWithIndex):
    """Example i of a fixed evaluation set: the same mixture for every query kind."""

    def __init__(self, maker: MixtureMaker, seed: int, mixture: str, kind: str):
        self.maker, self.seed, self.mixture, self.kind = maker, seed, mixture, kind

    def map_with_index(self, position: int, index: int) -> dict:
        rng = np.random.default_rng([self.seed, MIXTURE_KINDS.index(self.mixture), index])
        return self.maker(rng, self.mixture, self.kind, snr_db=self.maker.cfg.eval_snr_db,
                          text_choice=index)


def eval_dataset(maker: MixtureMaker, *, mixture: str, kind: str, num: int,
                 batch_size: int, seed: int) -> grain.MapDataset:
    """``num`` fixed mixtures of one kind queried by ``kind`` (padded to whole batches by
    repeating the last; keep the first ``num`` results)."""
    n = -(-num // batch_size) * batch_size
    ds = grain.MapDataset.range(n).map(lambda i: min(i, num - 1))
    return ds.map_with_index(_EvalExample(maker, seed, mixture, kind)).batch(batch_size)
