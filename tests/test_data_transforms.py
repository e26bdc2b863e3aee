"""Host-side crops / sampling and device-side rotations / views of the input pipeline."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spatialav import ambisonics as amb
from spatialav import features
from spatialav import geometry as g
from spatialav.data import transforms as tf

DEG = np.pi / 180
H, W = 32, 64
PIXEL = 2 * np.pi / W  # one pixel's angle at the equator


def _blob_frame(az, el, sigma=6 * DEG):
    """An equirect frame [H, W, 3] (float) with a bright Gaussian blob at (az, el)."""
    paz, pel = g.equirect_directions(W, H)
    d = g.angular_distance(paz, pel, az, el)
    return np.repeat(np.exp(-((d / sigma) ** 2))[..., None], 3, axis=-1).astype(np.float32)


def _argmax_direction(img):
    """Direction of the brightest pixel of [..., h, w, 3] images, or its (row, col)."""
    flat = img[..., 0].reshape(*img.shape[:-3], -1)
    return np.unravel_index(np.argmax(flat, axis=-1), img.shape[-3:-1])


def _noise(n, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.1


# --- host side ------------------------------------------------------------------------------


def test_crop_grid_aligns_labels_and_video():
    assert tf.crop_grid(10) == pytest.approx(0.1)
    assert tf.crop_grid(30) == pytest.approx(0.1)
    assert tf.crop_grid(25) == pytest.approx(0.2)
    assert tf.crop_grid(29.97) == pytest.approx(0.1)  # no common grid: label hop


def test_crop_start_stays_inside_and_on_grid():
    rng = np.random.default_rng(0)
    starts = [tf.crop_start(rng, 5.0, 2.0, 0.1) for _ in range(200)]
    assert min(starts) == pytest.approx(0.0) and max(starts) == pytest.approx(3.0)
    assert np.allclose(np.round(np.array(starts) / 0.1) * 0.1, starts)
    assert tf.crop_start(None, 5.0, 2.0, 0.1) == pytest.approx(1.5)  # centred for eval
    with pytest.raises(ValueError, match="does not fit"):
        tf.crop_start(rng, 1.0, 2.0, 0.1)


@pytest.mark.parametrize("stride", [1, 2])
def test_time_crop_keeps_modalities_aligned(stride):
    sr, fps, dur = 1000, 10.0, 4.0
    t = np.arange(int(sr * dur))
    audio = np.stack([t, t, t, t], axis=-1).astype(np.int32)  # each sample holds its index
    frames = list(range(int(dur * fps)))  # each "frame" holds its number
    labels = np.array([[f, 1, 0, 30.0, 10.0, 200.0] for f in range(40)], np.float32)
    boxes = np.array([[f, 2, 0.5, 0.5, 0.1, 0.1, 0] for f in range(40)], np.float32)
    t0, crop = 1.3, 2.0
    a, fr, lab, box = tf.time_crop(
        audio, frames, labels, boxes, t0=t0, crop_s=crop, sample_rate=sr, fps=fps,
        frame_stride=stride,
    )
    assert a.shape == (2000, 4) and a[0, 0] == 1300 and a[-1, 0] == 3299
    assert fr == list(range(13, 33, stride))  # video frame j sits at t0 + j * stride / fps
    for f in fr:  # ... and its first audio sample is the one at that time
        assert a[round((f / fps - t0) * sr), 0] == round(f / fps * sr)
    # A label row at time t lands at t - t0.
    assert lab.shape == (20, 6)
    np.testing.assert_allclose(lab[:, 0] * 0.1, labels[13:33, 0] * 0.1 - t0, atol=1e-6)
    np.testing.assert_allclose(lab[:, 3:], labels[13:33, 3:])
    # Boxes follow the kept frames.
    np.testing.assert_array_equal(box[:, 0], np.arange(len(fr)))


def test_time_crop_pads_past_the_end():
    audio = np.ones((1000, 4), np.int16)
    a, fr, lab, box = tf.time_crop(
        audio, [0, 1, 2], np.zeros((0, 6)), np.zeros((0, 7)), t0=0.8, crop_s=0.5,
        sample_rate=1000, fps=5,
    )
    assert a.shape == (500, 4) and a[:200].all() and not a[200:].any()
    assert fr == [2, 2] and lab.shape == (0, 6) and box.shape == (0, 7)


def test_sampled_rotations_are_uniform_and_proper():
    rng = np.random.default_rng(0)
    R = np.stack([tf.sample_rotation(rng, "so3") for _ in range(3000)])
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-5)
    np.testing.assert_allclose(R.mean(0), 0.0, atol=0.05)  # Haar: E[R] = 0
    # The image of the front is uniform on the sphere: its z is uniform on [-1, 1].
    assert np.var(R[:, 2, 0]) == pytest.approx(1 / 3, abs=0.03)
    yaw = np.stack([tf.sample_rotation(rng, "yaw") for _ in range(500)])
    np.testing.assert_allclose(yaw[:, 2], np.broadcast_to([0, 0, 1], (500, 3)), atol=1e-6)
    np.testing.assert_allclose(yaw.mean(0)[:2, :2], 0.0, atol=0.1)
    np.testing.assert_array_equal(tf.sample_rotation(rng, "none"), np.eye(3))
    with pytest.raises(ValueError, match="rotation mode"):
        tf.sample_rotation(rng, "pitch")


def test_rotate_labels_moves_directions_like_the_clip():
    R = g.rotation_matrix(90 * DEG)  # yaw left by 90 deg
    labels = np.array([[3, 1, 0, 0.0, 0.0, 150.0], [4, 2, 1, 10.0, 30.0, 90.0]], np.float32)
    out = tf.rotate_labels(R, labels)
    np.testing.assert_allclose(out[:, 3], [90.0, 100.0], atol=1e-4)
    np.testing.assert_allclose(out[:, 4], [0.0, 30.0], atol=1e-4)
    np.testing.assert_array_equal(out[:, [0, 1, 2, 5]], labels[:, [0, 1, 2, 5]])


@settings(max_examples=30, deadline=None)
@given(
    k=st.integers(1, 8),
    sep_deg=st.floats(0.0, 25.0),
    el_lo=st.floats(-90.0, 0.0),
    seed=st.integers(0, 2**31),
)
def test_viewpoints_respect_min_separation_and_elevations(k, sep_deg, el_lo, seed):
    el_range = (el_lo * DEG, 30 * DEG)
    dirs = tf.sample_viewpoints(np.random.default_rng(seed), k, sep_deg * DEG, el_range)
    assert dirs.shape == (k, 2) and dirs.dtype == np.float32
    assert np.all(dirs[:, 1] >= el_range[0] - 1e-5) and np.all(dirs[:, 1] <= el_range[1] + 1e-5)
    d = g.angular_distance(dirs[:, None, 0], dirs[:, None, 1], dirs[None, :, 0], dirs[None, :, 1])
    assert np.all(d[~np.eye(k, dtype=bool)] >= sep_deg * DEG - 1e-4)


def test_viewpoints_infeasible_request_raises():
    with pytest.raises(ValueError, match="could not place"):
        tf.sample_viewpoints(np.random.default_rng(0), 7, 100 * DEG)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 4),
    k=st.integers(1, 5),
    jitter_deg=st.floats(0.0, 15.0),
    seed=st.integers(0, 2**31),
)
def test_object_centred_viewpoints_land_within_the_jitter_of_an_object(n, k, jitter_deg, seed):
    rng = np.random.default_rng(seed)
    sep = 30 * DEG
    # Objects at least 2 sep + 2 jitter (<= 90 deg) apart, so every one of them can be kept:
    # a quarter turn apart on the equator (rejection-sampling 5 of them 88 deg apart on the
    # +-75 deg band could fail, which made the test flaky).
    az = rng.uniform(-np.pi, np.pi) + np.arange(n) * np.pi / 2
    centres = np.stack([np.angle(np.exp(1j * az)), np.zeros(n)], -1).astype(np.float32)
    dirs = tf.sample_viewpoints(rng, k, sep, (-45 * DEG, 45 * DEG), centres=centres,
                                jitter=jitter_deg * DEG)
    assert dirs.shape == (k, 2) and dirs.dtype == np.float32
    d = g.angular_distance(dirs[:, None, 0], dirs[:, None, 1], dirs[None, :, 0], dirs[None, :, 1])
    assert np.all(d[~np.eye(k, dtype=bool)] >= sep - 1e-4)
    if n:
        to_obj = g.angular_distance(dirs[:, None, 0], dirs[:, None, 1], centres[None, :, 0],
                                    centres[None, :, 1])  # [K, N]
        near = to_obj <= jitter_deg * DEG + 1e-4
        # min(K, N) viewpoints are on distinct objects; the rest are elsewhere (uniform).
        assert near.any(axis=1).sum() >= min(k, n)
        assert near[near.any(axis=1)].any(axis=0).sum() == min(k, n)


def test_object_centred_viewpoints_skip_objects_too_close_together():
    centres = np.array([[0.0, 0.0], [10 * DEG, 0.0], [180 * DEG, 0.0]], np.float32)
    for seed in range(20):
        dirs = tf.sample_viewpoints(np.random.default_rng(seed), 4, 60 * DEG, centres=centres,
                                    jitter=5 * DEG)
        d = g.angular_distance(dirs[:, None, 0], dirs[:, None, 1], dirs[None, :, 0],
                               dirs[None, :, 1])
        assert np.all(d[~np.eye(4, dtype=bool)] >= 60 * DEG - 1e-4)
        to_obj = g.angular_distance(dirs[:, None, 0], dirs[:, None, 1], centres[None, :, 0],
                                    centres[None, :, 1])
        near = to_obj <= 5 * DEG + 1e-4
        assert near[:, 2].sum() == 1 and near[:, :2].sum() == 1  # one of the close pair only


def test_select_objects_pads_and_reads_box_centres():
    az, el = np.array([40.0, -120.0, 170.0]) * DEG, np.array([10.0, -20.0, 45.0]) * DEG
    col, row = g.direction_to_equirect(az, el, 1, 1)
    boxes = np.array(
        [[f, 5 + o, col[o] + 0.5, row[o] + 0.5, 0.1, 0.1, o] for f in range(4) for o in range(3)],
        np.float32,
    )
    objects = tf.box_objects(boxes)
    dirs, valid, cls, idx = tf.select_objects(None, objects, 5, centre_frame=1.5)
    assert valid.tolist() == [True] * 3 + [False] * 2
    assert cls.tolist() == [5, 6, 7, -1, -1] and idx.tolist() == [0, 1, 2, -1, -1]
    np.testing.assert_allclose(g.angular_distance(dirs[:3, 0], dirs[:3, 1], az, el), 0, atol=1e-5)
    dirs, valid, _, idx = tf.select_objects(np.random.default_rng(1), objects, 2, 1.5)
    assert valid.all() and len(set(idx.tolist())) == 2
    _, valid, _, _ = tf.select_objects(None, tf.box_objects(boxes[:0]), 2, 0.0)
    assert not valid.any()


def test_detection_objects_link_tracks_and_keep_untracked_of_the_centre_frame():
    # frame, class, az, el, w, h, score, track
    dets = np.array([
        [0, 1, 0.1, 0.0, 0.2, 0.2, 0.9, 0],
        [2, 1, 0.3, 0.0, 0.2, 0.2, 0.9, 0],
        [1, 2, -1.0, 0.2, 0.2, 0.2, 0.8, -1],
        [1, 3, 2.0, -0.2, 0.2, 0.2, 0.7, -1],
        [3, 3, 2.5, -0.2, 0.2, 0.2, 0.7, -1],  # untracked, away from the centre frame
        [2, 4, 1.0, 0.5, 0.2, 0.2, 0.1, 5],  # below the score threshold
    ], np.float32)
    objects = tf.detection_objects(dets, centre_frame=1.2, min_score=0.5)
    dirs, valid, cls, idx = tf.select_objects(None, objects, 4, centre_frame=1.2)
    assert valid.tolist() == [True, True, True, False]
    assert cls.tolist() == [1, 2, 3, -1] and idx.tolist() == [0, 1, 2, -1]
    np.testing.assert_allclose(dirs[:3], [[0.3, 0.0], [-1.0, 0.2], [2.0, -0.2]], rtol=1e-6)
    assert tf.detection_objects(dets[:0], 0.0).shape == (0, 5)


def test_pad_rows():
    rows, mask = tf.pad_rows(np.ones((3, 6)), 5)
    assert rows.shape == (5, 6) and mask.tolist() == [True] * 3 + [False] * 2
    rows, mask = tf.pad_rows(np.ones((7, 6)), 5)
    assert rows.shape == (5, 6) and mask.all()


# --- device side ----------------------------------------------------------------------------


def test_int_to_float_conversions():
    a = tf.audio_to_float(np.array([[-32768, 0, 16384, 32767]], np.int16))
    np.testing.assert_allclose(a, [[-1.0, 0.0, 0.5, 32767 / 32768]])
    f = tf.frames_to_float(np.array([0, 255], np.uint8))
    assert f.dtype == jnp.float32 and f.tolist() == [0.0, 1.0]


@functools.partial(jax.jit)
def _rotate_and_locate(audio, frames, R):
    ra, rf = tf.rotate_clip(audio, frames, R)
    return features.intensity_doa(ra), rf


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_rotate_clip_keeps_each_source_at_its_pixel(seed):
    rng = np.random.default_rng(seed)
    b = 8
    az, el = rng.uniform(-np.pi, np.pi, b), np.arcsin(rng.uniform(-0.9, 0.9, b))
    audio = amb.encode(_noise(2400, seed)[None], az, el)  # [B, T, 4]
    audio = np.round(audio * 32767).astype(np.int16)
    frames = np.stack([_blob_frame(a, e) for a, e in zip(az, el, strict=True)])[:, None]
    frames = (frames * 255).astype(np.uint8)  # [B, 1, H, W, 3]
    R = np.stack([tf.sample_rotation(rng, "so3") for _ in range(b)])
    (doa_az, doa_el), rotated = _rotate_and_locate(audio, frames, R)
    r, c = _argmax_direction(np.asarray(rotated[:, 0]))
    paz, pel = g.equirect_to_direction(c, r, W, H)
    err = g.angular_distance(np.asarray(doa_az), np.asarray(doa_el), paz, pel)
    assert np.all(err < 2 * PIXEL), np.rad2deg(err)
    # And both agree with the rotated source direction itself.
    moved = tf.rotate_directions(R, np.stack([az, el], -1))
    err = g.angular_distance(np.asarray(doa_az), np.asarray(doa_el), moved[:, 0], moved[:, 1])
    assert np.all(err < 1 * DEG)


def _views(audio, frames, dirs, fov, size):
    """FOA turned to each viewpoint and its crops, by the path device_inputs takes (no R)."""
    eye = np.broadcast_to(np.eye(3, dtype=np.float32), (len(dirs), 3, 3))
    return (tf.apply_mix(audio, tf.view_mix(eye, dirs, "foa")),
            tf.view_crops(frames, eye, dirs, fov, size))


def _turned(audio, dirs):
    """Reference: each clip's FOA rotated by R(dir)ᵀ, one viewpoint at a time."""
    to_front = np.swapaxes(g.rotation_matrix(dirs[..., 0], dirs[..., 1]), -1, -2)
    return np.stack([amb.rotate(np.asarray(audio[b], np.float32), to_front[b, k])
                     for b in range(len(dirs)) for k in range(dirs.shape[1])]).reshape(
        *dirs.shape[:2], *np.shape(audio)[1:])


