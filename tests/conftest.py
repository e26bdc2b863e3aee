"""Fixtures shared by the test modules.

``tiny_root`` / ``tiny_dataset``: the ``tiny`` synthetic dataset, built once per test session
(tests read it and never write into it; a test that needs its own copy builds one).
The helper modules beside the tests (``corpora``, ``toy_training``) and the experiment scripts
are importable by name through pytest's ``pythonpath`` setting (pyproject.toml).
"""

import os
import tempfile

import pytest

from spatialav.data import synthetic

# Before any test imports ultralytics: its settings go to a temporary directory, never the
# user's, and it must not reach the network.
os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="spatialav-yolo-")
os.environ["YOLO_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """Root directory holding the tiny synthetic set."""
    root = tmp_path_factory.mktemp("tiny_data")
    synthetic.ensure_synthetic(root, "tiny", workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tiny_root):
    return synthetic.dataset_dir(tiny_root, "tiny")
