"""Configs as code: one dataclass tree, four presets, ``--set key=value`` overrides.

A preset is a function returning a ``Config``; the CLI applies ``--set`` on top
(``train.steps=500``, ``model.audio_width=128``, ``data.pipeline.num_views=6``). Angles in
the pipeline config are radians, as everywhere inside the code.
"""

from __future__ import annotations

import dataclasses
import math

from spatialav import features
from spatialav.configs.overrides import apply_overrides, from_dict
from spatialav.data.pipeline import PipelineConfig
from spatialav.models import ModelConfig
from spatialav.train import OptimConfig, TrainConfig

TASKS = ("avc", "avsa", "avsa-objects")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # 'synthetic' (built-in, built on first use) or a dataset dir
    synthetic_preset: str = "default"  # tiny | small | default
    root: str = "~/.cache/spatialav"  # where the synthetic dataset is built
    workers: int = 0  # grain worker processes
    build_workers: int | None = None  # processes for building the synthetic set (None: all)
    pipeline: PipelineConfig = PipelineConfig()


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    tau: float = 0.07
    avc_steps: int = 0  # AVC -> AVSA curriculum: AVC alone for this many steps (avsa tasks)
    ramp_steps: int = 0  # then move linearly to AVSA over this many steps
    variance_weight: float = 0.0  # anti-collapse term (pretraining.variance_penalty), avsa
    # avsa: + pair_weight x the sigmoid loss on the same pairs (objectives.avsa_pair_loss,
    # logits cos / tau)
    pair_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    every: int = 200  # steps between validation runs (also run after the last step)
    max_clips: int = 256  # validation clips per run
    batch_size: int = 32
    views: int = 4  # viewpoints per validation clip for the probes


@dataclasses.dataclass(frozen=True)
class Config:
    task: str = "avsa"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        fmt = self.data.pipeline.input_format
        if self.model.audio_fmt != fmt:
            raise ValueError(
                f"model.audio_fmt={self.model.audio_fmt!r} must equal "
                f"data.pipeline.input_format={fmt!r} (set both, or use --format)"
            )


def with_task(cfg: Config, task: str) -> Config:
    """Fit the pipeline to a task: K viewpoints for avc / avsa, M objects for avsa-objects
    (K = M = the preset's larger count, 4 if it sets neither)."""
    p = cfg.data.pipeline
    k = max(p.num_views, p.num_objects) or 4
    if task == "avsa-objects":
        p = dataclasses.replace(p, num_views=0, num_objects=k)
    else:
        p = dataclasses.replace(p, num_views=k, num_objects=0)
    return dataclasses.replace(cfg, task=task, data=dataclasses.replace(cfg.data, pipeline=p))


def with_format(cfg: Config, fmt: str) -> Config:
    """Set the audio input format (foa | stereo | mono) of the pipeline and the model together."""
    data = dataclasses.replace(
        cfg.data, pipeline=dataclasses.replace(cfg.data.pipeline, input_format=fmt)
    )
    return dataclasses.replace(cfg, data=data, model=dataclasses.replace(cfg.model, audio_fmt=fmt))


# --- presets ---------------------------------------------------------------------------------


def tiny() -> Config:
    """Tests: a few-thousand-parameter model on the tiny synthetic set, a handful of steps."""
    pipeline = PipelineConfig(crop_s=1.0, num_views=3, view_min_separation=math.pi / 4,
                              view_size=16, object_size=16, frame_stride=2, cache_records=True)
    return Config(
        data=DataConfig(synthetic_preset="tiny", pipeline=pipeline),
        model=ModelConfig.tiny(),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=2),
        train=TrainConfig(steps=6, batch_size=4, log_every=2, checkpoint_every=3,
                          progress=False),
        eval=EvalConfig(every=6, max_clips=8, batch_size=4, views=3),
    )


def default() -> Config:
    """The CPU demo: trains on the default synthetic set in minutes on a 2-core laptop.

    Chosen by measurement (results/pretrain_default.md): viewpoints centred on the scene's
    objects (uniform views at 90 deg mostly show bare walls: a sprite covers ~1 % of the
    sphere), 60 deg crops (sprites 8-16 px of 32), 3 views (more of them on an object), yaw
    augmentation only (so3 tilts every crop, which the small CNN cannot undo in minutes and
    evaluation never shows), Y/Z/X levels relative to W at the audio input (the views of a
    clip share W), few frames (the sprites barely move), tau 0.1, and an anti-collapse
    variance term (without it the audio embeddings collapse to one point within ~20 steps
    at lr >= 2e-4 and the AVSA loss sits at log(#candidates) with zero gradient). Beside
    InfoNCE, which only ranks each anchor's candidates, a sigmoid loss on the same pairs
    (weight 3) puts aligned and misaligned views of all clips on either side of one
    threshold, which is what the binary probe asks; and a visual width of 32 (16 saturated:
    the probe sat at ~0.79 with the sigmoid term, at any step count). 6000 steps fill the
    15 minutes at ~125 clips/s (records cached in memory, one STFT per clip); the probe
    flattens from ~4500 steps.
    """
    pipeline = PipelineConfig(crop_s=1.0, num_views=3, view_min_separation=math.pi / 3,
                              view_sampling="objects", view_jitter=math.pi / 18,
                              view_fov=math.pi / 3, view_size=32, object_size=32,
                              frame_stride=5, rotation="yaw", cache_records=True)
    model = ModelConfig(audio_width=128, audio_depth=3, audio_blocks=1, visual_width=32,
                        visual_depth=3, embed_dim=128, proj_hidden=256, proj_dim=64,
                        feature_cfg=features.FeatureConfig(n_mels=32),
                        audio_relative_levels=True)
    return Config(
        data=DataConfig(synthetic_preset="default", pipeline=pipeline),
        model=model,
        objective=ObjectiveConfig(tau=0.1, variance_weight=1.0, pair_weight=3.0),
        optim=OptimConfig(learning_rate=4e-4, warmup_steps=20, weight_decay=1e-4),
        train=TrainConfig(steps=6000, batch_size=16, log_every=10, checkpoint_every=1500),
        eval=EvalConfig(every=1500, max_clips=200, batch_size=40, views=3),
    )


