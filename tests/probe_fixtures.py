"""Fixtures shared by the probe tests: one tiny synthetic dataset per test session.

Import ``tiny_root_fixture`` / ``tiny_dataset_fixture`` into a test module; tests then ask for
``tiny_root`` / ``tiny_dataset``.
"""

import pytest

from spatialav.data import synthetic


@pytest.fixture(scope="module", name="tiny_root")
def tiny_root_fixture(tmp_path_factory):
    """Root holding the tiny synthetic set, built once per session (ensure_synthetic reuses it)."""
    root = tmp_path_factory.getbasetemp() / "probe_data"
    synthetic.ensure_synthetic(root, "tiny", workers=1)
    return root


@pytest.fixture(scope="module", name="tiny_dataset")
def tiny_dataset_fixture(tiny_root):
    return synthetic.dataset_dir(tiny_root, "tiny")