def test_views_put_the_viewpoint_in_front_and_at_the_crop_centre():
    rng = np.random.default_rng(3)
    b, k, size = 2, 4, 15
    dirs = np.stack([tf.sample_viewpoints(rng, k, 40 * DEG, (-60 * DEG, 60 * DEG))
                     for _ in range(b)])
    # One source per clip, at the clip's viewpoint 1; the other viewpoints look elsewhere.
    src = dirs[:, 1]
    audio = amb.encode(_noise(4800)[None], src[:, 0], src[:, 1])
    frames = np.stack([_blob_frame(*d) for d in src])[:, None].repeat(2, axis=1)  # n = 2
    view_audio, crops = jax.jit(_views, static_argnums=(3, 4))(audio, frames, dirs, 60 * DEG,
                                                                size)
    assert view_audio.shape == (b, k, 4800, 4) and crops.shape == (b, k, 2, size, size, 3)
    doa_az, doa_el = features.intensity_doa(view_audio[:, 1])
    np.testing.assert_allclose(doa_az, 0.0, atol=1 * DEG)
    np.testing.assert_allclose(doa_el, 0.0, atol=1 * DEG)
    r, c = _argmax_direction(np.asarray(crops[:, 1]))
    assert np.all(r == size // 2) and np.all(c == size // 2)
    # Other viewpoints hear the source where it is relative to them.
    doa = features.intensity_doa(view_audio[:, 0])
    R0 = g.rotation_matrix(dirs[:, 0, 0], dirs[:, 0, 1])
    expect = tf.rotate_directions(np.swapaxes(R0, 1, 2), src)
    err = g.angular_distance(np.asarray(doa[0]), np.asarray(doa[1]), expect[:, 0], expect[:, 1])
    assert np.all(err < 1 * DEG)


@pytest.mark.parametrize("fmt", ["foa", "stereo", "mono"])
def test_view_mix_is_the_rotated_turned_formatted_audio(fmt):
    rng = np.random.default_rng(5)
    b, k = 3, 4
    audio = np.round(rng.standard_normal((b, 2400, 4)) * 3000).astype(np.int16)
    R = np.stack([tf.sample_rotation(rng, "so3") for _ in range(b)])
    dirs = np.stack([tf.sample_viewpoints(rng, k, 30 * DEG, (-60 * DEG, 60 * DEG))
                     for _ in range(b)])
    frames = np.zeros((b, 1, H, W, 3), np.uint8)
    rotated, _ = tf.rotate_clip(audio, frames, R)
    want = tf.to_format(_turned(rotated, dirs), fmt, mono_pattern="cardioid")
    mix = tf.view_mix(R, dirs, fmt, "cardioid")
    assert mix.shape == (b, k, 4, amb.FORMATS[fmt])
    np.testing.assert_allclose(tf.apply_mix(audio, mix), want, atol=1e-6)


def test_view_crops_resample_once_and_more_accurately_than_rotate_then_crop():
    rng = np.random.default_rng(6)
    b, k, size, fov = 2, 3, 12, 60 * DEG
    # A smooth image of the direction vector, so the exact crop is known everywhere.
    f = lambda v: 0.5 + 0.3 * v[..., 0] * v[..., 1] + 0.2 * np.sin(3 * v[..., 2])
    paz, pel = g.equirect_directions(W, H)
    img = np.repeat(f(g.direction_to_vector(paz, pel))[..., None], 3, -1).astype(np.float32)
    frames = np.broadcast_to(img, (b, 1, H, W, 3))
    R = np.stack([tf.sample_rotation(rng, "so3") for _ in range(b)])
    dirs = np.stack([tf.sample_viewpoints(rng, k, 30 * DEG, (-60 * DEG, 60 * DEG))
                     for _ in range(b)])
    once = np.asarray(tf.view_crops(frames, R, dirs, fov, size))[:, :, 0, ..., 0]
    eye = np.broadcast_to(np.eye(3, dtype=np.float32), (b, 3, 3))
    rotated = tf.rotate_clip(np.zeros((b, 4, 4)), frames, R)[1]
    twice = np.asarray(tf.view_crops(rotated, eye, dirs, fov, size))[:, :, 0, ..., 0]
    # Exact: the crop of the frame rotated by R at ray r is the frame at Rᵀ r.
    cams = np.einsum("bji,bkjl->bkil", R, g.rotation_matrix(dirs[..., 0], dirs[..., 1]))
    rays = g._perspective_rays((size, size), fov, np)
    exact = f(np.einsum("bkij,hwj->bkhwi", cams, rays / np.linalg.norm(rays, axis=-1,
                                                                        keepdims=True)))
    err_once, err_twice = np.abs(once - exact).max(), np.abs(twice - exact).max()
    assert err_once < 0.02 and err_once < err_twice, (err_once, err_twice)


def test_object_beams_pick_out_their_source():
    s1, s2 = _noise(4800, 1), _noise(4800, 2)
    d1, d2 = (30 * DEG, 10 * DEG), (-120 * DEG, -15 * DEG)
    foa = amb.encode(s1, *d1) + amb.encode(s2, *d2)
    # Ground-truth style boxes at both sources, plus a distractor object.
    cols, rows = g.direction_to_equirect(np.array([d1[0], d2[0], 2.0]),
                                         np.array([d1[1], d2[1], 0.5]), 1, 1)
    centres = zip([3, 4, 5], cols, rows, strict=True)
    boxes = np.array([[0, c, x + 0.5, y + 0.5, 0.1, 0.1, o]
                      for o, (c, x, y) in enumerate(centres)], np.float32)
    dirs, valid, _, idx = tf.select_objects(None, tf.box_objects(boxes), 4, 0.0)
    frames = np.stack([_blob_frame(*d1) + _blob_frame(*d2)])[:, None]
    views = jax.jit(tf.object_views, static_argnums=(4, 5, 6))
    beams, crops = views(np.round(foa * 32767).astype(np.int16)[None], frames, dirs[None],
                         valid[None], "cardioid", 60 * DEG, 15)
    assert beams.shape == (1, 4, 4800) and crops.shape == (1, 4, 1, 15, 15, 3)
    corr = lambda x, y: float(np.corrcoef(x, y)[0, 1])
    for j, s_own, s_other in ((0, s1, s2), (1, s2, s1)):
        assert corr(beams[0, j], s_own) > 0.95 and corr(beams[0, j], s_other) < 0.35
    assert not np.any(beams[0, 3]) and not np.any(crops[0, 3])  # padding is zero
    r, c = _argmax_direction(np.asarray(crops[0, :2, 0]))
    assert np.all(r == 7) and np.all(c == 7)


def test_frames_of_a_clip_keep_their_order():
    frames = np.stack([np.full((H, W, 3), 50 * j, np.uint8) for j in range(3)])[None]
    audio = np.zeros((1, 10, 4), np.int16)
    _, same = jax.jit(tf.rotate_clip)(audio, frames, np.eye(3)[None])
    np.testing.assert_array_equal(same, frames)
    _, crops = jax.jit(_views, static_argnums=(3, 4))(audio, frames, np.zeros((1, 2, 2)),
                                                      60 * DEG, (4, 6))
    assert crops.shape == (1, 2, 3, 4, 6, 3)
    np.testing.assert_array_equal(crops[0, :, :, 0, 0, 0], [[0, 50, 100]] * 2)


@pytest.mark.parametrize("fmt,channels", [("foa", 4), ("stereo", 2), ("mono", 1)])
def test_to_format_takes_int16(fmt, channels):
    foa = np.round(amb.encode(_noise(100), 90 * DEG, 0.0) * 32767).astype(np.int16)[None]
    out = tf.to_format(foa, fmt)
    assert out.shape == (1, 100, channels) and out.dtype == jnp.float32
    if fmt == "stereo":  # source on the left: the left cardioid has it all
        np.testing.assert_allclose(out[..., 0], foa[..., 0] / 32768, atol=1e-4)
        np.testing.assert_allclose(out[..., 1], 0.0, atol=1e-4)
