"""Building blocks shared by the audio and visual encoders: normalisation and residual blocks.

Normalisation is GroupNorm / LayerNorm only (no BatchNorm): no mutable batch statistics, so
the train step stays a pure function and gives the same result on any number of devices.
Every layer takes ``dtype`` (the computation dtype, e.g. bfloat16) while its parameters stay
float32.
"""

from __future__ import annotations

import math

import jax
from flax import nnx

GROUPS = 8  # GroupNorm groups (fewer when the channel count is not a multiple of 8)


def group_norm(channels: int, *, dtype, rngs: nnx.Rngs, zero_scale: bool = False):
    """GroupNorm over (space, channels in group); ``zero_scale`` starts a residual branch at 0."""
    init = nnx.initializers.zeros if zero_scale else nnx.initializers.ones
    return nnx.GroupNorm(
        channels, num_groups=math.gcd(channels, GROUPS), scale_init=init, dtype=dtype, rngs=rngs
    )


class ResBlock2D(nnx.Module):
    """Basic ResNet block: two 3x3 convs with GroupNorm, a projection shortcut when needed.

    The second norm's scale starts at zero so every block starts as the identity, which keeps
    early training stable without warm-up tricks.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, *, dtype=None, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(cin, cout, (3, 3), stride, use_bias=False, dtype=dtype, rngs=rngs)
        self.norm1 = group_norm(cout, dtype=dtype, rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), use_bias=False, dtype=dtype, rngs=rngs)
        self.norm2 = group_norm(cout, dtype=dtype, rngs=rngs, zero_scale=True)
        self.shortcut = (
            nnx.Conv(cin, cout, (1, 1), stride, use_bias=False, dtype=dtype, rngs=rngs)
            if stride != 1 or cin != cout
            else None
        )

    def __call__(self, x):
        y = jax.nn.gelu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        skip = x if self.shortcut is None else self.shortcut(x)
        return jax.nn.gelu(skip + y)


class ResBlock1D(nnx.Module):
    """Pre-norm residual block over time: x + W2 gelu(W1 * LN(x)), W1 a k-tap conv, W2 1x1.

    Both convs are matmuls with a wide contraction (k * channels), the shape CPUs and TPUs
    run fastest (docs/DESIGN.md §5). LayerNorm acts per frame, so the block does not depend
    on the clip length. W2 starts at zero: the block starts as the identity.
    """

    def __init__(self, channels: int, kernel: int = 3, *, dtype=None, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(channels, dtype=dtype, rngs=rngs)
        self.conv = nnx.Conv(channels, channels, (kernel,), dtype=dtype, rngs=rngs)
        self.out = nnx.Conv(
            channels, channels, (1,), kernel_init=nnx.initializers.zeros, dtype=dtype, rngs=rngs
        )

    def __call__(self, x):
        return x + self.out(jax.nn.gelu(self.conv(self.norm(x))))
