"""The pretraining tasks as trainer loss functions.

Every task sees the same kind of input, so objectives compare fairly: a clip becomes K
views (a direction, the FOA turned so that direction is in front and put in the input
format, and the gnomonic crop sequence there) or M objects (the same, toward detected or
ground-truth objects; in ``mono`` the object audio is a beam toward it).

- ``avc``: a clip's audio and video embeddings are the means of its view embeddings;
  symmetric InfoNCE over the global batch (other clips are the negatives).
- ``avsa``: AVSA-viewpoints; each view's tokens pass the context transformer over the K
  views of the clip; negatives are the clip's other views (hard) and the same slot of other
  clips (easy). ``objective.avc_steps`` / ``ramp_steps`` give the AVC -> AVSA curriculum;
  ``objective.pair_weight`` adds the sigmoid loss on the same pairs
  (``objectives.avsa_pair_loss``).
- ``avsa-objects``: object audio vs object crop; negatives are all other valid objects.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spatialav import features, models, objectives
from spatialav.configs import Config
from spatialav.data import pipeline
from spatialav.models import AVModel


def view_tokens(model: AVModel, audio, mix, frames):
    """Encoder tokens of K views of each clip: stored audio ``[B, T, 4]`` and its view
    channel maps ``mix [B, K, 4, C]`` (``pipeline.device_inputs``), crops ``[B, K, n, h, w,
    3]`` -> (audio ``[B, K, D]``, video ``[B, K, D]``)."""
    cfg = model.config
    b, k = mix.shape[:2]
    feats = features.encoder_input_mixed(audio, mix, cfg.audio_fmt, cfg.feature_cfg)
    a = model.audio(feats.reshape(b * k, *feats.shape[2:]))[0].reshape(b, k, -1)
    v = model.video(frames.reshape(b * k, *frames.shape[2:]))[0].reshape(b, k, -1)
    return a, v


def project(model: AVModel, a, v, *, context: bool, mask=None):
    """Unit embeddings ``[B, K, P]`` of view tokens, through the context transformers or not."""
    if context:
        a, v = model.audio_context(a, mask=mask), model.video_context(v, mask=mask)
    return (objectives.l2_normalize(model.audio_proj(a)),
            objectives.l2_normalize(model.video_proj(v)))


def clip_embeddings(a, v):
    """Clip-level embeddings: the normalised mean of the view embeddings ``[B, K, P]``."""
    return objectives.l2_normalize(a.mean(axis=1)), objectives.l2_normalize(v.mean(axis=1))


def variance_penalty(x, target: float = 0.5):
    """Anti-collapse term (the variance term of VICReg) on embeddings ``[..., D]``.

    Mean over dimensions of ``relu(target - sqrt(D) std_d)`` of the unit embeddings, the std
    taken over all leading axes. Unit vectors spread evenly over the sphere have
    ``sqrt(D) std_d`` ~ 1; a collapsed set (every embedding the same) has 0, where the
    contrastive losses have zero gradient but this term does not.
    """
    x = objectives.l2_normalize(x).reshape(-1, x.shape[-1])
    std = jnp.sqrt(jnp.var(x, axis=0) + 1e-6) * jnp.sqrt(x.shape[-1])
    return jnp.mean(jax.nn.relu(target - std))


def make_loss_fn(cfg: Config):
    """``loss_fn(model, batch, rng, step) -> (loss, metrics)`` for ``cfg.task``."""
    pcfg, obj, task = cfg.data.pipeline, cfg.objective, cfg.task
    curriculum = task == "avsa" and (obj.avc_steps > 0 or obj.ramp_steps > 0)

    def loss_fn(model, batch, rng, step):
        x = pipeline.device_inputs(batch, pcfg)
        if task == "avsa-objects":
            a, v = view_tokens(model, x["stored_audio"], x["object_mix"], x["object_frames"])
            a, v = project(model, a, v, context=False)
            loss, metrics = objectives.avsa_object_loss(a, v, x["object_valid"], obj.tau)
            return loss, metrics | object_counts(x["object_valid"])
        a_tok, v_tok = view_tokens(model, x["stored_audio"], x["view_mix"],
                                   x["view_frames"])
        if task == "avc":
            return objectives.avc_loss(*clip_embeddings(*project(model, a_tok, v_tok,
                                                                 context=False)), obj.tau)
        a, v = project(model, a_tok, v_tok, context=True)
        avsa, metrics = objectives.avsa_viewpoint_loss(a, v, obj.tau)
        loss = avsa
        if obj.variance_weight:
            metrics["variance"] = variance_penalty(a) + variance_penalty(v)
            loss = loss + obj.variance_weight * metrics["variance"]
        if obj.pair_weight:
            pair, pair_metrics = objectives.avsa_pair_loss(a, v, obj.tau)
            metrics.update(pair_metrics)
            loss = loss + obj.pair_weight * pair
        if curriculum:
            w_avc, w_avsa = objectives.curriculum(step, obj.avc_steps, obj.ramp_steps)
            avc, _ = objectives.avc_loss(
                *clip_embeddings(*project(model, a_tok, v_tok, context=False)), obj.tau)
            metrics.update(avc_loss=avc, w_avsa=w_avsa)
            loss = w_avc * avc + w_avsa * loss
        metrics["avsa_loss"] = avsa  # the trainer logs the total as "loss"
        return loss, metrics

    return loss_fn


def object_counts(valid) -> dict:
    """How many objects a batch's clips hold, from their ``object_valid [B, M]``: the mean
    number per clip and the fraction of clips with at least one (the rest train on nothing)."""
    valid = jnp.asarray(valid, bool)
    return {"objects_per_clip": jnp.mean(jnp.sum(valid, -1)),
            "clips_with_objects": jnp.mean(jnp.any(valid, -1))}


def init_model(cfg: Config) -> AVModel:
    return models.init_model(cfg.model, seed=cfg.train.seed)
