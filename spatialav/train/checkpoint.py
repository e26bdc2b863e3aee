"""Checkpoints: one orbax CheckpointManager holding train state, data-iterator state and metadata.

Saving the grain iterator beside the parameters is what makes a resumed run bit-identical
to an uninterrupted one: it continues from the same batch. Saves are asynchronous, keep
the newest ``keep``, and are committed atomically, so a run killed mid-save restores the
last complete checkpoint.
"""

from __future__ import annotations

import os

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
    def __init__(self, directory: str, *, keep: int = 3, every: int = 100, async_save=True):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                save_interval_steps=every,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,  # leftovers of a save that a kill interrupted
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        return self.manager.should_save(step)

    def save(self, step: int, state, *, data_iter=None, meta: dict | None = None,
             force: bool = False) -> bool:
        items = {"state": ocp.args.StandardSave(state)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        if meta is not None:
            items["meta"] = ocp.args.JsonSave(meta)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state, *, data_iter=None):
        """Restore the state (shaped and sharded like ``abstract_state``) and the iterator."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def read_state(self, step: int | None = None):
        """The saved train state as plain nested dicts of arrays, without a model to fit it.

        Every array lands whole on this process's first device, whatever mesh wrote it (a
        checkpoint of a multi-host job is read on one machine this way).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        saved = ocp.StandardCheckpointHandler().metadata(
            epath.Path(self.directory) / str(step) / "state").tree
        here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                              saved)
        return self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        )["state"]

    def restore_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return self.manager.restore(
            step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )["meta"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
