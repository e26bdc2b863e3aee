"""The AVC / AVSA model bundle and its config.

``AVModel`` holds an audio encoder, a visual encoder, one projection head per modality and
one ``ViewTransformer`` per modality (the AVSA context over the K views of a clip, as in
Morgado et al., NeurIPS 2020). Paths:

- AVC: encoder -> projection -> L2-normalised embedding (``embed_audio`` / ``embed_video``).
- AVSA: the K views (or M objects) of a clip are encoded independently, mixed by the
  modality's context transformer, then projected and normalised (``embed_audio_views`` /
  ``embed_video_views``). The projection heads are shared with AVC, and the transformers are
  residual, so weights learned in the AVC stage of the curriculum carry over.

All modules compute in ``ModelConfig.dtype`` (e.g. bfloat16) with float32 parameters;
embeddings come out float32.

Parameter counts (``count_params``): ``ModelConfig()`` (CPU demo, foa,
conv1d) 8.15 M = audio 3.11 M + visual 1.49 M + projection heads 2 x 0.20 M + context
transformers 2 x 1.58 M (parameter-heavy but cheap: they see only K tokens per clip);
``ModelConfig.tiny()`` 61 k.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from spatialav import features
from spatialav.models.audio import AudioEncoder
from spatialav.models.heads import ProjectionHead, ViewTransformer
from spatialav.models.visual import VisualEncoder
from spatialav.objectives import l2_normalize

# Init runs once, so its code need not be fast, only quick to compile: on CPU this halves the
# start-up time (XLA compiles one threefry kernel per parameter).
_INIT_COMPILE_CPU = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the pretraining model; the defaults are the CPU demo (see ``tiny`` for tests).

    ``audio_arch`` defaults to ``conv1d``: on the 2-core CPU a training step (batch 16, 2 s
    FOA) takes 5-12x less time than a width-32 ``resnet2d`` and half that of a width-16 one
    (results/bench_encoders.md): the 1D convs run at ~3x the FLOP rate of the 3x3 convs.
    """

    audio_fmt: str = "foa"
    audio_arch: str = "conv1d"
    audio_width: int = 256
    audio_depth: int = 4
    audio_blocks: int = 2
    visual_width: int = 32
    visual_depth: int = 4
    embed_dim: int = 256  # encoder outputs and context-transformer width
    proj_hidden: int = 512
    proj_dim: int = 128  # contrastive embedding size
    context_depth: int = 2
    context_heads: int = 4
    dtype: str = "float32"  # computation dtype: "float32" or "bfloat16"; params stay f32
    feature_cfg: features.FeatureConfig = features.DEFAULT  # must match the data's features
    audio_relative_levels: bool = False  # foa: Y, Z, X log-mels relative to W (models/audio.py)
    audio_front_beam: bool = False  # foa: add the front cardioid's level (models/audio.py)
    audio_bin_mlp: int = 0  # hidden width of the per-(frame, mel) MLP (models/audio.py); 0: none

    @classmethod
    def tiny(cls, **overrides) -> ModelConfig:
        """A 61 k-parameter model for tests: 16 mel bands, narrow and shallow."""
        base = dict(
            audio_width=32,
            audio_depth=2,
            audio_blocks=1,
            visual_width=8,
            visual_depth=2,
            embed_dim=32,
            proj_hidden=32,
            proj_dim=16,
            context_depth=1,
            context_heads=2,
            feature_cfg=features.FeatureConfig(n_mels=16),
        )
        return cls(**{**base, **overrides})


def count_params(module: nnx.Module) -> int:
    """Number of scalar parameters in a module (works on ``nnx.eval_shape`` results too)."""
    return sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def init_model(config: ModelConfig, seed: int = 0) -> AVModel:
    """``AVModel(config, rngs=nnx.Rngs(seed))``, initialised inside one jit.

    Same random streams as eager construction (equal up to float rounding), but one compile
    instead of one per parameter shape: for ``ModelConfig()`` ~10 s of CPU time instead of
    ~20 s on the 2-core CI machine.
    """
    ctor = lambda: AVModel(config, rngs=nnx.Rngs(seed))
    opts = _INIT_COMPILE_CPU if jax.default_backend() == "cpu" else None
    state = jax.jit(lambda: nnx.state(ctor()), compiler_options=opts)()
    return nnx.merge(nnx.graphdef(nnx.eval_shape(ctor)), state)


class AVModel(nnx.Module):
    """Audio and visual encoders, projection heads and AVSA context transformers."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        dtype = jnp.dtype(config.dtype)
        d = config.embed_dim
        self.audio = AudioEncoder(
            config.audio_fmt,
            arch=config.audio_arch,
            width=config.audio_width,
            depth=config.audio_depth,
            blocks=config.audio_blocks,
            embed_dim=d,
            feature_cfg=config.feature_cfg,
            relative_levels=config.audio_relative_levels,
            front_beam=config.audio_front_beam,
            bin_mlp=config.audio_bin_mlp,
            dtype=dtype,
            rngs=rngs,
        )
        self.video = VisualEncoder(
            width=config.visual_width,
            depth=config.visual_depth,
            embed_dim=d,
            dtype=dtype,
            rngs=rngs,
        )
        head = dict(dtype=dtype, rngs=rngs)
        self.audio_proj = ProjectionHead(d, config.proj_hidden, config.proj_dim, **head)
        self.video_proj = ProjectionHead(d, config.proj_hidden, config.proj_dim, **head)
        ctx = (d, config.context_depth, config.context_heads)
        self.audio_context = ViewTransformer(*ctx, **head)
        self.video_context = ViewTransformer(*ctx, **head)

    def embed_audio(self, feats):
        """``[B, frames, mels, C]`` encoder features -> unit embeddings ``[B, proj_dim]``."""
        return l2_normalize(self.audio_proj(self.audio(feats)[0]))

    def embed_video(self, frames):
        """``[B, n, h, w, 3]`` frames (0..255) -> unit embeddings ``[B, proj_dim]``."""
        return l2_normalize(self.video_proj(self.video(frames)[0]))

    def embed_audio_views(self, feats, mask=None):
        """``[B, K, frames, mels, C]`` (K rotated views or M object beams) -> ``[B, K, P]``.

        ``mask [B, K]`` marks valid views (padded objects are ignored by the context).
        """
        b, k = feats.shape[:2]
        tokens = self.audio(feats.reshape(b * k, *feats.shape[2:]))[0].reshape(b, k, -1)
        return l2_normalize(self.audio_proj(self.audio_context(tokens, mask=mask)))

    def embed_video_views(self, frames, mask=None):
        """``[B, K, n, h, w, 3]`` view crops -> ``[B, K, P]``; ``mask`` as for audio."""
        b, k = frames.shape[:2]
        tokens = self.video(frames.reshape(b * k, *frames.shape[2:]))[0].reshape(b, k, -1)
        return l2_normalize(self.video_proj(self.video_context(tokens, mask=mask)))
