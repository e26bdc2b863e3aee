"""STFT, log-mel, intensity vectors and the stacked encoder input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from spatialav import ambisonics as amb
from spatialav import features as F
from spatialav import geometry as g

DEG = np.pi / 180
CFG = F.DEFAULT


def test_stft_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(9600).astype(np.float32)
    ours = np.asarray(F.stft(x))
    win = scipy.signal.get_window("hann", CFG.win_length)  # periodic Hann
    sft = scipy.signal.ShortTimeFFT(win, CFG.hop_length, CFG.sample_rate, mfft=CFG.n_fft)
    # Both centre frame t's window on sample t * hop; they differ only in where the FFT
    # frame starts, a linear phase, so magnitudes must agree.
    ref = sft.stft(x, p0=0, p1=ours.shape[0]).T  # [frames, freqs]
    assert ours.shape == (CFG.num_frames(9600), CFG.n_fft // 2 + 1) == ref.shape
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), atol=1e-3)


def test_istft_reconstructs_batched_signals():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 3, 12345)).astype(np.float32)
    y = F.istft(F.stft(x), x.shape[-1])
    np.testing.assert_allclose(y, x, atol=2e-5)


def test_mel_filterbank_places_a_tone_in_its_band():
    fb = F.mel_filterbank(CFG)
    assert fb.shape == (CFG.n_fft // 2 + 1, CFG.n_mels)
    assert np.all(fb >= 0) and np.all(fb.sum(axis=0) > 0)  # no empty band
    peaks = np.argmax(fb, axis=0)
    assert np.all(np.diff(peaks) >= 0)  # centres increase
    t = np.arange(CFG.sample_rate) / CFG.sample_rate
    for f0 in (300.0, 1500.0, 6000.0):
        mel = np.asarray(F.log_mel(F.stft(np.sin(2 * np.pi * f0 * t).astype(np.float32))))
        band = int(np.argmax(mel.mean(axis=0)))
        freqs = np.linspace(0, CFG.sample_rate / 2, CFG.n_fft // 2 + 1)
        centre = freqs[peaks[band]]
        assert abs(centre - f0) < 0.15 * f0 + 50


def test_log_mel_is_power_in_db():
    x = np.random.default_rng(2).standard_normal(4800).astype(np.float32)
    diff = F.log_mel(F.stft(2 * x)) - F.log_mel(F.stft(x))
    np.testing.assert_allclose(diff, 20 * np.log10(2), atol=1e-3)  # amplitude x2 = +6.02 dB


@pytest.mark.parametrize("az_deg,el_deg", [(0, 0), (75, 30), (-140, -50), (180, 10)])
def test_intensity_doa_of_plane_wave_in_noise(az_deg, el_deg):
    rng = np.random.default_rng(az_deg + 1000)
    n = 2 * CFG.sample_rate
    s = rng.standard_normal(n).astype(np.float32)
    foa = amb.encode(s, az_deg * DEG, el_deg * DEG)
    noise = rng.standard_normal((n, 4)).astype(np.float32)
    noise *= np.sqrt(np.mean(foa[:, 0] ** 2) / np.mean(noise[:, 0] ** 2))  # 0 dB SNR on W
    az, el = F.intensity_doa(foa + noise)
    assert g.angular_distance(az, el, az_deg * DEG, el_deg * DEG) < 2 * DEG


def test_intensity_vectors_point_at_the_source_per_band():
    s = np.random.default_rng(3).standard_normal(9600).astype(np.float32)
    az, el = 60 * DEG, -20 * DEG
    spec = jnp.moveaxis(F.stft(amb.encode(s, az, el).T), 0, -1)  # [T, F, 4]
    iv = np.asarray(F.intensity_vectors(spec))  # [T, M, 3] as (Y, Z, X)
    u = g.direction_to_vector(az, el)
    # For a single plane wave each band's normalised vector is parallel to u (Y, Z, X order).
    direction = iv.sum(axis=(0, 1))
    np.testing.assert_allclose(direction / np.linalg.norm(direction), [u[1], u[2], u[0]], atol=1e-4)


@pytest.mark.parametrize("fmt,channels", [("foa", 7), ("stereo", 2), ("mono", 1)])
def test_encoder_input_shapes_under_jit(fmt, channels):
    foa = np.random.default_rng(4).standard_normal((3, 24000, 4)).astype(np.float32) * 0.1
    audio = amb.to_format(foa, fmt)
    out = jax.jit(lambda a: F.encoder_input(a, fmt))(jnp.asarray(audio))
    assert out.shape == (3, CFG.num_frames(24000), CFG.n_mels, channels) == (3, 51, 64, channels)
    assert F.num_channels(fmt) == channels
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("fmt", ["foa", "stereo", "mono"])
def test_encoder_input_mixed_equals_the_features_of_the_mixed_audio(fmt):
    from spatialav.data import transforms as tf

    rng = np.random.default_rng(8)
    b, k = 2, 3
    # Two sources and a little diffuse noise, so the views differ in every channel.
    foa = np.stack([sum(amb.encode(rng.standard_normal(9600).astype(np.float32) * 0.1,
                                   rng.uniform(-np.pi, np.pi), rng.uniform(-1, 1))
                        for _ in range(2)) for _ in range(b)])
    foa += 0.01 * rng.standard_normal((b, 9600, 4)).astype(np.float32)
    R = np.stack([tf.sample_rotation(rng, "so3") for _ in range(b)])
    dirs = np.stack([tf.sample_viewpoints(rng, k, 30 * DEG, (-1.0, 1.0)) for _ in range(b)])
    mix = tf.view_mix(R, dirs, fmt, "cardioid")
    want = F.encoder_input(tf.apply_mix(foa, mix), fmt)
    got = jax.jit(lambda a, m: F.encoder_input_mixed(a, m, fmt))(foa, mix)
    assert got.shape == want.shape == (b, k, 21, 64, F.num_channels(fmt))
    np.testing.assert_allclose(got[..., : amb.FORMATS[fmt]], want[..., : amb.FORMATS[fmt]],
                               atol=2e-3)  # dB
    np.testing.assert_allclose(got[..., amb.FORMATS[fmt]:], want[..., amb.FORMATS[fmt]:],
                               atol=1e-4)  # intensity vectors


def test_frames_are_centred_on_hops():
    x = np.zeros(24000, np.float32)
    x[480 * 20] = 1.0  # an impulse at frame 20's centre
    energy = np.asarray(F.log_mel(F.stft(x))).mean(axis=-1)
    assert int(np.argmax(energy)) == 20


def test_encoder_input_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"foa audio must be \[\.\.\., time, 4\].*\(100, 2\)"):
        F.encoder_input(np.zeros((100, 2)), "foa")
    with pytest.raises(ValueError, match="unknown input format"):
        F.encoder_input(np.zeros((100, 2)), "surround")
