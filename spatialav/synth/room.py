"""First-order ambisonic (ambiX W, Y, Z, X; SN3D) room impulse responses and ambient noise.

A hybrid model, fast enough to build hours of audio on a laptop:

* early part (the direct sound and ``EARLY`` seconds after it): pyroomacoustics' shoebox
  image-source model (the order it needs to hold every image in that time) gives
  every image's position and wall damping; each image arrives as a plane wave, so it is
  written into all four channels with the exact SN3D gains (1, uy, uz, ux) of its arrival
  direction through one shared windowed-sinc fractional delay. This is what co-located omni
  and signed figure-eight (x, y, z) microphones record (pyroomacoustics' figure-eight
  directivity is signed too), but done once per image instead of once per microphone, and
  without pyroomacoustics' RIR high-pass, so the direct path has exact ambiX ratios.
* late part: exponentially decaying Gaussian noise with the sampled RT60 (shorter at high
  frequencies, as air and wall absorption make it), encoded as an isotropic diffuse
  first-order field (independent channels, W energy 1, each dipole 1/3 in SN3D), starting
  where the images stop and energy-matched to the early response just before that.

Amplitudes are referenced to 1 m: the direct sound of a source at distance d is its
emitted signal times 1/d, delayed by d / c.
"""

from __future__ import annotations

import numpy as np
import pyroomacoustics as pra
from scipy.signal import oaconvolve

from spatialav import geometry
from spatialav.synth.scene import SPEED_OF_SOUND, SceneSpec

EARLY = 0.08  # seconds of exact image sources after the direct sound, then the tail
_SINC_HALF = 20  # fractional-delay filter half length (taps on each side)
_MAX_ORDER = 30  # caps the image count in tiny rooms (the tail covers what is missed)
# Late-tail decay per band, as a fraction of the RT60: (band upper edge Hz, factor).
_TAIL_BANDS = ((1000.0, 1.0), (4000.0, 0.9), (np.inf, 0.7))


def image_sources(size, listener, source, absorption: float, max_order: int):
    """Image sources of a shoebox: (vectors from the listener ``[K, 3]``, pressure damping ``[K]``).

    Room coordinates; the direct path is the image with order 0 (damping 1).
    """
    room = pra.ShoeBox(
        list(size), fs=16000, materials=pra.Material(float(absorption)),
        max_order=int(max_order), air_absorption=False,
    )
    room.add_source(list(source))
    room.add_microphone(list(listener))
    room.image_source_model()
    src = room.sources[0]
    visible = room.visibility[0][0].astype(bool)
    vectors = src.images[:, visible].T - np.asarray(listener)[None]
    return vectors, src.damping[0, visible].astype(np.float64)


def fractional_delay_kernels(delays):
    """Windowed-sinc kernels for fractional ``delays [K]`` in samples.

    Returns the index of each kernel's first tap ``[K]`` and the taps ``[K, 2 H]``.
    """
    start = np.floor(delays).astype(np.int64) - _SINC_HALF + 1
    n = start[:, None] + np.arange(2 * _SINC_HALF)[None]
    x = n - delays[:, None]
    window = 0.5 * (1 + np.cos(np.pi * x / _SINC_HALF))  # Hann over +-H samples
    return start, np.sinc(x) * window


def plane_waves_rir(arrivals, gains, delays, length: int) -> np.ndarray:
    """Sum of plane-wave impulses as ambiX ``[length, 4]``.

    ``arrivals [K, 3]`` unit vectors (listener frame) the sound comes from, ``gains [K]``,
    ``delays [K]`` in samples.
    """
    start, taps = fractional_delay_kernels(np.asarray(delays, np.float64))
    idx = (start[:, None] + np.arange(taps.shape[1])[None]).ravel()
    keep = (idx >= 0) & (idx < length)  # drops sinc taps before t = 0 of very near sources
    sn3d = np.stack([np.ones(len(gains)), arrivals[:, 1], arrivals[:, 2], arrivals[:, 0]], 1)
    rir = np.empty((length, 4))
    for ch in range(4):
        w = (taps * (gains * sn3d[:, ch])[:, None]).ravel()
        rir[:, ch] = np.bincount(idx[keep], weights=w[keep], minlength=length)
    return rir


def diffuse_field(noise) -> np.ndarray:
    """Encode independent unit-variance noises ``[T, 4]`` as an isotropic diffuse field.

    In SN3D each dipole of a diffuse field carries a third of the omni's energy.
    """
    return noise * np.array([1.0, 1 / np.sqrt(3), 1 / np.sqrt(3), 1 / np.sqrt(3)])


def diffuse_tail(rng, start: float, energy_rate: float, rt60: float, fs: int) -> np.ndarray:
    """Late reverberation ``[L, 4]`` from ``start`` seconds (zeros before) to its -60 dB point.

    ``energy_rate`` is the W energy per sample at ``start``; each band decays with its own
    fraction of ``rt60`` (white at ``start``).
    """
    n0 = int(np.ceil(start * fs))
    n = int(np.ceil(rt60 * fs))
    noise = rng.standard_normal((n, 4))
    spec = np.fft.rfft(noise, axis=0)
    freqs = np.fft.rfftfreq(n, 1 / fs)
    t = np.arange(n)[:, None] / fs
    tail = np.zeros((n, 4))
    lower = 0.0
    for upper, factor in _TAIL_BANDS:
        band = np.where((freqs >= lower) & (freqs < upper), 1.0, 0.0)[:, None]
        decay = 3 * np.log(10) / (rt60 * factor)  # amplitude rate: -60 dB after rt60 * factor
        tail += np.fft.irfft(spec * band, n, axis=0) * np.exp(-decay * t)
        lower = upper
    out = np.zeros((n0 + n, 4))
    out[n0:] = diffuse_field(tail) * np.sqrt(energy_rate)
    return out


