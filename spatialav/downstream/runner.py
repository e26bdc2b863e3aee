"""Train a head with the shared trainer, then score it on the evaluation split.

``run(cfg, workdir)`` loads the encoders (``encoders.load_encoders``), checks the dataset has
DCASE labels, trains the head (classify, seld; localisation needs no training) with
``spatialav.train.Trainer`` and a head-specific ``loss_fn``, scores it on ``cfg.eval.split``
and writes ``probe.json`` (also returned). ``separate`` is delegated to
``spatialav.downstream.separation.run(cfg, workdir)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from spatialav import configs
from spatialav.data import pipeline, storage
from spatialav.downstream import classification, data, localisation, seld
from spatialav.downstream.config import ProbeConfig
from spatialav.downstream.encoders import Encoders, load_encoders
from spatialav.metrics.seld import SELDEvaluator


def run(cfg: ProbeConfig, workdir: str, separation_overrides=()) -> dict:
    """Train (if the head needs it) and score ``cfg.task``; returns what ``probe.json`` holds.

    ``separation_overrides``: ``--set separation.<field>=v`` items for the separation
    head's own ``SeparationConfig`` (without the ``separation.`` prefix).
    """
    if cfg.task == "separate":
        return run_separation(cfg, workdir, separation_overrides)
    dataset = data.resolve(cfg.data)
    data.require_groups(dataset, ("labels",), cfg.task)
    classes = data.class_names(dataset)
    enc = encoders_for(cfg)
    pcfg = dataclasses.replace(cfg.data.pipeline, input_format=enc.fmt, num_views=0,
                               num_objects=0)
    os.makedirs(workdir, exist_ok=True)
    check_workdir(workdir, cfg, enc)
    out = {"head": cfg.task, "encoders": enc.describe(), "dataset": str(dataset),
           "split": cfg.eval.split, "classes": list(classes)}
    if cfg.task == "localise":
        if enc.pretrain_config:  # the crops the encoders were trained on
            p = enc.pretrain_config["data"]["pipeline"]
            pcfg = dataclasses.replace(pcfg, view_fov=p["view_fov"], frame_stride=p[
                "frame_stride"], view_size=_size(p["view_size"]))
        out["metrics"] = evaluate_localisation(cfg, pcfg, enc, dataset, workdir)
    else:
        model, train_summary = train_head(cfg, pcfg, enc, dataset, len(classes), workdir)
        if train_summary["preempted"]:
            raise data.HeadPreempted(train_summary["step"], workdir)
        out["train"] = {"step": train_summary["step"], "final": train_summary["final"]}
        if cfg.task == "classify":
            out["metrics"] = evaluate_classification(cfg, pcfg, model, dataset, len(classes))
        else:
            out["metrics"] = evaluate_seld(cfg, pcfg, model, dataset, len(classes), workdir)
    out["workdir"] = os.path.abspath(workdir)
    if jax.process_index() == 0:
        Path(workdir, "probe.json").write_text(json.dumps(_json(out), indent=2))
    return out


def run_separation(cfg: ProbeConfig, workdir: str, overrides=()) -> dict:
    """``spatialav.downstream.separation.run`` with this probe's encoders (only the visual one
    is used), data and seed; its own config is ``SeparationConfig.tiny()`` for the tiny model
    preset, else its default, with ``overrides`` applied (the CLI puts ``--steps`` there)."""
    from spatialav.configs.overrides import apply_overrides
    from spatialav.downstream import separation  # another module's head; imported lazily

    dataset = data.resolve(cfg.data)
    enc = encoders_for(cfg)
    sep = (separation.SeparationConfig.tiny() if cfg.model_preset == "tiny"
           else separation.SeparationConfig())
    sep = apply_overrides(dataclasses.replace(sep, seed=cfg.train.seed), list(overrides))
    metrics = separation.run(sep, enc, workdir, dataset_dir=dataset)
    out = {"head": "separate", "encoders": enc.describe(), "dataset": str(dataset),
           "metrics": metrics, "workdir": os.path.abspath(workdir)}
    if jax.process_index() == 0:
        Path(workdir, "probe.json").write_text(json.dumps(_json(out), indent=2))
    return out


def _size(s):
    return tuple(s) if isinstance(s, list) else s


def encoders_for(cfg: ProbeConfig) -> Encoders:
    """The encoders a probe config asks for: its checkpoint, or random with ``cfg.model`` (by
    default the model of the pretraining preset ``cfg.model_preset``)."""
    model_cfg = None
    if cfg.init == "random":
        model_cfg = cfg.model or configs.PRESETS[cfg.model_preset]().model
    return load_encoders(cfg.init, model_config=model_cfg, fmt=cfg.fmt, finetune=cfg.finetune,
                         seed=cfg.train.seed)


DECODE_FIELDS = ("threshold", "unify_deg")


def check_workdir(workdir: str, cfg: ProbeConfig, enc: Encoders):
    """Refuse to resume another probe's run; record this one's config. The decoding settings
    (threshold, unify_deg) are not part of a run's identity: a trained head can be rescored
    with others."""
    path = Path(workdir) / "config.json"
    head = {k: v for k, v in dataclasses.asdict(cfg.head).items() if k not in DECODE_FIELDS}
    mine = {"task": cfg.task, "encoders": enc.describe(), "head": head}
    if path.exists():
        old = json.loads(path.read_text())
        old["head"] = {k: v for k, v in old.get("head", {}).items() if k not in DECODE_FIELDS}
        if {k: old.get(k) for k in mine} != _json(mine):
            raise ValueError(f"{workdir} holds another probe run ({old.get('task')}, "
                             f"{old.get('encoders')}); use another --workdir")
    if jax.process_index() == 0:
        path.write_text(json.dumps(_json({**mine, "config": dataclasses.asdict(cfg)}),
                                   indent=2))


# --- training ---------------------------------------------------------------------------------


def build_head(cfg: ProbeConfig, enc: Encoders, n_classes: int) -> nnx.Module:
    rngs = nnx.Rngs(cfg.train.seed + 1)
    if cfg.task == "classify":
        return classification.ClassifyProbe(enc, n_classes, use_video=cfg.head.use_video,
                                            rngs=rngs)
    return seld.SELDProbe(enc, n_classes, hidden=cfg.head.hidden, n_tracks=cfg.head.n_tracks,
                          distance=cfg.head.distance, activity=cfg.head.activity_weight > 0,
                          rngs=rngs)


def train_head(cfg: ProbeConfig, pcfg, enc: Encoders, dataset, n_classes: int, workdir: str):
    """Train the head (and, with ``finetune``, the encoders) with the shared trainer."""
    from spatialav.train import Trainer
    from spatialav.train import mesh as mesh_lib

    mesh = mesh_lib.make_mesh()
    local = mesh_lib.per_process_batch_size(cfg.train.batch_size, mesh)
    loader = pipeline.make_loader(dataset, pcfg, split="train", batch_size=local,
                                  seed=cfg.train.seed, workers=cfg.data.workers)
    if cfg.task == "seld":
        n_frames = int(round(pcfg.crop_s / seld.LABEL_HOP_S))
        loader = loader.map(seld.AddTargets(n_frames, n_classes, cfg.head.n_tracks,
                                            need_distance=cfg.head.distance))
        loss_fn = seld.make_loss_fn(cfg.head.distance_weight, cfg.head.activity_weight)
    else:
        loss_fn = classification.make_loss_fn(pcfg, n_classes)
    model = build_head(cfg, enc, n_classes)
    meta = {"probe": cfg.task, "config": _json(dataclasses.asdict(cfg))}
    trainer = Trainer(cfg.train, cfg.optim, model, loss_fn, iter(loader), workdir, meta=meta,
                      mesh=mesh)
    trainer.restore_latest()
    summary = trainer.run()
    return trainer.model(), summary


def _jit_apply(model: nnx.Module, fn):
    """``fn(model, *args)`` jitted once on the model's split state."""
    graphdef, state = nnx.split(model)
    jitted = jax.jit(lambda state, *args: fn(nnx.merge(graphdef, state), *args))
    return lambda *args: jax.device_get(jitted(state, *args))


