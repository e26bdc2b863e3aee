"""One trainer for pretraining and downstream heads, extended by hooks.

The model is split once into a static graph and its parameters; the train step is a pure
function of (state, global batch), jitted once with explicit shardings and the state
donated. A task supplies only ``loss_fn(model, batch, rng, step) -> (loss, metrics)``;
evaluation, probes and anything else periodic are hooks. Randomness inside the step is
``fold_in(seed, step)``, so the state that is checkpointed (parameters, optimiser, step,
data-iterator position) is all there is, and a resumed run is bit-identical.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from spatialav.train import mesh as mesh_lib
from spatialav.train.checkpoint import Checkpointer
from spatialav.train.metrics_log import MetricsLogger, progress_bar
from spatialav.train.optim import OptimConfig, make_optimizer, schedule
from spatialav.train.preemption import StopOnSigterm

LossFn = Callable[[nnx.Module, Any, jax.Array, jax.Array], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32  # global, over all processes and devices
    seed: int = 0
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    progress: bool = True


class Hook(Protocol):
    """Runs every ``every`` steps (and after the last) on the current model; returns metrics."""

    every: int

    def __call__(self, model: nnx.Module, step: int) -> dict[str, float]: ...


class NonFiniteLossError(RuntimeError):
    pass


class _StopNow(Exception):  # noqa: N818 - a control-flow signal, not an error
    pass


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        optim: OptimConfig,
        model: nnx.Module,
        loss_fn: LossFn,
        data: Iterator,
        workdir: str,
        *,
        hooks: Sequence[Hook] = (),
        meta: dict | None = None,
        mesh=None,
    ):
        self.cfg, self.loss_fn, self.data, self.hooks = cfg, loss_fn, data, list(hooks)
        self.meta = meta or {}
        self.mesh = mesh if mesh is not None else mesh_lib.make_mesh()
        self.local_batch_size = mesh_lib.per_process_batch_size(cfg.batch_size, self.mesh)
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        self.tx = make_optimizer(optim, cfg.steps)
        self.lr = schedule(optim, cfg.steps)
        self.key = jax.random.key(cfg.seed)
        self.workdir = workdir
        self.ckpt = Checkpointer(
            f"{workdir}/checkpoints",
            keep=cfg.keep_checkpoints,
            every=cfg.checkpoint_every,
            async_save=cfg.async_checkpoints,
        )
        rep = mesh_lib.replicated(self.mesh)
        state = {"step": jnp.zeros((), jnp.int32), "params": params,
                 "opt_state": self.tx.init(params)}
        self.state_sharding = jax.tree.map(lambda _: rep, state)
        self.state = jax.device_put(state, self.state_sharding)
        self._step_fn = jax.jit(
            self._train_step,
            in_shardings=(self.state_sharding, mesh_lib.data_sharding(self.mesh)),
            out_shardings=(self.state_sharding, rep),
            donate_argnums=0,
        )

    # --- the pure step ------------------------------------------------------------------

    def _train_step(self, state, batch):
        step = state["step"]
        rng = jax.random.fold_in(self.key, step)

        def loss_of(params):
            return self.loss_fn(nnx.merge(self.graphdef, params, self.rest), batch, rng, step)

        (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state["params"])
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        new = {"step": step + 1, "params": optax.apply_updates(state["params"], updates),
               "opt_state": opt_state}
        # A non-finite step changes nothing, so the state stays the last good one.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        metrics = {**metrics, "loss": loss, "grad_norm": grad_norm, "lr": self.lr(step)}
        return new, metrics

    # --- host loop ----------------------------------------------------------------------

    @property
    def step(self) -> int:
        return int(jax.device_get(self.state["step"]))

    def model(self) -> nnx.Module:
        return nnx.merge(self.graphdef, self.state["params"], self.rest)

    def restore_latest(self) -> int | None:
        """Resume from the newest checkpoint in the workdir, if any; returns its step."""
        step = self.ckpt.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            self.state, self.state_sharding,
        )
        self.state = self.ckpt.restore(step, abstract, data_iter=self.data)
        return step

    def run(self) -> dict:
        """Train to ``cfg.steps``; returns a summary. Raises NonFiniteLossError on NaN/inf."""
        cfg = self.cfg
        start = self.step
        log = MetricsLogger(self.workdir)
        bar = progress_bar(cfg.steps, start, enabled=cfg.progress)
        stopper = StopOnSigterm(self.mesh).install()
        last, pending, evals = {}, None, {}
        t0, clips = time.perf_counter(), 0
        try:
            for step in range(start, cfg.steps):
                local = next(self.data)
                self.state, metrics = self._step_fn(
                    self.state, mesh_lib.global_batch(local, self.mesh)
                )
                clips += cfg.batch_size
                # Read the previous step's metrics now, so the host never stalls the device.
                if pending is not None:
                    last = self._check(*pending)
                pending = (step + 1, metrics)
                done = step + 1
                if done % cfg.log_every == 0 or done == cfg.steps:
                    last, pending = self._check(*pending), None
                    rate = clips / (time.perf_counter() - t0)
                    log.write(done, {**last, "clips_per_s": rate}, prefix="train")
                    bar.set_postfix(loss=f"{last['loss']:.4f}", clips_s=f"{rate:.1f}")
                if self.hooks and (done == cfg.steps or any(done % h.every == 0
                                                            for h in self.hooks)):
                    evals.update(self._run_hooks(done, log, final=done == cfg.steps))
                stop = stopper.poll()  # collective: the same answer on every process
                if self.ckpt.should_save(done) or done == cfg.steps or stop:
                    if pending is not None:
                        last, pending = self._check(*pending), None
                    self.ckpt.save(done, self.state, data_iter=self.data, meta=self.meta,
                                   force=True)
                bar.update(1)
                if stop:
                    raise _StopNow(done)
        except _StopNow as p:
            self.ckpt.wait()
            return self._summary(p.args[0], last, evals, log, preempted=True)
        finally:
            stopper.uninstall()
            bar.close()
            self.ckpt.wait()
            log.close()
        return self._summary(cfg.steps, last, evals, log)

    def _check(self, step: int, metrics) -> dict:
        host = {k: float(np.asarray(v)) for k, v in jax.device_get(metrics).items()}
        if not (np.isfinite(host["loss"]) and np.isfinite(host["grad_norm"])):
            self.ckpt.wait()
            good = self.ckpt.latest_step()
            where = (f"the last good checkpoint is step {good} in {self.ckpt.directory}"
                     if good is not None else "no checkpoint was saved yet")
            raise NonFiniteLossError(
                f"loss became non-finite at step {step} (loss={host['loss']}, "
                f"grad_norm={host['grad_norm']}); stopping. The parameters were not updated by "
                f"that step; {where}."
            )
        return host

    def _run_hooks(self, step: int, log: MetricsLogger, final: bool) -> dict:
        model, out = self.model(), {}
        for hook in self.hooks:
            if final or step % hook.every == 0:
                out.update(hook(model, step))
        if out:
            log.write(step, out, prefix="eval")
        return out

    def _summary(self, step, last, evals, log, preempted=False) -> dict:
        summary = {
            "step": step,
            "preempted": preempted,
            "final": last,
            "eval": evals,
            "checkpoints": self.ckpt.directory,
            "logs": log.directory,
        }
        if jax.process_index() == 0:
            with open(f"{self.workdir}/summary.json", "w") as f:
                json.dump(summary, f, indent=2)
        return summary
