"""Source-separation metrics: SI-SDR (numpy or JAX) and BSS-Eval v4 SDR (numpy / scipy).

Signals have time on the last axis and any leading batch axes (sources included), the layout of
fast-bss-eval and torchmetrics; transpose ``[..., time, channels]`` audio first. The estimate
comes first and the reference second in every function here (fast-bss-eval puts ``ref`` first).
"""

from __future__ import annotations

import numpy as np
from scipy import fft
from scipy.linalg import solve_toeplitz
from scipy.optimize import linear_sum_assignment

from spatialav.geometry import array_module


def _float(xp, x):
    x = xp.asarray(x)
    return x if xp.issubdtype(x.dtype, xp.floating) else x.astype(xp.float32)


def si_sdr(est, ref, zero_mean: bool = True):
    """Scale-invariant SDR in dB (Le Roux et al., ICASSP 2019), batched over leading axes.

    The reference is scaled to best fit the estimate; SI-SDR = 10 log10(|a r|^2 / |e - a r|^2).
    Works on numpy and JAX arrays (jit-able). A perfect estimate gives a large finite value
    rather than inf (the energies carry a ``tiny`` guard), so it is safe inside a loss.
    """
    xp = array_module(est, ref)
    est, ref = _float(xp, est), _float(xp, ref)
    if zero_mean:
        est = est - xp.mean(est, axis=-1, keepdims=True)
        ref = ref - xp.mean(ref, axis=-1, keepdims=True)
    tiny = xp.finfo(xp.result_type(est, ref)).tiny
    scale = xp.sum(est * ref, axis=-1, keepdims=True) / (
        xp.sum(ref * ref, axis=-1, keepdims=True) + tiny)
    target = scale * ref
    noise = est - target
    # a difference of logs: the ratio itself would overflow for a perfect estimate
    return 10 * (xp.log10(xp.sum(target**2, axis=-1) + tiny)
                 - xp.log10(xp.sum(noise**2, axis=-1) + tiny))


def si_sdr_improvement(est, ref, mix, zero_mean: bool = True):
    """SI-SDRi: SI-SDR of the estimate minus SI-SDR of the unprocessed mixture."""
    return si_sdr(est, ref, zero_mean) - si_sdr(mix, ref, zero_mean)


def sdr(est, ref, filter_length: int = 512, zero_mean: bool = False):
    """BSS-Eval v4 SDR in dB (as museval / fast-bss-eval), batched over leading axes.

    The target is the projection of the estimate onto ``filter_length`` delayed copies of the
    reference (a causal distortion filter, 512 taps by default); the rest is distortion.
    The filter solves the Toeplitz normal equations of the reference autocorrelation, and
    SDR = 10 log10(|target|^2 / (|est|^2 - |target|^2)). Interference from other sources is
    not separated out here: only the SDR is computed, as ``fast_bss_eval.sdr``.
    """
    est, ref = np.broadcast_arrays(np.asarray(est, np.float64), np.asarray(ref, np.float64))
    n = est.shape[-1]
    if not 1 <= filter_length <= n:
        raise ValueError(f"filter_length must be in [1, {n}] (the signal length)")
    if zero_mean:
        est = est - est.mean(axis=-1, keepdims=True)
        ref = ref - ref.mean(axis=-1, keepdims=True)
    # linear (not circular) correlations: zero-pad to at least 2n - 1
    n_fft = fft.next_fast_len(2 * n - 1, real=True)
    r, e = fft.rfft(ref, n_fft), fft.rfft(est, n_fft)
    acf = fft.irfft(np.abs(r) ** 2, n_fft)[..., :filter_length]
    xcorr = fft.irfft(np.conj(r) * e, n_fft)[..., :filter_length]  # est vs ref delayed by l
    target = np.empty(est.shape[:-1])
    for idx in np.ndindex(target.shape):
        target[idx] = xcorr[idx] @ solve_toeplitz(acf[idx], xcorr[idx])
    coh = np.clip(target / np.sum(est**2, axis=-1), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(coh / (1 - coh))


def permutation_invariant(metric, est, ref, **kwargs):
    """Best assignment of estimated to reference sources, ``[..., n_src, time]`` each.

    ``metric(est, ref, **kwargs)`` (e.g. ``si_sdr`` or ``sdr``) is evaluated for every pair and
    the assignment maximising its sum is found with the Hungarian algorithm. Returns
    ``(scores, perm)``, both ``[..., n_src]`` in reference order: ``scores[..., i]`` is the
    metric of estimate ``perm[..., i]`` against reference ``i``.
    """
    est, ref = np.asarray(est), np.asarray(ref)
    if est.shape[-2:] != ref.shape[-2:]:
        raise ValueError(f"est {est.shape} and ref {ref.shape} need the same [n_src, time]")
    pair = np.asarray(metric(est[..., None, :, :], ref[..., :, None, :], **kwargs))
    scores = np.empty(pair.shape[:-1], pair.dtype)
    perm = np.empty(pair.shape[:-1], np.int64)
    for idx in np.ndindex(pair.shape[:-2]):
        # clipped so that a perfect pair (inf dB) stays a feasible assignment cost
        rows, cols = linear_sum_assignment(np.clip(pair[idx], -1e6, 1e6), maximize=True)
        scores[idx] = pair[idx][rows, cols]
        perm[idx] = cols
    return scores, perm
