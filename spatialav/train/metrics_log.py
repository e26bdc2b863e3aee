"""Metrics to JSONL and TensorBoard (process 0 only), and the progress bar."""

from __future__ import annotations

import json
import os

import jax
from tqdm.auto import tqdm


class MetricsLogger:
    def __init__(self, workdir: str):
        self.directory = os.path.abspath(os.path.join(workdir, "logs"))
        self.enabled = jax.process_index() == 0
        self._jsonl = self._tb = None
        if self.enabled:
            os.makedirs(self.directory, exist_ok=True)
            self._jsonl = open(os.path.join(self.directory, "metrics.jsonl"), "a")
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(self.directory)

    def write(self, step: int, metrics: dict[str, float], prefix: str):
        if not self.enabled:
            return
        record = {"step": step, **{f"{prefix}/{k}": float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for k, v in record.items():
            if k != "step":
                self._tb.add_scalar(k, v, step)

    def close(self):
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def progress_bar(total: int, initial: int, enabled: bool = True):
    return tqdm(total=total, initial=initial, disable=not enabled or jax.process_index() != 0,
                unit="step", dynamic_ncols=True)
