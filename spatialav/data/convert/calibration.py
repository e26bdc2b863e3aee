"""Calibration scenes: media files with one source at a known direction, and measuring it back.

A converter's channel map and equirect mapping are only right if a source seen at (az, el)
in the frames is also heard from (az, el). These helpers write such a scene in the layouts
the converters read (mp4 with H.264 or MPEG-4 video and AAC audio, m4a) and measure the
direction of a converted clip's sound (time-averaged active intensity) and of its bright blob
(brightness-weighted mean direction on the sphere), independently of each other. The tests
use them end to end; they also check a channel map on real files whose source is known.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from spatialav import ambisonics, geometry

AAC_LAYOUTS = {1: "mono", 2: "stereo", 4: "4.0", 6: "5.1"}  # channel count -> FFmpeg layout


def blob_frames(num: int, height: int, width: int, az: float, el: float,
                radius: float = np.radians(20.0)) -> np.ndarray:
    """uint8 [num, H, W, 3] equirect frames, dark, with a bright disc of angular ``radius``
    centred on (az, el) radians."""
    paz, pel = geometry.equirect_directions(width, height)
    disc = geometry.angular_distance(paz, pel, az, el) < radius
    frame = np.full((height, width, 3), 16, np.uint8)
    frame[disc] = 235
    return np.repeat(frame[None], num, axis=0)


def blob_direction(frame: np.ndarray) -> tuple[float, float]:
    """(az, el) radians of the bright part of an equirect frame: the mean of its pixels' unit
    vectors weighted by brightness above the median and by solid angle (columns wrap)."""
    lum = frame.astype(np.float64).mean(axis=-1)
    h, w = lum.shape
    weight = np.clip(lum - np.median(lum), 0.0, None)
    az, el = geometry.equirect_directions(w, h)
    u = geometry.direction_to_vector(az.astype(np.float64), el.astype(np.float64))
    v = (u * (weight * np.cos(el))[..., None]).sum(axis=(0, 1))
    a, e = geometry.vector_to_direction(v)
    return float(a), float(e)


def plane_wave(num_samples: int, az: float, el: float, seed: int = 0,
               level: float = 0.25) -> np.ndarray:
    """ambiX [T, 4] float32: white noise of RMS ``level`` arriving from (az, el) radians."""
    s = np.random.default_rng(seed).standard_normal(num_samples) * level
    return np.asarray(ambisonics.encode(np.clip(s, -1, 1), az, el), np.float32)


def intensity_direction(foa: np.ndarray) -> tuple[float, float]:
    """(az, el) radians of the time-averaged active intensity of ambiX audio [T, 4]."""
    foa = np.asarray(foa, np.float64)
    w = foa[:, ambisonics.W]
    v = np.array([np.mean(w * foa[:, c]) for c in ambisonics.XYZ])
    a, e = geometry.vector_to_direction(v)
    return float(a), float(e)


def _add_audio(container, samples: np.ndarray, sample_rate: int, codec: str):
    stream = container.add_stream(codec, rate=sample_rate, layout=AAC_LAYOUTS[samples.shape[1]])
    planar = np.ascontiguousarray(samples.T.astype(np.float32))
    n = stream.codec_context.frame_size or 1024
    layout = AAC_LAYOUTS[samples.shape[1]]
    for i in range(0, planar.shape[1], n):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, i:i + n]),
                                           format="fltp", layout=layout)
        frame.sample_rate, frame.pts = sample_rate, i
        yield from stream.encode(frame)
    yield from stream.encode(None)


def write_audio(path, samples: np.ndarray, sample_rate: int, codec: str = "aac") -> None:
    """An audio-only file (m4a: AAC) of float samples [T, C] in [-1, 1], channels in order."""
    with av.open(str(path), "w") as c:
        for packet in _add_audio(c, samples, sample_rate, codec):
            c.mux(packet)


def write_video(path, frames: np.ndarray, fps: float, *, codec: str = "libx264",
                audio: np.ndarray | None = None, sample_rate: int = 24000) -> None:
    """An mp4 of uint8 frames [N, H, W, 3] (H, W even) at ``fps``, with an optional AAC track
    of float samples [T, C]."""
    with av.open(str(path), "w") as c:
        rate = Fraction(fps).limit_denominator(1001)
        stream = c.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        packets = []
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i
            packets += stream.encode(frame)
        packets += stream.encode(None)
        if audio is not None:
            packets += list(_add_audio(c, audio, sample_rate, "aac"))
        for packet in packets:
            c.mux(packet)
