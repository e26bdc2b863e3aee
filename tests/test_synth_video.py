"""Equirect video: sprite placement (seam, poles), compositing, boxes, panorama, animation."""

import numpy as np
import pytest

from spatialav import geometry as g
from spatialav.synth import SceneConfig, sample_scene, sprites, video
from spatialav.synth.source_bank import CLASSES

H, W = 128, 256
PIXEL = 2 * np.pi / W
DEG = np.pi / 180


def _disc(size):
    """A round sprite: its coverage is symmetric about the look direction."""
    c = sprites.Canvas(size)
    c.paint(sprites.circle((c.x, c.y), 0.0, 0.0, 0.8), np.array([1.0, 0.2, 0.2]))
    return c.rgba[None].astype(np.float32)


def _place(sprite, az, el, fov, background=None):
    bg = np.zeros((H, W, 3), np.uint8) if background is None else background
    smap = video.sprite_map(az, el, fov, sprite.shape[1], H, W)
    frames, (cover,) = video.composite(bg, [(smap, sprite)])
    full = np.zeros(H * W)
    full[smap.pixels] = cover[0]
    return frames[0], full.reshape(H, W), smap


def _centroid(cover):
    """Direction of the coverage's centre on the sphere (solid-angle weighted unit vectors)."""
    az, el = g.equirect_directions(W, H)
    u = g.direction_to_vector(az, el)
    wts = cover * np.cos(el)
    return g.vector_to_direction((u * wts[..., None]).sum((0, 1)))


@pytest.mark.parametrize(
    "az, el",
    [(0.0, 0.0), (np.pi, 0.0), (-np.pi + 0.02, 0.1), (np.pi / 2, 0.3), (-2.0, -0.4),
     (0.7, 70 * DEG), (np.pi, -70 * DEG), (-1.2, 70 * DEG)],
)
def test_sprite_centroid_is_at_its_direction(az, el):
    _, cover, _ = _place(_disc(32), az, el, 25 * DEG)
    assert cover.sum() > 20
    caz, cel = _centroid(cover)
    assert g.angular_distance(caz, cel, az, el) < PIXEL


def test_front_is_the_image_centre_and_left_is_left():
    for az, col in [(0.0, W / 2), (np.pi / 2, W / 4), (-np.pi / 2, 3 * W / 4)]:
        _, cover, _ = _place(_disc(32), az, 0.0, 20 * DEG)
        cols = np.nonzero(cover > 0.5)[1]
        assert abs(cols.mean() + 0.5 - col) < 1.0


def test_sprite_on_the_seam_wraps_and_gets_one_box():
    _, cover, smap = _place(_disc(32), np.pi, 0.0, 30 * DEG)
    cols = np.nonzero(cover > 0.5)[1]
    assert cols.min() == 0 and cols.max() == W - 1  # on both edges of the frame
    cx, cy, bw, bh = video.box_from_pixels(np.flatnonzero(cover > 0.5), H, W)
    assert min(cx, 1 - cx) < 1 / W  # centred on the seam
    width = 0.8 * 30 * DEG / (2 * np.pi)  # the disc is 80 % of the sprite's square
    assert bw == pytest.approx(width, abs=2.5 / W)
    assert cy == pytest.approx(0.5, abs=1 / H)


def test_box_from_pixels_is_circular():
    cols = np.array([W - 3, W - 2, W - 1, 0, 1, 2])
    pixels = 10 * W + cols
    cx, cy, bw, bh = video.box_from_pixels(pixels, H, W)
    assert cx == pytest.approx(0.0) and bw == pytest.approx(6 / W)
    assert cy == pytest.approx(10.5 / H) and bh == pytest.approx(1 / H)
    cx, _, bw, _ = video.box_from_pixels(10 * W + np.arange(20, 30), H, W)
    assert cx == pytest.approx(25 / W) and bw == pytest.approx(10 / W)
    assert video.box_from_pixels(np.array([], int), H, W) is None
    assert video.box_from_pixels(np.arange(W), H, W)[::2] == (0.5, 1.0)  # around a pole


def test_composite_matches_paste_perspective():
    rgba = sprites.draw_sprite("guitar", 40, 0.5, 1, style_seed=3)
    alpha = rgba[..., 3]
    rgb = np.where(alpha[..., None] > 0, rgba[..., :3] / np.maximum(alpha[..., None], 1e-6), 0)
    bg = np.full((H, W, 3), 90, np.uint8)
    for az, el in [(0.4, 0.2), (np.pi - 0.05, -0.3), (-1.0, 1.2)]:
        frame, cover, _ = _place(rgba[None], az, el, 28 * DEG, bg)
        ref, ref_cover = g.paste_perspective(bg, rgb * 255, az, el, 28 * DEG, alpha)
        assert np.abs(cover - ref_cover).max() < 0.05
        diff = np.abs(frame.astype(int) - ref.astype(int))
        assert diff.mean() < 0.2 and np.percentile(diff, 99.9) < 40


