"""DCASE SELD label files and the multi-ACCDOA representation.

A DCASE Task 3 file (STARSS23, DCASE 2020-2024) has one row per active event per 100 ms label
frame and no header: ``frame, class, track, azimuth, elevation[, distance]``. Reference files
hold integer degrees, predictions may hold floats; the 2024 format adds the distance (cm in
STARSS23). Like the official DCASE scoring, the reader also takes ``frame, class, azimuth,
elevation`` (no track: track 0) and ignores rows whose class is outside the class list
(counted, with one warning per file). Azimuth and elevation follow docs/DESIGN.md §2
Conventions (counter-clockwise from the front, up-positive), which is also DCASE's.

In memory a file is a float32 array ``[rows, 6]`` with those columns (``ROW_COLUMNS``); float32
holds the integer indices exactly. A file without distances (5 columns) gets distance NaN, not 0:
0 looks like a real distance, while NaN cannot be mistaken for one and the distance-aware
metric refuses it. Distances keep the file's unit.

Multi-ACCDOA (DCASE 2023 baseline): per frame, up to ``n_tracks`` tracks per class, each an
activity-coupled Cartesian DOA vector, unit length when active and zero otherwise.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from spatialav.geometry import direction_to_vector, vector_to_direction

FRAME_SECONDS = 0.1
ROW_COLUMNS = ("frame", "class", "track", "azimuth", "elevation", "distance")


def _parse_line(text: str) -> list[float]:
    """One CSV line -> six numbers; raises ValueError with a message (no location)."""
    words = [w.strip() for w in text.split(",")]
    if len(words) not in (4, 5, 6):
        raise ValueError(f"expected 4, 5 or 6 comma-separated columns, got {len(words)}")
    if len(words) == 4:  # frame, class, azimuth, elevation: one track
        words.insert(2, "0")
    try:
        frame, cls, track = (int(w) for w in words[:3])
    except ValueError:
        raise ValueError("frame, class and track must be integers") from None
    try:
        az, el, *dist = (float(w) for w in words[3:])
    except ValueError:
        raise ValueError("azimuth, elevation and distance must be numbers") from None
    if frame < 0 or track < 0 or cls < 0:
        raise ValueError("frame, class and track must be non-negative")
    if not -180.0 <= az <= 180.0:
        raise ValueError(f"azimuth {az} outside [-180, 180]")
    if not -90.0 <= el <= 90.0:
        raise ValueError(f"elevation {el} outside [-90, 90]")
    d = dist[0] if dist else math.nan
    if dist and not (math.isfinite(d) and d >= 0):
        raise ValueError(f"distance {d} must be finite and non-negative")
    return [frame, cls, track, az, el, d]


def parse_dcase_lines(lines, source: str = "<lines>",
                      n_classes: int | None = None) -> tuple[np.ndarray, int]:
    """(rows ``[n, 6]`` float32, number of rows ignored) from DCASE CSV lines; blank lines are
    skipped, and with ``n_classes`` so are rows of a class ``>= n_classes`` (counted).

    A bad line raises ValueError naming ``source`` and its 1-based line number.
    """
    rows, ignored = [], 0
    for lineno, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = _parse_line(text)
        except ValueError as err:
            raise ValueError(f"{source}:{lineno}: {err}: {text.strip()!r}") from None
        if n_classes is not None and row[1] >= n_classes:
            ignored += 1
        else:
            rows.append(row)
    return np.asarray(rows, np.float32).reshape(-1, 6), ignored


def ignored_message(source, ignored: int, n_classes: int) -> str:
    return f"{source}: ignored {ignored} rows whose class is outside [0, {n_classes})"


def read_dcase_csv(path, n_classes: int | None = None) -> np.ndarray:
    """Read a DCASE label / prediction file into rows ``[n, 6]`` float32 (file order kept);
    rows of a class outside ``[0, n_classes)`` are dropped with one warning."""
    with open(path) as f:
        rows, ignored = parse_dcase_lines(f, source=os.fspath(path), n_classes=n_classes)
    if ignored:
        warnings.warn(ignored_message(os.fspath(path), ignored, n_classes), stacklevel=2)
    return rows


def _number(v) -> str:
    # shortest text that reads back to the same float32; integral values print as integers
    return np.format_float_positional(np.float32(v), trim="-")


def check_rows(rows) -> np.ndarray:
    """``rows`` as float32 ``[n, 6]``; ``[n, 5]`` (no distance) gets a NaN distance column."""
    rows = np.asarray(rows, np.float32)
    if rows.ndim != 2 or rows.shape[1] not in (5, 6):
        raise ValueError(f"DCASE rows must be [n, 5] or [n, 6], got shape {rows.shape}")
    if rows.shape[1] == 5:
        rows = np.concatenate([rows, np.full((len(rows), 1), np.nan, np.float32)], axis=1)
    return rows


def write_dcase_csv(path, rows) -> None:
    """Write rows as a DCASE CSV: 6 columns if every row has a distance, 5 if none has."""
    rows = check_rows(rows)
    has_dist = ~np.isnan(rows[:, 5])
    if has_dist.any() and not has_dist.all():
        raise ValueError(f"{path}: some rows have a distance and others not")
    n_cols = 6 if has_dist.all() and len(rows) else 5
    with open(path, "w") as f:
        for r in rows:
            ints = [str(int(v)) for v in r[:3]]
            f.write(",".join(ints + [_number(v) for v in r[3:n_cols]]) + "\n")


def _rank_within_group(keys: np.ndarray) -> np.ndarray:
    """For sorted ``keys``, each element's position within its run of equal keys."""
    idx = np.arange(len(keys))
    starts = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)
    return idx - np.maximum.accumulate(np.where(starts, idx, 0))


