"""Pretrain audio and visual encoders with AVC or AVSA.

    python -m spatialav.pretrain --task avsa

With only ``--task`` it builds the built-in synthetic dataset if it is missing, trains the
CPU ``default`` preset and prints where the checkpoints, logs and summary are. Running the
same command again resumes from the last checkpoint in the work directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from spatialav import configs

EPILOG = """examples:
  python -m spatialav.pretrain --task avsa
  python -m spatialav.pretrain --task avc --format stereo --steps 200
  python -m spatialav.pretrain --task avsa-objects --config tiny --workdir /tmp/run
  python -m spatialav.pretrain --task avsa --data /data/yt360_tfds --config gpu \\
      --set train.batch_size=128 --set objective.avc_steps=2000
  python -m spatialav.pretrain --task avsa-objects --data DIR \\
      --set data.pipeline.objects_from=detections   # after data_tools/detect.py --data DIR

--set takes dotted fields of the config tree (spatialav/configs/__init__.py), e.g.
  train.steps, train.batch_size, train.checkpoint_every, optim.learning_rate,
  model.audio_arch (conv1d|resnet2d), model.dtype (float32|bfloat16),
  data.pipeline.num_views, data.pipeline.crop_s, data.pipeline.objects_from (gt|detections),
  objective.tau, objective.avc_steps, eval.every
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m spatialav.pretrain", description=__doc__.split("\n\n")[0],
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=configs.TASKS,
                   help="avc: audio-visual correspondence; avsa: spatial alignment over "
                        "viewpoints; avsa-objects: spatial alignment over detected objects")
    p.add_argument("--config", default="default", choices=list(configs.PRESETS),
                   help="preset: tiny (tests), default (CPU demo), gpu, pod (default: default)")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (built on first use) or a dataset directory written by "
                        "spatialav's converters (default: synthetic)")
    p.add_argument("--format", dest="fmt", choices=("foa", "stereo", "mono"),
                   help="audio input format (default: the preset's, foa)")
    p.add_argument("--workdir", help="checkpoints, logs and summary go here; an existing run "
                                     "there is resumed (default: runs/<task>-<format>-<config>)")
    p.add_argument("--steps", type=int, help="training steps (same as --set train.steps=N)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field; repeatable")
    multi = p.add_argument_group(
        "multi-process (TPU pod slices and SLURM are detected without these)")
    multi.add_argument("--coordinator", help="host:port of process 0")
    multi.add_argument("--num-processes", type=int, help="number of processes in the job")
    multi.add_argument("--process-id", type=int, help="this process's index")
    multi.add_argument("--peer-timeout", type=int, default=60, metavar="SECONDS",
                       help="a process silent this long counts as dead and the whole job "
                            "exits with an error (default: 60)")
    return p.parse_args(argv)


def build_config(args) -> configs.Config:
    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.data != "synthetic":
        overrides.append(f"data.source={args.data}")
    return configs.get_config(args.config, task=args.task, fmt=args.fmt, overrides=overrides)


def resolve_dataset(cfg: configs.Config) -> Path:
    """The dataset directory, built if it is the synthetic one and missing; checked for the
    fields the task needs (ground-truth boxes, or the detections sidecar of
    ``data_tools/detect.py`` for ``objects_from='detections'``)."""
    from spatialav.data import pipeline, storage, synthetic

    if cfg.data.source == "synthetic":
        import jax
        from jax.experimental import multihost_utils

        root = os.path.expanduser(cfg.data.root)
        if jax.process_index() == 0:  # one builder; the others wait for it
            synthetic.ensure_synthetic(root, cfg.data.synthetic_preset,
                                       workers=cfg.data.build_workers)
        multihost_utils.sync_global_devices("synthetic dataset ready")
        path = synthetic.ensure_synthetic(root, cfg.data.synthetic_preset)
    elif not cfg.data.source:
        raise ValueError("this preset trains on real data: pass --data PATH")
    else:
        path = storage.find_dataset_dir(cfg.data.source)
    spec = storage.read_spec(path)
    p = cfg.data.pipeline
    if p.num_objects and p.objects_from == "gt" and "boxes" not in spec.groups:
        raise ValueError(
            f"dataset {path} has no ['boxes'] (it has {list(spec.groups)}); {cfg.task} with "
            "objects_from='gt' needs them; to steer the beams with YOLO detections instead, "
            "pass --set data.pipeline.objects_from=detections")
    if pipeline.needs_detections(p) and "detections" not in spec.groups:
        check_sidecars(cfg, path)
    return path


def check_sidecars(cfg: configs.Config, path: Path) -> None:
    """The detections sidecar of every split the run reads (train, and validation when it
    has clips) exists; else one error naming the missing folders and the command."""
    from spatialav import detect
    from spatialav.data import storage

    splits = storage.load_builder(path).info.splits
    wanted = ["train"] + (["validation"] if "validation" in splits
                          and splits["validation"].num_examples else [])
    missing = [s for s in wanted if not (detect.sidecar_dir(path, s) / "config.json").is_file()]
    if missing:
        dirs = ", ".join(str(detect.sidecar_dir(path, s)) for s in missing)
        raise ValueError(
            f"dataset {path} has no detections for {missing} (expected {dirs}); {cfg.task} "
            f"with objects_from='detections' reads them; compute them with "
            f"{detect.detect_command(path, wanted)}")


