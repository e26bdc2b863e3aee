"""The converters' building blocks: channel layouts, frame-rate conversion, resampling, wav and
AAC length handling, clip cutting, held-out splits, config checks."""

from __future__ import annotations

import av
import numpy as np
import pytest
import soundfile as sf

from spatialav import ambisonics
from spatialav.data.convert import build, calibration, channels, clips, media, splits


def test_named_layouts_map_to_ambix():
    x = np.arange(24, dtype=np.float32).reshape(4, 6)  # 4 samples of 6 channels 0..5
    # yt360: decoded [X, Y, W, 0, Z, 0] -> ambiX (W, Y, Z, X) = channels (2, 1, 4, 0).
    np.testing.assert_array_equal(channels.parse_layout("yt360").to_ambix(x), x[:, [2, 1, 4, 0]])
    foa = calibration.plane_wave(64, 0.7, -0.3)
    np.testing.assert_array_equal(channels.parse_layout("AMBIX").to_ambix(foa), foa)
    fuma = np.asarray(ambisonics.ambix_to_fuma(foa), np.float32)
    np.testing.assert_allclose(channels.parse_layout("fuma").to_ambix(fuma),
                               ambisonics.fuma_to_ambix(fuma), rtol=1e-6)
    np.testing.assert_allclose(channels.parse_layout("fuma").to_ambix(fuma), foa, atol=1e-6)
    assert channels.parse_layout("fuma:W,X,Y,Z") == channels.parse_layout("fuma")
    assert channels.parse_layout("yt360").dropped == (3, 5)


@pytest.mark.parametrize("bad", ["W,Y,Z", "W,Y,Z,X,X", "W,Y,Z,Q", "n3d:W,Y,Z,X"])
def test_bad_layouts_are_refused(bad):
    with pytest.raises(ValueError, match="channel layout"):
        channels.parse_layout(bad)


def test_one_layout_per_channel_count():
    with pytest.raises(ValueError, match="one channel layout per channel count"):
        build.ConvertConfig(layouts=("ambix", "fuma"))
    cfg = build.ConvertConfig(layouts=("yt360", "ambix"))
    assert channels.pick_layout(cfg.channel_layouts, 4).spec == "W,Y,Z,X"
    assert channels.pick_layout(cfg.channel_layouts, 2) is None


def test_to_ambix_refuses_bad_audio_and_flags_a_loud_dropped_channel():
    lay = (channels.parse_layout("yt360"),)
    x = np.random.default_rng(0).standard_normal((100, 6)).astype(np.float32) * 0.1
    with pytest.raises(media.SkipItem, match="expected 6 audio channels") as err:
        media.to_ambix(media.Audio(x[:, :4], 24000, "a.m4a"), lay)
    assert err.value.kind == "channels"
    nan = x.copy()
    nan[5, 1] = np.nan
    with pytest.raises(media.SkipItem, match="1 NaN/inf") as err:
        media.to_ambix(media.Audio(nan, 24000, "a.m4a"), lay)
    assert err.value.kind == "non-finite"
    _, warnings = media.to_ambix(media.Audio(x, 24000, "a.m4a"), lay)
    assert len(warnings) == 2 and "channel 3" in warnings[0]
    x[:, [3, 5]] *= 0.01  # -40 dB: an LFE slot's leakage, no warning
    assert media.to_ambix(media.Audio(x, 24000, "a.m4a"), lay)[1] == []


def test_nearest_frames_matches_brute_force():
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.uniform(0.01, 0.08, 60)) + 0.05  # irregular, starts late
    fps, n_out = 10.0, 40  # runs past the last source frame
    got = list(media.nearest_frames(((t, i) for i, t in enumerate(times)), n_out, fps))
    want = [int(np.argmin(np.abs(times - k / fps))) for k in range(n_out)]
    assert [k for k, _ in got] == list(range(n_out))
    assert [i for _, i in got] == want
    assert list(media.nearest_frames(iter([]), 5, 10.0)) == []


@pytest.mark.parametrize("rate_in, rate_out", [(48000, 24000), (24000, 16000), (44100, 24000)])
def test_resample_keeps_frequency_amplitude_and_length(rate_in, rate_out):
    t = np.arange(rate_in) / rate_in
    x = np.stack([0.5 * np.sin(2 * np.pi * 1000 * t)] * 4, axis=1).astype(np.float32)
    y = media.resample(x, rate_in, rate_out)
    assert y.shape == (rate_out, 4) and y.dtype == np.float32
    t_out = np.arange(rate_out) / rate_out
    mid = slice(rate_out // 10, -rate_out // 10)  # away from the filter's edge effects
    np.testing.assert_allclose(y[mid, 0], 0.5 * np.sin(2 * np.pi * 1000 * t_out[mid]),
                               atol=2e-3)


def test_truncated_wav_is_detected_from_its_header(tmp_path):
    x = np.zeros((4800, 4), np.float32)
    sf.write(tmp_path / "ok.wav", x, 24000, subtype="PCM_16")
    assert media.read_wav(str(tmp_path / "ok.wav")).samples.shape == (4800, 4)
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:-800])
    with pytest.raises(media.SkipItem, match="header declares 4800 sample frames, the file "
                                             "holds 4700") as err:
        media.read_wav(str(tmp_path / "cut.wav"))
    assert err.value.kind == "truncated"
    (tmp_path / "junk.wav").write_bytes(data[:30])
    with pytest.raises(media.SkipItem, match="unreadable audio") as err:
        media.read_wav(str(tmp_path / "junk.wav"))
    assert err.value.kind == "corrupt"


