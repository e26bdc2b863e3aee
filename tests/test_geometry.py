"""Geometry: directions, equirect mapping, rotations, resampling and gnomonic views."""

import jax
import jax.numpy as jnp
import numpy as np
import py360convert
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spatialav import geometry as g

DEG = np.pi / 180
angles = st.floats(-np.pi, np.pi, allow_nan=False)
elevations = st.floats(-np.pi / 2 + 1e-3, np.pi / 2 - 1e-3, allow_nan=False)


def test_axes_follow_design_conventions():
    np.testing.assert_allclose(g.direction_to_vector(0.0, 0.0), [1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(g.direction_to_vector(np.pi / 2, 0.0), [0, 1, 0], atol=1e-7)
    np.testing.assert_allclose(g.direction_to_vector(0.0, np.pi / 2), [0, 0, 1], atol=1e-7)


@given(angles, elevations)
def test_vector_direction_round_trip(az, el):
    az2, el2 = g.vector_to_direction(g.direction_to_vector(az, el))
    assert g.angular_distance(az, el, az2, el2) < 1e-6


def test_equirect_landmarks():
    w, h = 256, 128
    # Column W/4 is left (+90 deg), 3W/4 is right (-90 deg), the centre is the front.
    for az, col in [(np.pi / 2, w / 4), (-np.pi / 2, 3 * w / 4), (0.0, w / 2)]:
        c, r = g.direction_to_equirect(az, 0.0, w, h)
        assert c == pytest.approx(col - 0.5)
        assert r == pytest.approx(h / 2 - 0.5)
    # The top row is up.
    assert g.equirect_to_direction(0, 0, w, h)[1] == pytest.approx(np.pi / 2 - np.pi / (2 * h))


def test_pixel_direction_round_trip_at_every_centre():
    w, h = 64, 32
    az, el = g.equirect_directions(w, h)
    col, row = g.direction_to_equirect(az, el, w, h)
    cc, rr = np.meshgrid(np.arange(w), np.arange(h))
    np.testing.assert_allclose(col, cc, atol=1e-4)
    np.testing.assert_allclose(row, rr, atol=1e-4)
    assert np.all((az > -np.pi) & (az <= np.pi))


def test_columns_wrap():
    w, h = 64, 32
    az1, _ = g.equirect_to_direction(-1, 5, w, h)
    az2, _ = g.equirect_to_direction(w - 1, 5, w, h)
    assert g.angular_distance(az1, 0.0, az2, 0.0) < 1e-6


@given(st.floats(-np.pi, np.pi), st.floats(-np.pi / 2, np.pi / 2))
def test_rotation_sends_front_to_yaw_pitch(yaw, pitch):
    R = g.rotation_matrix(yaw, pitch, 0.0)
    az, el = g.vector_to_direction(R @ np.array([1.0, 0.0, 0.0]))
    assert g.angular_distance(az, el, yaw, pitch) < 1e-6


def test_rotation_is_proper_and_roll_turns_left_toward_up():
    R = g.rotation_matrix(0.3, -0.4, 0.7)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
    assert np.linalg.det(R) == pytest.approx(1.0)
    left_after_roll = g.rotation_matrix(0.0, 0.0, 0.2) @ np.array([0, 1.0, 0])
    assert left_after_roll[2] > 0 and left_after_roll[1] < 1


def test_yaw_equals_column_roll():
    rng = np.random.default_rng(0)
    w, h = 128, 64
    frame = rng.random((h, w, 3)).astype(np.float32)
    for shift in (1, 8, 37, -20):
        alpha = 2 * np.pi * shift / w
        out = g.rotate_frame(frame, g.rotation_matrix(alpha))
        np.testing.assert_allclose(out, np.roll(frame, -shift, axis=1), atol=1e-4)


def _blob(h, w, az, el, width=4 * DEG):
    """A smooth bright spot centred on (az, el)."""
    a, e = g.equirect_directions(w, h)
    d = g.angular_distance(a, e, az, el)
    return np.exp(-0.5 * (d / width) ** 2)[..., None].astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_rotate_frame_moves_content_like_rotate_vectors(seed):
    rng = np.random.default_rng(seed)
    w, h = 128, 64
    az, el = rng.uniform(-np.pi, np.pi), rng.uniform(-1.2, 1.2)
    R = g.random_rotation(rng)
    out = g.rotate_frame(_blob(h, w, az, el), R)[..., 0]
    r, c = np.unravel_index(np.argmax(out), out.shape)
    want = g.vector_to_direction(R @ g.direction_to_vector(az, el))
    got = g.equirect_to_direction(c, r, w, h)
    assert g.angular_distance(*got, *want) < 2 * 2 * np.pi / w


def test_rotate_frame_identity_numpy_and_jax_agree():
    rng = np.random.default_rng(1)
    frame = (rng.random((2, 32, 64, 3)) * 255).astype(np.uint8)
    R = g.random_rotation(rng, 2)
    out_np = g.rotate_frame(frame, R)
    out_jax = jax.jit(g.rotate_frame)(jnp.asarray(frame), jnp.asarray(R))
    assert out_np.dtype == np.uint8 and out_jax.dtype == jnp.uint8
    assert np.abs(out_np.astype(int) - np.asarray(out_jax).astype(int)).max() <= 1
    np.testing.assert_array_equal(g.rotate_frame(frame, np.eye(3)), frame)


def test_sampling_across_the_pole_is_continuous():
    # A frame that depends only on direction must be reproduced at the poles.
    w, h = 128, 64
    az, el = g.equirect_directions(w, h)
    field = g.direction_to_vector(az, el).astype(np.float32)  # smooth on the sphere
    R = g.rotation_matrix(0.3, 1.2, -0.5)
    out = g.rotate_frame(field, R)
    u = g.direction_to_vector(az, el)
    want = np.einsum("ji,hwj->hwi", R, u)  # out(u) = in(R^T u) = R^T u
    assert np.abs(out - want).max() < 0.06
    assert np.abs(out - want)[[0, -1]].max() < 0.06  # the polar rows too


def _smooth_panorama(h, w):
    a, e = g.equirect_directions(w, h)
    u = g.direction_to_vector(a, e)
    return np.stack(
        [np.sin(3 * u[..., 0]) + u[..., 2], np.cos(2 * u[..., 1]), u[..., 0] * u[..., 1]], -1
    ).astype(np.float32)


@pytest.mark.parametrize("az_deg,el_deg", [(0, 0), (60, 20), (-120, -30), (175, 10)])
def test_gnomonic_crop_matches_py360convert(az_deg, el_deg):
    h, w, size, fov = 256, 512, 48, 60 * DEG
    pano = _smooth_panorama(h, w)
    ours = g.gnomonic_crop(pano, az_deg * DEG, el_deg * DEG, fov, size)
    # py360convert: u is + right (= -azimuth), and its grid spans pixel edges, not centres.
    fov_edges = 2 * np.arctan(np.tan(fov / 2) * (size - 1) / size) / DEG
    ref = py360convert.e2p(pano, fov_edges, -az_deg, el_deg, (size, size), mode="bilinear")
    assert np.abs(ours - ref).max() < 0.02


def test_gnomonic_crop_geometry():
    h, w = 128, 256
    az, el = 100 * DEG, -25 * DEG
    crop = g.gnomonic_crop(_blob(h, w, az, el, 2 * DEG), az, el, 40 * DEG, 31)[..., 0]
    assert np.unravel_index(np.argmax(crop), crop.shape) == (15, 15)
    # Something left of the look direction appears on the left of the crop.
    crop = g.gnomonic_crop(_blob(h, w, az + 10 * DEG, el, 2 * DEG), az, el, 40 * DEG, 31)
    assert np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])[1] < 15


