"""spatialav.detect: YOLO on equirect frames, seam handling, tracks, beams, stored detections.

The geometry and bookkeeping tests run without the ``detect`` extra; the ones that run the
shipped detector (``spatialav/detectors/synthetic_yolo.pt``) skip when ultralytics is not
installed (ultralytics' settings go to a temporary directory: tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import eval_detector
import numpy as np
import pytest
from PIL import Image

from spatialav import detect, geometry
from spatialav.data import detections
from spatialav.detect import Detections

REPO = Path(__file__).resolve().parents[1]
SEEDS = range(40_000_000, 40_000_006)  # fresh scenes: neither training nor held-out seeds


def _dets(frame, cls, az, el, w=0.3, h=0.3, score=0.9, num_frames=None):
    frame = np.atleast_1d(frame)
    n = len(frame)
    full = lambda v: np.broadcast_to(np.asarray(v, np.float32), (n,))
    return Detections(frame, full(cls), full(score), full(az), full(el), full(w), full(h),
                      np.full(n, -1), num_frames=num_frames or int(frame.max()) + 1)


def object_directions(clip) -> np.ndarray:
    return np.concatenate([clip.source_direction, clip.distractor_direction])


# --- without a model ----------------------------------------------------------------------------


def test_core_imports_without_torch():
    code = ("import spatialav.geometry, spatialav.data, spatialav.detect; import sys; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_missing_weights_raise_before_ultralytics(tmp_path):
    missing = tmp_path / "nope.pt"
    code = ("import sys, numpy as np, spatialav.detect as d\n"
            "try:\n"
            f"    d.detect({str(missing)!r}, np.zeros((1, 16, 32, 3), np.uint8))\n"
            "except FileNotFoundError as e:\n"
            f"    assert {str(missing)!r} in str(e), e\n"
            "else:\n"
            "    raise AssertionError('no FileNotFoundError')\n"
            "assert 'ultralytics' not in sys.modules and 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        detect.load_model(missing)


def _jpeg(frame):
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("frames, message", [
    (np.zeros((2, 64, 128, 3), np.float32), "expected uint8.*got dtype float32"),
    (np.zeros((64, 128, 3), np.uint8), r"expected uint8 \[N, H, W, 3\].*got shape \(64, 128, 3\)"),
    (np.zeros((1, 64, 128, 4), np.uint8), r"got shape \(1, 64, 128, 4\)"),
    ([b"definitely not a jpeg"], "frame 0: expected a decodable JPEG/PNG image"),
    ([_jpeg(np.zeros((64, 128, 3), np.uint8))[:200]], "frame 0: expected a decodable"),
    (["frame.jpg"], "frame 0: expected encoded image bytes.*got str"),
])
def test_corrupt_frames_raise_value_error(frames, message, tmp_path):
    weights = tmp_path / "any.pt"  # frames are checked before the model is loaded
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match=message):
        detect.detect(weights, frames)


def test_encoded_frames_decode_to_their_pixels():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (2, 16, 32, 3), np.uint8)
    png = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG")
        png.append(buf.getvalue())
    np.testing.assert_array_equal(detect.as_frames(png), frames)  # lossless: exact
    # JPEG of a smooth image: close to it, channels in RGB order (not BGR).
    smooth = np.zeros((2, 32, 64, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)
    smooth[:, :, :, 2] = 40
    out = detect.as_frames([_jpeg(f) for f in smooth])
    assert out.dtype == np.uint8 and np.abs(out.astype(int) - smooth).mean() < 4


def test_detections_rows_and_boxes_round_trip():
    d = _dets([0, 1, 1], [2, 3, 4], [np.pi, -np.pi / 2, 0.3], [0.0, 0.5, -1.2], w=[0.2, 0.3, 0.4],
              h=[0.1, 0.2, 0.3])
    back = Detections.from_rows(d.to_rows(), d.num_frames)
    for name in Detections._DTYPES:
        np.testing.assert_allclose(getattr(back, name), getattr(d, name), atol=1e-6)
    # The box is the equirect box: az = pi is column 0, az = -pi/2 is 3/4 of the width.
    np.testing.assert_allclose(d.box[:2, 0], [0.0, 0.75], atol=1e-6)
    np.testing.assert_allclose(d.box[:, 2], d.width / (2 * np.pi))
    assert len(Detections.empty(5)) == 0 and Detections.empty(5).to_rows().shape == (0, 8)


def test_padded_boxes_keep_one_copy_across_the_seam():
    w, h, pad = 256, 128, 32
    # An object at the seam, seen whole in the padding on both sides: centred at padded
    # column pad + 0 (canonical) and pad + w (the copy in the right padding).
    raw = np.array([[pad - 8, 50, pad + 8, 66, 0.9, 3],
                    [pad + w - 8, 50, pad + w + 8, 66, 0.8, 3]], np.float32)
    d = detect.padded_boxes_to_detections(raw, 0, pad, w, h, 1)
    assert len(d) == 1
    assert abs(abs(d.azimuth[0]) - np.pi) < 1e-5 and d.cls[0] == 3 and d.score[0] == 0.9
    np.testing.assert_allclose(d.width, 2 * np.pi * 16 / w)


def test_angular_iou_wraps_and_merge_removes_seam_duplicates():
    d = _dets([0, 0, 0], [1, 1, 2], [np.pi - 0.02, -np.pi + 0.02, np.pi], 0.0)
    iou = detect.angular_iou(d, d)
    np.testing.assert_allclose(iou[0, 1], 0.26 / 0.34, rtol=1e-4)  # 0.04 apart across the seam
    merged = detect.merge_duplicates(d, 0.5)
    assert sorted(merged.cls.tolist()) == [1, 2]  # other class kept
    assert len(detect.merge_duplicates(d, 0.5, class_agnostic=True)) == 1


def test_link_tracks_follows_objects_same_class_only():
    # Two objects moving slowly, one crossing the seam; a third of another class appears
    # where the first was; a gap of one frame is bridged.
    frames = [0, 0, 1, 1, 3, 3, 3]
    az = [np.pi - 0.02, 0.5, -np.pi + 0.01, 0.52, -np.pi + 0.04, 0.55, np.pi - 0.02]
    cls = [1, 2, 1, 2, 1, 2, 5]
    d = detect.link_tracks(_dets(frames, cls, az, 0.1))
    assert d.track.tolist() == [0, 1, 0, 1, 0, 1, 2]
    far = detect.link_tracks(_dets([0, 1], 1, [0.0, 1.0], 0.0))
    assert far.track.tolist() == [0, 1]


def test_tile_boxes_map_to_the_directions_gnomonic_crop_looks_at():
    fov, size = np.radians(120), 96
    look = (np.radians(30), np.radians(60))
    # A box centred on the tile's pixel (70, 20) (its centre is at 70.5, 20.5 in edge
    # coordinates) points where gnomonic_crop samples that pixel.
    raw = np.array([[66.5, 16.5, 74.5, 24.5, 0.9, 7]], np.float32)
    d = detect.tile_boxes_to_detections(raw, 0, look, fov, size, 1)
    ray = geometry._perspective_rays((size, size), fov, np)[20, 70]
    u = geometry.rotation_matrix(*look) @ ray
    az, el = geometry.vector_to_direction(u)
    assert geometry.angular_distance(d.azimuth[0], d.elevation[0], az, el) < 1e-5
    # A box touching the border is a cut object: dropped.
    cut = np.array([[0, 16, 10, 24, 0.9, 7]], np.float32)
    assert len(detect.tile_boxes_to_detections(cut, 0, look, fov, size, 1)) == 0


def test_detections_to_objects_mirrors_select_objects():
    d = detect.link_tracks(_dets([0, 0, 1, 1, 2], [1, 2, 1, 2, 1], [0.1, 2.0, 0.12, 2.0, 0.14],
                                 [0.0, 0.3, 0.0, 0.3, 0.0]))
    dirs, valid, cls, ids = eval_detector.detections_to_objects(d, 3, centre_frame=2)
    assert valid.tolist() == [True, True, False]
    np.testing.assert_allclose(dirs[0], [0.14, 0.0], atol=1e-6)  # seen in frame 2
    np.testing.assert_allclose(dirs[1], [2.0, 0.3], atol=1e-6)  # last seen in frame 1
    assert cls.tolist() == [1, 2, -1] and ids.tolist() == [0, 1, -1]


def test_parts_round_trip_and_unfinished_runs_raise(tmp_path):
    a, b = _dets([0, 2], [1, 3], [0.1, 0.2], 0.0, num_frames=4), Detections.empty(4)
    detections.save_part(tmp_path / detections.part_name(0, 2),
                         {"train/000000": a, "train/000001": b})
    (tmp_path / "config.json").write_text('{"num_clips": 3}')
    with pytest.raises(ValueError, match="unfinished"):
        detections.load_detections(None, "train", tmp_path)
    detections.save_part(tmp_path / detections.part_name(2, 3), {"train/000002": a})
    got = detections.load_detections(None, "train", tmp_path)
    assert list(got) == ["train/000000", "train/000001", "train/000002"]
    np.testing.assert_array_equal(got["train/000000"].to_rows(), a.to_rows())
    assert len(got["train/000001"]) == 0 and got["train/000001"].num_frames == 4
    source = detections.DetectionsSource([{"clip_id": b"train/000002"}], got)
    np.testing.assert_array_equal(source[0]["detections"], a.to_rows())


def test_merge_tiles_prefers_the_most_central_view():
    looks = detect.SPHERE_TILES
    # Object A at az 10 deg: class 1 from the tile at az 0 (score 0.4, 10 deg off its centre),
    # class 2 from the tile at az 90 (0.9, 79 deg off): the central view wins over the higher
    # score. Object B at az 60 is seen only by the az 0 tile, far off-centre: kept.
    # C, 15 deg from A (more than half the 20 deg size), is its own object.
    d = _dets([0, 0, 0, 0, 1], [1, 2, 3, 4, 2], np.radians([10, 11, 60, 25, 11]), 0.0,
              w=np.radians(20), h=np.radians(20), score=[0.4, 0.9, 0.5, 0.3, 0.9])
    tile = np.array([0, 1, 0, 0, 1])
    merged = detect.merge_tiles(d, tile, looks, factor=0.5)
    assert merged.cls.tolist() == [1, 3, 4, 2] and merged.frame.tolist() == [0, 0, 0, 1]
    # With a larger merge radius C joins A; the frames never merge.
    assert detect.merge_tiles(d, tile, looks, factor=1.0).cls.tolist() == [1, 3, 2]
    assert len(detect.merge_tiles(d.take([]), np.zeros(0, int), looks)) == 0


def test_sphere_tiles_cover_the_sphere_with_room_for_an_object():
    # Every direction lies in its owner tile (the nearest centre) at least 8 deg inside the
    # tile's edge, so an object up to 16 deg across is seen whole by the tile that keeps it.
    az, el = np.meshgrid(np.linspace(-np.pi, np.pi, 181), np.linspace(-np.pi / 2, np.pi / 2, 91))
    v = geometry.direction_to_vector(az.ravel(), el.ravel())
    looks = detect.SPHERE_TILES.astype(np.float64)
    owner = np.argmax(v @ geometry.direction_to_vector(looks[:, 0], looks[:, 1]).T, axis=1)
    fov, size = detect.DetectConfig.tile_fov, 1000
    margin = np.tan(np.radians(8)) / np.tan(fov / 2) * size / 2  # at the centre; more outside
    for t, look in enumerate(looks):
        x, y = detect.tile_pixels(v[owner == t], look, fov, size)
        assert np.all((x > margin) & (x < size - margin) & (y > margin) & (y < size - margin))


def test_tile_pixels_invert_tile_rays():
    fov, size, look = np.radians(120), 96, (np.radians(-40), np.radians(60))
    x, y = np.random.default_rng(0).uniform(0, size, (2, 50))
    world = detect.tile_rays(x, y, size, fov) @ geometry.rotation_matrix(*look).T
    px, py = detect.tile_pixels(world * 3.0, look, fov, size)  # any length
    np.testing.assert_allclose(px, x, atol=1e-9)
    np.testing.assert_allclose(py, y, atol=1e-9)
    assert np.isnan(detect.tile_pixels(-world[:1], look, fov, size)[0]).all()  # behind


def test_angular_size_shrinks_azimuth_spans_near_the_poles():
    # Near a pole the azimuth span of a box is wide; its size on the sphere is not.
    polar_box = _dets([0], [1], [0.0], [np.radians(80)], w=2.0, h=0.2)
    np.testing.assert_allclose(detect.angular_size(polar_box), 2.0 * np.cos(np.radians(80)),
                               rtol=1e-5)


def _sidecar(dataset_dir, split: str, clips: dict[str, Detections]) -> None:
    """A detections sidecar as ``data_tools/detect.py`` writes it (one part)."""
    out = detections.sidecar_dir(dataset_dir, split)
    out.mkdir(parents=True)
    detections.save_part(out / detections.part_name(0, len(clips)), clips)
    (out / "config.json").write_text(f'{{"num_clips": {len(clips)}}}')


def test_objects_come_from_the_detections_of_the_frames_the_crop_keeps():
    # A 3 s clip at 10 fps; one tracked object whose azimuth is 0.01 x its video frame, and
    # one untracked detection per frame at elevation 0.01 x frame. Random 1 s crops, every
    # 2nd frame kept: both objects are placed where they are seen in the kept frame nearest
    # the crop's centre, whatever the crop.
    from spatialav.data import pipeline, schema

    fps, n = 10.0, 30
    tracked = _dets(np.arange(n), 3, 0.01 * np.arange(n), 0.5, num_frames=n)
    tracked = dataclasses.replace(tracked, track=np.zeros(n))
    loose = _dets(np.arange(n), 4, 2.0, 0.01 * np.arange(n), num_frames=n)
    dets = detect.concat([tracked, loose], n)
    jpeg = schema.encode_jpeg(np.zeros((8, 16, 3), np.uint8))
    record = {"clip_id": b"c0", "audio": np.zeros((3 * 800, 4), np.int16), "sample_rate": 800,
              "fps": fps, "frames": np.array([jpeg] * n, dtype=object)}
    source = detections.DetectionsSource([record], {"c0": dets})
    cfg = pipeline.PipelineConfig(crop_s=1.0, frame_stride=2, rotation="none", num_objects=3,
                                  objects_from="detections")
    starts = set()
    for seed in range(12):
        ex = pipeline.prepare_clip(source[0], np.random.default_rng(seed), cfg, augment=True)
        v0 = int(round(float(ex["t0"]) * fps))
        kept = v0 + np.arange(0, 10, 2)  # the video frames of the crop
        middle = kept[np.argmin(np.abs(kept - kept.mean()))]
        starts.add(v0)
        assert ex["object_valid"].tolist() == [True, True, False]
        np.testing.assert_allclose(ex["object_dirs"][:2], [[0.01 * middle, 0.5],
                                                           [2.0, 0.01 * middle]], atol=1e-6)
    assert len(starts) > 3  # the crops moved
    # Object-centred viewpoints (avsa) follow the same detections.
    views = dataclasses.replace(cfg, num_objects=0, num_views=2, view_sampling="objects",
                                view_jitter=0.0, view_min_separation=0.5)
    ex = pipeline.prepare_clip(source[0], np.random.default_rng(0), views, augment=True)
    kept = int(round(float(ex["t0"]) * fps)) + np.arange(0, 10, 2)
    middle = kept[np.argmin(np.abs(kept - kept.mean()))]
    got = sorted(map(tuple, np.round(ex["view_dirs"], 5)))
    np.testing.assert_allclose(got, sorted([(0.01 * middle, 0.5), (2.0, 0.01 * middle)]),
                               atol=1e-5)


def test_the_loader_reads_a_datasets_sidecar_and_refuses_one_of_another_build(tmp_path):
    from test_cli_errors import write_dataset

    from spatialav.data import pipeline

    data = write_dataset(tmp_path / "plain" / "cfg" / "1.0.0", {"train": 4})
    clips = {f"train/{i}": _dets(np.arange(10), 1, 0.1 * i, -0.2, num_frames=10)
             for i in range(4)}
    cfg = pipeline.PipelineConfig(rotation="none", num_objects=2, objects_from="detections")
    loader = dict(split="train", batch_size=4, seed=0, shard=(0, 1))
    with pytest.raises(FileNotFoundError, match=r"compute them with python data_tools/detect"
                                                r"\.py --data \S+ --split train"):
        pipeline.make_loader(data, cfg, **loader)
    _sidecar(data, "train", dict(list(clips.items())[:3]))
    with pytest.raises(ValueError, match="detections of 3 clips but split 'train' of"):
        pipeline.make_loader(data, cfg, **loader)
    for path in detections.sidecar_dir(data, "train").iterdir():
        path.unlink()
    detections.sidecar_dir(data, "train").rmdir()
    _sidecar(data, "train", clips)
    batch = next(iter(pipeline.make_loader(data, cfg, **loader)))
    np.testing.assert_allclose(batch["object_dirs"][:, 0, 0], 0.1 * batch["index"], atol=1e-6)
    assert batch["object_valid"].sum(1).tolist() == [1] * 4
    # Detections made on another frame count would point at other times.
    src = detections.DetectionsSource([{"clip_id": b"c", "frames": [b""] * 8}],
                                  {"c": Detections.empty(10)}, origin="here")
    with pytest.raises(ValueError, match="here: clip 'c' has 8 frames but its detections"):
        src[0]


@pytest.mark.slow
def test_pretraining_on_objects_from_detections_counts_them(tmp_path, capsys):
    # Clip i has i % 3 tracked objects. A global batch of 4 is the whole train split, so every
    # step sees each clip once: 0.75 objects per clip on average, half the clips with one.
    import json

    from test_cli_errors import write_dataset

    from spatialav import pretrain

    data = write_dataset(tmp_path / "plain" / "cfg" / "1.0.0", {"train": 4, "validation": 2})

    def clip(i):
        return detect.concat([dataclasses.replace(
            _dets(np.arange(10), 1, 1.5 * k, 0.1, w=0.5, h=0.5, num_frames=10),
            track=np.full(10, k)) for k in range(i % 3)], 10)

    argv = ["--task", "avsa-objects", "--config", "tiny", "--data", str(data), "--steps", "2",
            "--set", "data.pipeline.objects_from=detections", "--workdir", str(tmp_path / "w")]
    _sidecar(data, "train", {f"train/{i}": clip(i) for i in range(4)})
    assert pretrain.main(argv) == 1  # no validation sidecar: named, with the command
    err = capsys.readouterr().err
    assert f"expected {detections.sidecar_dir(data, 'validation')})" in err
    assert f"python data_tools/detect.py --data {data} --split train validation" in err
    _sidecar(data, "validation", {f"validation/{i}": clip(i + 1) for i in range(2)})
    assert pretrain.main(argv) == 0
    out = capsys.readouterr().out
    assert "objects per training clip (from detections): 0.75 of at most 3; 50.0 %" in out
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["objects"] == {"from": "detections", "max_objects": 3, "logged_steps": 1,
                                  "objects_per_clip": 0.75, "clips_with_objects": 0.5,
                                  "sidecar": str(detections.sidecar_dir(data, "train"))}
    ev = summary["eval"]  # validation clips 1 and 2: 1 and 2 objects
    assert ev["objects_per_clip"] == 1.5 and ev["clips_with_objects"] == 1.0
    assert 0 <= ev["objects_acc"] <= 1 and summary["step"] == 2


# --- with the shipped detector ----------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("ultralytics", reason="the detect extra (ultralytics, torch) is not "
                        "installed: pip install -e '.[detect]'")
    return detect.load_model(detect.DEFAULT_WEIGHTS)


@pytest.fixture(scope="module")
def clips():
    from spatialav.synth import render_clip

    return [render_clip(s) for s in SEEDS]


@pytest.fixture(scope="module")
def found(model, clips):
    return [detect.detect(model, c.frames[::4]) for c in clips]  # 10 frames per clip


def _every_4th(clip):
    gt = detect.boxes_to_detections(clip.boxes, len(clip.frames))
    keep = np.flatnonzero(gt.frame % 4 == 0)
    return dataclasses.replace(gt.take(keep), frame=gt.frame[keep] // 4)


def test_recall_and_precision_on_fresh_frames(clips, found):
    hits = n_gt = n_det = 0
    for clip, dets in zip(clips, found, strict=True):
        gt = _every_4th(clip)
        hits += len(detect.match(dets, gt))
        n_gt, n_det = n_gt + len(gt), n_det + len(dets)
    assert hits / n_gt >= 0.8, (hits, n_gt)
    assert hits / n_det >= 0.8, (hits, n_det)


def test_median_direction_error_within_3_degrees(clips, found):
    errors = []
    for clip, dets in zip(clips, found, strict=True):
        gt = _every_4th(clip)
        pairs = detect.match(dets, gt)
        truth = object_directions(clip)[gt.track[pairs[:, 1]]]
        errors.append(geometry.angular_distance(dets.azimuth[pairs[:, 0]],
                                                dets.elevation[pairs[:, 0]], *truth.T))
    assert np.degrees(np.median(np.concatenate(errors))) <= 3.0


def test_tracks_are_one_per_object(clips, found):
    for clip, dets in zip(clips, found, strict=True):
        pairs = detect.match(dets, _every_4th(clip))
        # Each track holds one object (no switches) for almost all its detections.
        for t in np.unique(dets.track[pairs[:, 0]]):
            objs = _every_4th(clip).track[pairs[dets.track[pairs[:, 0]] == t, 1]]
            assert np.mean(objs == np.bincount(objs).argmax()) >= 0.9


def _reliable_sources(clips, found, k=3):
    """(clip, source) pairs the detector finds in every frame where they are: the seam test
    then measures the seam, not the detector's misses."""
    picks = []
    for clip, dets in zip(clips, found, strict=True):
        gt = _every_4th(clip)
        pairs = detect.match(dets, gt)
        for s in range(clip.num_sources):
            if np.sum(gt.track[pairs[:, 1]] == s) == np.sum(gt.track == s) == len(
                    clip.frames[::4]):
                picks.append((clip, s))
    assert len(picks) >= k, f"only {len(picks)} sources found in every frame"
    return picks[:k]


