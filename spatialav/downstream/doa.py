"""DOA probe: the direction of each active sound, per 100 ms label frame, given oracle activity.

What SELD mixes with detection, this probe isolates: how linearly the encoder's sequence
holds *where* each class sounds. Per label frame and class the head regresses a direction (a
linear map of the parameter-free normalised sequence pooled to label frames, as
``seld.label_pooling``; normalised to a unit vector), and it is trained and scored only on the
(frame, class) cells with exactly one event of that class (the reference activity is the
oracle; cells with two same-class events have no single answer and are left out, as are
silent ones). Loss: 1 - cosine to the reference direction. Scores over the evaluation cells:
median and mean angular error (degrees) and the fraction within 20 deg (DCASE's threshold).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from spatialav import features
from spatialav.data import pipeline
from spatialav.downstream.seld import (
    LABEL_HOP_S,
    label_pooling,
    sequence_timing,
    targets_from_rows,
)

WITHIN_DEG = 20.0


class DOAHead(nnx.Module):
    """Sequence ``[B, T', D]`` -> unit directions ``[B, F, C, 3]`` at ``n_labels`` label frames."""

    def __init__(self, dim: int, n_classes: int, *, step_s: float, hop_s: float,
                 rngs: nnx.Rngs):
        self.n_classes, self.step_s, self.hop_s = n_classes, step_s, hop_s
        self.norm = nnx.LayerNorm(dim, use_scale=False, use_bias=False, rngs=rngs)
        self.linear = nnx.Linear(dim, 3 * n_classes, rngs=rngs)

    def __call__(self, seq, n_labels: int):
        pool = jnp.asarray(label_pooling(seq.shape[1], n_labels, self.step_s, self.hop_s))
        x = jnp.einsum("ft,btd->bfd", pool, self.norm(seq.astype(jnp.float32)))
        y = self.linear(x).reshape(*x.shape[:2], self.n_classes, 3)
        return y / jnp.maximum(jnp.linalg.norm(y, axis=-1, keepdims=True), 1e-9)


class DOAProbe(nnx.Module):
    """Audio encoder (frozen or not) + ``DOAHead``; input: audio ``[B, T, C]`` in the format."""

    def __init__(self, encoders, n_classes: int, *, rngs: nnx.Rngs):
        self.audio, self.fmt, self.feature_cfg = encoders.audio, encoders.fmt, encoders.feature_cfg
        step_s, hop_s = sequence_timing(encoders)
        self.head = DOAHead(encoders.config.embed_dim, n_classes, step_s=step_s, hop_s=hop_s,
                            rngs=rngs)

    def __call__(self, audio):
        n_labels = int(round(audio.shape[-2] / self.feature_cfg.sample_rate / LABEL_HOP_S))
        feats = features.encoder_input(audio, self.fmt, self.feature_cfg)
        return self.head(self.audio(feats)[1], n_labels)


def single_event_targets(accdoa, n_events):
    """(reference directions ``[..., F, C, 3]``, scored cells ``[..., F, C]`` bool) from
    ``AddTargets`` / ``targets_from_rows`` fields: the cells with exactly one event."""
    return accdoa[..., 0, :, :], n_events == 1


def make_loss_fn(cached_frames: int | None = None):
    """Trainer ``loss_fn``: mean 1 - cosine over the single-event cells, for a ``DOAProbe`` on
    clip batches with ``AddTargets`` fields, or (``cached_frames`` label frames per example) a
    bare ``DOAHead`` on batches of cached sequences ``seq`` with those fields."""

    def loss_fn(model, batch, rng, step):
        if cached_frames is None:
            pred = model(pipeline.device_audio(batch, model.fmt))
        else:
            pred = model(batch["seq"], cached_frames)
        target, cells = single_event_targets(batch["accdoa"], batch["n_events"])
        w = cells.astype(jnp.float32)
        loss = jnp.sum((1.0 - jnp.sum(pred * target, -1)) * w) / jnp.maximum(jnp.sum(w), 1.0)
        return loss, {"one_minus_cos": loss, "cells": jnp.sum(w)}

    return loss_fn


def clip_errors(pred, rows, n_frames: int, n_classes: int) -> np.ndarray:
    """Angular errors (degrees) of one clip's output ``pred [F, C, 3]`` (cut to its
    ``n_frames``) at its single-event cells, from its reference DCASE ``rows``."""
    acc, _, n_events = targets_from_rows(rows, np.ones(len(rows), bool), n_frames, n_classes)
    target, cells = single_event_targets(acc, n_events)
    p, t = np.asarray(pred, np.float64)[cells], np.asarray(target, np.float64)[cells]
    cross = np.linalg.norm(np.cross(p, t), axis=-1)
    return np.degrees(np.arctan2(cross, np.sum(p * t, -1)))


def doa_metrics(errors: np.ndarray) -> dict[str, float]:
    """Scores of angular errors pooled over clips: median, mean, fraction within 20 deg."""
    if not len(errors):
        return {"median_deg": float("nan"), "mean_deg": float("nan"),
                "within_20deg": float("nan")}
    return {"median_deg": float(np.median(errors)), "mean_deg": float(np.mean(errors)),
            "within_20deg": float(np.mean(errors <= WITHIN_DEG))}
