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
    fields the task needs."""
    from spatialav.data import storage, synthetic

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
    need = {"boxes"} if (p.num_objects and p.objects_from == "gt") else set()
    if p.num_objects and p.objects_from == "detections":
        need.add("detections")
    missing = need - set(spec.groups)
    if missing:
        raise ValueError(
            f"dataset {path} has no {sorted(missing)} (it has {list(spec.groups)}); "
            f"{cfg.task} with objects_from={p.objects_from!r} needs them"
            + ("; add detections with data_tools/detect.py" if "detections" in missing else "")
        )
    return path


def run(cfg: configs.Config, workdir: str) -> dict:
    import jax

    from spatialav import pretraining
    from spatialav.data import pipeline
    from spatialav.train import Trainer
    from spatialav.train import mesh as mesh_lib

    dataset = resolve_dataset(cfg)
    os.makedirs(workdir, exist_ok=True)
    meta = {"task": cfg.task, "config": pretraining.json_safe(dataclasses.asdict(cfg))}
    check_workdir(workdir, meta)
    mesh = mesh_lib.make_mesh()
    local_batch = mesh_lib.per_process_batch_size(cfg.train.batch_size, mesh)
    loader = pipeline.make_loader(dataset, cfg.data.pipeline, split="train",
                                  batch_size=local_batch, seed=cfg.train.seed,
                                  workers=cfg.data.workers)
    trainer = Trainer(cfg.train, cfg.optim, pretraining.init_model(cfg),
                      pretraining.make_loss_fn(cfg), iter(loader), workdir,
                      hooks=[pretraining.ValidationHook(cfg, dataset, mesh)], meta=meta,
                      mesh=mesh)
    start = trainer.restore_latest()
    if jax.process_index() == 0:
        where = f"resuming at step {start}" if start else "starting"
        print(f"{cfg.task}: {where}; dataset {dataset}; workdir {workdir}", flush=True)
    return trainer.run()


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
    except (ValueError, FileNotFoundError, NonFiniteLossError) as e:
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
    print(f"  checkpoints: {summary['checkpoints']}")
    print(f"  logs (JSONL + TensorBoard): {summary['logs']}")
    print(f"  summary: {os.path.join(os.path.dirname(summary['logs']), 'summary.json')}")


if __name__ == "__main__":
    sys.exit(main())
