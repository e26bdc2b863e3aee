"""Query-guided source separation head: mix-and-separate training and scoring.

Entry point for ``python -m spatialav.probe --head separate``::

    metrics = run(cfg, encoders, workdir, dataset_dir=...)

``cfg`` a ``downstream.config.SeparationConfig`` (the probe config's ``separation`` field;
presets ``SeparationConfig.tiny()`` for tests and ``SeparationConfig()`` for the CPU demo),
``encoders`` a ``downstream.encoders.Encoders`` (``load_encoders``: only its visual encoder is
used, for the visual queries), ``workdir`` where the trainer writes checkpoints, logs and
``separation_results.json``, ``dataset_dir`` a dataset with the ``sources`` group (the
synthetic set). Returns the flat metrics dict of ``evaluate``:
``{query}/{mixture}/{si_sdr, si_sdri, sdr}`` for query in visual / label / text and mixture
in different / same (same-class: two sources of one class, talkers when the split has them),
the unprocessed mixture's ``mixture/{mixture}/{si_sdr, sdr}`` and the oracle ideal
ratio mask's ``oracle_irm/{mixture}/si_sdr`` for scale.

Training (``spatialav.train.Trainer``, unchanged): the trainable model is the separator
(``models.separation.UNetSeparator``). With frozen encoders the visual query features are
computed once, on the host, by the frozen visual encoder (``mixtures.encode_queries``) and
travel in the batch, so no encoder weight is in the trainable ``nnx.Param`` set; with
``encoders.finetune`` the visual encoder becomes part of the trained model and the batch
carries the raw crops. Each training example draws its query kind from
``cfg.mix.query_kinds``, so one model answers all three kinds.

Loss: negative SI-SDR of the waveform estimate against the target's W signal. It is the
score we report, it is insensitive to the overall gain (the mixture's level says little about
the target's), and it judges the waveform after the iSTFT, so the phase that the complex mask
predicts is trained too (a magnitude L1 would ignore it). Mixtures are drawn so the target
is active in at least half of the crop, which keeps SI-SDR well defined.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spatialav import configs, features
from spatialav.data import storage
from spatialav.downstream import data as ddata
from spatialav.downstream import mixtures, text_query
from spatialav.downstream.config import SeparationConfig
from spatialav.metrics import separation as sep_metrics
from spatialav.models.separation import (
    QUERY_KINDS,
    SeparatorConfig,
    UNetSeparator,
    apply_mask,
    init_separator,
)
from spatialav.models.visual import VisualEncoder
from spatialav.train import Trainer
from spatialav.train import evaluate as evaluate_lib
from spatialav.train import mesh as mesh_lib
from spatialav.train.preemption import Preempted

__all__ = ["SeparationModel", "evaluate", "make_loss_fn", "run"]


class SeparationModel(nnx.Module):
    """The trained model: the separator, plus the visual encoder when it is fine-tuned."""

    def __init__(self, separator: UNetSeparator, fps: float,
                 video: VisualEncoder | None = None):
        self.separator, self.video, self.fps = separator, video, fps

    def __call__(self, batch):
        visual = batch["visual"]
        if self.video is not None:  # fine-tuning: crops in the batch, features computed here
            visual = self.video(visual)[1]
        return self.separator(batch["mixture"], batch["kind"], visual, batch["label"],
                              batch["text"], self.fps)


def make_loss_fn():
    """``loss_fn(model, batch, rng, step)``: negative SI-SDR (dB) of the W estimate."""

    def loss_fn(model, batch, rng, step):
        est = model(batch)
        score = sep_metrics.si_sdr(est, batch["target"])
        base = sep_metrics.si_sdr(batch["mixture"][..., 0], batch["target"])
        return -jnp.mean(score), {"si_sdr": jnp.mean(score), "si_sdri": jnp.mean(score - base)}

    return loss_fn


_MODEL_KEYS = ("mixture", "kind", "visual", "label", "text")


def _separate(model, batch):
    return model(batch)


def _estimates(model: nnx.Module, batches, mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimates, targets, mixtures' W) ``[N, T]`` of batches (``evaluate.bind``: compiled
    once per model structure and batch shape, reused by every evaluation)."""
    apply = evaluate_lib.bind(model, _separate, mesh)
    est = [np.asarray(apply({k: b[k] for k in _MODEL_KEYS})) for b in batches]
    return (np.concatenate(est), np.concatenate([b["target"] for b in batches]),
            np.concatenate([b["mixture"][..., 0] for b in batches]))