@pytest.mark.parametrize("az_deg,el_deg", [(0, 0), (180, 0), (-90, 70), (30, -75)])
def test_paste_then_crop_returns_the_image(az_deg, el_deg):
    rng = np.random.default_rng(2)
    h, w, size, fov = 256, 512, 24, 30 * DEG
    sprite = np.kron(rng.random((6, 6, 3)), np.ones((4, 4, 1))).astype(np.float32)
    frame, coverage = g.paste_perspective(
        np.zeros((h, w, 3), np.float32), sprite, az_deg * DEG, el_deg * DEG, fov
    )
    back = g.gnomonic_crop(frame, az_deg * DEG, el_deg * DEG, fov, size)
    inner = (slice(3, -3), slice(3, -3))  # the edges blend with the background
    assert np.abs(back[inner] - sprite[inner]).mean() < 0.05
    assert coverage.max() == pytest.approx(1.0, abs=1e-3)
    # The sprite covers about the solid angle of its field of view.
    a, e = g.equirect_directions(w, h)
    pix_sr = np.cos(e) * (2 * np.pi / w) * (np.pi / h)
    solid = 4 * np.arcsin(np.sin(fov / 2) ** 2)  # a square pyramid of apex angle fov
    assert (coverage * pix_sr).sum() == pytest.approx(solid, rel=0.05)


def test_paste_keeps_integer_dtype_and_wraps_seam():
    frame = np.zeros((64, 128, 3), np.uint8)
    sprite = np.full((8, 8, 3), 200, np.uint8)
    out, cov = g.paste_perspective(frame, sprite, np.pi, 0.0, 20 * DEG)
    assert out.dtype == np.uint8
    assert cov[:, 0].max() > 0.5 and cov[:, -1].max() > 0.5  # both sides of the seam
    assert cov[:, 60:68].max() == 0  # nothing at the front


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="channels last"):
        g.rotate_frame(np.zeros((32, 64)), np.eye(3))
    with pytest.raises(ValueError, match="R must be"):
        g.rotate_frame(np.zeros((32, 64, 3)), np.eye(4))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        g.vector_to_direction(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="channels"):
        g.paste_perspective(np.zeros((32, 64, 3)), np.zeros((4, 4, 4)), 0.0, 0.0, 0.3)
