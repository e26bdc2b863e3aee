"""Probe configs as code: one dataclass tree, presets ``tiny`` (tests), ``default`` (CPU),
``gpu``; ``--set key=value`` overrides as for pretraining (``head.distance=true``,
``train.steps=200``, ``eval.write_csv=true``).

The encoders' architecture comes from the checkpoint, or, for ``init='random'``, from the
pretraining preset named by ``model_preset`` (by default the probe preset's namesake), so a
random baseline has exactly the pretrained model's shape. ``get_config`` copies that model into
``ProbeConfig.model`` for a random init, where ``--set model.<field>=v`` can change it (e.g. the
supervised SELD reference: ``model.audio_arch=crnn``); a checkpoint's model cannot be changed.
"""

from __future__ import annotations

import dataclasses
import math

from spatialav.configs import DataConfig
from spatialav.configs.overrides import apply_overrides
from spatialav.data.pipeline import PipelineConfig
from spatialav.downstream.mixtures import MixConfig
from spatialav.models import ModelConfig
from spatialav.models.separation import SeparatorConfig
from spatialav.train import OptimConfig, TrainConfig

HEADS = ("classify", "seld", "doa", "localise", "separate")
FORMATS = ("foa", "stereo", "mono")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    hidden: int = 128  # seld: head width
    use_video: bool = False  # classify: concatenate the visual embedding of the frames
    distance: bool = False  # seld: also predict distance (DCASE 2024 multi-ACCDOA + distance)
    distance_weight: float = 1.0  # seld: weight of the distance (m^2) in the ADPIT MSE
    n_tracks: int = 3  # seld: tracks per class
    activity_weight: float = 0.0  # seld: weight of the auxiliary activity BCE (seld.make_loss_fn)
    threshold: float = 0.5  # seld decoding: active when ||xyz|| > threshold
    unify_deg: float = 15.0  # seld decoding: merge same-class tracks closer than this
    grid_az: int = 24  # localise: map cells along azimuth
    grid_el: int = 12  # localise: map cells along elevation
    hit_deg: float = 30.0  # localise: a peak within this of a source is a hit


@dataclasses.dataclass(frozen=True)
class ProbeEvalConfig:
    split: str = "test"
    max_clips: int = 200
    batch_size: int = 8
    maps: int = 8  # localise: heat-map PNGs written
    write_csv: bool = False  # seld: write a DCASE CSV of predictions per clip
    seeds: int = 3  # heads trained (seeds train.seed, train.seed + 1, ...); metrics: their mean
    bootstrap: int = 1000  # resamples of the evaluation clips for the 95 % intervals


@dataclasses.dataclass(frozen=True)
class FeatureCacheConfig:
    """Frozen encoders: their outputs are computed once and cached (``feature_cache``)."""

    n_augment: int = 4  # training examples (random crop + rotation) per training clip
    seed: int = 0  # of those augmentations (the probe seeds share them)
    dir: str = ""  # where the arrays are kept; empty: <data.root>/features


@dataclasses.dataclass(frozen=True)
class SeparationConfig:
    """Everything the separation probe needs besides the encoders and the data."""

    mix: MixConfig = MixConfig()
    separator: SeparatorConfig = SeparatorConfig()  # visual_dim / num_classes are set in run
    train: TrainConfig = TrainConfig(steps=1500, batch_size=16, log_every=25,
                                     eval_every=500, checkpoint_every=500)
    optim: OptimConfig = OptimConfig(learning_rate=1e-3, warmup_steps=50)
    train_split: str = "train"
    eval_split: str = "validation"
    eval_mixtures: int = 96  # per mixture kind (each scored with every query kind)
    eval_batch_size: int = 16
    val_mixtures: int = 16  # per query kind, different-class, for the periodic hook
    sdr_filter_length: int = 512  # BSS-Eval distortion filter taps
    text_cache: str | None = None  # where text-query embeddings are cached (None: workdir)
    seed: int = 0

    @classmethod
    def tiny(cls, **overrides) -> SeparationConfig:
        """Tests: a small U-Net, 0.6 s mixtures of the tiny set, 100 steps."""
        base = dict(
            mix=MixConfig(crop_s=0.6, crop_size=16),
            separator=SeparatorConfig(width=8, depth=3, query_dim=32),
            train=TrainConfig(steps=100, batch_size=8, log_every=20, eval_every=1000,
                              checkpoint_every=1000, progress=False),
            optim=OptimConfig(learning_rate=3e-3, warmup_steps=5,
                              end_learning_rate_factor=0.3),
            eval_split="train", eval_mixtures=16, eval_batch_size=8, val_mixtures=8,
        )
        return cls(**{**base, **overrides})


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    task: str = "classify"  # the head: classify | seld | localise | separate
    init: str = "random"  # 'random' or a pretraining work directory
    fmt: str | None = None  # audio input format; None: the checkpoint's (random: foa)
    finetune: bool = False  # train the encoders too (default: frozen)
    model_preset: str = "default"  # pretraining preset whose model a random init uses
    model: ModelConfig | None = None  # random init: the model (get_config fills it in)
    data: DataConfig = DataConfig()
    head: HeadConfig = HeadConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: ProbeEvalConfig = ProbeEvalConfig()
    cache: FeatureCacheConfig = FeatureCacheConfig()
    separation: SeparationConfig = SeparationConfig()  # the separate head's own settings
    # Training clips whose labels the head (or fine-tuning) may use: a subset drawn with the
    # probe seed, nested across fractions (data.label_subset)
    label_fraction: float = 1.0

    def __post_init__(self):
        if self.task not in HEADS:
            raise ValueError(f"unknown head {self.task!r}; expected one of {HEADS}")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.eval.seeds < 1 or self.cache.n_augment < 1:
            raise ValueError(f"eval.seeds and cache.n_augment must be >= 1, got "
                             f"{self.eval.seeds} and {self.cache.n_augment}")
        if self.fmt is not None and self.fmt not in FORMATS:
            raise ValueError(f"unknown format {self.fmt!r}; expected one of {FORMATS}")


