"""Write a pretraining run's results (from its summary.json) as a markdown table.

    python experiments/pretrain_report.py --workdir runs/avsa-foa-default \\
        --command "python -m spatialav.pretrain --task avsa" --wall-s 840 \\
        --out results/pretrain_default.md

Reads ``summary.json`` (final train metrics and the last validation), ``config.json`` (the
resolved config) and ``logs/metrics.jsonl`` (every validation run) of the work directory.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--command", required=True, help="the exact command that made the run")
    p.add_argument("--wall-s", type=float, help="wall time of the command, seconds")
    p.add_argument("--train-s", type=float, help="wall time of training alone, seconds")
    p.add_argument("--note", action="append", default=[], help="a line added under the table")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    work = Path(args.workdir)
    summary = json.loads((work / "summary.json").read_text())
    config = json.loads((work / "config.json").read_text())["config"]
    rows = map(json.loads, (work / "logs" / "metrics.jsonl").read_text().splitlines())
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]

    lines = [
        "# Pretraining, CPU `default` preset",
        "",
        "```",
        args.command,
        "```",
        "",
        f"Machine: {platform.machine()}, {platform.system()}; task `{config['task']}`, "
        f"{summary['step']} steps{' (preempted)' if summary['preempted'] else ''}.",
    ]
    if args.wall_s is not None:
        lines.append(f"Wall time of the command: {args.wall_s / 60:.1f} min"
                     + (f" (training alone: {args.train_s / 60:.1f} min)."
                        if args.train_s is not None else "."))
    lines += ["", "## Validation (last run)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in summary["eval"].items()]
    lines += ["", "## Final training metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in summary["final"].items()]
    if evals:
        keys = [k for k in evals[-1] if k.startswith("eval/")]
        lines += ["", "## Every validation run", "",
                  "| step | " + " | ".join(k[5:] for k in keys) + " |",
                  "|---|" + "---|" * len(keys)]
        lines += ["| " + " | ".join([str(r["step"])] + [f"{r.get(k, float('nan')):.4f}"
                                                         for k in keys]) + " |" for r in evals]
    p_cfg = config["data"]["pipeline"]
    lines += ["", "## Config (resolved)", "",
              f"- pipeline: views {p_cfg['num_views']} ({p_cfg['view_sampling']}, jitter "
              f"{p_cfg['view_jitter']:.3f} rad, min separation {p_cfg['view_min_separation']:.3f}"
              f" rad), fov {p_cfg['view_fov']:.3f} rad, size {p_cfg['view_size']}, crop "
              f"{p_cfg['crop_s']} s, frame stride {p_cfg['frame_stride']}, rotation "
              f"{p_cfg['rotation']}",
              f"- objective: {config['objective']}",
              f"- optim: {config['optim']}",
              f"- train: steps {config['train']['steps']}, batch {config['train']['batch_size']}",
              f"- eval: {config['eval']}",
              f"- model: {config['model']}"]
    lines += [""] + [f"{n}" for n in args.note]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
