"""Tracks: detections of consecutive frames linked by optimal assignment (Hungarian) on
great-circle distance, same class only, allowing short gaps."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spatialav import geometry
from spatialav.detect.record import Detections


def link_tracks(dets: Detections, max_distance: float = math.radians(10.0),
                max_gap: int = 2) -> Detections:
    """Detections with ``track`` ids (0, 1, ... by first appearance).

    Frame by frame, detections are matched to the tracks seen within the last
    ``max_gap + 1`` frames by minimum total great-circle distance (Hungarian), same class
    only and at most ``max_distance`` from the track's last position; the others start
    new tracks.
    """
    from scipy.optimize import linear_sum_assignment

    track = np.full(len(dets), -1, np.int32)
    last = []  # per track: (frame, azimuth, elevation, class)
    for f in np.unique(dets.frame):
        idx = np.flatnonzero(dets.frame == f)
        live = [t for t, (lf, *_) in enumerate(last) if f - lf <= max_gap + 1]
        matched = {}
        if live:
            t_az, t_el, t_cls = (np.array([last[t][k] for t in live]) for k in (1, 2, 3))
            cost = geometry.angular_distance(dets.azimuth[idx, None], dets.elevation[idx, None],
                                             t_az[None], t_el[None])
            cost = np.where((dets.cls[idx, None] == t_cls[None]) & (cost <= max_distance),
                            cost, 1e6)
            rows, cols = linear_sum_assignment(cost)
            matched = {r: live[c] for r, c in zip(rows, cols, strict=True) if cost[r, c] < 1e6}
        for r, i in enumerate(idx):
            t = matched.get(r)
            if t is None:
                t = len(last)
                last.append(None)
            last[t] = (f, dets.azimuth[i], dets.elevation[i], dets.cls[i])
            track[i] = t
    return dataclasses.replace(dets, track=track)
