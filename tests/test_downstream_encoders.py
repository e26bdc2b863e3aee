"""Loading encoders for probes: a pretraining checkpoint gives the trainer's own encoder
outputs; frozen weights are outside the trainable set; clear errors for another model,
another format, a missing or empty directory, and a dataset without labels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spatialav import configs, pretrain, pretraining
from spatialav.data import pipeline, schema, storage
from spatialav.data.resolve import resolve_dataset
from spatialav.downstream import data
from spatialav.downstream.encoders import load_encoders, load_params
from spatialav.models import ModelConfig
from spatialav.train import Trainer


@pytest.fixture(scope="module")
def pretrained(tiny_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("avc")
    args = ["--task", "avc", "--config", "tiny", "--workdir", str(workdir), "--steps", "2",
            "--set", f"data.root={tiny_root}", "--set", "eval.every=1000"]
    assert pretrain.main(args) == 0
    return workdir


@pytest.mark.slow
def test_checkpoint_round_trip_gives_the_trainers_encoders(pretrained, tiny_root):
    cfg = configs.get_config("tiny", task="avc", overrides=[f"data.root={tiny_root}"])
    dataset = resolve_dataset(cfg.data)
    loader = pipeline.make_loader(dataset, cfg.data.pipeline, split="train", batch_size=4,
                                  seed=0)
    trainer = Trainer(cfg.train, cfg.optim, pretraining.init_model(cfg),
                      pretraining.make_loss_fn(cfg), iter(loader), str(pretrained))
    assert trainer.restore_latest() == 2
    ref = trainer.model()
    enc = load_encoders(str(pretrained))
    assert enc.step == 2 and enc.task == "avc" and enc.config == cfg.model
    feats = jax.random.normal(jax.random.key(0), (2, 26, 16, 7)) * 10 - 40
    frames = jax.random.randint(jax.random.key(1), (2, 2, 16, 16, 3), 0, 255)
    np.testing.assert_array_equal(enc.audio(feats)[1], ref.audio(feats)[1])
    np.testing.assert_array_equal(enc.video(frames)[0], ref.video(frames)[0])
    pooled = enc.audio(feats)[0]
    np.testing.assert_array_equal(enc.audio_proj(pooled), ref.audio_proj(pooled))
    # and they differ from a fresh model: the checkpoint's values were loaded
    fresh = pretraining.init_model(cfg)
    assert not np.allclose(enc.audio(feats)[1], fresh.audio(feats)[1])
    # frozen: nothing trainable; fine-tuned: every encoder weight trainable
    assert not jax.tree.leaves(nnx.state(enc.audio, nnx.Param))
    tuned = load_encoders(str(pretrained / "checkpoints"), finetune=True)
    assert len(jax.tree.leaves(nnx.state(tuned.audio, nnx.Param))) == len(
        jax.tree.leaves(nnx.state(ref.audio, nnx.Param)))

    with pytest.raises(ValueError, match=r"model.audio_width: 16 \(asked\) vs 32"):
        load_encoders(str(pretrained), model_config=ModelConfig.tiny(audio_width=16))
    with pytest.raises(ValueError, match="pretrained on 'foa' audio, but format 'mono'"):
        load_encoders(str(pretrained), fmt="mono")
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 99"):
        load_encoders(str(pretrained), step=99)


def test_params_of_another_shape_are_named():
    model = nnx.eval_shape(lambda: __import__("spatialav.models", fromlist=["AVModel"]).AVModel(
        ModelConfig.tiny(), rngs=nnx.Rngs(0)))
    params = jax.tree.map(lambda x: {"value": jnp.zeros(x.shape)},
                          nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    params["audio"]["out"]["kernel"] = {"value": jnp.zeros((32, 8))}
    del params["video"]["frame_out"]["bias"]
    with pytest.raises(ValueError) as err:
        load_params(model, params, source="ckpt/7")
    msg = str(err.value)
    assert "audio/out/kernel: model (32, 32), checkpoint (32, 8)" in msg
    assert "missing from the checkpoint: video/frame_out/bias" in msg


def test_missing_and_empty_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoders(str(tmp_path / "nope"))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_encoders(str(tmp_path / "run"))
    with pytest.raises(ValueError, match="needs a model_config"):
        load_encoders("random")


def write_unlabelled_dataset(root):
    """A one-clip-per-split dataset with only the core group (no DCASE labels)."""
    spec = schema.DatasetSpec(24000, 5.0, (32, 64), ("core",))
    out = root / "nolabels" / "x" / "1.0.0"
    out.mkdir(parents=True)
    serialize = storage.Serializer(schema.features(spec.groups))
    for split in ("train", "test"):
        ex = schema.make_example(f"{split}/0", spec, audio=np.zeros((24000, 4), np.float32),
                                 frames=np.zeros((5, 32, 64, 3), np.uint8), sample_rate=24000,
                                 fps=5.0)
        storage.write_shard(out / storage.shard_filename("nolabels", split, 0, 1),
                            [serialize(ex)])
    storage.write_info(out, name="nolabels", config="x", version="1.0.0", description="",
                       spec=spec, shard_lengths={"train": [1], "test": [1]})
    return out


def test_dataset_without_labels_is_refused(tmp_path, tiny_dataset):
    path = write_unlabelled_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"has no \['labels'\].*seld head"):
        data.require_groups(path, ("labels",), "seld")
    with pytest.raises(ValueError, match="no .classes. list"):
        data.class_names(path)
    assert len(data.class_names(tiny_dataset)) == 14
