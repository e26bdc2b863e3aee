"""The one way to run a model for evaluation: ``fn(module, *batch)`` jitted once on the
module's split state, fed global batches, read back as numpy.

Every evaluator (pretraining validation, the probe heads, localisation maps, the separation
scores, the frozen visual queries) goes through ``jit_apply`` / ``bind``, so they share one
compilation rule (the state is an argument, so new parameters never recompile; the function
is cached per graph and mesh, so a hook evaluating every N steps compiles once) and one data
rule (with a mesh, each process passes its share and the arrays are assembled into global
batches, ``mesh.global_batch``; the outputs come back replicated, whole on every process).
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from spatialav.train import mesh as mesh_lib


@functools.lru_cache(maxsize=32)
def jit_apply(fn, graphdef, mesh=None):
    """``apply(state, *args)``: ``fn(nnx.merge(graphdef, state), *args)`` compiled, its
    outputs as numpy. ``fn`` should be a module-level function for the cache to hit."""
    out_shardings = None if mesh is None else mesh_lib.replicated(mesh)
    jitted = jax.jit(lambda state, *args: fn(nnx.merge(graphdef, state), *args),
                     out_shardings=out_shardings)

    def apply(state, *args):
        if mesh is not None:
            args = mesh_lib.global_batch(args, mesh)
        return jax.device_get(jitted(state, *args))

    return apply


def bind(module: nnx.Module, fn, mesh=None):
    """``apply(*args)``: ``jit_apply`` on ``module``'s current state."""
    graphdef, state = nnx.split(module)
    return functools.partial(jit_apply(fn, graphdef, mesh), state)


def batched(apply, x: np.ndarray, batch_size: int):
    """``apply`` over ``x`` in fixed-size batches (the last zero-padded: one compiled shape);
    the outputs (an array, or a tuple of arrays / None) concatenated."""
    outs = []
    for i in range(0, len(x), batch_size):
        k = len(x[i: i + batch_size])
        chunk = np.zeros((batch_size, *x.shape[1:]), x.dtype)
        chunk[:k] = x[i: i + batch_size]
        y = apply(chunk)
        outs.append(tuple(None if v is None else np.asarray(v)[:k] for v in y)
                    if isinstance(y, tuple) else np.asarray(y)[:k])
    if isinstance(outs[0], tuple):
        return tuple(None if outs[0][j] is None else np.concatenate([o[j] for o in outs])
                     for j in range(len(outs[0])))
    return np.concatenate(outs)
