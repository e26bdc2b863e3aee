"""YT-360 conversion end to end: 6-channel AAC decoded with the [X, Y, W, 0, Z, 0] map puts the
sound where the picture shows it; ids with '-' split at the last '-'; broken clips reported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from spatialav.data import pipeline, schema, storage
from spatialav.data.convert import build, yt360
from spatialav.data.convert import calibration as cal
from spatialav.geometry import angular_distance

REPO = Path(__file__).resolve().parents[1]

SR_IN, FPS_IN, HW_IN = 48000, 24.0, (36, 64)  # 16:9 like the distributed mp4s
YT360_MAP = ("X", "Y", "W", "0", "Z", "0")
SOURCES = {  # clip name -> (az, el) degrees of the scene's source
    "abc-DEF_12-30": (75.0, 25.0),  # the YouTube id itself holds '-'
    "xyz123-0": (-140.0, -20.0),
    "four_ch-10": (10.0, 40.0),  # 4-channel ambiX audio
}
BROKEN = {
    "noaudio-5": "missing-file",
    "trunc-5": "corrupt",
    "stereo-5": "channels",
    "unlisted-5": "split",
    "short-5": "duration-mismatch",
}


def to_yt360(foa: np.ndarray) -> np.ndarray:
    """ambiX [T, 4] -> the 6 channels in YT-360's decoded order (silent slots zero)."""
    ambix = dict(zip("WYZX", foa.T, strict=True))
    zero = np.zeros(len(foa), np.float32)
    return np.stack([ambix[c] if c != "0" else zero for c in YT360_MAP], axis=1)


def write_clip(root, name, az, el, *, seconds=2.0, video_s=None, audio="6ch"):
    az, el = np.radians(az), np.radians(el)
    frames = cal.blob_frames(int(round((video_s or seconds) * FPS_IN)), *HW_IN, az, el)
    cal.write_video(root / "video" / f"{name}.mp4", frames, FPS_IN,
                    audio=np.zeros((int(seconds * SR_IN), 2), np.float32), sample_rate=SR_IN)
    foa = cal.plane_wave(int(seconds * SR_IN), az, el, seed=len(name))
    samples = {"6ch": to_yt360(foa), "4ch": foa, "2ch": foa[:, :2]}.get(audio)
    if samples is not None:
        cal.write_audio(root / "audio" / f"{name}.m4a", samples, SR_IN)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("yt360")
    (root / "video").mkdir()
    (root / "audio").mkdir()
    for name, (az, el) in SOURCES.items():
        write_clip(root, name, az, el, audio="4ch" if name.startswith("four") else "6ch")
    write_clip(root, "noaudio-5", 0, 0, audio=None)
    write_clip(root, "trunc-5", 0, 0)
    m4a = root / "audio" / "trunc-5.m4a"
    m4a.write_bytes(m4a.read_bytes()[: m4a.stat().st_size // 2])
    write_clip(root, "stereo-5", 0, 0, audio="2ch")
    write_clip(root, "unlisted-5", 0, 0)
    write_clip(root, "short-5", 0, 0, video_s=1.0)
    (root / "train.txt").write_text("abc-DEF_12\nfour_ch\nnoaudio\ntrunc\nstereo\nshort\n")
    (root / "test.txt").write_text("xyz123\n")
    return root


@pytest.fixture(scope="module")
def converted(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    argv = ["--root", str(tree), "--out", str(out), "--workers", "1", "--frame-size", "32", "64",
            "--quiet"]
    spec = importlib.util.spec_from_file_location(
        "convert_yt360", REPO / "data_tools" / "convert_yt360.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return storage.find_dataset_dir(cli.main(argv))


def test_clip_names_split_at_the_last_dash():
    assert yt360.split_name("abc-DEF_12-30") == ("abc-DEF_12", "30")
    assert yt360.split_name("-x-1") == ("-x", "1")
    assert yt360.split_name("nodash") is None


def test_every_clip_is_reported_and_only_good_ones_written(converted):
    report = build.load_report(converted)
    s = report["summary"]
    assert s["items_in"] == len(SOURCES) + len(BROKEN) == s["items_written"] + s["items_skipped"]
    entries = {e["item"]: e for e in report["items"]}
    assert {n: entries[n]["kind"] for n in BROKEN} == BROKEN
    assert "unlisted" in entries["unlisted-5"]["reason"]
    ids = {split: sorted(storage.open_split(converted, split)[i]["clip_id"].decode()
                         for i in range(s["per_split"][split]["clips"]))
           for split in ("train", "validation", "test")}
    # The default --validation-fraction 0.1 holds out one of the 6 listed train videos.
    assert ids == {"train": ["abc-DEF_12-30"], "validation": ["four_ch-10"],
                   "test": ["xyz123-0"]}
    # 640x360-style sources are flagged (stretched to 2:1), not rejected.
    assert any("not 2:1" in w for w in entries["xyz123-0"]["warnings"])


def test_channel_map_and_equirect_agree_on_the_source(converted):
    records = []
    for split in ("train", "validation", "test"):
        src = storage.open_split(converted, split)
        records += [src[i] for i in range(len(src))]
    assert len(records) == len(SOURCES)
    for r in records:
        name = r["clip_id"].decode()
        az, el = np.radians(SOURCES[name])
        assert r["sample_rate"] == 24000 and r["audio"].shape == (48000, 4)  # AAC padding cut
        heard = cal.intensity_direction(schema.to_float(r["audio"]))
        frames = schema.decode_frames(r["frames"])
        assert frames.shape == (20, 32, 64, 3)
        seen = cal.blob_direction(frames[len(frames) // 2])
        assert np.degrees(angular_distance(*heard, az, el)) < 5, (name, np.degrees(heard))
        assert np.degrees(angular_distance(*seen, az, el)) < 6, (name, np.degrees(seen))


def test_a_wrong_declared_map_is_refused_or_flagged(tree, tmp_path):
    cfg = build.ConvertConfig(frame_size=(32, 64), layouts=("W,Y,Z,X,0,0",))
    item = next(it for it in yt360.list_items(tree) if it.id == "abc-DEF_12-30")
    converted = yt360.convert(item, cfg)
    assert any("declared unused" in w for w in converted.notes["warnings"])
    four = next(it for it in yt360.list_items(tree) if it.id == "four_ch-10")
    with pytest.raises(build.media.SkipItem, match=r"6 channels, found \[4\]"):
        yt360.convert(four, cfg)


def test_validation_carve_out_keeps_videos_whole(tree):
    items = yt360.list_items(tree, validation_fraction=0.5)
    val = {it.id for it in items if it.split == "validation"}
    train = {it.id for it in items if it.split == "train"}
    assert len(val) == 3 and not val & train  # 6 listed train videos, half held out
    assert {it.split for it in items if it.id == "xyz123-0"} == {"test"}


def test_loader_reads_the_converted_set(converted):
    cfg = pipeline.PipelineConfig(crop_s=1.0, num_views=2, view_sampling="objects")
    batch = next(iter(pipeline.make_loader(converted, cfg, split="train", batch_size=2, seed=1,
                                           shard=(0, 1))))
    assert batch["audio"].shape == (2, 24000, 4) and batch["frames"].shape == (2, 10, 32, 64, 3)
    assert batch["view_dirs"].shape == (2, 2, 2) and "labels" not in batch
