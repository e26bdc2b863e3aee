"""Localisation maps: a crafted audio and visual "model" on a crafted scene peaks at the
source (also across the azimuth seam), the scores and AUC (against scikit-learn), the overlay."""

import jax
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from spatialav import ambisonics, geometry
from spatialav.downstream import localisation as L

GRID = (12, 6)  # 30 deg cells


def scene(az, el, h=32, w=64, seconds=0.2, sr=24000):
    """A plane wave of noise from (az, el) and an equirect frame lit within 25 deg of it."""
    s = np.random.default_rng(0).standard_normal(int(seconds * sr)).astype(np.float32) * 0.1
    foa = ambisonics.encode(s, az, el).astype(np.float32)
    paz, pel = geometry.equirect_directions(w, h)
    lit = geometry.angular_distance(paz, pel, az, el) < np.radians(25)
    frame = np.repeat(np.where(lit[..., None], 255, 0), 3, axis=-1).astype(np.uint8)
    return foa[None], np.repeat(frame[None, None], 2, axis=1)


def crafted_embed(feats, view_frames):
    """Audio: how much the turned field points to the front (the x part of the intensity
    vectors, feature channels 4-6 = Y, Z, X); video: how bright the crop is. Cosine is 1
    where both are high, -1 where both are low."""
    iv = feats[..., 4:7]
    g = jax.numpy.clip(jax.numpy.mean(iv[..., 2], (-2, -1))
                       / jax.numpy.mean(jax.numpy.linalg.norm(iv, axis=-1), (-2, -1)), 0, 1)
    b = jax.numpy.mean(view_frames, axis=(1, 2, 3, 4)) / 255.0
    return jax.numpy.stack([g, 1 - g], -1), jax.numpy.stack([b, -(1 - b)], -1)


@pytest.mark.parametrize("az_deg, el_deg", [(105.0, 15.0), (-165.0, -15.0), (15.0, 45.0)])
def test_crafted_map_peaks_at_the_source(az_deg, el_deg, tmp_path):
    az, el = np.radians(az_deg), np.radians(el_deg)
    audio, frames = scene(az, el)
    grid = L.direction_grid(*GRID)
    sim = L.similarity_map(crafted_embed, audio, frames, grid.reshape(-1, 2), "foa",
                           np.pi / 2, 16)
    whole = L.similarity_map(crafted_embed, audio, frames, grid.reshape(-1, 2), "foa",
                             np.pi / 2, 16, chunk=grid.size // 2)  # chunks are exact
    np.testing.assert_allclose(np.asarray(sim), np.asarray(whole), atol=1e-5)
    sim = np.asarray(sim).reshape(GRID[1], GRID[0])
    scores = L.map_scores(sim, grid, [[az, el]], hit_deg=30.0)
    assert scores["peak_error_deg"] <= 22.0  # the nearest cell centre is at most ~21 deg away
    assert scores["hit"] == 1.0 and scores["auc"] > 0.9
    path = L.overlay_png(tmp_path / "m.png", frames[0, 0], sim, [[az, el]], scale=2)
    with Image.open(path) as im:
        assert im.size == (128, 64)


def test_map_scores_and_auc():
    grid = L.direction_grid(*GRID)
    sim = np.zeros(grid.shape[:2])
    sim[2, 3] = 1.0  # peak at that cell
    src = grid[2, 3][None].astype(np.float64)
    s = L.map_scores(sim, grid, src, hit_deg=30)
    assert s["peak_error_deg"] == pytest.approx(0.0, abs=1e-4) and s["hit"] == 1.0
    far = L.map_scores(sim, grid, -src, hit_deg=30)  # the opposite-ish direction
    assert far["hit"] == 0.0 and far["peak_error_deg"] > 30
    assert np.isnan(L.map_scores(sim, grid, np.zeros((0, 2)))["auc"])
    rng = np.random.default_rng(0)
    x, y = np.round(rng.random(50), 1), rng.random(50) < 0.3
    assert L.roc_auc(x, y) == pytest.approx(roc_auc_score(y, x))


def test_upsample_wraps_the_seam():
    sim = np.zeros((2, 4))
    sim[:, 0] = 1.0  # the leftmost column of cells
    up = L.upsample_map(sim, 4, 16)
    # symmetric about the cell centre (pixel 1.5), and the right edge blends into column 0
    assert up[0, 0] == pytest.approx(up[0, 3]) == pytest.approx(0.625)
    assert up[0, -1] == pytest.approx(0.375) and up[0, 8] == 0.0


def test_weighted_auc_matches_sklearn_sample_weights():
    rng = np.random.default_rng(1)
    x, y = np.round(rng.random(60), 1), rng.random(60) < 0.4
    w = rng.random(60)
    ref = roc_auc_score(y, x, sample_weight=w)
    assert L.roc_auc(x, w * y, w * ~y) == pytest.approx(ref)


def _scene_sources(rng, n):
    """Per clip 1-2 source directions, mostly within +-45 deg of the horizon (as synthesised)."""
    out = []
    for _ in range(n):
        k = rng.integers(1, 3)
        out.append(np.stack([rng.uniform(-np.pi, np.pi, k),
                             np.clip(rng.normal(0, 0.35, k), -1.3, 1.3)], -1))
    return out


def test_shuffled_auc_is_one_half_for_maps_blind_to_the_sources_and_high_when_they_follow():
    """A map that does not depend on where the clip's sound is scores 0.5 (random noise, or a
    fixed prior over directions such as 'floor and ceiling are high'), whereas the plain AUC of
    the prior map is far from 0.5; a map that peaks on the clip's sources scores near 1."""
    rng = np.random.default_rng(0)
    grid = L.direction_grid(24, 12)
    sources = _scene_sources(rng, 300)
    near = np.stack([L.near_sources(grid, s, 30.0)[1] for s in sources])
    prior = np.abs(grid[..., 1])  # high at the poles, whatever the clip
    ang = [L.near_sources(grid, s, 30.0)[0] for s in sources]
    cases = {
        "noise": rng.normal(size=(300, *grid.shape[:2])),
        "prior": np.broadcast_to(prior, (300, *grid.shape[:2])) + 1e-3 * rng.normal(
            size=(300, *grid.shape[:2])),
        "follows": np.stack([-a for a in ang]) + rng.normal(0, 5.0, (300, *grid.shape[:2])),
    }
    sauc = {k: float(np.mean(L.shuffled_aucs(m, near, grid))) for k, m in cases.items()}
    assert abs(sauc["noise"] - 0.5) < 0.02 and abs(sauc["prior"] - 0.5) < 0.03
    assert sauc["follows"] > 0.9
    plain_prior = np.mean([L.map_scores(m, grid, s)["auc"]
                           for m, s in zip(cases["prior"], sources, strict=True)])
    assert plain_prior < 0.35  # the prior map is punished by the plain AUC, not by sauc


def test_solid_angle_weighting_makes_a_random_map_score_one_half_on_uniform_sources():
    """Sources uniform on the sphere and noise maps: weighted AUC ~0.5. (Unweighted, cells
    near the poles count as much as the equator's; weighting must not bias it either.)"""
    rng = np.random.default_rng(2)
    grid = L.direction_grid(24, 12)
    v = rng.normal(size=(400, 3))
    az, el = np.arctan2(v[:, 1], v[:, 0]), np.arcsin(v[:, 2] / np.linalg.norm(v, axis=1))
    aucs = [L.map_scores(rng.normal(size=grid.shape[:2]), grid, [[a, e]])["auc"]
            for a, e in zip(az, el, strict=True)]
    assert abs(np.mean(aucs) - 0.5) < 0.02
