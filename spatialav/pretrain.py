"""Pretrain audio and visual encoders with AVC or AVSA.

    python -m spatialav.pretrain --task avsa

With only ``--task`` it builds the built-in synthetic dataset if it is missing, trains the
CPU ``default`` preset and prints where the checkpoints, logs and summary are. Running the
same command again resumes from the last checkpoint in the work directory.
"""

from __future__ import annotations

import argparse
import os
import sys

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


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fmt = cfg.data.pipeline.input_format
    workdir = os.path.abspath(args.workdir or f"runs/{cfg.task}-{fmt}-{args.config}")
    from spatialav import pretraining
    from spatialav.train import NonFiniteLossError, distributed
    from spatialav.train.preemption import PREEMPTED_EXIT_CODE

    try:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                               peer_timeout_s=args.peer_timeout)
        summary = pretraining.run(cfg, workdir)
    except (ValueError, OSError, NonFiniteLossError) as e:  # bad input; OSError: paths
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_summary(summary)
    return PREEMPTED_EXIT_CODE if summary["preempted"] else 0


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
