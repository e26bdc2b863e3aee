"""Decoding real recordings: audio (wav via soundfile, anything else via PyAV) and equirect video.

Every problem with an input file raises ``SkipItem`` with a short ``kind`` and a message that
names the file, what was expected and what arrived; the builder records it in the report and
moves on. What comes out is what the schema stores: ambiX float32 in [-1, 1] at the target
rate, and JPEG frames of the target size sampled at the target frame rate.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import numpy as np
import soundfile
from scipy import signal

from spatialav import ambisonics
from spatialav.data import schema
from spatialav.data.convert import layout_check
from spatialav.data.convert.channels import Layout, as_argument, pick_layout

DROPPED_CHANNEL_WARN_DB = -20.0  # a declared-silent channel this loud (re W) suggests a wrong map


class SkipItem(Exception):
    """Bad input: the item is reported as skipped, never written.

    ``kind`` groups reasons in the report: missing-file, corrupt, truncated, channels,
    non-finite, layout, duration-mismatch, labels, too-short, split, schema. ``details`` (numbers
    such as a too-short recording's ``duration_s``) go into the report entry, so a run that
    writes nothing can say what to change.
    """

    def __init__(self, kind: str, message: str, **details):
        super().__init__(message)
        self.kind = kind
        self.details = details


@dataclasses.dataclass
class Audio:
    samples: np.ndarray  # [T, C] float32 as decoded (C = the file's channels)
    sample_rate: int
    path: str
    declared: layout_check.Declared | None = None  # the layout the container declares


# --- audio ---------------------------------------------------------------------------------


def _wav_header_frames(path: str) -> int | None:
    """Sample frames the RIFF header's data chunk declares (None if not a plain RIFF/WAVE).

    libsndfile quietly shortens a truncated file's length to what is there; the header still
    says what should be there.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while len(chunk := f.read(8)) == 8:
            cid, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if cid == b"fmt ":
                fmt = f.read(size)
                block_align = int.from_bytes(fmt[12:14], "little")
                f.seek(size % 2, os.SEEK_CUR)
            elif cid == b"data":
                if size == 0xFFFFFFFF or not block_align:  # streamed: length unknown
                    return None
                return size // block_align
            else:
                f.seek(size + size % 2, os.SEEK_CUR)
    return None


def read_wav(path: str) -> Audio:
    """A wav (any soundfile format) as float32; int PCM is scaled by 1/32768 (as the schema)."""
    try:
        x, sr = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError) as err:
        raise SkipItem("corrupt", f"{path}: unreadable audio: {err}") from None
    declared = _wav_header_frames(path)
    if declared is not None and declared != x.shape[0]:
        raise SkipItem("truncated", f"{path}: header declares {declared} sample frames, the file "
                                    f"holds {x.shape[0]}")
    return Audio(x, int(sr), path)


def open_media(path: str) -> av.container.InputContainer:
    """An open media file. One FFmpeg cannot open is corrupt, and so is one that opens with no
    stream at all: a destroyed index (an mp4's ``moov`` atom) looks like that, and reporting
    it as "no audio stream" would send the user after channel layouts."""
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as err:
        raise SkipItem("corrupt", f"{path}: cannot open: {err}") from None
    if not container.streams:
        container.close()
        raise SkipItem("corrupt", f"{path}: the container lists no streams (a damaged or "
                                  "missing index, e.g. an mp4 whose moov atom is destroyed)")
    return container


def _frame_array(frame: av.AudioFrame) -> np.ndarray:
    """One decoded audio frame -> float32 [n, C], whatever the sample format."""
    a = frame.to_ndarray()
    c = frame.layout.nb_channels
    a = a.T if frame.format.is_planar else a.reshape(-1, c)
    if a.dtype.kind == "f":
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return (a.astype(np.float32) - 128.0) / 128.0
    return (a.astype(np.float64) / (2.0 ** (8 * a.dtype.itemsize - 1))).astype(np.float32)


