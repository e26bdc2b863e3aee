"""Train the YOLO detector for the synthetic scenes, offline on CPU, and ship its weights.

    python data_tools/train_detector.py --work /tmp/spatialav_detector \\
        [--train-clips 600 --val-clips 100 --frames-per-clip 4 --epochs 30] \\
        [--out spatialav/detectors/synthetic_yolo.pt]

1. Renders clips with ``spatialav.synth.render_clip`` (training seeds ``TRAIN_SEED0 + i``,
   held-out seeds ``VAL_SEED0 + i``; tests and evaluations use other seeds again) and writes
   a few frames of each, with their boxes, as an ultralytics dataset under ``WORK/data``
   (JPEG images, YOLO txt labels, ``data.yaml`` with the ``CLASSES`` names). Rendering is
   resumable: clips already written are kept.
2. Trains the model of ``spatialav/detectors/synthetic_yolo.yaml`` from scratch
   (``pretrained=False``, nothing downloaded), with plots and AMP off, on the CPU.
3. Validates the final weights on the held-out frames (mAP50, mAP50-95) and, with ``--out``,
   copies them there with ``<out>.json`` (metrics, timings, the command) and a README.

Boxes that cross the +-180 deg seam are labelled as their two pieces inside the image (a
piece narrower than ``MIN_PIECE`` of the box is dropped); at inference ``spatialav.detect``
pads the seam so such objects are seen whole.

With ``--tile-images`` every written frame also gives one image of two upright gnomonic
views side by side (the ``detect.SPHERE_TILES`` views owned by two of its objects), so the
detector knows the perspective views of ``detect.DetectConfig(tiles='sphere')`` too; each
view is 128 px at the 256-px frame's resolution, so objects keep their size. A view's label
is the object's sprite (a square billboard, ``synth.video.sprite_map``) cut to its visible
equirect box and projected into the view: exact for a billboard, where the equirect box
itself, near a pole a wide band of azimuths, would not be.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from spatialav import detect
from spatialav.data import schema
from spatialav.synth.source_bank import CLASSES

TRAIN_SEED0 = 10_000_000
VAL_SEED0 = 20_000_000
MIN_PIECE = 0.3  # label a seam-split piece only if it holds this fraction of the box width
MODEL_YAML = detect.DETECTORS_DIR / "synthetic_yolo.yaml"


# --- dataset ----------------------------------------------------------------------------------


def box_pieces(cx: float, cy: float, w: float, h: float, min_piece: float = MIN_PIECE):
    """YOLO label boxes inside [0, 1] of an equirect box whose columns may wrap (see
    ``spatialav.synth.video.box_from_pixels``): one box, or its pieces on both sides of
    the seam."""
    top, bottom = max(cy - h / 2, 0.0), min(cy + h / 2, 1.0)
    pieces = []
    for shift in (-1.0, 0.0, 1.0):
        a, b = max(cx - w / 2 + shift, 0.0), min(cx + w / 2 + shift, 1.0)
        if b - a > 0 and b - a >= min_piece * w:
            pieces.append(((a + b) / 2, (top + bottom) / 2, b - a, bottom - top))
    return pieces


def label_lines(boxes: np.ndarray, frame: int) -> list[str]:
    """YOLO txt lines (class cx cy w h) of one video frame's rows of ``Clip.boxes``."""
    lines = []
    for row in boxes[boxes[:, 0] == frame]:
        for piece in box_pieces(*(float(v) for v in row[2:6])):
            lines.append(f"{int(row[1])} " + " ".join(f"{v:.6f}" for v in piece))
    return lines


TILE_PX = 128  # two views side by side make a 128 x 256 image, as the frames are
TILE_FOV = float(2 * np.arctan(np.pi / 2))  # 128 px at a 256-px frame's pixels per radian


def _billboard(obj, scene) -> tuple[np.ndarray, float]:
    """Camera (front, left, up columns) and half-width tan of an object's sprite square."""
    from spatialav import geometry
    from spatialav.synth.render import sprite_fov

    R = geometry.rotation_matrix(np.float64(obj.azimuth), np.float64(obj.elevation))
    return R, float(np.tan(sprite_fov(obj.distance, scene) / 2))


