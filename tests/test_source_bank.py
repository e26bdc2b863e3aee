"""Tests of the dry source bank: the committed audio, its index and the runtime loader."""

from __future__ import annotations

import csv
import importlib.util
import math
import pathlib
import shutil

import numpy as np
import pytest
import soundfile as sf

from spatialav.synth import source_bank as sb

RATE = sb.BANK_RATE
LICENCES = {"Apache-2.0", "MIT (FluidR3_GM)", "espeak-ng output (unrestricted, see LICENSES.md)"}


@pytest.fixture(scope="module")
def bank() -> dict[str, list[np.ndarray]]:
    return sb.load_bank()


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    with open(sb.BANK_DIR / sb.INDEX_FILE, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def spectral_centroid(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    return float((freqs * power).sum() / power.sum())


def median_f0(x: np.ndarray, lo: float = 60.0, hi: float = 400.0) -> float:
    """Median pitch of the voiced 40 ms frames, from the normalised autocorrelation."""
    n = int(0.04 * RATE)
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2]
    frames = frames - frames.mean(axis=1, keepdims=True)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    frames = frames[rms > 0.2 * rms.max()]  # loud frames: mostly vowels
    spec = np.fft.rfft(frames, 2 * n)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:, :n]
    ac /= ac[:, :1]
    a, b = int(RATE / hi), int(RATE / lo)
    f0 = []
    for r in ac[:, a:b]:
        if r.max() > 0.5:  # voiced
            # The first lag near the best one: avoids picking twice the period.
            f0.append(RATE / (a + int(np.argmax(r >= 0.9 * r.max()))))
    return float(np.median(f0))


def test_every_class_present_with_enough_clips(bank):
    assert tuple(bank) == sb.CLASSES
    assert len(sb.CLASSES) == 14
    for name, clips in bank.items():
        assert len(clips) >= 10, name


def test_clips_are_valid_mono_audio(bank):
    for name, clips in bank.items():
        for i, x in enumerate(clips):
            where = f"{name}[{i}]"
            assert x.dtype == np.float32 and x.ndim == 1, where
            assert np.all(np.isfinite(x)), where
            assert 0.5 < np.abs(x).max() <= 1.0, where  # peak-normalised to ~0.9
            assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 0.01, where  # not silent
            assert 1.0 <= len(x) / RATE <= 5.0, where


def test_clips_are_trimmed(bank):
    # Leading and trailing silence is cut: sound within 0.1 s of the start and 0.3 s of the end.
    edge_in, edge_out = int(0.1 * RATE), int(0.3 * RATE)
    for name, clips in bank.items():
        for i, x in enumerate(clips):
            assert np.abs(x[:edge_in]).max() > 3e-3, f"{name}[{i}] starts silent"
            assert np.abs(x[-edge_out:]).max() > 3e-3, f"{name}[{i}] ends silent"


def test_index_agrees_with_audio_files(bank, rows):
    assert rows and list(rows[0]) == list(sb._COLUMNS)
    by_file: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
        assert r["class"] in sb.CLASSES
        assert r["licence"] in LICENCES
        assert r["origin"]
        assert abs(float(r["duration_s"]) - int(r["frames"]) / RATE) < 1e-3
    for name, file_rows in by_file.items():
        info = sf.info(sb.BANK_DIR / name)
        assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, "PCM_16"), name
        # Clips tile the file back to back, without gaps or overlaps.
        starts = [int(r["start"]) for r in file_rows]
        ends = [int(r["start"]) + int(r["frames"]) for r in file_rows]
        assert starts == [0] + ends[:-1], name
        assert ends[-1] == info.frames, name
    for name in sb.CLASSES:
        lengths = [int(r["frames"]) for r in rows if r["class"] == name]
        assert lengths == [len(x) for x in bank[name]], name
    assert (sb.BANK_DIR / "LICENSES.md").is_file()