def _max_order(reach: float, size) -> int:
    """Reflection order that holds every image closer than ``reach`` metres.

    An image with m_i reflections off the walls of axis i lies at least (m_i - 1) L_i away
    along that axis, so its distance is >= min(L) (m - 3) / sqrt(3) for order m.
    """
    return min(_MAX_ORDER, int(np.ceil(3 + np.sqrt(3) * reach / min(size))))


def foa_rir(spec: SceneSpec, source_index: int, fs: int, rng) -> np.ndarray:
    """ambiX RIR ``[L, 4]`` from one source of the scene to the listener, listener frame."""
    src = spec.sources[source_index]
    listener = np.asarray(spec.listener)
    position = listener + src.distance * spec.room_vector(src.azimuth, src.elevation)
    if spec.rt60 == 0:
        reach = src.distance
        vectors, damping = (position - listener)[None], np.ones(1)
    else:
        reach = src.distance + SPEED_OF_SOUND * EARLY
        vectors, damping = image_sources(spec.room_size, listener, position, spec.absorption,
                                         _max_order(reach, spec.room_size))
        keep = np.linalg.norm(vectors, axis=1) <= reach
        vectors, damping = vectors[keep], damping[keep]
    dist = np.linalg.norm(vectors, axis=1)
    # Room frame -> listener frame: u_listener = R(yaw)^T u_room (row vectors: u @ R).
    arrivals = vectors / dist[:, None] @ geometry.rotation_matrix(np.float64(spec.listener_yaw))
    gains = damping / dist
    t_end = reach / SPEED_OF_SOUND  # every image up to here is included
    early = plane_waves_rir(arrivals, gains, dist / SPEED_OF_SOUND * fs,
                            int(np.ceil(t_end * fs)) + _SINC_HALF + 1)
    if spec.rt60 == 0:
        return early
    # Energy-match the tail to the rendered early response over the last 40 % of its span
    # (measured on the signal: images arriving within a sample add coherently).
    span = 0.4 * EARLY
    rate = 6 * np.log(10) / spec.rt60  # energy decay per second
    window = early[int((t_end - span) * fs) : int(t_end * fs), 0]
    energy_rate = np.sum(window**2) * rate / (fs * np.expm1(rate * span))
    rir = diffuse_tail(rng, t_end, energy_rate, spec.rt60, fs)
    rir[: len(early)] += early[: len(rir)]
    return rir


def direct_path(distance: float, fs: int) -> np.ndarray:
    """The W channel of the direct path alone: 1 / d through the same fractional delay."""
    delay = distance / SPEED_OF_SOUND * fs
    return plane_waves_rir(np.array([[1.0, 0.0, 0.0]]), np.array([1 / distance]),
                           np.array([delay]), int(np.ceil(delay)) + _SINC_HALF + 1)[:, 0]


def render_sources(spec: SceneSpec, emitted, fs: int, num_samples: int, rng):
    """Each source's FOA image and its direct sound.

    ``emitted [S, T]`` are the signals at 1 m. Returns ``images [S, T, 4]`` and ``direct
    [S, T]``: the emitted signal as its direct path delivers it to the listener (delayed by
    d / c through the same fractional-delay filter, scaled by 1 / d), which is the W channel
    of the image in an anechoic room.
    """
    images = np.zeros((len(spec.sources), num_samples, 4))
    direct = np.zeros((len(spec.sources), num_samples))
    for i, src in enumerate(spec.sources):
        rir = foa_rir(spec, i, fs, rng)
        images[i] = oaconvolve(emitted[i][:, None], rir, axes=0)[:num_samples]
        direct[i] = oaconvolve(emitted[i], direct_path(src.distance, fs))[:num_samples]
    return images, direct


def colored_noise(rng, num_samples: int, color: str) -> np.ndarray:
    """Zero-mean, unit-power pink (1/f) or brown (1/f^2) noise ``[T, 4]``, independent channels."""
    exponent = {"pink": 0.5, "brown": 1.0}[color]  # amplitude ~ f^-exponent
    spec = np.fft.rfft(rng.standard_normal((num_samples, 4)), axis=0)
    f = np.fft.rfftfreq(num_samples)
    spec[1:] *= f[1:, None] ** -exponent
    spec[0] = 0.0
    noise = np.fft.irfft(spec, num_samples, axis=0)
    return noise / np.sqrt(np.mean(noise**2, axis=0, keepdims=True))


def ambient_noise(rng, num_samples: int, color: str) -> np.ndarray:
    """Diffuse ambient noise ``[T, 4]`` with unit W variance."""
    return diffuse_field(colored_noise(rng, num_samples, color))
