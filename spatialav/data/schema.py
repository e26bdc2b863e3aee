"""The on-disk example schema shared by every spatialav dataset, and its validation.

One example per clip. Always present (the ``core`` group):

==============  ==========================  ==================================================
field           stored as                   meaning
==============  ==========================  ==================================================
clip_id         text                        unique id, e.g. ``train/000042`` or a file stem
audio           int16 [T, 4]                ambiX mixture (W, Y, Z, X), PCM ÷ 32768 = float
frames          bytes [N]                   equirect video frames, one JPEG per frame
sample_rate     int32 scalar                audio sample rate, Hz
fps             float32 scalar              video frame rate (float32: 29.97 reads 29.969999)
==============  ==========================  ==================================================

Optional groups, present when the source has them (a dataset declares its groups once, in
``DatasetSpec.groups``; every example of it then has exactly those fields):

- ``labels``: ``labels`` float32 [rows, 6] DCASE rows (label frame, class, track, azimuth°,
  elevation°, distance cm), 100 ms label frames.
- ``boxes``: ``boxes`` float32 [rows, 7] (video frame, class, cx, cy, w, h normalised, object).
- ``sources`` (separation / localisation ground truth): ``source_images`` int16 [S, T, 4],
  ``dry`` int16 [S, T], ``source_class`` int32 [S], ``source_direction`` float32 [S, 2]
  (azimuth, elevation, radians), ``source_distance`` float32 [S] (metres), ``activity``
  bool [S, label frames].
- ``distractors``: ``distractor_class`` int32 [D], ``distractor_direction`` float32 [D, 2].
- ``detections``: float32 [rows, 8] per video frame (video frame, class, azimuth, elevation,
  width, height, score, track); angles and angular extent in radians, track -1 when
  untracked (``spatialav.detect.Detections.to_rows``). Detections computed after a dataset
  exists live in a sidecar that ``data.detections.DetectionsSource`` merges into records in
  this layout; a dataset may also store them inline with ``groups + ("detections",)``.

Large int16/bool arrays use TFDS ``Tensor(encoding='bytes')`` (raw little-endian bytes, read
back with ``np.frombuffer``): the default ``int64_list`` would spend up to 10 bytes per
negative sample. Frames are a string tensor, so readers get JPEG bytes and decode only what
they use (``decode_frames``).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

if TYPE_CHECKING:  # importing spatialav.synth pulls in the renderer; readers don't need it
    from spatialav.synth.clip import Clip

SCHEMA_VERSION = 1
INT16_SCALE = 32768.0  # int16 PCM <-> float: x = pcm / 32768 (as soundfile and transforms do)
JPEG_QUALITY = 90


@dataclasses.dataclass(frozen=True)
class Field:
    group: str
    shape: tuple[int | None, ...]
    dtype: type
    doc: str
    raw_bytes: bool = False  # store as TFDS Tensor(encoding='bytes')


FIELDS: dict[str, Field] = {
    "clip_id": Field("core", (), np.str_, "clip id"),
    "audio": Field("core", (None, 4), np.int16, "ambiX mixture (W, Y, Z, X), int16 PCM", True),
    "frames": Field("core", (None,), np.object_, "equirect video frames, JPEG bytes"),
    "sample_rate": Field("core", (), np.int32, "audio sample rate, Hz"),
    "fps": Field("core", (), np.float32, "video frame rate"),
    "labels": Field("labels", (None, 6), np.float32, "DCASE: frame, class, track, az°, el°, cm"),
    "boxes": Field("boxes", (None, 7), np.float32, "frame, class, cx, cy, w, h, object"),
    "source_images": Field("sources", (None, None, 4), np.int16, "per-source ambiX images", True),
    "dry": Field("sources", (None, None), np.int16, "per-source dry signals", True),
    "source_class": Field("sources", (None,), np.int32, "source class indices"),
    "source_direction": Field("sources", (None, 2), np.float32, "azimuth, elevation (rad)"),
    "source_distance": Field("sources", (None,), np.float32, "source distance (m)"),
    "activity": Field("sources", (None, None), np.bool_, "source active per label frame", True),
    "distractor_class": Field("distractors", (None,), np.int32, "silent distractor classes"),
    "distractor_direction": Field("distractors", (None, 2), np.float32, "az, el (rad)"),
    "detections": Field(
        "detections", (None, 8), np.float32, "frame, class, az, el, width, height, score, track"
    ),
}
GROUPS = ("core", "labels", "boxes", "sources", "distractors", "detections")
AUDIO_FIELDS = ("audio", "source_images", "dry")  # float [-1, 1] in memory, int16 on disk


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What every example of one dataset must look like (checked on write)."""

    sample_rate: int
    fps: float
    frame_size: tuple[int, int]  # (height, width) of the equirect frames
    groups: tuple[str, ...] = ("core",)

    def __post_init__(self):
        unknown = set(self.groups) - set(GROUPS)
        if unknown or "core" not in self.groups:
            raise ValueError(f"groups must include 'core' and be among {GROUPS}, got {self.groups}")

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for name, f in FIELDS.items() if f.group in self.groups)

    def to_json(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "sample_rate": int(self.sample_rate),
            "fps": float(self.fps),
            "frame_size": [int(s) for s in self.frame_size],
            "groups": list(self.groups),
        }

    @classmethod
    def from_json(cls, d: Mapping) -> DatasetSpec:
        return cls(d["sample_rate"], d["fps"], tuple(d["frame_size"]), tuple(d["groups"]))


