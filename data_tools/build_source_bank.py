"""Build the dry mono source bank committed under ``spatialav/synth/bank/``.

The synthetic 360° scene renderer places these sounds in rooms, so they must be *dry*: no
reverb, no chorus, no echo. Each of the 14 classes gets 2-3.5 s clips at 24 kHz (12 per class
by default), silence-trimmed, faded at the cut points and peak-normalised to 0.9:

- ``female_speech``, ``male_speech``: espeak-ng, short sentences in several languages, many
  voice variants (with espeak's built-in echo removed), varied pitch and speed.
- ``laughter``: espeak-ng syllables ("ha", "hee", ...) strung together with a falling pitch
  contour, decaying level and an inhale between bouts.
- ``piano``, ``guitar``, ``violin`` and part of ``bell``: short random melodies written as
  MIDI (tiny writer below) and rendered by fluidsynth from the FluidR3 GM soundfont with its
  reverb and chorus turned off.
- ``clapping``, ``telephone``, ``footsteps``, ``knock``, ``water_tap``, ``alarm``,
  ``engine`` and the rest of ``bell``: procedural numpy synthesis (generators below).

Output (one FLAC per class, int16, clips concatenated back to back): ``<class>.flac``, plus
``sources.csv`` (one row per clip: file, start and frames inside the file, class, duration,
origin with the generator parameters, licence) and ``LICENSES.md``.

Needs the Debian packages ``espeak-ng``, ``fluidsynth`` and ``fluid-soundfont-gm``::

    apt-get install -y espeak-ng fluidsynth fluid-soundfont-gm

and the Python packages numpy, scipy and soundfile. Deterministic for a given seed and tool
versions (espeak-ng 1.51, fluidsynth 2.3.1 and FluidR3_GM 3.1 made the committed bank)::

    python data_tools/build_source_bank.py [--out spatialav/synth/bank] [--seed 0] [--clips 12]
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable

import numpy as np
import soundfile as sf
from scipy import signal

RATE = 24000
CLASSES = (
    "female_speech", "male_speech", "clapping", "telephone", "laughter", "footsteps", "knock",
    "water_tap", "bell", "alarm", "engine", "piano", "guitar", "violin",
)
SF2 = pathlib.Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
MIN_S, MAX_S, PEAK = 2.0, 3.5, 0.9  # 12 clips x 14 classes fit 12 MB as FLAC
LIC_SPEECH = "espeak-ng output (unrestricted, see LICENSES.md)"
LIC_GM = "MIT (FluidR3_GM)"
LIC_PROC = "Apache-2.0"
DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "spatialav" / "synth" / "bank"

# A generator draws clip number i of its class: (rng, tools, i) -> (audio, origin, licence).
# Variants are taken round-robin by i, so every variant appears in a class of 12 clips.
Gen = Callable[[np.random.Generator, "Tools", int], tuple[np.ndarray, str, str]]


# ----------------------------------------------------------------------------- helpers


def check_tools() -> None:
    missing = [t for t in ("espeak-ng", "fluidsynth") if shutil.which(t) is None]
    if missing or not SF2.exists():
        what = ", ".join(missing + ([] if SF2.exists() else [str(SF2)]))
        raise SystemExit(
            f"build_source_bank: missing {what}.\n"
            "Install the Debian packages:\n"
            "  apt-get install -y espeak-ng fluidsynth fluid-soundfont-gm"
        )


def pick(options: list, i: int):
    return options[i % len(options)]


def secs(n_s: float) -> int:
    return int(round(n_s * RATE))


def tvec(n: int) -> np.ndarray:
    return np.arange(n) / RATE


def bandpass(x: np.ndarray, lo: float | None, hi: float | None, order: int = 2) -> np.ndarray:
    if lo and hi:
        sos = signal.butter(order, [lo, hi], "bandpass", fs=RATE, output="sos")
    elif lo:
        sos = signal.butter(order, lo, "highpass", fs=RATE, output="sos")
    else:
        sos = signal.butter(order, hi, "lowpass", fs=RATE, output="sos")
    return signal.sosfilt(sos, x)


def smooth_noise(rng: np.random.Generator, n: int, cutoff_hz: float) -> np.ndarray:
    """Slowly varying random signal with unit std (for modulation and jitter)."""
    x = bandpass(rng.standard_normal(n + RATE), None, cutoff_hz)[RATE:]  # drop filter warm-up
    return x / (x.std() + 1e-12)


def place(out: np.ndarray, x: np.ndarray, at: int) -> None:
    """Add ``x`` into ``out`` starting at sample ``at`` (clipped at the end)."""
    if at >= len(out):
        return
    m = min(len(x), len(out) - at)
    out[at : at + m] += x[:m]


def ramp(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))


def gate(n: int, on: list[tuple[float, float]], edge_s: float = 0.005) -> np.ndarray:
    """0/1 envelope that is 1 on the (start_s, stop_s) intervals, with raised-cosine edges."""
    g = np.zeros(n)
    e = max(2, secs(edge_s))
    for a, b in on:
        i, j = secs(a), min(n, secs(b))
        if j - i < 2 * e:
            continue
        g[i:j] = 1.0
        g[i : i + e] *= ramp(e)
        g[j - e : j] *= ramp(e)[::-1]
    return g


def harmonic_tone(phase: np.ndarray, amps: list[float]) -> np.ndarray:
    """Sum of harmonics k=1.. of a phase track (radians), amps[k-1] each."""
    return sum(a * np.sin((k + 1) * phase) for k, a in enumerate(amps) if a)


def square_amps(f0_max: float, top_hz: float = 9000.0) -> list[float]:
    """Band-limited square wave: odd harmonics at 1/k up to ``top_hz``."""
    kmax = max(1, int(top_hz // f0_max))
    return [1.0 / k if k % 2 else 0.0 for k in range(1, kmax + 1)]


def modal(rng: np.random.Generator, freqs, taus, amps, dur_s: float) -> np.ndarray:
    """Damped resonant modes (impact response) with random phases."""
    t = tvec(secs(dur_s))
    out = np.zeros_like(t)
    for f, tau, a in zip(freqs, taus, amps, strict=True):
        if f < RATE / 2 - 500:
            out += a * np.exp(-t / tau) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out


def finish(x: np.ndarray, floor_db: float = -45.0) -> np.ndarray:
    """Trim silence, cap at MAX_S, fade the cut points, remove DC, peak-normalise."""
    x = bandpass(np.asarray(x, np.float64), 25.0, None)  # DC / rumble; 25 Hz keeps engines
    hop = secs(0.005)
    n_fr = len(x) // hop
    env = np.sqrt(np.mean(x[: n_fr * hop].reshape(n_fr, hop) ** 2, axis=1))
    active = np.nonzero(env > env.max() * 10 ** (floor_db / 20))[0]
    start = max(0, active[0] * hop - secs(0.01))
    stop = min(len(x), (active[-1] + 1) * hop + secs(0.02))
    x = x[start:stop]
    fade_out = 0.02
    if len(x) > secs(MAX_S):  # cut inside the sound: a longer, natural-sounding release
        x, fade_out = x[: secs(MAX_S)], 0.25
    x[: secs(0.003)] *= ramp(secs(0.003))
    x[-secs(fade_out) :] *= ramp(secs(fade_out))[::-1]
    return (PEAK * x / np.abs(x).max()).astype(np.float32)


# ----------------------------------------------------------------------------- external tools


class Tools:
    """espeak-ng and fluidsynth wrappers writing into one temporary directory."""

    def __init__(self, tmp: pathlib.Path):
        self.tmp = tmp
        self.espeak_path = dry_espeak_data(tmp)

    def espeak(self, text: str, voice: str, pitch: int, speed: int) -> np.ndarray:
        wav = self.tmp / "speech.wav"
        cmd = ["espeak-ng", f"--path={self.espeak_path}", "-v", voice, "-p", str(pitch)]
        cmd += ["-s", str(speed), "-w", str(wav)]
        subprocess.run([*cmd, text], check=True, capture_output=True)
        x, sr = sf.read(wav, dtype="float64")
        g = np.gcd(sr, RATE)
        return signal.resample_poly(x, RATE // g, sr // g)  # espeak-ng speaks at 22050 Hz

    def fluidsynth(self, notes, program: int, controls=(), gain: float = 0.5) -> np.ndarray:
        """Render ``notes`` [(start_s, dur_s, key, velocity)] with GM ``program``, dry."""
        mid, wav = self.tmp / "melody.mid", self.tmp / "melody.wav"
        write_midi(mid, notes, program, controls)
        cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", str(gain)]
        cmd += ["-r", str(RATE), "-O", "float", "-T", "wav", "-F", str(wav), str(SF2), str(mid)]
        subprocess.run(cmd, check=True, capture_output=True)
        x, sr = sf.read(wav, dtype="float64", always_2d=True)
        assert sr == RATE, sr
        return x.mean(axis=1)  # GM samples are stereo; the bank is mono


def dry_espeak_data(tmp: pathlib.Path) -> pathlib.Path:
    """An overlay of espeak-ng's data directory whose voice variants have no built-in echo.

    Several variants (f2-f5, m2, ...) add a 10-15 % echo at ~130 ms, which would be baked-in
    room sound; everything else is symlinked to the installed data."""
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    data = pathlib.Path(out.stdout.split("Data at:")[1].strip())
    root = tmp / "espeak" / "espeak-ng-data"
    (root / "voices" / "!v").mkdir(parents=True)
    for p in data.iterdir():
        if p.name != "voices":
            (root / p.name).symlink_to(p)
    for p in (data / "voices").iterdir():
        if p.name != "!v":
            (root / "voices" / p.name).symlink_to(p)
    for p in (data / "voices" / "!v").iterdir():
        lines = p.read_text(encoding="latin-1").splitlines(keepends=True)
        dry = "".join(ln for ln in lines if not ln.lstrip().startswith("echo"))
        (root / "voices" / "!v" / p.name).write_text(dry, encoding="latin-1")
    return root.parent


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def write_midi(path, notes, program: int, controls=(), tail_s: float = 2.0) -> None:
    """Minimal type-0 MIDI file on channel 0 at 960 ticks per second (120 bpm, 480 ppq).

    ``controls`` are (time_s, controller, value) events, e.g. CC11 expression swells."""
    tps = 960
    events = [(0, 0, bytes([0xC0, program]))]
    for t, cc, v in controls:
        events.append((round(t * tps), 0, bytes([0xB0, cc, int(v)])))
    for start, dur, key, vel in notes:
        events.append((round(start * tps), 2, bytes([0x90, key, int(vel)])))
        events.append((round((start + dur) * tps), 1, bytes([0x80, key, 0])))
    events.sort(key=lambda e: (e[0], e[1]))  # note-offs before note-ons at the same tick
    track, last = bytearray(b"\x00\xff\x51\x03\x07\xa1\x20"), 0  # tempo 500000 us/beat
    for tick, _, msg in events:
        track += _vlq(tick - last) + msg
        last = tick
    track += _vlq(round(tail_s * tps)) + b"\xff\x2f\x00"  # end of track after the release
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480)
    pathlib.Path(path).write_bytes(header + b"MTrk" + struct.pack(">I", len(track)) + track)


# ----------------------------------------------------------------------------- speech

SENTENCES = {
    "en-us": [
        "Could you pass me the salt, please?", "The train leaves at seven tonight.",
        "I think we should wait a little longer.", "Have you seen my keys anywhere?",
        "The weather is lovely this morning.", "Let's meet by the fountain at noon.",
    ],
    "en-gb-x-rp": [
        "Shall we have a cup of tea?", "The library closes at half past five.",
        "Mind the gap between the train and the platform.", "I'll ring you back in a minute.",
    ],
    "de": [
        "Wie spät ist es eigentlich?", "Ich habe heute keine Zeit.",
        "Der Zug hat zehn Minuten Verspätung.", "Kannst du mir bitte helfen?",
    ],
    "fr-be": [
        "Je voudrais un café, s'il vous plaît.", "Il fait très beau aujourd'hui.",
        "Nous partons demain matin.", "Où se trouve la gare?",
    ],
    "es": [
        "¿Dónde está la estación de tren?", "Mañana vamos a la playa.",
        "Me gusta mucho esta canción.", "Hace mucho calor hoy.",
    ],
    "it": [
        "Andiamo a mangiare una pizza.", "Che bella giornata oggi!", "Dove hai messo le chiavi?",
    ],
    "nl": ["Het regent al de hele dag.", "Zullen we straks gaan fietsen?",
           "De koffie is nog warm."],
    "pt": ["Bom dia, tudo bem com você?", "Vamos ao cinema esta noite.",
           "O jantar está pronto."],
    "sv": ["Vi ses i morgon bitti.", "Kaffet är klart nu.", "Var ligger närmaste apotek?"],
    "pl": ["Dzień dobry, jak się masz?", "Pociąg odjeżdża o ósmej."],
}
SENTENCE_LIST = [(lang, text) for lang, texts in SENTENCES.items() for text in texts]
# Language codes: espeak-ng 1.51 ignores the variant's pitch under "en-gb" and "fr-fr" (female
# variants come out at ~110 Hz), so British English and French use "en-gb-x-rp" and "fr-be".
# Variants: no "tone" EQ ones (anika, steph*, m8 sound muffled, centroid ~300 Hz).
FEMALE_VOICES = ["f1", "f2", "f3", "f4", "f5", "Annie", "Andrea", "belinda", "linda", "aunty"]
MALE_VOICES = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "antonio", "sandro", "travis", "victor"]


def _speech(rng: np.random.Generator, tools: Tools, i: int, voices, pitch_range) -> tuple:
    lang, text = SENTENCE_LIST[rng.integers(len(SENTENCE_LIST))]  # uniform over sentences
    voice = f"{lang}+{pick(voices, i)}"
    pitch, speed = int(rng.integers(*pitch_range)), int(rng.integers(135, 185))
    x = tools.espeak(text, voice, pitch, speed)
    return x, f"espeak-ng voice={voice} pitch={pitch} speed={speed} text={text!r}", LIC_SPEECH


def female_speech(rng, tools, i):
    return _speech(rng, tools, i, FEMALE_VOICES, (45, 80))


def male_speech(rng, tools, i):
    return _speech(rng, tools, i, MALE_VOICES, (15, 50))


def laughter(rng, tools, i):
    female = i % 2 == 0
    variant = str(rng.choice(FEMALE_VOICES if female else MALE_VOICES))
    syl = str(rng.choice(["ha", "hah", "he", "hee", "ho", "heh"]))
    p0 = int(rng.integers(60, 95) if female else rng.integers(35, 75))
    # espeak-ng at 280-330 wpm gives 0.11-0.25 s syllables: laughter's short voiced bursts
    # (above ~350 wpm its speed-up clips the vowels to ~70 ms).
    speed, gap = int(rng.integers(280, 330)), rng.uniform(0.19, 0.25)
    out, at = np.zeros(secs(5.0)), secs(0.02)
    bouts = pick([1, 2], i // 2)
    for b in range(bouts):
        n_syl = int(rng.integers(9, 14) if bouts == 1 else rng.integers(4, 9))
        for j in range(n_syl):
            # Laughs start high and loud, then fall in pitch and level and slow down.
            p = int(np.clip(p0 - j * rng.uniform(2, 6) + rng.normal(0, 4), 0, 99))
            s = tools.espeak(syl, f"en-us+{variant}", p, speed)
            a = np.abs(s) > 1e-3
            s = s[np.argmax(a) : len(a) - np.argmax(a[::-1])]
            place(out, s * (1.0 - 0.6 * j / n_syl) * rng.uniform(0.8, 1.0), at)
            at += secs(gap * (1 + 0.4 * (j / n_syl) ** 2) * rng.uniform(0.85, 1.15))
        if b + 1 < bouts:  # breathy inhale between bouts
            n = secs(rng.uniform(0.25, 0.4))
            inhale = bandpass(rng.standard_normal(n), 800, 5000) * np.hanning(n) * 0.05
            place(out, inhale, at + secs(0.1))
            at += n + secs(0.25)
    origin = f"espeak-ng syllables voice=en-us+{variant} syl={syl!r} pitch0={p0} speed={speed}"
    return out[: at + secs(0.4)], origin + f" bouts={bouts}", LIC_SPEECH


# ----------------------------------------------------------------------------- instruments

SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10],
          "pentatonic": [0, 2, 4, 7, 9]}


def scale_keys(rng, lo: int, hi: int) -> tuple[list[int], str]:
    name = str(rng.choice(list(SCALES)))
    root = int(rng.integers(0, 12))
    keys = [k for k in range(lo, hi + 1) if (k - root) % 12 in SCALES[name]]
    return keys, f"{name}@{root}"


def melody(rng, keys: list[int], n: int, beat: float, durs=(0.5, 1, 1, 2), max_s=2.6) -> list:
    """A random walk over a scale, mostly by step; returns (start, dur, key, vel) notes.

    Stops after ``n`` notes or ``max_s`` seconds, leaving room for the release in the clip."""
    i, t, notes = int(rng.integers(len(keys) // 4, 3 * len(keys) // 4)), 0.0, []
    for _ in range(n):
        d = min(float(rng.choice(durs)) * beat, max_s - t)
        if d < 0.1:
            break
        notes.append((t, d, keys[i], int(rng.integers(65, 105))))
        i = int(np.clip(i + rng.choice([-2, -1, -1, 1, 1, 2, 0, 3, -3]), 0, len(keys) - 1))
        t += d
    return notes


def piano(rng, tools, i):
    program = pick([0, 0, 1], i)
    keys, scale = scale_keys(rng, 60, 84)
    beat = 60 / rng.uniform(80, 140)
    notes = melody(rng, keys, int(rng.integers(5, 10)), beat)
    end = notes[-1][0] + notes[-1][1]
    if rng.random() < 0.6:  # left hand: root-fifth bass notes under the melody
        root = keys[0] - 12
        for t in np.arange(0, end, 2 * beat):
            for k in (root, root + 7):
                notes.append((t, 2 * beat, k, int(rng.integers(50, 75))))
    return tools.fluidsynth(notes, program), f"GM program={program} scale={scale}", LIC_GM


GUITAR_CHORDS = {"C": [48, 52, 55, 60, 64], "G": [43, 47, 50, 55, 59, 67], "D": [50, 57, 62, 66],
                 "Am": [45, 52, 57, 60, 64], "Em": [40, 47, 52, 55, 59, 64],
                 "E": [40, 47, 52, 56, 59, 64], "A": [45, 52, 57, 61, 64],
                 "F": [41, 48, 53, 57, 60, 65], "Dm": [50, 57, 62, 65]}


def guitar(rng, tools, i):
    program = pick([24, 25, 24, 25, 26, 27], i)
    style = pick(["strum", "arpeggio", "melody"], i)
    beat = 60 / rng.uniform(80, 130)
    notes: list[tuple] = []
    if style == "melody":
        keys, scale = scale_keys(rng, 52, 76)
        notes = melody(rng, keys, int(rng.integers(5, 10)), beat, durs=(0.5, 0.5, 1, 1, 2))
        style += f" scale={scale}"
    else:
        chords, t = [], 0.0
        while t < 2.2:  # leave ~1 s of the last chord ringing
            c = str(rng.choice(list(GUITAR_CHORDS)))
            shape = GUITAR_CHORDS[c]
            chords.append(c)
            if style == "strum":  # down / up strums, strings 8-25 ms apart
                for s in range(int(rng.integers(2, 4))):
                    order = shape if s % 2 == 0 else shape[::-1]
                    step = rng.uniform(0.008, 0.025)
                    vel = int(rng.integers(70, 110)) - 15 * (s % 2)
                    for j, k in enumerate(order):
                        notes.append((t + j * step, beat * 1.1, k, vel))
                    t += beat
            else:  # picked arpeggio: bass then upper strings, left ringing
                for j in [0, 2, 3, 4, 3, 2][: len(shape) + 1]:
                    k = shape[min(j, len(shape) - 1)]
                    notes.append((t, 3 * beat, k, int(rng.integers(65, 100))))
                    t += beat / 2
        style += " chords=" + "-".join(chords)
    return tools.fluidsynth(notes, program), f"GM program={program} {style}", LIC_GM


def violin(rng, tools, i):
    program = pick([40, 40, 110], i)
    keys, scale = scale_keys(rng, 57, 88)
    beat = 60 / rng.uniform(70, 120)
    notes = melody(rng, keys, int(rng.integers(3, 8)), beat, durs=(0.5, 1, 1, 1.5, 2))
    notes = [(s, d + 0.03, k, v) for s, d, k, v in notes]  # slight overlap: legato bowing
    end = notes[-1][0] + notes[-1][1]
    # Bowing swell: expression (CC11) rises over the first note and falls at the end.
    ctl = [(t, 11, 70 + 57 * min(1.0, t / 0.3, (end - t) / 0.4)) for t in np.arange(0, end, 0.05)]
    ctl = [(t, c, max(0, v)) for t, c, v in ctl]
    return tools.fluidsynth(notes, program, ctl), f"GM program={program} scale={scale}", LIC_GM


def bell(rng, tools, i):
    kind = pick(["gm14", "church", "gm9", "handbell", "gm112", "doorbell", "bicycle"], i)
    if kind.startswith("gm"):  # tubular bells, glockenspiel, tinkle bell
        program = int(kind[2:])
        lo, hi = {14: (60, 77), 9: (79, 96), 112: (72, 84)}[program]
        keys, scale = scale_keys(rng, lo, hi)
        n = int(rng.integers(2, 6)) if program == 14 else int(rng.integers(4, 9))
        notes = melody(rng, keys, n, 60 / rng.uniform(60, 120), durs=(1, 1, 2))
        return tools.fluidsynth(notes, program), f"GM program={program} scale={scale}", LIC_GM
    # Procedural bells: inharmonic partials with long, frequency-dependent decays.
    if kind == "church":  # hum, prime, tierce, quint, nominal, ... (minor-third bell)
        f0, ratios, tau0, hits = rng.uniform(250, 550), [0.5, 1, 1.2, 1.5, 2, 2.5, 3, 4.2], 2.0, 2
    elif kind == "handbell":
        f0, ratios, tau0, hits = rng.uniform(500, 1100), [1, 3.0, 4.2, 5.4], 1.2, 3
    elif kind == "doorbell":  # ding-dong: two struck bars a third apart
        f0, ratios, tau0, hits = rng.uniform(600, 900), [1, 2.76, 5.4], 1.0, 2
    else:  # bicycle bell: small and bright; each ring is a fast trill of strikes
        f0, ratios, tau0, hits = rng.uniform(2000, 3200), [1, 1.47, 2.09, 2.56], 0.5, 2
    out, t = np.zeros(secs(4.5)), 0.0
    for h in range(hits):
        f = f0 * (0.8 if kind == "doorbell" and h % 2 else 1.0)
        ratios_h = np.asarray(ratios) * (1 + rng.normal(0, 0.003, len(ratios)))
        amps = [rng.uniform(0.3, 1.0) / (1 + 0.3 * k) for k in range(len(ratios))]
        taus = [tau0 * rng.uniform(0.7, 1.3) / r**0.6 for r in ratios_h]
        strike = modal(rng, f * ratios_h, taus, amps, 3.0)
        if kind == "bicycle":
            step = rng.uniform(0.06, 0.08)
            for j in range(int(rng.integers(6, 12))):
                place(out, strike * rng.uniform(0.6, 1.0), secs(t + j * step))
            t += rng.uniform(0.8, 1.2)
        else:
            place(out, strike * rng.uniform(0.7, 1.0), secs(t))
            t += rng.uniform(0.6, 1.4)
    return out, f"procedural bell kind={kind} f0={f0:.0f}Hz partials={ratios}", LIC_PROC


# ----------------------------------------------------------------------------- procedural


def alarm(rng, tools, i):
    kind = pick(["t3", "clock", "hilo", "wail", "yelp", "buzzer", "backup"], i)
    dur = rng.uniform(2.2, 3.4)
    n = secs(dur)
    t = tvec(n)
    if kind in ("wail", "yelp"):  # siren sweeps
        lo, hi = rng.uniform(500, 800), rng.uniform(1300, 1800)
        rate = rng.uniform(0.25, 0.4) if kind == "wail" else rng.uniform(2.5, 4.0)
        f = lo + (hi - lo) * (0.5 - 0.5 * np.cos(2 * np.pi * rate * t))
        x = harmonic_tone(2 * np.pi * np.cumsum(f) / RATE, square_amps(hi, 6000))
        x *= gate(n, [(0, dur)], 0.05)
        origin = f"procedural alarm kind={kind} sweep={lo:.0f}-{hi:.0f}Hz rate={rate:.2f}Hz"
        return x, origin, LIC_PROC
    if kind == "t3":  # smoke alarm: three 0.5 s beeps of a ~3 kHz piezo
        f, on, amps = rng.uniform(2900, 3300), [(0, 0.5), (1, 1.5), (2, 2.5)], [1, 0.3, 0.15]
    elif kind == "clock":  # beep-beep-beep-beep, pause, repeat
        f = rng.uniform(2000, 4000)
        amps = square_amps(f)
        on = [(g * 0.9 + b * 0.13, g * 0.9 + b * 0.13 + 0.07) for g in range(3) for b in range(4)]
    elif kind == "hilo":  # two-tone emergency alarm
        f1 = rng.uniform(440, 700)
        half = rng.uniform(0.35, 0.6)
        f = np.where((t // half) % 2 == 0, f1, f1 * rng.uniform(1.25, 1.45))
        x = harmonic_tone(2 * np.pi * np.cumsum(f) / RATE, square_amps(f.max(), 6000))
        return x * gate(n, [(0, dur)], 0.02), f"procedural alarm kind=hilo f={f1:.0f}Hz", LIC_PROC
    elif kind == "buzzer":
        f, amps = rng.uniform(180, 400), square_amps(400, 6000)
        p = rng.uniform(0.5, 0.9)
        on = [(i * p, i * p + 0.6 * p) for i in range(int(dur / p) + 1)]
    else:  # reversing vehicle beeper
        f, amps = rng.uniform(950, 1250), [1, 0.2, 0.1]
        on = [(i, i + 0.5) for i in range(3)]
    n = secs(on[-1][1] + 0.05)  # beep patterns set their own length
    x = harmonic_tone(2 * np.pi * f * tvec(n), amps) * gate(n, on)
    return x, f"procedural alarm kind={kind} f={f:.0f}Hz", LIC_PROC


def telephone(rng, tools, i):
    kind = pick(["uk", "bell", "trill", "us", "bell", "trill"], i)
    cadence = pick(["uk", "us"], i // 3) if kind in ("bell", "trill") else kind
    gap = rng.uniform(0.9, 1.4)  # ring-to-ring gap shortened from 2 s / 4 s to fit the clip
    if cadence == "uk":  # 0.4 on, 0.2 off, 0.4 on, gap, repeat
        on = [(0, 0.4), (0.6, 1.0), (1.0 + gap, 1.4 + gap), (1.6 + gap, 2.0 + gap)]
    else:  # one 2 s ring (the US cadence), optionally with the start of the next
        on = [(0, 2.0)] + ([(2.0 + gap, 3.45)] if gap < 1.15 else [])
    n = secs(on[-1][1] + 0.6)
    t = tvec(n)
    if kind in ("uk", "us"):  # dual-tone ring signal
        f1, f2 = (400.0, 450.0) if kind == "uk" else (440.0, 480.0)
        x = (np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f2 * t)) * gate(n, on, 0.01)
        return x, f"procedural telephone dual-tone {f1:.0f}+{f2:.0f}Hz cadence={cadence}", LIC_PROC
    if kind == "trill":  # electronic ringer: two tones alternating at ~20 Hz
        fa, rate = rng.uniform(900, 1300), rng.uniform(15, 25)
        f = np.where((t * rate) % 1 < 0.5, fa, fa * rng.uniform(1.2, 1.4))
        x = harmonic_tone(2 * np.pi * np.cumsum(f) / RATE, [1, 0, 0.3, 0, 0.15])
        x *= gate(n, on, 0.01)
        origin = f"procedural telephone trill {fa:.0f}Hz rate={rate:.0f}Hz cadence={cadence}"
        return x, origin, LIC_PROC
    # Electromechanical bell: a clapper hits two gongs alternately at ~20 Hz.
    f0, rate = rng.uniform(900, 1300), rng.uniform(18, 22)
    gongs = [modal(rng, f * np.array([1, 2.76, 5.4]), [0.35, 0.15, 0.06], [1, 0.5, 0.25], 0.8)
             for f in (f0, f0 * rng.uniform(1.15, 1.35))]
    x = np.zeros(n)
    for a, b in on:
        for j, s in enumerate(np.arange(a, b, 1 / (2 * rate))):
            hit = gongs[j % 2] * rng.uniform(0.7, 1.0)
            hit[: secs(0.002)] += bandpass(rng.standard_normal(secs(0.002)), 2000, None) * 0.3
            place(x, hit, secs(s))
    origin = f"procedural telephone bell gongs={f0:.0f}Hz rate={rate:.0f}Hz cadence={cadence}"
    return x, origin, LIC_PROC


def one_clap(rng, fc: float, q: float) -> np.ndarray:
    n = secs(0.08)
    env = np.minimum(1.0, tvec(n) / rng.uniform(0.0003, 0.001)) * np.exp(
        -tvec(n) / rng.uniform(0.005, 0.012)
    )
    x = bandpass(rng.standard_normal(n), 300, 8000) * env
    b, a = signal.iirpeak(fc, q, fs=RATE)  # air pocket between the palms resonates
    return 0.4 * x + signal.lfilter(b, a, x)


def clapping(rng, tools, i):
    people = 1 if i % 3 else int(rng.integers(3, 8))  # one person, or a small group
    dur = rng.uniform(2.0, 3.2)
    out = np.zeros(secs(dur + 0.3))
    for _ in range(people):
        rate = rng.uniform(2.5, 5.0) if people == 1 else rng.uniform(3.0, 6.0)
        fc, q, gain = rng.uniform(800, 2200), rng.uniform(2, 6), rng.uniform(0.5, 1.0)
        t = rng.uniform(0.0, 0.3)
        while t < dur:
            clap = one_clap(rng, fc * rng.uniform(0.92, 1.08), q)
            place(out, clap * gain * rng.uniform(0.7, 1.0), secs(t))
            t += rng.uniform(0.93, 1.07) / rate
    return out, f"procedural clapping people={people}", LIC_PROC


def footsteps(rng, tools, i):
    surface = pick(["wood", "tile", "concrete", "carpet", "gravel"], i)
    interval = rng.uniform(0.45, 0.65) if rng.random() < 0.8 else rng.uniform(0.3, 0.38)
    dur = rng.uniform(2.2, 3.2)
    out = np.zeros(secs(dur + 0.5))
    f_mode = rng.uniform(110, 220)

    def impact(amp: float) -> np.ndarray:
        n = secs(0.15)
        noise = rng.standard_normal(n)
        if surface == "gravel":  # many small grain crunches
            x = np.zeros(n)
            for _ in range(int(rng.integers(25, 50))):
                g = secs(rng.uniform(0.001, 0.003))
                grain = bandpass(rng.standard_normal(g), 1500, 8000) * np.hanning(g)
                place(x, grain * rng.uniform(0.2, 1.0), secs(rng.exponential(0.03)))
            return x * amp
        lo, hi, tau = {"wood": (60, 2500, 0.012), "tile": (600, 9000, 0.006),
                       "concrete": (150, 5000, 0.009), "carpet": (40, 700, 0.02)}[surface]
        env = np.exp(-tvec(n) / tau) * np.minimum(1.0, tvec(n) / 0.001)
        x = bandpass(noise, lo, hi) * env
        if surface == "wood":  # floorboards ring a little
            x += modal(rng, [f_mode, f_mode * 2.3], [0.04, 0.02], [0.5, 0.2], 0.15)
        return x * amp

    t, step = rng.uniform(0.02, 0.15), 0
    while t < dur:
        amp = (1.0 if step % 2 else rng.uniform(0.75, 0.9)) * rng.uniform(0.85, 1.0)
        place(out, impact(amp), secs(t))  # heel
        place(out, impact(amp * rng.uniform(0.3, 0.6)), secs(t + rng.uniform(0.04, 0.09)))  # toe
        t += interval * rng.uniform(0.95, 1.05)
        step += 1
    return out, f"procedural footsteps surface={surface} interval={interval:.2f}s", LIC_PROC


def knock(rng, tools, i):
    surface = pick(["wood door", "hollow door", "table", "metal door"], i)
    # Lowest mode range (Hz) and its decay (s); metal rings much longer than wood.
    (lo, hi), tau1 = {"wood door": ((90, 180), 0.05), "hollow door": ((150, 300), 0.04),
                      "table": ((250, 500), 0.03), "metal door": ((300, 700), 0.25)}[surface]
    f1 = rng.uniform(lo, hi)
    ratios = np.array([1.0, 1.58, 2.24, 2.92, 3.7, 5.1]) * (1 + rng.normal(0, 0.02, 6))
    amps = rng.uniform(0.3, 1.0, 6) / np.arange(1, 7) ** 0.5
    taus = tau1 / ratios**0.7

    def hit(v: float) -> np.ndarray:
        x = modal(rng, f1 * ratios, taus, amps * v ** (1 + 0.3 * np.arange(6)), 0.6)
        click = bandpass(rng.standard_normal(secs(0.002)), 2000, None) * 0.3 * v  # knuckle
        x[: len(click)] += click
        return x

    if rng.random() < 0.25:  # "shave and a haircut"
        onsets, pattern = [0, 0.25, 0.375, 0.5, 0.75, 1.25, 1.5], "shave-and-a-haircut"
        onsets = [o * rng.uniform(1.0, 1.3) for o in onsets]
    else:
        onsets, t, pattern = [], 0.0, "groups"
        for _ in range(int(rng.integers(2, 4))):
            for _ in range(int(rng.integers(2, 4))):
                onsets.append(t)
                t += rng.uniform(0.13, 0.25)
            t += rng.uniform(0.4, 0.8)
    out = np.zeros(secs(onsets[-1] + 1.0))
    for o in onsets:
        place(out, hit(rng.uniform(0.6, 1.0)), secs(o))
    return out, f"procedural knock surface={surface} f1={f1:.0f}Hz pattern={pattern}", LIC_PROC


def water_tap(rng, tools, i):
    kind = pick(["running", "filling", "running", "splash"], i)
    dur = rng.uniform(2.2, 3.4)
    n = secs(dur)
    t = tvec(n)
    lo, hi = rng.uniform(300, 700), rng.uniform(4000, 8000)
    bed = bandpass(rng.standard_normal(n), lo, hi) * (1 + 0.3 * smooth_noise(rng, n, 6.0))
    # Bubbles: short rising sine chirps (Minnaert resonances) at random times.
    bubbles = np.zeros(n + secs(0.1))
    rate = {"running": rng.uniform(60, 150), "filling": rng.uniform(60, 120),
            "splash": rng.uniform(150, 300)}[kind]
    for at in np.sort(rng.uniform(0, dur, rng.poisson(rate * dur))):
        f0 = np.exp(rng.uniform(np.log(500), np.log(3500)))
        if kind == "filling":  # the air column shortens as the glass fills: pitch rises
            f0 *= 0.6 + 0.9 * at / dur
        tau = rng.uniform(0.004, 0.015)
        tb = tvec(secs(6 * tau))
        f = f0 * (1 + rng.uniform(0.1, 0.5) * tb / tau)
        b = np.sin(2 * np.pi * np.cumsum(f) / RATE) * np.exp(-tb / tau)
        place(bubbles, b * rng.lognormal(0, 0.5), secs(at))
    mix = rng.uniform(0.5, 1.5)
    x = bed / bed.std() + mix * bubbles[:n] / (bubbles.std() + 1e-12)
    x *= np.minimum(1, t / rng.uniform(0.05, 0.3))  # tap opening
    x *= np.minimum(1, (dur - t) / rng.uniform(0.1, 0.3))
    origin = f"procedural water_tap kind={kind} band={lo:.0f}-{hi:.0f}Hz bubbles={rate:.0f}/s"
    return x, origin, LIC_PROC


def engine(rng, tools, i):
    kind = pick(["car idle", "car rev", "diesel truck", "motorbike", "generator"], i)
    dur = rng.uniform(2.4, 3.4)
    n = secs(dur)
    t = tvec(n)
    cyl, (lo, hi) = {"car idle": (4, (700, 950)), "car rev": (4, (800, 1000)),
                     "diesel truck": (6, (550, 750)), "motorbike": (2, (1100, 1600)),
                     "generator": (4, (1500, 1500))}[kind]
    rpm0 = rng.uniform(lo, hi)
    rpm = rpm0 * (1 + 0.01 * smooth_noise(rng, n, 2.0))
    if kind in ("car rev", "motorbike"):  # a throttle blip: up fast, down slower
        peak, at = rng.uniform(2.0, 3.5), rng.uniform(0.5, 1.2)
        rise = np.clip((t - at) / 0.35, 0, 1)
        fall = np.exp(-np.clip(t - at - 0.35, 0, None) / 0.6)
        rpm *= 1 + (peak - 1) * rise * fall
    # Engine orders: the 4-stroke cycle repeats every 2 revolutions, firing orders dominate.
    f_cycle = rpm / 120
    phase = 2 * np.pi * np.cumsum(f_cycle * (1 + 0.004 * smooth_noise(rng, n, 30.0))) / RATE
    rolloff = rng.uniform(0.8, 1.4)
    x = np.zeros(n)
    for k in range(1, int(1500 / f_cycle.max()) + 1):
        fire = k % cyl == 0
        a = (k / cyl) ** -rolloff if fire else rng.uniform(0.05, 0.25) / (k / cyl + 1)
        a *= rng.uniform(0.5, 1.0)
        flutter = 1 + 0.2 * smooth_noise(rng, n, 4.0)
        x += a * flutter * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    # Combustion / exhaust noise pulsing at the firing rate.
    pulses = (0.5 + 0.5 * np.cos(cyl * phase)) ** 4
    noise = bandpass(rng.standard_normal(n), 40, rng.uniform(600, 1200)) * pulses
    x = x / x.std() + rng.uniform(0.2, 0.5) * noise / noise.std()
    if kind == "generator":  # alternator hum at mains frequency
        x += 0.3 * harmonic_tone(2 * np.pi * 50 * t, [1, 0.3, 0.5, 0.1, 0.2])
    x *= np.minimum(1, t / 0.15) * np.minimum(1, (dur - t) / 0.3)
    return x, f"procedural engine kind={kind} cylinders={cyl} rpm={rpm0:.0f}", LIC_PROC


GENERATORS: dict[str, Gen] = {c: globals()[c] for c in CLASSES}

# ----------------------------------------------------------------------------- driver

LICENSES_MD = """\
# Licences of the source bank

