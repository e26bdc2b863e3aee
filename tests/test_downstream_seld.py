"""SELD head: ADPIT against a naive loop over the baseline's permutations, decoding of a
crafted multi-ACCDOA output, label-frame pooling, and a tiny training run that lowers the loss."""

import itertools
import json

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spatialav.data import pipeline
from spatialav.downstream import seld

# The DCASE 2023 baseline's candidate targets (MSELoss_ADPIT), written out by hand.
BASELINE = {
    1: [(0, 0, 0)],
    2: [(0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0)],
    3: list(itertools.permutations(range(3))),
}


def test_assignment_table_is_the_baselines():
    table = seld.assignment_table(3)
    assert table.shape == (4, 6, 3)
    for k, cands in BASELINE.items():
        assert set(map(tuple, table[k].tolist())) == set(cands)


def naive_adpit(pred, target, n_events):
    b, f, _, c, _ = pred.shape
    total = 0.0
    for i, t, j in itertools.product(range(b), range(f), range(c)):
        k = int(n_events[i, t, j])
        cands = BASELINE.get(k, [(0, 0, 0)])
        errs = []
        for cand in cands:
            tgt = np.stack([target[i, t, s, j] if k else np.zeros(pred.shape[-1])
                            for s in cand])
            errs.append(np.mean((pred[i, t, :, j] - tgt) ** 2))
        total += min(errs)
    return total / (b * f * c)


@pytest.mark.parametrize("dim", [3, 4])
def test_adpit_equals_naive_loop(dim):
    rng = np.random.default_rng(0)
    b, f, c = 2, 5, 4
    n_events = rng.integers(0, 4, (b, f, c))
    target = rng.standard_normal((b, f, 3, c, dim))
    target *= (np.arange(3)[None, None, :, None] < n_events[:, :, None, :])[..., None]
    pred = rng.standard_normal((b, f, 3, c, dim))
    got = float(seld.adpit_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(n_events)))
    assert got == pytest.approx(naive_adpit(pred, target, n_events), rel=1e-5)
    # a prediction that is one of the allowed assignments has zero loss
    perfect = np.zeros_like(pred)
    table = seld.assignment_table(3)
    for i, t, j in itertools.product(range(b), range(f), range(c)):
        perfect[i, t, :, j] = target[i, t, table[n_events[i, t, j], -1], j]
    zero = seld.adpit_loss(jnp.asarray(perfect), jnp.asarray(target), jnp.asarray(n_events))
    assert float(zero) == pytest.approx(0.0, abs=1e-12)


def _unit(az, el):
    az, el = np.radians(az), np.radians(el)
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def test_decode_crafted_output():
    acc = np.zeros((2, 3, 4, 3))
    dist = np.zeros((2, 3, 4))
    # frame 0, class 1: tracks 0 and 1 8 deg apart -> one event at their mean; track 2 weak
    acc[0, 0, 1] = 0.9 * _unit(36, 0)
    acc[0, 1, 1] = 0.9 * _unit(44, 0)
    acc[0, 2, 1] = 0.3 * _unit(-120, 0)
    dist[0, :2, 1] = 2.0, 3.0
    # frame 0, class 2: only track 2, left
    acc[0, 2, 2] = 0.8 * _unit(90, 0)
    dist[0, 2, 2] = 1.5
    # frame 1, class 1: two events 60 deg apart stay two
    acc[1, 0, 1] = _unit(0, 30)
    acc[1, 2, 1] = _unit(0, -30)
    dist[1, [0, 2], 1] = 1.0, 4.0
    rows = seld.decode(acc, dist)
    expected = np.array([[0, 1, 0, 40, 0, 250], [0, 2, 2, 90, 0, 150],
                         [1, 1, 0, 0, 30, 100], [1, 1, 2, 0, -30, 400]], np.float32)
    np.testing.assert_allclose(rows, expected, atol=1e-3)
    assert np.isnan(seld.decode(acc)[:, 5]).all()


def test_label_pooling_groups_input_frames():
    w = seld.label_pooling(51, 10, 0.02, 0.02)  # stride 1: frames 5f .. 5f+4
    expect = np.zeros((10, 51))
    for f in range(10):
        expect[f, 5 * f: 5 * f + 5] = 0.2
    np.testing.assert_allclose(w, expect, atol=1e-7)
    coarse = seld.label_pooling(7, 10, 0.16, 0.02)  # steps longer than a label frame
    np.testing.assert_allclose(coarse.sum(1), 1.0)
    assert (coarse > 0).sum(1).min() == 1


