"""ambiX encoding, FuMa conversion, beams, sound-field rotation and input formats."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spatialav import ambisonics as amb
from spatialav import features
from spatialav import geometry as g

DEG = np.pi / 180


def _fibonacci_sphere(n=4000):
    """Nearly uniform directions, for integrals over the sphere."""
    i = np.arange(n) + 0.5
    el = np.arcsin(1 - 2 * i / n)
    az = np.pi * (1 + 5**0.5) * i
    return g.wrap_azimuth(az), el


def test_encode_is_ambix_acn_sn3d():
    foa = amb.encode(np.ones(3, np.float32), np.pi / 2, 0.0)  # from the left
    np.testing.assert_allclose(foa[0], [1, 1, 0, 0], atol=1e-7)  # W, Y, Z, X
    foa = amb.encode(np.ones(3), 0.0, np.pi / 2)  # from above
    np.testing.assert_allclose(foa[0], [1, 0, 1, 0], atol=1e-7)
    foa = amb.encode(np.ones(3), 0.0, 0.0)  # from the front
    np.testing.assert_allclose(foa[0], [1, 0, 0, 1], atol=1e-7)


@pytest.mark.parametrize(
    "pattern,rear,di_db",
    [
        ("omni", 1.0, 0.0),
        ("cardioid", 0.0, 4.77),
        ("supercardioid", np.sqrt(3) - 2, 5.72),  # a - (1 - a) with a = (sqrt3 - 1)/2
        ("max-re", np.sqrt(3) - 2, 5.72),
        ("hypercardioid", -0.5, 6.02),
        ("max-di", -0.5, 6.02),
    ],
)
def test_beam_gain_rear_gain_and_directivity(pattern, rear, di_db):
    rng = np.random.default_rng(0)
    az, el = rng.uniform(-np.pi, np.pi), rng.uniform(-1, 1)
    s = np.ones(1, np.float32)
    assert amb.beam(amb.encode(s, az, el), az, el, pattern)[0] == pytest.approx(1.0, abs=1e-6)
    back = g.vector_to_direction(-g.direction_to_vector(az, el))
    assert amb.beam(amb.encode(s, *back), az, el, pattern)[0] == pytest.approx(rear, abs=1e-6)
    # Directivity index from the beam's response over the whole sphere.
    saz, sel = _fibonacci_sphere()
    foa = amb.encode(np.ones((saz.size, 1)), saz[:, None], sel[:, None])  # [N, 1, 4]
    gains = amb.beam(foa, az, el, pattern)[:, 0]
    assert 10 * np.log10(1 / np.mean(gains**2)) == pytest.approx(di_db, abs=0.01)


def test_beams_stack_several_directions():
    foa = amb.encode(np.ones(5), 0.3, 0.1)
    az, el = np.array([0.3, 0.3 + np.pi]), np.array([0.1, -0.1])
    out = amb.beams(foa, az, el, 0.25)
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out[:, 0], [1.0, -0.5], atol=1e-6)


def test_fuma_round_trip_and_layout():
    rng = np.random.default_rng(1)
    foa = rng.standard_normal((100, 4)).astype(np.float32)
    np.testing.assert_allclose(amb.fuma_to_ambix(amb.ambix_to_fuma(foa)), foa, atol=1e-6)
    fuma = amb.ambix_to_fuma(amb.encode(np.ones(1), 0.0, 0.0))  # front: X carries it
    np.testing.assert_allclose(fuma[0], [1 / np.sqrt(2), 1, 0, 0], atol=1e-7)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_rotate_moves_a_plane_wave_to_R_u(seed):
    rng = np.random.default_rng(seed)
    az, el = rng.uniform(-np.pi, np.pi), rng.uniform(-1.4, 1.4)
    R = g.random_rotation(rng)
    rotated = amb.rotate(amb.encode(np.ones(2, np.float32), az, el), R)
    want = g.vector_to_direction(R @ g.direction_to_vector(az, el))
    np.testing.assert_allclose(rotated, amb.encode(np.ones(2), *want), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_rotating_audio_and_video_keeps_the_source_at_its_pixel(seed):
    """The joint invariant of docs/DESIGN.md §2 (Rotation): one R for both modalities."""
    rng = np.random.default_rng(seed)
    w, h = 128, 64
    az, el = rng.uniform(-np.pi, np.pi), rng.uniform(-1.2, 1.2)
    a, e = g.equirect_directions(w, h)
    frame = np.exp(-0.5 * (g.angular_distance(a, e, az, el) / (4 * DEG)) ** 2)[..., None]
    foa = amb.encode(rng.standard_normal(4800).astype(np.float32), az, el)
    R = g.random_rotation(rng)
    frame_r = g.rotate_frame(frame.astype(np.float32), R)[..., 0]
    doa = features.intensity_doa(amb.rotate(foa, R))
    r, c = np.unravel_index(np.argmax(frame_r), frame_r.shape)
    pixel_dir = g.equirect_to_direction(c, r, w, h)
    assert g.angular_distance(*pixel_dir, *doa) < 2 * 2 * np.pi / w


def test_to_format_variants():
    s = np.ones(4, np.float32)
    left, right, front = (amb.encode(s, a, 0.0) for a in (np.pi / 2, -np.pi / 2, 0.0))
    st_left = amb.to_format(left, "stereo", look=(0.0, 0.0))
    np.testing.assert_allclose(st_left[0], [1.0, 0.0], atol=1e-6)  # (left ear, right ear)
    np.testing.assert_allclose(amb.to_format(right, "stereo")[0], [0.0, 1.0], atol=1e-6)
    # Looking left, the left source is in front: both ears hear it at 0.5.
    np.testing.assert_allclose(
        amb.to_format(left, "stereo", (np.pi / 2, 0))[0], [0.5, 0.5], atol=1e-6
    )
    assert amb.to_format(front, "mono").shape == (4, 1)
    np.testing.assert_allclose(
        amb.to_format(front, "mono", (np.pi, 0), "cardioid")[0], [0.0], atol=1e-6
    )
    assert amb.to_format(front, "foa") is not None and amb.to_format(front, "foa").shape == (4, 4)


def test_jax_path_matches_numpy_under_jit():
    rng = np.random.default_rng(3)
    foa = rng.standard_normal((2, 50, 4)).astype(np.float32)
    R = g.random_rotation(rng, 2)
    np.testing.assert_allclose(
        jax.jit(amb.rotate)(jnp.asarray(foa), jnp.asarray(R)), amb.rotate(foa, R), atol=1e-5
    )
    out = jax.jit(lambda x: amb.beam(x, 0.2, 0.1, "hypercardioid"))(jnp.asarray(foa))
    np.testing.assert_allclose(out, amb.beam(foa, 0.2, 0.1, "hypercardioid"), atol=1e-5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\[\.\.\., time, 4\].*got shape \(10, 3\)"):
        amb.beam(np.zeros((10, 3)), 0.0, 0.0)
    bad = np.zeros((10, 4))
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        amb.rotate(bad, np.eye(3))
    with pytest.raises(ValueError, match="unknown beam pattern 'figure9'"):
        amb.beam(np.zeros((10, 4)), 0.0, 0.0, "figure9")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        amb.beam(np.zeros((10, 4)), 0.0, 0.0, 1.5)
    with pytest.raises(ValueError, match="unknown input format 'binaural'"):
        amb.to_format(np.zeros((10, 4)), "binaural")
    with pytest.raises(ValueError, match="R must be"):
        amb.rotate(np.zeros((10, 4)), np.eye(2))
