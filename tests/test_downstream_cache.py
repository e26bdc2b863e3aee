"""The frozen-feature cache: a head on cached encoder outputs gives the outputs of the whole
probe on the same clips (training items and evaluation windows), the cache is reused only for
the same encoder, label subsets are seeded and nested, and the per-clip SELD pieces sum to the
DCASE evaluator's scores."""

import dataclasses

import numpy as np
import pytest
from flax import nnx

from spatialav.data import pipeline, storage
from spatialav.downstream import classification, config, data, doa, feature_cache, runner, seld
from spatialav.downstream.encoders import load_encoders
from spatialav.metrics.seld import SELDEvaluator
from spatialav.models import ModelConfig

N_AUG, SEED = 2, 5


@pytest.fixture(scope="module", name="cached")
def cached_fixture(tiny_dataset, tmp_path_factory):
    cfg = config.tiny()
    enc = load_encoders("random", model_config=ModelConfig.tiny(), seed=3)
    pcfg = dataclasses.replace(cfg.data.pipeline, rotation="yaw", input_format=enc.fmt)
    cache = tmp_path_factory.mktemp("features")
    kw = dict(n_augment=N_AUG, seed=SEED, use_video=False, eval_split="test", eval_clips=3)
    train, ev, info = feature_cache.cached_features(enc, tiny_dataset, pcfg, cache, **kw)
    assert info["computed"]
    return dict(cfg=cfg, enc=enc, pcfg=pcfg, train=train, ev=ev, cache=cache, kw=kw,
                dataset=tiny_dataset)


def _train_example(dataset, pcfg, clip, aug):
    record = storage.open_split(dataset, "train")[clip]
    return pipeline.prepare_clip(record, np.random.default_rng([SEED, clip, aug]), pcfg,
                                 augment=True)


def _probes(enc, n_classes):
    rngs = nnx.Rngs(7)
    return (classification.ClassifyProbe(enc, n_classes, rngs=rngs),
            seld.SELDProbe(enc, n_classes, hidden=16, activity=True, rngs=rngs),
            doa.DOAProbe(enc, n_classes, rngs=rngs))


