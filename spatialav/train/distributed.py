"""Joining JAX's multi-controller runtime: explicit flags, SLURM, or a TPU pod slice.

Call ``initialize`` before anything touches a device. After it, ``jax.devices()`` lists the
devices of every process, the trainer's mesh spans them all, grain shards records by
``jax.process_index()``, and orbax writes one checkpoint from all processes.
"""

from __future__ import annotations

import os

import jax


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, cpu_collectives: str = "gloo") -> bool:
    """Start ``jax.distributed`` if this is a multi-process job; returns whether it did.

    Explicit ``coordinator`` (host:port), ``num_processes`` and ``process_id`` win; else
    SLURM (``srun``, more than one task) and TPU pod slices are detected by JAX itself.
    On CPU, collectives across processes go through ``cpu_collectives`` (gloo).
    """
    explicit = coordinator is not None or num_processes is not None or process_id is not None
    if explicit and None in (coordinator, num_processes, process_id):
        raise ValueError("multi-process runs need --coordinator, --num-processes and "
                         f"--process-id together; got {coordinator=}, {num_processes=}, "
                         f"{process_id=}")
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ
    if not (explicit or slurm or tpu_pod):
        return False
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if explicit:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    else:
        jax.distributed.initialize()
    return True
