"""Probe pretrained encoders on downstream tasks: classification, SELD, localisation maps,
separation.

    python -m spatialav.probe --head seld --init runs/avsa-foa-default

Loads the audio and visual encoders of a ``python -m spatialav.pretrain`` work directory (or
random ones: ``--init random``), frozen unless ``--finetune``, trains the head with the shared
trainer (frozen encoders: on their outputs, computed once and cached; one head per probe seed,
``--set eval.seeds=N``), scores it on the test split and writes ``probe.json`` to the work
directory: per metric the mean over seeds (``metrics``) and its 95 % bootstrap interval over
the test clips (``ci95``). ``--set label_fraction=0.01`` trains on 1 % of the training labels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from spatialav.downstream import config as probe_configs

EPILOG = """heads:
  classify   linear multi-label probe on the pooled audio embedding (+ visual with
             --set head.use_video=true); mAP, top-1 and per-label accuracy
  seld       multi-ACCDOA head (3 tracks x xyz x classes, ADPIT loss) on the audio encoder's
             sequence; DCASE 2023 ER/F/LE/LR/SELD (+ 2024 with --set head.distance=true);
             --write-csv writes DCASE CSVs of the predictions
  doa        per 100 ms frame, the direction of each active class (oracle activity), linear on
             the audio encoder's sequence; median / mean angular error, fraction within 20 deg
  localise   audio-visual similarity over a grid of directions (FOA turned to each direction vs
             the crop there); PNG heat maps under WORKDIR/maps, peak error, hit rate, AUC.
             Trains nothing (--steps is ignored)
  separate   visually guided separation (spatialav.downstream.separation)

examples:
  python -m spatialav.probe --head classify --init random
  python -m spatialav.probe --head seld --init runs/avsa-foa-default --write-csv
  python -m spatialav.probe --head localise --init runs/avc-foa-default
  python -m spatialav.probe --head seld --init random --format stereo --config tiny
  python -m spatialav.probe --head seld --data /data/starss23_tfds --init runs/avsa \\
      --set head.distance=true

--set takes dotted fields of the probe config (spatialav/downstream/config.py), e.g.
  train.steps, train.batch_size, optim.learning_rate, head.hidden, head.use_video,
  eval.seeds, eval.bootstrap, label_fraction, cache.n_augment, cache.dir,
  head.distance, head.grid_az, head.hit_deg, eval.split, eval.max_clips, eval.maps,
  data.pipeline.crop_s, data.pipeline.rotation, data.root, model_preset, and the separate
  head's own settings under separation. (SeparationConfig), e.g. separation.mix.query_kinds=visual
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m spatialav.probe", description=__doc__.split("\n\n")[0],
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--head", required=True, choices=probe_configs.HEADS,
                   help="the downstream task (see below)")
    p.add_argument("--init", default="random",
                   help="'random' (the model of the preset's pretraining namesake) or a "
                        "`python -m spatialav.pretrain` work directory (default: random)")
    p.add_argument("--config", default="default", choices=list(probe_configs.PRESETS),
                   help="probe preset: tiny (tests), default (CPU), gpu, seld (the supervised "
                        "SELD reference recipe, ~15 min per probe seed on 2 CPU cores) "
                        "(default: default)")
    p.add_argument("--format", dest="fmt", choices=probe_configs.FORMATS,
                   help="audio input format (default: the checkpoint's; foa for random)")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (built on first use) or a dataset directory with DCASE "
                        "labels, e.g. a converted STARSS23 (default: synthetic)")
    p.add_argument("--workdir", help="head checkpoints, logs, maps, CSVs and probe.json go here "
                                     "(default: runs/probe-<head>-<init name>-<config>)")
    p.add_argument("--steps", type=int, help="training steps (same as --set train.steps=N)")
    p.add_argument("--finetune", action="store_true",
                   help="train the encoders with the head (default: encoders frozen)")
    p.add_argument("--write-csv", action="store_true",
                   help="seld: write a DCASE CSV of predictions per evaluation clip")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a probe config field; repeatable")
    return p.parse_args(argv)


def build_config(args) -> probe_configs.ProbeConfig:
    overrides = list(args.overrides)
    if args.steps is not None:  # the separate head trains with its own settings
        prefix = "separation." if args.head == "separate" else ""
        overrides.append(f"{prefix}train.steps={args.steps}")
    if args.data != "synthetic":
        overrides.append(f"data.source={args.data}")
    if args.write_csv:
        overrides.append("eval.write_csv=true")
    return probe_configs.get_config(args.config, task=args.head, init=args.init, fmt=args.fmt,
                                    finetune=args.finetune, overrides=overrides)


def default_workdir(args) -> str:
    name = "random" if args.init == "random" else os.path.basename(os.path.normpath(args.init))
    fmt = f"-{args.fmt}" if args.fmt else ""
    return f"runs/probe-{args.head}-{name}{fmt}-{args.config}"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workdir = os.path.abspath(args.workdir or default_workdir(args))
    from spatialav.downstream import runner
    from spatialav.train import NonFiniteLossError
    from spatialav.train.preemption import PREEMPTED_EXIT_CODE, Preempted

    try:
        result = runner.run(cfg, workdir)
    except (ValueError, OSError, NonFiniteLossError) as e:  # bad input; OSError: paths
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    print(json.dumps({"head": result.get("head"), "encoders": result.get("encoders"),
                      "metrics": result.get("metrics")}, indent=2, default=str))
    print(f"summary: {os.path.join(workdir, 'probe.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
