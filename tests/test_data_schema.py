"""The on-disk schema: round trip, validation on write, TFDS reading without TF, clear errors."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from spatialav.data import schema, storage
from spatialav.synth.clip import Clip

SR, FPS, H, W = 8000, 5.0, 16, 32
SYNTH_GROUPS = ("core", "labels", "boxes", "sources", "distractors")
SPEC = schema.DatasetSpec(SR, FPS, (H, W), SYNTH_GROUPS)


def make_clip(seed: int, seconds: float = 1.0, n_src: int = 2, n_dis: int = 1) -> Clip:
    """A hand-made clip with every field filled with seeded random content."""
    rng = np.random.default_rng(seed)
    t, n = int(seconds * SR), int(seconds * FPS)
    images = rng.uniform(-0.3, 0.3, (n_src, t, 4)).astype(np.float32)
    # Smooth frames survive JPEG closely; pure noise would not.
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.stack([np.stack([xx * 6 + k * 10, yy * 12, np.full_like(xx, 40 * k)],
                                -1) for k in range(n)]).astype(np.uint8)
    return Clip(
        audio=images.sum(0) + rng.uniform(-0.01, 0.01, (t, 4)).astype(np.float32),
        frames=frames,
        sample_rate=SR,
        fps=FPS,
        source_images=images,
        dry=rng.uniform(-0.5, 0.5, (n_src, t)).astype(np.float32),
        source_class=rng.integers(0, 10, n_src).astype(np.int32),
        source_direction=rng.uniform(-1, 1, (n_src, 2)).astype(np.float32),
        source_distance=rng.uniform(1, 3, n_src).astype(np.float32),
        activity=rng.random((n_src, int(seconds * 10))) < 0.5,
        distractor_class=rng.integers(0, 10, n_dis).astype(np.int32),
        distractor_direction=rng.uniform(-1, 1, (n_dis, 2)).astype(np.float32),
        labels=rng.uniform(0, 10, (5, 6)).astype(np.float32),
        boxes=rng.uniform(0, 1, (3, 7)).astype(np.float32),
    )


def write_dataset(dataset_dir, clips_by_split, spec=SPEC, per_shard=2):
    """Write clips through the schema and storage API like a converter would."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    serialize = storage.Serializer(schema.features(spec.groups))
    lengths = {}
    for split, clips in clips_by_split.items():
        chunks = [clips[i:i + per_shard] for i in range(0, len(clips), per_shard)]
        for k, chunk in enumerate(chunks):
            path = dataset_dir / storage.shard_filename("toy", split, k, len(chunks))
            storage.write_shard(path, [
                serialize(schema.example_from_clip(c, f"{split}/{i}", spec))
                for i, c in enumerate(chunk, start=k * per_shard)])
        lengths[split] = [len(c) for c in chunks]
    storage.write_info(dataset_dir, name="toy", config="cfg", version="1.0.0",
                       description="test", spec=spec, shard_lengths=lengths)
    return dataset_dir


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    clips = {"train": [make_clip(i) for i in range(3)], "test": [make_clip(10, n_dis=0)]}
    root = tmp_path_factory.mktemp("toy")
    write_dataset(root / "toy" / "cfg" / "1.0.0", clips)
    return root, clips


def test_round_trip(toy):
    root, clips = toy
    src = storage.open_split(root, "train")
    assert len(src) == 3
    for i, clip in enumerate(clips["train"]):
        ex = src[i]
        assert ex["clip_id"] == f"train/{i}".encode()
        assert ex["sample_rate"] == SR and ex["fps"] == pytest.approx(FPS)
        assert ex["audio"].dtype == np.int16 and ex["audio"].shape == clip.audio.shape
        # int16 quantisation: within one LSB of the float original.
        for name in schema.AUDIO_FIELDS:
            err = np.abs(schema.to_float(ex[name]) - getattr(clip, name)).max()
            assert err <= 1 / 32768, name
        frames = schema.decode_frames(ex["frames"])
        assert frames.shape == clip.frames.shape and frames.dtype == np.uint8
        assert np.abs(frames.astype(int) - clip.frames).mean() < 3  # JPEG q90
        for name in ("labels", "boxes", "source_class", "source_direction", "source_distance",
                     "activity", "distractor_class", "distractor_direction"):
            np.testing.assert_array_equal(ex[name], getattr(clip, name), err_msg=name)
            assert ex[name].dtype == getattr(clip, name).dtype, name
    empty = storage.open_split(root, "test")[0]
    assert empty["distractor_class"].shape == (0,)
    assert empty["distractor_direction"].shape == (0, 2)


def test_tfds_reads_it_without_tensorflow(toy):
    root, clips = toy
    dataset_dir = root / "toy" / "cfg" / "1.0.0"
    builder = tfds.builder_from_directory(dataset_dir)
    assert builder.info.splits["train"].num_examples == 3
    assert builder.info.splits["train"].num_shards == 2
    assert builder.info.metadata["spec"] == SPEC.to_json()
    via_name = tfds.data_source("toy/cfg:1.0.0", data_dir=root, split="test")
    assert len(via_name) == 1 and via_name[0]["clip_id"] == b"test/0"
    assert storage.read_spec(root) == SPEC
    assert "tensorflow" not in sys.modules