def decode_audio(path: str, channel_counts: Iterable[int], tolerance_s: float) -> Audio:
    """The first audio stream of a media file whose channel count is in ``channel_counts``.

    Samples are placed on the container's clock (sample 0 at t = 0: leading priming removed,
    a late start zero-padded) and cut to the length the stream declares, which drops the
    encoder padding AAC adds at the end (up to ~1000 samples). A stream that decodes more
    than ``tolerance_s`` short of its declared length is truncated.
    """
    counts = tuple(channel_counts)
    with open_media(path) as container:
        streams = container.streams.audio
        if not streams:
            raise SkipItem("channels", f"{path}: no audio stream; expected one with "
                                       f"{' or '.join(map(str, counts))} channels")
        stream = next((s for s in streams if s.channels in counts), None)
        if stream is None:
            found = [s.channels for s in streams]
            raise SkipItem("channels", f"{path}: expected an audio stream with "
                                       f"{' or '.join(map(str, counts))} channels, found {found}")
        sr = stream.sample_rate
        declared = layout_check.declared_layout(path, stream)
        chunks, start = [], None
        try:
            for frame in container.decode(stream):
                if start is None:
                    start = frame.time or 0.0
                chunks.append(_frame_array(frame))
        except av.FFmpegError as err:
            raise SkipItem("corrupt", f"{path}: audio decoding failed after "
                                      f"{sum(len(c) for c in chunks) / sr:.2f} s: {err}") from None
        if stream.duration is not None:
            declared_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            declared_s = container.duration / av.time_base
        else:
            declared_s = None
    if not chunks:
        raise SkipItem("corrupt", f"{path}: the audio stream decodes to no samples")
    x = np.concatenate(chunks)
    offset = int(round(start * sr))
    x = x[-offset:] if offset < 0 else np.concatenate([np.zeros((offset, x.shape[1]), x.dtype), x])
    if declared_s is not None:
        n = int(round(declared_s * sr))
        if x.shape[0] < n - tolerance_s * sr:
            raise SkipItem("truncated", f"{path}: audio decodes to {x.shape[0] / sr:.2f} s, the "
                                        f"stream declares {declared_s:.2f} s")
        x = np.pad(x[:n], ((0, max(0, n - x.shape[0])), (0, 0)))
    return Audio(x, sr, path, declared)


