"""Precomputed detections of a dataset: the sidecar that ``data_tools/detect.py`` writes.

They live next to the dataset as ``<dataset_dir>/detections/<split>/part-<start>-<stop>.npz``,
one file per range of record indices, each holding ``clip_id`` [n] str, ``num_frames`` [n]
int32, ``offsets`` [n + 1] int64 and ``rows`` [R, 8] float32 in the schema's ``detections``
layout (video frame, class, azimuth, elevation, width, height, score, track; clip i's rows
are ``rows[offsets[i]:offsets[i + 1]]``), with ``config.json`` (weights, ``DetectConfig``,
clip count). ``load_detections`` reads them back; ``with_detections`` (what the input
pipeline uses for ``objects_from='detections'``) adds them to a split's records as a
``DetectionsSource``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from spatialav.data import storage
from spatialav.detect.record import Detections

SIDECAR_DIR = "detections"  # <dataset_dir>/detections/<split>/


def sidecar_dir(dataset_dir, split: str) -> Path:
    """Where ``data_tools/detect.py`` writes a split's detections (module docstring)."""
    return storage.find_dataset_dir(dataset_dir) / SIDECAR_DIR / split


def part_name(start: int, stop: int) -> str:
    return f"part-{start:06d}-{stop:06d}.npz"


def save_part(path: Path, clips: Mapping[str, Detections]) -> None:
    """Write one part file atomically (a temp name, then a rename)."""
    dets = list(clips.values())
    offsets = np.cumsum([0] + [len(d) for d in dets]).astype(np.int64)
    rows = np.concatenate([d.to_rows() for d in dets]) if dets else np.zeros((0, 8), np.float32)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, clip_id=np.array(list(clips), dtype=str),
                 num_frames=np.array([d.num_frames for d in dets], np.int32),
                 offsets=offsets, rows=rows)
    os.replace(tmp, path)


def load_part(path: Path) -> dict[str, Detections]:
    with np.load(path) as z:
        ids, n, off, rows = z["clip_id"], z["num_frames"], z["offsets"], z["rows"]
    return {str(c): Detections.from_rows(rows[off[i] : off[i + 1]], n[i])
            for i, c in enumerate(ids)}


def detect_command(dataset_dir, splits: Sequence[str]) -> str:
    """The command that writes the detections sidecar of ``splits``."""
    return f"python data_tools/detect.py --data {dataset_dir} --split {' '.join(splits)}"


def load_detections(dataset_dir, split: str, directory=None) -> dict[str, Detections]:
    """``{clip_id: Detections}`` of a split, precomputed by ``data_tools/detect.py``.

    ``directory`` overrides the default ``sidecar_dir(dataset_dir, split)``. Raises
    FileNotFoundError when there are none and ValueError when the run is unfinished; both
    name the folder and the command that (re)makes it.
    """
    root = Path(directory) if directory is not None else sidecar_dir(dataset_dir, split)
    redo = detect_command(dataset_dir if dataset_dir is not None else "DATASET_DIR", [split])
    config = root / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"no detections for split {split!r}: {root} does not exist or "
                                f"has no config.json; compute them with {redo}")
    total = json.loads(config.read_text())["num_clips"]
    out, covered = {}, 0
    for path in sorted(root.glob("part-*.npz")):
        start, stop = (int(v) for v in path.stem.split("-")[1:])
        if start != covered:
            break
        out.update(load_part(path))
        covered = stop
    if covered != total:
        raise ValueError(f"{root} covers clips [0, {covered}) of {total}: unfinished; run "
                         f"{redo} again to finish it")
    return out


def with_detections(source, dataset_dir, split: str) -> DetectionsSource:
    """``source`` (the split ``split`` of ``dataset_dir``) with its precomputed detections;
    ValueError when the sidecar is of another number of clips (another build of the set)."""
    dets = load_detections(dataset_dir, split)
    if len(dets) != len(source):
        where = sidecar_dir(dataset_dir, split)
        raise ValueError(f"{where} holds detections of {len(dets)} clips but split {split!r} "
                         f"of {dataset_dir} has {len(source)}: they were made for another "
                         f"build of it; delete {where} and run "
                         f"{detect_command(dataset_dir, [split])}")
    return DetectionsSource(source, dets, origin=str(sidecar_dir(dataset_dir, split)))


class DetectionsSource:
    """A split's random-access source whose records also hold ``detections`` rows ``[R, 8]``
    (the schema layout that ``pipeline.PipelineConfig(objects_from='detections')`` reads).
    A record whose frame count differs from the one its detections were made on (so their
    frame numbers would point at other times) raises ValueError naming ``origin``.
    Picklable, for grain workers (it holds only the rows: a few KB per clip)."""

    def __init__(self, source, detections: Mapping[str, Detections], origin: str = "detections"):
        self.source, self.origin = source, origin
        self.rows = {k: d.to_rows() for k, d in detections.items()}
        self.num_frames = {k: d.num_frames for k, d in detections.items()}

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index):
        record = dict(self.source[index])
        clip_id = record["clip_id"]
        clip_id = clip_id.decode() if isinstance(clip_id, bytes) else str(clip_id)
        if clip_id not in self.rows:
            raise ValueError(f"{self.origin} has no detections for clip {clip_id!r}: they "
                             "were made for another build of the dataset; recompute them")
        if "frames" in record and len(record["frames"]) != self.num_frames[clip_id]:
            raise ValueError(f"{self.origin}: clip {clip_id!r} has {len(record['frames'])} "
                             f"frames but its detections were made on "
                             f"{self.num_frames[clip_id]}; recompute them")
        record["detections"] = self.rows[clip_id]
        return record
