"""Heads on top of the encoders: projection MLPs and the AVSA context transformer.

Downstream heads (SELD, separation) belong here too; they consume the encoders'
``sequence`` / ``per_frame`` outputs.

Positional information in ``ViewTransformer``: the K view tokens form a *set*, and by default
the transformer gets no positional encoding at all, so it is permutation-equivariant over the
views. That is deliberate. In AVSA the positive for audio view (b, k) is video view (b, k) and
the hard negatives are the other views (b, k') of the same clip. Any code shared by an audio
token and the video token of the same view gives the answer away without looking at the
content: a learned embedding of the slot index k, and an embedding of the view direction u_k
(both modalities' views point the same way), let the model score a pair by the agreement of
those codes, which separates the positive from every hard negative. So ``direction_embedding``
(unit vector -> linear, added to each token) is off by default and ``AVModel`` never turns it
on for pretraining; it is there for heads where the direction is a condition rather than the
answer (e.g. a localisation or a direction-queried separation head).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class ProjectionHead(nnx.Module):
    """MLP before the contrastive losses: Linear -> LayerNorm -> GELU -> Linear."""

    def __init__(self, in_features: int, hidden: int, out: int, *, dtype=None, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(in_features, hidden, dtype=dtype, rngs=rngs)
        self.norm = nnx.LayerNorm(hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, out, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.norm(self.fc1(x))))


class TransformerBlock(nnx.Module):
    """Pre-LN transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4, *, dtype=None, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, dim, dtype=dtype, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, dtype=dtype, rngs=rngs)
        self.fc1 = nnx.Linear(dim, mlp_ratio * dim, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_ratio * dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask=None):
        x = x + self.attn(self.norm1(x), mask=mask)
        return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))


class ViewTransformer(nnx.Module):
    """Context transformer over K view (or object) tokens: ``[B, K, D]`` -> ``[B, K, D]``.

    ``mask [B, K]`` marks valid tokens (padded objects are ignored as keys; their own outputs
    are finite but meaningless). ``directions [B, K, 3]`` (unit vectors) are required when
    ``direction_embedding`` is on; see the module docstring for why it is off by default.
    Residual throughout, so the output starts close to the input tokens.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        *,
        direction_embedding: bool = False,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        self.blocks = nnx.List(
            [TransformerBlock(dim, heads, dtype=dtype, rngs=rngs) for _ in range(depth)]
        )
        self.direction = nnx.Linear(3, dim, dtype=dtype, rngs=rngs) if direction_embedding else None

    def __call__(self, tokens, *, directions=None, mask=None):
        if self.direction is not None:
            if directions is None:
                raise ValueError("this ViewTransformer embeds view directions: pass directions")
            tokens = tokens + self.direction(directions)
        elif directions is not None:
            raise ValueError("directions given, but direction_embedding is off")
        # Mask keys only: a padded query still attends to the valid tokens, so nothing is NaN.
        attn_mask = None if mask is None else nnx.make_attention_mask(jnp.ones_like(mask), mask)
        for block in self.blocks:
            tokens = block(tokens, attn_mask)
        return tokens
