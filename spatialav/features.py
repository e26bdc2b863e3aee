"""Audio features in JAX: STFT / iSTFT, log-mel, FOA intensity vectors, encoder inputs.

All functions are pure, batched over leading dims and run inside ``jit`` on any device.
Audio is ``[..., time, channels]`` (channels last); spectra are ``[..., frames, freqs(,
channels)]``. Defaults (docs/DESIGN.md §2, Audio): 24 kHz, Hann window 960, hop 480 (20 ms),
nfft 1024, 64 mel bands. Frame t is centred on sample t * hop, so 5 frames make one 100 ms
label frame.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np

from spatialav.ambisonics import FORMATS


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 24000
    win_length: int = 960
    hop_length: int = 480
    n_fft: int = 1024
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None  # None: Nyquist

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop_length


DEFAULT = FeatureConfig()


@functools.lru_cache(maxsize=16)
def _window(cfg: FeatureConfig) -> np.ndarray:
    """Periodic Hann of ``win_length``, zero-padded to ``n_fft`` around its centre."""
    n = np.arange(cfg.win_length)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.win_length)
    left = (cfg.n_fft - cfg.win_length) // 2
    return np.pad(win, (left, cfg.n_fft - cfg.win_length - left)).astype(np.float32)


def stft(x, cfg: FeatureConfig = DEFAULT):
    """Complex STFT of ``x [..., time]`` -> ``[..., frames, n_fft // 2 + 1]``."""
    x = jnp.asarray(x, jnp.float32)
    n_frames = cfg.num_frames(x.shape[-1])
    pad = cfg.n_fft // 2
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)])
    idx = np.arange(n_frames)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None, :]
    frames = x[..., idx] * _window(cfg)
    return jnp.fft.rfft(frames, n=cfg.n_fft, axis=-1)


def istft(spec, length: int, cfg: FeatureConfig = DEFAULT):
    """Inverse of ``stft`` (weighted overlap-add): ``[..., frames, freqs]`` -> ``[..., length]``."""
    win = _window(cfg)
    frames = jnp.fft.irfft(spec, n=cfg.n_fft, axis=-1) * win
    n_frames = spec.shape[-2]
    total = (n_frames - 1) * cfg.hop_length + cfg.n_fft
    idx = (np.arange(n_frames)[:, None] * cfg.hop_length + np.arange(cfg.n_fft)[None, :]).ravel()
    out = jnp.zeros((*frames.shape[:-2], total), frames.dtype)
    out = out.at[..., idx].add(frames.reshape(*frames.shape[:-2], -1))
    norm = np.zeros(total, np.float32)
    np.add.at(norm, idx, np.tile(win**2, n_frames))
    out = out / np.where(norm > 1e-8, norm, 1.0)
    pad = cfg.n_fft // 2
    return out[..., pad : pad + length]


def _hz_to_mel(f):
    """Slaney mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m):
    m = np.asarray(m, np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


@functools.lru_cache(maxsize=16)
def mel_filterbank(cfg: FeatureConfig = DEFAULT) -> np.ndarray:
    """Slaney-normalised triangular mel filters ``[n_fft // 2 + 1, n_mels]`` (as librosa)."""
    fmax = cfg.fmax if cfg.fmax is not None else cfg.sample_rate / 2
    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(fmax), cfg.n_mels + 2))
    ramps = edges[:, None] - freqs[None, :]
    fdiff = np.diff(edges)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.T.astype(np.float32)


def log_mel(spec, cfg: FeatureConfig = DEFAULT, floor: float = 1e-10):
    """Log-mel power in dB: complex spectrum ``[..., frames, freqs]`` -> ``[..., frames, mels]``."""
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    return _db(power @ mel_filterbank(cfg), floor)


def _db(power, floor: float):
    return 10.0 * jnp.log10(jnp.maximum(power, floor))


def _active_intensity(spec):
    """Re{W* (Y, Z, X)} and the DCASE energy of a channel-first ambiX spectrum
    ``[..., 4, frames, freqs]`` -> ``([..., 3, frames, freqs], [..., frames, freqs])``.

    In real arithmetic: XLA's CPU complex multiply and ``abs`` (a square root, then squared)
    made this the slowest part of the encoder input."""
    re, im = jnp.real(spec), jnp.imag(spec)
    intensity = re[..., :1, :, :] * re[..., 1:, :, :] + im[..., :1, :, :] * im[..., 1:, :, :]
    power = re**2 + im**2
    energy = power[..., 0, :, :] + jnp.sum(power[..., 1:, :, :], axis=-3) / 3.0
    return intensity, energy


def _intensity_vectors_cf(spec, cfg: FeatureConfig, eps: float = 1e-8):
    """``intensity_vectors`` of a channel-first spectrum: ``[..., 4, T, F]`` -> ``[..., 3,
    T, M]``."""
    intensity, energy = _active_intensity(spec)
    return (intensity / (energy[..., None, :, :] + eps)) @ mel_filterbank(cfg)


