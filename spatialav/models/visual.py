"""Visual encoder: a per-frame 2D CNN, then a temporal conv and mean pooling over frames.

Input ``[B, n, h, w, 3]`` frames of any size (gnomonic crops such as 64x64, or whole equirect
frames such as 64x128), pixel values in [0, 255] as uint8 or float; they are mapped to
[-1, 1] inside. The stem is a 4x4 patch embedding (stride 4, a matmul over 48-pixel patches,
cheap on CPU); each later stage is a residual block that halves the resolution and doubles
the width. A global spatial mean gives one token per frame.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from spatialav.models.layers import ResBlock2D, group_norm

PATCH = 4


class VisualEncoder(nnx.Module):
    """Frames ``[B, n, h, w, 3]`` -> ``(pooled [B, D], per_frame [B, n, D])``.

    ``width``: channels after the patch embedding; ``depth``: residual stages (all but the
    first halve the resolution); ``embed_dim``: D. ``per_frame`` is taken after a residual
    temporal conv (kernel 3 over frames), so each frame token sees its neighbours.
    """

    def __init__(
        self, *, width: int = 32, depth: int = 4, embed_dim: int = 256, dtype=None, rngs: nnx.Rngs
    ):
        self.dtype = dtype
        self.stem = nnx.Conv(
            3, width, (PATCH, PATCH), PATCH, use_bias=False, dtype=dtype, rngs=rngs
        )
        self.stem_norm = group_norm(width, dtype=dtype, rngs=rngs)
        blocks, c = [], width
        for i in range(depth):
            blocks.append(ResBlock2D(c, width * 2**i, 2 if i > 0 else 1, dtype=dtype, rngs=rngs))
            c = width * 2**i
        self.blocks = nnx.List(blocks)
        self.frame_norm = nnx.LayerNorm(c, dtype=dtype, rngs=rngs)
        self.frame_out = nnx.Linear(c, embed_dim, dtype=dtype, rngs=rngs)
        self.time_norm = nnx.LayerNorm(embed_dim, dtype=dtype, rngs=rngs)
        self.time_conv = nnx.Conv(
            embed_dim, embed_dim, (3,), kernel_init=nnx.initializers.zeros, dtype=dtype, rngs=rngs
        )

    def __call__(self, frames):
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be [B, n, h, w, 3], got shape {frames.shape}")
        b, n = frames.shape[:2]
        x = frames.reshape(b * n, *frames.shape[2:]).astype(jnp.float32) / 127.5 - 1.0
        if self.dtype is not None:
            x = x.astype(self.dtype)
        x = jax.nn.gelu(self.stem_norm(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        tokens = self.frame_out(self.frame_norm(jnp.mean(x, axis=(1, 2))))
        tokens = tokens.reshape(b, n, -1)
        # Residual, zero-initialised: starts as per-frame features, learns motion context.
        per_frame = tokens + self.time_conv(jax.nn.gelu(self.time_norm(tokens)))
        return jnp.mean(per_frame, axis=1), per_frame
