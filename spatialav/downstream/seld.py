"""SELD probe: multi-ACCDOA (optionally with distance) on the audio encoder's time sequence.

As the DCASE 2023 baseline (Shimada et al., ICASSP 2022): per 100 ms label frame the head
emits ``n_tracks`` (3) activity-coupled Cartesian DOA vectors per class, ``tanh`` bounded;
with ``distance`` it adds a non-negative distance per track and class (metres), as the DCASE
2024 baseline's multi-ACCDOA with distance. Training uses the ADPIT loss (auxiliary
duplicating permutation invariant training): for a class with k simultaneous events in a
frame, the targets of the 3 tracks are every assignment of the k events to the 3 tracks that
uses each event at least once (k = 1: the event on all 3 tracks; k = 2: 6 assignments; k = 3:
the 6 permutations), and the loss of that (frame, class) is the smallest MSE among them.
Decoding (``dcase_io.accdoa_to_rows``): a track is active when ``||xyz|| > 0.5``; active tracks
of one class closer than 15 deg are unified. Scored with ``metrics.seld``: DCASE 2023
(segment-based ER/F at 20 deg, LE_CD, LR_CD, SELD) and, with distance, the 2024 variant.

Frames: the encoder's sequence step (``time_stride`` x 20 ms) is averaged into 100 ms label
frames by a fixed pooling matrix (``label_pooling``), so any encoder depth fits.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spatialav import features
from spatialav.data import transforms as T
from spatialav.metrics import dcase_io

LABEL_HOP_S = dcase_io.FRAME_SECONDS


# --- pure pieces ------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def assignment_table(n_tracks: int = 3) -> np.ndarray:
    """ADPIT target assignments ``[n_tracks + 1, M, n_tracks]`` (int): row k lists every map of
    the tracks onto k events (event index per track) that uses all k events, padded to M by
    repeating its first entry. Row 0 (no event) is all zeros: its targets are zero anyway."""
    rows = [[(0,) * n_tracks]]
    for k in range(1, n_tracks + 1):
        rows.append([a for a in itertools.product(range(k), repeat=n_tracks)
                     if len(set(a)) == k])
    m = max(len(r) for r in rows)
    return np.asarray([r + [r[0]] * (m - len(r)) for r in rows], np.int32)


def adpit_loss(pred, target, n_events, mask=None):
    """ADPIT loss (mean over batch, frames and classes of the per-(frame, class) minimum MSE).

    ``pred [B, F, tracks, C, D]`` (D = 3 xyz, or 4 with distance), ``target [B, F, slots, C, D]``
    holding a frame's k events of a class in slots 0..k-1 (zeros after), ``n_events [B, F, C]``
    (k), ``mask [B]`` optional (padded examples excluded).
    """
    n_tracks = pred.shape[2]
    table = jnp.asarray(assignment_table(n_tracks))  # [n_tracks + 1, M, n_tracks]
    idx = table[jnp.clip(n_events, 0, n_tracks)]  # [B, F, C, M, tracks]
    tgt = jnp.moveaxis(target, 2, 3)  # [B, F, C, slots, D]
    cand = jnp.take_along_axis(tgt[:, :, :, None], idx[..., None], axis=4)  # [B,F,C,M,tracks,D]
    p = jnp.moveaxis(pred, 2, 3)[:, :, :, None]  # [B, F, C, 1, tracks, D]
    err = jnp.mean((p - cand) ** 2, axis=(-2, -1)).min(axis=-1)  # [B, F, C]
    if mask is None:
        return jnp.mean(err)
    w = jnp.asarray(mask, err.dtype)[:, None, None]
    return jnp.sum(err * w) / jnp.maximum(jnp.sum(w) * err.shape[1] * err.shape[2], 1.0)


def label_pooling(n_steps: int, n_labels: int, step_s: float, hop_s: float,
                  label_s: float = LABEL_HOP_S) -> np.ndarray:
    """``[n_labels, n_steps]`` row-stochastic matrix averaging sequence steps into label frames.

    Input frame t is centred on ``t * hop_s``; sequence step j pools the input frames
    ``j * stride ...`` (``step_s = stride * hop_s``), so it is centred on
    ``j * step_s + (step_s - hop_s) / 2``. Label frame f covers ``[f, f + 1) * label_s``; it
    averages the steps centred inside, or takes the nearest step when none is (steps longer
    than a label frame).
    """
    centres = np.arange(n_steps) * step_s + (step_s - hop_s) / 2
    frame = np.floor(centres / label_s + 1e-9).astype(int)
    w = (frame[None, :] == np.arange(n_labels)[:, None]).astype(np.float32)
    empty = w.sum(1) == 0
    if empty.any():
        mid = (np.flatnonzero(empty) + 0.5) * label_s
        nearest = np.abs(mid[:, None] - centres[None, :]).argmin(1)
        w[np.flatnonzero(empty), nearest] = 1.0
    return w / w.sum(1, keepdims=True)


def targets_from_rows(rows, mask, n_frames: int, n_classes: int, n_tracks: int = 3):
    """Dense ADPIT targets of one example's DCASE rows ``[L, 6]`` (``mask [L]`` valid rows).

    Returns (``accdoa [F, slots, C, 3]``, ``distance [F, slots, C]`` metres (rows hold cm; NaN
    when the rows have none), ``n_events [F, C]`` int32).
    """
    acc, dist = dcase_io.rows_to_accdoa(np.asarray(rows)[np.asarray(mask, bool)], n_frames,
                                        n_classes, n_tracks)
    n_events = (np.linalg.norm(acc, axis=-1) > 0.5).sum(1).astype(np.int32)
    return acc, dist / 100.0, n_events


class AddTargets:
    """grain map on batches: adds ``accdoa``, ``distance`` and ``n_events`` from ``labels``."""

    def __init__(self, n_frames: int, n_classes: int, n_tracks: int = 3,
                 need_distance: bool = False):
        self.n_frames, self.n_classes, self.n_tracks = n_frames, n_classes, n_tracks
        self.need_distance = need_distance

    def __call__(self, batch: dict) -> dict:
        out = [targets_from_rows(r, m, self.n_frames, self.n_classes, self.n_tracks)
               for r, m in zip(batch["labels"], batch["label_mask"], strict=True)]
        acc, dist, n = (np.stack(x) for x in zip(*out, strict=True))
        if self.need_distance and np.isnan(dist).any():
            raise ValueError("the distance output needs a distance on every label row; this "
                             "dataset's labels have none (drop head.distance)")
        return {**batch, "accdoa": acc.astype(np.float32),
                "distance": np.nan_to_num(dist).astype(np.float32), "n_events": n}


# --- the head ---------------------------------------------------------------------------------


class SELDHead(nnx.Module):
    """Sequence ``[B, T', D]`` -> multi-ACCDOA ``[B, F, tracks, C, 3]`` (+ distance ``[B, F,
    tracks, C]`` metres when ``distance``) at 100 ms label frames.

    LayerNorm -> Linear -> GELU -> conv (3 steps) -> GELU -> pool to label frames -> Linear.
    ``step_s``: duration of one sequence step (encoder ``time_stride`` x ``hop_s``, the STFT hop).
    """

    def __init__(self, dim: int, n_classes: int, *, hidden: int, step_s: float, hop_s: float,
                 n_tracks: int = 3, distance: bool = False, rngs: nnx.Rngs):
        self.n_classes, self.n_tracks, self.distance = n_classes, n_tracks, distance
        self.step_s, self.hop_s = step_s, hop_s
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.fc = nnx.Linear(dim, hidden, rngs=rngs)
        self.conv = nnx.Conv(hidden, hidden, (3,), rngs=rngs)
        per_track = 4 if distance else 3
        self.out = nnx.Linear(hidden, n_tracks * n_classes * per_track, rngs=rngs)

    def __call__(self, seq, n_labels: int):
        h = jax.nn.gelu(self.fc(self.norm(seq.astype(jnp.float32))))
        h = jax.nn.gelu(self.conv(h))
        pool = jnp.asarray(label_pooling(seq.shape[1], n_labels, self.step_s, self.hop_s))
        h = jnp.einsum("ft,btd->bfd", pool, h)
        y = self.out(h).reshape(*h.shape[:2], self.n_tracks, -1, self.n_classes)
        acc = jnp.tanh(jnp.moveaxis(y[:, :, :, :3], 3, 4))  # [B, F, tracks, C, 3]
        dist = jax.nn.relu(y[:, :, :, 3]) if self.distance else None
        return acc, dist


class SELDProbe(nnx.Module):
    """Audio encoder (frozen or not) + ``SELDHead``; input: audio ``[B, T, C]`` in the format."""

    def __init__(self, encoders, n_classes: int, *, hidden: int, n_tracks: int = 3,
                 distance: bool = False, rngs: nnx.Rngs):
        self.audio = encoders.audio
        self.fmt, self.feature_cfg = encoders.fmt, encoders.feature_cfg
        fc = self.feature_cfg
        hop_s = fc.hop_length / fc.sample_rate
        self.head = SELDHead(encoders.config.embed_dim, n_classes, hidden=hidden,
                             step_s=self.audio.time_stride * hop_s, hop_s=hop_s,
                             n_tracks=n_tracks, distance=distance, rngs=rngs)

    def __call__(self, audio):
        fc = self.feature_cfg
        n_labels = int(round(audio.shape[-2] / fc.sample_rate / LABEL_HOP_S))
        feats = features.encoder_input(audio, self.fmt, fc)
        return self.head(self.audio(feats)[1], n_labels)


def format_audio(batch, fmt: str):
    """The batch's FOA turned by its ``rotation`` and put in ``fmt`` (audio-only heads skip the
    frame resampling that ``pipeline.device_inputs`` would do)."""
    from spatialav import ambisonics

    audio = ambisonics.rotate(T.audio_to_float(batch["audio"]),
                              jnp.asarray(batch["rotation"], jnp.float32))
    return T.to_format(audio, fmt)


def make_loss_fn(distance_weight: float = 1.0):
    """Trainer ``loss_fn`` for a ``SELDProbe`` on batches with ``AddTargets`` fields."""

    def loss_fn(model, batch, rng, step):
        acc, dist = model(format_audio(batch, model.fmt))
        target = batch["accdoa"]
        n_events = batch["n_events"]
        doa_loss = adpit_loss(acc, target, n_events)
        if dist is None:
            return doa_loss, {"adpit": doa_loss}
        w = math.sqrt(distance_weight)
        pred = jnp.concatenate([acc, w * dist[..., None]], axis=-1)
        tgt = jnp.concatenate([target, w * batch["distance"][..., None]], axis=-1)
        loss = adpit_loss(pred, tgt, n_events)
        return loss, {"adpit_doa": doa_loss}

    return loss_fn


# --- decoding and scoring ---------------------------------------------------------------------


def decode(acc, dist=None, threshold: float = 0.5, unify_deg: float = 15.0) -> np.ndarray:
    """DCASE rows ``[n, 6]`` of one file's head output ``acc [F, tracks, C, 3]`` (distance
    ``[F, tracks, C]`` metres -> cm in the rows, NaN without)."""
    return dcase_io.accdoa_to_rows(acc, None if dist is None else np.asarray(dist) * 100.0,
                                   threshold, unify_deg)


def windows(audio: np.ndarray, window: int) -> np.ndarray:
    """``[T, C]`` -> ``[ceil(T / window), window, C]`` consecutive windows, zero-padded."""
    n = max(1, -(-audio.shape[0] // window))
    out = np.zeros((n * window, audio.shape[1]), audio.dtype)
    out[: audio.shape[0]] = audio
    return out.reshape(n, window, audio.shape[1])
