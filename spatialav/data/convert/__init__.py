"""Converters from real 360° audio-visual datasets to the spatialav schema.

``build`` holds the shared parallel, resumable builder and its report; ``media`` decodes audio
and video (resampling, frame-rate conversion, resizing, AAC padding); ``channels`` the
declared channel layouts (ambiX, FuMa, YT-360's 6-channel map); ``clips`` cuts recordings
into fixed-length clips with re-based labels; ``starss23``, ``yt360`` and ``folder`` list each
dataset's files and convert one recording; ``calibration`` writes test scenes with a known
source direction and measures directions back.
"""
