"""spatialav: self-supervised audio-visual learning from 360° video with first-order ambisonics."""

__version__ = "0.1.0"
