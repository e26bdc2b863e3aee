"""Is the declared channel layout right? Two checks, one before and one after conversion.

**What the file declares.** Some containers say what their channels are: an Opus stream's
channel mapping family 2 or 3 (RFC 8486; in mp4, webm, mkv and ogg FFmpeg hands the
``OpusHead`` over as the stream's extradata) and an mp4 / mov audio track's ``SA3D`` box
(Google's spatial audio RFC) both declare ambisonics in ACN order with SN3D gains. FFmpeg
parses ``SA3D`` but lets the decoder overwrite the layout it read (AAC reports ``4.0``), so
the box is read here from the file. A declared layout that differs from the one given for
the stream's channel count is a contradiction: the converter refuses the file unless forced.

**What the audio says.** Whatever the scene, ambiX audio obeys bounds of physics. Each
component of a plane wave from u is the signal times (1, uy, uz, ux), so with sources,
reflections and diffuse sound that are mutually uncorrelated, per frequency

* the dipoles together carry exactly W's energy: |X|² + |Y|² + |Z|² = |W|² (0 dB);
* no dipole carries more than W (equal only for a plane wave along its axis);
* every dipole picks up room sound and noise: none is silent while W is not.

A wrong layout breaks them: FuMa's W (3 dB down) read as SN3D puts the dipoles 3 dB above
W, ambiX read as FuMa 3 dB below; a wrong order that moves W into a dipole's slot makes that
dipole louder than W, and a dropped (silent) slot mapped onto a component leaves it silent.
The statistics are energies summed over time per STFT frequency (energy weighting: loud
events count, near-silence where the microphone's own noise dominates hardly does), as
ratios to W in dB, then the mean of the middle half of their values over the frequencies
of a band where first-order microphones behave (a source in the near field lifts the
dipoles at low frequencies, capsule spacing bends them at high ones): like a median it
ignores the narrow notches that coherent reflections cut and a codec's spectral holes.
A permutation or sign flip of X, Y, Z alone rotates or mirrors a valid field: no content
check can see it; a calibration scene with a known source (``calibration``) can.
"""

from __future__ import annotations

import dataclasses
import os
import struct

import av
import numpy as np
from scipy.stats import trim_mean

from spatialav import ambisonics
from spatialav.data.convert import channels

# --- what the file declares ----------------------------------------------------------------

OPUS_AMBISONIC_FAMILIES = (2, 3)  # RFC 8486: ACN / SN3D (3: through a demixing matrix)
_MOV_FORMATS = ("mov", "mp4", "m4a")  # FFmpeg's ISO-BMFF demuxer names
_MAX_MOOV_BYTES = 256 << 20  # a larger index is not searched (nothing is declared then)
_PATH_TO_STSD = (b"trak", b"mdia", b"minf", b"stbl", b"stsd")


@dataclasses.dataclass(frozen=True)
class Declared:
    """A channel layout a file declares, and where it declares it."""

    layout: channels.Layout
    source: str


def declared_layout(path: str, stream: av.audio.stream.AudioStream) -> Declared | None:
    """What the container declares about the channels of ``stream``, or None (nothing, or
    nothing this module understands)."""
    if stream.codec_context.name == "opus":
        found = opus_declaration(stream.codec_context.extradata or b"")
        if found is not None:
            return found
    if set(stream.container.format.name.split(",")) & set(_MOV_FORMATS):
        payload = _sa3d_payload(path, stream.index)
        if payload is not None:
            return sa3d_declaration(payload)
    return None


def opus_declaration(opus_head: bytes) -> Declared | None:
    """The ambisonic layout an ``OpusHead`` declares (mapping family 2 or 3), else None."""
    if len(opus_head) < 19 or opus_head[:8] != b"OpusHead":
        return None
    num, family = opus_head[9], opus_head[18]
    if family not in OPUS_AMBISONIC_FAMILIES or num < 4:
        return None
    # ACN order: W, Y, Z, X first; higher orders and non-diegetic stereo follow (dropped).
    return Declared(channels.ambix_layout(num),
                    f"Opus channel mapping family {family}: ambisonics, ACN order, SN3D")


