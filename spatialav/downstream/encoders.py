"""Encoders for downstream heads: from a pretraining run, or randomly initialised.

``load_encoders(init, ...)`` is the one entry point every head uses (classification, SELD,
localisation, separation)::

    enc = load_encoders("runs/avsa-foa-default")            # frozen, from a pretraining workdir
    enc = load_encoders("random", model_config=ModelConfig.tiny(), fmt="stereo")
    pooled, seq = enc.audio(feats)                            # AudioEncoder
    pooled, per_frame = enc.video(frames)                     # VisualEncoder

``init`` is ``"random"`` or a ``python -m spatialav.pretrain`` work directory (or its
``checkpoints/`` folder). A checkpoint carries its own model config (the trainer saves the
run's config in the checkpoint's ``meta``), so the model is rebuilt from it, its parameter
shapes are checked against what was saved, and the saved values are loaded.

Frozen encoders (the default) have every ``nnx.Param`` turned into a ``Frozen`` variable.
The shared trainer optimises exactly the ``nnx.Param`` leaves of the model it is given
(``nnx.split(model, nnx.Param, ...)``), so frozen weights land in its static rest: they get
no gradient, no optimiser state, no weight decay, and are not written to the head's
checkpoints. That is why freezing is a variable type and not ``stop_gradient``: with
``stop_gradient`` AdamW's weight decay would still shrink the "frozen" weights.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spatialav import features
from spatialav.configs.overrides import from_dict
from spatialav.models import AudioEncoder, AVModel, ModelConfig, init_model
from spatialav.models.heads import ProjectionHead
from spatialav.models.visual import VisualEncoder

__all__ = ["Encoders", "Frozen", "freeze", "load_encoders", "model_config_from_dict",
           "config_differences", "read_checkpoint"]


class Frozen(nnx.Variable):
    """A pretrained weight that downstream training must leave alone (not an ``nnx.Param``)."""


def freeze(module: nnx.Module) -> nnx.Module:
    """Turn every ``nnx.Param`` of ``module`` into a ``Frozen`` variable, in place."""
    for path, node in list(nnx.iter_graph(module)):
        if not isinstance(node, nnx.Param):
            continue
        parent = module
        for key in path[:-1]:
            parent = parent[key] if isinstance(parent, nnx.List | list) else getattr(parent, key)
        new = Frozen(node[...])
        if isinstance(parent, nnx.List | list):
            parent[path[-1]] = new
        else:
            setattr(parent, path[-1], new)
    return module


@dataclasses.dataclass
class Encoders:
    """The pretrained (or random) encoders and projection heads of one ``AVModel``.

    ``audio``: ``[B, frames, mels, C]`` features -> (pooled ``[B, D]``, sequence ``[B, T', D]``);
    ``video``: ``[B, n, h, w, 3]`` frames -> (pooled ``[B, D]``, per-frame ``[B, n, D]``);
    ``audio_proj`` / ``video_proj``: the contrastive projection heads (``D -> proj_dim``), where
    audio and video embeddings are comparable (localisation maps use them). ``config`` is the
    model config (input format ``config.audio_fmt``, features ``config.feature_cfg``).
    ``init`` is ``'random'`` or the checkpoint directory; ``step`` / ``task`` describe the
    checkpoint (None for random). ``finetune`` False means the weights are ``Frozen``.
    ``pretrain_config`` is the checkpoint's full config (e.g. its crop size and field of view,
    which the localisation maps reuse); None for random.
    """

    audio: AudioEncoder
    video: VisualEncoder
    audio_proj: ProjectionHead
    video_proj: ProjectionHead
    config: ModelConfig
    init: str
    step: int | None
    task: str | None
    finetune: bool
    pretrain_config: dict | None = None  # the pretraining run's whole config (JSON form)

    @property
    def fmt(self) -> str:
        return self.config.audio_fmt

    @property
    def feature_cfg(self) -> features.FeatureConfig:
        return self.config.feature_cfg

    def describe(self) -> dict:
        """JSON-able summary for a probe's results."""
        return {"init": self.init, "step": self.step, "task": self.task, "format": self.fmt,
                "finetune": self.finetune}


def load_encoders(
    init: str = "random",
    *,
    model_config: ModelConfig | None = None,
    fmt: str | None = None,
    finetune: bool = False,
    seed: int = 0,
    step: int | None = None,
) -> Encoders:
    """Encoders from ``init``: ``'random'`` or a pretraining work directory.

    ``model_config``: required for ``'random'``; with a checkpoint it is optional and, when
    given, must equal the checkpoint's (a ValueError names the fields that differ).
    ``fmt``: the audio input format (foa | stereo | mono); for ``'random'`` it overrides
    ``model_config.audio_fmt``, for a checkpoint it must match the format it was trained on.
    ``finetune``: keep the weights trainable (``nnx.Param``); default frozen (``Frozen``).
    ``seed``: initialisation seed for ``'random'``. ``step``: checkpoint step (default newest).

    Raises FileNotFoundError for a missing directory or one without checkpoints, ValueError
    for a checkpoint of another model (config or parameter shapes; the message says what
    differs).
    """
    if init == "random":
        if model_config is None:
            raise ValueError("load_encoders('random') needs a model_config (e.g. a preset's)")
        cfg = model_config if fmt is None else dataclasses.replace(model_config, audio_fmt=fmt)
        model, ckpt_step, meta = init_model(cfg, seed=seed), None, {}
    else:
        cfg, params, ckpt_step, meta = read_checkpoint(init, step)
        if model_config is not None:
            diff = config_differences(model_config, cfg)
            if diff:
                raise ValueError(f"checkpoint {init} holds another model than the one asked for: "
                                 + "; ".join(diff))
        if fmt is not None and fmt != cfg.audio_fmt:
            raise ValueError(f"checkpoint {init} was pretrained on {cfg.audio_fmt!r} audio, but "
                             f"format {fmt!r} was asked for: pretrain with --format {fmt}, or "
                             f"probe with --format {cfg.audio_fmt}")
        model = nnx.eval_shape(lambda: AVModel(cfg, rngs=nnx.Rngs(0)))
        load_params(model, params, source=str(init))
        init = os.path.abspath(init)
    if not finetune:
        freeze(model)
    return Encoders(model.audio, model.video, model.audio_proj, model.video_proj, cfg,
                    init=str(init), step=ckpt_step, task=meta.get("task"), finetune=finetune,
                    pretrain_config=meta.get("config"))


# --- checkpoints ------------------------------------------------------------------------------


def checkpoint_dir(path: str | os.PathLike) -> Path:
    """The orbax directory of a pretraining workdir (``<workdir>/checkpoints``) or ``path``
    itself if it already is one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist (expected a "
                                "`python -m spatialav.pretrain` --workdir, or 'random')")
    sub = path / "checkpoints"
    return sub if sub.is_dir() else path


def read_checkpoint(path: str | os.PathLike, step: int | None = None):
    """(ModelConfig, params as nested dicts, step, meta) of a pretraining checkpoint; ``meta``
    is what the pretraining CLI saved: ``{'task': ..., 'config': {...}}``."""
    from spatialav.train import Checkpointer

    directory = checkpoint_dir(path)
    ckpt = Checkpointer(str(directory), async_save=False)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"no checkpoint in {directory} (expected numbered step folders written by "
                "`python -m spatialav.pretrain`; did the run save any?)")
        if step not in ckpt.manager.all_steps():
            raise FileNotFoundError(f"{directory} has no checkpoint of step {step}; it has "
                                    f"{sorted(ckpt.manager.all_steps())}")
        meta = ckpt.restore_meta(step)
        if "config" not in meta or "model" not in meta["config"]:
            raise ValueError(f"checkpoint {directory}/{step} has no model config in its meta "
                             f"(found keys {sorted(meta)}); was it written by spatialav.pretrain?")
        cfg = model_config_from_dict(meta["config"]["model"], source=f"{directory}/{step}")
        state = ckpt.read_state(step)
    finally:
        ckpt.close()
    return cfg, state["params"], step, meta


def _flat(tree) -> dict[str, object]:
    """``{'audio/stages/0/conv/kernel': leaf}`` of a restored params tree (the trailing
    ``value`` key of each saved variable dropped)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        if keys and keys[-1] == "value":
            keys = keys[:-1]
        out["/".join(keys)] = leaf
    return out


def _model_params(model: nnx.Module) -> dict[str, nnx.Variable]:
    return {"/".join(str(k) for k in path): node for path, node in nnx.iter_graph(model)
            if isinstance(node, nnx.Param)}


def load_params(model: nnx.Module, params, *, source: str) -> None:
    """Copy saved ``params`` into ``model``'s ``nnx.Param`` variables, in place, after checking
    that both hold the same names and shapes (a ValueError lists the differences)."""
    saved, mine = _flat(params), _model_params(model)
    problems = []
    missing, extra = sorted(mine.keys() - saved.keys()), sorted(saved.keys() - mine.keys())
    if missing:
        problems.append(f"missing from the checkpoint: {', '.join(missing[:8])}"
                        + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""))
    if extra:
        problems.append(f"not in the model: {', '.join(extra[:8])}"
                        + (f" (+{len(extra) - 8} more)" if len(extra) > 8 else ""))
    for name in sorted(mine.keys() & saved.keys()):
        want, got = tuple(mine[name].shape), tuple(np.shape(saved[name]))
        if want != got:
            problems.append(f"{name}: model {want}, checkpoint {got}")
    if problems:
        raise ValueError(f"checkpoint {source} does not fit its model config: "
                         + "; ".join(problems[:12]))
    for name, var in mine.items():
        var.set_value(jnp.asarray(saved[name], dtype=var.dtype))


# --- configs ----------------------------------------------------------------------------------


def model_config_from_dict(d: dict, source: str = "<dict>") -> ModelConfig:
    """A ``ModelConfig`` from its ``dataclasses.asdict`` / JSON form (as saved in a checkpoint)."""
    return from_dict(ModelConfig, d, source)


def config_differences(want: ModelConfig, got: ModelConfig, prefix: str = "model") -> list[str]:
    """``['model.audio_width: 32 (asked) vs 128 (checkpoint)', ...]``; empty when equal."""
    out = []
    for f in dataclasses.fields(want):
        a, b = getattr(want, f.name), getattr(got, f.name)
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            out += config_differences(a, b, f"{prefix}.{f.name}")
        elif a != b:
            out.append(f"{prefix}.{f.name}: {a!r} (asked) vs {b!r} (checkpoint)")
    return out
