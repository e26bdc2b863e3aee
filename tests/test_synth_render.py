"""render_clip end to end: consistency of audio, video and labels; determinism; beams."""

import numpy as np
import pytest

from spatialav import ambisonics, features
from spatialav import geometry as g
from spatialav.data import transforms
from spatialav.synth import LABEL_HOP_S, SceneConfig, render_clip, source_bank
from spatialav.synth.source_bank import CLASSES


def _fake_bank(rate=24000, seconds=3.0):
    """Noise with its own random amplitude modulation per clip: distinct envelopes."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    bank = {}
    for c in CLASSES:
        bank[c] = []
        for _ in range(2):
            env = np.abs(np.sin(2 * np.pi * rng.uniform(0.7, 2.5) * t + rng.uniform(0, 6)))
            bank[c].append((rng.standard_normal(len(t)) * env**2).astype(np.float32))
    return bank


BANK = _fake_bank()
BUSY = SceneConfig(num_sources=(3, 3), num_distractors=(2, 2), ambient_prob=1.0)


@pytest.fixture(scope="module")
def busy_clip():
    return render_clip(7, BUSY, bank=BANK)


def test_clip_arrays_are_consistent(busy_clip):
    clip, cfg = busy_clip, BUSY
    s, t = 3, cfg.num_samples
    assert clip.audio.shape == (t, 4) and clip.audio.dtype == np.float32
    assert clip.frames.shape == (40, 128, 256, 3) and clip.frames.dtype == np.uint8
    assert clip.source_images.shape == (s, t, 4) and clip.dry.shape == (s, t)
    assert clip.activity.shape == (s, 40) and clip.activity.dtype == bool
    assert clip.distractor_class.shape == (2,) and clip.distractor_direction.shape == (2, 2)
    assert clip.sample_rate == 24000 and clip.fps == 10.0 and clip.duration == 4.0
    # Everything is scaled together to the peak.
    peaks = [np.abs(x).max() for x in (clip.audio, clip.source_images, clip.dry)]
    assert max(peaks) == pytest.approx(0.9, abs=1e-6)
    # The mixture is the sum of the images plus diffuse ambient noise at the SNR.
    ambient = clip.audio - clip.source_images.sum(0)
    snr = 10 * np.log10(np.mean(clip.source_images.sum(0)[:, 0] ** 2)
                        / np.mean(ambient[:, 0] ** 2))
    assert snr == pytest.approx(clip.room["snr_db"], abs=0.01)
    energy = np.mean(ambient**2, axis=0)
    np.testing.assert_allclose(energy[1:] / energy[0], 1 / 3, rtol=0.1)


def test_labels_follow_activity_and_ground_truth(busy_clip):
    clip = busy_clip
    rows = clip.labels
    assert len(rows) == clip.activity.sum()
    for frame, cls, track, az, el, dist in rows:
        s = int(track)
        assert clip.activity[s, int(frame)]
        assert cls == clip.source_class[s]
        np.testing.assert_allclose([az, el], np.degrees(clip.source_direction[s]), atol=1e-3)
        assert dist == pytest.approx(clip.source_distance[s] * 100, rel=1e-6)
    for s in range(clip.num_sources):
        on, off = clip.room["onset"][s], clip.room["offset"][s]
        frames = np.flatnonzero(clip.activity[s])
        assert frames.min() >= int(on / LABEL_HOP_S) and frames.max() <= int(off / LABEL_HOP_S)
        inside = np.arange(int(np.ceil(on / LABEL_HOP_S)), int(off / LABEL_HOP_S))
        assert clip.activity[s, inside].mean() > 0.8
        assert not clip.dry[s][: int((on - 0.05) * clip.sample_rate)].any()  # silent before


def test_boxes_sit_on_their_objects(busy_clip):
    clip = busy_clip
    boxes = clip.boxes
    assert np.all((boxes[:, 2] >= 0) & (boxes[:, 2] < 1) & (boxes[:, 3] > 0) & (boxes[:, 3] < 1))
    assert np.all((boxes[:, 4] > 0) & (boxes[:, 4] < 0.2) & (boxes[:, 5] > 0) & (boxes[:, 5] < 0.3))
    directions = np.concatenate([clip.source_direction, clip.distractor_direction])
    classes = np.concatenate([clip.source_class, clip.distractor_class])
    h, w = clip.frames.shape[1:3]
    for obj, (az, el) in enumerate(directions):
        mine = boxes[boxes[:, 6] == obj]
        assert len(mine) >= 35  # visible in (nearly) every frame
        assert np.all(mine[:, 1] == classes[obj])
        col, row = g.direction_to_equirect(az, el, w, h)
        # The object's direction is inside its box (circularly in x).
        dx = (mine[:, 2] - (col + 0.5) / w + 0.5) % 1.0 - 0.5
        assert np.all(np.abs(dx) <= mine[:, 4] / 2)
        assert np.all(np.abs(mine[:, 3] - (row + 0.5) / h) <= mine[:, 5] / 2)
        # The frame there shows the sprite, not the wall: it changes if the sprite is absent.
    assert len(np.unique(boxes[:, 0])) == 40


def test_same_seed_same_clip_other_seed_other_clip(busy_clip):
    again = render_clip(7, BUSY, bank=BANK)
    for name in ("audio", "frames", "source_images", "dry", "labels", "boxes", "activity"):
        np.testing.assert_array_equal(getattr(again, name), getattr(busy_clip, name))
    assert again.room == busy_clip.room
    other = render_clip(8, BUSY, bank=BANK)
    assert not np.allclose(other.source_direction, busy_clip.source_direction)
    assert np.abs(other.frames.astype(int) - busy_clip.frames).mean() > 5


@pytest.mark.parametrize("rt60", [(0.0, 0.0), (0.2, 0.3)])
def test_beam_toward_a_source_follows_its_dry_signal(rt60):
    # The dry targets are aligned with their direct sound in the mixture, so a beam's
    # zero-lag correlation with them measures how much of each source it lets through.
    # Similar levels (distances, gains) keep the test about directions, not loudness.
    cfg = SceneConfig(num_sources=(2, 3), num_distractors=(0, 0), rt60=rt60,
                      min_separation_deg=75.0, ambient_prob=0.0, distance=(1.0, 1.5),
                      source_gain_db=(0.0, 0.0))
    for seed in range(2):
        clip = render_clip(seed, cfg, bank=BANK)
        for s, (az, el) in enumerate(clip.source_direction):
            beam = ambisonics.beam(clip.audio, az, el, "hypercardioid")
            corr = [np.corrcoef(beam, d)[0, 1] for d in clip.dry]
            others = [c for o, c in enumerate(corr) if o != s]
            assert corr[s] > 0.5 and corr[s] > max(others) + 0.2, (seed, s, corr)
        if rt60 == (0.0, 0.0):  # every source image points exactly at its source
            az, el = features.intensity_doa(clip.source_images)
            err = g.angular_distance(np.asarray(az), np.asarray(el),
                                     clip.source_direction[:, 0], clip.source_direction[:, 1])
            assert np.degrees(np.max(err)) < 3.0


def test_joint_rotation_keeps_beams_on_their_sources():
    """Rotate a rendered clip's audio and video with one R: a beam toward each source's
    rotated direction still picks out that source, and its sprite moved with it."""
    cfg = SceneConfig(num_sources=(3, 3), num_distractors=(0, 0), rt60=(0.2, 0.3),
                      min_separation_deg=75.0, ambient_prob=0.0, distance=(1.0, 1.5),
                      source_gain_db=(0.0, 0.0))
    clip = render_clip(3, cfg, bank=BANK)
    rng = np.random.default_rng(0)
    for _ in range(3):
        R = g.random_rotation(rng)
        audio = ambisonics.rotate(clip.audio, R)
        frame = g.rotate_frame(clip.frames[0], R).astype(np.float32)
        moved = transforms.rotate_directions(R, clip.source_direction)
        for s, (az, el) in enumerate(moved):
            corr = [np.corrcoef(ambisonics.beam(audio, az, el, "hypercardioid"), d)[0, 1]
                    for d in clip.dry]
            others = [c for o, c in enumerate(corr) if o != s]
            assert corr[s] > 0.5 and corr[s] > max(others) + 0.2, (s, corr)
            # The video moved the same way: the rotated frame at the rotated direction shows
            # what the original frame showed at the original direction.
            before = g.sample_equirect(clip.frames[0].astype(np.float32),
                                       *clip.source_direction[s])
            after = g.sample_equirect(frame, az, el)
            assert np.abs(before - after).max() < 40


@pytest.mark.skipif(not (source_bank.BANK_DIR / source_bank.INDEX_FILE).is_file(),
                    reason="the source bank is not built")
def test_default_clip_with_the_real_bank():
    clip = render_clip(0)
    assert np.all(np.isfinite(clip.audio)) and np.abs(clip.audio).max() <= 0.9 + 1e-6
    assert clip.frames.shape == (40, 128, 256, 3)
    assert clip.labels.shape[1] == 6 and len(clip.labels) > 0 and len(clip.boxes) > 0
