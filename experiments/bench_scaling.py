"""Data-parallel scaling over processes: 1 vs N JAX processes on this machine.

    python experiments/bench_scaling.py --preset default --local-batch 8 --steps 10 \\
        --out results/bench_scaling.md

Each process owns one CPU device and feeds the same per-process batch, so N processes train
a global batch N times larger; processes talk through gloo on localhost, exactly as the
hosts of a multi-host job would (``spatialav.train.distributed``). Timed: the trainer's
jitted step fed by the grain loader (steps/s, global clips/s) after two warm-up steps,
and the collective SIGTERM vote the trainer casts after every step
(``train/preemption.StopOnSigterm.poll``). Scaling efficiency = N-process clips/s over
N x 1-process clips/s. On one machine the processes share its cores, so the efficiency
measures the cost of the collectives plus the contention, not multi-host scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args) -> dict:
    """One process of an N-process job: time the train step and the stop vote."""
    from spatialav.train import distributed

    if args.num_processes > 1:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    import jax

    from spatialav import configs, pretraining
    from spatialav.data import pipeline, synthetic
    from spatialav.train import Trainer
    from spatialav.train import mesh as mesh_lib
    from spatialav.train.preemption import StopOnSigterm

    cfg = configs.get_config(args.preset, task=args.task, overrides=[
        f"train.batch_size={args.local_batch * args.num_processes}", "train.progress=false"])
    dataset = synthetic.ensure_synthetic(args.data_root, args.data_preset)
    mesh = mesh_lib.make_mesh()
    loader = iter(pipeline.make_loader(dataset, cfg.data.pipeline, split="train", seed=0,
                                       batch_size=args.local_batch, workers=0))
    # The trainer's checkpoint directory must be one path shared by all processes.
    trainer = Trainer(cfg.train, cfg.optim, pretraining.init_model(cfg),
                      pretraining.make_loss_fn(cfg), loader, args.workdir, mesh=mesh)
    state = trainer.state

    def steps(n):
        nonlocal state
        for _ in range(n):
            state, metrics = trainer._step_fn(state, mesh_lib.global_batch(next(loader), mesh))
        jax.block_until_ready(metrics)

    t = time.perf_counter()
    steps(2)  # compile + warm-up
    warmup_s = time.perf_counter() - t
    t = time.perf_counter()
    steps(args.steps)
    step_s = (time.perf_counter() - t) / args.steps

    stopper = StopOnSigterm(mesh)
    stopper.poll()
    t = time.perf_counter()
    for _ in range(args.polls):
        stopper.poll()
    poll_ms = (time.perf_counter() - t) / args.polls * 1e3
    return {"processes": args.num_processes, "devices": len(jax.devices()),
            "global_batch": cfg.train.batch_size, "warmup_s": warmup_s, "step_s": step_s,
            "steps_per_s": 1 / step_s, "clips_per_s": cfg.train.batch_size / step_s,
            "stop_vote_ms": poll_ms}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, n: int, tmp: Path) -> dict:
    """Run an n-process job of this script; returns process 0's figures."""
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = []
    for i in range(n):
        cmd = [sys.executable, __file__, "--worker", "--num-processes", str(n),
               "--process-id", str(i), "--coordinator", f"127.0.0.1:{port}",
               "--result", str(tmp / f"{n}-{i}.json"), "--workdir", str(tmp / f"run-{n}"),
               *common_flags(args)]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    for i, p in enumerate(procs):
        _, err = p.communicate()
        if p.returncode:
            raise RuntimeError(f"{n}-process run, process {i} failed:\n{err[-3000:]}")
    return json.loads((tmp / f"{n}-0.json").read_text())


def common_flags(args) -> list[str]:
    return ["--preset", args.preset, "--task", args.task, "--data-preset", args.data_preset,
            "--data-root", args.data_root, "--local-batch", str(args.local_batch),
            "--steps", str(args.steps), "--polls", str(args.polls)]


def report(args, rows: list[dict], command: str, load: tuple[float, float]) -> str:
    base = rows[0]["clips_per_s"]
    lines = [
        "# Data-parallel scaling over JAX processes (localhost, CPU)",
        "",
        f"Command: `{command}`",
        "",
        f"Preset `{args.preset}` ({args.task}), synthetic `{args.data_preset}` data; one CPU "
        f"device per process, {args.local_batch} clips per process per step; {args.steps} "
        "steps timed after 2 warm-up steps, fed by the grain loader; collectives over gloo. "
        f"Host: {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.1f} "
        f"before, {load[1]:.1f} after.",
        "",
        f"**Caveat:** all processes share this machine's {os.cpu_count()} cores, so the "
        "efficiency measures the overhead of the cross-process collectives plus the "
        "processes competing for the same cores - not multi-host scaling, where each host "
        "brings its own chips.",
        "",
        "| processes | global batch | step (s) | steps/s | clips/s | scaling efficiency "
        "| stop vote (ms/step) | compile + warm-up (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        eff = r["clips_per_s"] / (r["processes"] * base)
        vote = ("none (alone)" if r["processes"] == 1 else
                f"{r['stop_vote_ms']:.2f} ({r['stop_vote_ms'] / 10 / r['step_s']:.2f} % of a step)")
        lines.append(f"| {r['processes']} | {r['global_batch']} | {r['step_s']:.3f} | "
                     f"{r['steps_per_s']:.2f} | {r['clips_per_s']:.1f} | {eff:.0%} | "
                     f"{vote} | {r['warmup_s']:.0f} |")
    lines += ["", "Scaling efficiency = (N-process clips/s) / (N x 1-process clips/s). The "
              "stop vote is the all-reduce of the processes' SIGTERM flags the trainer "
              "dispatches after every step (read one step later), timed alone over "
              f"{args.polls} votes; a single process reads its own flag instead."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default", help="config preset (model and pipeline)")
    p.add_argument("--task", default="avc")
    p.add_argument("--data-preset", default="default", help="synthetic dataset preset")
    p.add_argument("--data-root", default=os.path.expanduser("~/.cache/spatialav"))
    p.add_argument("--local-batch", type=int, default=8, help="clips per process per step")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--polls", type=int, default=50)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default="results/bench_scaling.md")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--coordinator", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        result = worker(args)
        Path(args.result).write_text(json.dumps(result))
        return
    from spatialav.data import synthetic

    synthetic.ensure_synthetic(args.data_root, args.data_preset)  # built once, not per process
    command = shlex.join(["python", "experiments/bench_scaling.py", *(argv or sys.argv[1:])])
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for n in args.processes:
            rows.append(launch(args, n, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    md = report(args, rows, command, (load_before, os.getloadavg()[0]))
    out = Path(args.out)
    out.write_text(md)
    out.with_suffix(".json").write_text(json.dumps(
        {"command": command, "machine": {"nproc": os.cpu_count(), "load_avg_before":
                                         load_before, "load_avg_after": os.getloadavg()[0]},
         "runs": rows}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
