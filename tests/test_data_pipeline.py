"""grain loaders: determinism, per-process sharding, exact resume, the batch contract."""

import dataclasses
import itertools

import grain
import jax
import numpy as np
import pytest
from etils import epath

from spatialav import ambisonics
from spatialav.data import pipeline, schema, storage
from spatialav.data import transforms as T

SR, FPS, DUR, HW = 8000, 5.0, 2.0, (16, 32)
N_CLIPS = 12


def _record(i: int) -> dict:
    """A clip laid out as ``storage.open_split`` returns it, with traceable contents:
    audio channel 0 holds the clip number and channel 1 the sample index; frame f is grey
    level 20 f + 10; label frame f has azimuth f degrees; box rows name their frame."""
    n, nf = int(SR * DUR), int(FPS * DUR)
    audio = np.zeros((n, 4), np.int16)
    audio[:, 0], audio[:, 1] = i, np.arange(n)
    frames = np.array([schema.encode_jpeg(np.full((*HW, 3), 20 * f + 10, np.uint8))
                       for f in range(nf)], dtype=object)
    labels = np.array([[f, i % 5, 0, f, 0.0, 100.0] for f in range(int(DUR * 10))], np.float32)
    boxes = np.array([[f, 7, 0.25 + 0.5 * o, 0.5, 0.1, 0.1, o] for f in range(nf)
                      for o in range(2)], np.float32)
    return {
        "clip_id": f"c{i}".encode(), "audio": audio, "frames": frames, "sample_rate": SR,
        "fps": FPS, "labels": labels, "boxes": boxes,
        "source_direction": np.array([[np.pi / 2, 0.0], [-np.pi / 2, 0.0]], np.float32),
        "source_class": np.array([3, 4], np.int32),
    }


SOURCE = [_record(i) for i in range(N_CLIPS)]
CFG = pipeline.PipelineConfig(crop_s=1.0, num_views=3, view_min_separation=0.5, num_objects=3)


def _batches(it, n):
    return list(itertools.islice(it, n))


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _loader(**kw):
    args = dict(split="train", batch_size=4, seed=7, shard=(0, 1))
    return pipeline.make_loader(SOURCE, CFG, **(args | kw))


def test_batches_follow_the_documented_contract():
    (b,) = _batches(iter(_loader()), 1)
    expect = {
        "audio": ((4, 8000, 4), np.int16), "frames": ((4, 5, *HW, 3), np.uint8),
        "rotation": ((4, 3, 3), np.float32), "t0": ((4,), np.float32),
        "view_dirs": ((4, 3, 2), np.float32), "object_dirs": ((4, 3, 2), np.float32),
        "object_valid": ((4, 3), bool), "object_class": ((4, 3), np.int32),
        "object_id": ((4, 3), np.int32), "labels": ((4, 30, 6), np.float32),
        "label_mask": ((4, 30), bool), "source_direction": ((4, 3, 2), np.float32),
        "source_class": ((4, 3), np.int32), "source_mask": ((4, 3), bool),
        "index": ((4,), np.int64), "mask": ((4,), bool),
    }
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == expect
    assert b["mask"].all() and b["object_valid"][:, :2].all() and not b["object_valid"][:, 2].any()
    assert b["label_mask"].sum(1).tolist() == [10] * 4 and b["source_mask"][:, :2].all()
    for j in range(4):  # every modality starts at the crop start t0
        t0 = float(b["t0"][j])
        assert b["audio"][j, 0, 0] == b["index"][j] and b["audio"][j, 0, 1] == round(t0 * SR)
        assert abs(float(b["frames"][j, 0].mean()) - (20 * round(t0 * FPS) + 10)) < 2
        rows = b["labels"][j][b["label_mask"][j]]
        np.testing.assert_array_equal(rows[:, 0], np.arange(10))  # relative label frames
        # Label and object directions are moved by the clip's rotation.
        R = b["rotation"][j]
        raw = np.deg2rad([[round(t0 * 10), 0.0]])
        np.testing.assert_allclose(np.deg2rad(rows[:1, 3:5]), T.rotate_directions(R, raw),
                                   atol=1e-4)
        np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)


def test_same_seed_same_batches_other_seed_other_order():
    _assert_same(_batches(iter(_loader()), 4), _batches(iter(_loader()), 4))
    a = np.concatenate([b["index"] for b in _batches(iter(_loader()), 3)])
    c = np.concatenate([b["index"] for b in _batches(iter(_loader(seed=8)), 3)])
    assert not np.array_equal(a, c)
    # Epochs are permutations of all clips, reshuffled each epoch.
    epochs = a.reshape(-1, N_CLIPS)
    assert sorted(epochs[0]) == list(range(N_CLIPS))


