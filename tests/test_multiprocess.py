"""Multi-process JAX on CPU (gloo collectives on localhost), 2 processes x 2 devices:

* the same loss trajectory as 1 process x 4 devices fed the same global batches;
* SIGTERM to one process: both checkpoint the same step and exit cleanly, and the resumed
  run ends bit-identical to an uninterrupted one;
* SIGKILL of one process: the other exits with an error within the peer timeout.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from toy_training import checkpoint_params

from spatialav import pretrain
from spatialav.train import distributed
from spatialav.train.preemption import PREEMPTED_EXIT_CODE

STEPS = 8


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices):
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "JAX_PLATFORMS": "cpu"}


def _command(root, workdir, *extra):
    return [sys.executable, "-m", "spatialav.pretrain", "--task", "avc", "--config", "tiny",
            "--steps", str(STEPS), "--set", "train.batch_size=4", "--set", "train.log_every=1",
            "--set", "train.checkpoint_every=4", "--set", f"data.root={root}",
            "--set", "eval.batch_size=4", "--set", "eval.every=1000",
            "--workdir", str(workdir), *extra]


_LAUNCHED = []


def _launch(root, workdir, *extra):
    """Two processes of one job on localhost; returns their Popen handles."""
    port = _free_port()
    procs = [subprocess.Popen(
        _command(root, workdir, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                 "--process-id", str(i), *extra),
        env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    _LAUNCHED.extend(procs)
    return procs


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    """A failed test must not leave its job training on the shared machine."""
    yield
    while _LAUNCHED:
        p = _LAUNCHED.pop()
        if p.poll() is None:
            p.kill()
            p.wait()


def _finish(procs, code: int = 0):
    outs = [p.communicate(timeout=900) for p in procs]
    for i, (p, (_, err)) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == code, f"process {i}: {err[-3000:]}"
    return [out for out, _ in outs]


def _wait_for(path, procs, timeout=900):
    deadline = time.time() + timeout
    while not path.exists():
        for p in procs:
            assert p.poll() is None, p.stderr.read()[-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def _losses(workdir):
    rows = [json.loads(line) for line in (workdir / "logs" / "metrics.jsonl").open()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_one_process_without_a_cluster_stays_alone(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert distributed.initialize() is False
    assert jax.process_count() == 1


def test_bad_multi_process_flags_fail_before_joining(tmp_path, capsys):
    assert pretrain.main(["--task", "avc", "--config", "tiny", "--workdir", str(tmp_path),
                          "--coordinator", "127.0.0.1:1", "--num-processes", "2"]) == 1
    assert "--process-id together" in capsys.readouterr().err
    with pytest.raises(ValueError, match="peer timeout must be at least 1 s; got 0"):
        distributed.initialize("127.0.0.1:1", 2, 0, peer_timeout_s=0)


@pytest.fixture(scope="module")
def two_process_run(tiny_root, tmp_path_factory):
    """An uninterrupted 2-process run: the reference for the tests below."""
    workdir = tmp_path_factory.mktemp("two")
    _finish(_launch(tiny_root, workdir))
    return workdir


@pytest.mark.slow
def test_two_processes_match_one(tiny_root, two_process_run, tmp_path):
    single = subprocess.run(_command(tiny_root, tmp_path), env=_env(4), capture_output=True,
                            text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    one, two = _losses(tmp_path), _losses(two_process_run)
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([two[s] for s in one], [one[s] for s in one], rtol=1e-4)
    # Both processes finished the same checkpointed step.
    assert (two_process_run / "checkpoints" / str(STEPS)).exists()


@pytest.mark.slow
def test_sigterm_to_one_process_checkpoints_all_then_resumes_exactly(
        tiny_root, two_process_run, tmp_path):
    procs = _launch(tiny_root, tmp_path)
    _wait_for(tmp_path / "checkpoints" / "1", procs)  # training runs on both
    procs[1].send_signal(signal.SIGTERM)  # the other process gets no signal
    out0, _ = _finish(procs, PREEMPTED_EXIT_CODE)  # every process: preempted, not failed

    summary = json.loads((tmp_path / "summary.json").read_text())
    stopped = summary["step"]
    assert summary["preempted"] and 1 < stopped < STEPS
    assert f"preempted at step {stopped}" in out0
    # One checkpoint, written by both processes (each saved its data-iterator position).
    ckpts = tmp_path / "checkpoints"
    assert max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == stopped
    assert (ckpts / str(stopped) / "commit_success.txt").exists()
    assert sorted(p.name for p in (ckpts / str(stopped) / "data").glob("process_*")) == \
        ["process_0-of-2.json", "process_1-of-2.json"]

    _finish(_launch(tiny_root, tmp_path))  # resume
    step_ref, params_ref = checkpoint_params(two_process_run)
    step_res, params_res = checkpoint_params(tmp_path)
    assert step_ref == step_res == STEPS
    for x, y in zip(params_ref, params_res, strict=True):
        np.testing.assert_array_equal(x, y)
    ref, res = _losses(two_process_run), _losses(tmp_path)
    assert [res[s] for s in range(stopped + 1, STEPS + 1)] == \
        [ref[s] for s in range(stopped + 1, STEPS + 1)]


@pytest.mark.slow
def test_a_killed_process_takes_the_job_down_within_the_peer_timeout(tiny_root, tmp_path):
    timeout = 10
    procs = _launch(tiny_root, tmp_path, "--steps", "1000", "--peer-timeout", str(timeout))
    _wait_for(tmp_path / "checkpoints" / "1", procs)
    procs[1].send_signal(signal.SIGKILL)  # the coordinator survives, blocked on a peer
    t0 = time.time()
    _, err = procs[0].communicate(timeout=timeout + 120)
    elapsed = time.time() - t0
    assert procs[0].returncode != 0
    assert elapsed < timeout + 30, f"survivor took {elapsed:.0f} s to exit"
    # JAX names the dead peer by a missed heartbeat or, when its connection drops first, as
    # crashed; which one wins is a race.
    assert "another task died" in err, err[-3000:]
    assert "Task 1 heartbeat timeout" in err or "tasks have crashed" in err, err[-3000:]
