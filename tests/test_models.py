"""Encoders, heads and the AVC / AVSA model bundle: what their outputs satisfy (pooling,
independence of clips, per-frame start, set symmetry, unit norms), dtypes, jit and a tiny
overfit.

XLA's compile time, not run time, dominates these tests on a 2-core CPU, so they jit with
backend optimisation off (about 3x faster to compile; the tiny graphs run in microseconds)
and initialise the model with ``init_model`` (one compile instead of one per parameter).

Parameter counts (``count_params``): ``ModelConfig()`` (CPU demo) has about 8.2 M, of which
the conv1d audio encoder 3.1 M, the visual encoder 1.5 M, the two projection heads 0.2 M each
and the two context transformers 1.6 M each; ``ModelConfig.tiny()`` about 61 k.
"""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from spatialav import features
from spatialav.models import (
    AudioEncoder,
    AVModel,
    ModelConfig,
    ViewTransformer,
    VisualEncoder,
    count_params,
    init_model,
)
from spatialav.objectives import avc_loss

TINY = ModelConfig.tiny()
BF16 = ModelConfig.tiny(dtype="bfloat16")
FRAMES, MELS = 21, TINY.feature_cfg.n_mels


FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
jit = partial(jax.jit, compiler_options=FAST_COMPILE)


def rngs(seed=0):
    return nnx.Rngs(seed)


def abstract_call(ctor, *args, **kwargs):
    """Output shapes and dtypes of ``ctor()(*args, **kwargs)``: traced, not initialised or run."""
    graph, state = nnx.split(nnx.eval_shape(ctor))
    return jax.eval_shape(lambda s, a, k: nnx.merge(graph, s)(*a, **k), state, args, kwargs)


@pytest.fixture(scope="module")
def model():
    return init_model(TINY)


def _features(fmt, b=2, frames=FRAMES, seed=0):
    r = np.random.default_rng(seed)
    mel = r.uniform(-90, 0, (b, frames, MELS, {"foa": 4, "stereo": 2, "mono": 1}[fmt]))
    if fmt != "foa":
        return mel.astype(np.float32)
    iv = r.uniform(-0.03, 0.03, (b, frames, MELS, 3))
    return np.concatenate([mel, iv], -1).astype(np.float32)


def _frames(b=2, n=2, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, n, h, w, 3), dtype=np.uint8)


def _init(ctor):
    """``ctor()`` initialised inside one jit (one compile, not one per parameter), and a
    jitted ``module(*args)``."""
    graph = nnx.graphdef(nnx.eval_shape(ctor))
    state = jit(lambda: nnx.state(ctor()))()
    return jit(lambda s, *a: nnx.merge(graph, s)(*a)), state


@pytest.mark.parametrize("arch", ["resnet2d", "conv1d", "crnn"])
@pytest.mark.parametrize("fmt", ["foa", "stereo", "mono"])
def test_audio_encoder_pools_its_sequence_and_keeps_clips_apart(arch, fmt):
    cfg = dict(arch=arch, width=16, depth=3, embed_dim=24, feature_cfg=TINY.feature_cfg)
    ctor = lambda: AudioEncoder(fmt, **cfg, rngs=rngs())
    enc = nnx.eval_shape(ctor)
    run, state = _init(ctor)
    x = _features(fmt, 3)
    pooled, seq = run(state, x)
    assert seq.shape == (3, enc.num_out_frames(FRAMES), 24)
    # The embedding is the mean of the sequence (what the SELD and DOA heads read).
    np.testing.assert_allclose(pooled, np.mean(seq, axis=1), atol=1e-5)
    # No statistics across the batch: another clip 2 changes clip 2 and nothing else.
    y = x.copy()
    y[2] = _features(fmt, 1, seed=9)[0]
    pooled_y, seq_y = run(state, y)
    np.testing.assert_allclose(seq_y[:2], seq[:2], atol=1e-5)
    assert np.abs(pooled_y[2] - pooled[2]).max() > 1e-3
    with pytest.raises(ValueError, match="features"):
        abstract_call(ctor, jax.ShapeDtypeStruct((3, FRAMES, MELS, 5), jnp.float32))


def test_audio_encoder_takes_encoder_input_features():
    audio = np.random.default_rng(0).standard_normal((2, 4800, 4)).astype(np.float32) * 0.1
    x = features.encoder_input(audio, "foa", TINY.feature_cfg)
    run, state = _init(lambda: AudioEncoder("foa", width=16, depth=2, embed_dim=8,
                                            feature_cfg=TINY.feature_cfg, rngs=rngs()))
    pooled, seq = run(state, x)
    assert x.shape == (2, 11, MELS, 7) and seq.shape == (2, 6, 8)  # 4800 samples, hop 480
    assert np.all(np.isfinite(seq)) and np.abs(pooled[0] - pooled[1]).max() > 1e-3


