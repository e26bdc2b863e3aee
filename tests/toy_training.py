"""A small regression task on a grain pipeline, to exercise the trainer's machinery.

Run as a script (``python tests/toy_training.py WORKDIR STEPS [--kill-at N]``) so a test
can kill it; importable for in-process tests.
"""

import os
import signal
import sys

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spatialav.train import Checkpointer, OptimConfig, TrainConfig, Trainer


def checkpoint_params(workdir):
    """(step, parameters as flat numpy arrays) of a workdir's newest checkpoint, no model needed."""
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    step = ckpt.latest_step()
    state = ckpt.read_state(step)
    ckpt.close()
    return step, [np.asarray(x) for x in jax.tree.leaves(state["params"])]


class Regressor(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(8, 32, rngs=rngs)
        self.l2 = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.gelu(self.l1(x)))[..., 0]


def dataset(seed=0, batch=8):
    rng = np.random.default_rng(123)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    y = np.sin(x @ rng.standard_normal(8)).astype(np.float32)
    records = [{"x": a, "y": b} for a, b in zip(x, y, strict=True)]
    ds = grain.MapDataset.source(records).shuffle(seed=seed).repeat().batch(batch)
    return ds.to_iter_dataset().__iter__()


class KillAt:
    """A hook that SIGKILLs its own process: a crash at a known step, mid-training."""

    every = 1

    def __init__(self, step):
        self.step = step

    def __call__(self, model, step):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
        return {}


def make_trainer(workdir, steps, nan_at=None, every=5, hooks=()):
    def loss_fn(model, batch, rng, step):
        err = jnp.mean((model(batch["x"]) - batch["y"]) ** 2)
        if nan_at is not None:
            err = jnp.where(step >= nan_at, jnp.nan, err)
        return err, {"mse": err}

    cfg = TrainConfig(steps=steps, batch_size=8, log_every=1, checkpoint_every=every,
                      progress=False)
    model = Regressor(nnx.Rngs(0))
    return Trainer(cfg, OptimConfig(learning_rate=3e-3, warmup_steps=2), model, loss_fn,
                   dataset(), workdir, hooks=hooks)


if __name__ == "__main__":
    workdir, steps = sys.argv[1], int(sys.argv[2])
    kill_at = int(sys.argv[sys.argv.index("--kill-at") + 1]) if "--kill-at" in sys.argv else None
    trainer = make_trainer(workdir, steps, hooks=[KillAt(kill_at)] if kill_at else ())
    trainer.restore_latest()
    print(trainer.run())
