"""Channel-layout sanity: what a container declares (Opus channel mapping family, mp4 SA3D
box) refuses a contradicting --layout unless forced, and the content check flags every
recording converted with a wrong layout and none converted with the right one.

The corpus: room scenes rendered with pyroomacoustics (several sources and directions,
reverberation, diffuse ambient noise) and plane waves in noise, each written in ambiX, in
FuMa and in YT-360's 6-channel order, each converted through the real CLIs with the right
and with a wrong layout."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from test_cli_errors import one_error_line, tool

from spatialav import ambisonics, geometry
from spatialav.data.convert import build, channels, layout_check, media
from spatialav.data.convert import calibration as cal
from spatialav.synth import render, room, scene

SR, FPS_IN, HW_IN = 24000, 25.0, (48, 96)
SECONDS = 2.0
YT360_MAP = ("X", "Y", "W", "0", "Z", "0")
needs_libopus = pytest.mark.skipif("libopus" not in av.codecs_available,
                                   reason="this PyAV build has no libopus encoder")


# --- the corpus ----------------------------------------------------------------------------


def plane_wave_in_noise(az_deg: float, el_deg: float, snr_db: float, seed: int) -> np.ndarray:
    """A white-noise plane wave with diffuse pink ambient noise ``snr_db`` below it (W), at
    peak 0.5 (FuMa's W at +3 dB must not clip)."""
    n = int(SECONDS * SR)
    foa = cal.plane_wave(n, np.radians(az_deg), np.radians(el_deg), seed=seed)
    noise = room.ambient_noise(np.random.default_rng(seed + 1), n, "pink")
    return peak_half(foa + noise * 0.25 * 10 ** (-snr_db / 20))


def peak_half(foa) -> np.ndarray:
    return (foa / np.abs(foa).max() * 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def scenes() -> dict[str, np.ndarray]:
    """name -> ambiX [T, 4] at SR, peak 0.5."""
    cfg = scene.SceneConfig(duration=SECONDS, frame_size=(16, 32), ambient_prob=0.5)
    out = {}
    for seed in (0, 3, 5, 11):
        clip = render.render_clip(seed, cfg)
        out[f"room{seed}"] = clip.audio
    out["wave_left_up"] = plane_wave_in_noise(100.0, 30.0, 20.0, seed=1)
    out["wave_back_down"] = plane_wave_in_noise(-145.0, -50.0, 10.0, seed=2)
    return {k: peak_half(v) for k, v in out.items()}


def to_fuma(foa):
    return np.asarray(ambisonics.ambix_to_fuma(foa), np.float32)


def to_yt360(foa):
    """ambiX -> the 6 channels in YT-360's decoded order, the unused slots silent."""
    ambix = dict(zip("WYZX", foa.T, strict=True))
    zero = np.zeros(len(foa), np.float32)
    return np.stack([ambix[c] if c != "0" else zero for c in YT360_MAP], axis=1)


def frames(num: int) -> np.ndarray:
    return cal.blob_frames(num, *HW_IN, 0.0, 0.0)


def write_folder(root: Path, scenes, encode) -> Path:
    root.mkdir(parents=True)
    for name, foa in scenes.items():
        cal.write_video(root / f"{name}.mp4", frames(int(SECONDS * FPS_IN)), FPS_IN,
                        audio=encode(foa), sample_rate=SR)
    return root


def write_yt360(root: Path, scenes) -> Path:
    for sub in ("video", "audio"):
        (root / sub).mkdir(parents=True)
    for name, foa in scenes.items():
        cal.write_video(root / "video" / f"{name}-0.mp4", frames(int(SECONDS * FPS_IN)),
                        FPS_IN)
        cal.write_audio(root / "audio" / f"{name}-0.m4a", to_yt360(foa), SR)
    (root / "train.txt").write_text("".join(f"{name}\n" for name in scenes))
    (root / "test.txt").write_text("")
    return root


def convert(cli: str, root: Path, out: Path, *layouts: str, force=False) -> dict:
    """Run a converter CLI; the report entries by item id."""
    argv = ["--root", str(root), "--out", str(out), "--workers", "1", "--frame-size", "16",
            "32", "--validation-fraction", "0", "--quiet"]
    argv += [a for lay in layouts for a in ("--layout", lay)]
    argv += ["--force-layout"] if force else []
    report = build.load_report(Path(tool(cli).main(argv)))
    return {e["item"]: e for e in report["items"]}


def flagged(entry: dict) -> bool:
    """The layout check's verdict in a report entry, consistent with its warning."""
    check = entry["layout_check"]
    assert check["checked"], entry
    warned = any(w.startswith("implausible as ambiX") for w in entry.get("warnings", []))
    assert warned == (not check["plausible"]), entry
    return not check["plausible"]


CASES = {  # corpus -> (CLI, its correct layouts, a wrong one)
    "ambix": ("convert_folder", ("ambix",), ("fuma",)),
    "fuma": ("convert_folder", ("fuma",), ("ambix",)),
    # ambiX plus head-locked stereo (Opus family 2 with 6 channels) is the likely mix-up.
    "yt360": ("convert_yt360", ("yt360", "ambix"), ("W,Y,Z,X,0,0", "ambix")),
}


@pytest.mark.parametrize("corpus", CASES)
def test_wrong_layouts_are_flagged_and_right_ones_are_not(corpus, scenes, tmp_path):
    if corpus == "yt360":
        root = write_yt360(tmp_path / "in", scenes)
    else:
        root = write_folder(tmp_path / "in", scenes, {"ambix": np.asarray, "fuma": to_fuma}[corpus])
    cli, right, wrong = CASES[corpus]
    good = convert(cli, root, tmp_path / "right", *right)
    bad = convert(cli, root, tmp_path / "wrong", *wrong)
    assert len(good) == len(bad) == len(scenes)
    assert all(e["status"] == "written" for e in [*good.values(), *bad.values()])
    assert [i for i, e in good.items() if flagged(e)] == []
    assert [i for i, e in bad.items() if not flagged(e)] == []
    if corpus != "yt360":  # a FuMa / SN3D mix-up moves the dipoles' energy by 3 dB
        shift = [bad[i]["layout_check"]["directional_db"]
                 - good[i]["layout_check"]["directional_db"] for i in good]
        np.testing.assert_allclose(shift, 3.01 if corpus == "fuma" else -3.01, atol=0.05)


# --- the statistics against references ------------------------------------------------------


def test_plane_wave_dipoles_are_its_direction_cosines_squared():
    az, el = np.radians(40.0), np.radians(-25.0)
    stats = layout_check.measure(cal.plane_wave(SR, az, el), SR)
    u = geometry.direction_to_vector(az, el)
    want = dict(zip("XYZ", 10 * np.log10(u**2), strict=True))
    assert stats["directional_db"] == pytest.approx(0.0, abs=0.01)
    assert stats["dipole_db"] == pytest.approx(want, abs=0.01)


def test_a_diffuse_field_puts_a_third_of_w_in_each_dipole():
    noise = np.random.default_rng(0).standard_normal((4 * SR, 4))
    stats = layout_check.measure(room.diffuse_field(noise), SR)
    assert stats["directional_db"] == pytest.approx(0.0, abs=0.1)
    for db in stats["dipole_db"].values():
        assert db == pytest.approx(10 * np.log10(1 / 3), abs=0.15)


def test_rotated_fields_stay_plausible(scenes):
    """A rotation of a valid field is a valid field, whatever the rotation."""
    rng = np.random.default_rng(4)
    for foa in scenes.values():
        rotated = ambisonics.rotate(foa, geometry.random_rotation(rng))
        entry, warnings = layout_check.check(rotated, SR)
        assert entry["plausible"] and warnings == [], entry


def test_too_little_sound_is_not_judged():
    for audio in (np.zeros((SR, 4), np.float32), cal.plane_wave(500, 0.3, 0.1)):
        entry, warnings = layout_check.check(audio, SR)
        assert entry["checked"] is False and "plausible" not in entry and warnings == []


# --- what containers declare ---------------------------------------------------------------


def write_opus(path: Path, foa: np.ndarray, family: int, *, video: bool = False) -> None:
    """ambiX [T, 4] as 48 kHz Opus with ``mapping_family`` (libopus), optionally beside a
    video stream (an mp4 the folder converter reads)."""
    x = np.ascontiguousarray(np.repeat(foa, 2, axis=0).T)  # 24 kHz -> 48 kHz, enough here
    with av.open(str(path), "w") as c:
        packets = []
        if video:
            v = c.add_stream("libx264", rate=Fraction(FPS_IN))
            v.height, v.width, v.pix_fmt = *HW_IN, "yuv420p"
            for i, img in enumerate(frames(int(SECONDS * FPS_IN))):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                packets += v.encode(frame)
            packets += v.encode(None)
        a = c.add_stream("libopus", rate=48000, layout="4.0",
                         options={"mapping_family": str(family)})
        for i in range(0, x.shape[1], 960):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + 960]),
                                               format="fltp", layout="4.0")
            frame.sample_rate, frame.pts = 48000, i
            packets += a.encode(frame)
        packets += a.encode(None)
        for p in packets:
            c.mux(p)


