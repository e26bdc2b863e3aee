"""Audio-visual localisation maps over the 360° frame, without training.

For each direction u of a grid covering the sphere (the cell centres of an ``n_az x n_el``
equirect lattice) the map holds the cosine similarity of two embeddings in the pretrained
contrastive space:

- audio: the clip's FOA turned so that u is in front, then put in the input format
  (``transforms.view_mix``; the encoder features of all directions come from one STFT of
  the clip, ``features.encoder_input_mixed``), through the audio encoder and projection;
- video: the gnomonic crop sequence toward u (the pretraining crop size and field of view).

Why rotate the FOA rather than compare one clip-level audio embedding with every crop: these
are exactly the (audio, crop) pairs every pretraining task saw (AVC views, AVSA viewpoints),
so the map asks the model the question it was trained on. For AVSA models the audio
embedding depends on the direction, so the map can only peak where the sound comes from *and*
the crop shows its source; an AVC model can still localise through the crop content alone.
For ``mono`` (omni W) the turned audio is the same for every u, and the map reduces to the
clip-audio-vs-crops variant. The projection heads are used without the AVSA context
transformers: those mix a set of K views, and the grid is not such a set.

Scores against the crop's DCASE label directions: ``peak_error_deg`` (angle from the map's
peak to the nearest labelled source), ``hit`` (that angle <= ``hit_deg``), ``auc`` and
``sauc``. Both AUCs ask whether the map is higher on the cells within ``hit_deg`` of a source
than elsewhere, with every cell weighted by its solid angle (cos elevation): unweighted, the
equirect grid counts the rows near the poles as often as the equator, though they cover a
fraction of the sphere, and floors and ceilings dominate. ``auc`` takes every other cell of
the same map as a negative. It still rewards a map that is merely high where sources usually
are (the synthetic sources lie within +-45 deg of the horizon) and punishes one that is high
on floor and ceiling crops whatever the sound; a random encoder's map is such a map (uniform
crops of floor or ceiling embed alike). ``sauc`` (shuffled AUC, as saliency benchmarks score
against centre bias: Zhang et al. 2008) takes as negatives the cells near the sources of the
*other* evaluation clips: positives and negatives then come from the same distribution of
directions, so any map that does not depend on where this clip's sound is -- random, or a
fixed prior over directions -- scores 0.5 in expectation, and only a map that follows the
clip's own sources scores above it. ``sauc`` is the headline figure.

Maps are written as heat-map overlays on the crop's middle frame (PNG, PIL), sources as
circles and the peak as a cross.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from spatialav import features, geometry
from spatialav.data import transforms as T
from spatialav.objectives import l2_normalize
from spatialav.train import evaluate


def direction_grid(n_az: int, n_el: int) -> np.ndarray:
    """Directions ``[n_el, n_az, 2]`` (az, el; radians) at the cell centres of an equirect grid."""
    az, el = geometry.equirect_directions(n_az, n_el)
    return np.stack([az, el], axis=-1).astype(np.float32)


def similarity_map(embed, audio, frames, dirs, fmt: str, fov: float, size, chunk: int = 16,
                   feature_cfg: features.FeatureConfig = features.DEFAULT):
    """Cosine similarity ``[B, G]`` of audio turned to each direction vs the crop there.

    ``embed(feats [N, frames, mels, F], view_frames [N, n, h, w, 3]) -> (a [N, P], v [N, P])``
    takes ``features.encoder_input`` features of the turned audio in ``fmt``; ``audio [B, T,
    4]`` FOA (int16 or float), ``frames [B, n, H, W, 3]``, ``dirs [G, 2]``. Directions go
    through ``chunk`` at a time (``lax.map``): all B x G views at once took 13 GB for a 24 x
    12 grid at batch 16.
    """
    b, g = audio.shape[0], dirs.shape[0]
    chunk = min(chunk, g)
    n = -(-g // chunk)
    dirs = jnp.asarray(dirs)
    padded = jnp.concatenate([dirs, jnp.broadcast_to(dirs[:1], (n * chunk - g, 2))])
    audio = T.audio_to_float(audio)
    no_turn = jnp.broadcast_to(jnp.eye(3, dtype=jnp.float32), (b, 3, 3))

    def one(chunk_dirs):
        d = jnp.broadcast_to(chunk_dirs, (b, chunk, 2))
        feats = features.encoder_input_mixed(audio, T.view_mix(no_turn, d, fmt), fmt,
                                             feature_cfg)
        view_frames = T.view_crops(frames, no_turn, d, fov, size)
        a, v = embed(feats.reshape(b * chunk, *feats.shape[2:]),
                     view_frames.reshape(b * chunk, *view_frames.shape[2:]))
        return jnp.sum(l2_normalize(a) * l2_normalize(v), axis=-1).reshape(b, chunk)

    sims = jax.lax.map(one, padded.reshape(n, chunk, 2))  # [n, B, chunk]
    return jnp.moveaxis(sims, 0, 1).reshape(b, n * chunk)[:, :g]


def roc_auc(scores, pos_weight, neg_weight=None) -> float:
    """Weighted ROC AUC (Mann-Whitney, ties count one half): the probability that a positive
    scores above a negative, each drawn with its weight. ``pos_weight``: bool mask or
    non-negative weights; ``neg_weight`` defaults to the complement of a mask. NaN without
    weight on both sides."""
    scores = np.asarray(scores, np.float64).ravel()
    wp = np.asarray(pos_weight, np.float64).ravel()
    wn = (1.0 - (wp > 0) if neg_weight is None else np.asarray(neg_weight, np.float64).ravel())
    if wp.sum() <= 0 or wn.sum() <= 0:
        return float("nan")
    diff = scores[:, None] - scores[None, :]
    win = (diff > 0) + 0.5 * (diff == 0)
    return float(wp @ win @ wn / (wp.sum() * wn.sum()))


def cell_weights(grid) -> np.ndarray:
    """Solid angle of each cell of an equirect ``grid [n_el, n_az, 2]`` (cos elevation of its
    centre), normalised to sum to 1."""
    w = np.cos(np.asarray(grid[..., 1], np.float64))
    return w / w.sum()


def near_sources(grid, sources, hit_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(angle in degrees from each cell to the nearest source ``[n_el, n_az]``, the cells
    within ``hit_deg`` of one)."""
    sources = np.asarray(sources, np.float64).reshape(-1, 2)
    ang = np.degrees(geometry.angular_distance(
        grid[..., 0, None].astype(np.float64), grid[..., 1, None].astype(np.float64),
        sources[:, 0], sources[:, 1])).min(-1)
    return ang, ang <= hit_deg