def oracle_irm(mixture_w: np.ndarray, target: np.ndarray, cfg: SeparatorConfig) -> np.ndarray:
    """The ideal ratio mask |S| / (|S| + |N|) through the separator's STFT -> mask -> iSTFT."""
    fcfg = cfg.feature_cfg
    s = features.stft(target, fcfg)
    n = features.stft(mixture_w - target, fcfg)
    mask = jnp.abs(s) / (jnp.abs(s) + jnp.abs(n) + 1e-9)
    return np.asarray(apply_mask(features.stft(mixture_w, fcfg), mask, target.shape[-1], fcfg))


def evaluate(model: nnx.Module, maker: mixtures.MixtureMaker, cfg: SeparationConfig, *,
             mixture_kinds: Sequence[str] = mixtures.MIXTURE_KINDS, num: int | None = None,
             with_sdr: bool = True, mesh=None) -> dict[str, float]:
    """Mean SI-SDR, SI-SDRi and BSS-Eval SDR of fixed mixtures, per query and mixture kind.

    The same ``num`` mixtures of each kind (seeded by ``cfg.seed``) are scored with every
    query kind of ``cfg.mix.query_kinds``. Same-class mixtures are skipped (and reported as
    ``same_class_pool: 0``) when no class of the split has two sources.
    """
    mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    num = cfg.eval_mixtures if num is None else num
    out: dict[str, float] = {"same_class_pool": float(len(maker.pool))}
    for mixture in mixture_kinds:
        if mixture == "same" and not len(maker.pool):
            continue
        for q, kind in enumerate(cfg.mix.query_kinds):
            ds = mixtures.eval_dataset(maker, mixture=mixture, kind=kind, num=num,
                                       batch_size=cfg.eval_batch_size, seed=cfg.seed + 1)
            batches = list(ds)
            est, tgt, mix = (a[:num] for a in _estimates(model, batches, mesh))
            score = sep_metrics.si_sdr(est, tgt)
            base = sep_metrics.si_sdr(mix, tgt)
            out[f"{kind}/{mixture}/si_sdr"] = float(np.mean(score))
            out[f"{kind}/{mixture}/si_sdri"] = float(np.mean(score - base))
            if with_sdr:
                out[f"{kind}/{mixture}/sdr"] = _mean_sdr(est, tgt, cfg.sdr_filter_length)
            if q == 0:  # query-independent references, once per mixture kind
                out[f"mixture/{mixture}/si_sdr"] = float(np.mean(base))
                if with_sdr:
                    out[f"mixture/{mixture}/sdr"] = _mean_sdr(mix, tgt, cfg.sdr_filter_length)
                irm = oracle_irm(mix, tgt, cfg.separator)
                out[f"oracle_irm/{mixture}/si_sdr"] = float(np.mean(sep_metrics.si_sdr(irm,
                                                                                         tgt)))
    return out


def _mean_sdr(est, ref, filter_length: int) -> float:
    values = sep_metrics.sdr(est, ref, filter_length=filter_length)
    return float(np.mean(np.clip(values, -100.0, 100.0)))


class SeparationHook:
    """Periodic validation during training: SI-SDRi on a few different-class mixtures."""

    def __init__(self, maker: mixtures.MixtureMaker, cfg: SeparationConfig, every: int, mesh):
        self.maker, self.every, self.mesh = maker, every, mesh
        self.cfg = dataclasses.replace(cfg, eval_mixtures=cfg.val_mixtures)

    def __call__(self, model, step: int) -> dict[str, float]:
        res = evaluate(model, self.maker, self.cfg, mixture_kinds=("different",),
                       with_sdr=False, mesh=self.mesh)
        return {f"val/{k}": v for k, v in res.items() if k.endswith("si_sdri")}


def _prepare(cfg: SeparationConfig, encoders, dataset_dir, split: str, class_names,
             text_table):
    source = storage.open_split(dataset_dir, split)
    table = mixtures.build_source_table(source, cfg.mix)
    if not encoders.finetune:
        table.queries = mixtures.encode_queries(table, encoders.video)
    return mixtures.MixtureMaker(source, table, cfg.mix, class_names, text_table,
                                 raw_crops=encoders.finetune)