def test_object_across_the_seam_is_detected_once(model, clips, found):
    for clip, s in _reliable_sources(clips, found):
        w = clip.frames.shape[2]
        az0, el0 = clip.source_direction[s]
        # Yaw by alpha rolls the columns by -alpha / (2 pi) W: put the source at the seam.
        shift = int(round(-(np.pi - az0) / (2 * np.pi) * w))
        frames = np.roll(clip.frames[::4], shift, axis=2)
        az = geometry.wrap_azimuth(az0 - 2 * np.pi * shift / w)
        assert abs(abs(az) - np.pi) < np.radians(1)
        dets = detect.detect(model, frames)
        near = geometry.angular_distance(dets.azimuth, dets.elevation, az, el0) < np.radians(15)
        per_frame = np.bincount(dets.frame[near], minlength=len(frames))
        assert np.all(per_frame == 1), per_frame
        assert np.all(dets.cls[near] == clip.source_class[s])
        err = geometry.angular_distance(dets.azimuth[near], dets.elevation[near], az, el0)
        assert np.degrees(np.median(err)) <= 3.0
        assert len(np.unique(dets.track[near])) == 1  # one track across the seam


def test_empty_frame_gives_empty_detections(model):
    from spatialav.synth import sample_scene, video

    background = video.panorama(sample_scene(SEEDS[0]), 128, 256)[None]
    dets = detect.detect(model, background)
    assert len(dets) == 0 and dets.num_frames == 1 and dets.to_rows().shape == (0, 8)