def map_scores(sim, grid, sources, hit_deg: float = 30.0) -> dict[str, float]:
    """Scores of one map ``sim [n_el, n_az]`` on ``grid [n_el, n_az, 2]`` against source
    directions ``sources [S, 2]`` (radians): peak error, hit and the solid-angle weighted
    ``auc`` (``sauc`` needs the other clips: ``shuffled_aucs``). Empty ``sources``: NaN."""
    if not len(np.asarray(sources).reshape(-1, 2)):
        return {"peak_error_deg": float("nan"), "hit": float("nan"), "auc": float("nan")}
    ang, near = near_sources(grid, sources, hit_deg)
    w = cell_weights(grid)
    peak = np.unravel_index(np.argmax(sim), sim.shape)
    err = float(ang[peak])
    return {"peak_error_deg": err, "hit": float(err <= hit_deg),
            "auc": roc_auc(sim, w * near, w * ~near)}


def shuffled_aucs(maps, near, grid) -> np.ndarray:
    """Shuffled AUC of each map (see the module docstring): ``maps [N, n_el, n_az]``, ``near
    [N, n_el, n_az]`` bool (cells near each clip's own sources). Positives: map i's cells near
    its sources; negatives: its cells near the other clips' sources (each cell weighted by how
    many of them have a source there) and not near its own; both times the solid angle."""
    maps, near = np.asarray(maps), np.asarray(near, np.float64)
    w = cell_weights(grid)
    others = (near.sum(0, keepdims=True) - near) / max(len(near) - 1, 1)
    return np.array([roc_auc(m, w * p, w * o * (1 - p))
                     for m, p, o in zip(maps, near, others, strict=True)])


