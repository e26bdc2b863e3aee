"""YOLO object detection on equirectangular 360° frames, as directions on the sphere.

``detect(model, frames)`` runs any ultralytics YOLO model (a weights path or a loaded
``YOLO``) on equirect frames ``[N, H, W, 3]`` uint8 (or their encoded bytes) and returns
``Detections``: per detection its video frame, class, score, centre direction (azimuth,
elevation, radians, docs/DESIGN.md §2), angular extent and track.

The package, by concern:

- ``record``: the ``Detections`` type and the sphere-aware operations on it (overlap across
  the seam, NMS, matching against ground truth, ground-truth boxes as detections);
- ``views``: how the sphere is shown to a planar detector (the seam-padded frame, or twelve
  upright gnomonic tiles with ``DetectConfig(tiles='sphere')``) and its boxes mapped back;
- ``tracking``: detections of consecutive frames linked into tracks;
- ``yolo``: ``DetectConfig``, loading the weights offline, and ``detect`` itself.

Detections precomputed for a whole dataset (``data_tools/detect.py``) are stored next to it by
``spatialav.data.detections``, which the input pipeline reads for
``objects_from='detections'``.
"""

from spatialav.detect.record import (
    Detections,
    angular_iou,
    angular_size,
    boxes_to_detections,
    concat,
    match,
    merge_duplicates,
)
from spatialav.detect.tracking import link_tracks
from spatialav.detect.views import (
    SPHERE_TILES,
    merge_tiles,
    pad_seam,
    padded_boxes_to_detections,
    tile_boxes_to_detections,
    tile_pixels,
    tile_rays,
    tile_size,
)
from spatialav.detect.yolo import (
    DEFAULT_WEIGHTS,
    DETECTORS_DIR,
    DetectConfig,
    as_frames,
    check_weights,
    detect,
    import_ultralytics,
    load_model,
    model_imgsz,
)

__all__ = [
    "DEFAULT_WEIGHTS", "DETECTORS_DIR", "SPHERE_TILES", "DetectConfig", "Detections",
    "angular_iou", "angular_size", "as_frames", "boxes_to_detections", "check_weights",
    "concat", "detect", "import_ultralytics", "link_tracks", "load_model", "match",
    "merge_duplicates", "merge_tiles", "model_imgsz", "pad_seam", "padded_boxes_to_detections",
    "tile_boxes_to_detections", "tile_pixels", "tile_rays", "tile_size",
]
