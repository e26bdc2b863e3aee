"""Train a head with the shared trainer, then score it on the evaluation split.

``run(cfg, workdir)`` loads the encoders (``encoders.load_encoders``), checks the dataset has
DCASE labels, trains the head (classify, seld, doa; localisation needs no training) with
``spatialav.train.Trainer`` and a head-specific ``loss_fn``, once per probe seed, scores the
heads on ``cfg.eval.split`` with bootstrap intervals (``train_and_score``) and writes
``probe.json`` (also returned). Frozen encoders run once over the data and the heads train on
their cached outputs (``feature_cache``); ``finetune`` trains encoders and head on clips.
``separate`` is delegated to ``spatialav.downstream.separation.run(cfg, workdir)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from spatialav import configs
from spatialav.data import pipeline, storage
from spatialav.data.resolve import resolve_dataset
from spatialav.downstream import classification, data, doa, feature_cache, localisation, seld
from spatialav.downstream.config import ProbeConfig
from spatialav.downstream.encoders import Encoders, load_encoders
from spatialav.metrics.bootstrap import bootstrap
from spatialav.train import evaluate
from spatialav.train.preemption import Preempted
from spatialav.train.workdir import claim_workdir


def run(cfg: ProbeConfig, workdir: str) -> dict:
    """Train (if the head needs it) and score ``cfg.task``; returns what ``probe.json`` holds."""
    if cfg.task == "separate":
        return run_separation(cfg, workdir)
    dataset = resolve_dataset(cfg.data)
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
        out.update(train_and_score(cfg, pcfg, enc, dataset, len(classes), workdir))
    out["workdir"] = os.path.abspath(workdir)
    if jax.process_index() == 0:
        Path(workdir, "probe.json").write_text(json.dumps(configs.json_safe(out), indent=2))
    return out


def run_separation(cfg: ProbeConfig, workdir: str) -> dict:
    """``spatialav.downstream.separation.run`` with this probe's encoders (only the visual one
    is used), data and seed, and its ``separation`` settings."""
    from spatialav.downstream import separation  # another module's head; imported lazily

    dataset = resolve_dataset(cfg.data)
    enc = encoders_for(cfg)
    sep = dataclasses.replace(cfg.separation, seed=cfg.train.seed)
    metrics = separation.run(sep, enc, workdir, dataset_dir=dataset)
    out = {"head": "separate", "encoders": enc.describe(), "dataset": str(dataset),
           "metrics": metrics, "workdir": os.path.abspath(workdir)}
    if jax.process_index() == 0:
        Path(workdir, "probe.json").write_text(json.dumps(configs.json_safe(out), indent=2))
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
    """Refuse to resume another probe's run (``claim_workdir``). The decoding settings
    (threshold, unify_deg) are not part of a run's identity: a trained head can be rescored
    with others."""
    head = {k: v for k, v in dataclasses.asdict(cfg.head).items() if k not in DECODE_FIELDS}
    identity = {"task": cfg.task, "encoders": enc.describe(), "head": head,
                "label_fraction": cfg.label_fraction,
                "cache": {k: v for k, v in dataclasses.asdict(cfg.cache).items() if k != "dir"}}
    claim_workdir(workdir, identity, dataclasses.asdict(cfg), "probe")


# --- training ---------------------------------------------------------------------------------


def train_and_score(cfg: ProbeConfig, pcfg, enc: Encoders, dataset, n_classes: int,
                    workdir: str) -> dict:
    """One head per probe seed (``eval.seeds``: ``train.seed``, ``train.seed + 1``, ...), each
    in ``workdir/seed<s>``, all scored on the same evaluation clips. Each trains on the labels
    of ``label_fraction`` of the training clips, a subset drawn with its seed
    (``data.label_subset``: nested across fractions).

    Frozen encoders: their outputs are computed once and cached (``feature_cache``) and every
    head trains on the cached arrays. ``finetune``: every head trains with its own copy of the
    encoders on clips (``train_head``), and its evaluation inputs come from its own encoders.
    Either way one function turns a head's evaluation features into per-clip outputs and one
    scores them (``score``): ``metrics`` holds each metric's mean over the seeds, ``ci95`` its
    95 % bootstrap interval over the evaluation clips, ``per_seed`` the seeds' own values.
    """
    seeds = [cfg.train.seed + i for i in range(cfg.eval.seeds)]
    out: dict = {"seeds": seeds, "label_fraction": cfg.label_fraction}
    use_video = cfg.task == "classify" and cfg.head.use_video
    if not cfg.finetune:
        cache_dir = cfg.cache.dir or os.path.join(os.path.expanduser(cfg.data.root), "features")
        train, ev, out["features"] = feature_cache.cached_features(
            enc, dataset, pcfg, cache_dir, n_augment=cfg.cache.n_augment, seed=cfg.cache.seed,
            use_video=use_video, eval_split=cfg.eval.split, eval_clips=cfg.eval.max_clips)
        train = HEADS[cfg.task].arrays(cfg, pcfg, train, n_classes)
    n_train = len(storage.open_split(dataset, "train"))
    outputs, runs = [], []
    for seed in seeds:
        scfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
        sdir = os.path.join(workdir, f"seed{seed}")
        clips = data.label_subset(n_train, cfg.label_fraction, seed)
        t0 = time.perf_counter()
        if cfg.finetune:
            # its own encoders, loaded afresh: the trainer donates the buffers it trains
            model, summary = train_head(scfg, pcfg, encoders_for(cfg), dataset, n_classes,
                                        clips, sdir)
            head = model.head
            encode = feature_cache.make_encode(model.audio, enc.fmt, enc.feature_cfg, pcfg,
                                               getattr(model, "video", None))
            ev = feature_cache.eval_features(encode, storage.open_split(dataset, cfg.eval.split),
                                             pcfg, n_clips=cfg.eval.max_clips,
                                             use_video=use_video)
        else:
            head, summary = train_cached_head(scfg, pcfg, enc, train, n_classes, clips, sdir)
        if summary["preempted"]:
            raise Preempted(summary["step"], sdir)
        runs.append({"seed": seed, "labelled_clips": len(clips), "step": summary["step"],
                     "final": summary["final"], "seconds": time.perf_counter() - t0})
        outputs.append(head_outputs(cfg, pcfg, head, ev))
    out["train"] = runs
    out.update(score(cfg, outputs, ev, n_classes, workdir))
    return out


def _label_frames(pcfg) -> int:
    return int(round(pcfg.crop_s / seld.LABEL_HOP_S))


# --- the trained heads: one table -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainedHead:
    """What the runner needs of a head it trains (``HEADS``: the one place a task name picks
    code; ``train_and_score`` is the same for every head). Each field is a function:

    - ``probe(cfg, enc, n_classes, rngs)``: encoders + head, trained on clips (``finetune``);
    - ``bare(cfg, enc, n_classes, rngs)``: the same head alone (the probe's ``.head``), trained
      on cached encoder outputs;
    - ``loss_fn(cfg, pcfg, n_classes, cached)``: the trainer's loss of either;
    - ``arrays(cfg, pcfg, cached, n_classes)``: the cached training items its batches hold;
    - ``outputs(cfg, pcfg, head, ev)``: its per-clip outputs on evaluation features;
    - ``stat(cfg, outputs, ev, n_classes, workdir, first)``: one seed's ``stat(clip indices)
      -> metrics`` for the bootstrap (``first``: the first seed, which writes any files).
    """

    probe: Callable
    bare: Callable
    loss_fn: Callable
    arrays: Callable
    outputs: Callable
    stat: Callable
    targets: bool  # clip batches need the dense ADPIT targets (``seld.AddTargets``)


def _add_targets(cfg: ProbeConfig, pcfg, n_classes: int) -> seld.AddTargets:
    return seld.AddTargets(_label_frames(pcfg), n_classes, cfg.head.n_tracks,
                           need_distance=cfg.task == "seld" and cfg.head.distance)


def _sequence_arrays(cfg: ProbeConfig, pcfg, cached: dict, n_classes: int) -> dict:
    """SELD and DOA: the sequence and the dense ADPIT targets (computed once here, not per
    step); ``clip`` stays for the label subset."""
    targets = _add_targets(cfg, pcfg, n_classes)(
        {"labels": cached["labels"], "label_mask": cached["label_mask"]})
    keep = ("accdoa", "n_events") + (("distance",) if cfg.task == "seld" else ())
    return {"seq": cached["seq"], "clip": cached["clip"], **{k: targets[k] for k in keep}}


def _per_clip(ev: dict, out: tuple) -> list[tuple]:
    """Outputs of every clip's consecutive windows (``_windows``) joined and cut to the
    clip's label frames."""
    ends = np.cumsum(ev["n_windows"])
    return [tuple(None if o is None else o[end - n: end].reshape(-1, *o.shape[2:])[
        : ev["n_frames"][c]] for o in out)
        for c, (end, n) in enumerate(zip(ends, ev["n_windows"], strict=True))]


def _windows(ev: dict) -> np.ndarray:
    """Every clip's window sequences ``[sum of n_windows, T', D]``, clip by clip."""
    valid = np.arange(ev["windows"].shape[1])[None] < ev["n_windows"][:, None]
    return ev["windows"][valid]


def _references(ev: dict) -> list[np.ndarray]:
    return [r[m] for r, m in zip(ev["rows"], ev["row_mask"], strict=True)]


def _timing(enc: Encoders) -> dict:
    step_s, hop_s = seld.sequence_timing(enc)
    return {"step_s": step_s, "hop_s": hop_s}


def _classify_stat(cfg, outputs, ev, n_classes, workdir, first):
    targets = np.asarray(classification.multi_hot(ev["labels"], ev["label_mask"], n_classes))

    def stat(idx):
        m = classification.classification_metrics(outputs[idx], targets[idx])
        return {k: v for k, v in m.items() if k != "clips"}

    return stat


def _doa_stat(cfg, outputs, ev, n_classes, workdir, first):
    errors = [doa.clip_errors(p, r, f, n_classes)
              for p, r, f in zip(outputs, _references(ev), ev["n_frames"], strict=True)]
    return lambda idx: doa.doa_metrics(np.concatenate([errors[i] for i in idx]))


def _seld_stat(cfg, outputs, ev, n_classes, workdir, first):
    return _seld_scores(cfg, outputs, ev, n_classes, workdir,
                        write_csv=cfg.eval.write_csv and first).scores


HEADS = {
    "classify": TrainedHead(
        probe=lambda cfg, enc, n, rngs: classification.ClassifyProbe(
            enc, n, use_video=cfg.head.use_video, rngs=rngs),
        bare=lambda cfg, enc, n, rngs: classification.ClassifyHead(
            enc.config.embed_dim * (2 if cfg.head.use_video else 1), n, rngs=rngs),
        loss_fn=lambda cfg, pcfg, n, cached: classification.make_loss_fn(pcfg, n, cached),
        arrays=lambda cfg, pcfg, cached, n: {
            k: cached[k] for k in ("pooled", "video", "labels", "label_mask", "clip")
            if k in cached},
        outputs=lambda cfg, pcfg, head, ev: evaluate.batched(
            evaluate.bind(head, lambda m, x: m(x)),
            np.asarray(classification.cached_embedding(ev)), cfg.eval.batch_size),
        stat=_classify_stat, targets=False),
    "doa": TrainedHead(
        probe=lambda cfg, enc, n, rngs: doa.DOAProbe(enc, n, rngs=rngs),
        bare=lambda cfg, enc, n, rngs: doa.DOAHead(
            enc.config.embed_dim, n, **_timing(enc), rngs=rngs),
        loss_fn=lambda cfg, pcfg, n, cached: doa.make_loss_fn(
            _label_frames(pcfg) if cached else None),
        arrays=_sequence_arrays,
        outputs=lambda cfg, pcfg, head, ev: [o[0] for o in _per_clip(ev, (evaluate.batched(
            evaluate.bind(head, lambda m, seq: m(seq, _label_frames(pcfg))), _windows(ev),
            cfg.eval.batch_size),))],
        stat=_doa_stat, targets=True),
    "seld": TrainedHead(
        probe=lambda cfg, enc, n, rngs: seld.SELDProbe(
            enc, n, hidden=cfg.head.hidden, n_tracks=cfg.head.n_tracks,
            distance=cfg.head.distance, activity=cfg.head.activity_weight > 0, rngs=rngs),
        bare=lambda cfg, enc, n, rngs: seld.SELDHead(
            enc.config.embed_dim, n, **_timing(enc), hidden=cfg.head.hidden,
            n_tracks=cfg.head.n_tracks, distance=cfg.head.distance,
            activity=cfg.head.activity_weight > 0, rngs=rngs),
        loss_fn=lambda cfg, pcfg, n, cached: seld.make_loss_fn(
            cfg.head.distance_weight, cfg.head.activity_weight,
            _label_frames(pcfg) if cached else None),
        arrays=_sequence_arrays,
        outputs=lambda cfg, pcfg, head, ev: _per_clip(ev, evaluate.batched(
            evaluate.bind(head, lambda m, seq: seld.calibrated_outputs(
                m, m.hidden(seq, _label_frames(pcfg)))), _windows(ev), cfg.eval.batch_size)),
        stat=_seld_stat, targets=True),
}


def _trainer(cfg: ProbeConfig, model, loss_fn, batches, workdir: str, mesh):
    from spatialav.train import Trainer

    meta = {"probe": cfg.task, "config": configs.json_safe(dataclasses.asdict(cfg))}
    trainer = Trainer(cfg.train, cfg.optim, model, loss_fn, batches, workdir, meta=meta,
                      mesh=mesh)
    trainer.restore_latest()
    summary = trainer.run()
    return trainer.model(), summary


def train_cached_head(cfg: ProbeConfig, pcfg, enc: Encoders, arrays: dict, n_classes: int,
                      clips: np.ndarray, workdir: str):
    """Train the bare head on the cached items of the training clips ``clips`` (the label
    subset; every augmentation of each), with the shared trainer."""
    from spatialav.train import mesh as mesh_lib

    mesh = mesh_lib.make_mesh()
    rows = np.flatnonzero(np.isin(arrays["clip"], clips))
    batches = feature_cache.cached_loader(
        {k: v for k, v in arrays.items() if k != "clip"}, rows,
        batch_size=mesh_lib.per_process_batch_size(cfg.train.batch_size, mesh),
        seed=cfg.train.seed)
    kind = HEADS[cfg.task]
    return _trainer(cfg, kind.bare(cfg, enc, n_classes, nnx.Rngs(cfg.train.seed + 1)),
                    kind.loss_fn(cfg, pcfg, n_classes, True), iter(batches), workdir, mesh)


def train_head(cfg: ProbeConfig, pcfg, enc: Encoders, dataset, n_classes: int,
               clips: np.ndarray, workdir: str):
    """Train the probe on the training clips ``clips`` (the label subset) and, with
    ``finetune``, its encoders too."""
    from spatialav.train import mesh as mesh_lib

    mesh = mesh_lib.make_mesh()
    src = data.Subset(storage.open_split(dataset, "train"), clips)
    loader = pipeline.make_loader(src, pcfg, split="train",
                                  batch_size=mesh_lib.per_process_batch_size(
                                      cfg.train.batch_size, mesh),
                                  seed=cfg.train.seed, workers=cfg.data.workers)
    kind = HEADS[cfg.task]
    if kind.targets:
        loader = loader.map(_add_targets(cfg, pcfg, n_classes))
    return _trainer(cfg, kind.probe(cfg, enc, n_classes, nnx.Rngs(cfg.train.seed + 1)),
                    kind.loss_fn(cfg, pcfg, n_classes, False), iter(loader), workdir, mesh)


def _eval_loader(cfg: ProbeConfig, pcfg, dataset):
    return pipeline.make_loader(dataset, pcfg, split=cfg.eval.split,
                                batch_size=cfg.eval.batch_size // jax.process_count(),
                                seed=0, train=False)


# --- evaluation -------------------------------------------------------------------------------


def head_outputs(cfg: ProbeConfig, pcfg, head: nnx.Module, ev: dict):
    """A trained head's outputs on evaluation features (``feature_cache.eval_features``):
    classify: logits ``[N, C]`` of the centred crops; seld: per clip (multi-ACCDOA, distance or
    None); doa: per clip directions ``[F, C, 3]``. SELD and DOA run on the clip's consecutive
    windows, whose outputs are concatenated and cut to the clip's label frames."""
    return HEADS[cfg.task].outputs(cfg, pcfg, head, ev)


def score(cfg: ProbeConfig, outputs: list, ev: dict, n_classes: int, workdir: str) -> dict:
    """Metrics of every seed's ``head_outputs`` on the clips of ``ev``, the seeds' mean, and
    the 95 % percentile bootstrap interval of that mean over the clips
    (``metrics.bootstrap``): classification by resampling the clips' scores, SELD the clips'
    DCASE counts and ADPIT sums, DOA the clips' angular errors."""
    n = len(ev["n_frames"])
    stats = [HEADS[cfg.task].stat(cfg, o, ev, n_classes, workdir, s == 0)
             for s, o in enumerate(outputs)]
    result = bootstrap(stats, n, n_boot=cfg.eval.bootstrap, seed=0)
    out = {"metrics": {**result["mean"], "clips": n}, "ci95": result["ci"],
           "per_seed": result["per_seed"]}
    if cfg.task == "seld" and cfg.eval.write_csv:
        out["csv_dir"] = str(Path(workdir, "predictions", cfg.eval.split))
    return out


def _seld_scores(cfg: ProbeConfig, outputs: list, ev: dict, n_classes: int, workdir: str,
                 write_csv: bool) -> seld.ClipScores:
    """One seed's SELD outputs decoded and counted clip by clip (DCASE 2023, and 2024 with
    distance); with ``write_csv`` a DCASE CSV per clip under ``workdir/predictions/<split>``
    (the first seed's)."""
    head = cfg.head
    scores = seld.ClipScores(n_classes, distance=head.distance, threshold=head.threshold,
                             unify_deg=head.unify_deg, n_tracks=head.n_tracks)
    csv_dir = Path(workdir, "predictions", cfg.eval.split)
    if write_csv:
        from spatialav.metrics.dcase_io import write_dcase_csv

        csv_dir.mkdir(parents=True, exist_ok=True)
    for (acc, dist), rows, n_frames, clip_id in zip(outputs, _references(ev), ev["n_frames"],
                                                    ev["clip_id"], strict=True):
        pred = scores.add(acc, dist, rows, int(n_frames))
        if write_csv:
            write_dcase_csv(csv_dir / f"{_clip_name(clip_id)}.csv", pred)
    return scores


def _clip_name(clip_id) -> str:
    text = clip_id.decode() if isinstance(clip_id, bytes) else str(clip_id)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


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