def tile_label(row: np.ndarray, obj, scene, look, fov: float = TILE_FOV,
               size: int = TILE_PX) -> tuple[float, float, float, float] | None:
    """Pixel box (x1, y1, x2, y2) in the view looking toward ``look`` of the object of one
    ``Clip.boxes`` row: the object's sprite square cut to the row's equirect box (both on
    the sprite's plane), its corners projected into the view and clipped to it; None when
    it is behind the camera or less than ``MIN_PIECE`` of it lies in the view."""
    from spatialav import geometry

    R, t = _billboard(obj, scene)
    cx, cy, w, h = (float(v) for v in row[2:6])
    s = np.linspace(0, 1, 17)
    x = np.concatenate([cx - w / 2 + w * s, np.full(17, cx + w / 2), cx - w / 2 + w * s,
                        np.full(17, cx - w / 2)])
    y = np.concatenate([np.full(17, cy - h / 2), cy - h / 2 + h * s, np.full(17, cy + h / 2),
                        cy - h / 2 + h * s])
    v = geometry.direction_to_vector(np.pi - 2 * np.pi * x, np.pi / 2 - np.pi * y) @ R
    front = v[:, 0] > 1e-6  # outline points behind the sprite's plane bound nothing
    j, i = -v[front, 1] / v[front, 0], v[front, 2] / v[front, 0]
    j0, j1 = max(j.min(initial=t), -t), min(j.max(initial=-t), t)
    i0, i1 = max(i.min(initial=t), -t), min(i.max(initial=-t), t)
    if j0 >= j1 or i0 >= i1:
        return None
    corners = np.array([[1, -a, b] for a in (j0, j1) for b in (i0, i1)]) @ R.T
    px, py = detect.tile_pixels(corners, look, fov, size)
    if not np.all(np.isfinite(px) & np.isfinite(py)):
        return None
    full = (px.max() - px.min()) * (py.max() - py.min())
    x1, x2 = np.clip([px.min(), px.max()], 0, size)
    y1, y2 = np.clip([py.min(), py.max()], 0, size)
    if full <= 0 or (x2 - x1) * (y2 - y1) < MIN_PIECE * full:
        return None
    return float(x1), float(y1), float(x2), float(y2)


def tile_image(clip, spec, frame: int, rng, scene) -> tuple[np.ndarray, list[str]]:
    """Two upright views of one frame side by side, ``[TILE_PX, 2 TILE_PX, 3]``, with their
    YOLO label lines: the ``SPHERE_TILES`` views owning two of the frame's boxed objects
    (a random view where there are fewer)."""
    from spatialav import geometry

    rows = clip.boxes[clip.boxes[:, 0] == frame]
    dirs = np.concatenate([clip.source_direction, clip.distractor_direction]).astype(np.float64)
    looks = np.asarray(detect.SPHERE_TILES, np.float64)
    centres = geometry.direction_to_vector(looks[:, 0], looks[:, 1])
    picks = rng.permutation(len(rows))[:2]
    views = [int(np.argmax(centres @ geometry.direction_to_vector(*dirs[int(rows[k, 6])])))
             for k in picks]
    views += list(rng.choice(len(looks), 2 - len(views), replace=False))
    image = np.zeros((TILE_PX, 2 * TILE_PX, 3), np.uint8)
    lines = []
    for slot, view in enumerate(views):
        image[:, slot * TILE_PX:(slot + 1) * TILE_PX] = geometry.gnomonic_crop(
            clip.frames[frame], looks[view, 0], looks[view, 1], TILE_FOV, TILE_PX)
        for row in rows:
            box = tile_label(row, spec.objects[int(row[6])], scene, looks[view])
            if box is not None:
                x1, y1, x2, y2 = box
                cx = ((x1 + x2) / 2 + slot * TILE_PX) / (2 * TILE_PX)
                lines.append(f"{int(row[1])} {cx:.6f} {(y1 + y2) / 2 / TILE_PX:.6f} "
                             f"{(x2 - x1) / (2 * TILE_PX):.6f} {(y2 - y1) / TILE_PX:.6f}")
    return image, lines


def _stem(seed: int, frame: int) -> str:
    return f"{seed}_{frame:03d}"


def render_clip_frames(job) -> int:
    """Render one clip and write ``frames_per_clip`` of its frames with labels; returns the
    number of images written (0 when the clip was already on disk)."""
    from spatialav.synth import render_clip, sample_scene  # heavy: imported in the worker

    seed, root, split, frames_per_clip, scene, tiles = job
    images, labels = root / "images" / split, root / "labels" / split
    done = labels / f"{seed}.done"
    if done.exists():
        return 0
    clip = render_clip(seed, scene)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(clip.frames), frames_per_clip, replace=False))
    for f in picks:
        Image.fromarray(clip.frames[f]).save(images / f"{_stem(seed, f)}.jpg",
                                             quality=schema.JPEG_QUALITY)
        (labels / f"{_stem(seed, f)}.txt").write_text("\n".join(label_lines(clip.boxes, f)))
        if tiles:
            image, lines = tile_image(clip, sample_scene(seed, scene), f, rng, scene)
            Image.fromarray(image).save(images / f"{_stem(seed, f)}_tiles.jpg",
                                        quality=schema.JPEG_QUALITY)
            (labels / f"{_stem(seed, f)}_tiles.txt").write_text("\n".join(lines))
    done.touch()  # last: a killed worker leaves the clip to be redone
    return len(picks) * (2 if tiles else 1)


