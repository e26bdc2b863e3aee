"""A pretraining job: the dataset and its checks, the work directory, the input pipeline,
the model, the loss and the validation hook, handed to the one ``Trainer``. The CLI
(``python -m spatialav.pretrain``) only parses arguments and prints the summary."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax

from spatialav.configs import Config, json_safe
from spatialav.data import detections, pipeline, storage
from spatialav.data.resolve import resolve_dataset
from spatialav.pretraining.tasks import init_model, make_loss_fn
from spatialav.pretraining.validation import validation_hooks
from spatialav.train import Trainer
from spatialav.train import mesh as mesh_lib
from spatialav.train.workdir import claim_workdir


def run(cfg: Config, workdir: str) -> dict:
    """Pretrain ``cfg.task`` in ``workdir`` (resuming what it holds) and return the trainer's
    summary (also in ``workdir/summary.json``); ``summary['preempted']`` when SIGTERM stopped
    it at a checkpoint."""
    dataset = resolve_dataset(cfg.data)
    check_dataset(cfg, dataset)
    os.makedirs(workdir, exist_ok=True)
    config = dataclasses.asdict(cfg)
    claim_workdir(workdir, {"task": cfg.task, "model": config["model"]}, config, "pretraining")
    mesh = mesh_lib.make_mesh()
    local_batch = mesh_lib.per_process_batch_size(cfg.train.batch_size, mesh)
    loader = pipeline.make_loader(dataset, cfg.data.pipeline, split="train",
                                  batch_size=local_batch, seed=cfg.train.seed,
                                  workers=cfg.data.workers)
    trainer = Trainer(cfg.train, cfg.optim, init_model(cfg), make_loss_fn(cfg), iter(loader),
                      workdir, hooks=validation_hooks(cfg, dataset, mesh),
                      meta={"task": cfg.task, "config": json_safe(config)}, mesh=mesh)
    start = trainer.restore_latest()
    if jax.process_index() == 0:
        where = f"resuming at step {start}" if start else "starting"
        print(f"{cfg.task}: {where}; dataset {dataset}; workdir {workdir}", flush=True)
    summary = trainer.run()
    if jax.process_index() == 0 and cfg.data.pipeline.num_objects:
        summary["objects"] = object_summary(cfg, dataset, summary["logs"])
        (Path(workdir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def object_summary(cfg: Config, dataset: Path, logs: str) -> dict:
    """Where the beams of an object task pointed: ``from`` (``gt`` boxes or ``detections``,
    with the sidecar folder), the mean number of valid objects per training clip (of at most
    ``max_objects``) and the fraction of clips with at least one, over the logged training
    steps (every ``train.log_every``; a resumed run counts its earlier steps too)."""
    p = cfg.data.pipeline
    steps = {}
    with open(Path(logs) / "metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            if "train/objects_per_clip" in record:
                steps[record["step"]] = record  # a step redone after a resume: the last
    out = {"from": p.objects_from, "max_objects": p.num_objects, "logged_steps": len(steps)}
    for key in ("objects_per_clip", "clips_with_objects"):
        out[key] = sum(r[f"train/{key}"] for r in steps.values()) / max(len(steps), 1)
    if pipeline.needs_detections(p) and "detections" not in storage.read_spec(dataset).groups:
        out["sidecar"] = str(detections.sidecar_dir(dataset, "train"))
    return out


def check_dataset(cfg: Config, path: Path) -> None:
    """The fields the task needs are there: ground-truth boxes, or the detections sidecar of
    ``data_tools/detect.py`` for ``objects_from='detections'``; else one error saying how to
    get them."""
    spec = storage.read_spec(path)
    p = cfg.data.pipeline
    if p.num_objects and p.objects_from == "gt" and "boxes" not in spec.groups:
        raise ValueError(
            f"dataset {path} has no ['boxes'] (it has {list(spec.groups)}); {cfg.task} with "
            "objects_from='gt' needs them; to steer the beams with YOLO detections instead, "
            "pass --set data.pipeline.objects_from=detections")
    if pipeline.needs_detections(p) and "detections" not in spec.groups:
        check_sidecars(cfg, path)


def check_sidecars(cfg: Config, path: Path) -> None:
    """The detections sidecar of every split the run reads (train, and validation when it
    has clips) exists; else one error naming the missing folders and the command."""
    splits = storage.load_builder(path).info.splits
    wanted = ["train"] + (["validation"] if "validation" in splits
                          and splits["validation"].num_examples else [])
    missing = [s for s in wanted
               if not (detections.sidecar_dir(path, s) / "config.json").is_file()]
    if missing:
        dirs = ", ".join(str(detections.sidecar_dir(path, s)) for s in missing)
        raise ValueError(
            f"dataset {path} has no detections for {missing} (expected {dirs}); {cfg.task} "
            f"with objects_from='detections' reads them; compute them with "
            f"{detections.detect_command(path, wanted)}")
