"""Deciding to stop for preemption at the same step on every process.

A scheduler preempts a job by sending SIGTERM, often to only some of its processes. Each
process must still checkpoint the *same* step and leave together: a process that stops
alone leaves the others blocked in their next collective. So the SIGTERM handler only sets
a local flag, and after every step all processes take the maximum of their flags with a
one-scalar-per-device all-reduce. Its result is read one step later, when the device has
long finished it, so the host never waits on it and the train step stays untouched; every
process reads the same value at the same step and they all stop there. A single process
has no one to agree with and stops after the step during which it was signalled.

Why not JAX's preemption sync manager (``multihost_utils.reached_preemption_sync_point``,
which orbax's ``CheckpointManager.reached_preemption`` wraps)? It agrees on "the fastest
process's last reported step + 1", and orbax itself reports to it from its save-finalize
thread with the step of the checkpoint being finalised, which can pull the agreed step
behind the training loop so that no process ever reaches it; a notice that comes before a
resumed run's first report agrees on step 1, also never reached. ``distributed.initialize``
switches it off so that one mechanism owns SIGTERM.
"""

from __future__ import annotations

import signal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from spatialav.train import mesh as mesh_lib

# The exit status of both CLIs (pretrain, probe) when SIGTERM stopped a run at a checkpoint:
# not a failure (rerun the same command to resume) and not done (0), so schedulers and the
# study scripts can tell the three apart.
PREEMPTED_EXIT_CODE = 3


class Preempted(RuntimeError):
    """A run was stopped (SIGTERM) and checkpointed before its last step. A probe raises it
    instead of scoring the half-trained head, so no ``probe.json`` passes for a finished one."""

    def __init__(self, step: int, workdir: str):
        super().__init__(f"stopped at step {step} and checkpointed in {workdir}; rerun the "
                         "same command to resume")
        self.step = step


class StopOnSigterm:
    """Between ``install()`` and ``uninstall()``, SIGTERM asks every process to stop.

    Call ``poll()`` once per step on every process, after dispatching the step; it returns
    True, on all of them at the same step, one step after any process was signalled (alone,
    right after the signal).
    """

    def __init__(self, mesh: Mesh):
        self._alone = jax.process_count() == 1
        self._sharding = mesh_lib.data_sharding(mesh)
        self._global_shape = (mesh.devices.size,)
        self._local_shape = (len(mesh.local_devices),)
        self._any = jax.jit(jnp.max, out_shardings=mesh_lib.replicated(mesh))
        self._requested = False
        self._pending = None
        self._previous_handler = None

    def install(self) -> StopOnSigterm:
        self._previous_handler = signal.signal(signal.SIGTERM, self._request)
        return self

    def uninstall(self):
        signal.signal(signal.SIGTERM, self._previous_handler)

    def _request(self, signum, frame):
        self._requested = True

    def poll(self) -> bool:
        """Start this step's vote and return the previous step's: did any process ask?"""
        if self._alone:
            return self._requested
        local = np.full(self._local_shape, self._requested)
        flags = jax.make_array_from_process_local_data(self._sharding, local,
                                                       self._global_shape)
        previous, self._pending = self._pending, self._any(flags)
        return previous is not None and bool(previous)
