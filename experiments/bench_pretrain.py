"""Training-step throughput and model FLOPs utilisation of each pretraining task.

    python experiments/bench_pretrain.py --preset default --out results/bench_pretrain.md

For each task: the real jitted train step of ``spatialav.train.Trainer`` on batches from the
synthetic ``small`` set (built on first use), timed on a fixed batch (the device alone) and
fed by the grain loader (end to end). FLOPs per step come from XLA's cost analysis of the
compiled step; MFU is achieved FLOP/s over the FLOP/s of a large f32 matmul measured in the
same process, the practical peak of this device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from spatialav import configs, pretraining
from spatialav.data import pipeline, synthetic
from spatialav.train import Trainer
from spatialav.train import mesh as mesh_lib


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of an n x n f32 matmul (median of ``reps``)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def bench_task(task, preset, dataset, steps, workdir, epoch_clips):
    cfg = configs.get_config(preset, task=task, overrides=["train.progress=false"])
    mesh = mesh_lib.make_mesh()
    loader = iter(pipeline.make_loader(
        dataset, cfg.data.pipeline, split="train", seed=0, workers=cfg.data.workers,
        batch_size=mesh_lib.per_process_batch_size(cfg.train.batch_size, mesh)))
    trainer = Trainer(cfg.train, cfg.optim, pretraining.init_model(cfg),
                      pretraining.make_loss_fn(cfg), loader, workdir, mesh=mesh)
    batch = mesh_lib.global_batch(next(loader), mesh)
    t = time.perf_counter()
    compiled = trainer._step_fn.lower(trainer.state, batch).compile()
    compile_s = time.perf_counter() - t
    flops = float(compiled.cost_analysis().get("flops", float("nan")))
    state = trainer.state
    for _ in range(2):  # warm-up
        state, m = compiled(state, batch)
    jax.block_until_ready(m)
    device_times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, m = compiled(state, batch)
        jax.block_until_ready(m)
        device_times.append(time.perf_counter() - t)
    def fed(n):  # seconds a step when the loader feeds n steps
        nonlocal state
        t = time.perf_counter()
        for _ in range(n):
            state, m = compiled(state, mesh_lib.global_batch(next(loader), mesh))
        jax.block_until_ready(m)
        return (time.perf_counter() - t) / n

    # The first pass over the split reads and parses every record; with cache_records on,
    # later passes read memory. Time both: `steps` batches of the first pass, then (after
    # the rest of the pass) `steps` cached ones.
    epoch = -(-epoch_clips // cfg.train.batch_size)
    e2e_cold = fed(steps)
    fed(max(epoch - steps, 0) + 1)
    e2e = fed(steps) if cfg.data.pipeline.cache_records else e2e_cold
    step_s = statistics.median(device_times)
    return {
        "task": task, "batch": cfg.train.batch_size, "compile_s": compile_s,
        "step_s": step_s, "clips_per_s": cfg.train.batch_size / step_s,
        "e2e_clips_per_s": cfg.train.batch_size / e2e,
        "e2e_first_pass_clips_per_s": cfg.train.batch_size / e2e_cold,
        "gflop_per_step": flops / 1e9,
        "achieved_gflops": flops / step_s / 1e9,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default", choices=list(configs.PRESETS))
    p.add_argument("--tasks", default=",".join(configs.TASKS))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--root", default="~/.cache/spatialav")
    p.add_argument("--out", default="results/bench_pretrain.md")
    args = p.parse_args(argv)
    dataset = synthetic.ensure_synthetic(os.path.expanduser(args.root), "small")
    peak = matmul_peak()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            r = bench_task(task, args.preset, dataset, args.steps, os.path.join(tmp, task),
                           synthetic.get_preset("small").num_clips[0])
            r["mfu"] = r["achieved_gflops"] * 1e9 / peak
            rows.append(r)
            print(json.dumps(r), flush=True)
    device = jax.devices()[0]
    header = [
        "# Pretraining step throughput and MFU",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"Preset `{args.preset}`; device {device.platform} ({device.device_kind}), "
        f"{jax.device_count()} device(s); host {platform.machine()}, {os.cpu_count()} cores; "
        f"jax {jax.__version__}; load average before: {os.getloadavg()[0]:.1f}. "
        f"Peak = 2048² f32 matmul: {peak / 1e9:.0f} GFLOP/s. Step = median of {args.steps} "
        "steps on a fixed batch; end to end = the grain loader feeding the same steps, on the "
        "first pass over the records and (with the preset's `cache_records`) on a later one.",
        "",
        "| task | global batch | step (s) | clips/s | end-to-end clips/s | first pass clips/s "
        "| GFLOP/step | GFLOP/s | MFU | compile (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines = [
        f"| {r['task']} | {r['batch']} | {r['step_s']:.3f} | {r['clips_per_s']:.1f} | "
        f"{r['e2e_clips_per_s']:.1f} | {r['e2e_first_pass_clips_per_s']:.1f} | "
        f"{r['gflop_per_step']:.1f} | "
        f"{r['achieved_gflops']:.1f} | {100 * r['mfu']:.1f}% | {r['compile_s']:.0f} |"
        for r in rows
    ]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(header + lines) + "\n")
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"preset": args.preset, "peak_gflops": peak / 1e9, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")
    return np.mean([r["mfu"] for r in rows])


if __name__ == "__main__":
    main()
