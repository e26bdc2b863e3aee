"""Metrics: retrieval and probes (``retrieval``), SELD (``seld``, DCASE 2023 and 2024, with the
DCASE CSV files and multi-ACCDOA conversion in ``dcase_io``) and separation (``separation``)."""
