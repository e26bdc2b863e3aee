"""Metrics: retrieval and probes (here), SELD and separation (beside it)."""
