"""Validation of a pretraining run: AVC retrieval and the binary AVSA probe on the validation
clips (``ValidationHook``), and ``validation_hooks``, which degrades to none on a dataset
without validation clips."""

from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from spatialav import objectives
from spatialav.configs import Config
from spatialav.data import pipeline, storage
from spatialav.metrics.logistic_probe import binary_probe
from spatialav.metrics.retrieval import retrieval_accuracy
from spatialav.pretraining.tasks import clip_embeddings, object_counts, project, view_tokens
from spatialav.train import evaluate


class ValidationHook:
    """AVC retrieval and the binary AVSA probe on validation clips.

    Each clip is seen from K fixed viewpoints. *AVC retrieval*: top-1 accuracy of finding a
    clip's video from its audio and back, among all validation clips (clip embeddings as in
    training). *Binary AVSA probe* (is the audio rotated with respect to the video?): pairs
    (crop k, audio turned to view k) are aligned, (crop k, audio turned to view k + 1, at
    least the viewpoint separation away) are not; a logistic regression on the elementwise
    product of the two embeddings is fit on one half of the clips (its L2 penalty chosen by
    cross-validation within that half) and scored on the other, both ways round
    (``metrics.logistic_probe.binary_probe``).
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

        def embed(model, batch):
            x = pipeline.device_inputs(batch, pcfg)
            tokens = view_tokens(model, x["stored_audio"], x[f"{prefix}_mix"],
                                 x[f"{prefix}_frames"])
            a, v = project(model, *tokens, context=context)
            return (a, v, x["object_valid"]) if objects else (a, v), batch["mask"]

        return evaluate.jit_apply(embed, graphdef, self.mesh)

    def _gather(self, embed, loader, state, keys) -> list[np.ndarray]:
        """``embed``'s outputs on up to ``max_clips`` validation clips (padding dropped)."""
        parts, n = [], 0
        for local in loader:
            local = {k: v for k, v in local.items() if k in (*keys, "audio", "frames",
                                                             "rotation", "mask")}
            out, mask = embed(state, local)
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


def validation_hooks(cfg: Config, dataset: Path, mesh) -> list:
    """The validation hook, or none (with a warning) when the dataset has no validation clips:
    a converted set of one recording, or one converted with --validation-fraction 0, still
    trains."""
    splits = storage.load_builder(dataset).info.splits
    if "validation" in splits and splits["validation"].num_examples:
        return [ValidationHook(cfg, dataset, mesh)]
    if jax.process_index() == 0:
        why = "is empty" if "validation" in splits else f"is missing (it has {sorted(splits)})"
        print(f"warning: the validation split of {dataset} {why}; training without validation "
              "metrics. Convert with --validation-fraction 0.1 (the default) and two or more "
              "recordings to get one.", file=sys.stderr, flush=True)
    return []
