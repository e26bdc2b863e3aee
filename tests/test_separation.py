"""Separation head: FiLM, the STFT -> mask -> iSTFT path, mixing and the mixture samplers.

Fast tests on hand-made signals and in-memory records (no dataset build, no training)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spatialav import ambisonics, features
from spatialav.downstream import mixtures
from spatialav.metrics.separation import si_sdr
from spatialav.models import separation as S

FCFG = features.DEFAULT
SR = FCFG.sample_rate


def _two_sources(n=SR, seed=0):
    """A harmonic 'voice' with a syllable envelope and a band of noise: different spectra."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    voice = sum(np.sin(2 * np.pi * 180 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    voice *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    noise = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same")
    return (0.3 * voice).astype(np.float32), (0.3 * noise).astype(np.float32)


# --- FiLM ---------------------------------------------------------------------------------


def test_film_identity_and_a_hand_computed_modulation():
    x = jax.random.normal(jax.random.key(0), (2, 4, 6, 3))
    ones, zeros = jnp.ones((2, 4, 3)), jnp.zeros((2, 4, 3))
    np.testing.assert_array_equal(S.film(x, ones, zeros), x)
    gamma = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    beta = -gamma / 2
    out = S.film(x, gamma, beta)
    b, t, f, c = 1, 2, 5, 1  # one element by hand: shared over frequency
    assert out[b, t, f, c] == pytest.approx(float(x[b, t, f, c] * gamma[b, t, c]
                                                  + beta[b, t, c]), rel=1e-6)


def test_fresh_film_generator_is_the_identity_whatever_the_query():
    gen = S.FiLMGenerator(8, 5, rngs=nnx.Rngs(0))
    q = jax.random.normal(jax.random.key(1), (2, 4, 8))
    gamma, beta = gen(q)
    np.testing.assert_array_equal(gamma, 1.0)
    np.testing.assert_array_equal(beta, 0.0)
    x = jax.random.normal(jax.random.key(2), (2, 4, 7, 5))
    np.testing.assert_array_equal(S.film(x, gamma, beta), x)


# --- masks and the STFT -> mask -> iSTFT path -----------------------------------------------


