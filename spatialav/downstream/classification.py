"""Classification probe: a linear multi-label classifier on pooled encoder embeddings.

A clip crop's targets are the classes of its DCASE label rows (any class active at some
100 ms frame of the crop), so the same probe runs on the synthetic set and on STARSS23. The
input is the audio encoder's pooled embedding of the crop, optionally concatenated with the
visual encoder's pooled embedding of the crop's equirect frames (``use_video``). Trained with
binary cross-entropy per class; scored by mAP (mean over classes that occur of the average
precision) and two accuracies: ``top1_accuracy`` (the highest-scoring class is one of the
crop's classes; crops without events are skipped) and ``label_accuracy`` (per class and crop,
score > 0 agrees with the target).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from spatialav import features
from spatialav.data import transforms as T


def multi_hot(labels, label_mask, n_classes: int):
    """``[B, L, 6]`` DCASE rows (``label_mask [B, L]``) -> ``[B, C]`` float32 class presence."""
    cls = jnp.asarray(labels)[..., T.L_CLASS].astype(jnp.int32)
    hot = (cls[..., None] == jnp.arange(n_classes)) & jnp.asarray(label_mask, bool)[..., None]
    return jnp.any(hot, axis=1).astype(jnp.float32)


def average_precision(scores, targets) -> float:
    """Average precision of one class (scikit-learn's definition: no interpolation, tied
    scores form one threshold). NaN when there is no positive."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets, bool)
    n_pos = targets.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], targets[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each run of equal scores
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores, targets) -> float:
    """Mean AP over the classes with at least one positive (``[N, C]`` each)."""
    aps = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


def classification_metrics(scores, targets) -> dict[str, float]:
    scores, targets = np.asarray(scores), np.asarray(targets) > 0.5
    has = targets.any(1)
    top1 = targets[np.arange(len(scores)), scores.argmax(1)][has]
    return {"mAP": mean_average_precision(scores, targets),
            "top1_accuracy": float(top1.mean()) if len(top1) else float("nan"),
            "label_accuracy": float(np.mean((scores > 0) == targets)),
            "clips": int(len(scores))}


class ClassifyHead(nnx.Module):
    """Embedding ``[B, D]`` -> ``[B, C]`` logits: a parameter-free normalisation, then linear.

    The normalisation keeps the probe linear in the embedding while putting every encoder's
    embedding at one scale, so one learning rate suits all inits."""

    def __init__(self, dim: int, n_classes: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(dim, use_scale=False, use_bias=False, rngs=rngs)
        self.linear = nnx.Linear(dim, n_classes, rngs=rngs)

    def __call__(self, emb):
        return self.linear(self.norm(emb.astype(jnp.float32)))


class ClassifyProbe(nnx.Module):
    """Pooled audio (+ visual) embedding -> ``ClassifyHead`` -> ``[B, C]`` logits."""

    def __init__(self, encoders, n_classes: int, *, use_video: bool = False, rngs: nnx.Rngs):
        self.audio, self.fmt, self.feature_cfg = encoders.audio, encoders.fmt, encoders.feature_cfg
        self.video = encoders.video if use_video else None
        dim = encoders.config.embed_dim * (2 if use_video else 1)
        self.head = ClassifyHead(dim, n_classes, rngs=rngs)

    def __call__(self, audio, frames=None):
        emb = self.audio(features.encoder_input(audio, self.fmt, self.feature_cfg))[0]
        if self.video is not None:
            emb = jnp.concatenate([emb, self.video(frames)[0]], axis=-1)
        return self.head(emb)


def cached_embedding(batch):
    """The ``ClassifyHead`` input of a batch of cached features (``feature_cache``): the pooled
    audio embedding, with the pooled visual one appended when the cache has it."""
    if "video" in batch:
        return jnp.concatenate([batch["pooled"], batch["video"]], axis=-1)
    return batch["pooled"]


def make_loss_fn(pcfg, n_classes: int, cached: bool = False):
    """Trainer ``loss_fn``: mean binary cross-entropy of a ``ClassifyProbe`` on clip batches,
    or (``cached``) of a ``ClassifyHead`` on batches of cached features."""
    from spatialav.data import pipeline

    def loss_fn(model, batch, rng, step):
        if cached:
            logits = model(cached_embedding(batch))
        elif model.video is not None:
            x = pipeline.device_inputs(batch, pcfg)
            logits = model(x["audio"], x["frames"])
        else:
            logits = model(pipeline.device_audio(batch, model.fmt))
        y = multi_hot(batch["labels"], batch["label_mask"], n_classes)
        loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))
        return loss, {"bce": loss}

    return loss_fn
