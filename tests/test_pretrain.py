"""The pretraining CLI end to end on the tiny synthetic set: every task, exact resume after
SIGKILL, and clear errors before training for bad input."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from toy_training import checkpoint_params

from spatialav import pretrain, pretraining
from spatialav.data import storage

TINY = ["--config", "tiny"]


def _args(root, workdir, *extra):
    return [*TINY, "--workdir", str(workdir), "--set", f"data.root={root}", *extra]


# avsa with every optional term of its loss (the default preset's objective)
AVSA_TERMS = ["--set", "objective.variance_weight=1", "--set", "objective.pair_weight=1"]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["avc", "avsa", "avsa-objects"])
def test_each_task_trains_and_reports(task, tiny_root, tmp_path, capsys):
    extra = AVSA_TERMS if task == "avsa" else []
    assert pretrain.main(["--task", task, *_args(tiny_root, tmp_path, *extra)]) == 0
    out = capsys.readouterr().out
    assert "checkpoints:" in out and "validation:" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["step"] == 6 and np.isfinite(summary["final"]["loss"])
    assert {"avsa_probe", "avsa_pairwise", "avc_retrieval"} <= set(summary["eval"])
    lines = (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()
    assert any("eval/avsa_probe" in line for line in lines)
    if task == "avsa":
        assert {"avsa_loss", "variance", "pair_loss", "pair_acc_hard"} <= set(summary["final"])
    # Rerunning a finished run resumes at its end and trains no more.
    assert pretrain.main(["--task", task, *_args(tiny_root, tmp_path, *extra)]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["step"] == 6


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_is_bit_identical(tiny_root, tmp_path):
    steps = ["--steps", "24", "--set", "train.checkpoint_every=4", "--set", "eval.every=1000"]
    assert pretrain.main(["--task", "avsa", *_args(tiny_root, tmp_path / "a", *steps)]) == 0

    cmd = [sys.executable, "-m", "spatialav.pretrain", "--task", "avsa",
           *_args(tiny_root, tmp_path / "b", *steps)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpts = tmp_path / "b" / "checkpoints"
    deadline = time.time() + 600
    while not (ckpts / "8").exists():  # kill once a checkpoint or two exist, mid-run
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at, _ = checkpoint_params(tmp_path / "b")
    assert killed_at < 24

    assert pretrain.main(["--task", "avsa", *_args(tiny_root, tmp_path / "b", *steps)]) == 0
    step_a, params_a = checkpoint_params(tmp_path / "a")
    step_b, params_b = checkpoint_params(tmp_path / "b")
    assert step_a == step_b == 24
    for x, y in zip(params_a, params_b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_bad_set_key_fails_before_training(tmp_path, capsys):
    code = pretrain.main(["--task", "avsa", "--config", "tiny", "--workdir", str(tmp_path),
                          "--set", "train.stepz=3"])
    assert code == 2
    assert "unknown field 'stepz' in TrainConfig" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_bad_set_value_fails_before_training(tmp_path, capsys):
    code = pretrain.main(["--task", "avc", "--config", "tiny", "--workdir", str(tmp_path),
                          "--set", "data.pipeline.input_format=binaural"])
    assert code == 2
    assert "binaural" in capsys.readouterr().err


def test_missing_data_path_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code = pretrain.main(["--task", "avc", "--config", "tiny", "--workdir", str(tmp_path / "w"),
                          "--data", str(missing)])
    assert code == 1
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_dataset_without_what_the_task_needs(tmp_path, capsys):
    from spatialav.data import schema, storage

    spec = schema.DatasetSpec(24000, 10.0, (32, 64), ("core",))  # no boxes, no detections
    out = tmp_path / "plain" / "cfg" / "1.0.0"
    out.mkdir(parents=True)
    feats = storage.Serializer(schema.features(spec.groups))
    rng = np.random.default_rng(0)
    rec = feats(schema.make_example(
        "x/0", spec, audio=rng.uniform(-0.5, 0.5, (24000, 4)).astype(np.float32),
        frames=np.zeros((10, 32, 64, 3), np.uint8), sample_rate=24000, fps=10.0))
    storage.write_shard(out / storage.shard_filename("plain", "train", 0, 1), [rec])
    storage.write_info(out, name="plain", config="cfg", version="1.0.0", description="",
                       spec=spec, shard_lengths={"train": [1]})
    code = pretrain.main(["--task", "avsa-objects", "--config", "tiny", "--data", str(out),
                          "--workdir", str(tmp_path / "w")])
    assert code == 1
    err = capsys.readouterr().err
    assert "has no ['boxes']" in err and str(out) in err


@pytest.mark.slow
def test_a_converted_folder_trains_with_the_default_flags(tmp_path, capsys):
    """Convert as the README says, train on it as the README says: the default carve gives a
    validation split even to 5 recordings, and its one clip degrades the probe (NaN, one
    warning) instead of stopping the run at its first validation."""
    from test_cli_errors import tool
    from test_convert_folder import write_scene

    # 4 train clips: one batch of the tiny preset without repeating a clip.
    for i, az in enumerate((-120.0, -60.0, 0.0, 60.0, 120.0)):
        write_scene(tmp_path / "videos" / f"v{i}.mp4", az, 10.0)
    out = tool("convert_folder").main(["--root", str(tmp_path / "videos"), "--out",
                                       str(tmp_path / "data"), "--layout", "ambix",
                                       "--frame-size", "32", "64", "--workers", "1", "--quiet"])
    splits = storage.load_builder(out).info.splits
    assert {s: splits[s].num_examples for s in splits} == {"train": 4, "validation": 1}
    with pytest.warns(UserWarning, match="has 1 clip; the binary AVSA probe needs at least 2"):
        code = pretrain.main(["--task", "avsa", *TINY, "--data", out, "--steps", "4",
                              "--set", "eval.every=2", "--workdir", str(tmp_path / "w")])
    assert code == 0, capsys.readouterr().err[-2000:]
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert summary["step"] == 4 and np.isfinite(summary["final"]["loss"])
    ev = summary["eval"]
    assert np.isnan(ev["avsa_probe"]) and 0 <= ev["avsa_pairwise"] <= 1 and ev["avc_chance"] == 1
    evals = [line for line in (tmp_path / "w" / "logs" / "metrics.jsonl").read_text()
             .splitlines() if "eval/avsa_pairwise" in line]
    assert len(evals) == 2  # at step 2 and at the last step


def test_a_dataset_without_validation_clips_trains_without_the_hook(tmp_path, capsys):
    from test_cli_errors import write_dataset

    from spatialav.train import mesh as mesh_lib

    cfg = pretrain.build_config(pretrain.parse_args(["--task", "avsa", *TINY]))
    mesh = mesh_lib.make_mesh()
    one = write_dataset(tmp_path / "one" / "cfg" / "1.0.0", {"train": 1})
    assert pretraining.validation_hooks(cfg, one, mesh) == []
    err = capsys.readouterr().err
    assert f"the validation split of {one} is missing (it has ['train'])" in err
    empty = write_dataset(tmp_path / "empty" / "cfg" / "1.0.0", {"train": 1, "validation": 0})
    assert pretraining.validation_hooks(cfg, empty, mesh) == []
    assert f"the validation split of {empty} is empty" in capsys.readouterr().err
    two = write_dataset(tmp_path / "two" / "cfg" / "1.0.0", {"train": 1, "validation": 2})
    assert [type(h).__name__ for h in pretraining.validation_hooks(cfg, two, mesh)] == [
        "ValidationHook"]


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        pretrain.main(["--help"])
    text = capsys.readouterr().out
    for option in ("--task", "--config", "--data", "--format", "--workdir", "--steps", "--set"):
        assert option in text
