"""FOA room rendering: exact ambiX direct path, DOA of each source image, tails and noise."""

import numpy as np
import pyroomacoustics as pra
import pytest
from scipy.signal import butter, sosfilt

from spatialav import features
from spatialav import geometry as g
from spatialav.synth import SceneConfig, room, sample_scene
from spatialav.synth.scene import SPEED_OF_SOUND

FS = 24000


def _images(cfg, seed):
    spec = sample_scene(seed, cfg)
    rng = np.random.default_rng(seed)
    emitted = np.zeros((len(spec.sources), cfg.num_samples))
    emitted[:, 1000:25000] = rng.standard_normal((len(spec.sources), 24000))[
        :, : cfg.num_samples - 1000]
    images, direct = room.render_sources(spec, emitted, FS, cfg.num_samples, rng)
    return spec, images, direct, emitted


def _doa_errors(spec, images):
    az, el = features.intensity_doa(images)
    return np.degrees([
        float(g.angular_distance(float(az[i]), float(el[i]), s.azimuth, s.elevation))
        for i, s in enumerate(spec.sources)
    ])


def test_anechoic_doa_is_exact():
    cfg = SceneConfig(rt60=(0, 0), num_sources=(3, 3), wide_prob=0.5, duration=1.5)
    errors = np.concatenate([_doa_errors(*_images(cfg, seed)[:2]) for seed in range(4)])
    assert errors.max() < 3.0


def test_reverberant_doa_within_10_degrees():
    # Early reflections pull the broadband intensity off the direct path (pyroomacoustics'
    # own 4-microphone rendering shows the same): moderate rooms keep it within 10 deg.
    cfg = SceneConfig(rt60=(0.2, 0.4), distance=(0.7, 1.2), wall_margin=1.0, duration=1.5,
                      num_sources=(2, 3))
    errors = np.concatenate([_doa_errors(*_images(cfg, seed)[:2]) for seed in range(6)])
    assert errors.max() < 10.0
    assert np.median(errors) < 5.0


def test_direct_path_has_exact_sn3d_ratios():
    cfg = SceneConfig(rt60=(0, 0), num_sources=(1, 1), wide_prob=1.0, duration=1.0)
    for seed in range(3):
        spec, images, direct, _ = _images(cfg, seed)
        s, img = spec.sources[0], images[0]
        ux, uy, uz = g.direction_to_vector(s.azimuth, s.elevation)
        gains = img.T @ img[:, 0] / (img[:, 0] @ img[:, 0])
        np.testing.assert_allclose(gains, [1, uy, uz, ux], atol=1e-3)
        # The dry target is the W channel of the anechoic image: delayed by d / c, 1 / d.
        np.testing.assert_allclose(direct[0], img[:, 0], atol=1e-9)


def test_direct_path_delay_and_level():
    cfg = SceneConfig(rt60=(0, 0), num_sources=(1, 1), duration=1.0)
    spec = sample_scene(5, cfg)
    t = np.arange(cfg.num_samples) / FS
    x = lambda t: np.sin(2 * np.pi * 300 * t) + 0.5 * np.sin(2 * np.pi * 710 * t + 1)
    images, _ = room.render_sources(spec, x(t)[None], FS, cfg.num_samples, None)
    d = spec.sources[0].distance
    middle = slice(2000, 20000)  # away from the signal's abrupt start and end
    np.testing.assert_allclose(images[0][middle, 0], x(t - d / SPEED_OF_SOUND)[middle] / d,
                               atol=2e-3 / d)


def _pra_foa_rir(spec, i, order):
    """Reference: pyroomacoustics with an omni and three signed figure-eights."""
    pra.constants.set("rir_hpf_enable", False)
    s = spec.sources[i]
    listener = np.array(spec.listener)
    r = pra.ShoeBox(list(spec.room_size), fs=FS, materials=pra.Material(spec.absorption),
                    max_order=order, air_absorption=False)
    r.add_source(list(listener + s.distance * spec.room_vector(s.azimuth, s.elevation)))
    axes = g.rotation_matrix(np.float64(spec.listener_yaw))  # listener axes in the room
    dirs = [pra.directivities.Omnidirectional()]
    for col in (1, 2, 0):  # Y, Z, X dipoles: the listener's left, up and front axes
        v = axes[:, col]
        dirs.append(pra.directivities.FigureEight(orientation=pra.directivities.DirectionVector(
            azimuth=np.arctan2(v[1], v[0]), colatitude=np.arccos(np.clip(v[2], -1, 1)),
            degrees=False)))
    r.add_microphone_array(pra.MicrophoneArray(np.tile(listener[:, None], (1, 4)), FS,
                                               directivity=dirs))
    r.compute_rir()
    n = min(len(r.rir[m][0]) for m in range(4))
    delay = pra.constants.get("frac_delay_length") // 2
    return np.stack([r.rir[m][0][delay:n] for m in range(4)], 1)


