"""Models for pretraining and probing: encoders (``audio``, ``visual``), heads (``heads``:
projections and the AVSA context transformer), the AVC / AVSA bundle ``AVModel`` with its
``ModelConfig`` (``avmodel``), and the separation U-Net (``separation``)."""

from spatialav.models.audio import AudioEncoder
from spatialav.models.avmodel import AVModel, ModelConfig, count_params, init_model
from spatialav.models.heads import ProjectionHead, ViewTransformer
from spatialav.models.visual import VisualEncoder

__all__ = [
    "AVModel",
    "AudioEncoder",
    "ModelConfig",
    "ProjectionHead",
    "ViewTransformer",
    "VisualEncoder",
    "count_params",
    "init_model",
]
