"""SELD metrics of DCASE Task 3: the 2023 segment-based and the 2024 distance-aware evaluation.

Re-implemented from the definition (Mesaros et al., WASPAA 2019; Politis et al., TASLP 2020)
and matched, count for count, to the official scripts of the DCASE baselines
(``SELD_evaluation_metrics.py``: ``SELDMetricsSegmentLevel`` for 2023, ``SELDMetrics`` with
``eval_dist=True`` for 2024). Inputs are DCASE rows (``spatialav.metrics.dcase_io``).

2023 (``distance=False``): 1 s segments of 10 label frames. Per segment and class, reference and
predicted DOAs are matched frame by frame with the Hungarian algorithm on angular distance; a
reference track's error is its mean over the matched frames of the segment. Location-sensitive
detection: a matched track is a TP if that error is <= ``doa_threshold`` (20 deg), else a
spatial FP; surplus predicted tracks are FPs, missing ones FNs. ER = (S + D + I) / N over
segments; F = TP / (TP + FP_spatial + (FP + FN) / 2); class-dependent LE (deg) and LR over
matched tracks; SELD = mean(ER, 1 - F, LE / 180, 1 - LR).

2024 (``distance=True``): the same matching frame by frame (no segments, as the official 2024
evaluation), and a matched pair is a TP only if its angular error is <= ``doa_threshold`` and
its relative distance error |d - d_ref| / d_ref is <= ``dist_threshold`` (1.0). Reports F, LE
(the DOA error, "DOAE"), DE, RDE, and SELD = mean(1 - F, LE / 180, RDE) per class.

Counts are summed over all files before any ratio is taken (``SELDEvaluator``), as DCASE does.
With ``average='macro'`` every class counts, including classes absent from both reference and
prediction (F = 0, LR = 0; LE = 180 in 2023, NaN-skipped in 2024), exactly as the official code.

Deliberate differences from the official scripts, none of which changes STARSS23-style inputs
beyond a frame at a file's end:
- the frame count defaults to 1 + the last frame index found in the reference or prediction
  (the official script uses the last reference index itself, which drops the last reference
  frame in frame mode and ignores predictions after the last reference event); pass
  ``n_frames`` (the audio length in label frames) when it is known;
- reference events of a frame are ordered by track id before the per-frame row position is
  used as the segment-level track identity (the official code uses file order, with a TODO
  to use track ids); prediction order does not matter;
- angles come from atan2(|u x v|, u . v) rather than arccos(u . v), exact near 0 deg;
- ER is inf (not ~1e16) when there are errors but no reference events.
Kept from the official code although odd: in a segment where a class is present in both the
reference and the prediction but in no common frame, it counts as *as many FNs as predicted
tracks*, and no FP.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.optimize import linear_sum_assignment

from spatialav.geometry import direction_to_vector
from spatialav.metrics.dcase_io import check_rows

_EPS = np.finfo(float).eps  # the official relative-distance denominator guard


@dataclasses.dataclass(frozen=True)
class SELDCounts:
    """Per-class counts ``[n_classes]`` and global substitution/deletion/insertion counts."""

    tp: np.ndarray
    fp: np.ndarray
    fp_spatial: np.ndarray
    fn: np.ndarray
    n_ref: np.ndarray
    de_tp: np.ndarray  # matched (class-correct) tracks, whatever their error
    de_fn: np.ndarray
    total_angle: np.ndarray
    total_dist: np.ndarray
    total_reldist: np.ndarray
    subs: float = 0.0
    dels: float = 0.0
    ins: float = 0.0

    @classmethod
    def zeros(cls, n_classes: int) -> SELDCounts:
        fields = dataclasses.fields(cls)
        return cls(**{f.name: np.zeros(n_classes) for f in fields
                      if f.default is dataclasses.MISSING})

    def __add__(self, other: SELDCounts) -> SELDCounts:
        return SELDCounts(
            **{f.name: getattr(self, f.name) + getattr(other, f.name)
               for f in dataclasses.fields(self)}
        )


def _angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles ``[len(a), len(b)]`` in degrees between direction vectors."""
    cross = np.linalg.norm(np.cross(a[:, None], b[None]), axis=-1)
    return np.degrees(np.arctan2(cross, a @ b.T))


