"""The optimiser: AdamW with linear warmup, cosine decay and global-norm clipping."""

from __future__ import annotations

import dataclasses

import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    learning_rate: float = 1e-3
    end_learning_rate_factor: float = 0.01  # cosine decays to this fraction of the peak
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.999


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=cfg.learning_rate * cfg.end_learning_rate_factor,
    )


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2,
                    weight_decay=cfg.weight_decay),
    )
