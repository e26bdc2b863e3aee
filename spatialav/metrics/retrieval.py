"""Retrieval accuracy and the binary linear probe, on embeddings held on the host (numpy)."""

from __future__ import annotations

import numpy as np


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def retrieval_accuracy(a, v) -> float:
    """Top-1 cross-modal retrieval ``[N, D]`` x ``[N, D]``: pair i should retrieve pair i.

    Cosine similarity; the mean of audio->video and video->audio accuracy (chance is 1/N).
    """
    sim = _unit(a) @ _unit(v).T
    idx = np.arange(len(sim))
    return float(0.5 * (np.mean(sim.argmax(1) == idx) + np.mean(sim.argmax(0) == idx)))


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


def binary_probe(x, y, groups, l2: float = 1e-2) -> float:
    """Held-out accuracy of a logistic probe: fit on the first half of the groups, test on
    the rest (groups, e.g. clip ids, keep all samples of a clip on one side)."""
    groups = np.asarray(groups)
    ids = np.unique(groups)
    train = np.isin(groups, ids[: len(ids) // 2])
    if train.all() or not train.any():
        raise ValueError(f"binary_probe needs at least 2 groups, got {len(ids)}")
    w, b = fit_logistic(np.asarray(x)[train], np.asarray(y)[train], l2)
    pred = (np.asarray(x)[~train] @ w + b) > 0
    return float(np.mean(pred == np.asarray(y)[~train].astype(bool)))