def test_sphere_tiles_find_the_objects(model, clips):
    cfg = detect.DetectConfig(tiles="sphere")
    errors, hits, n_gt = [], 0, 0
    for clip in clips[:3]:
        dets = detect.detect(model, clip.frames[::8], cfg)
        gt = detect.boxes_to_detections(clip.boxes, len(clip.frames))
        keep = np.flatnonzero(gt.frame % 8 == 0)
        gt = dataclasses.replace(gt.take(keep), frame=gt.frame[keep] // 8)
        # Tile boxes are the outline's spans, not the pixel box: match on direction.
        d = geometry.angular_distance(dets.azimuth[:, None], dets.elevation[:, None],
                                      *object_directions(clip)[gt.track].T[:, None])
        same = (dets.frame[:, None] == gt.frame[None]) & (dets.cls[:, None] == gt.cls[None])
        d = np.where(same, d, np.inf).min(0)
        hits, n_gt = hits + int(np.sum(d < np.radians(8))), n_gt + len(gt)
        errors.append(d[np.isfinite(d)])
    assert hits / n_gt >= 0.6, (hits, n_gt)
    assert np.degrees(np.median(np.concatenate(errors))) <= 4.0


def test_beams_from_detections_pick_out_their_source(clips, found):
    own, other = [], []
    for clip, dets in zip(clips, found, strict=True):
        if clip.num_sources < 2:
            continue
        dirs, valid, _, _ = eval_detector.detections_to_objects(dets, 4, centre_frame=5)
        o, x = eval_detector.beam_correlations(clip, dirs, valid, "hypercardioid")
        own += o
        other += x
    assert len(own) >= 4
    assert np.mean(own) > np.mean(other) + 0.2, (np.mean(own), np.mean(other))


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "data_tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_detect_tool_is_resumable_and_feeds_the_pipeline(model, tmp_path, capsys):
    from spatialav.data import pipeline, storage, synthetic
    from spatialav.synth import SceneConfig

    scene = SceneConfig(duration=1.0, fps=5.0, rt60=(0.2, 0.3), room_max=(6.0, 6.0, 3.0),
                        min_active=0.5)
    preset = synthetic.Preset("detect_test", scene, (3, 1, 1), clips_per_shard=2)
    data = synthetic.build_synthetic(tmp_path / "data", preset, workers=1, progress=False)
    tool = _load_tool("detect")
    (out,) = tool.main(["--data", str(data), "--split", "train", "--part-size", "2"])
    parts = sorted(out.glob("part-*.npz"))
    assert [p.name for p in parts] == [detections.part_name(0, 2), detections.part_name(2, 3)]
    # A killed run: the second part is missing. Rerunning redoes only that one.
    first = parts[0].stat().st_mtime_ns
    parts[1].unlink()
    tool.main(["--data", str(data), "--split", "train", "--part-size", "2"])
    assert parts[0].stat().st_mtime_ns == first and parts[1].exists()
    with pytest.raises(SystemExit) as stop:  # a user error: one line, no traceback
        tool.main(["--data", str(data), "--split", "train", "--conf", "0.5"])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "other settings" in err and str(out) in err

    dets = detections.load_detections(data, "train")
    src = storage.open_split(data, "train")
    assert sorted(dets) == sorted(src[i]["clip_id"].decode() for i in range(len(src)))
    assert sum(len(d) for d in dets.values()) > 0
    cfg = pipeline.PipelineConfig(crop_s=1.0, rotation="none", num_objects=2,
                                  objects_from="detections")
    ex = pipeline.prepare_clip(detections.DetectionsSource(src, dets)[0],
                               np.random.default_rng(0), cfg, augment=False)
    assert ex["object_dirs"].shape == (2, 2) and ex["object_valid"].any()


@pytest.mark.slow
def test_train_detector_smoke(tmp_path):
    pytest.importorskip("ultralytics", reason="the detect extra (ultralytics, torch) is not "
                        "installed: pip install -e '.[detect]'")
    cmd = [sys.executable, str(REPO / "data_tools" / "train_detector.py"), "--work",
           str(tmp_path), "--train-clips", "4", "--val-clips", "1", "--frames-per-clip", "4",
           "--epochs", "1", "--imgsz", "64", "--batch", "8", "--workers", "1", "--tile-images"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "cfg")})
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "runs" / "train" / "weights" / "last.pt").is_file()
    assert '"map50"' in run.stdout
    assert len(list((tmp_path / "data" / "images" / "train").glob("*_tiles.jpg"))) == 16