def sa3d_declaration(payload: bytes) -> Declared | None:
    """The layout an mp4 ``SA3D`` box (its payload) declares: periphonic, ACN (ordering 0),
    SN3D (normalisation 0), and ``channel_map[k]`` = the track channel holding ACN component
    k (the RFC's example: W, X, Y, Z is 0, 2, 3, 1). None when it declares something else."""
    if len(payload) < 12:
        return None
    version, kind, order, ordering, normalisation, num = struct.unpack(">BBIBBI", payload[:12])
    if (version, kind & 0x7F, ordering, normalisation) != (0, 0, 0, 0) or order < 1 or (
            len(payload) < 12 + 4 * num):
        return None  # the top bit of ``kind`` flags head-locked stereo after the components
    slots = struct.unpack(f">{num}I", payload[12:12 + 4 * num])
    if sorted(slots) != list(range(num)):
        return None
    names = ["0"] * num
    for component, slot in zip("WYZX", slots, strict=False):
        names[slot] = component
    return Declared(channels.Layout(tuple(names)), "mp4 SA3D box: ambisonics, ACN order, SN3D")


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, payload end) of the ISO-BMFF boxes in ``data[start:end]``."""
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", data[start + 8:start + 16])[0], 16
        elif size == 0:
            size = end - start
        if size < head or start + size > end:
            return
        yield kind, start + head, start + size
        start += size


def _read_moov(path: str) -> bytes | None:
    """The ``moov`` box of an ISO-BMFF file, found by skipping over the top-level boxes."""
    with open(path, "rb") as f:
        total, at = os.fstat(f.fileno()).st_size, 0
        while at + 8 <= total:
            f.seek(at)
            head = f.read(16)
            size, kind = struct.unpack(">I4s", head[:8])
            skip = 8
            if size == 1 and len(head) == 16:
                size, skip = struct.unpack(">Q", head[8:16])[0], 16
            elif size == 0:
                size = total - at
            if size < skip:
                return None
            if kind == b"moov":
                if size > _MAX_MOOV_BYTES:
                    return None
                f.seek(at + skip)
                return f.read(size - skip)
            at += size
    return None


def _sa3d_payload(path: str, track_index: int) -> bytes | None:
    """The ``SA3D`` payload in the sample entry of the ``track_index``-th ``trak`` (FFmpeg
    makes one stream per trak, in order), or None. A damaged index finds nothing."""
    try:
        moov = _read_moov(path)
    except (OSError, struct.error):
        return None
    if moov is None:
        return None
    traks = [(s, e) for kind, s, e in _boxes(moov, 0, len(moov)) if kind == b"trak"]
    if track_index >= len(traks):
        return None
    span = traks[track_index]
    for name in _PATH_TO_STSD[1:]:
        span = next(((s, e) for kind, s, e in _boxes(moov, *span) if kind == name), None)
        if span is None:
            return None
    start, end = span[0] + 8, span[1]  # stsd: version/flags and the entry count
    entry = next(_boxes(moov, start, end), None)
    if entry is None or entry[2] - entry[1] < 28:
        return None
    _, s, e = entry
    # A sound sample entry's fields take 28 bytes (QuickTime sound description v1: +16,
    # v2: +36); the boxes inside it follow.
    version = struct.unpack(">H", moov[s + 8:s + 10])[0]
    s += 28 + {1: 16, 2: 36}.get(version, 0)
    return next((moov[a:b] for kind, a, b in _boxes(moov, s, e) if kind == b"SA3D"), None)


def contradiction(declared: Declared | None, layout: channels.Layout) -> str | None:
    """Why ``layout`` (given for this channel count) contradicts the file, or None."""
    if declared is None or declared.layout == layout:
        return None
    return (f"the file declares its {layout.num_channels} channels as "
            f"{channels.as_argument(declared.layout)} ({declared.source}), but the layout given "
            f"for {layout.num_channels} channels is {channels.as_argument(layout)}")


# --- what the audio says -------------------------------------------------------------------

BAND_HZ = (250.0, 4000.0)  # where first-order microphones keep their SN3D gains
NFFT = 1024
RATIO_TOLERANCE_DB = 1.5  # |dipoles / W| beyond this is flagged (FuMa vs SN3D: 3.0 dB)
DIPOLE_OVER_W_DB = 1.5  # a single dipole louder than W by more than this is flagged
SILENT_DB = -40.0  # a dipole this far below W is flagged as silent
_QUIET_POWER = 1e-10  # mean square (-100 dBFS) below which the audio is too quiet to judge
_MIN_BINS = 16
_DB_FLOOR = -120.0
_DIPOLES = {"X": ambisonics.X, "Y": ambisonics.Y, "Z": ambisonics.Z}


def band_powers(foa: np.ndarray, sample_rate: int) -> np.ndarray:
    """Energy per STFT frequency of ``BAND_HZ`` and channel ``[F, 4]``, summed over time
    (Hann frames of ``NFFT``, hop ``NFFT / 2``; in blocks, so hours of audio fit)."""
    x = np.asarray(foa, np.float64)
    hop = NFFT // 2
    freqs = np.fft.rfftfreq(NFFT, 1.0 / sample_rate)
    keep = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
    window = np.hanning(NFFT + 1)[:-1, None]
    total = np.zeros((int(keep.sum()), x.shape[1]))
    num_frames = (len(x) - NFFT) // hop + 1
    for first in range(0, max(num_frames, 0), 256):
        starts = np.arange(first, min(num_frames, first + 256)) * hop
        frames = x[starts[:, None] + np.arange(NFFT)] * window  # [n, NFFT, C]
        total += (np.abs(np.fft.rfft(frames, axis=1)[:, keep]) ** 2).sum(axis=0)
    return total


def _typical_db(ratio) -> float:
    """The mean of the middle half of ``ratio`` 's values in dB: a median's robustness to
    comb notches and spectral holes, with less spread over few frequencies."""
    db = np.maximum(10.0 * np.log10(np.maximum(ratio, 1e-30)), _DB_FLOOR)
    return round(float(trim_mean(db, 0.25)), 2)


def measure(foa: np.ndarray, sample_rate: int) -> dict:
    """The statistics of ambiX audio ``[T, 4]``: ``directional_db`` (the dipoles' energy re
    W: 0 dB) and ``dipole_db`` (each dipole re W: at most 0 dB, never silent), typical values
    over frequency (``_typical_db``); ``{"checked": False, "reason": ...}`` when there is too
    little to judge."""
    foa = np.asarray(foa)
    if len(foa) < NFFT:
        return {"checked": False, "reason": f"shorter than {NFFT} samples"}
    if float(np.max(np.mean(np.square(foa, dtype=np.float64), axis=0))) < _QUIET_POWER:
        return {"checked": False, "reason": "silent"}
    p = band_powers(foa, sample_rate)
    total = p.sum(axis=1)
    p = p[total >= 1e-6 * total.max()]  # bins with sound (a codec may zero whole bands)
    if len(p) < _MIN_BINS:
        return {"checked": False, "reason": f"sound in fewer than {_MIN_BINS} frequency bins "
                                            f"of {BAND_HZ[0]:g}-{BAND_HZ[1]:g} Hz"}
    w = np.maximum(p[:, ambisonics.W], 1e-12 * p.sum(axis=1).max())
    dipoles = p[:, list(_DIPOLES.values())]
    return {"checked": True,
            "directional_db": _typical_db(dipoles.sum(axis=1) / w),
            "dipole_db": {name: _typical_db(dipoles[:, i] / w) for i, name in enumerate(_DIPOLES)}}


def problems(stats: dict) -> list[str]:
    """The physical bounds that ``measure`` 's statistics break, each with its usual cause."""
    if not stats["checked"]:
        return []
    found = []
    ratio = stats["directional_db"]
    if abs(ratio) > RATIO_TOLERANCE_DB:
        cause = ("FuMa's W, 3 dB down, read as SN3D gives +3 dB" if ratio > 0 else
                 "ambiX read as FuMa, W raised 3 dB, gives -3 dB")
        found.append(f"X, Y, Z together carry {ratio:+.1f} dB of W's energy (0 dB for any "
                     f"sound field in ambiX; {cause})")
    loud = max(stats["dipole_db"], key=stats["dipole_db"].get)
    if stats["dipole_db"][loud] > DIPOLE_OVER_W_DB:
        found.append(f"{loud} is {stats['dipole_db'][loud]:+.1f} dB re W, louder than W, "
                     "which no dipole is in SN3D (is W in another channel's slot?)")
    quiet = min(stats["dipole_db"], key=stats["dipole_db"].get)
    if stats["dipole_db"][quiet] < SILENT_DB:
        found.append(f"{quiet} is silent ({stats['dipole_db'][quiet]:.0f} dB re W) although "
                     "every dipole of a recording picks up room sound and noise (is a dropped "
                     f"or silent channel mapped to {quiet}?)")
    return found


def check(foa: np.ndarray, sample_rate: int) -> tuple[dict, list[str]]:
    """(report entry ``layout_check``: the statistics and ``plausible``, warnings): one
    warning naming every broken bound, or none."""
    stats = measure(foa, sample_rate)
    found = problems(stats)
    entry = stats | ({"plausible": not found} if stats["checked"] else {})
    if not found:
        return entry, []
    return entry, ["implausible as ambiX (W, Y, Z, X; SN3D): " + "; ".join(found)
                   + ". Is the declared channel layout (--layout) right?"]