def sa3d_box(channel_map, *, order=1, kind=0, ordering=0, normalisation=0) -> bytes:
    payload = struct.pack(">BBIBBI", 0, kind, order, ordering, normalisation, len(channel_map))
    payload += b"".join(struct.pack(">I", i) for i in channel_map)
    return struct.pack(">I4s", 8 + len(payload), b"SA3D") + payload


def add_sa3d(path: Path, box: bytes) -> None:
    """Put ``box`` into the first audio sample entry (mp4a) of an mp4 whose moov follows its
    mdat (FFmpeg's default), growing every box on the way; chunk offsets stay valid."""
    data = bytearray(path.read_bytes())
    grown, start, end = [], 0, len(data)
    for name in (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"mp4a"):
        while True:
            size, kind = struct.unpack(">I4s", data[start:start + 8])
            if kind == name and (name != b"trak" or b"mp4a" in data[start:start + size]):
                break
            start += size
        grown.append(start)
        start, end = start + {b"stsd": 16, b"mp4a": 36}.get(name, 8), start + size
    data[end:end] = box
    for at in grown:
        data[at:at + 4] = struct.pack(">I", struct.unpack(">I", data[at:at + 4])[0] + len(box))
    path.write_bytes(bytes(data))


def read_declared(path: Path) -> layout_check.Declared | None:
    with av.open(str(path)) as c:
        return layout_check.declared_layout(str(path), c.streams.audio[0])


