"""STARSS23 conversion end to end on a miniature tree in the dataset's exact layout: good
recordings come out resampled, cut into clips with re-based labels and frames at the target
rate; every broken file is reported, none is written; the build resumes; the loader reads it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spatialav.data import pipeline, schema, storage
from spatialav.data.convert import build, starss23
from spatialav.data.convert import calibration as cal

REPO = Path(__file__).resolve().parents[1]
SR_IN, FPS_IN, HW_IN = 24000, 30000 / 1001, (48, 96)
CFG = build.ConvertConfig(sample_rate=16000, fps=10.0, frame_size=(16, 32), clip_s=1.0,
                          items_per_shard=2)
AZ, EL = np.radians(120.0), np.radians(-30.0)  # left-behind and below: catches sign flips
GOOD = {  # item id -> seconds
    "dev-train-sony/fold3_room1_mix001": 3.0,
    "dev-train-sony/fold3_room1_mix002": 2.5,  # two clips, 0.5 s tail dropped
    "dev-test-tau/fold4_room2_mix001": 2.0,
}
BROKEN = {  # item id -> kind of skip expected
    "dev-train-sony/fold3_room1_mix003": "non-finite",  # float wav with NaN
    "dev-train-sony/fold3_room1_mix004": "truncated",  # wav cut short of its header
    "dev-train-sony/fold3_room1_mix005": "channels",  # stereo wav
    "dev-train-sony/fold3_room1_mix006": "missing-file",  # no mp4
    "dev-train-tau/fold3_room3_mix001": "duration-mismatch",  # 1 s of video for 3 s of audio
    "dev-train-tau/fold3_room3_mix002": "labels",  # a non-numeric azimuth
    "dev-train-tau/fold3_room3_mix003": "corrupt",  # mp4 of random bytes
    "dev-test-tau/fold4_room2_mix002": "corrupt",  # mp4 cut in half (no moov atom)
}


def grey(i: int) -> int:
    """Source video frame i is uniform grey at this level (so frame picks can be traced)."""
    return 16 + (8 * i) % 224


def write_recording(root: Path, item: str, seconds: float, *, channels: int = 4,
                    video_s: float | None = None, float_nan: bool = False,
                    video: bool = True, csv_text: str | None = None) -> None:
    subset, stem = item.split("/")
    paths = {d: root / d / subset for d in ("foa_dev", "video_dev", "metadata_dev")}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    foa = cal.plane_wave(int(seconds * SR_IN), AZ, EL, seed=len(stem))
    audio = np.concatenate([foa, foa], axis=1)[:, :channels]
    if float_nan:
        audio[100, 2] = np.nan
        sf.write(paths["foa_dev"] / f"{stem}.wav", audio, SR_IN, subtype="FLOAT")
    else:
        sf.write(paths["foa_dev"] / f"{stem}.wav", audio, SR_IN, subtype="PCM_16")
    if video:
        n = int(round((video_s or seconds) * FPS_IN))
        frames = np.stack([np.full((*HW_IN, 3), grey(i), np.uint8) for i in range(n)])
        cal.write_video(paths["video_dev"] / f"{stem}.mp4", frames, FPS_IN)
    # DCASE rows: one event per label frame, azimuth = the frame number (traceable).
    rows = csv_text or "".join(f"{f},{f % 13},{f % 2},{f - 90},-30,{100 + f}\n"
                               for f in range(int(seconds * 10)))
    (paths["metadata_dev"] / f"{stem}.csv").write_text(rows)


def make_tree(root: Path) -> Path:
    for item, seconds in GOOD.items():
        write_recording(root, item, seconds)
    b = list(BROKEN)
    write_recording(root, b[0], 2.0, float_nan=True)
    write_recording(root, b[1], 2.0)
    wav = root / "foa_dev" / f"{b[1]}.wav"
    data = wav.read_bytes()
    wav.write_bytes(data[: len(data) * 2 // 3])
    write_recording(root, b[2], 2.0, channels=2)
    write_recording(root, b[3], 2.0, video=False)
    write_recording(root, b[4], 3.0, video_s=1.0)
    write_recording(root, b[5], 2.0, csv_text="0,1,0,10,20,150\n1,1,0,abc,20,150\n")
    write_recording(root, b[6], 2.0)
    (root / "video_dev" / f"{b[6]}.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    write_recording(root, b[7], 2.0)
    mp4 = root / "video_dev" / f"{b[7]}.mp4"
    mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("starss23"))


@pytest.fixture(scope="module")
def converted(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    items = starss23.list_items(tree)
    return build.build(starss23.DATASET, items, out, CFG, workers=1, progress=False)


def tree_hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_listing_follows_the_distributed_layout(tree):
    items = {it.id: it for it in starss23.list_items(tree)}
    assert set(items) == set(GOOD) | set(BROKEN)
    assert {it.split for i, it in items.items() if "dev-test" in i} == {"test"}
    assert {it.split for i, it in items.items() if "dev-train" in i} == {"train"}
    assert items["dev-train-sony/fold3_room1_mix006"].files["video"] is None
    held = starss23.list_items(tree, validation_fraction=0.3)
    val = [it.id for it in held if it.split == "validation"]
    assert len(val) == round(0.3 * 9) and all("dev-train" in i for i in val)
    assert val == [it.id for it in starss23.list_items(tree, 0.3) if it.split == "validation"]
    with pytest.raises(ValueError, match="not a STARSS23 root"):
        starss23.list_items(tree / "foa_dev")


def test_labels_past_the_audio_are_refused(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("0,1,0,10,20,150\n29,1,0,10,20,150\n")  # label frame 29 ends at 3.0 s
    rows, warnings = starss23.read_labels(str(csv), 3.0, 0.0)
    assert rows.shape == (2, 6) and warnings == []
    with pytest.raises(build.media.SkipItem, match="labels run to 3.0 s, past the audio's 2.00"):
        starss23.read_labels(str(csv), 2.0, 0.5)
    # A class outside the 13 is dropped (as DCASE scoring does) and reported as a warning.
    csv.write_text("0,13,0,10,20,150\n1,12,0,10,20,150\n")
    rows, warnings = starss23.read_labels(str(csv), 2.0, 0.5)
    assert rows[:, 1].tolist() == [12]
    assert warnings == [f"{csv}: ignored 1 rows whose class is outside [0, 13)"]


def test_report_accounts_for_every_recording(converted):
    report = build.load_report(converted)
    s = report["summary"]
    assert s["items_in"] == len(GOOD) + len(BROKEN)
    assert s["items_in"] == s["items_written"] + s["items_skipped"]
    assert s["items_written"] == len(GOOD)
    entries = {e["item"]: e for e in report["items"]}
    assert {i: entries[i]["kind"] for i in BROKEN} == BROKEN
    for item in BROKEN:
        assert item.split("/")[1] in entries[item]["reason"]  # names the file
    assert entries["dev-train-sony/fold3_room1_mix002"]["dropped_tail_s"] == 0.5
    n_clips = {i: int(s // CFG.clip_s) for i, s in GOOD.items()}
    assert s["clips_written"] == sum(n_clips.values())
    summary = build.format_summary(report)
    assert "items in 11: written 3 (7 clips), skipped 8" in summary
    assert "corrupt 2" in summary and "fold3_room3_mix002" in summary


def test_only_good_recordings_are_written_as_clips(converted):
    ids = {}
    for split in ("train", "test"):
        src = storage.open_split(converted, split)
        ids[split] = [src[i]["clip_id"].decode() for i in range(len(src))]
    assert ids["train"] == [f"{i}/{j:04d}" for i in sorted(GOOD) if "train" in i
                            for j in range(int(GOOD[i]))]
    assert ids["test"] == [f"dev-test-tau/fold4_room2_mix001/{j:04d}" for j in range(2)]
    spec = storage.read_spec(converted)
    assert spec == CFG.spec(("core", "labels"))
    meta = json.loads((converted / "metadata.json").read_text())
    assert meta["classes"] == list(starss23.CLASSES) and len(meta["classes"]) == 13


def test_clip_contents_audio_frames_labels(converted):
    src = storage.open_split(converted, "train")
    rec = {src[i]["clip_id"].decode(): src[i] for i in range(len(src))}
    for j in range(3):
        r = rec[f"dev-train-sony/fold3_room1_mix001/{j:04d}"]
        assert set(r) == {"clip_id", "audio", "frames", "sample_rate", "fps", "labels"}
        assert r["audio"].shape == (16000, 4) and r["sample_rate"] == 16000
        audio = schema.to_float(r["audio"])
        az, el = cal.intensity_direction(audio)
        assert np.degrees(abs(az - AZ)) < 1 and np.degrees(abs(el - EL)) < 1
        # RMS of W kept through int16 -> float -> 24 k -> 16 k (white noise loses 1/3 of its
        # power above the new Nyquist).
        rms = np.sqrt(np.mean(audio[:, 0] ** 2))
        assert abs(rms - 0.25 * np.sqrt(2 / 3)) < 0.01
        # Frames: output frame k is the source frame nearest to t = j + k / 10 s.
        frames = schema.decode_frames(r["frames"])
        assert frames.shape == (10, 16, 32, 3)
        for k in range(10):
            want = grey(int(round((j + k / 10) * FPS_IN)))
            assert abs(frames[k].mean() - want) < 3, (j, k)
        # Labels re-based: a row at clip frame r came from recording frame 10 j + r, whose
        # azimuth is that frame number - 90.
        lab = r["labels"]
        np.testing.assert_array_equal(lab[:, 0], np.arange(10))
        np.testing.assert_array_equal(lab[:, 3], np.arange(10) + 10 * j - 90)
        np.testing.assert_array_equal(lab[:, 1], (np.arange(10) + 10 * j) % 13)
        np.testing.assert_array_equal(lab[:, 2], (np.arange(10) + 10 * j) % 2)
        np.testing.assert_array_equal(lab[:, 5], 100 + np.arange(10) + 10 * j)


def test_loader_reads_the_converted_set(converted):
    cfg = pipeline.PipelineConfig(crop_s=0.5, rotation="so3", max_polyphony=2)
    loader = pipeline.make_loader(converted, cfg, split="train", batch_size=2, seed=0,
                                  shard=(0, 1))
    batch = next(iter(loader))
    assert batch["audio"].shape == (2, 8000, 4)
    assert batch["frames"].shape == (2, 5, 16, 32, 3)
    assert batch["labels"].shape == (2, 10, 6) and batch["label_mask"].sum() == 10
    assert "source_direction" not in batch and "object_dirs" not in batch
    test = pipeline.make_loader(converted, cfg, split="test", batch_size=2, seed=0,
                                shard=(0, 1))
    assert len(list(test)) == 1


def test_resume_redoes_only_missing_shards(tree, converted, tmp_path):
    items = starss23.list_items(tree)
    out = build.build(starss23.DATASET, items, tmp_path, CFG, workers=1, progress=False)
    # Put it back in the state of an interrupted run: shard 0 written but not yet reported,
    # shard 1 not written, the rest done, no completion files.
    reports = sorted((out / build.REPORT_DIR).glob("*.json"))
    shards = [out / json.loads(r.read_text())["shard"] for r in reports]
    reports[0].unlink()
    reports[1].unlink()
    shards[1].unlink()
    (out / "dataset_info.json").unlink()
    (out / build.REPORT_FILE).unlink()
    identity = build.build_identity(starss23.DATASET, items, CFG)
    (out / build._BUILD_MARK).write_text(json.dumps(identity))
    kept = {p.name: p.stat().st_mtime_ns for p in shards[2:]}
    build.build(starss23.DATASET, items, tmp_path, CFG, workers=1, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in shards[2:]} == kept
    assert tree_hashes(out) == tree_hashes(converted)
    # A partial conversion of other inputs or settings is never mixed in.
    (out / build._BUILD_MARK).write_text(json.dumps(identity | {"items_sha256": "other"}))
    with pytest.raises(ValueError, match="partial conversion of other inputs"):
        build.build(starss23.DATASET, items, tmp_path, CFG, workers=1, progress=False)
    (out / build._BUILD_MARK).unlink()
    with pytest.raises(ValueError, match="converted from other inputs or settings"):
        build.build(starss23.DATASET, items[:-1], tmp_path, CFG, workers=1, progress=False)


@pytest.mark.slow
def test_killed_parallel_cli_run_resumes_to_identical_bytes(tree, converted, tmp_path):
    cmd = [sys.executable, str(REPO / "data_tools" / "convert_starss23.py"), "--root", str(tree),
           "--out", str(tmp_path), "--workers", "2", "--sample-rate", "16000", "--fps", "10",
           "--frame-size", "16", "32", "--clip-s", "1", "--items-per-shard", "2",
           "--validation-fraction", "0", "--quiet"]  # as ``converted``: no validation split
    out = build.dataset_dir(tmp_path, starss23.DATASET, CFG)
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while (not list((out / build.REPORT_DIR).glob("*.json")) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    done = list((out / build.REPORT_DIR).glob("*.json"))
    assert 1 <= len(done) < 6 and not (out / "dataset_info.json").exists()
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "items in 11: written 3 (7 clips), skipped 8" in res.stdout
    assert tree_hashes(out) == tree_hashes(converted)
