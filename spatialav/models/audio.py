"""Audio encoders over the stacked encoder features of ``features.encoder_input``.

Input ``[B, frames, mels, C]``: C log-mel channels in dB (4 for foa, 2 stereo, 1 mono) and,
for foa, 3 mel-projected intensity-vector (IV) channels. Two architectures:

- ``resnet2d``: a small 2D ResNet over (time, mel) with the C feature maps as channels; every
  stage after the first halves time and mel and doubles the width.
- ``conv1d``: 1D convs over time with mel x C as the channel axis (as in "The Conversation");
  each conv is a matmul with a wide contraction, far faster on CPU (docs/DESIGN.md §5).
  Every stage after the first halves time; the width stays constant.

- ``crnn``: the DCASE SELD baseline's shape (Adavanne et al. 2018; Shimada et al. 2022): three
  3x3 conv blocks over (time, mel) with max-pooling, time pooled once by ``CRNN_TIME_POOL`` (5:
  100 ms steps at the 20 ms hop, the DCASE label resolution) and mel down to 1-2 bands, then
  ``depth`` bidirectional GRU layers of ``width`` units per direction. The recurrence gives
  every step the context of the whole crop (onsets, offsets, which source is which), which
  the convolutional encoders only get through their receptive field.

All return ``(pooled [B, D], sequence [B, T', D])``; the sequence keeps a time axis for SELD
and separation heads, ``T' = ceil(frames / time_stride)`` with ``time_stride = 2**(depth-1)``
(``CRNN_TIME_POOL`` for ``crnn``).

Input scaling without dataset statistics: log-mel dB goes through the fixed affine
``(dB + 50) / 20`` (typical recordings sit in -90..+10 dB, the -100 dB silence floor lands at
-2.5), and the IVs are divided by each mel filter's area. Slaney-normalised filters sum to
about n_fft / sample_rate (0.043 at the defaults), so raw mel IVs are ~0.03 while the
divided ones are the band-averaged normalised intensity, within [-1, 1] (0.75 u for a plane
wave). The affine keeps absolute level and the level differences between channels, which
carry direction for stereo and FOA; the norm after the first (linear) layer then brings
activations to unit scale per example.

``relative_levels`` (foa only): the Y, Z, X log-mels enter as their level relative to W,
``(dB_ch - dB_W) / 6``, and the IVs are multiplied by ``IV_GAIN``. The views of one clip
share W exactly and differ only in the directional channels; in absolute dB those
differences are small next to the shared level (at initialisation the audio tokens of the
K views of a clip have cosine ~0.997), so the AVSA hard negatives start indistinguishable.
Relative levels put the direction-dependent part at unit scale from the first step.

``front_beam`` (foa only): one more channel, the level of a cardioid toward the front (+x)
relative to W, per mel band, ``10 log10(g) / 6`` with g = |beam|² / |W|² rebuilt from the
features: g = a² + (1 - a)² |X|²/|W|² + 2 a (1 - a) Re{W* X}/|W|², a = ½, where
Re{W* X}/|W|² ≈ IV_x / 0.75 (a plane wave's normalised IV is 0.75 u). For a plane wave from
u it is ((1 + u_x) / 2)²: 0 dB in front, a deep null behind. "What sounds in front" is what
every AVSA pair asks about; the stereo and mono formats hand the encoder beams directly
(cardioid log-mels), while FOA only has it as a log of a sum of its channels, which a small
network must first learn to form. Adding it keeps FOA a superset of the other formats in the
same easy form. Measured (default preset, 600 steps, lr 4e-4): binary AVSA probe 0.643 with
it vs 0.635-0.657 without, so it is off by default; at lr 8e-4 the AVSA loss stalled at chance.

``bin_mlp`` (width h > 0): a two-layer MLP over the C feature channels at each (frame, mel)
bin, its ``BIN_MLP_OUT`` outputs appended to the channels before the stem. The conv1d stem is
linear in the features of a frame, so on its own it cannot form per-bin products such as
"this band's level, where this band's intensity vector points to the front"; the MLP can,
with direction and level of the same time-frequency bin side by side.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spatialav import features
from spatialav.models.layers import ResBlock1D, ResBlock2D, group_norm

ARCHS = ("resnet2d", "conv1d", "crnn")
CRNN_TIME_POOL = 5  # crnn: one time pooling, 5 x 20 ms = the 100 ms DCASE label frame
CRNN_MEL_POOLS = (4, 4, 2)  # crnn: mel pooling per conv block (64 mels -> 2, 32 -> 1)
CRNN_FILTERS = 64  # crnn: conv filters (the DCASE baseline's)
DB_OFFSET, DB_SCALE = 50.0, 20.0
REL_DB_SCALE, IV_GAIN = 6.0, 3.0  # relative_levels: dB relative to W / 6, IVs x 3
BIN_MLP_OUT = 8  # channels the per-bin MLP appends
PLANE_WAVE_IV = 0.75  # the normalised DCASE IV of a plane wave from u is 0.75 u


def front_beam_level(x, cfg: features.FeatureConfig = features.DEFAULT, floor_db=-30.0):
    """Front cardioid level relative to W, in dB, from foa ``encoder_input`` features
    ``[..., frames, mels, 7]`` -> ``[..., frames, mels]`` (see the module docstring)."""
    area = features.mel_filterbank(cfg).sum(axis=0).astype(np.float32)
    rel_x = 10.0 ** ((x[..., 3] - x[..., 0]) / 10.0)  # |X|^2 / |W|^2 (ACN: W, Y, Z, X)
    cross = jnp.clip(x[..., 6] / area / PLANE_WAVE_IV, -1.0, 1.0)  # IV order (Y, Z, X)
    g = 0.25 + 0.25 * rel_x + 0.5 * cross
    return jnp.maximum(10.0 * jnp.log10(jnp.maximum(g, 1e-10)), floor_db)


def scale_inputs(x, fmt: str, cfg: features.FeatureConfig = features.DEFAULT,
                 relative_levels: bool = False, front_beam: bool = False):
    """Fixed, dataset-free scaling of ``encoder_input`` features ``[..., frames, mels, C]``."""
    n_mel_ch = {"foa": 4, "stereo": 2, "mono": 1}[fmt]
    x = jnp.asarray(x, jnp.float32)
    mel = (x[..., :n_mel_ch] + DB_OFFSET) / DB_SCALE
    if fmt != "foa":
        return mel
    area = features.mel_filterbank(cfg).sum(axis=0)  # [mels]
    iv = x[..., n_mel_ch:] / area[:, None].astype(np.float32)
    if relative_levels:
        rel = (x[..., 1:n_mel_ch] - x[..., :1]) / REL_DB_SCALE
        mel = jnp.concatenate([mel[..., :1], rel], axis=-1)
        iv = iv * IV_GAIN
    extra = [front_beam_level(x, cfg)[..., None] / REL_DB_SCALE] if front_beam else []
    return jnp.concatenate([mel, iv, *extra], axis=-1)


class AudioEncoder(nnx.Module):
    """Audio encoder for one input format; see the module docstring for the architectures.

    ``width``: channels of the first stage (resnet2d doubles it per stage; conv1d keeps it);
    ``depth``: stages, each of ``blocks`` residual blocks, all but the first downsampling
    time by 2; ``embed_dim``: output size D. ``dtype`` is the computation dtype (params f32).
    """

    def __init__(
        self,
        fmt: str,
        *,
        arch: str = "conv1d",
        width: int = 256,
        depth: int = 4,
        blocks: int = 1,
        embed_dim: int = 256,
        feature_cfg: features.FeatureConfig = features.DEFAULT,
        relative_levels: bool = False,
        front_beam: bool = False,
        bin_mlp: int = 0,
        dtype=None,
        rngs: nnx.Rngs,
    ):
        if arch not in ARCHS:
            raise ValueError(f"unknown audio arch {arch!r}; expected one of {ARCHS}")
        if depth < 1 or blocks < 1:
            raise ValueError(f"depth and blocks must be >= 1, got {depth}, {blocks}")
        self.fmt, self.arch, self.feature_cfg, self.dtype = fmt, arch, feature_cfg, dtype
        self.relative_levels = relative_levels
        self.front_beam = front_beam and fmt == "foa"
        self.in_channels = features.num_channels(fmt)
        self.time_stride = CRNN_TIME_POOL if arch == "crnn" else 2 ** (depth - 1)
        c_in = self.in_channels + self.front_beam
        self.bin_mlp = nnx.data(None if not bin_mlp else nnx.Sequential(
            nnx.Linear(c_in, bin_mlp, dtype=dtype, rngs=rngs), jax.nn.gelu,
            nnx.Linear(bin_mlp, BIN_MLP_OUT, dtype=dtype, rngs=rngs)))
        c_in += BIN_MLP_OUT if bin_mlp else 0
        if arch == "crnn":
            stages, c, mels = [], c_in, feature_cfg.n_mels
            for pool in CRNN_MEL_POOLS:
                stages.append(nnx.Conv(c, CRNN_FILTERS, (3, 3), use_bias=False, dtype=dtype,
                                       rngs=rngs))
                stages.append(group_norm(CRNN_FILTERS, dtype=dtype, rngs=rngs))
                c, mels = CRNN_FILTERS, max(1, mels // pool)
            self.stem, self.stem_norm = None, None
            self.rnn = nnx.List([
                nnx.Bidirectional(
                    nnx.RNN(nnx.GRUCell(c * mels if i == 0 else 2 * width, width, dtype=dtype,
                                        rngs=rngs), rngs=False),
                    nnx.RNN(nnx.GRUCell(c * mels if i == 0 else 2 * width, width, dtype=dtype,
                                        rngs=rngs), rngs=False),
                    rngs=False)
                for i in range(depth)])
            c = 2 * width
        elif arch == "resnet2d":
            self.stem = nnx.Conv(c_in, width, (3, 3), use_bias=False, dtype=dtype, rngs=rngs)
            self.stem_norm = group_norm(width, dtype=dtype, rngs=rngs)
            stages, c = [], width
            for i in range(depth):
                c_out = width * 2**i
                for j in range(blocks):
                    stride = 2 if i > 0 and j == 0 else 1
                    stages.append(ResBlock2D(c, c_out, stride, dtype=dtype, rngs=rngs))
                    c = c_out
        else:
            self.stem = nnx.Conv(
                feature_cfg.n_mels * c_in, width, (3,), use_bias=False, dtype=dtype, rngs=rngs
            )
            self.stem_norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
            stages, c = [], width
            for i in range(depth):
                if i > 0:  # strided conv halves time; wide contraction keeps it matmul-shaped
                    stages.append(nnx.Conv(c, c, (3,), 2, dtype=dtype, rngs=rngs))
                stages.extend(ResBlock1D(c, dtype=dtype, rngs=rngs) for _ in range(blocks))
        self.stages = nnx.List(stages)
        self.out_norm = nnx.LayerNorm(c, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(c, embed_dim, dtype=dtype, rngs=rngs)

    def num_out_frames(self, frames: int) -> int:
        """Length T' of the output sequence for an input of ``frames`` frames."""
        return math.ceil(frames / self.time_stride)

    def __call__(self, x):
        """``[B, frames, mels, C]`` features -> ``(pooled [B, D], sequence [B, T', D])``."""
        if x.shape[-1] != self.in_channels or x.shape[-2] != self.feature_cfg.n_mels:
            raise ValueError(
                f"{self.fmt} encoder expects [..., frames, {self.feature_cfg.n_mels}, "
                f"{self.in_channels}] features, got shape {x.shape}"
            )
        x = scale_inputs(x, self.fmt, self.feature_cfg, self.relative_levels, self.front_beam)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        if self.bin_mlp is not None:
            x = jnp.concatenate([x, self.bin_mlp(x)], axis=-1)
        if self.arch == "crnn":
            x = self._crnn(x)
        elif self.arch == "resnet2d":
            x = jax.nn.gelu(self.stem_norm(self.stem(x)))
            for block in self.stages:
                x = block(x)
            x = jnp.mean(x, axis=-2)  # pool mel: [B, T', c]
        else:
            x = x.reshape(*x.shape[:-2], -1)  # [B, frames, mels * C]
            x = jax.nn.gelu(self.stem_norm(self.stem(x)))
            for layer in self.stages:
                x = layer(x)
        seq = self.out(self.out_norm(x))
        return jnp.mean(seq, axis=-2), seq

    def _crnn(self, x):
        """``[B, frames, mels, C]`` -> ``[B, ceil(frames / 5), 2 * width]``."""
        pad = -x.shape[-3] % CRNN_TIME_POOL  # whole 100 ms steps (edge-padded)
        if pad:
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(0, pad), (0, 0), (0, 0)], mode="edge")
        for i, pool in enumerate(CRNN_MEL_POOLS):
            conv, norm = self.stages[2 * i], self.stages[2 * i + 1]
            x = jax.nn.gelu(norm(conv(x)))
            t = CRNN_TIME_POOL if i == 0 else 1
            x = nnx.max_pool(x, (t, min(pool, x.shape[-2])), (t, min(pool, x.shape[-2])))
        x = x.reshape(*x.shape[:-2], -1)  # [B, T', mels' * filters]
        for rnn in self.rnn:
            h0 = jnp.zeros((*x.shape[:-2], rnn.forward_rnn.cell.hidden_features), x.dtype)
            x = rnn(x, initial_carry=(h0, h0))
        return x