def tiny() -> ProbeConfig:
    """Tests: the tiny synthetic set and the tiny model, a few steps."""
    pipeline = PipelineConfig(crop_s=1.0, rotation="none", view_size=16, frame_stride=2,
                              cache_records=True)
    return ProbeConfig(
        model_preset="tiny",
        data=DataConfig(synthetic_preset="tiny", pipeline=pipeline),
        head=HeadConfig(hidden=32, grid_az=12, grid_el=6),
        optim=OptimConfig(learning_rate=3e-3, warmup_steps=2, weight_decay=0.0),
        train=TrainConfig(steps=8, batch_size=4, log_every=2, checkpoint_every=1000,
                          progress=False),
        eval=ProbeEvalConfig(max_clips=4, batch_size=4, maps=2),
        separation=SeparationConfig.tiny(),
    )


def default() -> ProbeConfig:
    """CPU: the default synthetic set with the pretraining default's crops (2 s audio, 60 deg
    32-pixel crops, every 5th frame), yaw augmentation, a few hundred steps."""
    pipeline = PipelineConfig(crop_s=2.0, rotation="yaw", view_fov=math.pi / 3, view_size=32,
                              frame_stride=5, cache_records=True)
    return ProbeConfig(
        data=DataConfig(synthetic_preset="default", pipeline=pipeline),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=20, weight_decay=1e-4),
        train=TrainConfig(steps=400, batch_size=16, log_every=20, checkpoint_every=200),
        eval=ProbeEvalConfig(max_clips=400, batch_size=16),  # the whole default test split
    )


def gpu() -> ProbeConfig:
    """One GPU: the gpu pretraining preset's model and crops, longer training."""
    pipeline = PipelineConfig(crop_s=2.0, rotation="yaw", view_size=64, frame_stride=2)
    return ProbeConfig(
        model_preset="gpu",
        data=DataConfig(synthetic_preset="default", workers=8, pipeline=pipeline),
        head=HeadConfig(hidden=256),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=200),
        train=TrainConfig(steps=5000, batch_size=64, log_every=50, checkpoint_every=1000),
        eval=ProbeEvalConfig(max_clips=1000, batch_size=64),
    )


def seld() -> ProbeConfig:
    """The supervised SELD reference on CPU: ``default`` with the activity logits (see
    ``seld.make_loss_fn``) and 12000 steps (~14.5 min per probe seed on 2 idle cores),
    decoded at activity probability 0.9, the best of 0.6 / 0.8 / 0.9 on the validation split
    (test split, 3 seeds: ``results/downstream.md``). Run it as
    ``--head seld --config seld --init random --finetune``; with a pretraining work directory
    as ``--init`` it is the fine-tuning counterpart."""
    cfg = default()
    return dataclasses.replace(
        cfg, head=dataclasses.replace(cfg.head, activity_weight=1.0, threshold=0.9),
        train=dataclasses.replace(cfg.train, steps=12_000, checkpoint_every=3000))


PRESETS = {"tiny": tiny, "default": default, "gpu": gpu, "seld": seld}


def get_config(preset: str = "default", *, task: str = "classify", init: str = "random",
               fmt: str | None = None, finetune: bool = False,
               overrides=()) -> ProbeConfig:
    """A probe preset for ``task`` with ``--set`` overrides applied last."""
    if preset not in PRESETS:
        raise ValueError(f"unknown probe preset {preset!r}; expected one of {list(PRESETS)}")
    cfg = dataclasses.replace(PRESETS[preset](), task=task, init=init, fmt=fmt,
                              finetune=finetune)
    overrides = list(overrides)
    # model_preset first: the model it names is the one the model.* overrides then change
    cfg = apply_overrides(cfg, [o for o in overrides if o.startswith("model_preset=")])
    if init == "random":
        from spatialav import configs

        cfg = dataclasses.replace(cfg, model=configs.PRESETS[cfg.model_preset]().model)
    elif any(o.startswith("model.") for o in overrides):
        raise ValueError(f"--set model.*: the model of {init} comes from its checkpoint; "
                         "model fields can be set only with --init random")
    return apply_overrides(cfg, [o for o in overrides if not o.startswith("model_preset=")])