def write_dataset(root: Path, seeds: dict[str, range], frames_per_clip: int, workers: int,
                  scene=None, tiles: bool = False) -> Path:
    """Render (or finish rendering) the ultralytics dataset; returns its ``data.yaml``."""
    from spatialav.synth import SceneConfig

    scene = scene or SceneConfig()
    jobs = []
    for split, split_seeds in seeds.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        jobs += [(s, root, split, frames_per_clip, scene, tiles) for s in split_seeds]
    bar = tqdm(total=len(jobs), desc="render", unit="clip")
    if workers <= 1:
        for job in jobs:
            render_clip_frames(job)
            bar.update()
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(render_clip_frames, jobs):
                bar.update()
    bar.close()
    yaml = root / "data.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    yaml.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\n"
                    f"names:\n{names}\n")
    return yaml


# --- training -----------------------------------------------------------------------------------


def train(data_yaml: Path, work: Path, args) -> tuple[Path, float, float]:
    """Train from the model yaml; returns the final weights, the wall time and the CPU time
    of training (the CPU time does not grow when other jobs share the machine)."""
    ultralytics = detect.import_ultralytics()
    # From the yaml (from scratch), or on from weights this script made before: a CPU run
    # is cheaper to continue than to redo with more epochs.
    model = ultralytics.YOLO(str(args.init or args.model_yaml), task="detect")
    t0, c0 = time.perf_counter(), time.process_time()
    model.train(
        data=str(data_yaml), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
        device="cpu", workers=args.workers_train, pretrained=args.init is not None, amp=False,
        plots=False,
        project=str(work / "runs"), name="train", exist_ok=True, seed=0, val=args.val,
        cache="ram", rect=True, patience=0, verbose=False,
        # Mild augmentation: the renderer's colours, sizes and placement are what the
        # detector will see, colour is much of what tells the sprites apart, and sprites
        # are never drawn mirrored.
        scale=args.aug_scale, translate=0.1, fliplr=0.0, hsv_h=0.01, hsv_s=0.2, hsv_v=0.2,
        # One optimizer step per batch (nbs = batch: no gradient accumulation): a short
        # CPU run needs every step it can get.
        optimizer="AdamW", lr0=args.lr, nbs=args.batch, warmup_epochs=args.warmup_epochs,
    )
    weights = work / "runs" / "train" / "weights" / "last.pt"
    return weights, time.perf_counter() - t0, time.process_time() - c0


def validate(weights: Path, data_yaml: Path, args) -> dict:
    """mAP50, mAP50-95, precision and recall of ``weights`` on the held-out split."""
    ultralytics = detect.import_ultralytics()
    model = ultralytics.YOLO(str(weights), task="detect")
    m = model.val(data=str(data_yaml), split="val", imgsz=args.imgsz, batch=args.batch,
                  device="cpu", workers=0, plots=False, rect=True, verbose=False,
                  project=str(args.work / "runs"), name="val", exist_ok=True)
    return {"map50": float(m.box.map50), "map50_95": float(m.box.map),
            "precision": float(m.box.mp), "recall": float(m.box.mr)}


def init_command(init: Path | None) -> str | None:
    """The command that made ``--init`` weights (from their ``.json``), so a chain of
    continued runs stays reproducible."""
    if init is None or not init.with_suffix(".json").is_file():
        return None
    return json.loads(init.with_suffix(".json").read_text())["command"]


