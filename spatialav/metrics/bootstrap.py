"""Percentile bootstrap confidence intervals over test clips, for metrics built from per-clip
pieces, averaged over probe seeds.

A metric is given as ``stat(idx) -> {name: value}`` (nested dicts allowed): its value on the
clips ``idx`` (a 1-D index array, repeats allowed). The clips are resampled with replacement
``n_boot`` times and the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2``
percentiles of the metric over the resamples (Efron & Tibshirani 1993, ch. 13). Clips, not
frames or events, are the unit because a clip's pieces are correlated (one scene, one room),
and a metric computed from summed counts (DCASE SELD F / ER / LE) is resampled by summing the
resampled clips' counts, so it stays the metric the DCASE protocol defines.

With several probe seeds, every seed's metric is computed on the same resample and the seeds
are averaged: the interval is that of the seed-mean figure over the sampling of test clips.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Stat = Callable[[np.ndarray], dict]


def resamples(n_clips: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``[n_boot, n_clips]`` clip indices drawn with replacement."""
    if n_clips < 1:
        raise ValueError("a bootstrap needs at least one clip")
    return np.random.default_rng(seed).integers(0, n_clips, (n_boot, n_clips))


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``values`` (NaNs, i.e. resamples where the
    metric is undefined, are left out; NaN when all are)."""
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap(stats: Sequence[Stat], n_clips: int, *, n_boot: int = 1000, level: float = 0.95,
              seed: int = 0) -> dict:
    """Seed-averaged metrics with their bootstrap interval.

    ``stats``: one ``stat`` per probe seed, all over the same ``n_clips`` clips. Returns
    ``{"mean": metrics, "ci": metrics of [lo, hi], "per_seed": [metrics, ...]}``, each
    ``metrics`` nested as the stats return them; ``mean`` is the mean over seeds of each
    seed's value on all clips.
    """
    full = np.arange(n_clips)
    per_seed = [_flat(s(full)) for s in stats]
    names = list(per_seed[0])
    draws = {k: np.empty(n_boot) for k in names}
    for b, idx in enumerate(resamples(n_clips, n_boot, seed)):
        values = [_flat(s(idx)) for s in stats]
        for k in names:
            draws[k][b] = _mean([v[k] for v in values])
    return {"mean": _nest({k: _mean([v[k] for v in per_seed]) for k in names}),
            "ci": _nest({k: list(percentile_interval(draws[k], level)) for k in names}),
            "per_seed": [_nest(v) for v in per_seed]}


def _mean(values) -> float:
    v = np.asarray(values, np.float64)
    return float(np.mean(v)) if not np.isnan(v).any() else float("nan")


def _flat(d: dict, prefix: tuple = ()) -> dict[tuple, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = float(v)
    return out


def _nest(flat: dict[tuple, object]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out
