"""Which dataset directory a run reads: the one resolver of pretraining and the probes."""

from __future__ import annotations

import os
from pathlib import Path

from spatialav.data import storage, synthetic


def resolve_dataset(data_cfg) -> Path:
    """The dataset directory of a ``configs.DataConfig``.

    ``source='synthetic'``: the built-in set of ``synthetic_preset`` under ``root``, built
    if missing. With several processes only process 0 builds it and the others wait at a
    barrier, so no two processes write the same shards. Otherwise ``source`` is a dataset
    directory (or a folder holding exactly one); ValueError when it is empty.
    """
    if data_cfg.source == "synthetic":
        import jax
        from jax.experimental import multihost_utils

        root = os.path.expanduser(data_cfg.root)
        if jax.process_index() == 0:  # one builder; the others wait for it
            synthetic.ensure_synthetic(root, data_cfg.synthetic_preset,
                                       workers=data_cfg.build_workers)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("synthetic dataset ready")
        return synthetic.ensure_synthetic(root, data_cfg.synthetic_preset)
    if not data_cfg.source:
        raise ValueError("no dataset given (data.source is empty): pass --data PATH, or "
                         "--data synthetic for the built-in set")
    return storage.find_dataset_dir(data_cfg.source)
