"""Benchmark the input pipeline and the scene renderer; writes results/bench_data.{md,json}.

Loader: clips/s of ``pipeline.make_loader`` on a synthetic split with 0, 1, 2 grain workers
(after the first batch, so worker start-up is reported apart). Renderer: seconds of audio
rendered per wall-clock second by ``render_clip`` over a few seeds, for the dataset's scene
and the default scene. The dataset is built under ``--data-root`` if it is not there yet.

    python experiments/bench_data.py [--preset tiny] [--batches 20] [--workers 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import grain
import jax
import numpy as np

from spatialav.data import pipeline, storage, synthetic
from spatialav.synth.render import render_clip
from spatialav.synth.scene import SceneConfig


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": cpu, "load_avg_1m": os.getloadavg()[0],
            "python": platform.python_version(), "grain": grain.__version__,
            "jax": jax.__version__}


def bench_loader(data_dir: Path, cfg: pipeline.PipelineConfig, workers: int, batch_size: int,
                 batches: int) -> dict:
    start = time.perf_counter()
    it = iter(pipeline.make_loader(data_dir, cfg, split="train", batch_size=batch_size,
                                   seed=0, shard=(0, 1), workers=workers))
    next(it)  # start-up: worker processes, file opening, first batch
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    wall = time.perf_counter() - start
    if workers:
        it.close()
    return {"workers": workers, "clips_per_s": batches * batch_size / wall,
            "first_batch_s": first, "batches": batches, "batch_size": batch_size}


def bench_host_steps(data_dir: Path, cfg: pipeline.PipelineConfig, clips: int) -> dict:
    """Milliseconds per clip of the two host steps, in this process: reading + parsing a
    record, and ``prepare_clip`` (crop, JPEG decode, sampling)."""
    src = storage.open_split(data_dir, "train")
    start = time.perf_counter()
    records = [src[i % len(src)] for i in range(clips)]
    read = time.perf_counter() - start
    start = time.perf_counter()
    for i, record in enumerate(records):
        pipeline.prepare_clip(record, np.random.default_rng(i), cfg, augment=True)
    prepare = time.perf_counter() - start
    shard_bytes = sum(f.stat().st_size for f in data_dir.glob("*-train.array_record-*"))
    return {"read_ms": 1e3 * read / clips, "prepare_ms": 1e3 * prepare / clips,
            "record_mb": shard_bytes / len(src) / 1e6}


def bench_render(scene: SceneConfig, seeds: int) -> dict:
    render_clip(10_000, scene)  # warm caches (source bank, sprites)
    start = time.perf_counter()
    for seed in range(seeds):
        render_clip(seed, scene)
    wall = time.perf_counter() - start
    audio_s = seeds * scene.duration
    return {"clips": seeds, "audio_s": audio_s, "wall_s": wall,
            "audio_s_per_wall_s": audio_s / wall, "sample_rate": scene.sample_rate,
            "frame_size": list(scene.frame_size), "fps": scene.fps}


def write_report(out: Path, command: str, info: dict, cfg: pipeline.PipelineConfig,
                 loader: list[dict], host: dict, render: dict[str, dict], preset: str) -> str:
    lines = [
        "# Input pipeline and renderer throughput", "",
        f"Command: `{command}`", "",
        f"Machine: {info['nproc']} cores, {info['cpu']}; 1-min load average at start "
        f"{info['load_avg_1m']:.2f} (a shared machine: other jobs compete for the cores). "
        f"Python {info['python']}, grain {info['grain']}, jax {info['jax']}.", "",
        f"## Loader (`make_loader`, synthetic `{preset}` train split)", "",
        f"Per clip: {cfg.crop_s} s crop, JPEG decode of its frames, {cfg.rotation} rotation, "
        f"{cfg.num_views} viewpoints, {cfg.num_objects} objects. Timed after the first batch.",
        "", "| workers | clips/s | first batch (s) |", "|---:|---:|---:|",
    ]
    lines += [f"| {r['workers']} | {r['clips_per_s']:.1f} | {r['first_batch_s']:.1f} |"
              for r in loader]
    lines += ["", f"In-process cost per clip: read + parse a record {host['read_ms']:.1f} ms "
              f"(records average {host['record_mb']:.2f} MB on disk), `prepare_clip` "
              f"{host['prepare_ms']:.1f} ms."]
    lines += ["", "## Renderer (`render_clip`)", "",
              "| scene | sample rate | frames | clips | audio s per wall s |",
              "|---|---:|---:|---:|---:|"]
    for name, r in render.items():
        h, w = r["frame_size"]
        lines.append(f"| {name} | {r['sample_rate']} | {w}x{h} @ {r['fps']:g} fps | "
                     f"{r['clips']} | {r['audio_s_per_wall_s']:.2f} |")
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    payload = {"command": command, "machine": info, "config": str(cfg), "loader": loader,
               "host_steps": host, "render": render}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", choices=sorted(synthetic.PRESETS))
    p.add_argument("--data-root", default=os.path.join(tempfile.gettempdir(), "spatialav_data"))
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--render-seeds", type=int, default=3)
    p.add_argument("--out", default="results/bench_data")
    args = p.parse_args(argv)
    command = shlex.join(["python", "experiments/bench_data.py", *(argv or sys.argv[1:])])

    info = machine()
    data_dir = synthetic.ensure_synthetic(args.data_root, args.preset)
    cfg = pipeline.PipelineConfig(crop_s=1.0, num_views=4, view_min_separation=np.pi / 4,
                                  num_objects=3)
    loader = [bench_loader(data_dir, cfg, w, args.batch_size, args.batches)
              for w in args.workers]
    host = bench_host_steps(data_dir, cfg, args.batch_size * args.batches)
    render = {
        args.preset: bench_render(synthetic.get_preset(args.preset).scene, args.render_seeds),
        "default": bench_render(SceneConfig(), args.render_seeds),
    }
    print(write_report(Path(args.out), command, info, cfg, loader, host, render, args.preset))


if __name__ == "__main__":
    main()
