"""Query-conditioned source separation: a spectrogram U-Net with FiLM, and its mask DSP.

The separator sees the mixture's STFT (``spatialav.features``) and a *query* naming the source
to extract, and predicts a time-frequency mask on the mixture's omni (W) channel; the target
waveform is the iSTFT of the masked W spectrum. Three query kinds share one conditioning path
(Sound of Pixels / Looking to Listen for the visual query, LASS-Net for label and text):

- ``visual``: per-video-frame features ``[B, n, D]`` of the source's object crop from a frozen
  visual encoder. They stay per frame (not pooled) so that two talkers of the same class can
  be told apart by whose mouth moves with which voice; a small temporal conv sees the motion.
- ``label``: a learned embedding of the class index.
- ``text``: a fixed sentence embedding ``[B, E]`` of a description (all-MiniLM-L6-v2, computed
  on the host by ``spatialav.downstream.text_query``).

Each kind is projected to a common query sequence ``[B, T, C]`` at the STFT frame rate (label
and text are constant over time) and every U-Net level is modulated by FiLM,
``gamma(q_t) * x + beta(q_t)`` per time frame and channel; the FiLM generators start at
``gamma = 1, beta = 0`` (the identity), so an untrained separator is a plain U-Net.

Masks: ``magnitude`` (a sigmoid ratio mask in [0, 1] on |W|, the mixture phase is kept) or
``complex`` (a bounded complex ratio mask, ``tanh(|z|) z / |z|``: magnitude below 1 and any
phase, as DCCRN-E). Input: ``mono`` (log |W|) or ``foa`` (log |W|, |Y|, |Z|, |X| plus the
per-bin direction cue ``Re{W* (Y, Z, X)} / |W|^2``, which for a single plane wave in a bin is
its unit direction, so spatial separation is visible to the network).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spatialav import features
from spatialav.models.layers import group_norm

QUERY_KINDS = ("visual", "label", "text")
MASKS = ("magnitude", "complex")
INPUT_FORMATS = ("mono", "foa")
_LOG_FLOOR = 1e-4  # magnitude floor of the log-spectrogram input (about -80 dB re full scale)
_DIRECTION_CLIP = 2.0  # |Re{W* C}| / |W|^2 is <= 1 for a plane wave; clip noisy bins


@dataclasses.dataclass(frozen=True)
class SeparatorConfig:
    """Sizes and options of the separator (``UNetSeparator``)."""

    input_format: str = "mono"  # 'mono' (W) | 'foa' (all four ambiX channels)
    mask: str = "magnitude"  # 'magnitude' | 'complex'
    width: int = 16  # channels of the first U-Net level; level i has width * 2**i
    depth: int = 4  # down-sampling levels (time and frequency halve at each)
    # Frequency bins per patch of the stem: the U-Net runs on n_fft / 2 / freq_patch bands and
    # a transposed conv brings the mask back to every bin. 3x3 convs are the slow op on CPU
    # (docs/DESIGN.md §5); 4 cuts the U-Net's cost about 4x.
    freq_patch: int = 4
    query_dim: int = 64  # C: the common query space all kinds are projected to
    visual_dim: int = 32  # D of the visual encoder's per-frame features
    text_dim: int = 384  # E of the sentence embeddings (all-MiniLM-L6-v2)
    num_classes: int = 14
    feature_cfg: features.FeatureConfig = features.DEFAULT
    dtype: str = "float32"  # computation dtype; parameters stay float32

    def __post_init__(self):
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be one of {INPUT_FORMATS}, "
                             f"got {self.input_format!r}")
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {self.mask!r}")
        bins = self.feature_cfg.n_fft // 2
        if self.depth < 1 or self.freq_patch < 1 or bins % (self.freq_patch * 2**self.depth):
            raise ValueError(f"depth {self.depth}, freq_patch {self.freq_patch}: the {bins} "
                             "frequency bins the U-Net sees (n_fft / 2) must divide by "
                             "freq_patch * 2**depth")

    @property
    def in_channels(self) -> int:
        return 1 if self.input_format == "mono" else 7

    @property
    def mask_channels(self) -> int:
        return 1 if self.mask == "magnitude" else 2


# --- pure DSP: spectra, masks, waveforms ---------------------------------------------------


def mixture_spectrum(mixture, cfg: features.FeatureConfig):
    """STFT of a mixture ``[B, time, C]`` -> complex ``[B, frames, freqs, C]``."""
    spec = features.stft(jnp.moveaxis(jnp.asarray(mixture, jnp.float32), -1, -2), cfg)
    return jnp.moveaxis(spec, -3, -1)


def spectral_features(spec, input_format: str):
    """Network input ``[B, frames, freqs, 1 | 7]`` of a mixture spectrum ``[..., freqs, C]``.

    ``mono``: log |W|. ``foa``: log |W|, |Y|, |Z|, |X| and Re{W* (Y, Z, X)} / |W|^2 (clipped).
    """
    logmag = jnp.log(jnp.abs(spec) + _LOG_FLOOR)
    if input_format == "mono":
        return logmag[..., :1]
    w = spec[..., :1]
    cue = jnp.real(jnp.conj(w) * spec[..., 1:]) / (jnp.abs(w) ** 2 + _LOG_FLOOR**2)
    return jnp.concatenate([logmag, jnp.clip(cue, -_DIRECTION_CLIP, _DIRECTION_CLIP)], -1)


def magnitude_mask(logits):
    """Sigmoid ratio mask in (0, 1) from logits ``[..., 1]`` -> real ``[...]``."""
    return jax.nn.sigmoid(logits[..., 0])


def bounded_complex_mask(logits):
    """Bounded complex ratio mask from (real, imaginary) logits ``[..., 2]`` -> complex ``[...]``.

    ``tanh(|z|) z / |z|``: the phase of z and a magnitude squashed below 1 (DCCRN's "E" mask).
    """
    re, im = logits[..., 0], logits[..., 1]
    mag = jnp.sqrt(re**2 + im**2 + 1e-12)  # smooth at z = 0, where |z| has no gradient
    return jax.lax.complex(re, im) * (jnp.tanh(mag) / mag)


def apply_mask(spec, mask, length: int, cfg: features.FeatureConfig):
    """Masked spectrum -> waveform: ``istft(mask * spec)`` with ``spec, mask [..., frames,
    freqs]`` (a real mask keeps the mixture phase); returns ``[..., length]``."""
    return features.istft(mask * spec, length, cfg)


def pad_nyquist(mask):
    """The U-Net predicts n_fft / 2 bins; the Nyquist bin repeats the highest one."""
    return jnp.concatenate([mask, mask[..., -1:]], axis=-1)


# --- FiLM ----------------------------------------------------------------------------------


def film(x, gamma, beta):
    """Feature-wise linear modulation of ``x [B, T, F, ch]`` by ``gamma, beta [B, T, ch]``
    (per time frame and channel, shared over frequency)."""
    return x * gamma[:, :, None, :] + beta[:, :, None, :]


class FiLMGenerator(nnx.Module):
    """Query ``[B, T, C]`` -> (gamma, beta) ``[B, T, ch]``; zero-initialised, so it starts at
    gamma = 1, beta = 0 and the modulated network starts as the unconditioned one."""

    def __init__(self, query_dim: int, channels: int, *, dtype=None, rngs: nnx.Rngs):
        zeros = nnx.initializers.zeros
        self.proj = nnx.Linear(query_dim, 2 * channels, kernel_init=zeros, bias_init=zeros,
                               dtype=dtype, rngs=rngs)

    def __call__(self, q):
        delta, beta = jnp.split(self.proj(q), 2, axis=-1)
        return 1.0 + delta, beta


# --- query encoder -------------------------------------------------------------------------


def video_to_stft_frames(num_video: int, num_stft: int, fps: float,
                         cfg: features.FeatureConfig) -> np.ndarray:
    """Index ``[num_stft]`` of the video frame (n / fps) nearest each STFT frame's centre."""
    t = np.arange(num_stft) * cfg.hop_length / cfg.sample_rate
    return np.clip(np.floor(t * fps + 0.5), 0, num_video - 1).astype(np.int32)


class QueryEncoder(nnx.Module):
    """Visual, label and text queries -> one query sequence ``[B, T, C]`` per example.

    ``kind [B]`` (index into ``QUERY_KINDS``) picks each example's query; the others are
    computed and discarded (they are tiny next to the U-Net).
    """

    def __init__(self, cfg: SeparatorConfig, *, dtype=None, rngs: nnx.Rngs):
        c = cfg.query_dim
        self.visual_norm = nnx.LayerNorm(cfg.visual_dim, dtype=dtype, rngs=rngs)
        self.visual_in = nnx.Linear(cfg.visual_dim, c, dtype=dtype, rngs=rngs)
        # Over video frames: sees a frame and its neighbours (mouth opening and closing).
        self.visual_motion = nnx.Conv(c, c, (3,), dtype=dtype, rngs=rngs)
        self.label = nnx.Embed(cfg.num_classes, c, dtype=dtype, rngs=rngs)
        self.text_in = nnx.Linear(cfg.text_dim, c, dtype=dtype, rngs=rngs)
        self.out_norm = nnx.LayerNorm(c, dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(c, c, dtype=dtype, rngs=rngs)

    def __call__(self, kind, visual, label, text, frame_index):
        """``visual [B, n, D]``, ``label [B]``, ``text [B, E]``, ``frame_index [T]`` (video
        frame of each STFT frame) -> ``[B, T, C]``."""
        v = self.visual_in(self.visual_norm(visual))
        v = v + self.visual_motion(jax.nn.gelu(v))
        v = v[:, frame_index]  # [B, T, C]
        static = jnp.where((kind == 1)[:, None], self.label(label), self.text_in(text))
        q = jnp.where((kind == 0)[:, None, None], v, static[:, None, :])
        return self.out(jax.nn.gelu(self.out_norm(q)))


# --- U-Net ---------------------------------------------------------------------------------


class ConvBlock(nnx.Module):
    """Two 3x3 convs over (time, frequency), each followed by GroupNorm and GELU."""

    def __init__(self, cin: int, cout: int, *, dtype=None, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(cin, cout, (3, 3), use_bias=False, dtype=dtype, rngs=rngs)
        self.norm1 = group_norm(cout, dtype=dtype, rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), use_bias=False, dtype=dtype, rngs=rngs)
        self.norm2 = group_norm(cout, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.gelu(self.norm1(self.conv1(x)))
        return jax.nn.gelu(self.norm2(self.conv2(x)))


def _pool_time(q, factor: int):
    """Mean over groups of ``factor`` frames: ``[B, T, C]`` -> ``[B, T / factor, C]``."""
    b, t, c = q.shape
    return q.reshape(b, t // factor, factor, c).mean(axis=2)


class UNetSeparator(nnx.Module):
    """Mixture audio + query -> mask logits and the separated W waveform.

    The stem groups ``freq_patch`` bins into one band; level i then works at time / 2**i,
    bands / 2**i with ``width * 2**i`` channels. FiLM follows every encoder, bottleneck and
    decoder block, at the query pooled to that level's frame rate. Skip connections
    concatenate; the head brings the bands back to bins and adds a 1x1 conv of the input.
    """

    def __init__(self, cfg: SeparatorConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype = jnp.dtype(cfg.dtype)
        kw = dict(dtype=dtype, rngs=rngs)
        chans = [cfg.width * 2**i for i in range(cfg.depth + 1)]
        self.query = QueryEncoder(cfg, **kw)
        p = cfg.freq_patch
        self.stem = nnx.Conv(cfg.in_channels, chans[0], (3, p), (1, p), dtype=dtype, rngs=rngs)
        self.enc = nnx.List([ConvBlock(chans[i], chans[i], **kw) for i in range(cfg.depth)])
        self.enc_film = nnx.List([FiLMGenerator(cfg.query_dim, chans[i], **kw)
                                  for i in range(cfg.depth)])
        self.down = nnx.List([nnx.Conv(chans[i], chans[i + 1], (3, 3), 2, **kw)
                              for i in range(cfg.depth)])
        self.mid = ConvBlock(chans[-1], chans[-1], **kw)
        self.mid_film = FiLMGenerator(cfg.query_dim, chans[-1], **kw)
        self.up = nnx.List([nnx.ConvTranspose(chans[i + 1], chans[i], (2, 2), (2, 2), **kw)
                            for i in range(cfg.depth)])
        self.dec = nnx.List([ConvBlock(2 * chans[i], chans[i], **kw) for i in range(cfg.depth)])
        self.dec_film = nnx.List([FiLMGenerator(cfg.query_dim, chans[i], **kw)
                                  for i in range(cfg.depth)])
        self.head = nnx.ConvTranspose(chans[0], cfg.mask_channels, (1, p), (1, p), **kw)
        self.head_skip = nnx.Conv(cfg.in_channels, cfg.mask_channels, (1, 1), **kw)

    def mask_logits(self, feats, q):
        """U-Net: ``feats [B, T, F, C_in]``, ``q [B, T, C]`` (T, F multiples of 2**depth)."""
        x = self.stem(feats)
        skips = []
        for i in range(self.cfg.depth):
            x = film(self.enc[i](x), *self.enc_film[i](_pool_time(q, 2**i)))
            skips.append(x)
            x = self.down[i](x)
        x = film(self.mid(x), *self.mid_film(_pool_time(q, 2**self.cfg.depth)))
        for i in reversed(range(self.cfg.depth)):
            x = jnp.concatenate([self.up[i](x), skips[i]], axis=-1)
            x = film(self.dec[i](x), *self.dec_film[i](_pool_time(q, 2**i)))
        return (self.head(x) + self.head_skip(feats)).astype(jnp.float32)

    def __call__(self, mixture, kind, visual, label, text, fps: float):
        """Separate: ``mixture [B, time, 1 | 4]`` (W first), queries as ``QueryEncoder``,
        ``fps`` the video rate of ``visual``. Returns the target W estimate ``[B, time]``."""
        cfg = self.cfg
        fcfg = cfg.feature_cfg
        length = mixture.shape[1]
        spec = mixture_spectrum(mixture, fcfg)  # [B, T, F + 1, C]
        n_frames, bins = spec.shape[1], fcfg.n_fft // 2
        t_pad = -(-n_frames // 2**cfg.depth) * 2**cfg.depth
        feats = spectral_features(spec[:, :, :bins], cfg.input_format)
        feats = jnp.pad(feats, ((0, 0), (0, t_pad - n_frames), (0, 0), (0, 0)),
                        constant_values=np.log(_LOG_FLOOR))
        index = video_to_stft_frames(visual.shape[1], t_pad, fps, fcfg)
        q = self.query(kind, visual, label, text, index)
        logits = self.mask_logits(feats.astype(jnp.dtype(cfg.dtype)), q)[:, :n_frames]
        mask = (magnitude_mask(logits) if cfg.mask == "magnitude"
                else bounded_complex_mask(logits))
        return apply_mask(spec[..., 0], pad_nyquist(mask), length, fcfg)


def init_separator(cfg: SeparatorConfig, seed: int = 0) -> UNetSeparator:
    """``UNetSeparator(cfg, rngs=nnx.Rngs(seed))``, initialised inside one jit (one compile
    instead of one per parameter shape, as ``models.init_model``)."""
    ctor = lambda: UNetSeparator(cfg, rngs=nnx.Rngs(seed))
    state = jax.jit(lambda: nnx.state(ctor()))()
    return nnx.merge(nnx.graphdef(nnx.eval_shape(ctor)), state)
