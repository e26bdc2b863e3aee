"""Metrics: cross-modal retrieval (``retrieval``), the binary linear probe
(``logistic_probe``), bootstrap intervals (``bootstrap``), SELD (``seld``, DCASE 2023 and
2024, with the DCASE CSV files and multi-ACCDOA conversion in ``dcase_io``) and separation
(``separation``)."""
