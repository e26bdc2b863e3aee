"""Joining JAX's multi-controller runtime: explicit flags, SLURM, or a TPU pod slice.

Call ``initialize`` before anything touches a device. After it, ``jax.devices()`` lists the
devices of every process, the trainer's mesh spans them all, grain shards records by
``jax.process_index()``, and orbax writes one checkpoint from all processes.
"""

from __future__ import annotations

import os

import jax


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, peer_timeout_s: int = 60,
               cpu_collectives: str = "gloo") -> bool:
    """Start ``jax.distributed`` if this is a multi-process job; returns whether it did.

    Explicit ``coordinator`` (host:port), ``num_processes`` and ``process_id`` win; else
    SLURM (``srun``, more than one task) and Cloud TPU VMs are detected, and JAX finds the
    coordinator, process count and index itself.
    On CPU, collectives across processes go through ``cpu_collectives`` (gloo).

    ``peer_timeout_s`` bounds how long the job outlives one of its processes: the
    coordination service declares a process dead after that long without a heartbeat and
    then terminates every other process ("the JAX distributed service detected fatal
    errors"), even one blocked in a collective that would otherwise wait forever (NCCL);
    a process that leaves waits at most that long for the others at exit. JAX's defaults
    (100 s and 300 s) let a dead job hold its machines for minutes.
    """
    if peer_timeout_s < 1:
        raise ValueError(f"the peer timeout must be at least 1 s; got {peer_timeout_s}")
    explicit = coordinator is not None or num_processes is not None or process_id is not None
    if explicit and None in (coordinator, num_processes, process_id):
        raise ValueError("multi-process runs need --coordinator, --num-processes and "
                         f"--process-id together; got {coordinator=}, {num_processes=}, "
                         f"{process_id=}")
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if not (explicit or slurm or on_cloud_tpu_vm()):
        return False
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    # The trainer agrees on preemption itself (train/preemption.py); JAX's sync manager
    # would also claim SIGTERM.
    jax.config.update("jax_enable_preemption_service", False)
    timeouts = {"heartbeat_timeout_seconds": peer_timeout_s,
                "shutdown_timeout_seconds": peer_timeout_s}
    if explicit:
        jax.distributed.initialize(coordinator, num_processes, process_id, **timeouts)
    else:
        jax.distributed.initialize(**timeouts)
    return True


def on_cloud_tpu_vm() -> bool:
    """Whether JAX's own cluster detection sees a Cloud TPU VM (GCE or GKE, one slice or
    several). It is private API: JAX has no public "am I on a pod" call, and a GCE TPU VM
    sets no environment variable that would tell (the worker list is in the metadata
    server). A single-host TPU VM counts too; it becomes a one-process job."""
    from jax._src.clusters import cloud_tpu_cluster

    return any(cluster.is_env_present() for cluster in
               (cloud_tpu_cluster.GceTpuCluster, cloud_tpu_cluster.GkeTpuCluster))