def ship(weights: Path, out: Path, report: dict) -> None:
    """Copy the weights to ``out`` and write ``<out>.json`` and the folder's README."""
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, out)
    report["weights_bytes"] = out.stat().st_size
    report["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    (out.parent / "README.md").write_text(readme(out.name, report))


def readme(name: str, r: dict) -> str:
    return f"""# Detectors shipped with spatialav

`{name}`: a small YOLO11-layer detector with a stride 4-16 head (`synthetic_yolo.yaml`,
{r['parameters']:,} parameters, {r['weights_bytes'] / 1e6:.1f} MB) for the sprites of the synthetic
scenes (`spatialav.synth`), 14 classes in `spatialav.synth.source_bank.CLASSES` order. Trained
from the yaml, offline, on the CPU; nothing was downloaded. Use it with
`spatialav.detect.detect(spatialav.detect.DEFAULT_WEIGHTS, frames)`.

Made by

    {r['command']}

{continued(r)}in {r['seconds_train'] / 60:.1f} min of training \
({r['cpu_seconds_train'] / 60:.1f} CPU-min;
{r['machine']}, shared with other jobs: load average {r['load_average'][1]} at the end),
after {r['seconds_render'] / 60:.1f} min of rendering.

| held-out frames (seeds {r['val_seeds'][0]}..{r['val_seeds'][1] - 1}) | value |
|---|---|
| frames | {r['val_images']} |
| mAP50 | {r['map50']:.3f} |
| mAP50-95 | {r['map50_95']:.3f} |
| precision / recall | {r['precision']:.3f} / {r['recall']:.3f} |

Training: {r['train_images']} frames of 128x256 ({r['frames_per_clip']} per clip, seeds
{r['train_seeds'][0]}..{r['train_seeds'][1] - 1}), imgsz {r['imgsz']}, {r['epochs']} epochs,
ultralytics {r['ultralytics']}, torch {r['torch']}. `{Path(name).stem}.json` holds these
figures; `results/detector.md` has the direction errors, seam and beam checks measured
through `spatialav.detect`.

**Retrain when the synthetic sprites or backgrounds change** (`spatialav/synth/sprites.py`,
`video.py`, the scene sampler's sizes and elevations): the weights only know the drawings
they were trained on.
"""


def continued(r: dict) -> str:
    if not r.get("init"):
        return ""
    return (f"continuing from `{r['init']}` as it was before this run, weights made by\n\n"
            f"    {r['init_command']}\n\n"
            if r.get("init_command") else f"continuing from `{r['init']}`, ")


# --- CLI ----------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="dataset and run directory")
    p.add_argument("--out", type=Path, default=None, help="where to ship the weights (.pt)")
    p.add_argument("--train-clips", type=int, default=300)
    p.add_argument("--val-clips", type=int, default=50)
    p.add_argument("--frames-per-clip", type=int, default=4)
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.002, help="AdamW learning rate")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--aug-scale", type=float, default=0.1, help="random rescaling gain")
    p.add_argument("--val", action="store_true",
                   help="validate after every epoch (learning curve in runs/train/results.csv)")
    p.add_argument("--model-yaml", type=Path, default=MODEL_YAML)
    p.add_argument("--init", type=Path, default=None,
                   help="continue training from these weights (made by this script) instead "
                        "of starting from --model-yaml")
    p.add_argument("--frame-size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    p.add_argument("--tile-images", action="store_true",
                   help="also write an image of two upright views per frame (for tiles='sphere')")
    p.add_argument("--workers", type=int, default=2, help="rendering processes")
    p.add_argument("--workers-train", type=int, default=0, help="ultralytics data workers")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from spatialav.synth import SceneConfig

    scene = SceneConfig(frame_size=tuple(args.frame_size))
    seeds = {"train": range(TRAIN_SEED0, TRAIN_SEED0 + args.train_clips),
             "val": range(VAL_SEED0, VAL_SEED0 + args.val_clips)}
    t0 = time.perf_counter()
    data_yaml = write_dataset(args.work / "data", seeds, args.frames_per_clip, args.workers,
                              scene, args.tile_images)
    seconds_render = time.perf_counter() - t0
    weights, seconds_train, cpu_seconds_train = train(data_yaml, args.work, args)
    metrics = validate(weights, data_yaml, args)

    import torch
    import ultralytics

    model = ultralytics.YOLO(str(weights), task="detect")
    report = {
        **metrics,
        "command": shlex.join(["python", "data_tools/train_detector.py", *(argv or sys.argv[1:])]),
        "seconds_render": round(seconds_render, 1),
        "seconds_train": round(seconds_train, 1),
        "cpu_seconds_train": round(cpu_seconds_train, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "parameters": sum(p.numel() for p in model.model.parameters()),
        "train_images": len(list((args.work / "data" / "images" / "train").glob("*.jpg"))),
        "val_images": len(list((args.work / "data" / "images" / "val").glob("*.jpg"))),
        "frames_per_clip": args.frames_per_clip,
        "tile_images": args.tile_images,
        "train_seeds": [seeds["train"].start, seeds["train"].stop],
        "val_seeds": [seeds["val"].start, seeds["val"].stop],
        "epochs": args.epochs,
        "init": None if args.init is None else str(args.init),
        "init_command": init_command(args.init),
        "imgsz": args.imgsz,
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=1), flush=True)
    if args.out is not None:
        ship(weights, args.out, report)
    return report


if __name__ == "__main__":
    main()
