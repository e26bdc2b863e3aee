"""Contrastive objectives for pretraining: AVC, AVSA-viewpoints, AVSA-objects.

Pure JAX functions of embeddings. Inputs may be unnormalised: every loss L2-normalises
(in float32) inside, so cosine similarity / ``tau`` are the logits.

All functions act on *global* arrays. Under ``jax.jit`` with the batch axis sharded over a
mesh, the similarity einsums need every device's embeddings, and XLA inserts the all-gathers
itself: negatives come from the whole global batch, across devices and processes, with no
explicit collectives here. Masked entries use a large finite negative logit (not -inf) so
rows or clips with nothing valid stay finite in value and gradient.

The task losses return ``(loss, metrics)`` (a dict of scalars), the shape the trainer needs
for ``jax.value_and_grad(..., has_aux=True)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG = -1e9  # logit of an excluded candidate: exp() underflows to 0, stays finite


def l2_normalize(x, eps: float = 1e-6):
    """Unit-length rows in float32 (also for bf16 activations)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def _weighted_mean(values, weights):
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _nce_logits(a, v, tau, mask):
    """Masked similarity logits ``[N, N]`` (audio rows, video columns) and the row validity."""
    logits = l2_normalize(a) @ l2_normalize(v).T / tau
    valid = jnp.ones(a.shape[0], bool) if mask is None else jnp.asarray(mask, bool)
    return jnp.where(valid[:, None] & valid[None, :], logits, NEG), valid


def _row_losses(logits):
    """-log softmax of the diagonal (the positive) for each row."""
    return jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits)


def _row_hits(logits):
    return (jnp.argmax(logits, axis=-1) == jnp.arange(logits.shape[0])).astype(jnp.float32)


def info_nce(a, v, tau: float = 0.07, mask=None):
    """Symmetric InfoNCE between paired rows of ``a [N, D]`` and ``v [N, D]``; a scalar.

    Row i of ``a`` and row i of ``v`` are the positive pair; every other valid row of the
    other modality is a negative. ``mask [N]`` (bool) drops rows from both anchors and
    candidates. The loss is the mean of the a->v and v->a cross-entropies over valid
    anchors (0 when nothing is valid).
    """
    logits, valid = _nce_logits(a, v, tau, mask)
    w = valid.astype(jnp.float32)
    return 0.5 * (_weighted_mean(_row_losses(logits), w) + _weighted_mean(_row_losses(logits.T), w))


def avc_loss(audio, video, tau: float = 0.07):
    """Audio-visual correspondence: symmetric InfoNCE over the global batch ``[B, D]``.

    Metrics: ``acc`` = top-1 retrieval accuracy of the positive among all B candidates,
    averaged over both directions.
    """
    logits, _ = _nce_logits(audio, video, tau, None)
    loss = 0.5 * (jnp.mean(_row_losses(logits)) + jnp.mean(_row_losses(logits.T)))
    acc = 0.5 * (jnp.mean(_row_hits(logits)) + jnp.mean(_row_hits(logits.T)))
    return loss, {"loss": loss, "acc": acc}


def _viewpoint_direction(hard, easy):
    """Per-anchor losses and hits for one direction.

    ``hard [B, K, K]``: anchor (b, k) against candidates (b, j); the positive is j = k.
    ``easy [B, K, B]``: anchor (b, k) against candidates (c, k); c = b (the positive again)
    is excluded so it is counted once.
    """
    b, k = hard.shape[:2]
    easy = jnp.where(jnp.eye(b, dtype=bool)[:, None, :], NEG, easy)
    pos = jnp.diagonal(hard, axis1=1, axis2=2)  # [B, K]
    losses = jax.nn.logsumexp(jnp.concatenate([hard, easy], axis=-1), axis=-1) - pos
    hit_hard = jnp.argmax(hard, axis=-1) == jnp.arange(k)
    hit_all = hit_hard & (pos > jnp.max(easy, axis=-1))
    return losses, hit_hard.astype(jnp.float32), hit_all.astype(jnp.float32)


def avsa_viewpoint_loss(audio, video, tau: float = 0.07):
    """AVSA over K viewpoints per clip: ``audio``, ``video`` ``[B, K, D]``.

    For audio view (b, k) the positive is video view (b, k); the negatives are the other
    views of the same clip, (b, k' != k) (hard: same scene, other direction), and the same
    slot of the other clips, (b' != b, k) (easy: other scene). Symmetric for video anchors.
    Metrics: ``acc_hard`` = the positive beats the hard negatives only, ``acc`` = it beats
    all candidates; both averaged over all B K anchors of both directions.
    """
    a, v = l2_normalize(audio), l2_normalize(video)
    hard = jnp.einsum("bkd,bjd->bkj", a, v) / tau  # audio (b, k) . video (b, j)
    easy = jnp.einsum("bkd,ckd->bkc", a, v) / tau  # audio (b, k) . video (c, k)
    a2v = _viewpoint_direction(hard, easy)
    # Video anchor (b, k): same scores, transposed to put the video view first.
    v2a = _viewpoint_direction(jnp.swapaxes(hard, 1, 2), jnp.transpose(easy, (2, 1, 0)))
    loss, acc_hard, acc = (0.5 * (jnp.mean(x) + jnp.mean(y)) for x, y in zip(a2v, v2a, strict=True))
    return loss, {"loss": loss, "acc_hard": acc_hard, "acc": acc}