def test_source_is_picklable_and_works_in_grain(toy):
    import grain

    root, _ = toy
    src = pickle.loads(pickle.dumps(storage.open_split(root, "train")))
    ds = grain.MapDataset.source(src).map(lambda ex: schema.decode_frames(ex["frames"]).shape)
    assert [ds[i] for i in range(len(ds))] == [(5, H, W, 3)] * 3


@pytest.mark.parametrize("change, field, expected", [
    (lambda c: setattr(c, "audio", c.audio[:, :2]), "audio", "size 4 on axis 1"),
    (lambda c: setattr(c, "audio", c.audio.astype(np.float64)), "audio", "dtype float32"),
    (lambda c: c.audio.__setitem__((3, 1), np.nan), "audio", "finite"),
    (lambda c: setattr(c, "audio", c.audio * 3), "audio", "[-1, 1]"),
    (lambda c: setattr(c, "frames", c.frames[:, :8]), "frames", f"[N>0, {H}, {W}, 3]"),
    (lambda c: setattr(c, "frames", c.frames.astype(np.float32)), "frames", "uint8"),
    (lambda c: setattr(c, "source_class", c.source_class.astype(np.int64)), "source_class",
     "dtype int32"),
    (lambda c: setattr(c, "dry", c.dry[:, :100]), "dry", "samples (as audio)"),
    (lambda c: setattr(c, "source_distance", c.source_distance[:1]), "source_images",
     "one count"),
    (lambda c: setattr(c, "sample_rate", 16000), "sample_rate", "8000"),
])
def test_validation_names_clip_field_expected_and_got(change, field, expected):
    clip = make_clip(0)
    change(clip)
    with pytest.raises(ValueError) as err:
        schema.example_from_clip(clip, "bad/7", SPEC)
    msg = str(err.value)
    assert "'bad/7'" in msg and repr(field) in msg and expected in msg and "got" in msg, msg


def test_jpeg_bytes_are_checked_and_kept():
    clip = make_clip(1)
    jpegs = [schema.encode_jpeg(f) for f in clip.frames]
    spec = schema.DatasetSpec(SR, FPS, (H, W))
    ex = schema.make_example("x", spec, audio=clip.audio, frames=jpegs, sample_rate=SR, fps=FPS)
    assert list(ex["frames"]) == jpegs
    small = schema.DatasetSpec(SR, FPS, (8, 16))
    with pytest.raises(ValueError, match=r"'frames': expected 16x8 JPEG, got 32x16 JPEG"):
        schema.make_example("x", small, audio=clip.audio, frames=jpegs, sample_rate=SR, fps=FPS)
    with pytest.raises(ValueError, match=r"'ground truth': expected fields \[\]"):
        schema.make_example("x", spec, audio=clip.audio, frames=jpegs, sample_rate=SR, fps=FPS,
                            labels=clip.labels)


def test_missing_path_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        storage.open_split(tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match=r"no TFDS dataset at or below .*dataset_info"):
        storage.open_split(tmp_path, "train")


def test_missing_split_error(toy):
    with pytest.raises(ValueError, match=r"no split 'validation'; it has \['test', 'train'\]"):
        storage.open_split(toy[0], "validation")


def test_wrong_schema_error(tmp_path):
    # A well-formed TFDS dataset whose audio field is float32: someone else's schema.
    other = tmp_path / "other" / "cfg" / "1.0.0"
    write_dataset(other, {"train": [make_clip(0)]})
    feats = json.loads((other / "features.json").read_text())
    audio = feats["featuresDict"]["features"]["audio"]["tensor"]
    audio["dtype"] = "float32"
    (other / "features.json").write_text(json.dumps(feats))
    with pytest.raises(ValueError) as err:
        storage.open_split(tmp_path, "train")
    msg = str(err.value)
    assert str(other) in msg and "'audio'" in msg and "int16" in msg and "float32" in msg, msg


def test_several_datasets_need_a_choice(tmp_path):
    for cfg in ("a", "b"):
        write_dataset(tmp_path / "toy" / cfg / "1.0.0", {"train": [make_clip(0)]})
    with pytest.raises(ValueError, match="holds 2 datasets"):
        storage.open_split(tmp_path, "train")
    assert len(storage.open_split(tmp_path / "toy" / "b" / "1.0.0", "train")) == 1


def _frame_shape(ex):
    return schema.decode_frames(ex["frames"]).shape


@pytest.mark.slow
def test_grain_worker_processes_read_it(toy):
    import grain
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain reads its absl flags when it starts workers
    root, _ = toy
    ds = (grain.MapDataset.source(storage.open_split(root, "train")).map(_frame_shape)
          .to_iter_dataset().mp_prefetch(grain.MultiprocessingOptions(num_workers=2)))
    assert list(ds) == [(5, H, W, 3)] * 3
