"""Bootstrap intervals against known cases: the mean of normal samples (analytic interval and
coverage), a metric that does not depend on the clips (zero width), seed averaging, and
resamples where a metric is undefined."""

import numpy as np
import pytest

from spatialav.metrics.bootstrap import bootstrap, percentile_interval, resamples


def _mean_stat(x):
    return lambda idx: {"mean": float(np.mean(x[idx]))}


def test_mean_of_normal_samples_matches_the_analytic_interval():
    x = np.random.default_rng(0).normal(3.0, 2.0, 400)
    out = bootstrap([_mean_stat(x)], len(x), n_boot=4000, seed=1)
    half = 1.959964 * x.std() / np.sqrt(len(x))  # the bootstrap's plug-in standard error
    lo, hi = out["ci"]["mean"]
    assert out["mean"]["mean"] == pytest.approx(x.mean())
    assert lo == pytest.approx(x.mean() - half, abs=0.08 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.08 * half)


def test_95_percent_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    hits = 0
    for trial in range(200):
        x = rng.normal(0.0, 1.0, 100)
        lo, hi = bootstrap([_mean_stat(x)], len(x), n_boot=300, seed=trial)["ci"]["mean"]
        hits += lo <= 0.0 <= hi
    assert 0.89 <= hits / 200 <= 0.99  # binomial sd ~1.5 % around 0.95 (minus small-n bias)


def test_a_metric_that_ignores_the_clips_has_a_zero_width_interval():
    out = bootstrap([lambda idx: {"a": {"b": 0.25}}], 50, n_boot=100)
    assert out["mean"] == {"a": {"b": 0.25}} and out["ci"] == {"a": {"b": [0.25, 0.25]}}


def test_seeds_are_averaged_on_common_resamples():
    x = np.random.default_rng(3).normal(size=200)
    one = bootstrap([_mean_stat(x)], 200, n_boot=500, seed=4)
    two = bootstrap([_mean_stat(x), _mean_stat(x + 2.0)], 200, n_boot=500, seed=4)
    assert two["mean"]["mean"] == pytest.approx(x.mean() + 1.0)
    np.testing.assert_allclose(two["ci"]["mean"], np.add(one["ci"]["mean"], 1.0))
    assert [s["mean"] for s in two["per_seed"]] == pytest.approx([x.mean(), x.mean() + 2])


def test_undefined_resamples_are_left_out_and_clips_are_drawn_with_replacement():
    idx = resamples(5, 1000, seed=0)
    assert idx.shape == (1000, 5) and idx.min() == 0 and idx.max() == 4
    assert any(len(set(r)) < 5 for r in idx)
    assert percentile_interval([np.nan, 1.0, 1.0]) == (1.0, 1.0)
    assert np.isnan(percentile_interval([np.nan])[0])
    with pytest.raises(ValueError, match="at least one clip"):
        resamples(0, 10)
