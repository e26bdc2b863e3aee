"""Downstream heads on pretrained (or random) encoders: classification, SELD, localisation
maps (and separation, in ``separation``); ``python -m spatialav.probe`` runs them.

``encoders.load_encoders`` is the shared entry point for loading encoders from a pretraining
work directory; ``config`` holds the probe presets and ``runner`` trains and scores a head
with the shared trainer.
"""