Every clip's origin and licence is listed in `sources.csv`. Built by
`data_tools/build_source_bank.py` (Apache-2.0, like the rest of spatialav).

## espeak-ng output (`female_speech`, `male_speech`, `laughter`)

Rendered with espeak-ng (GPL-3.0-or-later). The GPL covers the program and its voice data,
not the speech it synthesises from our own short texts; the clips may be used and
redistributed freely. (espeak-ng: https://github.com/espeak-ng/espeak-ng)

## FluidR3_GM soundfont renderings (`piano`, `guitar`, `violin`, part of `bell`)

Rendered with fluidsynth (LGPL-2.1, the tool only) from the FluidR3_GM soundfont as packaged
by Debian (`fluid-soundfont-gm`), released by its author under the MIT licence:

    Copyright (c) 2000-2002, 2008 Frank Wen
    Copyright (c) 2008 Toby Smithe

    Permission is hereby granted, free of charge, to any person obtaining a copy of this
    software and associated documentation files (the "Software"), to deal in the Software
    without restriction, including without limitation the rights to use, copy, modify,
    merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
    permit persons to whom the Software is furnished to do so, subject to the following
    conditions:

    The above copyright notice and this permission notice shall be included in all copies
    or substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
    INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
    PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT
    HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
    CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE
    OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

## Procedural clips (all other classes, part of `bell`)

Synthesised in numpy by the build script; Apache-2.0, as the project.
"""


def build_class(name: str, rng: np.random.Generator, tools: Tools, n_clips: int) -> list[tuple]:
    clips: list[tuple] = []
    for _ in range(50 * n_clips):
        x, origin, lic = GENERATORS[name](rng, tools, len(clips))
        x = finish(x)
        if len(x) >= secs(MIN_S):  # too short after trimming: draw again
            clips.append((x, origin, lic))
        if len(clips) == n_clips:
            return clips
    raise RuntimeError(f"{name}: could not draw {n_clips} clips of {MIN_S}-{MAX_S} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clips", type=int, default=12, help="clips per class")
    args = ap.parse_args(argv)
    check_tools()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tools = Tools(pathlib.Path(tmp))
        for ci, name in enumerate(CLASSES):
            rng = np.random.default_rng([args.seed, ci])  # per class: classes build independently
            clips = build_class(name, rng, tools, args.clips)
            audio = np.concatenate([c[0] for c in clips])
            fname = f"{name}.flac"
            sf.write(args.out / fname, (audio * 32767).round().astype(np.int16), RATE,
                     format="FLAC", subtype="PCM_16", compression_level=1.0)
            start = 0
            for x, origin, lic in clips:
                rows.append([fname, start, len(x), name, f"{len(x) / RATE:.3f}", origin, lic])
                start += len(x)
            print(f"{name:14s} {len(clips)} clips {start / RATE:6.1f} s")
    with open(args.out / "sources.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "start", "frames", "class", "duration_s", "origin", "licence"])
        w.writerows(rows)
    (args.out / "LICENSES.md").write_text(LICENSES_MD, encoding="utf-8")
    total = sum(p.stat().st_size for p in args.out.iterdir()) / 1e6
    print(f"wrote {len(rows)} clips to {args.out} ({total:.2f} MB)")


if __name__ == "__main__":
    main()