def rows_to_accdoa(rows, n_frames: int, n_classes: int, n_tracks: int = 3):
    """Dense multi-ACCDOA targets from rows.

    Returns ``accdoa [n_frames, n_tracks, n_classes, 3]`` (unit vectors, zero where inactive)
    and ``dist [n_frames, n_tracks, n_classes]`` (0 where inactive, NaN where the row had no
    distance). Same-class events of a frame fill tracks 0, 1, ... in order of their track id;
    beyond ``n_tracks`` they are dropped, like the baseline's ADPIT labels. Rows at frames
    ``>= n_frames`` are dropped too (labels may run past the end of the audio).
    """
    rows = check_rows(rows)
    cls = rows[:, 1].astype(np.int64)
    if len(rows) and (cls.max() >= n_classes or rows[:, 0].min() < 0):
        raise ValueError(f"rows hold a class outside [0, {n_classes}) or a negative frame")
    order = np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))  # frame, then class, then track
    rows = rows[order]
    frame, cls = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    slot = _rank_within_group(frame * n_classes + cls)
    keep = (slot < n_tracks) & (frame < n_frames)
    frame, cls, slot, rows = frame[keep], cls[keep], slot[keep], rows[keep]

    accdoa = np.zeros((n_frames, n_tracks, n_classes, 3), np.float32)
    dist = np.zeros((n_frames, n_tracks, n_classes), np.float32)
    az, el = np.deg2rad(rows[:, 3].astype(np.float64)), np.deg2rad(rows[:, 4].astype(np.float64))
    accdoa[frame, slot, cls] = direction_to_vector(az, el)
    dist[frame, slot, cls] = rows[:, 5]
    return accdoa, dist


def _angle_deg(u, v) -> float:
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(u, v)), np.dot(u, v))))


def _similar_groups(vecs: np.ndarray, threshold_deg: float) -> list[list[int]]:
    """Connected groups of vectors whose pairwise angle is below the threshold."""
    label = list(range(len(vecs)))
    for i in range(len(vecs)):
        for j in range(i + 1, len(vecs)):
            if _angle_deg(vecs[i], vecs[j]) < threshold_deg and label[j] != label[i]:
                old = label[j]
                label = [label[i] if lab == old else lab for lab in label]
    return [[i for i in range(len(vecs)) if label[i] == lab] for lab in dict.fromkeys(label)]


def accdoa_to_rows(accdoa, dist=None, threshold: float = 0.5, unify_threshold_deg: float = 15.0):
    """Rows ``[n, 6]`` from multi-ACCDOA outputs ``[n_frames, n_tracks, n_classes, 3]``.

    The DCASE 2023 baseline post-processing: a track is active when its vector norm exceeds
    ``threshold``; active tracks of the same class and frame closer than
    ``unify_threshold_deg`` are merged into one event at their mean vector (and mean distance).
    For the baseline's 3 tracks this is its case analysis (no pair / one pair / two or more
    pairs similar); for other track counts it merges connected groups. The track column holds
    the lowest track slot of each event; distance is NaN when ``dist`` is None. Rows are sorted
    by frame, class and track.
    """
    accdoa = np.asarray(accdoa, np.float64)
    if accdoa.ndim != 4 or accdoa.shape[-1] != 3:
        raise ValueError(f"accdoa must be [frames, tracks, classes, 3], got {accdoa.shape}")
    dist = None if dist is None else np.asarray(dist, np.float64)
    active = np.linalg.norm(accdoa, axis=-1) > threshold
    rows = []
    for t, c in zip(*np.nonzero(active.any(axis=1)), strict=True):
        slots = np.flatnonzero(active[t, :, c])
        for group in _similar_groups(accdoa[t, slots, c], unify_threshold_deg):
            members = slots[group]
            az, el = vector_to_direction(accdoa[t, members, c].mean(axis=0))
            d = dist[t, members, c].mean() if dist is not None else np.nan
            rows.append([t, c, members[0], np.degrees(az), np.degrees(el), d])
    return np.asarray(rows, np.float32).reshape(-1, 6)