def features(groups: Sequence[str]) -> tfds.features.FeaturesDict:
    """The TFDS feature description of a dataset holding ``groups``."""
    spec = {}
    for name, f in FIELDS.items():
        if f.group not in groups:
            continue
        if f.dtype is np.str_:
            spec[name] = tfds.features.Text(doc=f.doc)
        else:
            encoding = "bytes" if f.raw_bytes else "none"
            spec[name] = tfds.features.Tensor(
                shape=f.shape, dtype=f.dtype, encoding=encoding, doc=f.doc
            )
    return tfds.features.FeaturesDict(spec)


def signature(feats: tfds.features.FeaturesDict) -> dict[str, tuple]:
    """{field: (shape, dtype name)} as TFDS reports it, to compare a dataset with the schema."""
    return {
        name: (tuple(info.shape), np.dtype(info.np_dtype).name)
        for name, info in feats.get_tensor_info().items()
    }


# --- conversion ---------------------------------------------------------------------------


def to_int16(x: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] -> int16 PCM (round to nearest; +1.0 saturates at 32767)."""
    return np.clip(np.rint(x * INT16_SCALE), -32768, 32767).astype(np.int16)


def to_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / np.float32(INT16_SCALE)


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_frames(jpegs: Sequence[bytes]) -> np.ndarray:
    """Encoded frames (JPEG / PNG bytes) [N] -> uint8 [N, H, W, 3]: the one image decoder of
    the toolkit. ValueError naming the frame when one is not bytes or does not decode, when
    there are none, or when their sizes differ."""
    out = []
    for i, data in enumerate(jpegs):
        if not isinstance(data, bytes | bytearray | np.bytes_):
            raise ValueError(f"frame {i}: expected encoded image bytes (JPEG/PNG), "
                             f"got {type(data).__name__}")
        try:
            with Image.open(io.BytesIO(data)) as im:
                out.append(np.asarray(im.convert("RGB")))
        except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for bad / truncated data
            raise ValueError(f"frame {i}: expected a decodable JPEG/PNG image, got "
                             f"{len(data)} bytes that do not decode ({e})") from None
    if not out:
        raise ValueError("frames: expected at least one encoded frame, got none")
    shapes = sorted({d.shape for d in out})
    if len(shapes) > 1:
        raise ValueError(f"frames: expected one frame size, got {shapes}")
    return np.stack(out)


# --- validation ---------------------------------------------------------------------------


class _Checker:
    """Raises ValueError naming the clip, the field, what was expected and what was found."""

    def __init__(self, clip_id: str):
        self.clip_id = clip_id

    def fail(self, field: str, expected: str, got: str):
        raise ValueError(f"clip {self.clip_id!r}, field {field!r}: expected {expected}, got {got}")

    def array(self, field: str, x, dtypes: tuple[type, ...], ndim: int) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            self.fail(field, "a numpy array", type(x).__name__)
        if x.dtype not in [np.dtype(d) for d in dtypes]:
            names = " or ".join(np.dtype(d).name for d in dtypes)
            self.fail(field, f"dtype {names}", f"dtype {x.dtype}")
        if x.ndim != ndim:
            self.fail(field, f"{ndim} dims {FIELDS[field].shape}", f"shape {x.shape}")
        for axis, size in enumerate(FIELDS[field].shape):
            if size is not None and x.shape[axis] != size:
                self.fail(field, f"size {size} on axis {axis} {FIELDS[field].shape}",
                          f"shape {x.shape}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            self.fail(field, "finite values", f"{int((~np.isfinite(x)).sum())} NaN/inf values")
        return x

    def audio(self, field: str, x) -> np.ndarray:
        x = self.array(field, x, (np.float32, np.int16), len(FIELDS[field].shape))
        if x.dtype == np.int16:
            return x
        peak = float(np.abs(x).max(initial=0.0))
        if peak > 1.0:
            self.fail(field, "float audio in [-1, 1]", f"peak {peak:.4g}")
        return to_int16(x)

    def frames(self, x, frame_size: tuple[int, int]) -> np.ndarray:
        """uint8 [N, H, W, 3] (encoded here) or a sequence of JPEG bytes (checked, kept)."""
        h, w = frame_size
        if isinstance(x, np.ndarray) and x.dtype != np.object_:
            if x.dtype != np.uint8:
                self.fail("frames", "uint8 [N, H, W, 3] or JPEG bytes", f"dtype {x.dtype}")
            if x.ndim != 4 or x.shape[1:] != (h, w, 3) or x.shape[0] == 0:
                self.fail("frames", f"uint8 [N>0, {h}, {w}, 3]", f"shape {x.shape}")
            return np.array([encode_jpeg(f) for f in x], dtype=object)
        if len(x) == 0:
            self.fail("frames", "at least one frame", "none")
        for i, b in enumerate(x):
            if not isinstance(b, bytes):
                self.fail("frames", "JPEG bytes", f"{type(b).__name__} at frame {i}")
            with Image.open(io.BytesIO(b)) as im:  # reads the header only
                if im.format != "JPEG" or (im.height, im.width) != (h, w):
                    self.fail("frames", f"{w}x{h} JPEG", f"{im.width}x{im.height} {im.format}")
        return np.array(list(x), dtype=object)


def make_example(
    clip_id: str,
    spec: DatasetSpec,
    *,
    audio: np.ndarray,
    frames,
    sample_rate: int,
    fps: float,
    **ground_truth,
) -> dict:
    """Validate one clip's arrays against ``spec`` and convert them to the stored form.

    Audio fields may be float32 in [-1, 1] (quantised here) or int16; ``frames`` uint8
    [N, H, W, 3] (JPEG-encoded here) or a sequence of JPEG bytes. ``ground_truth`` must hold
    exactly the fields of the spec's optional groups.
    """
    check = _Checker(clip_id)
    if int(sample_rate) != spec.sample_rate:
        check.fail("sample_rate", str(spec.sample_rate), str(sample_rate))
    if not math.isclose(float(fps), spec.fps, rel_tol=1e-6):
        check.fail("fps", str(spec.fps), str(fps))
    wanted = set(spec.fields) - {"clip_id", "audio", "frames", "sample_rate", "fps"}
    if set(ground_truth) != wanted:
        check.fail("ground truth", f"fields {sorted(wanted)}", f"{sorted(ground_truth)}")

    ex = {
        "clip_id": clip_id,
        "audio": check.audio("audio", audio),
        "frames": check.frames(frames, spec.frame_size),
        "sample_rate": np.int32(sample_rate),
        "fps": np.float32(fps),
    }
    for name in sorted(wanted):
        f = FIELDS[name]
        if name in AUDIO_FIELDS:
            ex[name] = check.audio(name, ground_truth[name])
        else:
            ex[name] = check.array(name, ground_truth[name], (f.dtype,), len(f.shape))
    _check_consistent(check, ex)
    return ex


def _check_consistent(check: _Checker, ex: dict):
    """Cross-field shapes: one T for all audio, one S for all per-source fields."""
    t = ex["audio"].shape[0]
    for name in ("source_images", "dry"):
        if name in ex and ex[name].shape[1] != t:
            check.fail(name, f"{t} samples (as audio)", f"shape {ex[name].shape}")
    per_source = [n for n in ex if FIELDS[n].group == "sources"]
    per_distractor = [n for n in ex if FIELDS[n].group == "distractors"]
    for names in (per_source, per_distractor):
        counts = {n: ex[n].shape[0] for n in names}
        if len(set(counts.values())) > 1:
            check.fail(names[0], "one count along axis 0 for " + ", ".join(names), str(counts))


def example_from_clip(clip: Clip, clip_id: str, spec: DatasetSpec) -> dict:
    """A rendered ``Clip`` -> stored example (validated; audio quantised, frames JPEG)."""
    gt = {n: getattr(clip, n) for n in spec.fields if FIELDS[n].group != "core"}
    return make_example(
        clip_id, spec, audio=clip.audio, frames=clip.frames,
        sample_rate=clip.sample_rate, fps=clip.fps, **gt,
    )
