"""The probe CLI end to end on the tiny preset: classify, seld (with distance and CSVs), doa
(cached and fine-tuned, on a label subset) and localise run and report; --help documents
every option; bad input fails cleanly."""

import json

import numpy as np
import pytest
from PIL import Image

from spatialav import probe
from spatialav.metrics.dcase_io import read_dcase_csv


def _run(head, root, workdir, *extra):
    return probe.main(["--head", head, "--config", "tiny", "--workdir", str(workdir),
                       "--set", f"data.root={root}", "--set", "eval.max_clips=2", *extra])


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        probe.main(["--help"])
    out = capsys.readouterr().out
    for opt in ("--head", "--init", "--config", "--format", "--data", "--workdir", "--steps",
                "--finetune", "--write-csv", "--set", "classify", "seld", "doa", "localise",
                "separate"):
        assert opt in out


def test_bad_input_fails_cleanly(tmp_path, capsys):
    assert probe.main(["--head", "seld", "--set", "head.nope=1"]) == 2
    assert "unknown field 'nope'" in capsys.readouterr().err
    assert probe.main(["--head", "seld", "--config", "tiny", "--workdir", str(tmp_path / "w"),
                       "--data", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_classify_and_seld_cli(tiny_root, tmp_path):
    assert _run("classify", tiny_root, tmp_path / "c", "--steps", "3") == 0
    result = json.loads((tmp_path / "c" / "probe.json").read_text())
    assert [r["step"] for r in result["train"]] == [3, 3, 3]  # one head per probe seed
    assert 0.0 <= result["metrics"]["mAP"] <= 1.0 and result["metrics"]["clips"] == 2
    lo, hi = result["ci95"]["mAP"]
    assert lo <= result["metrics"]["mAP"] <= hi or lo == hi

    assert _run("seld", tiny_root, tmp_path / "s", "--steps", "3", "--format", "stereo",
                "--write-csv", "--set", "head.distance=true") == 0
    result = json.loads((tmp_path / "s" / "probe.json").read_text())
    assert result["encoders"]["format"] == "stereo"
    assert {"ER", "F", "LE", "LR", "SELD"} <= set(result["metrics"]["dcase2023"])
    assert {"DE", "RDE"} <= set(result["metrics"]["dcase2024"])
    adpit = result["metrics"]["adpit"]  # an all-silent output scores 1/3 per active event
    assert adpit["loss"] >= 0 and 0 < adpit["silent_loss"] < 1 / 3
    assert adpit["skill"] == pytest.approx(1 - adpit["loss"] / adpit["silent_loss"])
    csvs = sorted((tmp_path / "s" / "predictions" / "test").glob("*.csv"))
    assert len(csvs) == 2
    for path in csvs:  # valid DCASE files (possibly empty after 3 steps)
        read_dcase_csv(path, n_classes=14)


@pytest.mark.slow
def test_doa_cli_cached_and_finetuned_train_on_the_same_label_subset(tiny_root, tmp_path):
    runs = {}
    for name, extra in (("cached", ()), ("finetuned", ("--finetune",))):
        assert _run("doa", tiny_root, tmp_path / name, "--steps", "2", "--set", "eval.seeds=2",
                    "--set", "label_fraction=0.25", *extra) == 0
        runs[name] = json.loads((tmp_path / name / "probe.json").read_text())
    assert "features" in runs["cached"] and "features" not in runs["finetuned"]
    for result in runs.values():
        assert [(r["seed"], r["labelled_clips"]) for r in result["train"]] == [(0, 2), (1, 2)]
        m, ci = result["metrics"], result["ci95"]
        assert 0 <= m["median_deg"] <= 180 and 0 <= m["within_20deg"] <= 1
        assert ci["mean_deg"][0] <= ci["mean_deg"][1]
        assert len(result["per_seed"]) == 2


@pytest.mark.slow
def test_localise_cli_writes_maps(tiny_root, tmp_path):
    assert _run("localise", tiny_root, tmp_path / "l", "--format", "mono") == 0
    result = json.loads((tmp_path / "l" / "probe.json").read_text())
    m = result["metrics"]
    assert m["clips"] >= 1 and 0 <= m["hit"] <= 1 and 0 <= m["peak_error_deg"] <= 180
    pngs = sorted((tmp_path / "l" / "maps").glob("*.png"))
    assert len(m["maps"]) == 2 and len(pngs) == 2  # the two maps asked for, as pictures
    for png in pngs:
        with Image.open(png) as im:
            assert im.width > im.height > 0 and np.asarray(im).std() > 0  # not a blank image
