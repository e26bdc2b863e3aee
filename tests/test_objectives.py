"""Contrastive objectives against naive float64 loop references, across devices, and grads."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spatialav import objectives as obj

TAU = 0.1
# Jitted once per shape: one compile instead of dozens of op-by-op dispatches (2-core CI).
info_nce, avc_loss, viewpoint_loss, object_loss, pair_loss = map(
    jax.jit, (obj.info_nce, obj.avc_loss, obj.avsa_viewpoint_loss, obj.avsa_object_loss,
              obj.avsa_pair_loss)
)


# --- naive references: explicit loops over anchors and candidates, float64 -----------------


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _anchor_loss(anchor, candidates, pos):
    """-log softmax of candidate ``pos`` for one anchor, by hand."""
    scores = [float(anchor @ c) / TAU for c in candidates]
    top = max(scores)
    lse = top + np.log(sum(np.exp(s - top) for s in scores))
    hit = all(scores[pos] > s for i, s in enumerate(scores) if i != pos)
    return lse - scores[pos], hit


def ref_info_nce(a, v, mask=None):
    a, v = _unit(a), _unit(v)
    idx = [i for i in range(len(a)) if mask is None or mask[i]]
    losses = [
        _anchor_loss(x[i], [y[j] for j in idx], idx.index(i))[0]
        for x, y in ((a, v), (v, a))
        for i in idx
    ]
    return float(np.mean(losses)) if losses else 0.0


def ref_viewpoint(a, v):
    """Anchor (b, k): candidates (b, j) for all j, then (c, k) for c != b."""
    a, v = _unit(a), _unit(v)
    n_b, n_k = a.shape[:2]
    losses, hard_hits, all_hits = [], [], []
    for x, y in ((a, v), (v, a)):
        for b in range(n_b):
            for k in range(n_k):
                cands = [y[b, j] for j in range(n_k)] + [y[c, k] for c in range(n_b) if c != b]
                loss, hit = _anchor_loss(x[b, k], cands, k)
                losses.append(loss)
                all_hits.append(hit)
                hard_hits.append(_anchor_loss(x[b, k], cands[:n_k], k)[1])
    return np.mean(losses), np.mean(hard_hits), np.mean(all_hits)


def ref_objects(a, v, valid):
    """All valid objects of all clips are candidates; also the in-clip accuracy."""
    a, v = _unit(a), _unit(v)
    slots = [(b, m) for b in range(valid.shape[0]) for m in range(valid.shape[1]) if valid[b, m]]
    losses, hits, hard_hits = [], [], []
    for x, y in ((a, v), (v, a)):
        for b, m in slots:
            loss, hit = _anchor_loss(x[b, m], [y[s] for s in slots], slots.index((b, m)))
            losses.append(loss)
            hits.append(hit)
            same = [s for s in slots if s[0] == b]
            if len(same) > 1:
                hard_hits.append(_anchor_loss(x[b, m], [y[s] for s in same], same.index((b, m)))[1])
    mean = lambda xs: float(np.mean(xs)) if xs else 0.0
    return mean(losses), mean(hits), mean(hard_hits)


def _rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- equality with the references -----------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
def test_info_nce_matches_loop_reference(masked):
    a, v = _rand(0, 12, 8), _rand(1, 12, 8)
    v[:6] += 1.5 * a[:6]  # some correlated pairs so the loss is not just log N
    mask = np.random.default_rng(2).random(12) > 0.4 if masked else None
    got = info_nce(a, v, TAU, None if mask is None else jnp.asarray(mask))
    np.testing.assert_allclose(got, ref_info_nce(a, v, mask), atol=1e-5)


def test_avc_loss_matches_reference_and_scores_accuracy():
    a, v = _rand(3, 10, 8), _rand(4, 10, 8)
    v[:5] = a[:5]  # these five pairs are found for sure
    loss, metrics = avc_loss(a, v, TAU)
    np.testing.assert_allclose(loss, ref_info_nce(a, v), atol=1e-5)
    sims = _unit(a) @ _unit(v).T
    acc = 0.5 * (
        np.mean(sims.argmax(1) == np.arange(10)) + np.mean(sims.argmax(0) == np.arange(10))
    )
    np.testing.assert_allclose(metrics["acc"], acc, atol=1e-6)
    assert metrics["acc"] >= 0.5


def test_avsa_viewpoint_loss_matches_loop_reference():
    a, v = _rand(5, 4, 3, 8), _rand(6, 4, 3, 8)
    v += 0.8 * a
    loss, metrics = viewpoint_loss(a, v, TAU)
    ref_loss, ref_hard, ref_all = ref_viewpoint(a, v)
    np.testing.assert_allclose(loss, ref_loss, atol=1e-5)
    np.testing.assert_allclose(metrics["acc_hard"], ref_hard, atol=1e-6)
    np.testing.assert_allclose(metrics["acc"], ref_all, atol=1e-6)
    assert 0 < metrics["acc"] < 1  # the accuracies are exercised, not trivially 0 or 1


def ref_pair_loss(a, v, bias):
    """The sigmoid AVSA pair loss, one (audio view, video view) pair at a time."""
    a, v = _unit(a), _unit(v)
    b, k = a.shape[:2]
    softplus = lambda z: np.log1p(np.exp(z))
    groups = {"pos": [], "hard": [], "easy": []}
    for i in range(b):
        for j in range(b):
            for m in range(k):
                for n in range(k):
                    z = float(a[i, m] @ v[j, n]) / TAU + bias
                    if i == j and m == n:
                        groups["pos"].append((softplus(-z), z > 0))
                    elif i == j:
                        groups["hard"].append((softplus(z), z < 0))
                    elif m == n:
                        groups["easy"].append((softplus(z), z < 0))
                    # (other clip, other slot): not a candidate of either AVSA anchor
    loss = sum(np.mean([x[0] for x in g]) for g in groups.values())
    acc = 0.5 * (np.mean([x[1] for x in groups["pos"]]) + np.mean([x[1] for x in groups["hard"]]))
    return loss, acc


@pytest.mark.parametrize("bias", [0.0, -2.0])
def test_avsa_pair_loss_matches_loop_reference(bias):
    a, v = _rand(14, 4, 3, 8), _rand(15, 4, 3, 8)
    v += 0.8 * a
    loss, metrics = pair_loss(a, v, TAU, bias)
    ref_loss, ref_acc = ref_pair_loss(a, v, bias)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["pair_acc_hard"], ref_acc, atol=1e-6)
    assert 0 < metrics["pair_acc_hard"] < 1


@pytest.mark.parametrize("case", ["mixed", "empty_clip", "all_invalid"])
def test_avsa_object_loss_matches_loop_reference(case):
    a, v = _rand(9, 4, 5, 8), _rand(10, 4, 5, 8)
    v += 0.7 * a
    valid = np.random.default_rng(11).random((4, 5)) > 0.35
    valid[2, 1:] = False  # a clip with a single object: no in-clip negative
    if case == "empty_clip":
        valid[1] = False
    if case == "all_invalid":
        valid[:] = False
    loss, metrics = object_loss(a, v, valid, TAU)
    ref_loss, ref_acc, ref_hard = ref_objects(a, v, valid)
    np.testing.assert_allclose(loss, ref_loss, atol=1e-5)
    np.testing.assert_allclose(metrics["acc"], ref_acc, atol=1e-6)
    np.testing.assert_allclose(metrics["acc_hard"], ref_hard, atol=1e-6)
    np.testing.assert_allclose(metrics["valid_frac"], valid.mean(), atol=1e-6)


# --- masks, gradients, finiteness ----------------------------------------------------------


def test_object_loss_ignores_padding_and_stays_finite_without_objects():
    a, v = _rand(12, 3, 4, 8), _rand(13, 3, 4, 8)
    valid = np.ones((3, 4), bool)
    valid[0] = False  # a clip with no detection
    valid[1, 3] = False
    loss_fn = lambda a, v, valid: object_loss(a, v, valid, TAU)[0]
    loss_and_grads = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
    loss, (ga, gv) = loss_and_grads(a, v, valid)
    assert np.isfinite(loss) and np.all(np.isfinite(ga)) and np.all(np.isfinite(gv))
    assert np.all(ga[~valid] == 0) and np.all(gv[~valid] == 0)
    junk_a, junk_v = a.copy(), v.copy()
    junk_a[~valid], junk_v[~valid] = 1e3, -7.0
    np.testing.assert_allclose(loss_and_grads(junk_a, junk_v, valid)[0], loss, atol=1e-6)
    loss0, (ga0, _) = loss_and_grads(a, v, np.zeros((3, 4), bool))
    assert loss0 == 0 and np.all(ga0 == 0)


@pytest.mark.parametrize("name", ["avc", "viewpoint", "objects"])
def test_pulling_a_positive_pair_together_lowers_the_loss(name):
    if name == "avc":
        a, v = _rand(14, 8, 16), _rand(15, 8, 16)
        fn, i = (lambda a: avc_loss(a, v, TAU)[0]), (3,)
    elif name == "viewpoint":
        a, v = _rand(16, 4, 3, 16), _rand(17, 4, 3, 16)
        fn, i = (lambda a: viewpoint_loss(a, v, TAU)[0]), (2, 1)
    else:
        a, v = _rand(18, 4, 3, 16), _rand(19, 4, 3, 16)
        valid = np.ones((4, 3), bool)
        fn, i = (lambda a: object_loss(a, v, valid, TAU)[0]), (1, 2)
    fn = jax.jit(fn)
    moved = a.copy()
    moved[i] = _unit(a[i]) + 2.0 * _unit(v[i])
    assert fn(moved) < fn(a) - 1e-3
    # The gradient step agrees: descending along -grad at that anchor helps.
    g = np.asarray(jax.grad(fn)(a))
    stepped = a.copy()
    stepped[i] -= 0.5 * g[i] / np.linalg.norm(g[i])
    assert fn(stepped) < fn(a)


def test_bf16_embeddings_are_scored_in_f32():
    a, v = _rand(20, 8, 16), _rand(21, 8, 16)
    lo = avc_loss(jnp.asarray(a, jnp.bfloat16), jnp.asarray(v, jnp.bfloat16), TAU)[0]
    assert lo.dtype == jnp.float32
    np.testing.assert_allclose(lo, avc_loss(a, v, TAU)[0], atol=0.02)


def test_curriculum_weights():
    w = lambda s, ramp: tuple(float(x) for x in obj.curriculum(s, 100, ramp))
    assert w(0, 0) == (1.0, 0.0) and w(99, 0) == (1.0, 0.0) and w(100, 0) == (0.0, 1.0)
    assert w(100, 50) == (1.0, 0.0) and w(125, 50) == (0.5, 0.5) and w(500, 50) == (0.0, 1.0)
    traced = jax.jit(lambda s: obj.curriculum(s, 100, 50))(jnp.int32(140))
    np.testing.assert_allclose(traced, (0.2, 0.8), atol=1e-6)


# --- the same global batch on 1 and on 8 devices ---------------------------------------------

_SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from spatialav import objectives as obj

    assert jax.device_count() == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
    data = {k: put(v) for k, v in np.load(sys.argv[1]).items()}
    assert all(len(x.sharding.device_set) == 8 for x in data.values())
    out = {
        "info_nce": jax.jit(obj.info_nce)(data["a"], data["v"], 0.1, data["mask"]),
        "avc": jax.jit(obj.avc_loss)(data["a"], data["v"], 0.1)[0],
        "viewpoint": jax.jit(obj.avsa_viewpoint_loss)(data["va"], data["vv"], 0.1)[0],
        "pair": jax.jit(obj.avsa_pair_loss)(data["va"], data["vv"], 0.1, -1.0)[0],
        "objects": jax.jit(obj.avsa_object_loss)(data["oa"], data["ov"], data["valid"], 0.1)[0],
    }
    print(json.dumps({k: float(v) for k, v in out.items()}))
    """
)