def to_ambix(audio: Audio, layouts: tuple[Layout, ...],
             force_layout: bool = False) -> tuple[np.ndarray, list[str]]:
    """Decoded audio -> ambiX [T, 4] float32 by the layout declared for its channel count.

    A layout that contradicts the one the file declares is refused unless ``force_layout``.
    Returns the audio and warnings (a dropped channel carrying real signal, a forced layout).
    """
    x = audio.samples
    if x.shape[0] == 0:
        raise SkipItem("corrupt", f"{audio.path}: no audio samples")
    layout = pick_layout(layouts, x.shape[1])
    if layout is None:
        wanted = " or ".join(str(lay.num_channels) for lay in layouts)
        raise SkipItem("channels", f"{audio.path}: expected {wanted} audio channels "
                                   f"({', '.join(lay.spec for lay in layouts)}), got {x.shape[1]}")
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise SkipItem("non-finite", f"{audio.path}: {bad} NaN/inf samples; expected finite audio")
    clash = layout_check.contradiction(audio.declared, layout)
    if clash and not force_layout:
        raise SkipItem("layout", f"{audio.path}: {clash}; pass --layout "
                                 f"{as_argument(audio.declared.layout)}, or --force-layout "
                                 "to keep yours")
    foa = layout.to_ambix(x)
    warnings = [f"{clash}; converted as given (--force-layout)"] if clash else []
    w_power = float(np.mean(np.square(foa[:, ambisonics.W], dtype=np.float64)))
    for i in layout.dropped:
        p = float(np.mean(np.square(x[:, i], dtype=np.float64)))
        if w_power > 0 and p > 0:
            db = 10 * math.log10(p / w_power)
            if db > DROPPED_CHANNEL_WARN_DB:
                warnings.append(f"channel {i}, declared unused by layout {layout.spec!r}, is at "
                                f"{db:.1f} dB relative to W: is the channel map right?")
    return foa, warnings


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling of [T, C] along time to ``round(T * rate_out / rate_in)`` samples."""
    if rate_in == rate_out:
        return x
    ratio = Fraction(rate_out, rate_in)
    y = signal.resample_poly(x.astype(np.float64), ratio.numerator, ratio.denominator, axis=0)
    return y[: int(round(x.shape[0] * ratio))].astype(np.float32)


def target_audio(audio: Audio, layouts: tuple[Layout, ...], sample_rate: int,
                 force_layout: bool = False) -> tuple[np.ndarray, list[str]]:
    """ambiX at ``sample_rate``, saturated to [-1, 1] (resampling overshoot, FuMa's +3 dB W)."""
    foa, warnings = to_ambix(audio, layouts, force_layout)
    foa = resample(foa, audio.sample_rate, sample_rate)
    over = int((np.abs(foa) > 1.0).sum())
    if over:
        warnings.append(f"{over} samples beyond full scale saturated")
    return np.clip(foa, -1.0, 1.0), warnings


# --- video ---------------------------------------------------------------------------------


def nearest_frames(timed: Iterable[tuple[float, object]], num_out: int,
                   fps: float) -> Iterator[tuple[int, object]]:
    """Frame-rate conversion: for output frames k = 0 .. num_out - 1 at k / fps, yield
    (k, the source frame nearest in time), ties to the later one.

    ``timed`` yields (time, frame) in increasing time and is consumed to the end, so callers
    can see the whole stream; output times past the last source frame repeat it.
    """
    k, prev = 0, None
    for t, frame in timed:
        if prev is not None:
            boundary = (prev[0] + t) / 2
            while k < num_out and k / fps < boundary:
                yield k, prev[1]
                k += 1
        prev = (t, frame)
    if prev is not None:
        while k < num_out:
            yield k, prev[1]
            k += 1


@dataclasses.dataclass
class Video:
    jpegs: list[bytes]  # num_out frames at the target rate and size
    duration: float  # s, last source frame's time + one frame period
    source_size: tuple[int, int]  # (height, width)
    source_fps: float


def decode_video(path: str, fps: float, frame_size: tuple[int, int], num_out: int,
                 quality: int = schema.JPEG_QUALITY) -> Video:
    """The first video stream, resampled to ``fps`` (nearest frame) and resized to
    ``frame_size`` (H, W) with area averaging, as ``num_out`` JPEGs."""
    h, w = frame_size
    with open_media(path) as container:
        if not container.streams.video:
            raise SkipItem("missing-file", f"{path}: no video stream")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0.0)
        times: list[float] = []

        def timed():
            for i, frame in enumerate(container.decode(stream)):
                if frame.time is None and not rate:
                    raise SkipItem("corrupt", f"{path}: video frames carry no timestamps and "
                                              "the stream no frame rate")
                t = frame.time if frame.time is not None else i / rate
                times.append(t)
                yield t, frame

        jpegs, last = [], (None, b"")
        try:
            for _, frame in nearest_frames(timed(), num_out, fps):
                if frame is not last[0]:
                    rgb = frame.to_ndarray(width=w, height=h, format="rgb24",
                                           interpolation="AREA")
                    last = (frame, schema.encode_jpeg(rgb, quality))
                jpegs.append(last[1])
        except av.FFmpegError as err:
            t = times[-1] if times else 0.0
            raise SkipItem("corrupt", f"{path}: video decoding failed after {t:.2f} s: "
                                      f"{err}") from None
        size = (stream.codec_context.height, stream.codec_context.width)
    if not times:
        raise SkipItem("corrupt", f"{path}: the video stream decodes to no frames")
    period = 1.0 / rate if rate else (times[-1] - times[0]) / max(1, len(times) - 1)
    return Video(jpegs, times[-1] + period, size, rate)