@needs_libopus
@pytest.mark.parametrize("ext", ["mp4", "webm", "mkv", "ogg"])
def test_opus_family_2_declares_ambix_in_every_container(ext, tmp_path):
    foa = cal.plane_wave(SR // 2, 0.5, 0.2)
    write_opus(tmp_path / f"a.{ext}", foa, 2)
    declared = read_declared(tmp_path / f"a.{ext}")
    assert declared.layout == channels.parse_layout("ambix")
    assert "family 2" in declared.source
    write_opus(tmp_path / f"b.{ext}", foa, 255)  # discrete channels: nothing declared
    assert read_declared(tmp_path / f"b.{ext}") is None


def test_opus_heads():
    def head(channels, family):
        return b"OpusHead" + bytes([1, channels]) + bytes(8) + bytes([family]) + bytes(8)

    assert layout_check.opus_declaration(head(4, 3)).layout.spec == "W,Y,Z,X"
    # Family 2 with non-diegetic stereo after the four components: the stereo is dropped.
    assert layout_check.opus_declaration(head(6, 2)).layout.spec == "W,Y,Z,X,0,0"
    for family in (0, 1, 255):  # mono/stereo, Vorbis surround order, discrete
        assert layout_check.opus_declaration(head(4, family)) is None
    assert layout_check.opus_declaration(b"not an opus head at all") is None


def test_sa3d_boxes():
    def parse(box):
        return layout_check.sa3d_declaration(box[8:])

    assert parse(sa3d_box([0, 1, 2, 3])).layout == channels.parse_layout("ambix")
    # channel_map[k] is the track channel of ACN component k: the RFC's W, X, Y, Z example.
    assert parse(sa3d_box([0, 2, 3, 1])).layout.spec == "W,X,Y,Z"
    assert parse(sa3d_box([0, 1, 2, 3, 4, 5], kind=0x80)).layout.spec == "W,Y,Z,X,0,0"
    assert parse(sa3d_box([0, 1, 2, 3], normalisation=1)) is None  # not SN3D
    assert parse(sa3d_box([0, 1, 2, 3], ordering=1)) is None  # not ACN
    assert parse(sa3d_box([0, 1, 1, 3])) is None  # not a permutation


def test_an_sa3d_box_in_an_mp4_is_read_from_the_file(tmp_path):
    path = tmp_path / "a.mp4"
    cal.write_video(path, frames(10), FPS_IN, audio=cal.plane_wave(SR // 2, 0.5, 0.2),
                    sample_rate=SR)
    assert read_declared(path) is None
    add_sa3d(path, sa3d_box([0, 2, 3, 1]))
    # FFmpeg parses the box too, but its AAC decoder then reports 4.0: the file is read.
    assert read_declared(path).layout.spec == "W,X,Y,Z"


@needs_libopus
def test_a_contradicting_layout_is_refused_unless_forced(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    foa = plane_wave_in_noise(60.0, 20.0, 20.0, seed=3)
    write_opus(root / "opus.mp4", foa, 2, video=True)
    cal.write_video(root / "sa3d.mp4", frames(int(SECONDS * FPS_IN)), FPS_IN, audio=foa,
                    sample_rate=SR)
    add_sa3d(root / "sa3d.mp4", sa3d_box([0, 1, 2, 3]))
    cal.write_video(root / "plain.mp4", frames(int(SECONDS * FPS_IN)), FPS_IN, audio=foa,
                    sample_rate=SR)
    refused = convert("convert_folder", root, tmp_path / "fuma", "fuma")
    assert {i: e.get("kind") for i, e in refused.items()} == {
        "opus": "layout", "sa3d": "layout", "plain": None}
    reason = refused["opus"]["reason"]
    assert reason.startswith(str(root / "opus.mp4")) and "family 2" in reason
    assert "as ambix" in reason and "is fuma" in reason and "--layout ambix" in reason
    assert "SA3D" in refused["sa3d"]["reason"] and "--force-layout" in refused["sa3d"]["reason"]
    assert flagged(refused["plain"])  # declared nothing: the content check still sees it

    forced = convert("convert_folder", root, tmp_path / "forced", "fuma", force=True)
    for name in ("opus", "sa3d"):
        assert forced[name]["status"] == "written" and flagged(forced[name])
        assert any("--force-layout" in w for w in forced[name]["warnings"])

    agreed = convert("convert_folder", root, tmp_path / "ambix", "ambix")
    assert all(e["status"] == "written" and not flagged(e) and "warnings" not in e
               for e in agreed.values()), agreed


@needs_libopus
def test_all_files_refused_is_an_error(tmp_path, capsys):
    root = tmp_path / "in"
    root.mkdir()
    write_opus(root / "opus.mp4", plane_wave_in_noise(0.0, 0.0, 20.0, seed=4), 2, video=True)
    with pytest.raises(SystemExit) as exit_:
        convert("convert_folder", root, tmp_path / "out", "fuma")
    assert exit_.value.code == 1
    assert "layout 1" in one_error_line(capsys.readouterr().err)


def test_to_ambix_refuses_a_contradiction_and_warns_when_forced():
    foa = cal.plane_wave(SR, 0.1, 0.2)
    declared = layout_check.Declared(channels.parse_layout("ambix"), "a test")
    audio = media.Audio(foa, SR, "x.ogg", declared)
    with pytest.raises(media.SkipItem, match="declares its 4 channels as ambix") as err:
        media.to_ambix(audio, (channels.parse_layout("fuma"),))
    assert err.value.kind == "layout"
    out, warnings = media.to_ambix(audio, (channels.parse_layout("fuma"),), force_layout=True)
    assert any("--force-layout" in w for w in warnings)
    np.testing.assert_allclose(out, channels.parse_layout("fuma").to_ambix(foa))
