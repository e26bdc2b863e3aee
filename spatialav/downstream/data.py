"""Datasets for downstream heads: checking one has what a head needs, its classes, label subsets.

The class list of a dataset comes from its ``metadata.json``: the ``classes`` list that the
converters write (e.g. STARSS23's 13 classes, spatialav.data.convert) wins; the built-in
synthetic set has the source bank's 14 classes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from spatialav.data import storage


def require_groups(dataset_dir, groups, head: str):
    """The dataset's spec, after checking it holds ``groups``; ValueError naming what is missing."""
    spec = storage.read_spec(dataset_dir)
    missing = sorted(set(groups) - set(spec.groups))
    if missing:
        raise ValueError(
            f"dataset {dataset_dir} has no {missing} (it has {list(spec.groups)}); the {head} "
            f"head trains and scores on {sorted(groups)}: use a dataset with DCASE labels "
            "(the synthetic set, or a converted STARSS23)")
    return spec


def class_names(dataset_dir) -> tuple[str, ...]:
    """The dataset's class list (index = class id in its labels)."""
    dataset_dir = Path(dataset_dir)
    meta = json.loads((dataset_dir / "metadata.json").read_text())
    if meta.get("classes"):
        return tuple(meta["classes"])
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    name = info.get("name", "")
    if name == "spatialav_synthetic":
        from spatialav.synth.source_bank import CLASSES

        return CLASSES
    raise ValueError(f"{dataset_dir}/metadata.json has no 'classes' list and {name!r} is not "
                     "the synthetic set; a labelled dataset must list its classes there "
                     "(the converters in spatialav.data.convert do)")


def label_subset(n_clips: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the training clips whose labels a head may use: the first
    ``ceil(fraction x n_clips)`` (at least one) of a permutation drawn with ``seed``, so for one
    seed the subsets are nested (1 % in 10 % in 100 %)."""
    order = np.random.default_rng(seed).permutation(n_clips)
    return np.sort(order[: max(1, math.ceil(fraction * n_clips - 1e-9))])


class Subset:
    """The records ``index`` of a random-access source (picklable, for grain's workers)."""

    def __init__(self, source, index):
        self.source, self.index = source, np.asarray(index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        return self.source[int(self.index[i])]