def test_cached_training_items_give_the_probes_outputs(cached):
    train, enc, pcfg = cached["train"], cached["enc"], cached["pcfg"]
    n_classes = len(data.class_names(cached["dataset"]))
    classify, seld_probe, doa_probe = _probes(enc, n_classes)
    n_frames = int(round(pcfg.crop_s / seld.LABEL_HOP_S))
    assert len(train["clip"]) == N_AUG * (train["clip"].max() + 1)
    for row in (0, 1, len(train["clip"]) - 1):  # both augmentations of a clip, and the last
        clip, aug = int(train["clip"][row]), row % N_AUG
        ex = _train_example(cached["dataset"], pcfg, clip, aug)
        batch = {k: ex[k][None] for k in ("audio", "rotation")}
        audio = pipeline.device_audio(batch, enc.fmt)
        np.testing.assert_allclose(train["labels"][row], ex["labels"])
        np.testing.assert_allclose(classify.head(train["pooled"][row][None]), classify(audio),
                                   rtol=1e-5, atol=1e-5)
        cached_acc = seld.calibrated_outputs(
            seld_probe.head, seld_probe.head.hidden(train["seq"][row][None], n_frames))[0]
        np.testing.assert_allclose(cached_acc, seld_probe(audio)[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(doa_probe.head(train["seq"][row][None], n_frames),
                                   doa_probe(audio), rtol=1e-5, atol=1e-5)
    # the augmentations differ: two rotations of one crop are not the same input
    assert not np.allclose(train["seq"][0], train["seq"][1])


def test_cached_evaluation_gives_the_probes_outputs_on_whole_clips(cached):
    ev, enc, pcfg, cfg = cached["ev"], cached["enc"], cached["pcfg"], cached["cfg"]
    n_classes = len(data.class_names(cached["dataset"]))
    classify, seld_probe, doa_probe = _probes(enc, n_classes)
    src = storage.open_split(cached["dataset"], "test")
    eye = np.eye(3, dtype=np.float32)[None]
    logits = runner.head_outputs(dataclasses.replace(cfg, task="classify"), pcfg,
                                 classify.head, ev)
    seld_out = runner.head_outputs(dataclasses.replace(cfg, task="seld"), pcfg,
                                   seld_probe.head, ev)
    doa_out = runner.head_outputs(dataclasses.replace(cfg, task="doa"), pcfg, doa_probe.head,
                                  ev)
    assert len(seld_out) == len(doa_out) == 3
    for c in range(3):
        record = src[c]
        centre = pipeline.prepare_clip(record, np.random.default_rng(1), pcfg, augment=False)
        audio = pipeline.device_audio({"audio": centre["audio"][None], "rotation": eye}, enc.fmt)
        np.testing.assert_allclose(logits[c], classify(audio)[0], rtol=1e-5, atol=1e-5)
        win = seld.windows(record["audio"], int(pcfg.crop_s * record["sample_rate"]))
        audio = pipeline.device_audio({"audio": win, "rotation": np.repeat(eye, len(win), 0)},
                                  enc.fmt)
        n = int(ev["n_frames"][c])
        acc = np.asarray(seld_probe(audio)[0])
        np.testing.assert_allclose(seld_out[c][0], acc.reshape(-1, *acc.shape[2:])[:n],
                                   rtol=1e-5, atol=1e-5)
        directions = np.asarray(doa_probe(audio))
        np.testing.assert_allclose(doa_out[c], directions.reshape(-1, *directions.shape[2:])[
            :n], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ev["rows"][c][ev["row_mask"][c]], record["labels"])


def test_the_cache_is_reused_for_the_same_encoder_only(cached):
    again = feature_cache.cached_features(cached["enc"], cached["dataset"], cached["pcfg"],
                                          cached["cache"], **cached["kw"])
    assert not again[2]["computed"]
    for k, v in cached["train"].items():
        np.testing.assert_array_equal(again[0][k], v)
    other = load_encoders("random", model_config=ModelConfig.tiny(), seed=4)
    ident = [feature_cache.cache_identity(e, cached["dataset"], cached["pcfg"], **cached["kw"])
             for e in (cached["enc"], other)]
    assert ident[0]["weights"] != ident[1]["weights"]
    more = dict(cached["kw"], n_augment=3)
    assert feature_cache.cache_identity(cached["enc"], cached["dataset"], cached["pcfg"],
                                        **more) != ident[0]


def test_label_subsets_are_seeded_and_nested():
    subsets = {f: set(data.label_subset(1600, f, seed=2)) for f in (0.01, 0.1, 1.0)}
    assert [len(subsets[f]) for f in (0.01, 0.1, 1.0)] == [16, 160, 1600]
    assert subsets[0.01] < subsets[0.1] < subsets[1.0] == set(range(1600))
    np.testing.assert_array_equal(data.label_subset(1600, 0.1, 2), data.label_subset(1600, 0.1, 2))
    assert set(data.label_subset(1600, 0.1, 3)) != subsets[0.1]
    assert len(data.label_subset(10, 0.01, 0)) == 1  # never empty


def test_cached_batches_hold_only_the_chosen_rows():
    arrays = {"clip": np.repeat(np.arange(20), 2), "x": np.arange(40.0)}
    rows = np.flatnonzero(np.isin(arrays["clip"], [3, 11]))
    it = iter(feature_cache.cached_loader(arrays, rows, batch_size=4, seed=0))
    seen = np.concatenate([next(it)["clip"] for _ in range(10)])
    assert set(seen) == {3, 11}
    state = it.get_state()  # checkpointable: a fresh iterator resumes where this one is
    ahead = next(it)["x"]
    fresh = iter(feature_cache.cached_loader(arrays, rows, batch_size=4, seed=0))
    fresh.set_state(state)
    np.testing.assert_array_equal(next(fresh)["x"], ahead)


def test_per_clip_seld_pieces_score_as_the_dcase_evaluator(cached):
    """Random outputs over the evaluation clips: ClipScores on all clips equals SELDEvaluator
    fed the same decoded rows, and a resample with repeats equals the evaluator fed the
    clips that many times."""
    ev = cached["ev"]
    n_classes = len(data.class_names(cached["dataset"]))
    rng = np.random.default_rng(0)
    scores, ev23, ev24, preds = seld.ClipScores(n_classes, distance=True), SELDEvaluator(
        n_classes), SELDEvaluator(n_classes, distance=True), []
    for c in range(3):
        n = int(ev["n_frames"][c])
        acc = rng.uniform(-0.7, 0.7, (n, 3, n_classes, 3)).astype(np.float32)
        dist = rng.uniform(0.5, 3, (n, 3, n_classes)).astype(np.float32)
        rows = ev["rows"][c][ev["row_mask"][c]]
        rows[:, 5] = rng.uniform(50, 300, len(rows))  # the 2024 metric needs distances
        preds.append((scores.add(acc, dist, rows, n), rows, n))
    for pred, rows, n in preds:
        ev23.update(rows, pred, n_frames=n)
        ev24.update(rows, pred, n_frames=n)
    got = scores.scores(np.arange(3))
    for name, evaluator in (("dcase2023", ev23), ("dcase2024", ev24)):
        want = evaluator.compute()
        for k, v in got[name].items():
            assert v == pytest.approx(want[k], rel=1e-9, abs=1e-12), (name, k)
    again = SELDEvaluator(n_classes)
    for c in (0, 0, 2):
        again.update(preds[c][1], preds[c][0], n_frames=preds[c][2])
    assert scores.scores(np.array([0, 0, 2]))["dcase2023"]["F"] == pytest.approx(
        again.compute()["F"])


def test_doa_errors_of_crafted_outputs():
    rows = np.array([[0, 1, 0, 90.0, 0.0, 100], [1, 1, 0, 0.0, 0.0, 100],
                     [1, 2, 0, 0.0, 0.0, 100], [1, 2, 1, 180.0, 0.0, 100]], np.float32)
    pred = np.zeros((2, 3, 3), np.float32)
    pred[0, 1] = [0, 1, 0]  # azimuth 90: exact
    pred[1, 1] = [0, 1, 0]  # 90 deg off
    errors = doa.clip_errors(pred, rows, 2, 3)  # class 2 has two events in frame 1: skipped
    np.testing.assert_allclose(np.sort(errors), [0.0, 90.0], atol=1e-4)
    m = doa.doa_metrics(errors)
    assert m["median_deg"] == pytest.approx(45.0, abs=1e-4) and m["within_20deg"] == 0.5