def avsa_pair_loss(audio, video, tau: float = 0.1, bias: float = 0.0):
    """Sigmoid (SigLIP-style) loss over the AVSA-viewpoint pairs: ``audio``, ``video``
    ``[B, K, D]``.

    Each (audio view, video view) pair is classified on its own as aligned or not from
    ``cos / tau + bias``: positives (b, k, b, k); hard negatives (b, k, b, j != k); easy
    negatives (b, k, c != b, k). The loss is the sum of the mean binary cross-entropy of the
    three groups, so each group weighs the same whatever B and K. InfoNCE only ranks the
    candidates of each anchor; this term also puts aligned and misaligned pairs of different
    clips on either side of one threshold, which is what a binary alignment probe reads.
    """
    a, v = l2_normalize(audio), l2_normalize(video)
    b, k = a.shape[:2]
    hard = jnp.einsum("bkd,bjd->bkj", a, v) / tau + bias
    easy = jnp.einsum("bkd,ckd->bkc", a, v) / tau + bias
    not_k = jnp.broadcast_to(~jnp.eye(k, dtype=bool), hard.shape)
    not_b = jnp.broadcast_to(~jnp.eye(b, dtype=bool)[:, None, :], easy.shape)
    pos = jnp.diagonal(hard, axis1=1, axis2=2)
    loss = (jnp.mean(jax.nn.softplus(-pos)) + _weighted_mean(jax.nn.softplus(hard), not_k)
            + _weighted_mean(jax.nn.softplus(easy), not_b))
    acc = 0.5 * (jnp.mean(pos > 0) + _weighted_mean((hard < 0).astype(jnp.float32), not_k))
    return loss, {"pair_loss": loss, "pair_acc_hard": acc}


def avsa_object_loss(audio, video, valid, tau: float = 0.07):
    """AVSA over detected objects: beams ``audio [B, M, D]`` vs crops ``video [B, M, D]``.

    ``valid [B, M]`` marks real objects (the rest is padding). For a valid object the
    positive is its own crop (or beam); the negatives are all other valid objects of the same
    clip and of every other clip. Padded slots are neither anchors nor candidates; a batch
    with no valid object gives loss 0 and zero gradients.
    Metrics: ``acc`` = the positive beats all candidates; ``acc_hard`` = it beats the other
    objects of its own clip, over anchors whose clip has at least two valid objects;
    ``valid_frac`` = fraction of valid slots.
    """
    b, m = valid.shape
    valid = jnp.asarray(valid, bool).reshape(-1)
    logits, _ = _nce_logits(audio.reshape(b * m, -1), video.reshape(b * m, -1), tau, valid)
    w = valid.astype(jnp.float32)
    loss = 0.5 * (_weighted_mean(_row_losses(logits), w) + _weighted_mean(_row_losses(logits.T), w))
    clip = jnp.repeat(jnp.arange(b), m)
    same = clip[:, None] == clip[None, :]
    in_clip = jnp.where(same, logits, NEG)
    w_hard = w * (jnp.sum(same & valid[None, :], axis=-1) > 1)
    acc = 0.5 * sum(_weighted_mean(_row_hits(x), w) for x in (logits, logits.T))
    acc_hard = 0.5 * sum(_weighted_mean(_row_hits(x), w_hard) for x in (in_clip, in_clip.T))
    return loss, {"loss": loss, "acc": acc, "acc_hard": acc_hard, "valid_frac": jnp.mean(w)}


def curriculum(step, avc_steps: int, ramp_steps: int = 0):
    """Loss weights ``(w_avc, w_avsa)`` for the AVC -> AVSA curriculum.

    Pure AVC for the first ``avc_steps`` steps, then the weight moves linearly to pure AVSA
    over ``ramp_steps`` steps (0: a hard switch at ``avc_steps``). The weights sum to 1.
    ``step`` may be traced; the step counts are static.
    """
    step = jnp.asarray(step, jnp.float32)
    if ramp_steps > 0:
        r = jnp.clip((step - avc_steps) / ramp_steps, 0.0, 1.0)
    else:
        r = (step >= avc_steps).astype(jnp.float32)
    return 1.0 - r, r
