"""A folder of 360° mp4s with ambiX or FuMa audio: the picture and the sound of a test scene
agree after conversion and resizing (also across the equirect seam); bad files are reported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from spatialav import ambisonics
from spatialav.data import pipeline, schema, storage
from spatialav.data.convert import build, folder
from spatialav.data.convert import calibration as cal
from spatialav.geometry import angular_distance

REPO = Path(__file__).resolve().parents[1]
SR, FPS_IN, HW_IN = 24000, 25.0, (48, 96)
SCENES = {"scene_a": (100.0, 30.0, "mpeg4"), "sub/seam": (175.0, -10.0, "libx264")}
BROKEN = {"stereo": "channels", "silent": "channels", "long_audio": "duration-mismatch",
          "junk": "corrupt"}


def cli_main(argv):
    spec = importlib.util.spec_from_file_location(
        "convert_folder", REPO / "data_tools" / "convert_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def write_scene(path: Path, az_deg, el_deg, codec="libx264", *, seconds=2.0, video_s=None,
                channels=4, fuma=False):
    az, el = np.radians(az_deg), np.radians(el_deg)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = cal.blob_frames(int(round((video_s or seconds) * FPS_IN)), *HW_IN, az, el)
    foa = cal.plane_wave(int(seconds * SR), az, el)
    audio = np.asarray(ambisonics.ambix_to_fuma(foa), np.float32) if fuma else foa
    cal.write_video(path, frames, FPS_IN, codec=codec,
                    audio=audio[:, :channels] if channels else None, sample_rate=SR)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for name, (az, el, codec) in SCENES.items():
        write_scene(root / f"{name}.mp4", az, el, codec)
    write_scene(root / "stereo.mp4", 0, 0, channels=2)
    write_scene(root / "silent.mp4", 0, 0, channels=0)
    write_scene(root / "long_audio.mp4", 0, 0, video_s=1.0)
    (root / "junk.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 8)
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def converted(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    argv = ["--root", str(tree), "--out", str(out), "--layout", "ambix", "--workers", "1",
            "--frame-size", "24", "48", "--quiet"]
    return Path(cli_main(argv))


def records(path, split="train"):
    src = storage.open_split(path, split)
    return {src[i]["clip_id"].decode(): src[i] for i in range(len(src))}


def test_report_and_records(converted):
    report = build.load_report(converted)
    s = report["summary"]
    assert s["items_in"] == 6 == s["items_written"] + s["items_skipped"]
    entries = {e["item"]: e for e in report["items"]}
    assert {n: entries[n]["kind"] for n in BROKEN} == BROKEN
    assert "no audio stream" in entries["silent"]["reason"]
    assert "found [2]" in entries["stereo"]["reason"]
    assert set(records(converted)) == set(SCENES)
    assert storage.read_spec(converted).groups == ("core",)


def test_picture_and_sound_agree_after_resize(converted):
    for name, r in records(converted).items():
        az, el = np.radians(SCENES[name][:2])
        frames = schema.decode_frames(r["frames"])
        assert frames.shape == (20, 24, 48, 3)
        heard = cal.intensity_direction(schema.to_float(r["audio"]))
        seen = cal.blob_direction(frames[10])
        assert np.degrees(angular_distance(*heard, az, el)) < 5, (name, np.degrees(heard))
        # One output pixel is 7.5°; the blob centre must land within about a pixel.
        assert np.degrees(angular_distance(*seen, az, el)) < 8, (name, np.degrees(seen))
        assert np.degrees(angular_distance(*seen, *heard)) < 10


def test_fuma_is_converted_when_declared(tmp_path):
    write_scene(tmp_path / "in" / "f.mp4", -60.0, 15.0, fuma=True)
    argv = ["--root", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--layout", "fuma",
            "--workers", "1", "--frame-size", "24", "48", "--name", "fumaset", "--quiet"]
    out = Path(cli_main(argv))
    assert out.parts[-3] == "fumaset"
    audio = schema.to_float(records(out)["f"]["audio"])
    # Back in ambiX: W at the plane wave's level again (FuMa stored it 3 dB down), and the
    # dipoles in W, Y, Z, X order point at the source.
    assert abs(np.sqrt(np.mean(audio[:, 0] ** 2)) - 0.25) < 0.01
    heard = cal.intensity_direction(audio)
    assert np.degrees(angular_distance(*heard, np.radians(-60.0), np.radians(15.0))) < 5
    with pytest.raises(SystemExit):
        cli_main(["--root", str(tmp_path / "in"), "--out", str(tmp_path / "x")])  # no --layout


def test_held_out_fractions_partition_the_files(tree):
    items = folder.list_items(tree, validation_fraction=0.2, test_fraction=0.4)
    assert [it.id for it in items] == sorted(["junk", "long_audio", "scene_a", "silent",
                                              "stereo", "sub/seam"])
    counts = {s: sum(it.split == s for it in items) for s in ("train", "validation", "test")}
    assert counts == {"train": 3, "validation": 1, "test": 2}


def test_loader_reads_the_converted_set(converted):
    cfg = pipeline.PipelineConfig(crop_s=None, rotation="yaw")
    batch = next(iter(pipeline.make_loader(converted, cfg, split="train", batch_size=2, seed=0,
                                           shard=(0, 1))))
    assert batch["audio"].shape == (2, 48000, 4) and batch["frames"].shape == (2, 20, 24, 48, 3)