def gpu() -> Config:
    """One GPU: the full-size model, bf16 compute, bigger batches and crops, worker processes."""
    pipeline = PipelineConfig(crop_s=2.0, num_views=4, view_min_separation=math.pi / 3,
                              view_size=64, object_size=64, frame_stride=2)
    return Config(
        data=DataConfig(synthetic_preset="default", workers=8, pipeline=pipeline),
        model=ModelConfig(dtype="bfloat16"),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=500),
        train=TrainConfig(steps=20_000, batch_size=64, log_every=50, checkpoint_every=1000),
        eval=EvalConfig(every=1000, max_clips=512, batch_size=64, views=4),
    )


def pod() -> Config:
    """A TPU pod slice / GPU cluster on real data (YT-360): the global batch spans all hosts.

    YT-360 has about 88k 10-s training clips, so 20k steps of 1024 random 2-s crops are
    about 230 passes over the clips (the 100k steps this preset had were over 1100). The
    learning rate is the gpu preset's scaled by sqrt(1024 / 64) for Adam, with a 5 %
    warm-up. Checkpoints every 500 steps (minutes apart) bound the work lost to a failure
    that gives no SIGTERM; a preemption checkpoints on its own. Input decoding, not the
    chips, bounds throughput (experiments/launch/README.md), hence many loader workers per
    host; SLURM runs one process per GPU and sets fewer (experiments/launch/slurm_gpu.sbatch).
    """
    cfg = gpu()
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, source="", workers=32),
        train=dataclasses.replace(cfg.train, steps=20_000, batch_size=1024,
                                  checkpoint_every=500),
        optim=dataclasses.replace(cfg.optim, learning_rate=4e-3, warmup_steps=1000),
        eval=dataclasses.replace(cfg.eval, every=1000, max_clips=2048, batch_size=256),
    )


PRESETS = {"tiny": tiny, "default": default, "gpu": gpu, "pod": pod}


def get_config(preset: str = "default", *, task: str = "avsa", fmt: str | None = None,
               overrides: list[str] = ()) -> Config:
    """A preset, fitted to ``task`` and ``fmt``, with ``--set`` overrides applied last."""
    if preset not in PRESETS:
        raise ValueError(f"unknown config preset {preset!r}; expected one of {list(PRESETS)}")
    cfg = with_task(PRESETS[preset](), task)
    if fmt is not None:
        cfg = with_format(cfg, fmt)
    return check_task(apply_overrides(cfg, list(overrides)))


def check_task(cfg: Config) -> Config:
    """``cfg``, if its pipeline gives the task what its loss contrasts: two or more viewpoints
    for avc / avsa (AVSA tells the views of a clip apart; AVC compares clips through them),
    one or more objects for avsa-objects; else ValueError naming the field to set."""
    p = cfg.data.pipeline
    field, have, need = (("num_objects", p.num_objects, 1) if cfg.task == "avsa-objects"
                         else ("num_views", p.num_views, 2))
    if have < need:
        raise ValueError(f"task {cfg.task} needs data.pipeline.{field} >= {need}, got {have}")
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def json_safe(x):
    """``x`` (a config's ``to_dict``, metrics, a summary) with what JSON cannot hold made
    plain: tuples -> lists, keys -> str, numpy / JAX scalars -> Python numbers, NaN -> None
    (strict JSON has no NaN; infinities stay, as json writes them)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return [json_safe(v) for v in x]
    if getattr(x, "shape", None) == () and hasattr(x, "item"):  # numpy / JAX scalars
        return json_safe(x.item())
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def config_from_dict(d: dict, source: str = "<dict>") -> Config:
    """A ``Config`` from ``to_dict`` / its JSON (a run's ``config.json`` holds one)."""
    return from_dict(Config, d, source)


__all__ = ["Config", "DataConfig", "EvalConfig", "ObjectiveConfig", "PRESETS", "TASKS",
           "apply_overrides", "check_task", "config_from_dict", "get_config", "json_safe",
           "to_dict", "with_format", "with_task"]
