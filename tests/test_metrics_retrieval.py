"""Retrieval accuracy and the binary logistic probe: against scikit-learn and loops."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from spatialav.metrics.logistic_probe import binary_probe, choose_l2, fit_logistic
from spatialav.metrics.retrieval import retrieval_accuracy


def test_retrieval_accuracy_matches_a_loop():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((30, 8))
    v = a + 1.5 * rng.standard_normal((30, 8))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    hits_a = [int(np.argmax([unit(a)[i] @ unit(v)[j] for j in range(30)]) == i) for i in range(30)]
    hits_v = [int(np.argmax([unit(v)[i] @ unit(a)[j] for j in range(30)]) == i) for i in range(30)]
    ref = 0.5 * (np.mean(hits_a) + np.mean(hits_v))
    assert 0 < ref < 1
    assert retrieval_accuracy(a, v) == pytest.approx(ref)


@pytest.mark.parametrize("l2", [1e-1, 1e-3])
def test_fit_logistic_matches_scikit_learn(l2):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 5))
    y = (x @ [1.0, -2.0, 0.5, 0, 0] + 0.3 + rng.standard_normal(200) > 0).astype(float)
    w, b = fit_logistic(x, y, l2)
    # ours: sum of log-losses + l2 N |w|^2 / 2 (bias free); sklearn: C sum + |w|^2 / 2.
    ref = LogisticRegression(C=1.0 / (l2 * len(x)), tol=1e-12, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(w, ref.coef_[0], atol=1e-5)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-5)


def test_binary_probe_scores_unseen_groups_only():
    # Each group has its own label and a feature that names the group: a probe that saw the
    # test groups would score 1; one that did not can only guess.
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(40), 6)
    y = rng.random(40)[groups] > 0.5
    x = np.eye(40)[groups] + 0.01 * rng.standard_normal((240, 40))
    assert binary_probe(x, y, groups, l2=1e-4) < 0.75
    # The same task with a feature that carries the label is solved.
    x_good = np.concatenate([x, y[:, None] - 0.5], axis=1)
    assert binary_probe(x_good, y, groups, l2=1e-4) == 1.0


def test_cross_validated_penalty_fits_the_feature_scale():
    # Products of unit embeddings are ~1/D in size: a fixed large penalty shrinks the probe
    # to the class means; cross-validation picks a small one and scores better.
    rng = np.random.default_rng(3)
    n, d = 400, 64
    groups = np.repeat(np.arange(n // 4), 4)
    y = rng.random(n) > 0.5
    w_true = rng.standard_normal(d)
    x = (rng.standard_normal((n, d)) + 0.3 * np.outer(2 * y - 1, w_true)) * 1e-2
    x[:, :8] += 0.05 * rng.standard_normal((n, 8))  # large nuisance dimensions
    assert choose_l2(x, y, groups) <= 1e-3
    assert binary_probe(x, y, groups) > binary_probe(x, y, groups, l2=1e-1) + 0.05


def test_binary_probe_needs_two_groups():
    with pytest.raises(ValueError, match="at least 2 groups"):
        binary_probe(np.ones((4, 2)), np.array([0, 1, 0, 1]), np.zeros(4))