def test_process_shards_are_disjoint_and_make_up_the_global_batch():
    whole = _batches(iter(_loader(batch_size=6)), 4)
    parts = [_batches(iter(_loader(batch_size=2, shard=(i, 3))), 4) for i in range(3)]
    for step, glob in enumerate(whole):
        for i in range(3):  # process i holds global positions i, i + 3, ... of the batch
            local = parts[i][step]
            for k in glob:
                np.testing.assert_array_equal(local[k], glob[k][i::3], err_msg=k)
        ids = np.concatenate([p[step]["index"] for p in parts])
        assert sorted(ids) == sorted(glob["index"]) and len(set(ids)) == 6


def test_jax_process_sharding_is_the_default():
    assert pipeline.resolve_shard(None) == (jax.process_index(), jax.process_count())
    with pytest.raises(ValueError, match="shard index"):
        pipeline.resolve_shard((2, 2))


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_restored_iterator_continues_exactly(workers):
    it = iter(_loader(batch_size=3, workers=workers))
    _batches(it, 2)
    state = it.get_state()
    expected = _batches(it, 5)  # crosses an epoch boundary (12 clips = 4 batches)
    restored = iter(_loader(batch_size=3, workers=workers))
    restored.set_state(state)
    _assert_same(_batches(restored, 5), expected)
    if workers:
        it.close()
        restored.close()
    # ... and they are what an uninterrupted in-process iterator gives: workers change nothing.
    _assert_same(_batches(iter(_loader(batch_size=3)), 7)[2:], expected)


def test_iterator_state_round_trips_through_grains_orbax_handler(tmp_path):
    it = iter(_loader())
    _batches(it, 3)
    handler = grain.checkpoint.CheckpointHandler()
    handler.save(epath.Path(tmp_path), args=grain.checkpoint.CheckpointSave(it))
    restored = handler.restore(epath.Path(tmp_path),
                               args=grain.checkpoint.CheckpointRestore(iter(_loader())))
    _assert_same(_batches(restored, 2), _batches(it, 2))


def test_finite_epochs_end_with_whole_global_batches():
    batches = list(_loader(batch_size=5, num_epochs=2, shard=(1, 2)))
    assert len(batches) == 2 * N_CLIPS // 10  # 24 clips, global batch 10: 2 whole batches


def test_eval_runs_one_ordered_padded_epoch_across_processes():
    parts = [list(_loader(split="validation", batch_size=5, shard=(i, 2))) for i in range(2)]
    assert len(parts[0]) == len(parts[1]) == 2  # 12 clips padded to 20: 2 global batches
    ids = np.concatenate([b["index"][b["mask"]] for p in parts for b in p])
    assert sorted(ids) == list(range(N_CLIPS))
    b = parts[0][0]
    np.testing.assert_array_equal(b["rotation"], np.broadcast_to(np.eye(3), (5, 3, 3)))
    np.testing.assert_allclose(b["t0"], 0.4)  # centred crop (0.5 s) snapped to the 0.2 s grid


def test_detections_as_object_source():
    dets = np.array([[f, 2, 0.3, 0.1, 0.2, 0.2, 0.9, 4] for f in range(10)], np.float32)
    source = [dict(r, detections=dets) for r in SOURCE[:4]]
    cfg = pipeline.PipelineConfig(rotation="none", num_objects=2, objects_from="detections")
    (b,) = _batches(iter(pipeline.make_loader(source, cfg, split="train", batch_size=4,
                                              seed=0, shard=(0, 1))), 1)
    assert b["object_valid"].tolist() == [[True, False]] * 4 and (b["object_id"][:, 0] == 4).all()
    np.testing.assert_allclose(b["object_dirs"][:, 0], [[0.3, 0.1]] * 4, rtol=1e-6)
    with pytest.raises(KeyError, match="detections"):
        pipeline.prepare_clip(SOURCE[0], np.random.default_rng(0), cfg, augment=True)