def _eval_loader(cfg: ProbeConfig, pcfg, dataset):
    return pipeline.make_loader(dataset, pcfg, split=cfg.eval.split,
                                batch_size=cfg.eval.batch_size // jax.process_count(),
                                seed=0, train=False)


# --- evaluation -------------------------------------------------------------------------------


def evaluate_classification(cfg, pcfg, model, dataset, n_classes: int) -> dict:
    """mAP and accuracies on centred crops of the evaluation split."""
    def predict(m, audio, frames):
        if m.video is not None:
            x = pipeline.device_inputs({"audio": audio, "frames": frames,
                                        "rotation": np.broadcast_to(np.eye(3, dtype=np.float32),
                                                                    (len(audio), 3, 3))}, pcfg)
            return m(x["audio"], x["frames"])
        from spatialav.data import transforms as T

        return m(T.to_format(audio, m.fmt))

    apply = _jit_apply(model, predict)
    scores, targets, n = [], [], 0
    for batch in _eval_loader(cfg, pcfg, dataset):
        keep = batch["mask"]
        logits = apply(batch["audio"], batch["frames"])
        y = classification.multi_hot(batch["labels"], batch["label_mask"], n_classes)
        scores.append(np.asarray(logits)[keep])
        targets.append(np.asarray(y)[keep])
        n += int(keep.sum())
        if n >= cfg.eval.max_clips:
            break
    s, t = np.concatenate(scores)[: cfg.eval.max_clips], np.concatenate(targets)[
        : cfg.eval.max_clips]
    return classification.classification_metrics(s, t)