def _events(rows: np.ndarray, n_classes: int, n_frames: int):
    """``{(frame, class): (vectors [k, 3], distances [k])}``, ordered by track id."""
    frame, cls = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    if len(rows) and cls.max() >= n_classes:
        raise ValueError(f"rows hold class {cls.max()}, outside [0, {n_classes})")
    rows = rows[frame < n_frames]
    rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]
    vec = direction_to_vector(np.deg2rad(rows[:, 3].astype(np.float64)),
                              np.deg2rad(rows[:, 4].astype(np.float64)))
    keys = list(zip(rows[:, 0].astype(int).tolist(), rows[:, 1].astype(int).tolist(),
                    strict=True))
    out = {}
    for i, key in enumerate(keys):
        out.setdefault(key, []).append(i)
    return {k: (vec[idx], rows[idx, 5].astype(np.float64)) for k, idx in out.items()}


def _match(ref_vec, pred_vec):
    """Hungarian matching on angular distance: (ref indices, pred indices, angles)."""
    ang = _angles_deg(ref_vec, pred_vec)
    r, p = linear_sum_assignment(ang)
    return r, p, ang[r, p]


def _add(counts: dict, cls: int, **values) -> None:
    for name, v in values.items():
        counts[name][cls] += v


def _ser(counts: dict, loc_fp: float, loc_fn: float) -> None:
    """Substitutions, deletions and insertions of one segment / frame."""
    counts["subs"] += min(loc_fp, loc_fn)
    counts["dels"] += max(0, loc_fn - loc_fp)
    counts["ins"] += max(0, loc_fp - loc_fn)


def _segment_class(gt: dict, pr: dict, doa_threshold: float):
    """Count increments of one class in one segment: ({count: value}, loc_fp, loc_fn).

    ``gt`` / ``pr`` map the segment's frames to (vectors, distances) of this class.
    """
    n_gt = max((len(v[0]) for v in gt.values()), default=0)
    n_pr = max((len(v[0]) for v in pr.values()), default=0)
    if not pr:
        return {"n_ref": n_gt, "fn": n_gt, "de_fn": n_gt}, 0, n_gt
    if not gt:
        return {"fp": n_pr}, n_pr, 0
    # a reference track is its row position within the frame; its error is the mean over
    # the segment's frames where it was matched
    track_err: dict[int, list[float]] = {}
    for f in sorted(gt.keys() & pr.keys()):
        r, _, err = _match(gt[f][0], pr[f][0])
        for i, e in zip(r.tolist(), err.tolist(), strict=True):
            track_err.setdefault(i, []).append(e)
    if not track_err:  # no common frame: the official code counts n_pr FNs (and no FP)
        return {"n_ref": n_gt, "fn": n_pr, "de_fn": n_pr}, 0, n_pr
    mean_err = np.array([sum(e) / len(e) for e in track_err.values()])
    n_far = int(np.sum(mean_err > doa_threshold))
    surplus, missing = max(0, n_pr - n_gt), max(0, n_gt - n_pr)
    inc = {"n_ref": n_gt, "total_angle": mean_err.sum(), "de_tp": len(mean_err),
           "tp": len(mean_err) - n_far, "fp_spatial": n_far,
           "fp": surplus, "fn": missing, "de_fn": missing}
    return inc, n_far + surplus, missing


