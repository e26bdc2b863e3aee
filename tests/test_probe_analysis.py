"""experiments/avsa_probe_analysis.py: the per-category split of the binary AVSA probe."""

import avsa_probe_analysis as pa
import numpy as np


def _embeddings(n=40, k=3, d=16, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, k, d))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v, rng


def test_categories_partition_the_pairs_and_blind_pairs_are_where_the_model_fails():
    v, rng = _embeddings()
    active = rng.random(v.shape[:2]) > 0.4
    # Audio equals the video on active views and is noise on silent ones: only pairs with an
    # active side can be told apart.
    noise = rng.standard_normal(v.shape)
    a = np.where(active[..., None], v, noise / np.linalg.norm(noise, axis=-1, keepdims=True))
    res = pa.analyse(a, v, active, l2s=(1e-2,))
    assert sum(r["count"] for r in res["categories"]) == res["pairs"] == 2 * 40 * 3
    assert res["decidable_pairs"] + res["blind_pairs"] == res["pairs"]
    assert res["decidable_accuracy"] > 0.9 > res["blind_accuracy"]
    assert res["probe"] <= res["ceiling"] + 1e-9
    blind = next(r for r in res["categories"] if r["pair"] == "misaligned"
                 and not r["crop_active"] and not r["audio_front_active"])
    assert blind["count"] == np.sum(~active & ~np.roll(active, -1, axis=1))


def test_perfect_embeddings_score_one_everywhere():
    v, rng = _embeddings(seed=1)
    res = pa.analyse(v, v, rng.random(v.shape[:2]) > 0.5, l2s=(1e-1, 1e-4))
    assert res["probe"] == 1.0 and res["pairwise"] == 1.0
    assert all(r["accuracy"] in (None, 1.0) for r in res["categories"])
