"""Multi-process JAX on CPU (gloo collectives on localhost): 2 processes x 2 devices train
with the same loss trajectory as 1 process x 4 devices fed the same global batches."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from spatialav.data import synthetic


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(workdir):
    rows = [json.loads(line) for line in (workdir / "logs" / "metrics.jsonl").open()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    root = tmp_path / "data"
    synthetic.build_synthetic(root, "tiny", workers=1, progress=False)
    common = [sys.executable, "-m", "spatialav.pretrain", "--task", "avc", "--config", "tiny",
              "--steps", "4", "--set", "train.batch_size=4", "--set", "train.log_every=1",
              "--set", f"data.root={root}", "--set", "eval.batch_size=4"]

    def env(devices):
        return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
                "JAX_PLATFORMS": "cpu"}

    single = subprocess.run([*common, "--workdir", str(tmp_path / "one")], env=env(4),
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    port = _free_port()
    procs = [
        subprocess.Popen([*common, "--workdir", str(tmp_path / "two"),
                          "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                          "--process-id", str(i)], env=env(2), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]

    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    np.testing.assert_allclose([two[s] for s in one], [one[s] for s in one], rtol=1e-4)
    # Both processes finished the same checkpointed step.
    assert (tmp_path / "two" / "checkpoints" / "4").exists()