def _segment_counts(ref, pred, n_classes, n_frames, seg, doa_threshold) -> SELDCounts:
    n_seg = -(-n_frames // seg)
    ref_ev, pred_ev = _events(ref, n_classes, n_seg * seg), _events(pred, n_classes, n_seg * seg)
    counts = dataclasses.asdict(SELDCounts.zeros(n_classes))
    for s in range(n_seg):
        frames = range(s * seg, (s + 1) * seg)
        loc_fp = loc_fn = 0
        for c in range(n_classes):
            gt = {f: ref_ev[f, c] for f in frames if (f, c) in ref_ev}
            pr = {f: pred_ev[f, c] for f in frames if (f, c) in pred_ev}
            inc, fp, fn = _segment_class(gt, pr, doa_threshold)
            _add(counts, c, **inc)
            loc_fp, loc_fn = loc_fp + fp, loc_fn + fn
        _ser(counts, loc_fp, loc_fn)
    return SELDCounts(**counts)


def _frame_counts(ref, pred, n_classes, n_frames, doa_threshold, dist_threshold) -> SELDCounts:
    ref_ev, pred_ev = _events(ref, n_classes, n_frames), _events(pred, n_classes, n_frames)
    for name, ev in (("reference", ref_ev), ("prediction", pred_ev)):
        if any(np.isnan(d).any() for _, d in ev.values()):
            raise ValueError(f"distance=True needs a distance on every {name} row")
    counts = dataclasses.asdict(SELDCounts.zeros(n_classes))
    for f in range(n_frames):
        loc_fp = loc_fn = 0
        for c in range(n_classes):
            gt, pr = ref_ev.get((f, c)), pred_ev.get((f, c))
            n_gt = len(gt[0]) if gt else 0
            n_pr = len(pr[0]) if pr else 0
            counts["n_ref"][c] += n_gt
            missing, surplus = max(0, n_gt - n_pr), max(0, n_pr - n_gt)
            if gt and pr:
                r, p, ang = _match(gt[0], pr[0])
                dist_err = np.abs(gt[1][r] - pr[1][p])
                rel_err = dist_err / (gt[1][r] + _EPS)
                n_far = int(np.sum((ang > doa_threshold) | (rel_err > dist_threshold)))
                _add(counts, c, tp=len(r) - n_far, fp_spatial=n_far, de_tp=len(r),
                     total_angle=ang.sum(), total_dist=dist_err.sum(),
                     total_reldist=rel_err.sum())
                loc_fp += n_far
            loc_fp += surplus
            loc_fn += missing
            _add(counts, c, fp=surplus, fn=missing, de_fn=missing)
        _ser(counts, loc_fp, loc_fn)
    return SELDCounts(**counts)


def _default_n_frames(*rows) -> int:
    return int(max((r[:, 0].max() + 1 for r in rows if len(r)), default=0))


def seld_counts(ref_rows, pred_rows, n_classes: int, *, distance: bool = False,
                segment_frames: int | None = None, doa_threshold: float = 20.0,
                dist_threshold: float = 1.0, n_frames: int | None = None) -> SELDCounts:
    """Counts of one file (reference vs prediction rows); see the module docstring."""
    ref, pred = check_rows(ref_rows), check_rows(pred_rows)
    n_frames = _default_n_frames(ref, pred) if n_frames is None else n_frames
    if distance:
        if segment_frames is not None:
            raise ValueError("the DCASE 2024 (distance) metric is frame-based: no segment_frames")
        return _frame_counts(ref, pred, n_classes, n_frames, doa_threshold, dist_threshold)
    seg = 10 if segment_frames is None else segment_frames
    if seg < 1:
        raise ValueError(f"segment_frames must be >= 1, got {seg}")
    return _segment_counts(ref, pred, n_classes, n_frames, seg, doa_threshold)


def _ratio(num, den, empty):
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), empty)


def _nanmean(x, axis=None):
    x = np.asarray(x, float)
    n = np.sum(~np.isnan(x), axis=axis)
    return _ratio(np.nansum(x, axis=axis), n, math.nan)