def test_global_batch_loss_is_the_same_on_1_and_8_devices(tmp_path):
    rng = np.random.default_rng(22)
    data = {
        "a": _rand(23, 16, 32),
        "v": _rand(24, 16, 32),
        "mask": rng.random(16) > 0.3,
        "va": _rand(25, 8, 4, 32),
        "vv": _rand(26, 8, 4, 32),
        "oa": _rand(27, 8, 3, 32),
        "ov": _rand(28, 8, 3, 32),
        "valid": rng.random((8, 3)) > 0.3,
    }
    np.savez(tmp_path / "batch.npz", **data)
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED, str(tmp_path / "batch.npz")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = json.loads(proc.stdout.strip().splitlines()[-1])
    single = {
        "info_nce": info_nce(data["a"], data["v"], 0.1, data["mask"]),
        "avc": avc_loss(data["a"], data["v"], 0.1)[0],
        "viewpoint": viewpoint_loss(data["va"], data["vv"], 0.1)[0],
        "pair": pair_loss(data["va"], data["vv"], 0.1, -1.0)[0],
        "objects": object_loss(data["oa"], data["ov"], data["valid"], 0.1)[0],
    }
    for name, value in single.items():
        assert abs(sharded[name] - float(value)) < 1e-6, (name, sharded[name], float(value))


def test_variance_penalty_is_zero_when_spread_and_pushes_a_collapsed_set_apart():
    from spatialav.pretraining import variance_penalty

    spread = jnp.asarray(np.random.default_rng(0).standard_normal((512, 16)), jnp.float32)
    assert float(variance_penalty(spread)) == 0.0
    collapsed = jnp.ones((8, 3, 16)) + 1e-3 * spread[:24].reshape(8, 3, 16)
    assert float(variance_penalty(collapsed)) > 0.4
    grad = jax.grad(lambda x: variance_penalty(x))(collapsed)
    assert float(jnp.linalg.norm(grad)) > 0  # the contrastive losses have ~0 gradient here