@pytest.mark.slow
def test_tiny_training_run_reduces_loss(tiny_dataset, tmp_path):
    from spatialav.downstream import config, data
    from spatialav.downstream.encoders import load_encoders
    from spatialav.models import ModelConfig
    from spatialav.train import OptimConfig, TrainConfig, Trainer

    cfg = config.tiny()
    n_classes = len(data.class_names(tiny_dataset))
    loader = pipeline.make_loader(tiny_dataset, cfg.data.pipeline, split="train",
                                  batch_size=4, seed=0)
    batch = seld.AddTargets(10, n_classes, need_distance=True)(next(iter(loader)))
    assert batch["accdoa"].shape == (4, 10, 3, n_classes, 3)
    assert batch["n_events"].max() >= 1
    stream = grain.MapDataset.source([batch]).repeat().to_iter_dataset()
    enc = load_encoders("random", model_config=ModelConfig.tiny())
    model = seld.SELDProbe(enc, n_classes, hidden=32, distance=True, rngs=nnx.Rngs(0))
    trainer = Trainer(TrainConfig(steps=30, batch_size=4, log_every=1, checkpoint_every=1000,
                                  progress=False),
                      OptimConfig(learning_rate=3e-3, warmup_steps=1, weight_decay=0.0),
                      model, seld.make_loss_fn(), iter(stream), str(tmp_path))
    before = [np.asarray(v).copy() for v in jax.tree.leaves(nnx.state(enc.audio))]
    trainer.run()
    lines = [json.loads(x) for x in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in lines if "train/loss" in r]
    assert losses[-1] < 0.7 * losses[0]
    # the frozen encoder did not move (it is not an nnx.Param, so the trainer leaves it)
    after = jax.tree.leaves(nnx.state(trainer.model().audio))
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_activity_term_is_the_bce_of_any_event_per_frame_and_class():
    """The auxiliary loss adds weight x BCE(logit, k > 0) over (batch, frame, class), computed
    here by hand, and the ADPIT term becomes the naive loop's mean over the active cells."""
    from spatialav.downstream.encoders import load_encoders
    from spatialav.models import ModelConfig

    enc = load_encoders("random", model_config=ModelConfig.tiny())
    model = seld.SELDProbe(enc, 4, hidden=8, activity=True, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    n_events = rng.integers(0, 3, (2, 10, 4)).astype(np.int32)
    batch = {"audio": rng.integers(-3000, 3000, (2, 24000, 4)).astype(np.int16),
             "rotation": np.broadcast_to(np.eye(3, dtype=np.float32), (2, 3, 3)),
             "accdoa": rng.standard_normal((2, 10, 3, 4, 3)).astype(np.float32),
             "n_events": n_events, "distance": np.zeros((2, 10, 3, 4), np.float32)}
    loss, m = seld.make_loss_fn(activity_weight=0.5)(model, batch, None, 0)
    h = model.hidden(pipeline.device_audio(batch, model.fmt))
    z = np.asarray(model.head.activity(h), np.float64)
    y = (n_events > 0).astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert float(m["activity_bce"]) == pytest.approx(bce, rel=1e-4)
    acc = np.asarray(model.head.outputs(h)[0], np.float64)
    active = n_events > 0
    only = np.where(active[:, :, None, :, None], acc, 0.0)  # silent cells' error: 0
    doa = naive_adpit(only, batch["accdoa"] * active[:, :, None, :, None], n_events)
    doa *= n_events.size / active.sum()
    assert float(m["adpit"]) == pytest.approx(doa, rel=1e-4)
    assert float(loss) == pytest.approx(doa + 0.5 * bce, rel=1e-4)


def test_activity_calibrated_output_takes_activity_from_p_and_direction_from_the_tracks():
    acc = np.zeros((1, 1, 3, 3, 3), np.float32)
    acc[0, 0, 0, 0] = 0.3 * _unit(40, 10)  # class 0: weak vector, p = 0.8 -> active
    acc[0, 0, 1, 0] = 0.3 * _unit(-100, 0)  # ... an equally strong second track -> two events
    acc[0, 0, 0, 1] = 0.9 * _unit(0, 0)  # class 1: strong vector, p = 0.3 -> inactive
    acc[0, 0, 0, 2] = 0.8 * _unit(90, 0)  # class 2: p = 0.9, second track at half the norm
    acc[0, 0, 2, 2] = 0.4 * _unit(-90, 0)  # -> 0.45 < 0.5: not a second event
    p = np.array([[[0.8, 0.3, 0.9]]], np.float32)
    out = np.asarray(seld.activity_calibrated(jnp.asarray(acc), jnp.asarray(p)))[0]
    np.testing.assert_allclose(np.linalg.norm(out[0, 0, 0]), 0.8, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out[0, 2, 2]), 0.45, rtol=1e-5)
    rows = seld.decode(out)
    np.testing.assert_allclose(rows[:, :5], [[0, 0, 0, 40, 10], [0, 0, 1, -100, 0],
                                             [0, 2, 0, 90, 0]], atol=1e-3)