def run(cfg: SeparationConfig, encoders, workdir: str | os.PathLike, *,
        dataset_dir: str | os.PathLike) -> dict[str, float]:
    """Train the separator on ``cfg.train_split`` mixtures, score it on ``cfg.eval_split``.

    ``encoders``: ``downstream.encoders.Encoders`` (frozen or fine-tuned). Writes the
    trainer's checkpoints and logs and ``separation_results.json`` (the metrics, the config
    and the encoders' description) to ``workdir``; a rerun resumes from the newest checkpoint.
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    ddata.require_groups(dataset_dir, ("sources",), "separation")
    class_names = ddata.class_names(dataset_dir)
    text_table = None
    if "text" in cfg.mix.query_kinds:  # needs the text extra unless the cache has them
        text_table, _ = text_query.class_text_table(class_names,
                                                    cache_dir=cfg.text_cache or workdir)
    sep_cfg = dataclasses.replace(
        cfg.separator, input_format=cfg.mix.input_format, visual_dim=encoders.config.embed_dim,
        num_classes=len(class_names),
        text_dim=text_table.shape[-1] if text_table is not None else 1,
        feature_cfg=dataclasses.replace(cfg.separator.feature_cfg,
                                        sample_rate=storage.read_spec(dataset_dir).sample_rate))
    cfg = dataclasses.replace(cfg, separator=sep_cfg)
    train_maker = _prepare(cfg, encoders, dataset_dir, cfg.train_split, class_names, text_table)
    eval_maker = (train_maker if cfg.eval_split == cfg.train_split else
                  _prepare(cfg, encoders, dataset_dir, cfg.eval_split, class_names, text_table))

    model = SeparationModel(init_separator(sep_cfg, cfg.seed),
                            train_maker.table.fps, encoders.video if encoders.finetune else None)
    mesh = mesh_lib.make_mesh()
    per_process = mesh_lib.per_process_batch_size(cfg.train.batch_size, mesh)
    shard = (jax.process_index(), jax.process_count())
    data = iter(mixtures.train_dataset(train_maker, batch_size=per_process, seed=cfg.seed,
                                       shard=shard).to_iter_dataset())
    hook = SeparationHook(eval_maker, cfg, cfg.train.eval_every, mesh)
    meta = {"head": "separate", "config": configs.json_safe(dataclasses.asdict(cfg)),
            "encoders": encoders.describe()}
    trainer = Trainer(cfg.train, cfg.optim, model, make_loss_fn(), data, workdir,
                      hooks=[hook], meta=meta, mesh=mesh)
    trainer.restore_latest()
    summary = trainer.run()
    if summary["preempted"]:
        raise Preempted(summary["step"], workdir)
    metrics = evaluate(trainer.model(), eval_maker, cfg, mesh=mesh)
    metrics["train_final_si_sdri"] = float(summary["final"].get("si_sdri", np.nan))
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "separation_results.json"), "w") as f:
            json.dump({"metrics": metrics, "meta": meta}, f, indent=2)
    return metrics


def format_table(metrics: dict[str, float], query_kinds: Sequence[str] = QUERY_KINDS) -> str:
    """A markdown table of ``evaluate``'s metrics: rows query kinds (and references),
    columns SI-SDR / SI-SDRi / SDR for different-class and same-class mixtures."""
    mixes = [m for m in mixtures.MIXTURE_KINDS if f"mixture/{m}/si_sdr" in metrics]
    head = "| query | " + " | ".join(f"{m}: SI-SDR | {m}: SI-SDRi | {m}: SDR" for m in mixes)
    lines = [head + " |", "|---" * (1 + 3 * len(mixes)) + "|"]

    def cell(key):
        return f"{metrics[key]:.2f}" if key in metrics else "-"

    for kind in [*query_kinds, "mixture", "oracle_irm"]:
        cells = [f"{cell(f'{kind}/{m}/si_sdr')} | {cell(f'{kind}/{m}/si_sdri')} | "
                 f"{cell(f'{kind}/{m}/sdr')}" for m in mixes]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