@pytest.mark.parametrize("hw", [(64, 64), (40, 72)])
def test_visual_encoder_starts_per_frame_and_keeps_clips_apart(hw):
    run, state = _init(lambda: VisualEncoder(width=8, depth=3, embed_dim=16, rngs=rngs()))
    frames = _frames(2, 3, *hw)
    pooled, per_frame = run(state, frames)
    assert per_frame.shape == (2, 3, 16)
    np.testing.assert_allclose(pooled, np.mean(per_frame, axis=1), atol=1e-5)
    # The motion context is a zero-initialised residual: at initialisation each frame's
    # embedding depends on that frame alone (crops and equirect frames alike).
    other = frames.copy()
    other[0, 1] = _frames(1, 1, *hw, seed=7)[0, 0]
    _, per_frame_o = run(state, other)
    np.testing.assert_allclose(per_frame_o[0, [0, 2]], per_frame[0, [0, 2]], atol=1e-5)
    np.testing.assert_allclose(per_frame_o[1], per_frame[1], atol=1e-5)
    assert np.abs(per_frame_o[0, 1] - per_frame[0, 1]).max() > 1e-3


def test_model_runs_under_jit_and_returns_unit_embeddings(model):
    graph, state = nnx.split(model)

    @jit
    def embed(state, feats, frames, view_feats, view_frames, mask):
        m = nnx.merge(graph, state)
        return (
            m.embed_audio(feats),
            m.embed_video(frames),
            m.embed_audio_views(view_feats, mask),
            m.embed_video_views(view_frames, mask),
        )

    mask = np.array([[True, True, False], [False, False, False]])
    view_feats = _features("foa", 6).reshape(2, 3, FRAMES, MELS, 7)
    view_frames = _frames(6, 1).reshape(2, 3, 1, 32, 32, 3)
    a, v, av, vv = embed(state, _features("foa"), _frames(), view_feats, view_frames, mask)
    assert a.shape == v.shape == (2, TINY.proj_dim) and av.shape == vv.shape == (2, 3, 16)
    for e in (a, v, av, vv):
        assert e.dtype == jnp.float32 and np.all(np.isfinite(e))
        np.testing.assert_allclose(np.linalg.norm(e, axis=-1), 1.0, atol=1e-5)
    # Padded views do not influence the valid ones through the context transformer.
    other = view_feats.copy()
    other[0, 2] = _features("foa", 1, seed=5)[0]
    np.testing.assert_allclose(
        embed(state, _features("foa"), _frames(), other, view_frames, mask)[2][0, :2],
        av[0, :2],
        atol=1e-5,
    )


def test_view_transformer_treats_views_as_a_set():
    # No positional code by default: permuting the K views permutes the outputs, so no
    # slot identity can leak the AVSA answer (see spatialav.models.heads).
    ctor = lambda: ViewTransformer(16, 1, 2, rngs=rngs())
    graph = nnx.graphdef(nnx.eval_shape(ctor))
    state = jit(lambda: nnx.state(ctor()))()  # one compile, not one per parameter
    run = jit(lambda s, x: nnx.merge(graph, s)(x))
    x = np.random.default_rng(0).standard_normal((2, 4, 16)).astype(np.float32)
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(run(state, x[:, perm]), run(state, x)[:, perm], atol=1e-5)
    with_dirs = lambda: ViewTransformer(16, 1, 2, direction_embedding=True, rngs=rngs())
    dirs = jax.ShapeDtypeStruct((2, 4, 3), jnp.float32)
    out = abstract_call(with_dirs, jax.ShapeDtypeStruct((2, 4, 16), jnp.float32), directions=dirs)
    assert out.shape == (2, 4, 16)
    with pytest.raises(ValueError, match="directions"):
        abstract_call(with_dirs, jax.ShapeDtypeStruct((2, 4, 16), jnp.float32))