def test_early_rir_matches_pyroomacoustics_figure_eights():
    spec = sample_scene(2, SceneConfig(rt60=(0.3, 0.5)))
    s = spec.sources[0]
    reach = s.distance + SPEED_OF_SOUND * room.EARLY
    ours = room.foa_rir(spec, 0, FS, np.random.default_rng(0))
    n = int(reach / SPEED_OF_SOUND * FS) - 30  # before the statistical tail starts
    ref = _pra_foa_rir(spec, 0, room._max_order(reach, spec.room_size))[:n]
    scale = ours[:n, 0].max() / ref[:, 0].max()  # pyroomacoustics' own 1 / (4 pi) aside
    assert np.abs(ours[:n] - scale * ref).max() < 0.03 * np.abs(ours[:n]).max()
    for ch in range(4):  # same signs and shapes, channel by channel
        assert np.corrcoef(ours[:n, ch], ref[:, ch])[0, 1] > 0.99


def test_tail_decays_at_the_rt60_and_is_diffuse():
    spec = sample_scene(4, SceneConfig(rt60=(0.6, 0.6)))
    rir = room.foa_rir(spec, 0, FS, np.random.default_rng(1))
    late = rir[int((spec.sources[0].distance / SPEED_OF_SOUND + room.EARLY) * FS) :]
    # The RT60 holds below 1 kHz (higher bands decay faster): Schroeder T20 of low-passed W.
    w = sosfilt(butter(4, 800, fs=FS, output="sos"), late[:, 0])
    edc = 10 * np.log10(np.cumsum(w[::-1] ** 2)[::-1] / np.sum(w**2))
    t60 = 3 * (np.argmax(edc < -25) - np.argmax(edc < -5)) / FS
    assert t60 == pytest.approx(0.6, rel=0.15)
    # Diffuse: each dipole carries a third of W's energy, uncorrelated with W.
    energy = np.sum(late**2, axis=0)
    np.testing.assert_allclose(energy[1:] / energy[0], 1 / 3, rtol=0.2)
    assert np.abs(late[:, 1:].T @ late[:, 0]).max() < 0.1 * energy[0]


def test_tail_continues_the_image_sources_energy():
    block = int(0.01 * FS)
    ratios = []
    for seed in range(4):
        spec = sample_scene(seed, SceneConfig(rt60=(0.5, 0.5)))
        rir = room.foa_rir(spec, 0, FS, np.random.default_rng(seed))
        t_end = int((spec.sources[0].distance / SPEED_OF_SOUND + room.EARLY) * FS)
        before = np.mean(rir[t_end - block : t_end, 0] ** 2)
        ratios.append(np.mean(rir[t_end : t_end + block, 0] ** 2) / before)
    # No step at the hand-over: within 3 dB on average (the tail decays over its block).
    assert 0.5 < np.exp(np.mean(np.log(ratios))) < 1.4


@pytest.mark.parametrize("color", ["pink", "brown"])
def test_ambient_noise_is_diffuse_and_colored(color):
    noise = room.ambient_noise(np.random.default_rng(0), 48000, color)
    energy = np.mean(noise**2, axis=0)
    np.testing.assert_allclose(energy, [1, 1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    spec = np.abs(np.fft.rfft(noise[:, 0])) ** 2
    f = np.fft.rfftfreq(48000, 1 / FS)
    low, high = spec[(f > 100) & (f < 200)].mean(), spec[(f > 1000) & (f < 2000)].mean()
    expected = {"pink": 10, "brown": 100}[color]  # 1/f and 1/f^2 over a decade
    assert expected / 2 < low / high < expected * 2