def run(cfg: configs.Config, workdir: str) -> dict:
    import jax

    from spatialav import pretraining
    from spatialav.data import pipeline
    from spatialav.train import Trainer
    from spatialav.train import mesh as mesh_lib

    dataset = resolve_dataset(cfg)
    os.makedirs(workdir, exist_ok=True)
    meta = {"task": cfg.task, "config": configs.json_safe(dataclasses.asdict(cfg))}
    check_workdir(workdir, meta)
    mesh = mesh_lib.make_mesh()
    local_batch = mesh_lib.per_process_batch_size(cfg.train.batch_size, mesh)
    loader = pipeline.make_loader(dataset, cfg.data.pipeline, split="train",
                                  batch_size=local_batch, seed=cfg.train.seed,
                                  workers=cfg.data.workers)
    trainer = Trainer(cfg.train, cfg.optim, pretraining.init_model(cfg),
                      pretraining.make_loss_fn(cfg), iter(loader), workdir,
                      hooks=validation_hooks(cfg, dataset, mesh), meta=meta, mesh=mesh)
    start = trainer.restore_latest()
    if jax.process_index() == 0:
        where = f"resuming at step {start}" if start else "starting"
        print(f"{cfg.task}: {where}; dataset {dataset}; workdir {workdir}", flush=True)
    summary = trainer.run()
    if jax.process_index() == 0 and cfg.data.pipeline.num_objects:
        summary["objects"] = object_summary(cfg, dataset, summary["logs"])
        (Path(workdir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def object_summary(cfg: configs.Config, dataset: Path, logs: str) -> dict:
    """Where the beams of an object task pointed: ``from`` (``gt`` boxes or ``detections``,
    with the sidecar folder), the mean number of valid objects per training clip (of at most
    ``max_objects``) and the fraction of clips with at least one, over the logged training
    steps (every ``train.log_every``; a resumed run counts its earlier steps too)."""
    from spatialav import detect
    from spatialav.data import pipeline, storage

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
        out["sidecar"] = str(detect.sidecar_dir(dataset, "train"))
    return out


def validation_hooks(cfg: configs.Config, dataset: Path, mesh) -> list:
    """The validation hook, or none (with a warning) when the dataset has no validation clips:
    a converted set of one recording, or one converted with --validation-fraction 0, still
    trains."""
    import jax

    from spatialav import pretraining
    from spatialav.data import storage

    splits = storage.load_builder(dataset).info.splits
    if "validation" in splits and splits["validation"].num_examples:
        return [pretraining.ValidationHook(cfg, dataset, mesh)]
    if jax.process_index() == 0:
        why = "is empty" if "validation" in splits else f"is missing (it has {sorted(splits)})"
        print(f"warning: the validation split of {dataset} {why}; training without validation "
              "metrics. Convert with --validation-fraction 0.1 (the default) and two or more "
              "recordings to get one.", file=sys.stderr, flush=True)
    return []


def check_workdir(workdir: str, meta: dict):
    """Refuse to resume a run of another task or model; record the config of a new one."""
    import jax

    path = Path(workdir) / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        for key in ("task",):
            if old.get(key) != meta[key]:
                raise ValueError(f"{workdir} holds a {old.get(key)} run, not {meta[key]}: "
                                 "use another --workdir")
        if old["config"]["model"] != meta["config"]["model"]:
            raise ValueError(f"{workdir} holds a run of another model config; "
                             "use another --workdir")
    if jax.process_index() == 0:
        path.write_text(json.dumps(meta, indent=2))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fmt = cfg.data.pipeline.input_format
    workdir = os.path.abspath(args.workdir or f"runs/{cfg.task}-{fmt}-{args.config}")
    from spatialav.train import NonFiniteLossError, distributed

    try:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                               peer_timeout_s=args.peer_timeout)
        summary = run(cfg, workdir)
    except (ValueError, OSError, NonFiniteLossError) as e:  # bad input; OSError: paths
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0


def print_summary(summary: dict):
    import jax

    if jax.process_index() != 0:
        return
    final = {k: round(v, 4) for k, v in summary["final"].items()}
    evals = {k: round(v, 4) for k, v in summary["eval"].items()}
    state = "preempted" if summary["preempted"] else "done"
    print(f"\n{state} at step {summary['step']}")
    print(f"  final train metrics: {final}")
    print(f"  validation: {evals}")
    if "objects" in summary:
        o = summary["objects"]
        print(f"  objects per training clip (from {o['from']}): {o['objects_per_clip']:.2f} "
              f"of at most {o['max_objects']}; {100 * o['clips_with_objects']:.1f} % of clips "
              f"with at least one ({o['logged_steps']} logged steps)")
    print(f"  checkpoints: {summary['checkpoints']}")
    print(f"  logs (JSONL + TensorBoard): {summary['logs']}")
    print(f"  summary: {os.path.join(os.path.dirname(summary['logs']), 'summary.json')}")


if __name__ == "__main__":
    sys.exit(main())