def test_panorama_is_seamless_deterministic_and_varied():
    spec = sample_scene(4)
    pano = video.panorama(spec, H, W).astype(float)
    assert pano.shape == (H, W, 3)
    neighbours = np.abs(np.diff(pano, axis=1)).mean(axis=(0, 2))
    seam = np.abs(pano[:, 0] - pano[:, -1]).mean()
    assert seam <= 2 * np.median(neighbours) + 1.0
    np.testing.assert_array_equal(pano, video.panorama(spec, H, W))
    assert np.abs(pano - video.panorama(sample_scene(5), H, W)).mean() > 10
    # The floor is below the horizon and the ceiling above: the image is not uniform in rows.
    assert np.abs(pano[: H // 4].mean() - pano[-H // 4 :].mean()) > 10


def test_every_class_is_drawn_distinctly():
    size = 32
    sheet = {c: sprites.draw_sprite(c, size, 0.0, 0, style_seed=1) for c in CLASSES}
    for img in sheet.values():
        assert img.shape == (size, size, 4) and img.dtype == np.float32
        assert 0.1 < img[..., 3].mean() < 0.9  # a real shape, not empty, not a full square
        assert img[..., 3][[0, -1]].max() < 0.05  # transparent margins top and bottom
    for i, a in enumerate(CLASSES):
        for b in CLASSES[i + 1 :]:
            shape = (sheet[a][..., 3] > 0.5) | (sheet[b][..., 3] > 0.5)
            assert np.abs(sheet[a] - sheet[b])[shape].mean() > 0.15, (a, b)
    # Speakers of each sex look alike across styles less than female and male differ.
    f = sprites.draw_sprite("female_speech", size, style_seed=2)
    m = sprites.draw_sprite("male_speech", size, style_seed=2)
    assert np.abs(f[..., 3] - m[..., 3]).mean() > 0.05  # different silhouettes (long hair)


@pytest.mark.parametrize("cls", CLASSES)
def test_sounding_sprites_animate(cls):
    idle = sprites.draw_sprite(cls, 32, 0.0, 0, style_seed=5)
    loud = [sprites.draw_sprite(cls, 32, 1.0, p, style_seed=5) for p in range(sprites.PHASES)]
    changed = max(np.sum(np.abs(x - idle).max(-1) > 0.2) for x in loud)
    assert changed >= 6  # visibly changed pixels of a 32 x 32 sprite


def _mouth_pixels(sprite):
    """Dark pixels in the lower middle of a face sprite: the open mouth."""
    s = sprite.shape[0]
    a = sprite[..., 3]
    rgb = sprite[..., :3] / np.maximum(a[..., None], 1e-6)
    region = np.zeros((s, s), bool)
    region[int(0.55 * s) : int(0.75 * s), int(0.3 * s) : int(0.7 * s)] = True
    return np.sum(region & (a > 0.5) & (rgb.max(-1) < 0.4))


@pytest.mark.parametrize("cls", ["female_speech", "male_speech", "laughter"])
def test_mouth_opens_with_the_speech_envelope(cls):
    fs, fps, n = 24000, 10.0, 40
    rng = np.random.default_rng(0)
    t = np.arange(int(n / fps * fs)) / fs
    speech = rng.standard_normal(len(t)) * (0.05 + np.abs(np.sin(2 * np.pi * 0.35 * t)))
    env = sprites.activity_envelope(speech, fs, fps, n)
    anim = sprites.animate(cls, 48, env, style_seed=7)
    mouth = np.array([_mouth_pixels(f) for f in anim])
    assert np.corrcoef(mouth, env)[0, 1] > 0.8


def test_activity_envelope():
    fs, fps = 24000, 10.0
    x = np.zeros(fs * 2)
    x[fs:] = np.sin(np.arange(fs) * 0.3)  # silent first second, then a tone
    env = sprites.activity_envelope(x, fs, fps, 20)
    assert np.all(env[:9] == 0) and np.all(env[11:] > 0.99)
    assert np.all((env >= 0) & (env <= 1))
    np.testing.assert_array_equal(sprites.activity_envelope(np.zeros(100), fs, fps, 3), 0)


def test_distant_objects_look_smaller():
    from spatialav.synth.render import sprite_fov

    cfg = SceneConfig()
    fovs = [sprite_fov(d, cfg) for d in (0.7, 1.5, 2.5, 5.0)]
    assert fovs == sorted(fovs, reverse=True)
    assert fovs[0] == pytest.approx(30 * DEG) and fovs[-1] == pytest.approx(16 * DEG)
