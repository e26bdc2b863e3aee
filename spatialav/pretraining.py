"""The pretraining tasks as trainer loss functions, and their validation hook.

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

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spatialav import configs, features, models, objectives
from spatialav.configs import Config
from spatialav.data import pipeline
from spatialav.metrics.retrieval import binary_probe, retrieval_accuracy
from spatialav.models import AVModel
from spatialav.train import mesh as mesh_lib


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


class ValidationHook:
    """AVC retrieval and the binary AVSA probe on validation clips.

    Each clip is seen from K fixed viewpoints. *AVC retrieval*: top-1 accuracy of finding a
    clip's video from its audio and back, among all validation clips (clip embeddings as in
    training). *Binary AVSA probe* (is the audio rotated with respect to the video?): pairs
    (crop k, audio turned to view k) are aligned, (crop k, audio turned to view k + 1, at
    least the viewpoint separation away) are not; a logistic regression on the elementwise
    product of the two embeddings is fit on one half of the clips (its L2 penalty chosen by
    cross-validation within that half) and scored on the other, both ways round
    (``metrics.retrieval.binary_probe``).
    ``avsa_pairwise`` is the probe without training: how often the aligned audio is the more
    similar of the two.

    A one-clip validation split (a converted set of a few recordings) degrades, never stops
    training: the probe, which holds out half of the clips, is NaN, with one warning.

    For ``avsa-objects`` also the training objective's accuracies on the validation clips'
    objects (from ground-truth boxes or detections, as in training; no rotation):
    ``objects_acc`` (an object's beam finds its crop among all validation objects and back),
    ``objects_acc_hard`` (among the other objects of its clip), ``objects_per_clip`` and
    ``clips_with_objects`` (``object_counts``).
    """

    def __init__(self, cfg: Config, dataset_dir, mesh, *, seed: int = 1234):
        self.every = cfg.eval.every
        self.context = cfg.task == "avsa"
        self.max_clips = cfg.eval.max_clips
        self.pcfg = dataclasses.replace(cfg.data.pipeline, num_views=cfg.eval.views,
                                        num_objects=0, rotation="none")
        self.mesh = mesh
        self.loader = pipeline.make_loader(
            dataset_dir, self.pcfg, split="validation", batch_size=cfg.eval.batch_size
            // jax.process_count(), seed=seed, train=False)
        self.dataset_dir = dataset_dir
        self._embed = None
        self._warned = False
        self.tau = cfg.objective.tau
        self.object_loader = self._embed_objects = None
        if cfg.task == "avsa-objects":
            self.object_pcfg = dataclasses.replace(cfg.data.pipeline, rotation="none")
            self.object_loader = pipeline.make_loader(
                dataset_dir, self.object_pcfg, split="validation",
                batch_size=cfg.eval.batch_size // jax.process_count(), seed=seed, train=False)

    def _compile(self, graphdef, pcfg, objects: bool):
        context = self.context and not objects
        prefix = "object" if objects else "view"

        def embed(state, batch):
            model = nnx.merge(graphdef, state)
            x = pipeline.device_inputs(batch, pcfg)
            tokens = view_tokens(model, x["stored_audio"], x[f"{prefix}_mix"],
                                 x[f"{prefix}_frames"])
            a, v = project(model, *tokens, context=context)
            return (a, v, x["object_valid"]) if objects else (a, v), batch["mask"]

        return jax.jit(embed, out_shardings=mesh_lib.replicated(self.mesh))

    def _gather(self, embed, loader, state, keys) -> list[np.ndarray]:
        """``embed``'s outputs on up to ``max_clips`` validation clips (padding dropped)."""
        parts, n = [], 0
        for local in loader:
            local = {k: v for k, v in local.items() if k in (*keys, "audio", "frames",
                                                             "rotation", "mask")}
            out, mask = jax.device_get(embed(state, mesh_lib.global_batch(local, self.mesh)))
            parts.append([x[mask] for x in out])
            n += int(mask.sum())
            if n >= self.max_clips:
                break
        return [np.concatenate(col)[: self.max_clips] for col in zip(*parts, strict=True)]

    def embeddings(self, model) -> tuple[np.ndarray, np.ndarray]:
        """Per-view validation embeddings (audio, video), each ``[N, K, P]``."""
        graphdef, state = nnx.split(model)
        if self._embed is None:
            self._embed = self._compile(graphdef, self.pcfg, objects=False)
        a, v = self._gather(self._embed, self.loader, state, ("view_dirs",))
        return a, v

    def object_metrics(self, model) -> dict[str, float]:
        """The object-level accuracies and object counts of the validation clips."""
        graphdef, state = nnx.split(model)
        if self._embed_objects is None:
            self._embed_objects = self._compile(graphdef, self.object_pcfg, objects=True)
        a, v, valid = self._gather(self._embed_objects, self.object_loader, state,
                                   ("object_dirs", "object_valid"))
        _, m = objectives.avsa_object_loss(a, v, valid, self.tau)
        counts = object_counts(valid)
        return {"objects_acc": float(m["acc"]), "objects_acc_hard": float(m["acc_hard"]),
                **{k: float(x) for k, x in counts.items()}}

    def __call__(self, model, step: int) -> dict[str, float]:
        a, v = self.embeddings(model)
        if len(a) < MIN_PROBE_CLIPS and not self._warned:
            self._warned = True
            warnings.warn(f"the validation split of {self.dataset_dir} has {len(a)} clip; the "
                          f"binary AVSA probe needs at least {MIN_PROBE_CLIPS}, so "
                          "eval/avsa_probe is NaN", stacklevel=2)
        out = avsa_metrics(a, v) | {"avc_retrieval": retrieval_accuracy(*clip_embeddings(a, v)),
                                    "avc_chance": 1.0 / len(a)}
        return out | (self.object_metrics(model) if self.object_loader is not None else {})


MIN_PROBE_CLIPS = 2  # the binary probe is fit on half of the clips and scored on the other


def probe_pairs(a, v):
    """The binary probe's samples from per-view embeddings ``[N, K, P]``: features ``x [2NK,
    P]`` (aligned pairs (crop k, audio k) first, then misaligned (crop k, audio k + 1)),
    labels ``y`` (1 aligned) and clip ids ``groups``; also the misaligned audio ``[N, K, P]``."""
    n, k = a.shape[:2]
    wrong = np.roll(a, -1, axis=1)  # audio of the next viewpoint: turned away from the crop
    x = np.concatenate([(a * v).reshape(n * k, -1), (wrong * v).reshape(n * k, -1)])
    y = np.concatenate([np.ones(n * k), np.zeros(n * k)])
    groups = np.tile(np.repeat(np.arange(n), k), 2)
    return x, y, groups, wrong


def avsa_metrics(a, v) -> dict[str, float]:
    """Binary AVSA probe and pairwise accuracy from per-view embeddings ``[N, K, P]``."""
    x, y, groups, wrong = probe_pairs(a, v)
    pairwise = np.mean(np.sum(a * v, -1) > np.sum(wrong * v, -1))
    probe = binary_probe(x, y, groups) if len(a) >= MIN_PROBE_CLIPS else float("nan")
    return {"avsa_probe": probe, "avsa_pairwise": float(pairwise)}


def init_model(cfg: Config) -> AVModel:
    return models.init_model(cfg.model, seed=cfg.train.seed)


def model_fingerprint(cfg: Config) -> dict:
    """What a checkpoint's parameters depend on; checked before restoring into a model."""
    return {"model": configs.json_safe(dataclasses.asdict(cfg.model))}