def test_tile_labels_frame_the_sprites_in_the_views():
    """The label of each object in a training view is the box of its pixels there: the
    pixels where the view of the frame differs from the view of the empty room."""
    from spatialav.synth import SceneConfig, render_clip, sample_scene, video

    tool = _load_tool("train_detector")
    scene = SceneConfig(frame_size=(128, 256))
    looks = detect.SPHERE_TILES.astype(np.float64)
    centres = geometry.direction_to_vector(looks[:, 0], looks[:, 1])
    px = np.arange(tool.TILE_PX) + 0.5
    checked = 0
    for seed in (10_000_003, 10_000_011, 10_000_013):
        clip, spec = render_clip(seed, scene), sample_scene(seed, scene)
        empty = video.panorama(spec, 128, 256)
        rows = clip.boxes[clip.boxes[:, 0] == 5]
        for t, look in enumerate(looks):
            rays = detect.tile_rays(*np.meshgrid(px, px), tool.TILE_PX, tool.TILE_FOV)
            owned = np.argmax(rays @ geometry.rotation_matrix(*look).T @ centres.T, -1) == t
            view = geometry.gnomonic_crop(clip.frames[5], *look, tool.TILE_FOV, tool.TILE_PX)
            room = geometry.gnomonic_crop(empty, *look, tool.TILE_FOV, tool.TILE_PX)
            mask = np.abs(view.astype(int) - room.astype(int)).max(-1) > 40
            boxes = [b for row in rows
                     if (b := tool.tile_label(row, spec.objects[int(row[6])], scene, look))]
            covered = np.zeros_like(mask)
            for x1, y1, x2, y2 in boxes:
                covered[max(int(y1) - 1, 0):int(np.ceil(y2)) + 1,
                        max(int(x1) - 1, 0):int(np.ceil(x2)) + 1] = True
                inside = np.argwhere(mask[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))])
                assert len(inside), (seed, look, (x1, y1, x2, y2))
                if min(x1, y1) <= 0 or max(x2, y2) >= tool.TILE_PX:
                    continue  # cut by the view's edge: stretched, and dropped at inference
                # Tight: the sprite's pixels span most of its box (not all: off the view's
                # centre line perspective turns a sprite, and the box holds its corners).
                h, w = inside.max(0) - inside.min(0) + 1
                assert h >= 0.4 * (y2 - y1) and w >= 0.4 * (x2 - x1), (seed, look, h, w, x1,
                                                                        y1, x2, y2)
                checked += 1
            # Complete: the sprites' pixels where the view is the one detections are kept
            # from (its owned directions) are inside the boxes (but for anti-aliasing).
            mask &= owned
            assert not mask.any() or covered[mask].mean() > 0.9, (seed, look,
                                                                   covered[mask].mean())
    assert checked >= 10
