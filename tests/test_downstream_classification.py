"""Classification probe metrics: mAP of perfect and constant scorers, AP against scikit-learn,
accuracies on a hand-made case, and multi-hot targets from DCASE rows."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from spatialav.downstream import classification as C


def test_map_of_perfect_and_constant_scorers():
    rng = np.random.default_rng(0)
    y = rng.random((40, 5)) < 0.3
    y[0] = True  # every class has a positive
    assert C.mean_average_precision(y + 0.1 * rng.random(y.shape), y) == pytest.approx(1.0)
    # a constant scorer ranks everything equal: AP is the class's prevalence
    const = C.mean_average_precision(np.zeros(y.shape), y)
    assert const == pytest.approx(np.mean(y.mean(0)))


def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.random(30) < 0.4
        y[0] = True
        s = np.round(rng.random(30), 1)  # many ties
        assert C.average_precision(s, y) == pytest.approx(average_precision_score(y, s))
    assert np.isnan(C.average_precision([0.1, 0.2], [False, False]))


def test_accuracies_by_hand():
    scores = np.array([[2.0, -1.0, 0.5], [-1.0, -2.0, 3.0], [0.1, 0.2, -0.3]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    m = C.classification_metrics(scores, targets)
    assert m["top1_accuracy"] == pytest.approx(0.5)  # clip 3 has no class: skipped
    assert m["label_accuracy"] == pytest.approx(4 / 9)


def test_multi_hot_from_rows():
    labels = np.zeros((2, 4, 6), np.float32)
    labels[0, :, 1] = [3, 1, 3, 0]
    labels[1, :, 1] = [2, 2, 0, 0]
    mask = np.array([[True, True, True, False], [True, False, False, False]])
    hot = np.asarray(C.multi_hot(labels, mask, 5))
    np.testing.assert_array_equal(hot, [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0]])