def _clip_name(clip_id) -> str:
    text = clip_id.decode() if isinstance(clip_id, bytes) else str(clip_id)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def evaluate_seld(cfg, pcfg, model, dataset, n_classes: int, workdir: str) -> dict:
    """DCASE 2023 (and, with distance, 2024) SELD scores over whole clips of the split.

    Each clip is cut into consecutive windows of the training crop length (the last one
    zero-padded), the windows' outputs are concatenated and cut to the clip's label frames,
    decoded with the baseline thresholds, and counted against the clip's reference rows.

    Also ``adpit``: the test ADPIT loss, that of the all-silent output, and ``skill`` = 1 -
    their ratio, a threshold-free score that tells heads apart before any output crosses
    the 0.5 activity threshold (0: no better than predicting silence).
    """
    from spatialav.data import transforms as T

    head = cfg.head
    apply = _jit_apply(model, lambda m, audio: m(T.to_format(audio, m.fmt)))
    src = storage.open_split(dataset, cfg.eval.split)
    ev23 = SELDEvaluator(n_classes)
    ev24 = SELDEvaluator(n_classes, distance=True) if head.distance else None
    csv_dir = Path(workdir, "predictions", cfg.eval.split)
    if cfg.eval.write_csv:
        csv_dir.mkdir(parents=True, exist_ok=True)
    bs = cfg.eval.batch_size
    loss = jax.jit(seld.adpit_loss)
    adpit, frames = np.zeros(2), 0  # ADPIT of (head, silent output), summed over label frames
    for i in range(min(len(src), cfg.eval.max_clips)):
        rec = src[i]
        sr = int(rec["sample_rate"])
        win = seld.windows(rec["audio"], int(round(pcfg.crop_s * sr)))
        n_frames = math.ceil(rec["audio"].shape[0] / sr / seld.LABEL_HOP_S - 1e-6)
        accs, dists = [], []
        for j in range(0, len(win), bs):  # fixed batch shapes: one compile for all clips
            chunk = np.zeros((bs, *win.shape[1:]), win.dtype)
            chunk[: len(win[j: j + bs])] = win[j: j + bs]
            acc, dist = apply(chunk)
            k = len(win[j: j + bs])
            accs.append(np.asarray(acc)[:k])
            dists.append(None if dist is None else np.asarray(dist)[:k])
        acc = np.concatenate(accs).reshape(-1, *accs[0].shape[2:])[:n_frames]
        dist = (np.concatenate(dists).reshape(-1, *dists[0].shape[2:])[:n_frames]
                if head.distance else None)
        pred = seld.decode(acc, dist, head.threshold, head.unify_deg)
        ref = rec["labels"]
        target, _, n_events = seld.targets_from_rows(ref, np.ones(len(ref), bool), n_frames,
                                                     n_classes, head.n_tracks)
        adpit += n_frames * np.array([float(loss(x[None], target[None], n_events[None]))
                                      for x in (acc, np.zeros_like(acc))])
        frames += n_frames
        ev23.update(ref, pred, n_frames=n_frames)
        if ev24 is not None:
            ev24.update(ref, pred, n_frames=n_frames)
        if cfg.eval.write_csv:
            from spatialav.metrics.dcase_io import write_dcase_csv

            write_dcase_csv(csv_dir / f"{_clip_name(rec['clip_id'])}.csv", pred)
    out = {"dcase2023": _scores(ev23.compute()),
           "adpit": {"loss": adpit[0] / max(frames, 1), "silent_loss": adpit[1] / max(frames, 1),
                     "skill": 1.0 - adpit[0] / adpit[1] if adpit[1] else float("nan")}}
    if ev24 is not None:
        out["dcase2024"] = _scores(ev24.compute())
    out["clips"] = min(len(src), cfg.eval.max_clips)
    if cfg.eval.write_csv:
        out["csv_dir"] = str(csv_dir)
    return out


