"""The device mesh and global batches: data parallel over every device of every process.

Each process feeds its own slice of the global batch (``jax.make_array_from_process_local_data``);
jitted functions see one global array, so contrastive losses written on the batch axis get
their negatives from the whole global batch, across devices and hosts, for free.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D data-parallel mesh over ``devices`` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def per_process_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """This process's share of the global batch; it must divide evenly over all devices."""
    n_dev, n_proc = mesh.devices.size, jax.process_count()
    if global_batch_size % n_dev:
        raise ValueError(
            f"global batch size {global_batch_size} must be a multiple of the "
            f"{n_dev} devices in the mesh"
        )
    return global_batch_size // n_proc


def global_batch(local_batch, mesh: Mesh):
    """Assemble per-process numpy batches into global arrays sharded over the batch axis."""
    sharding = data_sharding(mesh)
    n_proc = jax.process_count()

    def to_global(x):
        x = np.asarray(x)
        shape = (x.shape[0] * n_proc, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return jax.tree.map(to_global, local_batch)
