"""The dry mono source bank: short sounds in 14 classes that the scene renderer places in rooms.

The bank lives next to this module in ``bank/``: one FLAC per class (int16, 24 kHz, mono; the
clips of a class are concatenated back to back) and ``sources.csv`` with one row per clip
(file, start and frames inside the file, class, duration, origin, licence). It is built once
by ``data_tools/build_source_bank.py`` and committed; this loader needs only numpy, scipy and
soundfile. Clips are float32 in [-1, 1], peak-normalised to about 0.9.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import pathlib

import numpy as np
import soundfile as sf
from scipy import signal

CLASSES = (
    "female_speech", "male_speech", "clapping", "telephone", "laughter", "footsteps", "knock",
    "water_tap", "bell", "alarm", "engine", "piano", "guitar", "violin",
)
BANK_DIR = pathlib.Path(__file__).resolve().with_name("bank")
BANK_RATE = 24000
INDEX_FILE = "sources.csv"
_COLUMNS = ("file", "start", "frames", "class", "duration_s", "origin", "licence")


@dataclasses.dataclass(frozen=True)
class SourceClip:
    """One row of ``sources.csv``: where a clip lies in its class file and where it came from."""

    file: str
    start: int  # first sample inside ``file``
    frames: int  # length in samples at BANK_RATE
    class_name: str
    duration_s: float
    origin: str  # generator and parameters (espeak-ng voice, GM program, procedural params)
    licence: str


def class_index(name: str) -> int:
    """Index of ``name`` in CLASSES; ValueError for an unknown class."""
    try:
        return CLASSES.index(name)
    except ValueError:
        raise ValueError(f"unknown source class {name!r}; known: {', '.join(CLASSES)}") from None


def read_index(bank_dir: str | pathlib.Path | None = None) -> list[SourceClip]:
    """Parse ``sources.csv`` of the bank (default: the committed one)."""
    path = pathlib.Path(bank_dir or BANK_DIR) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"source bank index {path} not found; build it with data_tools/build_source_bank.py"
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != _COLUMNS:
            raise ValueError(f"{path}: expected columns {_COLUMNS}, got {reader.fieldnames}")
        rows = []
        for r in reader:
            class_index(r["class"])  # reject unknown classes early, naming them
            rows.append(
                SourceClip(
                    r["file"], int(r["start"]), int(r["frames"]), r["class"],
                    float(r["duration_s"]), r["origin"], r["licence"],
                )
            )
    return rows


def load_bank(
    rate: int = BANK_RATE, bank_dir: str | pathlib.Path | None = None
) -> dict[str, list[np.ndarray]]:
    """All clips by class, as float32 mono arrays at ``rate`` (resampled if not 24 kHz).

    Decoded once per (rate, bank_dir) and cached; the arrays are read-only so the cache
    cannot be changed by accident (copy a clip before editing it in place).
    """
    if int(rate) != rate or rate <= 0:
        raise ValueError(f"rate must be a positive integer, got {rate!r}")
    cached = _load(int(rate), str(pathlib.Path(bank_dir or BANK_DIR).resolve()))
    return {name: list(clips) for name, clips in cached.items()}


def load_class(name: str, rate: int = BANK_RATE) -> list[np.ndarray]:
    """The clips of one class of the committed bank; ValueError for an unknown class."""
    class_index(name)
    return load_bank(rate)[name]


@functools.lru_cache(maxsize=4)
def _load(rate: int, bank_dir: str) -> dict[str, tuple[np.ndarray, ...]]:
    clips: dict[str, list[np.ndarray]] = {name: [] for name in CLASSES}
    audio: dict[str, np.ndarray] = {}
    for row in read_index(bank_dir):
        if row.file not in audio:
            audio[row.file] = _read_audio(pathlib.Path(bank_dir) / row.file)
        data = audio[row.file]
        if row.start < 0 or row.frames <= 0 or row.start + row.frames > len(data):
            raise ValueError(
                f"{row.file}: clip [{row.start}, {row.start + row.frames}) lies outside the "
                f"file's {len(data)} samples (sources.csv disagrees with the audio)"
            )
        x = data[row.start : row.start + row.frames]
        if rate != BANK_RATE:
            g = math.gcd(rate, BANK_RATE)
            x = np.clip(signal.resample_poly(x, rate // g, BANK_RATE // g), -1.0, 1.0)
        x = np.ascontiguousarray(x, dtype=np.float32)
        x.setflags(write=False)
        clips[row.class_name].append(x)
    empty = [name for name, c in clips.items() if not c]
    if empty:
        raise ValueError(f"source bank {bank_dir} has no clips for classes {empty}")
    return {name: tuple(c) for name, c in clips.items()}


def _read_audio(path: pathlib.Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"source bank audio {path} not found (listed in {INDEX_FILE})")
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    if sr != BANK_RATE or data.shape[1] != 1:
        raise ValueError(f"{path}: expected mono {BANK_RATE} Hz, got {data.shape[1]} ch {sr} Hz")
    return data[:, 0]