def label_directions(labels, label_mask) -> np.ndarray:
    """Distinct (az, el) radians ``[S, 2]`` of one crop's valid DCASE rows ``[L, 6]``."""
    rows = np.asarray(labels)[np.asarray(label_mask, bool)]
    dirs = np.deg2rad(rows[:, [T.L_AZ, T.L_EL]].astype(np.float64))
    return np.unique(np.round(dirs, 4), axis=0)


# --- pictures ---------------------------------------------------------------------------------


def _colormap(x):
    """Values in [0, 1] -> RGB uint8 (a perceptually ordered blue-green-yellow ramp)."""
    stops = np.array([[48, 18, 59], [40, 120, 200], [30, 200, 150], [170, 230, 50],
                      [250, 250, 40]], np.float64)
    pos = np.clip(x, 0, 1) * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    return ((1 - f) * stops[i] + f * stops[i + 1]).astype(np.uint8)


def upsample_map(sim, height: int, width: int) -> np.ndarray:
    """``[n_el, n_az]`` map -> ``[height, width]`` by bilinear interpolation between cell
    centres, wrapping across the azimuth seam."""
    n_el, n_az = sim.shape
    col = (np.arange(width) + 0.5) * n_az / width - 0.5
    row = np.clip((np.arange(height) + 0.5) * n_el / height - 0.5, 0, n_el - 1)
    c0, r0 = np.floor(col).astype(int), np.minimum(np.floor(row).astype(int), n_el - 2)
    fc, fr = (col - c0)[None, :], (row - r0)[:, None]
    c0, c1 = c0 % n_az, (c0 + 1) % n_az
    r0 = np.maximum(r0, 0)
    r1 = np.minimum(r0 + 1, n_el - 1)
    top = sim[r0][:, c0] * (1 - fc) + sim[r0][:, c1] * fc
    bottom = sim[r1][:, c0] * (1 - fc) + sim[r1][:, c1] * fc
    return top * (1 - fr) + bottom * fr


def overlay_png(path, frame, sim, sources=(), alpha: float = 0.55, scale: int = 4) -> Path:
    """Write the map ``sim [n_el, n_az]`` over the equirect ``frame [H, W, 3]`` as a PNG
    (upscaled by ``scale``; map min..max -> colours), sources as white circles, the peak as
    a red cross. Returns the path."""
    h, w = frame.shape[0] * scale, frame.shape[1] * scale
    lo, hi = float(np.min(sim)), float(np.max(sim))
    heat = upsample_map((np.asarray(sim) - lo) / max(hi - lo, 1e-9), h, w)
    base = np.asarray(Image.fromarray(np.asarray(frame, np.uint8)).resize((w, h)), np.float64)
    img = Image.fromarray(((1 - alpha) * base + alpha * _colormap(heat)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    r = max(3, w // 80)
    for az, el in np.asarray(sources, np.float64).reshape(-1, 2):
        c, rr = geometry.direction_to_equirect(az, el, w, h)
        draw.ellipse([c - r, rr - r, c + r, rr + r], outline=(255, 255, 255), width=2)
    pr, pc = np.unravel_index(np.argmax(sim), np.shape(sim))
    az, el = geometry.equirect_to_direction(pc, pr, sim.shape[1], sim.shape[0])
    c, rr = geometry.direction_to_equirect(az, el, w, h)
    draw.line([c - r, rr - r, c + r, rr + r], fill=(255, 40, 40), width=2)
    draw.line([c - r, rr + r, c + r, rr - r], fill=(255, 40, 40), width=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def make_map_fn(encoders, fov: float, size, grid_shape: tuple[int, int]):
    """A jitted ``(audio [B, T, 4], frames [B, n, H, W, 3]) -> maps [B, n_el, n_az]``."""
    n_az, n_el = grid_shape
    dirs = direction_grid(n_az, n_el).reshape(-1, 2)
    fmt, fcfg = encoders.fmt, encoders.feature_cfg

    def fn(modules, audio, frames):
        audio_enc, video_enc, audio_proj, video_proj = modules

        def embed(feats, view_frames):
            return (audio_proj(audio_enc(feats)[0]), video_proj(video_enc(view_frames)[0]))

        sim = similarity_map(embed, audio, frames, dirs, fmt, fov, size, feature_cfg=fcfg)
        return sim.reshape(audio.shape[0], n_el, n_az)

    return evaluate.bind((encoders.audio, encoders.video, encoders.audio_proj,
                          encoders.video_proj), fn)