def test_build_script_uses_the_same_classes():
    path = pathlib.Path(__file__).resolve().parents[1] / "data_tools" / "build_source_bank.py"
    spec = importlib.util.spec_from_file_location("build_source_bank", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # defines generators only; main() is not run
    assert script.CLASSES == sb.CLASSES
    assert list(script.GENERATORS) == list(sb.CLASSES)


def test_bank_fits_size_budget():
    total = sum(p.stat().st_size for p in sb.BANK_DIR.iterdir())
    assert total <= 12e6


def test_classes_are_spectrally_distinguishable(bank):
    centroid = {name: np.mean([spectral_centroid(x) for x in xs]) for name, xs in bank.items()}
    for other in ("alarm", "bell", "clapping", "water_tap", "telephone"):
        assert centroid["engine"] < centroid[other] / 2, (other, centroid)
    assert centroid["clapping"] > centroid["male_speech"]


def test_female_voices_are_higher_than_male_voices(bank):
    female = [median_f0(x) for x in bank["female_speech"]]
    male = [median_f0(x) for x in bank["male_speech"]]
    assert 150 < np.median(female) < 350 and 60 < np.median(male) < 140, (female, male)
    assert np.median(female) > 1.6 * np.median(male)
    assert min(female) > max(male)  # not only on average: every clip is on its side


def test_resampling_to_16k(bank):
    bank16 = sb.load_bank(16000)
    for name in sb.CLASSES:
        assert len(bank16[name]) == len(bank[name])
        for x, y in zip(bank[name], bank16[name], strict=True):
            assert y.dtype == np.float32
            assert len(y) == math.ceil(len(x) * 2 / 3)
            assert np.abs(y).max() <= 1.0
    # The resampled signal keeps its level (a broken filter would change the RMS).
    x, y = bank["violin"][0], bank16["violin"][0]
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=0.05)


def test_cache_cannot_be_corrupted(bank):
    with pytest.raises(ValueError):
        bank["piano"][0][0] = 0.5  # cached arrays are read-only
    again = sb.load_bank()
    again["piano"].clear()
    assert len(sb.load_bank()["piano"]) == len(bank["piano"])


def test_unknown_class_is_a_clear_error():
    with pytest.raises(ValueError, match="kazoo"):
        sb.class_index("kazoo")
    with pytest.raises(ValueError, match="kazoo"):
        sb.load_class("kazoo")
    assert sb.class_index("violin") == 13
    assert len(sb.load_class("bell")) >= 10


def test_bad_rate_is_rejected():
    with pytest.raises(ValueError, match="rate"):
        sb.load_bank(0)


def _copy_bank(tmp_path, rows, mutate):
    for p in sb.BANK_DIR.glob("*.flac"):
        (tmp_path / p.name).symlink_to(p)
    rows = [dict(r) for r in rows]
    mutate(rows)
    with open(tmp_path / sb.INDEX_FILE, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(sb._COLUMNS))
        w.writeheader()
        w.writerows(rows)
    return tmp_path


def test_missing_bank_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="sources.csv"):
        sb.load_bank(bank_dir=tmp_path)


def test_missing_audio_names_the_file(tmp_path):
    shutil.copy(sb.BANK_DIR / sb.INDEX_FILE, tmp_path / sb.INDEX_FILE)
    with pytest.raises(FileNotFoundError, match="female_speech.flac"):
        sb.load_bank(bank_dir=tmp_path)


def test_unknown_class_in_index(tmp_path, rows):
    bad = _copy_bank(tmp_path, rows, lambda rs: rs[0].update({"class": "kazoo"}))
    with pytest.raises(ValueError, match="kazoo"):
        sb.load_bank(bank_dir=bad)


def test_index_beyond_audio_is_detected(tmp_path, rows):
    def stretch_last_piano_clip(rs):
        last = [r for r in rs if r["file"] == "piano.flac"][-1]
        last["frames"] = str(int(last["frames"]) + 1)

    bad = _copy_bank(tmp_path, rows, stretch_last_piano_clip)
    with pytest.raises(ValueError, match="piano.flac"):
        sb.load_bank(bank_dir=bad)
