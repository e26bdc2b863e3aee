"""The trainer's machinery: exact resume after SIGKILL, NaN handling, preemption."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from toy_training import make_trainer

from spatialav.train import NonFiniteLossError

SCRIPT = os.path.join(os.path.dirname(__file__), "toy_training.py")


def _params(trainer):
    return jax.tree.leaves(jax.device_get(trainer.state["params"]))


def _run_script(workdir, steps, *extra):
    return subprocess.run([sys.executable, SCRIPT, str(workdir), str(steps), *extra],
                          capture_output=True, text=True, timeout=300)


def test_sigkill_and_resume_is_bit_identical(tmp_path):
    straight = make_trainer(tmp_path / "straight", 30)
    straight.run()

    killed = _run_script(tmp_path / "killed", 30, "--kill-at", "17")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = make_trainer(tmp_path / "killed", 30)
    start = resumed.restore_latest()
    assert start is not None and 0 < start < 30
    resumed.run()
    for a, b in zip(_params(straight), _params(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_continues_the_data_stream(tmp_path):
    first = make_trainer(tmp_path, 10)
    first.run()
    again = make_trainer(tmp_path, 10)
    assert again.restore_latest() == 10
    assert again.step == 10
    batch_after = next(again.data)
    reference = make_trainer(tmp_path / "ref", 10).data
    for _ in range(10):
        next(reference)
    np.testing.assert_array_equal(batch_after["x"], next(reference)["x"])


def test_nan_stops_with_clear_message_and_keeps_good_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, 30, nan_at=12)
    with pytest.raises(NonFiniteLossError, match=r"non-finite at step 13.*last good checkpoint is "
                       r"step 10"):
        trainer.run()
    again = make_trainer(tmp_path, 30)
    assert again.restore_latest() == 10
    assert all(np.all(np.isfinite(p)) for p in _params(again))
    # The NaN step did not touch the parameters either.
    assert all(np.all(np.isfinite(p)) for p in _params(trainer))


def test_sigterm_saves_and_stops(tmp_path):
    trainer = make_trainer(tmp_path, 1000, every=1000)

    class Term:
        every = 1

        def __call__(self, model, step):
            if step == 7:
                os.kill(os.getpid(), signal.SIGTERM)
            return {}

    trainer.hooks.append(Term())
    summary = trainer.run()
    assert summary["preempted"] and summary["step"] == 7
    assert make_trainer(tmp_path, 1000).restore_latest() == 7


def test_a_workdir_is_claimed_by_one_run_identity(tmp_path):
    from spatialav.train.workdir import claim_workdir

    ident = {"task": "avsa", "model": {"width": 8, "dims": (1, 2)}}
    claim_workdir(tmp_path, ident, {"train": {"steps": 5}}, "pretraining")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved == {"task": "avsa", "model": {"width": 8, "dims": [1, 2]},
                     "config": {"train": {"steps": 5}}}
    # The same identity resumes (tuples and lists alike), whatever else the config says.
    claim_workdir(tmp_path, ident, {"train": {"steps": 9}}, "pretraining")
    assert json.loads((tmp_path / "config.json").read_text())["config"]["train"]["steps"] == 9
    with pytest.raises(ValueError, match=r"holds another pretraining run \(its task differ: "
                                         r"'avsa' here, 'avc' now\); use another --workdir"):
        claim_workdir(tmp_path, {**ident, "task": "avc"}, {}, "pretraining")
    with pytest.raises(ValueError, match="its model differ"):
        claim_workdir(tmp_path, {**ident, "model": {"width": 16, "dims": (1, 2)}}, {}, "x")
    assert json.loads((tmp_path / "config.json").read_text())["task"] == "avsa"  # untouched
