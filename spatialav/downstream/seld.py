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

import dataclasses
import itertools
import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from spatialav import features
from spatialav.data import pipeline
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


def adpit_loss(pred, target, n_events, mask=None, active_only: bool = False):
    """ADPIT loss (mean over batch, frames and classes of the per-(frame, class) minimum MSE).

    ``pred [B, F, tracks, C, D]`` (D = 3 xyz, or 4 with distance), ``target [B, F, slots, C, D]``
    holding a frame's k events of a class in slots 0..k-1 (zeros after), ``n_events [B, F, C]``
    (k), ``mask [B]`` optional (padded examples excluded). ``active_only``: the mean over the
    (frame, class) cells with k > 0 only (the DOA term when activity is learnt elsewhere).
    """
    n_tracks = pred.shape[2]
    table = jnp.asarray(assignment_table(n_tracks))  # [n_tracks + 1, M, n_tracks]
    idx = table[jnp.clip(n_events, 0, n_tracks)]  # [B, F, C, M, tracks]
    tgt = jnp.moveaxis(target, 2, 3)  # [B, F, C, slots, D]
    cand = jnp.take_along_axis(tgt[:, :, :, None], idx[..., None], axis=4)  # [B,F,C,M,tracks,D]
    p = jnp.moveaxis(pred, 2, 3)[:, :, :, None]  # [B, F, C, 1, tracks, D]
    err = jnp.mean((p - cand) ** 2, axis=(-2, -1)).min(axis=-1)  # [B, F, C]
    w = jnp.ones_like(err)
    if mask is not None:
        w = w * jnp.asarray(mask, err.dtype)[:, None, None]
    if active_only:
        w = w * (n_events > 0).astype(err.dtype)
    return jnp.sum(err * w) / jnp.maximum(jnp.sum(w), 1.0)


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
    ``activity``: also a per-(frame, class) activity logit from the same hidden frames, for the
    auxiliary loss of ``make_loss_fn`` (see there); decoding uses the ACCDOA norms only.
    """

    def __init__(self, dim: int, n_classes: int, *, hidden: int, step_s: float, hop_s: float,
                 n_tracks: int = 3, distance: bool = False, activity: bool = False,
                 rngs: nnx.Rngs):
        self.n_classes, self.n_tracks, self.distance = n_classes, n_tracks, distance
        self.step_s, self.hop_s = step_s, hop_s
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.fc = nnx.Linear(dim, hidden, rngs=rngs)
        self.conv = nnx.Conv(hidden, hidden, (3,), rngs=rngs)
        per_track = 4 if distance else 3
        self.out = nnx.Linear(hidden, n_tracks * n_classes * per_track, rngs=rngs)
        self.activity = nnx.data(nnx.Linear(hidden, n_classes, rngs=rngs) if activity else None)

    def hidden(self, seq, n_labels: int):
        """``[B, T', D]`` -> hidden label frames ``[B, n_labels, hidden]``."""
        h = jax.nn.gelu(self.fc(self.norm(seq.astype(jnp.float32))))
        h = jax.nn.gelu(self.conv(h))
        pool = jnp.asarray(label_pooling(seq.shape[1], n_labels, self.step_s, self.hop_s))
        return jnp.einsum("ft,btd->bfd", pool, h)

    def outputs(self, h):
        """Hidden label frames -> (``acc``, ``dist`` or None)."""
        y = self.out(h).reshape(*h.shape[:2], self.n_tracks, -1, self.n_classes)
        acc = jnp.tanh(jnp.moveaxis(y[:, :, :, :3], 3, 4))  # [B, F, tracks, C, 3]
        dist = jax.nn.relu(y[:, :, :, 3]) if self.distance else None
        return acc, dist

    def __call__(self, seq, n_labels: int):
        return self.outputs(self.hidden(seq, n_labels))


def sequence_timing(encoders) -> tuple[float, float]:
    """(one step of the audio encoder's sequence, one STFT hop) in seconds: what
    ``label_pooling`` needs to pool the sequence to label frames."""
    fc = encoders.feature_cfg
    hop_s = fc.hop_length / fc.sample_rate
    return encoders.audio.time_stride * hop_s, hop_s


class SELDProbe(nnx.Module):
    """Audio encoder (frozen or not) + ``SELDHead``; input: audio ``[B, T, C]`` in the format."""

    def __init__(self, encoders, n_classes: int, *, hidden: int, n_tracks: int = 3,
                 distance: bool = False, activity: bool = False, rngs: nnx.Rngs):
        self.audio = encoders.audio
        self.fmt, self.feature_cfg = encoders.fmt, encoders.feature_cfg
        step_s, hop_s = sequence_timing(encoders)
        self.head = SELDHead(encoders.config.embed_dim, n_classes, hidden=hidden,
                             step_s=step_s, hop_s=hop_s,
                             n_tracks=n_tracks, distance=distance, activity=activity,
                             rngs=rngs)

    def hidden(self, audio):
        """Audio in the format -> the head's hidden label frames ``[B, F, hidden]``."""
        fc = self.feature_cfg
        n_labels = int(round(audio.shape[-2] / fc.sample_rate / LABEL_HOP_S))
        feats = features.encoder_input(audio, self.fmt, fc)
        return self.head.hidden(self.audio(feats)[1], n_labels)

    def __call__(self, audio):
        """Multi-ACCDOA (``activity_calibrated`` when the head has activity logits), distance."""
        return calibrated_outputs(self.head, self.hidden(audio))


def calibrated_outputs(head: SELDHead, h):
    """The head's decoded outputs (multi-ACCDOA, distance) of its hidden label frames ``h``:
    ``activity_calibrated`` when it has activity logits."""
    acc, dist = head.outputs(h)
    if head.activity is not None:
        acc = activity_calibrated(acc, jax.nn.sigmoid(head.activity(h)))
    return acc, dist


def activity_calibrated(acc, p):
    """Multi-ACCDOA ``[B, F, tracks, C, 3]`` whose norms come from the class activity
    probabilities ``p [B, F, C]``: each track keeps its direction, the strongest track of a
    class gets norm p, the others p x (their norm / the strongest's). Decoded as usual (norm >
    0.5), a class is active when p > 0.5 and a second simultaneous event of it needs a second
    track as strong as the first. The activity logits learn what sounds far faster than the
    ACCDOA norms do (``make_loss_fn``), so they decide activity; the ACCDOA vectors decide
    where."""
    norm = jnp.linalg.norm(acc, axis=-1, keepdims=True)  # [B, F, tracks, C, 1]
    rel = norm / jnp.maximum(jnp.max(norm, axis=2, keepdims=True), 1e-9)
    return acc / jnp.maximum(norm, 1e-9) * rel * p[:, :, None, :, None]


def make_loss_fn(distance_weight: float = 1.0, activity_weight: float = 0.0,
                 cached_frames: int | None = None):
    """Trainer ``loss_fn`` for a ``SELDProbe`` on batches with ``AddTargets`` fields, or, with
    ``cached_frames`` (label frames per example), for a bare ``SELDHead`` on batches of cached
    encoder sequences ``seq`` (``feature_cache``) with those fields.

    ``activity_weight`` > 0 (the probe needs ``activity``) adds that times the binary
    cross-entropy of the per-(frame, class) activity logits against "k > 0 events". Why: the
    ADPIT loss alone has a wide plateau at the all-silent output. A unit vector pointing the
    wrong way costs up to 4x more than silence, so knowing *what* sounds pays only once the
    model also knows *where*, and from scratch it sits at the silent loss for hundreds of
    steps at any learning rate (measured: 300 steps at 1e-3, 3e-3 and 1e-2, all at the
    silent loss). The activity term rewards class evidence on its own, the way the SED
    branch of the two-branch SELDnet did. With it the ADPIT term is taken over the active
    (frame, class) cells only: the logits decide activity (``activity_calibrated``), so the
    ACCDOA vectors only have to point, and are no longer pulled toward zero in the ~93 % of
    cells that are silent (measured, 1500 steps with the ADPIT over all cells: detection
    recall LR 0.64 but LE 73 deg, the directions were what the silent cells suppressed).
    """

    def loss_fn(model, batch, rng, step):
        if cached_frames is None:
            x = pipeline.device_audio(batch, model.fmt)
            return head_loss(model.head, model.hidden(x), batch, distance_weight,
                             activity_weight)
        return head_loss(model, model.hidden(batch["seq"], cached_frames), batch,
                         distance_weight, activity_weight)

    return loss_fn


def head_loss(head: SELDHead, h, batch, distance_weight: float, activity_weight: float):
    """(loss, metrics) of ``make_loss_fn`` from the head's hidden label frames ``h``; one
    function for both the probe on audio and the bare head on cached sequences."""
    acc, dist = head.outputs(h)
    target = batch["accdoa"]
    n_events = batch["n_events"]
    active_only = activity_weight > 0  # activity comes from the logits, not the norms
    doa_loss = adpit_loss(acc, target, n_events, active_only=active_only)
    metrics = {"adpit": doa_loss}
    loss = doa_loss
    if dist is not None:
        w = math.sqrt(distance_weight)
        pred = jnp.concatenate([acc, w * dist[..., None]], axis=-1)
        tgt = jnp.concatenate([target, w * batch["distance"][..., None]], axis=-1)
        loss = adpit_loss(pred, tgt, n_events, active_only=active_only)
        metrics["adpit_dist"] = loss
    if activity_weight:
        logits = head.activity(h)  # [B, F, C]
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(
            logits, (n_events > 0).astype(logits.dtype)))
        loss = loss + activity_weight * bce
        metrics["activity_bce"] = bce
    return loss, metrics


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