def intensity_vectors(spec, cfg: FeatureConfig = DEFAULT, eps: float = 1e-8):
    """Mel-projected normalised intensity vectors, DCASE SELD baseline definition.

    ``spec`` is the ambiX STFT ``[..., frames, freqs, 4]`` (W, Y, Z, X); returns
    ``[..., frames, mels, 3]`` in the (Y, Z, X) order of the ACN channels they come from.
    """
    iv = _intensity_vectors_cf(jnp.moveaxis(spec, -1, -3), cfg, eps)
    return jnp.moveaxis(iv, -3, -1)


def intensity_doa(foa, cfg: FeatureConfig = DEFAULT):
    """Broadband direction of arrival (az, el) of ``foa [..., time, 4]`` from its intensity.

    Energy-weighted sum of the active intensity over all time-frequency bins; a
    plane wave from u gives Re{W* (Y, Z, X)} = |s|^2 (uy, uz, ux).
    """
    spec = stft(jnp.moveaxis(jnp.asarray(foa, jnp.float32), -1, -2), cfg)  # [..., 4, T, F]
    intensity, _ = _active_intensity(spec)
    y, z, x = jnp.moveaxis(jnp.sum(intensity, axis=(-2, -1)), -1, 0)
    return jnp.arctan2(y, x), jnp.arctan2(z, jnp.hypot(x, y))


def _check_audio(audio, fmt: str):
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}; expected one of {sorted(FORMATS)}")
    audio = jnp.asarray(audio, jnp.float32)
    if audio.ndim < 2 or audio.shape[-1] != FORMATS[fmt]:
        raise ValueError(
            f"{fmt} audio must be [..., time, {FORMATS[fmt]}], got shape {audio.shape}"
        )
    return audio


def _stacked_features(spec, fmt: str, cfg: FeatureConfig):
    """Encoder features of a channel-first spectrum ``[..., C, frames, freqs]`` ->
    ``[..., frames, mels, F]``."""
    mels = log_mel(spec, cfg)  # [..., C, T, M]
    if fmt == "foa":
        mels = jnp.concatenate([mels, _intensity_vectors_cf(spec, cfg)], axis=-3)
    return jnp.moveaxis(mels, -3, -1)


def encoder_input(audio, fmt: str, cfg: FeatureConfig = DEFAULT):
    """Stacked encoder features: audio ``[..., time, C]`` -> ``[..., frames, mels, F]``.

    ``foa`` (C = 4): 4 log-mel + 3 intensity-vector channels (F = 7); ``stereo`` / ``mono``
    (C = 2 / 1): one log-mel channel per audio channel.
    """
    audio = _check_audio(audio, fmt)
    return _stacked_features(stft(jnp.moveaxis(audio, -1, -2), cfg), fmt, cfg)


_PAIRS = [(i, j) for i in range(4) for j in range(i, 4)]
_PAIR_INDEX = np.array([[_PAIRS.index((min(i, j), max(i, j))) for j in range(4)]
                        for i in range(4)])


def encoder_input_mixed(audio, mix, fmt: str, cfg: FeatureConfig = DEFAULT, floor=1e-10):
    """``encoder_input`` of K channel mixes of each ambiX clip, without forming them.

    ``audio [B, time, 4]``, ``mix [B, K, 4, C]`` (``transforms.view_mix``: input channel i to
    output channel c) -> ``[B, K, frames, mels, F]``, equal (to float rounding) to
    ``encoder_input(einsum('bti,bkic->bktc', audio, mix), fmt)``.

    The power of a mixed channel is a quadratic form of the clip's cross-spectra, and the
    mel projection is linear, so one STFT and the 10 mel-projected cross-spectra Re{S_i S_j*}
    per clip give every view's log-mels with work on mel bands only. The intensity vector
    of a rotated field is the rotated intensity vector (W and the DCASE energy are
    rotation-invariant), so for ``foa`` ``mix`` must be a rotation of the field, as the
    viewpoint mixes are. K views cost about one STFT instead of K.
    """
    audio = _check_audio(audio, "foa")
    if mix.shape[-2] != 4 or mix.shape[-1] != FORMATS[fmt]:
        raise ValueError(f"{fmt} mix must be [B, K, 4, {FORMATS[fmt]}], got {mix.shape}")
    mix = jnp.asarray(mix, jnp.float32)
    spec = stft(jnp.moveaxis(audio, -1, -2), cfg)  # [B, 4, T, F]
    re, im = jnp.real(spec), jnp.imag(spec)
    cross = jnp.stack([re[:, i] * re[:, j] + im[:, i] * im[:, j] for i, j in _PAIRS], axis=1)
    cross = (cross @ mel_filterbank(cfg))[:, _PAIR_INDEX]  # [B, 4, 4, T, M], symmetric
    power = jnp.einsum("bkic,bijtm,bkjc->bkctm", mix, cross, mix)
    feats = _db(power, floor)  # [B, K, C, T, M]
    if fmt == "foa":
        iv = _intensity_vectors_cf(spec, cfg)  # [B, 3, T, M], (Y, Z, X) as channels 1-3
        iv = jnp.einsum("bkjc,bjtm->bkctm", mix[..., 1:, 1:], iv)
        feats = jnp.concatenate([feats, iv], axis=2)
    return jnp.moveaxis(feats, 2, -1)


def num_channels(fmt: str) -> int:
    """Feature channels of ``encoder_input`` for an input format."""
    return {"foa": 7, "stereo": 2, "mono": 1}[fmt]
