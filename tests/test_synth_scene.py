"""Scene configuration and sampling: validation, determinism and the sampled geometry."""

import numpy as np
import pyroomacoustics as pra
import pytest

from spatialav import geometry as g
from spatialav.synth import SceneConfig, sample_scene
from spatialav.synth.scene import sabine_absorption


@pytest.mark.parametrize(
    "options, names",
    [
        ({"duration": 0.0}, ["duration", "positive"]),
        ({"duration": -1.0}, ["duration"]),
        ({"frame_size": (128, 200)}, ["frame_size", "2 H", "(128, 200)"]),
        ({"classes": ("piano", "banjo")}, ["classes", "banjo"]),
        ({"classes": ()}, ["classes"]),
        ({"num_sources": (0, 2)}, ["num_sources"]),
        ({"num_sources": (3, 1)}, ["num_sources", "low <= high"]),
        ({"num_sources": (1.0, 2.0)}, ["num_sources", "integers"]),
        ({"rt60": (0.05, 0.3)}, ["rt60", "shortest", "smallest room"]),
        ({"rt60": (0.0, 0.5)}, ["rt60", "anechoic"]),
        ({"rt60": (0.5, 9.0)}, ["rt60"]),
        ({"num_sources": (3, 3), "num_distractors": (3, 3), "min_separation_deg": 90.0},
         ["min_separation_deg", "6 objects"]),
        ({"room_min": (1.0, 3.0, 2.5)}, ["room_min"]),
        ({"room_max": (2.0, 2.0, 2.0)}, ["room_max"]),
        ({"distance": (2.0, 1.0)}, ["distance"]),
        ({"distance": (2.5, 4.0)}, ["distance", "smallest room"]),
        ({"min_active": 5.0}, ["min_active"]),
        ({"sprite_fov_deg": (10.0, 40.0)}, ["sprite_fov_deg", "min_separation_deg"]),
        ({"wide_elevation_deg": 95.0}, ["wide_elevation_deg"]),
        ({"ambient_prob": 1.5}, ["ambient_prob"]),
        ({"peak": 1.2}, ["peak"]),
    ],
)
def test_bad_options_raise_naming_the_option(options, names):
    with pytest.raises(ValueError) as err:
        SceneConfig(**options)
    message = str(err.value)
    for name in names:
        assert name in message
    assert "expected" in message and "got" in message


def test_defaults_and_anechoic_flag():
    assert not SceneConfig().anechoic
    assert SceneConfig(rt60=(0, 0)).anechoic
    assert SceneConfig().num_frames == 40 and SceneConfig().num_samples == 96000


def test_sabine_matches_pyroomacoustics():
    for rt60, size in [(0.3, (4.0, 5.0, 3.0)), (0.8, (12.0, 10.0, 4.0))]:
        expected, _ = pra.inverse_sabine(rt60, list(size))
        assert sabine_absorption(rt60, size) == pytest.approx(expected, rel=1e-9)


def test_sampling_is_deterministic():
    assert sample_scene(11) == sample_scene(11)
    assert sample_scene(11) != sample_scene(12)


def test_sampled_scenes_respect_the_config():
    cfg = SceneConfig(num_sources=(2, 3), num_distractors=(1, 2))
    for seed in range(25):
        spec = sample_scene(seed, cfg)
        size, listener = np.array(spec.room_size), np.array(spec.listener)
        assert np.all(size >= cfg.room_min) and np.all(size <= cfg.room_max)
        assert np.all(listener >= cfg.wall_margin) and np.all(listener <= size - cfg.wall_margin)
        assert cfg.rt60[0] <= spec.rt60 <= cfg.rt60[1]
        # The walls' absorption gives the sampled RT60 (Sabine) and is physical.
        assert sabine_absorption(spec.rt60, size) == pytest.approx(spec.absorption)
        assert 0 < spec.absorption < 1
        assert 2 <= len(spec.sources) <= 3 and 1 <= len(spec.distractors) <= 2
        objs = spec.objects
        for i, a in enumerate(objs):
            assert a.cls in cfg.classes
            assert cfg.distance[0] <= a.distance <= cfg.distance[1]
            assert abs(a.elevation) <= np.radians(cfg.wide_elevation_deg) + 1e-9
            inside = listener + a.distance * spec.room_vector(a.azimuth, a.elevation)
            assert np.all(inside > 0) and np.all(inside < size)
            for b in objs[i + 1 :]:
                sep = g.angular_distance(a.azimuth, a.elevation, b.azimuth, b.elevation)
                assert sep >= np.radians(cfg.min_separation_deg) - 1e-9
        for s in spec.sources:
            assert 0 <= s.onset and s.offset <= cfg.duration + 1e-9
            assert s.offset - s.onset >= cfg.min_active - 1e-9


def test_room_vector_follows_listener_yaw():
    spec = sample_scene(3)
    u = spec.room_vector(0.0, 0.0)  # the listener's front, in the room
    np.testing.assert_allclose(u, [np.cos(spec.listener_yaw), np.sin(spec.listener_yaw), 0],
                               atol=1e-12)


def test_elevations_are_mostly_moderate_but_not_only():
    cfg = SceneConfig()
    els = np.abs([o.elevation for s in range(150) for o in sample_scene(s, cfg).objects])
    wide = np.mean(els > np.radians(cfg.elevation_deg))
    assert 0.02 < wide < 0.2
