"""Forward + backward time of the audio encoder architectures on this machine.

Times one training-shaped step (encoder forward, an InfoNCE loss against fixed targets,
gradients w.r.t. all parameters) per architecture, takes XLA's FLOP count from
``jax.jit(f).lower(...).compile().cost_analysis()``, and writes a markdown table with the
exact command at its top.

    python experiments/bench_encoders.py --out results/bench_encoders.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spatialav import features
from spatialav.models import AudioEncoder, count_params
from spatialav.objectives import info_nce

# name -> AudioEncoder kwargs. conv1d is ModelConfig()'s audio encoder; resnet2d at width 32
# is a small ResNet; width 16 shows what the 2D net costs when cut to a similar FLOP budget.
ARCHS = {
    "resnet2d-w32": dict(arch="resnet2d", width=32, depth=4, blocks=1),
    "resnet2d-w16": dict(arch="resnet2d", width=16, depth=4, blocks=1),
    "conv1d-w256": dict(arch="conv1d", width=256, depth=4, blocks=2),
}


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # older JAX returns one dict per device
    return float(cost.get("flops", float("nan")))


def bench(name, kwargs, x, targets, repeats, dtype):
    enc = AudioEncoder("foa", embed_dim=targets.shape[-1], dtype=dtype, rngs=nnx.Rngs(0), **kwargs)
    graph, params = nnx.split(enc)

    def loss(params, x):
        pooled, _ = nnx.merge(graph, params)(x)
        return info_nce(pooled, targets)

    fwd = jax.jit(loss).lower(params, x).compile()
    step = jax.jit(jax.value_and_grad(loss)).lower(params, x).compile()
    for _ in range(2):  # warm-up
        jax.block_until_ready(step(params, x))
    times, cpu0 = [], time.process_time()
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(step(params, x))
        times.append(time.perf_counter() - t0)
    cpu_per_step = (time.process_time() - cpu0) / repeats  # all threads; robust to idle waits
    flops = _flops(step)
    med = statistics.median(times)
    return dict(
        name=name,
        params=count_params(enc),
        time_stride=enc.time_stride,
        fwd_gflop=_flops(fwd) / 1e9,
        step_gflop=flops / 1e9,
        median_ms=1e3 * med,
        min_ms=1e3 * min(times),
        cpu_ms=1e3 * cpu_per_step,
        gflops=flops / med / 1e9,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seconds", type=float, default=2.0, help="clip length at 24 kHz")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--out", default="results/bench_encoders.md")
    args = p.parse_args(argv)

    cfg = features.DEFAULT
    audio = np.random.default_rng(0).uniform(-0.1, 0.1, (args.batch, int(args.seconds * 24000), 4))
    x = jax.jit(lambda a: features.encoder_input(a, "foa", cfg))(audio.astype(np.float32))
    targets = jnp.asarray(np.random.default_rng(1).standard_normal((args.batch, 256)), jnp.float32)
    load_before = os.getloadavg()
    rows = []
    for name in args.archs:
        rows.append(bench(name, ARCHS[name], x, targets, args.repeats, jnp.dtype(args.dtype)))
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()})
    load_after = os.getloadavg()

    fastest = min(rows, key=lambda r: r["median_ms"])
    lines = [
        "# Audio encoder forward + backward time",
        "",
        "```",
        "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "```",
        "",
        f"Batch {args.batch} x {args.seconds:g} s FOA at 24 kHz -> encoder input "
        f"{tuple(x.shape)} (frames x mels x 7); {args.dtype}; one step = forward, InfoNCE "
        f"against fixed targets, gradients of all parameters. Median / min of {args.repeats} "
        "steps after 2 warm-up steps (wall clock), and the process CPU time per step over all "
        "threads (less sensitive to other jobs than wall time). FLOPs from XLA's cost "
        "analysis of the compiled step.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} ({jax.default_backend()}); load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (shared machine: other jobs "
        "were running, so absolute times are pessimistic; the ratios are the point).",
        "",
        "| encoder | params | time stride | fwd GFLOP | fwd+bwd GFLOP | median ms | min ms "
        "| CPU ms | GFLOP/s (median) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['time_stride']} | "
            f"{r['fwd_gflop']:.2f} | {r['step_gflop']:.2f} | {r['median_ms']:.0f} | "
            f"{r['min_ms']:.0f} | {r['cpu_ms']:.0f} | {r['gflops']:.0f} |"
        )
    lines += ["", f"Fastest: **{fastest['name']}**."]
    lines += [
        f"{r['name']} takes {r['median_ms'] / fastest['median_ms']:.1f}x as long (median), "
        f"{r['cpu_ms'] / fastest['cpu_ms']:.1f}x the CPU time."
        for r in rows
        if r is not fastest
    ]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
