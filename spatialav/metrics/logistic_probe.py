"""The binary linear probe of embeddings held on the host (numpy): L2-regularised logistic
regression by Newton's method, its penalty chosen by grouped cross-validation, fit on one half
of the groups and scored on the other (the binary AVSA probe of pretraining validation)."""

from __future__ import annotations

import numpy as np


def fit_logistic(x, y, l2: float = 1e-2, iters: int = 25):
    """L2-regularised logistic regression by Newton's method; returns (w, b).

    ``x [N, D]`` features, ``y [N]`` in {0, 1}. Newton converges in a few steps at probe
    sizes (D up to a few hundred) and needs no learning rate.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xb = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    w = np.zeros(xb.shape[1])
    reg = l2 * len(x) * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0  # no penalty on the bias
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-xb @ w))
        grad = xb.T @ (p - y) + reg @ w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + reg + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w[:-1], w[-1]


L2_GRID = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def _split_by_group(groups, n_parts: int):
    """Part index of each sample: the sorted unique groups cut into ``n_parts`` runs."""
    ids = np.unique(groups)
    part_of = np.minimum(np.arange(len(ids)) * n_parts // len(ids), n_parts - 1)
    return part_of[np.searchsorted(ids, groups)]


def _accuracy(x, y, w, b) -> float:  # of the fitted probe (w, b) on (x, y)
    return float(np.mean(((x @ w + b) > 0) == y.astype(bool)))


def choose_l2(x, y, groups, grid=L2_GRID, folds: int = 5) -> float:
    """The L2 penalty of ``grid`` with the best grouped ``folds``-fold cross-validated
    accuracy (ties: the larger penalty; fewer folds if there are fewer groups)."""
    x, y = np.asarray(x), np.asarray(y)
    folds = min(folds, len(np.unique(groups)))
    if folds < 2:
        return grid[0]
    part = _split_by_group(np.asarray(groups), folds)
    scores = []
    for l2 in grid:
        acc = [_accuracy(x[part == f], y[part == f], *fit_logistic(x[part != f],
                                                                   y[part != f], l2))
               for f in range(folds)]
        scores.append(np.mean(acc))
    return grid[int(np.argmax(scores))]  # argmax keeps the first (largest) of equal scores


def probe_predictions(x, y, groups, l2: float | None = None):
    """Held-out predictions ``[N]`` bool of the two-fold grouped logistic probe, and the
    first fold's mask: each half of the groups (e.g. clip ids, so all samples of a clip stay
    on one side) is predicted by a probe fit on the other half.

    ``l2=None`` picks each fit's penalty from ``L2_GRID`` by grouped 5-fold cross-validation
    within its training half (the half it predicts is never seen before), as a linear probe
    should: the best penalty depends on the embeddings' scale and dimension.
    """
    groups = np.asarray(groups)
    x, y = np.asarray(x), np.asarray(y)
    ids = np.unique(groups)
    if len(ids) < 2:
        raise ValueError(f"binary_probe needs samples of at least 2 groups (e.g. validation "
                         f"clips) to hold half of them out, got {len(ids)}")
    first = np.isin(groups, ids[: len(ids) // 2])
    pred = np.zeros(len(y), bool)
    for train in (first, ~first):
        penalty = choose_l2(x[train], y[train], groups[train]) if l2 is None else l2
        w, b = fit_logistic(x[train], y[train], penalty)
        pred[~train] = (x[~train] @ w + b) > 0
    return pred, first


def binary_probe(x, y, groups, l2: float | None = None) -> float:
    """Held-out accuracy of the two-fold logistic probe (``probe_predictions``): the mean of
    the accuracies on the two halves."""
    pred, first = probe_predictions(x, y, groups, l2)
    correct = pred == np.asarray(y).astype(bool)
    return float(np.mean([correct[first].mean(), correct[~first].mean()]))