def _through_separator_path(mixture, mask_full):
    """The separator's own path: W spectrum, the U-Net's n_fft/2 bins, Nyquist padded back."""
    spec = S.mixture_spectrum(mixture[None, :, None], FCFG)[0, ..., 0]
    mask = S.pad_nyquist(mask_full[..., : FCFG.n_fft // 2])
    return S.apply_mask(spec, mask, mixture.shape[-1], FCFG)


def test_oracle_masks_separate_and_the_identity_mask_returns_the_mixture():
    s, n = _two_sources()
    mix = s + n
    spec_s, spec_n, spec_x = (features.stft(v, FCFG) for v in (s, n, mix))
    mixture_score = float(si_sdr(mix, s))
    assert -3 < mixture_score < 3  # a hard mixture to start from

    identity = _through_separator_path(mix, jnp.ones(spec_x.shape))
    assert float(si_sdr(identity, s)) == pytest.approx(mixture_score, abs=1e-3)
    np.testing.assert_allclose(identity, mix, atol=1e-5)  # perfect reconstruction

    irm = jnp.abs(spec_s) / (jnp.abs(spec_s) + jnp.abs(spec_n) + 1e-9)
    assert float(si_sdr(_through_separator_path(mix, irm), s)) > 10.0
    ideal_complex = spec_s / (spec_x + 1e-12)  # S / X: recovers S exactly, up to the bin cut
    assert float(si_sdr(_through_separator_path(mix, ideal_complex), s)) > 25.0
    assert float(si_sdr(_through_separator_path(mix, irm), s)) > mixture_score + 10


def test_bounded_complex_mask_keeps_the_phase_and_bounds_the_magnitude():
    logits = jnp.array([[3.0, 4.0], [0.0, 0.0], [-1e-3, 2e-3], [-50.0, 0.0]])
    m = S.bounded_complex_mask(logits)
    z = logits[:, 0] + 1j * logits[:, 1]
    np.testing.assert_allclose(jnp.abs(m), np.tanh(np.abs(z)), atol=1e-6)
    big = np.abs(z) > 1e-2
    np.testing.assert_allclose(np.angle(m[big]), np.angle(z[big]), atol=1e-6)
    assert np.all(np.abs(m) <= 1.0)
    grads = jax.grad(lambda x: jnp.sum(jnp.abs(S.bounded_complex_mask(x)) ** 2))(logits)
    assert np.isfinite(grads).all()  # also at z = 0
    mag = S.magnitude_mask(jnp.array([[-30.0], [0.0], [30.0]]))
    np.testing.assert_allclose(mag, [0.0, 0.5, 1.0], atol=1e-6)


def test_foa_features_carry_each_bins_direction():
    """A plane wave from u: Re{W* (Y, Z, X)} / |W|^2 = (uy, uz, ux) in every loud bin."""
    s, _ = _two_sources()
    az, el = 0.7, -0.3
    foa = ambisonics.encode(s, az, el)
    spec = S.mixture_spectrum(foa[None], FCFG)
    feats = S.spectral_features(spec, "foa")
    assert feats.shape[-1] == 7
    loud = np.abs(spec[0, ..., 0]) > 0.1 * np.abs(spec[0, ..., 0]).max()
    u = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    np.testing.assert_allclose(np.asarray(feats[0, ..., 4:])[loud], np.broadcast_to(
        u, (int(loud.sum()), 3)), atol=1e-3)


def test_separator_outputs_a_waveform_per_query_kind_and_checks_its_config():
    cfg = S.SeparatorConfig(width=4, depth=2, query_dim=8, visual_dim=6, text_dim=5,
                            num_classes=3)
    model = S.init_separator(cfg)
    separate = nnx.jit(lambda m, *query: m(mix, *query, fps=10.0))  # one compile, two calls
    b, n = 3, SR // 4
    mix = 0.1 * jax.random.normal(jax.random.key(0), (b, n, 1))
    out = separate(model, jnp.array([0, 1, 2]), jnp.zeros((b, 3, 6)), jnp.array([0, 1, 2]),
                   jnp.zeros((b, 5)))
    assert out.shape == (b, n) and np.isfinite(out).all()
    # An untrained FiLM is the identity, so the query cannot matter yet.
    other = separate(model, jnp.array([1, 1, 1]), jnp.ones((b, 3, 6)), jnp.array([2, 0, 1]),
                     jnp.ones((b, 5)))
    np.testing.assert_allclose(out, other, atol=1e-6)
    with pytest.raises(ValueError, match="mask must be one of"):
        S.SeparatorConfig(mask="phase")
    with pytest.raises(ValueError, match="must divide by"):
        S.SeparatorConfig(depth=10)


def test_video_frames_map_to_stft_frames_by_time():
    idx = S.video_to_stft_frames(5, 51, fps=5.0, cfg=FCFG)  # 1 s: STFT frames every 20 ms
    assert idx[0] == 0 and idx[-1] == 4
    assert list(idx[:16]) == [0] * 5 + [1] * 10 + [2]  # frame k covers (k +- 1/2) / 5 s


# --- mixing and sampling ------------------------------------------------------------------


def test_mix_preserves_the_sum_and_sets_the_snr():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((1000, 4)).astype(np.float32) * 0.2
    interf = rng.standard_normal((2, 1000, 4)).astype(np.float32) * [[[0.5]], [[0.05]]]
    mixture, sources = mixtures.mix(target, interf, np.array([3.0, -6.0]), peak=0.9)
    np.testing.assert_allclose(mixture, sources.sum(0), atol=1e-6)
    assert max(np.abs(mixture).max(), np.abs(sources).max()) == pytest.approx(0.9, rel=1e-5)
    energy = np.sum(sources[..., 0].astype(np.float64) ** 2, axis=-1)
    np.testing.assert_allclose(10 * np.log10(energy[0] / energy[1:]), [3.0, -6.0], atol=1e-4)
    gain = sources[0, 0, 0] / target[0, 0]
    np.testing.assert_allclose(sources[0], target * gain, rtol=1e-5, atol=1e-7)


def _table(classes, n_samples=SR * 2, fps=5.0, n_frames=10, dim=4, seed=0):
    """A SourceTable of one source per clip, with always-active sources and random queries."""
    rng = np.random.default_rng(seed)
    n = len(classes)
    return mixtures.SourceTable(
        clip=np.arange(n), slot=np.zeros(n, np.int64), cls=np.asarray(classes, np.int32),
        direction=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        activity=np.ones((n, 20), bool), crops=np.zeros((n, n_frames, 4, 4, 3), np.uint8),
        sample_rate=SR, fps=fps, num_samples=n_samples,
        queries=rng.standard_normal((n, n_frames, dim)).astype(np.float32))


def _records(table, seed=0):
    """In-memory records (a list is a random-access source) with plane-wave source images."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(len(table)):
        dry = rng.standard_normal(table.num_samples).astype(np.float32) * 0.1
        img = ambisonics.encode(dry, *table.direction[i])
        recs.append({"source_images": np.round(img[None] * 32767).astype(np.int16)})
    return recs


NAMES = ("female_speech", "male_speech", "engine", "bell")


def test_same_class_sampler_picks_two_sources_of_one_class_talkers_first():
    table = _table([0, 0, 2, 2, 2, 3, 1, 1])
    pool = mixtures.same_class_pool(table, NAMES, mixtures.TALKERS)
    assert set(pool) == {0, 1}  # talkers preferred over the engines
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        t, (i,) = mixtures.sample_sources(rng, table, "same", 1, pool)
        assert t != i and table.cls[t] == table.cls[i] and table.cls[t] in (0, 1)
        seen.add(int(table.cls[t]))
        t, (i,) = mixtures.sample_sources(rng, table, "different", 1, pool)
        assert table.cls[t] != table.cls[i]
    assert seen == {0, 1}
    no_talkers = _table([2, 2, 3])
    assert list(mixtures.same_class_pool(no_talkers, NAMES, mixtures.TALKERS)) == [2]
    lonely = _table([0, 1, 2])
    empty = mixtures.same_class_pool(lonely, NAMES, mixtures.TALKERS)
    with pytest.raises(ValueError, match="no class has two sources"):
        mixtures.sample_sources(rng, lonely, "same", 1, empty)


def test_mixture_maker_examples_sum_and_query_the_target():
    table = _table([0, 0, 2, 3])
    maker = mixtures.MixtureMaker(_records(table), table, mixtures.MixConfig(), NAMES)
    rng = np.random.default_rng(1)
    for mixture in mixtures.MIXTURE_KINDS:
        ex = maker(rng, mixture, "visual")
        np.testing.assert_allclose(ex["mixture"][:, 0], ex["target"] + ex["interferers"].sum(0),
                                   atol=1e-6)
        t, (i,) = int(ex["target_row"]), ex["interferer_rows"]
        assert bool(ex["same_class"]) == (mixture == "same") == (table.cls[t] == table.cls[i])
        assert ex["label"] == table.cls[t]
        # The visual query is the target's own per-frame features, in the crop's frames.
        matches = [np.array_equal(ex["visual"], table.queries[t, s : s + 5]) for s in range(6)]
        assert any(matches)
        assert ex["visual"].shape == (5, 4)  # 1 s at 5 fps: per frame, not pooled


def test_foa_mixture_is_turned_toward_the_visual_querys_object():
    table = _table([0, 2])
    cfg = mixtures.MixConfig(input_format="foa", num_interferers=1, snr_db=(40.0, 40.0))
    maker = mixtures.MixtureMaker(_records(table), table, cfg, NAMES)
    ex = maker(np.random.default_rng(0), "different", "visual", target=0, snr_db=60.0)
    w, y, z, x = ex["mixture"].T
    # The target (60 dB above the interferer) is a plane wave: after the turn it is in front.
    assert np.dot(x, w) / np.dot(w, w) == pytest.approx(1.0, abs=1e-3)
    assert abs(np.dot(y, w) / np.dot(w, w)) < 1e-3 and abs(np.dot(z, w) / np.dot(w, w)) < 1e-3
    np.testing.assert_allclose(w, ex["target"] + ex["interferers"].sum(0), atol=1e-6)
    label = maker(np.random.default_rng(0), "different", "label", target=0, snr_db=60.0)
    np.testing.assert_allclose(label["mixture"][:, 0], w, atol=1e-6)  # label: field not turned
    u = np.array([label["mixture"][:, c] @ w for c in (3, 1, 2)]) / np.dot(w, w)
    az, el = table.direction[0]
    np.testing.assert_allclose(u, [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az),
                                   math.sin(el)], atol=1e-3)


def test_crop_start_lands_where_the_source_is_active():
    activity = np.zeros(20, bool)
    activity[12:18] = True  # 1.2 - 1.8 s of a 2 s clip
    rng = np.random.default_rng(0)
    starts = {mixtures.active_crop_start(rng, activity, 2.0, 1.0, 0.2, 0.5) for _ in range(50)}
    assert starts <= {0.8, 1.0} and len(starts) == 2  # >= 5 of 10 label frames active
    never = np.zeros(20, bool)
    never[19] = True
    assert mixtures.active_crop_start(rng, never, 2.0, 1.0, 0.2, 0.5) == pytest.approx(1.0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="query_kinds"):
        mixtures.MixConfig(query_kinds=("visual", "smell"))
    with pytest.raises(ValueError, match="'sources' group"):
        mixtures.build_source_table([{"audio": np.zeros((10, 4), np.int16)}],
                                    mixtures.MixConfig())
    table = _table([0, 2])
    table.queries = None
    with pytest.raises(ValueError, match="encode_queries"):
        mixtures.MixtureMaker([], table, mixtures.MixConfig(), NAMES)


def test_only_a_fine_tuned_visual_encoder_joins_the_trainable_parameters():
    from spatialav.downstream.encoders import freeze
    from spatialav.downstream.separation import SeparationModel
    from spatialav.models.visual import VisualEncoder

    def trainable(model):
        return {str(path[0]) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}

    cfg = S.SeparatorConfig(width=4, depth=1, query_dim=4, visual_dim=8, text_dim=1)
    sep = S.init_separator(cfg)
    video = VisualEncoder(width=4, depth=1, embed_dim=8, rngs=nnx.Rngs(0))
    assert trainable(SeparationModel(sep, 10.0)) == {"separator"}
    assert trainable(SeparationModel(sep, 10.0, video)) == {"separator", "video"}
    assert trainable(SeparationModel(sep, 10.0, freeze(video))) == {"separator"}


def test_training_stream_is_a_function_of_seed_and_position_and_shards_by_process():
    table = _table([0, 0, 2, 3])
    maker = mixtures.MixtureMaker(_records(table), table,
                                  mixtures.MixConfig(query_kinds=("visual", "label")), NAMES)
    whole = mixtures.train_dataset(maker, batch_size=4, seed=3)
    again = mixtures.train_dataset(maker, batch_size=4, seed=3)
    halves = [mixtures.train_dataset(maker, batch_size=2, seed=3, shard=(i, 2)) for i in (0, 1)]
    for step in (0, 5):
        a, b = whole[step], again[step]
        np.testing.assert_array_equal(a["mixture"], b["mixture"])
        # Global batch = process 0's positions 0, 2, ... and process 1's 1, 3, ...
        np.testing.assert_array_equal(a["target"][0::2], halves[0][step]["target"])
        np.testing.assert_array_equal(a["target"][1::2], halves[1][step]["target"])
    assert not np.array_equal(whole[0]["target"],
                              mixtures.train_dataset(maker, batch_size=4, seed=4)[0]["target"])
