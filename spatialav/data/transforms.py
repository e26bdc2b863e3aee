"""Per-clip transforms of the input pipeline, split by where they run.

Host side (numpy, in grain workers, deterministic given a ``np.random.Generator``): choose a
time crop and cut audio, JPEG frames, DCASE label rows and boxes to it; sample a joint
rotation R; sample K viewpoint directions with a minimum separation; pick M object
directions from boxes or detections. These move int16 audio and compressed frames around
and draw small random numbers; the expensive work is left to the accelerator.

Device side (``jax.numpy``, jit-able, batched over a leading batch dim): int16 / uint8 to
float, ``rotate_clip`` (one R for the sound field and the equirect frames), ``view_mix`` (the
channel map from the stored clip to each viewpoint's audio: R, the turn that puts the
viewpoint in front, ``to_format``; applied to waveforms by ``apply_mix`` and to one STFT
per clip by ``features.encoder_input_mixed``), ``view_crops`` (the viewpoint's gnomonic crop
sequence of the R-rotated frames, sampled once from the stored ones), ``object_views``
(beams toward each object + object-centred crops) and ``to_format``. Conventions are
docs/DESIGN.md §2: radians, ambiX (W, Y, Z, X), out(u) = in(Rᵀu) for frames,
[X, Y, Z] ← R [X, Y, Z] for audio.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from spatialav import ambisonics, geometry

LABEL_HOP_S = 0.1  # DCASE label frames
# DCASE label columns and box columns (see spatialav.synth.clip.Clip).
L_FRAME, L_CLASS, L_TRACK, L_AZ, L_EL, L_DIST = range(6)
B_FRAME, B_CLASS, B_CX, B_CY, B_W, B_H, B_OBJECT = range(7)

# --- host side: time crops ----------------------------------------------------------------


def crop_grid(fps: float, label_hop: float = LABEL_HOP_S, max_multiple: int = 100) -> float:
    """The finest step for crop starts that falls on both the label and the video grid.

    Starting crops on it makes label rows and video frames shift by whole frames (0.1 s at
    10 or 30 fps, 0.2 s at 25 fps). Falls back to the label hop when no multiple up to
    ``max_multiple`` fits (29.97 fps): video frames are then off by under half a frame.
    """
    for k in range(1, max_multiple + 1):
        frames = k * label_hop * fps
        if abs(frames - round(frames)) < 1e-6:
            return k * label_hop
    return label_hop


def crop_start(
    rng: np.random.Generator | None, duration: float, crop_s: float, grid: float
) -> float:
    """Start time of a ``crop_s`` window inside ``duration`` seconds, on multiples of ``grid``.

    Uniform over the admissible starts with ``rng``; without it (eval), the grid start nearest
    below the centred one.
    """
    if crop_s > duration + 1e-9:
        raise ValueError(f"crop of {crop_s} s does not fit a clip of {duration} s")
    last = int(math.floor((duration - crop_s) / grid + 1e-6))
    k = int(rng.integers(0, last + 1)) if rng is not None else last // 2
    return k * grid


def time_crop(
    audio: np.ndarray,
    frames,
    labels: np.ndarray,
    boxes: np.ndarray,
    *,
    t0: float,
    crop_s: float,
    sample_rate: int,
    fps: float,
    frame_stride: int = 1,
    label_hop: float = LABEL_HOP_S,
):
    """Cut a clip to ``[t0, t0 + crop_s)``, keeping all modalities aligned.

    ``audio`` ``[T, C]``; ``frames`` a sequence (JPEG bytes or decoded images; video frame n
    is at n / fps); ``labels`` DCASE rows ``[rows, 6]``; ``boxes`` any per-video-frame rows
    with the frame number in column 0 (boxes ``[rows, 7]``, detections ``[rows, 8]``). Returns
    (audio ``[round(crop_s * sr), C]``, frames (every ``frame_stride``-th of the
    ``round(crop_s * fps)`` frames of the window), labels and boxes restricted to the window
    with their frame numbers made relative to it (boxes count kept frames). Audio past the
    end is zero-padded and missing frames repeat the last one, so shapes are fixed.
    """
    n_audio = int(round(crop_s * sample_rate))
    a0 = int(round(t0 * sample_rate))
    out_audio = np.zeros((n_audio, audio.shape[1]), audio.dtype)
    piece = audio[a0 : a0 + n_audio]
    out_audio[: len(piece)] = piece

    v0, n_video = int(round(t0 * fps)), int(round(crop_s * fps))
    kept = v0 + np.arange(0, n_video, frame_stride)
    out_frames = [frames[i] for i in np.minimum(kept, len(frames) - 1)]

    l0, n_labels = int(round(t0 / label_hop)), int(round(crop_s / label_hop))
    lf = labels[:, L_FRAME] - l0
    out_labels = labels[(lf >= 0) & (lf < n_labels)].copy()
    out_labels[:, L_FRAME] -= l0

    bf = boxes[:, B_FRAME] - v0
    keep = (bf >= 0) & (bf < n_video) & (np.mod(bf, frame_stride) == 0)
    out_boxes = boxes[keep].copy()
    out_boxes[:, B_FRAME] = (out_boxes[:, B_FRAME] - v0) // frame_stride
    return out_audio, out_frames, out_labels, out_boxes


# --- host side: rotations and directions ---------------------------------------------------

ROTATIONS = ("none", "yaw", "so3")


def sample_rotation(rng: np.random.Generator, mode: str) -> np.ndarray:
    """A random rotation ``[3, 3]`` float32: identity, a uniform yaw, or uniform over SO(3)."""
    if mode == "none":
        return np.eye(3, dtype=np.float32)
    if mode == "yaw":
        return geometry.rotation_matrix(rng.uniform(-np.pi, np.pi)).astype(np.float32)
    if mode == "so3":
        return geometry.random_rotation(rng)
    raise ValueError(f"unknown rotation mode {mode!r}; expected one of {ROTATIONS}")


def rotate_directions(R: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Directions ``[..., 2]`` (az, el) moved by R, as the rotated clip moves its sources."""
    u = geometry.direction_to_vector(directions[..., 0], directions[..., 1])
    az, el = geometry.vector_to_direction(geometry.rotate_vectors(R, u))
    return np.stack([az, el], axis=-1).astype(np.float32)


def rotate_labels(R: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """DCASE rows ``[rows, 6]`` with their (degree) azimuth / elevation moved by R."""
    out = labels.astype(np.float32, copy=True)
    dirs = np.deg2rad(labels[:, [L_AZ, L_EL]].astype(np.float64))
    out[:, [L_AZ, L_EL]] = np.rad2deg(rotate_directions(R, dirs))
    return out


def sample_viewpoints(
    rng: np.random.Generator,
    k: int,
    min_separation: float,
    elevation_range: tuple[float, float] = (-np.pi / 2, np.pi / 2),
    max_tries: int = 200,
    max_restarts: int = 50,
    *,
    centres: np.ndarray | None = None,
    jitter: float = 0.0,
) -> np.ndarray:
    """K directions ``[K, 2]`` (az, el), uniform on the sphere band, pairwise ≥ min_separation.

    Rejection sampling; a set that gets stuck (no room left for the next point) is restarted,
    and an infeasible request raises instead of looping forever.

    ``centres [N, 2]`` (object-centred viewpoints): the set starts with the objects, in random
    order, each moved by a random angle up to ``jitter`` (uniform on that spherical cap) and
    kept only if it is ``min_separation`` from the viewpoints already kept (the elevation range
    does not apply to them); the remaining slots are filled uniformly as above. At most K
    objects are used, and the K directions come back in random order.
    """
    lo, hi = np.sin(elevation_range[0]), np.sin(elevation_range[1])
    first = np.zeros((0, 2), np.float32)
    if centres is not None and len(centres) and k:
        first = _jittered_centres(rng, np.asarray(centres, np.float64), k, min_separation, jitter)
    for _ in range(max_restarts):
        dirs = np.zeros((k, 2), np.float32)
        dirs[: len(first)] = first
        for i in range(len(first), k):
            # Draw max_tries candidates at once and keep the first admissible one: the same
            # distribution as drawing them one by one, without a Python loop per candidate.
            az = rng.uniform(-np.pi, np.pi, max_tries)
            el = np.arcsin(rng.uniform(lo, hi, max_tries))
            sep = geometry.angular_distance(az[:, None], el[:, None], dirs[None, :i, 0],
                                            dirs[None, :i, 1])
            ok = np.flatnonzero(np.all(sep >= min_separation, axis=1))
            if not len(ok):
                break  # this set is stuck: restart
            dirs[i] = az[ok[0]], el[ok[0]]
        else:
            return dirs[rng.permutation(k)] if len(first) else dirs
    raise ValueError(
        f"could not place {k} viewpoints {np.rad2deg(min_separation):.1f} deg apart within "
        f"elevations {np.rad2deg(elevation_range)} deg; lower k or the separation"
    )


def _jittered_centres(rng, centres, k, min_separation, jitter, tries: int = 8):
    """Up to K of ``centres`` (random order), each jittered within ``jitter`` rad and kept if
    ``min_separation`` from those kept before (a few jitter draws per object)."""
    kept: list[np.ndarray] = []
    for c in centres[rng.permutation(len(centres))]:
        if len(kept) == k:
            break
        # Uniform on the cap of radius `jitter` around the +x axis, then turned to the centre.
        cos_t = rng.uniform(np.cos(jitter), 1.0, tries)
        sin_t = np.sqrt(np.maximum(1.0 - cos_t**2, 0.0))
        psi = rng.uniform(-np.pi, np.pi, tries)
        u = np.stack([cos_t, sin_t * np.cos(psi), sin_t * np.sin(psi)], axis=-1)
        R = geometry.rotation_matrix(float(c[0]), float(c[1]))
        az, el = geometry.vector_to_direction(u @ np.asarray(R).T)
        if kept:
            prev = np.asarray(kept)
            sep = geometry.angular_distance(az[:, None], el[:, None], prev[None, :, 0],
                                            prev[None, :, 1])
            ok = np.flatnonzero(np.all(sep >= min_separation, axis=1))
        else:
            ok = np.arange(tries)
        if len(ok):
            kept.append(np.array([az[ok[0]], el[ok[0]]]))
    return np.asarray(kept, np.float32).reshape(-1, 2)


# Object tables: one row per sighting, (video frame, class, azimuth, elevation, object id).
O_FRAME, O_CLASS, O_AZ, O_EL, O_ID = range(5)
D_FRAME, D_CLASS, D_AZ, D_EL, D_W, D_H, D_SCORE, D_TRACK = range(8)  # detections columns


def box_objects(boxes: np.ndarray) -> np.ndarray:
    """Object table ``[rows, 5]`` of normalised equirect boxes ``[rows, 7]`` (at their centres)."""
    # A normalised centre cx covers pixel column cx * W - 1/2 of a W-wide frame; use W = 1.
    az, el = geometry.equirect_to_direction(boxes[:, B_CX] - 0.5, boxes[:, B_CY] - 0.5, 1, 1)
    cols = [boxes[:, B_FRAME], boxes[:, B_CLASS], az, el, boxes[:, B_OBJECT]]
    return np.stack(cols, axis=-1).astype(np.float32).reshape(-1, 5)


def detection_objects(detections: np.ndarray, centre_frame: float,
                      min_score: float = 0.0) -> np.ndarray:
    """Object table ``[rows, 5]`` of detector output ``[rows, 8]`` (directions in radians).

    Tracked detections keep their track as object id. Untracked ones (track -1) cannot be
    linked across frames, so only those of the frame nearest ``centre_frame`` are kept, each
    as its own object.
    """
    dets = detections[detections[:, D_SCORE] >= min_score]
    tracked = dets[dets[:, D_TRACK] >= 0]
    loose = dets[dets[:, D_TRACK] < 0]
    if len(loose):
        frames = loose[:, D_FRAME]
        loose = loose[frames == frames[np.argmin(np.abs(frames - centre_frame))]]
    first_free = tracked[:, D_TRACK].max() + 1 if len(tracked) else 0
    ids = np.concatenate([tracked[:, D_TRACK], first_free + np.arange(len(loose))])
    rows = np.concatenate([tracked, loose])
    cols = [rows[:, D_FRAME], rows[:, D_CLASS], rows[:, D_AZ], rows[:, D_EL], ids]
    return np.stack(cols, axis=-1).astype(np.float32).reshape(-1, 5)


def select_objects(
    rng: np.random.Generator | None, objects: np.ndarray, m: int, centre_frame: float
):
    """Up to M objects of a (cropped) clip from its object table ``[rows, 5]``, padded to M.

    Each object is placed where it is seen nearest to ``centre_frame``; with more than M
    objects a random subset is kept (the first M without ``rng``). Returns (directions
    ``[M, 2]`` float32, valid ``[M]`` bool, class ``[M]`` int32, object id ``[M]`` int32;
    padding has class and id -1).
    """
    dirs = np.zeros((m, 2), np.float32)
    valid = np.zeros(m, bool)
    cls = np.full(m, -1, np.int32)
    idx = np.full(m, -1, np.int32)
    ids = np.unique(objects[:, O_ID]).astype(np.int64)
    if len(ids) > m:
        ids = np.sort(rng.choice(ids, m, replace=False)) if rng is not None else ids[:m]
    for j, obj in enumerate(ids):
        rows = objects[objects[:, O_ID] == obj]
        row = rows[np.argmin(np.abs(rows[:, O_FRAME] - centre_frame))]
        dirs[j] = row[O_AZ], row[O_EL]
        valid[j], cls[j], idx[j] = True, int(row[O_CLASS]), int(obj)
    return dirs, valid, cls, idx


def pad_rows(rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad or truncate ``[rows, C]`` to ``[n, C]``; returns it and a validity mask ``[n]``."""
    out = np.zeros((n, rows.shape[1]), np.float32)
    k = min(n, len(rows))
    out[:k] = rows[:k]
    return out, np.arange(n) < k


# --- device side ----------------------------------------------------------------------------


def audio_to_float(audio):
    """int16 PCM to float32 in [-1, 1) (÷ 32768); float input is passed through as float32."""
    audio = jnp.asarray(audio)
    if jnp.issubdtype(audio.dtype, jnp.integer):
        return audio.astype(jnp.float32) / 32768.0
    return audio.astype(jnp.float32)


def frames_to_float(frames):
    """uint8 images to float32 in [0, 1]; float input is passed through as float32."""
    frames = jnp.asarray(frames)
    if jnp.issubdtype(frames.dtype, jnp.integer):
        return frames.astype(jnp.float32) / 255.0
    return frames.astype(jnp.float32)


def _stack_frames(frames):
    """``[B, n, H, W, C]`` -> ``[B, H, W, n C]``: the frames of a clip share one set of sample
    directions, so resampling them as channels computes the directions once per clip and
    gathers contiguous pixel vectors."""
    b, n, h, w, c = frames.shape
    return jnp.moveaxis(frames, 1, 3).reshape(b, h, w, n * c)


def _unstack_frames(images, n: int):
    """``[..., h, w, n C]`` -> ``[..., n, h, w, C]`` (inverse of ``_stack_frames``)."""
    *lead, h, w, nc = images.shape
    return jnp.moveaxis(images.reshape(*lead, h, w, n, nc // n), -2, -4)


def rotate_clip(audio, frames, R):
    """Rotate audio ``[B, T, 4]`` and equirect frames ``[B, n, H, W, 3]`` by ``R [B, 3, 3]``.

    Sources move from u to R u in both modalities, so each stays at its pixel. Audio comes
    back as float32; frames keep their dtype.
    """
    audio, frames, R = audio_to_float(audio), jnp.asarray(frames), jnp.asarray(R, jnp.float32)
    rotated = geometry.rotate_frame(_stack_frames(frames), R)
    return ambisonics.rotate(audio, R), _unstack_frames(rotated, frames.shape[1])


def _crops(frames, dirs, fov, size, R=None):
    """Gnomonic crop sequences ``[B, K, n, h, w, 3]`` toward ``dirs [B, K, 2]`` of
    ``frames [B, n, H, W, 3]`` rotated by ``R [B, 3, 3]`` (default: not rotated); vmapped
    over K so the frames are not copied K times."""
    stacked = _stack_frames(frames)
    camera = geometry.rotation_matrix(dirs[..., 0], dirs[..., 1])  # [B, K, 3, 3]
    if R is not None:  # the crop of the rotated frame is the crop by the camera Rᵀ C
        camera = jnp.einsum("bji,bkjl->bkil", jnp.asarray(R, camera.dtype), camera)
    one = lambda cam: geometry.camera_crop(stacked, cam, fov, size)
    crops = jax.vmap(one, in_axes=1, out_axes=1)(camera)
    return _unstack_frames(crops, frames.shape[1])


def view_crops(frames, R, dirs, fov: float, size):
    """Gnomonic crop sequences ``[B, K, n, h, w, 3]`` toward ``dirs [B, K, 2]`` (horizontal
    field of view ``fov`` radians, ``size`` int or (h, w)) of the frames rotated by ``R`` (as
    ``rotate_clip``), taken from the stored ``frames [B, n, H, W, 3]`` with one resampling.
    The crop's centre is the viewpoint, its left the viewer's left."""
    return _crops(jnp.asarray(frames), jnp.asarray(dirs), fov, size, R)


def view_mix(R, dirs, fmt: str, mono_pattern: str = "omni"):
    """Channel maps ``[B, K, 4, C]`` from a stored ambiX clip to the input-format audio of
    each of its views: the batch rotation ``R [B, 3, 3]``, then the turn that puts view
    ``dirs [B, K, 2]`` in front, then ``to_format`` looking to the front.

    Row i is the output for a unit signal on input channel i, obtained by passing the
    identity through the same functions the waveforms go through, so the conventions are
    theirs by construction. Apply with ``apply_mix`` (waveforms) or
    ``features.encoder_input_mixed`` (encoder features, one STFT per clip).
    """
    dirs = jnp.asarray(dirs, jnp.float32)
    to_front = jnp.swapaxes(geometry.rotation_matrix(dirs[..., 0], dirs[..., 1]), -1, -2)
    turn = to_front @ jnp.asarray(R, jnp.float32)[:, None]  # [B, K, 3, 3]
    eye = jnp.broadcast_to(jnp.eye(4, dtype=jnp.float32), (*turn.shape[:-2], 4, 4))
    return ambisonics.to_format(ambisonics.rotate(eye, turn), fmt, (0.0, 0.0), mono_pattern)


def apply_mix(audio, mix):
    """``audio [B, T, 4]`` (int16 or float) through ``mix [B, K, 4, C]`` -> ``[B, K, T, C]``."""
    return jnp.einsum("bti,bkic->bktc", audio_to_float(audio), mix)


def object_views(audio, frames, dirs, valid, pattern, fov: float, size):
    """Per-object inputs: a first-order beam toward each object and an object-centred crop.

    ``audio [B, T, 4]``, ``frames [B, n, H, W, 3]``, ``dirs [B, M, 2]``, ``valid [B, M]``.
    Returns beams ``[B, M, T]`` float32 and crops ``[B, M, n, h, w, 3]``; padded objects
    are zero in both.
    """
    audio, frames, dirs = audio_to_float(audio), jnp.asarray(frames), jnp.asarray(dirs)
    valid = jnp.asarray(valid, bool)
    out_beams = ambisonics.beams(audio, dirs[..., 0], dirs[..., 1], pattern)
    crops = _crops(frames, dirs, fov, size)
    out_beams = jnp.where(valid[..., None], out_beams, 0.0)
    crops = jnp.where(valid[..., None, None, None, None], crops, jnp.zeros((), crops.dtype))
    return out_beams, crops


def to_format(audio, fmt: str, look=(0.0, 0.0), mono_pattern="omni"):
    """Input-format variant (``foa`` / ``stereo`` / ``mono``) of int16 or float FOA ``[..., T, 4]``.

    ``look`` is the listening direction (the front after the ``view_mix`` turn); see
    ``ambisonics.to_format``.
    """
    return ambisonics.to_format(audio_to_float(audio), fmt, look, mono_pattern)