def _scores(s: dict) -> dict:
    return {k: float(v) for k, v in s.items() if k != "per_class"}


def evaluate_localisation(cfg, pcfg, enc: Encoders, dataset, workdir: str) -> dict:
    """Map scores averaged over the evaluation crops that have a labelled source (``sauc``
    against the other such crops); the first ``eval.maps`` maps are written as PNG overlays
    under ``workdir/maps``."""
    head = cfg.head
    map_fn = localisation.make_map_fn(enc, pcfg.view_fov, pcfg.view_size,
                                      (head.grid_az, head.grid_el))
    grid = localisation.direction_grid(head.grid_az, head.grid_el)
    scores, maps, near, written, seen = [], [], [], [], 0
    for batch in _eval_loader(cfg, pcfg, dataset):
        batch_maps = map_fn(batch["audio"], batch["frames"])
        for b in np.flatnonzero(batch["mask"]):
            seen += 1
            if seen > cfg.eval.max_clips:
                break
            sources = localisation.label_directions(batch["labels"][b], batch["label_mask"][b])
            if not len(sources):
                continue
            scores.append(localisation.map_scores(batch_maps[b], grid, sources, head.hit_deg))
            maps.append(batch_maps[b])
            near.append(localisation.near_sources(grid, sources, head.hit_deg)[1])
            if len(written) < cfg.eval.maps:
                frames = batch["frames"][b]
                name = f"{cfg.eval.split}_{int(batch['index'][b]):06d}.png"
                written.append(str(localisation.overlay_png(
                    Path(workdir, "maps", name), frames[len(frames) // 2], batch_maps[b],
                    sources)))
        if seen >= cfg.eval.max_clips:
            break
    keys = ("peak_error_deg", "hit", "auc")
    out = {k: float(np.nanmean([s[k] for s in scores])) if scores else float("nan")
           for k in keys}
    out["sauc"] = (float(np.nanmean(localisation.shuffled_aucs(maps, near, grid)))
                   if len(maps) > 1 else float("nan"))
    out["chance_hit"] = _chance_hit(head.hit_deg)
    out.update(clips=len(scores), maps=written)
    return out


def _chance_hit(hit_deg: float) -> float:
    """Fraction of the sphere within ``hit_deg`` of a point: the hit rate of a random peak."""
    return float((1 - np.cos(np.radians(hit_deg))) / 2)


def _json(x):
    if isinstance(x, dict):
        return {str(k): _json(v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return [_json(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else x
    return x