def test_a_destroyed_moov_atom_is_corrupt_not_a_channel_problem(tmp_path):
    calibration.write_audio(tmp_path / "a.m4a", calibration.plane_wave(4800, 0.3, 0.2), 48000)
    data = bytearray((tmp_path / "a.m4a").read_bytes())
    at = data.index(b"moov")
    size = int.from_bytes(data[at - 4:at], "big")
    data[at + 4:at - 4 + size] = bytes(size - 8)  # the index's contents zeroed, its box kept
    (tmp_path / "bad.m4a").write_bytes(data)
    with av.open(str(tmp_path / "bad.m4a")) as c:
        assert not c.streams  # FFmpeg opens it: the file looks like one with no audio stream
    for decode in (lambda p: media.decode_audio(p, [4], tolerance_s=0.1),
                   lambda p: media.decode_video(p, 10.0, (16, 32), 10)):
        with pytest.raises(media.SkipItem, match="moov atom") as err:
            decode(str(tmp_path / "bad.m4a"))
        assert err.value.kind == "corrupt"
    # A file that really has no audio stream is still a channel problem.
    calibration.write_video(tmp_path / "silent.mp4", np.zeros((5, 16, 32, 3), np.uint8), 10.0)
    with pytest.raises(media.SkipItem, match="no audio stream") as err:
        media.decode_audio(str(tmp_path / "silent.mp4"), [4], tolerance_s=0.1)
    assert err.value.kind == "channels"


def test_aac_padding_is_trimmed_and_samples_stay_aligned(tmp_path):
    sr, n = 48000, 48000 + 300  # not a whole number of 1024-sample AAC frames
    foa = calibration.plane_wave(n, 1.0, 0.2, level=0.1)
    calibration.write_audio(tmp_path / "a.m4a", foa, sr)
    audio = media.decode_audio(str(tmp_path / "a.m4a"), [4], tolerance_s=0.1)
    with av.open(str(tmp_path / "a.m4a")) as c:
        s = c.streams.audio[0]
        declared = int(round(float(s.duration * s.time_base) * sr))
        decoded = sum(f.samples for f in c.decode(s))
    assert decoded > declared  # the encoder's padding is there ...
    assert audio.samples.shape == (declared, 4)  # ... and cut
    assert abs(declared - n) < 1024
    # Sample k of the output is sample k of the input (no priming offset).
    w_in, w_out = foa[1000:9000, 0], audio.samples[1000:9000, 0]
    lags = [np.dot(w_in[50:-50], w_out[50 + lag:len(w_out) - 50 + lag]) for lag in range(-20, 21)]
    assert int(np.argmax(lags)) - 20 == 0


def test_cut_rebases_labels_and_reports_the_tail():
    sr, fps = 100, 5.0
    audio = np.arange(250 * 4, dtype=np.float32).reshape(250, 4)  # 2.5 s
    frames = [bytes([k]) for k in range(12)]  # 2.5 s at 5 fps
    labels = np.array([[0, 1, 0, 10, 0, 100], [9, 2, 1, 20, 0, 100], [10, 3, 0, 30, 0, 100],
                       [19, 4, 0, 40, 0, 100], [24, 5, 0, 50, 0, 100]], np.float32)
    out, tail = clips.cut("rec", audio, frames, sample_rate=sr, fps=fps, clip_s=1.0,
                          labels=labels)
    assert [c.clip_id for c in out] == ["rec/0000", "rec/0001"] and tail == pytest.approx(0.5)
    np.testing.assert_array_equal(out[1].audio, audio[100:200])
    assert out[1].frames == frames[5:10]
    np.testing.assert_array_equal(out[0].ground_truth["labels"][:, [0, 1]], [[0, 1], [9, 2]])
    np.testing.assert_array_equal(out[1].ground_truth["labels"][:, [0, 1]], [[0, 3], [9, 4]])
    whole, tail = clips.cut("rec", audio, frames, sample_rate=sr, fps=fps, clip_s=None)
    assert [c.clip_id for c in whole] == ["rec"] and tail == 0 and whole[0].ground_truth == {}
    assert clips.cut("rec", audio[:50], frames, sample_rate=sr, fps=fps, clip_s=1.0)[0] == []


def test_carve_is_deterministic_and_order_free():
    keys = [f"video{i}" for i in range(40)]
    held = splits.carve(keys, 0.25)
    assert len(held) == 10 and held == splits.carve(reversed(keys + keys), 0.25)
    assert splits.carve(keys, 0.0) == set()
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        splits.carve(keys, 1.0)
    # Small corpora: a fraction above 0 holds out one key of two or more, never the last one.
    assert [len(splits.carve(keys[:n], 0.1)) for n in range(5)] == [0, 0, 1, 1, 1]
    assert [len(splits.carve(keys[:n], 0.9)) for n in range(5)] == [0, 0, 1, 2, 3]
    assert splits.carve(keys[:3], 0.1) <= splits.carve(keys[:3], 0.5)


@pytest.mark.parametrize("kw", [dict(clip_s=0.25), dict(clip_s=0.3, fps=5.0), dict(clip_s=-1.0),
                                dict(items_per_shard=0)])
def test_config_refuses_clip_lengths_off_the_label_and_frame_grids(kw):
    with pytest.raises(ValueError):
        build.ConvertConfig(**kw)


def test_config_names_one_directory_per_output_format():
    a = build.ConvertConfig(clip_s=10.0)
    assert a.name == "sr24000_fps10_128x256_clip10s"
    assert build.ConvertConfig(frame_size=[64, 128]).name == "sr24000_fps10_64x128"