def seld_scores(counts: SELDCounts, *, distance: bool = False, average: str = "macro") -> dict:
    """Scores from (accumulated) counts.

    Keys: ``ER``, ``F``, ``LE`` (degrees; the 2024 "DOAE"), ``LR``, ``SELD``, with ``DE`` and
    ``RDE`` when ``distance``; ``per_class`` holds the class-wise arrays for ``'macro'``.
    """
    if average not in ("macro", "micro"):
        raise ValueError(f"average must be 'macro' or 'micro', got {average!r}")
    n_err = counts.subs + counts.dels + counts.ins
    er = float(_ratio(n_err, counts.n_ref.sum(), 0.0 if n_err == 0 else math.inf))
    c = counts
    if average == "micro":  # the class-wise formulas on summed counts
        c = SELDCounts(**{k: np.atleast_1d(np.sum(v))
                          for k, v in dataclasses.asdict(counts).items()})
    f = _ratio(c.tp, c.tp + c.fp_spatial + 0.5 * (c.fp + c.fn), 0.0)
    lr = _ratio(c.de_tp, c.de_tp + c.de_fn, 0.0)
    out = {"ER": er}
    if distance:
        le = _ratio(c.total_angle, c.de_tp, math.nan)
        de = _ratio(c.total_dist, c.de_tp, math.nan)
        rde = _ratio(c.total_reldist, c.de_tp, math.nan)
        seld = _nanmean(np.stack([1 - f, le / 180, rde]), axis=0)
        per_class = {"F": f, "LE": le, "LR": lr, "DE": de, "RDE": rde, "SELD": seld}
    else:
        le = _ratio(c.total_angle, c.de_tp, 180.0)
        seld = np.mean(np.stack([np.full_like(f, er), 1 - f, le / 180, 1 - lr]), axis=0)
        per_class = {"F": f, "LE": le, "LR": lr, "SELD": seld}
    for name, v in per_class.items():
        # the official macro averages skip NaN errors (2024) but not 0 F / LR
        out[name] = float(_nanmean(v) if name in ("LE", "DE", "RDE") else np.mean(v))
    if average == "macro":
        out["per_class"] = per_class
    return out


class SELDEvaluator:
    """Accumulates counts over files, then scores them once (the DCASE protocol)."""

    def __init__(self, n_classes: int, *, distance: bool = False,
                 segment_frames: int | None = None, doa_threshold: float = 20.0,
                 dist_threshold: float = 1.0, average: str = "macro"):
        self.n_classes, self.distance, self.average = n_classes, distance, average
        self._options = dict(distance=distance, segment_frames=segment_frames,
                             doa_threshold=doa_threshold, dist_threshold=dist_threshold)
        self.counts = SELDCounts.zeros(n_classes)

    def update(self, ref_rows, pred_rows, n_frames: int | None = None) -> None:
        self.counts = self.counts + seld_counts(ref_rows, pred_rows, self.n_classes,
                                                n_frames=n_frames, **self._options)

    def compute(self) -> dict:
        return seld_scores(self.counts, distance=self.distance, average=self.average)


def seld_metrics(ref_rows, pred_rows, n_classes: int, *, distance: bool = False,
                 segment_frames: int | None = None, doa_threshold: float = 20.0,
                 dist_threshold: float = 1.0, average: str = "macro",
                 n_frames: int | None = None) -> dict:
    """SELD scores of one file: 2023 segment-based, or 2024 frame-based when ``distance``.

    ``segment_frames`` defaults to 10 (1 s) for 2023; the 2024 metric takes none. Reference
    and predicted distances must share a unit (the relative error does not depend on it).
    """
    ev = SELDEvaluator(n_classes, distance=distance, segment_frames=segment_frames,
                       doa_threshold=doa_threshold, dist_threshold=dist_threshold,
                       average=average)
    ev.update(ref_rows, pred_rows, n_frames=n_frames)
    return ev.compute()