class ClipScores:
    """The SELD evaluation of one head, clip by clip: ``add`` decodes a clip's output and keeps
    its DCASE counts (2023, and 2024 with ``distance``) and ADPIT pieces; ``scores(idx)`` sums
    the pieces of clips ``idx`` (repeats allowed: a bootstrap resample) and scores them once,
    as DCASE does over files.

    ``adpit``: the ADPIT loss of the head and of the all-silent output, and ``skill`` = 1 -
    their ratio, a threshold-free score that tells heads apart before any output crosses the
    activity threshold (0: no better than predicting silence).
    """

    def __init__(self, n_classes: int, *, distance: bool = False, threshold: float = 0.5,
                 unify_deg: float = 15.0, n_tracks: int = 3):
        self.n_classes, self.distance, self.n_tracks = n_classes, distance, n_tracks
        self.threshold, self.unify_deg = threshold, unify_deg
        self.counts: dict[str, list] = {"dcase2023": [], "dcase2024": []}
        self.adpit: list[tuple[float, float, int]] = []  # (loss x frames, silent x frames, frames)
        self._loss = jax.jit(adpit_loss)
        self._stacked = None  # the pieces as arrays, built by the first ``scores``

    def add(self, acc, dist, rows, n_frames: int) -> np.ndarray:
        """One clip: output ``acc [F, tracks, C, 3]`` (``dist`` or None) cut to its ``n_frames``
        label frames, reference ``rows``; returns the decoded rows."""
        from spatialav.metrics.seld import seld_counts

        pred = decode(acc, dist if self.distance else None, self.threshold, self.unify_deg)
        self.counts["dcase2023"].append(seld_counts(rows, pred, self.n_classes,
                                                    n_frames=n_frames))
        if self.distance:
            self.counts["dcase2024"].append(seld_counts(rows, pred, self.n_classes,
                                                        distance=True, n_frames=n_frames))
        target, _, n_events = targets_from_rows(rows, np.ones(len(rows), bool), n_frames,
                                                self.n_classes, self.n_tracks)
        losses = [float(self._loss(x[None], target[None], n_events[None]))
                  for x in (acc, np.zeros_like(acc))]
        self.adpit.append((losses[0] * n_frames, losses[1] * n_frames, n_frames))
        self._stacked = None
        return pred

    def scores(self, idx) -> dict:
        from spatialav.metrics.seld import SELDCounts, seld_scores

        # a resample's sums as (times each clip was drawn) @ (per-clip pieces): the counts of
        # a few hundred clips are summed a thousand times per bootstrap
        weight = np.bincount(np.asarray(idx), minlength=len(self.adpit)).astype(np.float64)
        if self._stacked is None:
            self._stacked = {name: {f.name: np.asarray([getattr(c, f.name) for c in clips],
                                                       np.float64)
                                    for f in dataclasses.fields(SELDCounts)}
                             for name, clips in self.counts.items() if clips}
            self._stacked["adpit"] = np.asarray(self.adpit, np.float64)
        out = {}
        for name in ("dcase2023", "dcase2024"):
            if name in self._stacked:
                total = SELDCounts(**{k: weight @ v for k, v in self._stacked[name].items()})
                s = seld_scores(total, distance=name == "dcase2024")
                out[name] = {k: float(v) for k, v in s.items() if k != "per_class"}
        loss, silent, frames = weight @ self._stacked["adpit"]
        out["adpit"] = {"loss": loss / max(frames, 1), "silent_loss": silent / max(frames, 1),
                        "skill": 1.0 - loss / silent if silent else float("nan")}
        return out