def test_bf16_computes_in_bf16_with_f32_params(model):
    # Same parameters in a bf16 graph: the dtype lives in the graph, the params stay f32.
    bf16 = nnx.eval_shape(lambda: AVModel(BF16, rngs=rngs()))
    state = nnx.state(model)
    assert {p.dtype for p in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {jnp.dtype("float32")}
    feats, frames = _features("foa"), _frames()

    def run(graph, state, feats, frames):
        m = nnx.merge(graph, state)
        return m.audio(feats), m.video(frames)[1], m.embed_video(frames)

    (_, seq), per_frame, emb = jax.eval_shape(
        partial(run, nnx.graphdef(bf16)), state, feats, frames
    )
    assert seq.dtype == per_frame.dtype == jnp.bfloat16 and emb.dtype == jnp.float32
    audio = jit(lambda graph, state, x: nnx.merge(graph, state).audio(x), static_argnums=0)
    pooled16, seq16 = audio(nnx.graphdef(bf16), state, feats)
    pooled32, _ = audio(nnx.graphdef(model), state, feats)
    assert seq16.dtype == jnp.bfloat16
    np.testing.assert_allclose(pooled16.astype(np.float32), pooled32, atol=0.05)


def test_the_model_is_its_encoders_and_heads():
    # Every parameter belongs to exactly one of the six parts (none shared, none outside).
    m = nnx.eval_shape(lambda: AVModel(ModelConfig(), rngs=rngs()))
    parts = (m.audio, m.video, m.audio_proj, m.video_proj, m.audio_context, m.video_context)
    assert count_params(m) == sum(count_params(x) for x in parts)
    # The CPU demo model stays a CPU-sized model (README: ~13 min for 6000 steps on 2 cores).
    assert 2e6 < count_params(m) < 2e7


def test_a_few_adam_steps_lower_the_avc_loss(model):
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(3e-3)
    feats, frames = _features("foa", 6, seed=1), _frames(6, 1, 16, 16, seed=1)

    def loss_fn(params):
        m = nnx.merge(graph, params, rest)
        return avc_loss(m.embed_audio(feats), m.embed_video(frames), 0.1)[0]

    @jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state, losses = tx.init(params), []
    for _ in range(6):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[1] < losses[0] and losses[-1] < losses[0] - 0.3, losses


@pytest.mark.parametrize("az_deg, el_deg", [(0, 0), (60, 20), (-90, 0), (150, -30)])
def test_front_beam_level_is_the_cardioid_gain_of_a_plane_wave(az_deg, el_deg):
    from spatialav import ambisonics
    from spatialav.models.audio import front_beam_level

    rng = np.random.default_rng(0)
    foa = ambisonics.encode(rng.standard_normal(24000).astype(np.float32) * 0.1,
                            np.radians(az_deg), np.radians(el_deg))
    level = np.asarray(front_beam_level(features.encoder_input(foa, "foa")))
    ux = np.cos(np.radians(el_deg)) * np.cos(np.radians(az_deg))
    expected = 20 * np.log10((1 + ux) / 2)
    # Per-band values of noise at 24 kHz: the IV and levels are exact up to STFT leakage.
    np.testing.assert_allclose(np.median(level), expected, atol=0.3)


def test_front_beam_adds_one_foa_channel_only():
    cfg = ModelConfig.tiny(audio_front_beam=True)
    foa = init_model(cfg).audio
    assert foa.stem.in_features == cfg.feature_cfg.n_mels * 8
    mono = init_model(dataclasses.replace(cfg, audio_fmt="mono")).audio
    assert mono.stem.in_features == cfg.feature_cfg.n_mels * 1
    x = jnp.zeros((2, 20, cfg.feature_cfg.n_mels, 7))
    assert foa(x)[0].shape == (2, cfg.embed_dim)


def test_bin_mlp_appends_per_bin_channels_before_the_stem():
    from spatialav.models.audio import BIN_MLP_OUT

    cfg = ModelConfig.tiny(audio_bin_mlp=16)
    enc = init_model(cfg).audio
    assert enc.stem.in_features == cfg.feature_cfg.n_mels * (7 + BIN_MLP_OUT)
    x = jax.random.normal(jax.random.key(0), (2, 20, cfg.feature_cfg.n_mels, 7))
    assert enc(x)[0].shape == (2, cfg.embed_dim)
    # Each bin's outputs depend on that bin's channels only, and not linearly.
    y = enc.bin_mlp(x)
    bumped = enc.bin_mlp(x.at[0, 3, 5].add(1.0))
    changed = np.any(np.asarray(bumped != y), axis=-1)
    assert changed[0, 3, 5] and changed.sum() == 1
    lin = enc.bin_mlp(2 * x) - 2 * enc.bin_mlp(x) + enc.bin_mlp(jnp.zeros_like(x))
    assert float(jnp.abs(lin).max()) > 1e-3


def test_crnn_steps_are_label_frames_and_the_recurrence_runs_both_ways():
    """crnn: one output step per 5 input frames (100 ms at the 20 ms hop); a frame count that
    is not a multiple of 5 is edge-padded (the same output as repeating the last frame); the
    bidirectional GRU lets the first step hear the last frame and the last step the first."""
    enc = AudioEncoder("foa", arch="crnn", width=8, depth=1, embed_dim=6,
                       feature_cfg=TINY.feature_cfg, rngs=rngs())
    assert enc.time_stride == 5
    graph, state = nnx.split(enc)
    seq = jit(lambda s, x: nnx.merge(graph, s)(x)[1])
    apply = lambda x: np.asarray(seq(state, x))
    x = _features("foa", 1, 21, seed=3)
    padded = np.concatenate([x, np.repeat(x[:, -1:], 4, axis=1)], axis=1)
    assert apply(x).shape == (1, 5, 6) and apply(_features("foa", 1, 26)).shape == (1, 6, 6)
    np.testing.assert_allclose(apply(x), apply(padded), atol=1e-6)
    quiet = np.full((1, 30, MELS, 7), -60.0, np.float32)
    quiet[..., 4:] = 0.0
    base = apply(quiet)
    late, early = quiet.copy(), quiet.copy()
    late[:, -1, :, :4] = 0.0  # a loud last frame
    early[:, 0, :, :4] = 0.0  # a loud first frame
    assert np.abs(apply(late)[:, 0] - base[:, 0]).max() > 1e-3  # backward direction
    assert np.abs(apply(early)[:, -1] - base[:, -1]).max() > 1e-3  # forward direction
