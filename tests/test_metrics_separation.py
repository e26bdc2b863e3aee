"""Separation metrics: SI-SDR on constructed signals, SDR against fast-bss-eval."""

import fast_bss_eval
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import lfilter

from spatialav.metrics.separation import permutation_invariant, sdr, si_sdr, si_sdr_improvement


def _zero_mean(x):
    return x - x.mean(-1, keepdims=True)


def _orthogonal(x, ref):
    """``x`` minus its projection on ``ref`` (both zero-mean), per batch element."""
    return x - (np.sum(x * ref, -1, keepdims=True) / np.sum(ref * ref, -1, keepdims=True)) * ref


def _at_snr(ref, noise, snr_db, gain=1.0):
    """gain * ref plus noise scaled so that |gain ref|^2 / |noise|^2 is exactly snr_db."""
    target = gain * ref
    scale = np.sqrt(np.sum(target**2, -1, keepdims=True)
                    / (np.sum(noise**2, -1, keepdims=True) * 10 ** (snr_db / 10)))
    return target + scale * noise


@pytest.fixture
def signals():
    rng = np.random.default_rng(0)
    ref = _zero_mean(rng.standard_normal((2, 3, 4000)))
    noise = _orthogonal(_zero_mean(rng.standard_normal(ref.shape)), ref)
    return ref, noise


def test_si_sdr_exact_on_orthogonal_noise(signals):
    ref, noise = signals
    snr = np.array([[-5.0, 0.0, 7.5], [12.0, 20.0, 3.25]])
    est = _at_snr(ref, noise, snr[..., None], gain=2.5)
    np.testing.assert_allclose(si_sdr(est, ref), snr, atol=1e-9)


def test_si_sdr_is_scale_and_offset_invariant(signals):
    ref, noise = signals
    est = _at_snr(ref, noise, 7.5)
    base = si_sdr(est, ref)
    np.testing.assert_allclose(si_sdr(-4 * est, ref), base, atol=1e-9)
    np.testing.assert_allclose(si_sdr(est, 0.1 * ref), base, atol=1e-9)
    np.testing.assert_allclose(si_sdr(est + 3.0, ref), base, atol=1e-9)  # means removed
    assert not np.allclose(si_sdr(est + 3.0, ref, zero_mean=False), base, atol=1e-3)


def test_si_sdr_improvement(signals):
    ref, noise = signals
    rng = np.random.default_rng(1)
    other = _orthogonal(_zero_mean(rng.standard_normal(ref.shape)), ref)
    mix = _at_snr(ref, other, 0.0)
    est = _at_snr(ref, noise, 7.5)
    np.testing.assert_allclose(si_sdr_improvement(est, ref, mix), 7.5, atol=1e-9)


def test_si_sdr_in_jax_matches_numpy(signals):
    ref, noise = signals
    est = _at_snr(ref, noise, 7.5)
    expected = si_sdr(est, ref)
    got = jax.jit(si_sdr)(jnp.asarray(est, jnp.float32), jnp.asarray(ref, jnp.float32))
    assert isinstance(got, jax.Array)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-3)
    assert np.isfinite(si_sdr(ref, ref)).all()  # perfect estimate: large, finite


def _filtered_noisy(rng, shape, noise_level):
    ref = rng.standard_normal(shape)
    ref[..., -32:] = 0  # so that the filtered reference ends inside the window
    h = np.r_[np.zeros(5), rng.standard_normal(19) * np.exp(-np.arange(19) / 6)]  # delayed
    return lfilter(h, 1, ref, axis=-1) + noise_level * rng.standard_normal(shape), ref


def test_sdr_matches_fast_bss_eval():
    rng = np.random.default_rng(2)
    est, ref = _filtered_noisy(rng, (2, 3, 6000), noise_level=np.array([0.1, 0.5, 2.0])[:, None])
    expected = fast_bss_eval.sdr(ref[..., None, :], est[..., None, :])[..., 0]
    np.testing.assert_allclose(sdr(est, ref), expected, atol=1e-6)
    expected = fast_bss_eval.sdr(ref[..., None, :], est[..., None, :], filter_length=32)[..., 0]
    np.testing.assert_allclose(sdr(est, ref, filter_length=32), expected, atol=1e-6)


def test_sdr_forgives_short_filters_but_si_sdr_does_not():
    rng = np.random.default_rng(3)
    est, ref = _filtered_noisy(rng, (4000,), noise_level=1e-3)
    # the delayed 24-tap filter is not distortion for the 512-tap SDR, only the small noise
    assert sdr(est, ref) > 40
    assert si_sdr(est, ref) < -20


def test_permutation_invariant_sdr_matches_fast_bss_eval():
    rng = np.random.default_rng(4)
    est, ref = _filtered_noisy(rng, (2, 3, 4000), noise_level=0.5)
    shuffled = est[:, [2, 0, 1]]
    scores, perm = permutation_invariant(sdr, shuffled, ref)
    expected, expected_perm = fast_bss_eval.sdr(ref, shuffled, return_perm=True)
    np.testing.assert_array_equal(perm, [[1, 2, 0]] * 2)
    np.testing.assert_array_equal(perm, expected_perm)
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    np.testing.assert_allclose(scores, sdr(est, ref), atol=1e-9)

    est = ref + 0.5 * rng.standard_normal(ref.shape)  # no delay, so SI-SDR tells sources apart
    si_scores, si_perm = permutation_invariant(si_sdr, est[:, [2, 0, 1]], ref)
    np.testing.assert_array_equal(si_perm, perm)
    np.testing.assert_allclose(si_scores, si_sdr(est, ref), atol=1e-9)