@pytest.mark.parametrize("from_boxes", [False, True])
def test_object_centred_viewpoints_follow_the_rotated_objects(from_boxes):
    # Sources at az +-90 deg (boxes at the same places); views within the jitter of them,
    # moved by the clip's rotation R as the rotated scene moves them.
    from spatialav import geometry as g

    cfg = pipeline.PipelineConfig(crop_s=1.0, num_views=3, view_min_separation=0.5,
                                  view_sampling="objects", view_jitter=0.1, rotation="so3")
    for i in range(6):
        rec = dict(SOURCE[i])
        if from_boxes:
            del rec["source_direction"], rec["source_class"]
        out = pipeline.prepare_clip(rec, np.random.default_rng(i), cfg, augment=True)
        objs = T.rotate_directions(out["rotation"], np.array([[np.pi / 2, 0], [-np.pi / 2, 0]]))
        d = g.angular_distance(out["view_dirs"][:, None, 0], out["view_dirs"][:, None, 1],
                               objs[None, :, 0], objs[None, :, 1])  # [K, objects]
        assert ((d <= 0.1 + 1e-4).sum(axis=0) == 1).all()  # one view on each object
    with pytest.raises(ValueError, match="view_sampling"):
        pipeline.PipelineConfig(view_sampling="random")


def test_device_inputs_shapes():
    cfg = pipeline.PipelineConfig(num_views=2, view_min_separation=0.5, num_objects=2,
                                  input_format="stereo", view_size=8, object_size=(6, 10))
    (b,) = _batches(iter(pipeline.make_loader(SOURCE, cfg, split="train", batch_size=2,
                                              seed=0, shard=(0, 1))), 1)
    out = jax.jit(pipeline.device_inputs, static_argnums=1)(b, cfg)
    # Mono object audio is the beam toward each object: the beam of the unturned field.
    mono = dataclasses.replace(cfg, input_format="mono", beam_pattern="hypercardioid")
    beams = jax.jit(pipeline.device_inputs, static_argnums=1)(b, mono)["object_audio"][..., 0]
    audio = T.rotate_clip(b["audio"], b["frames"], b["rotation"])[0]
    want = ambisonics.beams(np.asarray(audio), b["object_dirs"][..., 0], b["object_dirs"][..., 1],
                            "hypercardioid") * b["object_valid"][..., None]
    np.testing.assert_allclose(beams, want, atol=1e-4)
    shapes = {k: (v.shape, v.dtype.name) for k, v in out.items()}
    assert shapes == {
        "audio": ((2, 8000, 2), "float32"), "frames": ((2, 5, *HW, 3), "uint8"),
        "stored_audio": ((2, 8000, 4), "float32"),
        "view_mix": ((2, 2, 4, 2), "float32"), "object_mix": ((2, 2, 4, 2), "float32"),
        "view_audio": ((2, 2, 8000, 2), "float32"), "view_frames": ((2, 2, 5, 8, 8, 3), "uint8"),
        "object_audio": ((2, 2, 8000, 2), "float32"),
        "object_frames": ((2, 2, 5, 6, 10, 3), "uint8"), "object_valid": ((2, 2), "bool"),
    }


def test_record_cache_gives_the_same_batches_and_reads_each_record_once():
    reads = []

    class Counting(list):
        def __getitem__(self, i):
            reads.append(i)
            return {**list.__getitem__(self, i), "dry": np.zeros(3)}

    cached = dataclasses.replace(CFG, cache_records=True)
    want = _batches(iter(_loader()), 6)  # 24 clips: two epochs of the 12
    got = _batches(iter(pipeline.make_loader(Counting(SOURCE), cached, split="train",
                                             batch_size=4, seed=7, shard=(0, 1))), 6)
    _assert_same(got, want)
    assert sorted(reads) == list(range(N_CLIPS))
    cache = storage.RecordCache(Counting(SOURCE), drop=pipeline.SEPARATION_FIELDS)
    assert "dry" not in cache[0] and cache[0] is cache[0] and len(cache) == N_CLIPS


def test_reads_a_dataset_directory(tmp_path):
    spec = schema.DatasetSpec(SR, FPS, HW, ("core", "labels", "boxes"))
    feats = storage.Serializer(schema.features(spec.groups))
    out = tmp_path / "toy" / "cfg" / "1.0.0"
    out.mkdir(parents=True)
    recs = [feats(schema.make_example(f"train/{i}", spec, audio=r["audio"], frames=r["frames"],
                                      sample_rate=SR, fps=FPS, labels=r["labels"],
                                      boxes=r["boxes"]))
            for i, r in enumerate(SOURCE[:4])]
    storage.write_shard(out / storage.shard_filename("toy", "train", 0, 1), recs)
    storage.write_info(out, name="toy", config="cfg", version="1.0.0", description="",
                       spec=spec, shard_lengths={"train": [4]})
    (b,) = _batches(iter(pipeline.make_loader(tmp_path, CFG, split="train", batch_size=2,
                                              seed=0, shard=(0, 1))), 1)
    assert b["audio"].shape == (2, 8000, 4) and b["frames"].shape == (2, 5, *HW, 3)
    assert "source_direction" not in b and b["object_valid"][:, :2].all()
