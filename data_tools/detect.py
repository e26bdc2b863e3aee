"""Precompute YOLO detections for every clip of a spatialav dataset (resumable).

    python data_tools/detect.py --data DATASET_DIR [--split train validation test] \\
        [--weights spatialav/detectors/synthetic_yolo.pt] [--part-size 64] [--tiles sphere] \\
        [--conf 0.25] [--imgsz W] [--batch 16] [--out DIR]

Writes ``<dataset_dir>/detections/<split>/`` (or ``--out/<split>``): ``config.json`` (weights
and their sha256, the ``DetectConfig``, the clip count) and one ``part-<start>-<stop>.npz`` per
``--part-size`` records (format: ``spatialav.detect``). Each part is written under a temp
name and renamed when complete, so a killed run, run again, continues with the parts that
are missing. A rerun with other weights or settings refuses to mix them into the same
folder. Read them with ``spatialav.data.detections.load_detections(dataset_dir, split)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from spatialav import detect
from spatialav.data import detections


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def claim(out: Path, config: dict) -> None:
    """Write ``config.json``, or check that the run already there used the same settings."""
    path = out / "config.json"
    if path.exists():
        found = json.loads(path.read_text())
        if found != config:
            raise ValueError(f"{out} holds detections made with other settings:\n  {found}\n"
                             f"not\n  {config}\ndelete it or pass --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("config.json.tmp")
    tmp.write_text(json.dumps(config, indent=1, sort_keys=True))
    tmp.replace(path)


def run_split(dataset_dir, split: str, weights: Path, cfg: detect.DetectConfig,
              part_size: int = 64, out: Path | None = None, progress: bool = True) -> Path:
    """Detect in every clip of ``split`` missing from the output folder; returns the folder."""
    from spatialav.data import storage

    source = storage.open_split(dataset_dir, split)
    model = detect.load_model(weights)  # a bad weights file stops before anything is written
    out = Path(out) / split if out is not None else detections.sidecar_dir(dataset_dir, split)
    claim(out, {"weights": str(weights), "sha256": sha256(weights),
                "detect_config": cfg.to_json(), "num_clips": len(source)})
    for stale in out.glob("*.tmp-*"):  # leftovers of a killed run
        stale.unlink()
    parts = [(s, min(s + part_size, len(source))) for s in range(0, len(source), part_size)]
    todo = [p for p in parts if not (out / detections.part_name(*p)).exists()]
    bar = tqdm(total=len(source), initial=len(source) - sum(b - a for a, b in todo),
               desc=f"detect {split}", unit="clip", disable=not progress)
    for start, stop in todo:
        clips = {}
        for i in range(start, stop):
            record = source[i]
            clip_id = record["clip_id"]
            clip_id = clip_id.decode() if isinstance(clip_id, bytes) else str(clip_id)
            clips[clip_id] = detect.detect(model, record["frames"], cfg)
            bar.update()
        detections.save_part(out / detections.part_name(start, stop), clips)
    bar.close()
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory (or a root holding one)")
    p.add_argument("--split", nargs="+", default=None, help="default: every split")
    p.add_argument("--weights", type=Path, default=detect.DEFAULT_WEIGHTS)
    p.add_argument("--out", type=Path, default=None, help="default: <dataset_dir>/detections")
    p.add_argument("--part-size", type=int, default=64, help="clips per output file")
    p.add_argument("--conf", type=float, default=detect.DetectConfig.conf)
    p.add_argument("--imgsz", type=int, default=None, help="resize frames to this width")
    p.add_argument("--batch", type=int, default=detect.DetectConfig.batch)
    p.add_argument("--tiles", choices=["sphere"], default=None,
                   help="detect on twelve upright perspective views instead of the equirect frame")
    p.add_argument("--no-track", action="store_true")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def main(argv=None) -> list[Path]:
    """Detect in every split asked for; bad input (a missing dataset, split or weights file,
    an output folder of other settings) ends with one ``error:`` line and exit status 1."""
    args = parse_args(argv)
    try:
        return detect_splits(args)
    except (ValueError, OSError) as err:  # each message names the path at fault
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def detect_splits(args) -> list[Path]:
    from spatialav.data import storage

    weights = detect.check_weights(args.weights).resolve()
    cfg = dataclasses.replace(detect.DetectConfig(), conf=args.conf, imgsz=args.imgsz,
                              batch=args.batch, tiles=args.tiles, track=not args.no_track,
                              device=args.device)
    splits = args.split or sorted(storage.load_builder(args.data).info.splits)
    for split in splits:  # every split named exists, before any is written
        storage.open_split(args.data, split)
    outs = []
    for split in splits:
        t0 = time.perf_counter()
        outs.append(run_split(args.data, split, weights, cfg, args.part_size, args.out))
        n = len(detections.load_detections(args.data, split, outs[-1]))
        print(f"{split}: {n} clips in {outs[-1]} ({time.perf_counter() - t0:.1f} s)",
              flush=True)
    return outs


if __name__ == "__main__":
    main()
