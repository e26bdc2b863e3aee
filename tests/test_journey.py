"""The README's walkthrough "From your recordings to a SELD score", at a small size: each
converter on a miniature corpus in its dataset's real layout (rendered synthetic scenes, so
the shipped detector finds objects, and one broken file each) -> ``data_tools/detect.py``
-> object-level AVSA steered by those detections, with validation -> the SELD probe on the
converted STARSS23, with DCASE CSVs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import corpora
import numpy as np
import pytest

from spatialav import pretrain, probe
from spatialav.data import detections, storage
from spatialav.data.convert import build
from spatialav.metrics import dcase_io

REPO = Path(__file__).resolve().parents[1]
SEED0 = 50_000_000  # scenes used by no other test, nor by the detector's training
STARSS = {"dev-train-sony/fold3_room1_mix001": 0, "dev-train-sony/fold3_room1_mix002": 1,
          "dev-train-tau/fold3_room4_mix001": 2, "dev-test-sony/fold4_room1_mix001": 3}
JUNK = np.random.default_rng(0).bytes(4000)  # an "mp4" of random bytes: skipped as corrupt


def tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "data_tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_report(dataset_dir: Path, inputs: int, skipped: int) -> None:
    s = build.load_report(dataset_dir)["summary"]
    assert s["items_in"] == inputs == s["items_written"] + s["items_skipped"], s
    assert s["items_skipped"] == skipped, s


@pytest.fixture(scope="module")
def scenes():
    return [corpora.scene(SEED0 + i) for i in range(len(STARSS))]


@pytest.mark.slow
def test_recordings_to_a_seld_score(scenes, tmp_path, capsys):
    pytest.importorskip("ultralytics", reason="the detect extra: pip install -e '.[detect]'")
    flags = ["--workers", "1", "--clip-s", "1", "--quiet"]

    # 1. Convert. STARSS23: three dev-train recordings (one held out as validation by the
    # default --validation-fraction), one dev-test, and a dev-test recording whose mp4 is
    # broken (a broken train one might be the one held out, leaving validation empty).
    root = tmp_path / "STARSS23"
    for item, i in STARSS.items():
        foa, sr, frames, fps, rows = scenes[i]
        corpora.write_starss23(root, item, foa, sr, frames, fps, corpora.dcase_csv(rows))
    foa, sr, _, fps, rows = scenes[0]
    corpora.write_starss23(root, "dev-test-tau/fold4_room2_mix002", foa, sr, None, fps,
                           corpora.dcase_csv(rows))
    (root / "video_dev" / "dev-test-tau" / "fold4_room2_mix002.mp4").write_bytes(JUNK)
    starss = storage.find_dataset_dir(tool("convert_starss23").main(
        ["--root", str(root), "--out", str(tmp_path / "data"), *flags]))
    check_report(starss, inputs=5, skipped=1)
    splits = storage.load_builder(starss).info.splits
    assert {s: splits[s].num_examples for s in splits} == {"train": 4, "validation": 2,
                                                          "test": 2}
    # YT-360 and a folder of mp4s, each with a broken video.
    yt = tmp_path / "yt360"
    for i, name in enumerate(["vidA-0", "vid-B-30", "vidC-5"]):
        corpora.write_yt360(yt, name, *[scenes[i][k] for k in (0, 1, 2, 3)])
    (yt / "video" / "junk-0.mp4").write_bytes(JUNK)
    (yt / "train.txt").write_text("vidA\nvid-B\njunk\n")
    (yt / "test.txt").write_text("vidC\n")
    ytds = storage.find_dataset_dir(tool("convert_yt360").main(
        ["--root", str(yt), "--out", str(tmp_path / "data"), *flags]))
    check_report(ytds, inputs=4, skipped=1)
    videos = tmp_path / "videos"
    for i in range(2):
        corpora.write_folder_video(videos / f"take{i}.mp4", *[scenes[i][k] for k in range(4)])
    (videos / "junk.mp4").write_bytes(JUNK)
    folder = storage.find_dataset_dir(tool("convert_folder").main(
        ["--root", str(videos), "--out", str(tmp_path / "data"), "--layout", "ambix",
         *flags]))
    check_report(folder, inputs=3, skipped=1)

    # 2. Detect objects in the splits pretraining reads, with the shipped weights.
    tool("detect").main(["--data", str(starss), "--split", "train", "validation"])
    dets = detections.load_detections(starss, "train")
    assert len(dets) == 4 and sum(len(d) for d in dets.values()) > 0

    # 3. Object-level AVSA, the beams steered by those detections, validated at the end.
    work = tmp_path / "avsa-objects"
    assert pretrain.main(["--task", "avsa-objects", "--config", "tiny", "--data", str(starss),
                          "--steps", "4", "--set", "data.pipeline.objects_from=detections",
                          "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "objects per training clip (from detections)" in out
    summary = json.loads((work / "summary.json").read_text())
    assert summary["step"] == 4 and np.isfinite(summary["final"]["loss"])
    objects = summary["objects"]
    assert objects["from"] == "detections" and objects["sidecar"].startswith(str(starss))
    assert objects["objects_per_clip"] > 0.5 and objects["clips_with_objects"] > 0.5, objects
    assert {"objects_acc", "avsa_pairwise", "objects_per_clip"} <= set(summary["eval"])

    # 4. The SELD probe on the pretrained encoders, scored on the test split, with CSVs.
    seld = tmp_path / "seld"
    assert probe.main(["--head", "seld", "--config", "tiny", "--init", str(work), "--data",
                       str(starss), "--write-csv", "--workdir", str(seld)]) == 0
    csvs = sorted((seld / "predictions" / "test").glob("*.csv"))
    assert len(csvs) == 2
    for path in csvs:
        rows = dcase_io.read_dcase_csv(path, n_classes=13)
        assert rows.ndim == 2 and rows.shape[1] in (5, 6)
