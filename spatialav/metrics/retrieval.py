"""Cross-modal retrieval accuracy of embeddings held on the host (numpy)."""

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
