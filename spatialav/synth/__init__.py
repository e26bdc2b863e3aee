"""Synthetic 360° audio-visual scenes with exact ground truth.

``render_clip(seed, cfg)`` samples a scene (``scene``), renders its first-order ambisonics in
a shoebox room (``room``), draws the matching equirect video with one class sprite per object
(``sprites``, ``video``) and returns a ``Clip`` with labels. The dry sounds come from
``source_bank``.
"""

from spatialav.synth.clip import LABEL_HOP_S, Clip
from spatialav.synth.render import render_clip
from spatialav.synth.scene import ObjectSpec, SceneConfig, SceneSpec, SourceSpec, sample_scene

__all__ = [
    "LABEL_HOP_S",
    "Clip",
    "ObjectSpec",
    "SceneConfig",
    "SceneSpec",
    "SourceSpec",
    "render_clip",
    "sample_scene",
]
