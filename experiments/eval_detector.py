"""Evaluate the shipped synthetic-scene detector through ``spatialav.detect``; writes
results/detector.{md,json}.

On fresh scenes (seeds ``SEED0 + i``, used neither for training nor for the held-out set of
``data_tools/train_detector.py``), every ``--stride``-th frame:

- precision / recall at angular IoU 0.5 (same class), and the direction error: great-circle
  angle between a matched detection and its object's true direction (the sprite's centre);
  for the seam-padded equirect frame and for the upright tiles (``tiles='sphere'``);
- the seam: each clip turned (columns rolled, an exact yaw) so its first source sits at
  azimuth 180°; counts frames where that object is found exactly once, with and without
  the seam padding;
- beams: hypercardioid beams steered with ``detections_to_objects``; mean |correlation| of a
  beam with its own source's dry signal against the other sources' (ground-truth directions
  as the reference);
- inference frames/s on this machine (a shared CPU: indicative only).

    python experiments/eval_detector.py [--clips 40] [--stride 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="spatialav-yolo-"))

from spatialav import detect, geometry  # noqa: E402
from spatialav.data import transforms  # noqa: E402
from spatialav.synth import render_clip  # noqa: E402

SEED0 = 30_000_000
RESULTS = Path(__file__).resolve().parents[1] / "results"


def subsample(dets: detect.Detections, stride: int) -> detect.Detections:
    keep = np.flatnonzero(dets.frame % stride == 0)
    return dataclasses.replace(dets.take(keep), frame=dets.frame[keep] // stride,
                               num_frames=-(-dets.num_frames // stride))


def object_directions(clip) -> np.ndarray:
    return np.concatenate([clip.source_direction, clip.distractor_direction])


def _summary(hits: int, n_det: int, n_gt: int, err_deg: np.ndarray) -> dict:
    return {"precision": hits / max(n_det, 1), "recall": hits / max(n_gt, 1),
            "median_error_deg": float(np.median(err_deg)),
            "p90_error_deg": float(np.percentile(err_deg, 90))}


def accuracy(clips, found, stride: int) -> dict:
    """Precision, recall and direction errors (degrees) over clips."""
    hits = n_gt = n_det = 0
    errors, elevations = [], []
    for clip, dets in zip(clips, found, strict=True):
        gt = subsample(detect.boxes_to_detections(clip.boxes, len(clip.frames)), stride)
        pairs = detect.match(dets, gt)
        hits, n_gt, n_det = hits + len(pairs), n_gt + len(gt), n_det + len(dets)
        truth = object_directions(clip)[gt.track[pairs[:, 1]]]
        errors.append(geometry.angular_distance(dets.azimuth[pairs[:, 0]],
                                                dets.elevation[pairs[:, 0]], *truth.T))
        elevations.append(truth[:, 1])
    err = np.degrees(np.concatenate(errors))
    high = np.degrees(np.abs(np.concatenate(elevations))) > 45
    return {**_summary(hits, n_det, n_gt, err), "boxes": n_gt,
            "median_error_deg_el_over_45": float(np.median(err[high])) if high.any() else None}


def direction_recall(clips, found, stride: int, radius_deg: float = 8.0) -> dict:
    """Recall by direction (tiles give outline spans, not pixel boxes): a ground-truth object
    counts as found when a same-class detection lies within ``radius_deg`` of it."""
    hits = n_gt = n_det = 0
    errors = []
    for clip, dets in zip(clips, found, strict=True):
        gt = subsample(detect.boxes_to_detections(clip.boxes, len(clip.frames)), stride)
        truth = object_directions(clip)[gt.track]
        d = geometry.angular_distance(dets.azimuth[:, None], dets.elevation[:, None],
                                      truth[None, :, 0], truth[None, :, 1])
        same = (dets.frame[:, None] == gt.frame[None]) & (dets.cls[:, None] == gt.cls[None])
        d = np.where(same, d, np.inf).min(0, initial=np.inf)  # a clip may have no detection
        ok = d < np.radians(radius_deg)
        hits, n_gt, n_det = hits + int(ok.sum()), n_gt + len(gt), n_det + len(dets)
        errors.append(d[ok])
    return _summary(hits, n_det, n_gt, np.degrees(np.concatenate(errors)))


def seam(model, clips, stride: int) -> dict:
    """Frames where source 0 is found exactly once: turned to azimuth 180°, with and without
    the seam padding, and where it was rendered (the detector's own miss rate)."""
    out = {}
    for name, pad, turn in (("padded", detect.DetectConfig.seam_pad, True),
                            ("unpadded", 0.0, True), ("not turned", 0.0, False)):
        cfg = detect.DetectConfig(seam_pad=pad)
        once = total = 0
        errors = []
        for clip in clips:
            w = clip.frames.shape[2]
            az0, el0 = clip.source_direction[0]
            shift = int(round(-(np.pi - az0) / (2 * np.pi) * w)) if turn else 0
            frames = np.roll(clip.frames[::stride], shift, axis=2)
            az = geometry.wrap_azimuth(az0 - 2 * np.pi * shift / w)
            dets = detect.detect(model, frames, cfg)
            near = geometry.angular_distance(dets.azimuth, dets.elevation, az, el0)
            near = (near < np.radians(15)) & (dets.cls == clip.source_class[0])
            count = np.bincount(dets.frame[near], minlength=len(frames))
            once, total = once + int(np.sum(count == 1)), total + len(frames)
            errors.append(geometry.angular_distance(dets.azimuth[near], dets.elevation[near],
                                                    az, el0))
        err = np.degrees(np.concatenate(errors))
        out[name] = {"frames_found_once": once / total, "frames": total,
                     "median_error_deg": float(np.median(err)) if len(err) else None}
    return out


def detections_to_objects(dets: detect.Detections, m: int, centre_frame: float,
                          rng: np.random.Generator | None = None, min_score: float = 0.0):
    """Up to M object directions for ``transforms.object_views`` from a clip's detections.

    The detections counterpart of ``transforms.select_objects`` on ground-truth boxes:
    each track (or, untracked, each detection of the frame nearest ``centre_frame``) is one
    object, placed where it is seen nearest ``centre_frame``. Returns (directions ``[M, 2]``
    float32, valid ``[M]`` bool, class ``[M]`` int32, object id ``[M]`` int32), padded.
    """
    objects = transforms.detection_objects(dets.to_rows(), centre_frame, min_score)
    return transforms.select_objects(rng, objects, m, centre_frame)


def beam_correlations(clip, dirs, valid, pattern: str = "hypercardioid",
                      max_offset: float = math.radians(10)) -> tuple[list[float], list[float]]:
    """How well beams steered to ``dirs [M, 2]`` (``valid [M]``) pick out a synthetic clip's
    sources: for each beam within ``max_offset`` of a source, |corr| of the beamformed FOA
    with that source's dry signal (own) and with every other source's (other). Beams toward
    silent distractors are skipped. Returns (own, other) lists."""
    beams, _ = transforms.object_views(clip.audio[None], clip.frames[None, :1], dirs[None],
                                       valid[None], pattern, np.pi / 3, 16)
    beams = np.asarray(beams[0])
    own, other = [], []
    for j in np.flatnonzero(valid):
        dist = geometry.angular_distance(*dirs[j], *clip.source_direction.T)
        s = int(np.argmin(dist))
        if dist[s] > max_offset:
            continue
        corr = [abs(np.corrcoef(beams[j], dry)[0, 1]) for dry in clip.dry]
        own.append(corr[s])
        other += [c for k, c in enumerate(corr) if k != s]
    return own, other


def beams(clips, found, pattern: str = "hypercardioid") -> dict:
    """Mean |corr| of object beams with their own source vs the other sources."""
    res = {}
    for name in ("detections", "ground truth"):
        own, other = [], []
        for clip, dets in zip(clips, found, strict=True):
            if clip.num_sources < 2:
                continue
            if name == "detections":
                dirs, valid, _, _ = detections_to_objects(dets, 4, dets.num_frames / 2)
            else:
                dirs, valid = clip.source_direction, np.ones(clip.num_sources, bool)
            o, x = beam_correlations(clip, dirs, valid, pattern)
            own += o
            other += x
        res[name] = {"own": float(np.mean(own)), "other": float(np.mean(other)),
                     "beams": len(own)}
    return res


def speed(model, frames, cfg) -> float:
    detect.detect(model, frames[:2], cfg)  # warm-up
    t0 = time.perf_counter()
    detect.detect(model, frames, cfg)
    return len(frames) / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--stride", type=int, default=4, help="use every n-th video frame")
    p.add_argument("--weights", type=Path, default=detect.DEFAULT_WEIGHTS)
    p.add_argument("--out", type=Path, default=RESULTS / "detector")
    args = p.parse_args(argv)

    model = detect.load_model(args.weights)
    clips = [render_clip(SEED0 + i) for i in range(args.clips)]
    tiles = detect.DetectConfig(tiles="sphere")
    found = [detect.detect(model, c.frames[:: args.stride]) for c in clips]
    found_tiles = [detect.detect(model, c.frames[:: args.stride], tiles) for c in clips]
    frames = np.concatenate([c.frames[:: args.stride] for c in clips[:4]])
    trained = json.loads(args.weights.with_suffix(".json").read_text())
    report = {
        "command": shlex.join(["python", "experiments/eval_detector.py", *(argv or sys.argv[1:])]),
        "weights": str(args.weights.relative_to(RESULTS.parent)),
        "seeds": [SEED0, SEED0 + args.clips], "stride": args.stride,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "training": {k: trained[k] for k in ("map50", "map50_95", "precision", "recall",
                                             "seconds_train", "train_images", "val_images",
                                             "epochs", "command", "parameters", "weights_bytes",
                                             "tile_images")},
        "equirect": accuracy(clips, found, args.stride),
        "equirect_by_direction": direction_recall(clips, found, args.stride),
        "tiles_by_direction": direction_recall(clips, found_tiles, args.stride),
        "tile_merge": tiles.tile_merge,
        "seam": seam(model, clips, args.stride),
        "beams": beams(clips, found),
        "frames_per_s": {"equirect": speed(model, frames, detect.DetectConfig()),
                         "tiles": speed(model, frames, tiles)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def _row(name: str, m: dict) -> str:
    return (f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | "
            f"{m['median_error_deg']:.2f}° | {m['p90_error_deg']:.2f}° |")


def _beam_row(name: str, m: dict) -> str:
    return f"| {name} | {m['own']:.3f} | {m['other']:.3f} | {m['beams']} |"


def markdown(r: dict) -> str:
    t, e, s, b = r["training"], r["equirect"], r["seam"], r["beams"]
    padded, unpadded = s["padded"], s["unpadded"]
    return f"""# Object detection on 360° frames (`spatialav.detect`)

Detector: `{r['weights']}` ({t['parameters']:,} parameters, {t['weights_bytes'] / 1e6:.1f} MB),
trained offline (no downloaded weights) on synthetic frames in
{t['seconds_train'] / 60:.1f} min on {r['machine']}:

    {t['command']}

Held-out frames (ultralytics val, {t['val_images']} frames of unseen scenes): **mAP50
{t['map50']:.3f}, mAP50-95 {t['map50_95']:.3f}** (precision {t['precision']:.3f}, recall
{t['recall']:.3f}). Trained on {t['train_images']} frames, {t['epochs']} epochs.

Through `spatialav.detect` on fresh scenes (seeds {r['seeds'][0]}..{r['seeds'][1] - 1}, every
{r['stride']}th frame, {e['boxes']} ground-truth boxes), made by

    {r['command']}

| mode | precision | recall | median direction error | p90 |
|---|---|---|---|---|
{_row("equirect + seam padding, IoU 0.5", e)}
{_row("equirect + seam padding, within 8°", r["equirect_by_direction"])}
{_row("upright tiles (`tiles='sphere'`, 12 x 120°), within 8°", r["tiles_by_direction"])}

Tiles: twelve upright gnomonic views (`detect.SPHERE_TILES`: four on the horizon, four each
at ±60° elevation). Their detections are merged by `detect.merge_tiles`: the detection
nearest its own tile's centre comes first and absorbs every other one closer than
{r['tile_merge']} x the larger angular size, whatever its class. The detector
{"saw such views in training (`--tile-images`)" if t.get("tile_images") else
 "was trained on equirect frames only"}.

Median direction error of objects above 45° elevation (equirect):
{_deg(e['median_error_deg_el_over_45'])}. Errors are measured against the object's true
direction (the sprite centre), so they include the offset of the box centre from it.

**Seam** (each clip yawed so its first source sits at azimuth 180°, {padded['frames']}
frames): found exactly once in {100 * padded['frames_found_once']:.1f} % of frames with the
seam padding (median error {_deg(padded['median_error_deg'])}),
{100 * unpadded['frames_found_once']:.1f} % without it (median error
{_deg(unpadded['median_error_deg'])}); where it was rendered (not at the seam):
{100 * s['not turned']['frames_found_once']:.1f} %.

**Beams** (hypercardioid, `object_views`), mean |correlation| with the dry signals:

| steered by | own source | other sources | beams |
|---|---|---|---|
{_beam_row("detections (`detections_to_objects`)", b["detections"])}
{_beam_row("ground-truth directions", b["ground truth"])}

**Speed** (batch 16, CPU, this shared machine): {r['frames_per_s']['equirect']:.1f} frames/s
on seam-padded 128x256 frames, {r['frames_per_s']['tiles']:.1f} frames/s with the tiles.
"""


def _deg(v) -> str:
    return "n/a" if v is None else f"{v:.2f}°"


if __name__ == "__main__":
    main()
