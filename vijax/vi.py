"""Stochastic-gradient variational inference for any model, estimator and Optax optimizer.

In the style of Blackjax and NumPyro's ``SVI``: pure ``init`` and ``step(key, state)`` on a
``NamedTuple`` state, and :func:`fit`, a ``lax.scan`` over steps in jitted chunks with a
progress bar between chunks. The optimizer is passed in; the key comes first and is split
inside ``fit``, one key per step.

Gradient diagnostics along the run come from the same step function: with
``diagnostics_every=n``, after every ``n`` steps :func:`fit` draws ``num_replicates``
gradient estimates at the current parameters (``vmap`` over keys,
:func:`vijax.diagnostics.gradient_samples`) and records their total variance, mean SNR and
per-group variance and SNR.

Example::

    family = MeanFieldGaussian()
    result = vi.fit(key, family.init(jnp.zeros(5)), model.log_joint, family,
                    optax.adam(1e-2), num_steps=2000, estimator=STL(),
                    diagnostics_every=100)
    result.state.params, result.values, result.diagnostics.variance_trace
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vijax._checks import check_int, check_key, check_optimizer
from vijax.diagnostics import gradient_moments, gradient_samples
from vijax.estimators import ELBO, Estimator, GradientFn, Reparam, gradient

__all__ = ["VIState", "StepInfo", "Diagnostics", "VIResult", "init", "step", "fit"]


class VIState(NamedTuple):
    """``params`` of the family, the optimizer's state, the estimator's state, steps done."""

    params: Any
    opt_state: Any
    estimator_state: Any
    step: jax.Array


class StepInfo(NamedTuple):
    """``value``: the objective's estimate at the step (summed over a batched family)."""

    value: jax.Array


class Diagnostics(NamedTuple):
    """Gradient diagnostics along a run, one entry per record (numpy arrays).

    Attributes:
      step: steps done when recorded.
      variance_trace: total variance of one gradient estimate.
      mean_snr: mean per-coordinate ``|mean| / std``.
      group_variance, group_snr: ``{group: array}`` (groups as in
        :func:`vijax.diagnostics.gradient_moments`).
    """

    step: np.ndarray
    variance_trace: np.ndarray
    mean_snr: np.ndarray
    group_variance: dict
    group_snr: dict


class VIResult(NamedTuple):
    """Output of :func:`fit`: final state, per-step objective values, diagnostics (or None)."""

    state: VIState
    values: np.ndarray
    diagnostics: Diagnostics | None


def init(params: Any, family: Any, optimizer: optax.GradientTransformation,
         estimator: Estimator) -> VIState:
    """The state at step 0: the family's checked ``params`` (tuples and lists made its
    parameter type), ``optimizer.init(params)``, the estimator's state."""
    check_optimizer("optimizer", optimizer)
    if not isinstance(estimator, Estimator):
        raise ValueError(f"estimator must be an estimator object (Reparam(), STL(), ...); got "
                         f"{estimator!r}")
    if not callable(getattr(family, "check", None)) or isinstance(family, type):
        raise ValueError(f"family must be a vijax family object; got {family!r}")
    params = family.check(params)
    return VIState(params, optimizer.init(params), estimator.init_state(),
                   jnp.zeros((), jnp.int32))


def _step(grad_fn: Callable, optimizer, key, state: VIState) -> tuple[VIState, StepInfo]:
    est = grad_fn(key, state.params, state.estimator_state)
    ascent = jax.tree.map(jnp.negative, est.grad)  # optax minimises: the loss is -objective
    updates, opt_state = optimizer.update(ascent, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return (VIState(params, opt_state, est.state, state.step + 1),
            StepInfo(jnp.sum(est.value)))


def step(key: jax.Array, state: VIState, log_joint: Callable, family: Any,
         optimizer: optax.GradientTransformation, *, objective: Any = ELBO(),
         estimator: Estimator | None = None) -> tuple[VIState, StepInfo]:
    """One optimizer step along the estimator's gradient of the objective (ascent).

    Structure, shapes and dtypes are checked (not the values: no copy to the host), then a
    jitted step runs, compiled once per (``log_joint``, family, optimizer, objective,
    estimator): pass the same function objects in a loop, not a new lambda each step.
    """
    check_key("key", key)
    check_optimizer("optimizer", optimizer)
    grad_fn = gradient(log_joint, family, objective=objective, estimator=estimator)
    params, estimator_state = grad_fn.check(key, state.params, state.estimator_state)
    state = state._replace(params=params, estimator_state=estimator_state)
    return _jit_step(grad_fn.raw, optimizer)(key, state)


@functools.lru_cache(maxsize=64)
def _jit_step(raw: Callable, optimizer) -> Callable:
    return jax.jit(functools.partial(_step, raw, optimizer))


@functools.lru_cache(maxsize=64)
def _jit_chunk(raw: Callable, optimizer, length: int) -> Callable:
    def chunk(keys, state):
        return jax.lax.scan(lambda s, k: _step(raw, optimizer, k, s), state, keys)

    del length  # part of the cache key: one executable per chunk length
    return jax.jit(chunk, donate_argnums=1)


@functools.lru_cache(maxsize=64)
def _gradient_of(raw: Callable) -> Callable:
    """``(key, (params, estimator_state)) -> grad``: one object per estimator, so that
    :func:`~vijax.diagnostics.gradient_samples` compiles once for the whole run."""

    def grad(key, params_and_state):
        params, estimator_state = params_and_state
        return raw(key, params, estimator_state).grad

    return grad


def _diagnose(grad_fn: GradientFn, key, state: VIState, num_replicates: int,
              group_depth: int) -> Any:
    samples = gradient_samples(key, _gradient_of(grad_fn.raw),
                               (state.params, state.estimator_state), num_replicates)
    return gradient_moments(samples, group_depth)


def fit(key: jax.Array, params: Any, log_joint: Callable, family: Any,
        optimizer: optax.GradientTransformation, *, num_steps: int,
        objective: Any = ELBO(), estimator: Estimator | None = None,
        progress: bool = True, diagnostics_every: int | None = None,
        num_replicates: int = 100, group_depth: int = 1) -> VIResult:
    """Fit ``q = family(params)`` to ``log_joint`` by ``num_steps`` optimizer steps.

    Args:
      key: one PRNG key (split into one key per step, and one per diagnostic record).
      params: initial parameters of the family (e.g. ``MeanFieldGaussian.init(loc)``).
      log_joint: ``z -> log p(x, z)`` (``batch_shape`` values for a batched family).
      family: the variational family.
      optimizer: an Optax optimizer (minimises ``-objective``).
      num_steps: optimizer steps, ``>= 1``.
      objective: ``ELBO(...)`` or ``IWAE(...)``.
      estimator: default ``Reparam()``.
      progress: show a tqdm bar with the objective.
      diagnostics_every: record gradient diagnostics every this many steps (and at the
        start); ``None``: none.
      num_replicates: gradient estimates per record, ``>= 2``.
      group_depth: parameter groups for the per-group records.

    Returns:
      :class:`VIResult` ``(state, values (num_steps,), diagnostics)``.
    """
    check_key("key", key)
    check_optimizer("optimizer", optimizer)
    n = check_int("num_steps", num_steps, minimum=1)
    every = None if diagnostics_every is None else check_int("diagnostics_every",
                                                             diagnostics_every, minimum=1)
    r = check_int("num_replicates", num_replicates, minimum=2)
    check_int("group_depth", group_depth, minimum=1)
    estimator = Reparam() if estimator is None else estimator
    grad_fn = gradient(log_joint, family, objective=objective, estimator=estimator)
    params, _ = grad_fn.check(key, params, estimator.init_state(), values=True)
    # the chunks donate the state's buffers: never the caller's arrays
    state = init(jax.tree.map(jnp.array, params), family, optimizer, estimator)

    # one scan without a progress bar; about 100 updates of the bar with one
    chunk = every or (max(1, math.ceil(n / 100)) if progress else n)
    step_key, diag_key = jax.random.split(key)
    keys = jax.random.split(step_key, n)
    values, records = [], []
    if every is not None:
        records.append((0, _diagnose(grad_fn, jax.random.fold_in(diag_key, 0), state, r,
                                     group_depth)))

    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc="VI", unit="step", disable=not progress)
    done = 0
    while done < n:
        length = min(chunk, n - done)
        state, info = _jit_chunk(grad_fn.raw, optimizer, length)(keys[done:done + length], state)
        chunk_values = np.asarray(info.value)
        values.append(chunk_values)
        done += length
        if not np.all(np.isfinite(chunk_values)):
            bad = done - length + int(np.flatnonzero(~np.isfinite(chunk_values))[0])
            bar.close()
            raise FloatingPointError(f"non-finite objective at step {bad + 1}: lower the "
                                     "optimizer's learning rate or check log_joint")
        bar.update(length)
        bar.set_postfix(objective=f"{float(chunk_values[-1]):.4g}")
        if every is not None:
            records.append((done, _diagnose(grad_fn, jax.random.fold_in(diag_key, done), state,
                                            r, group_depth)))
    bar.close()
    return VIResult(state, np.concatenate(values), _stack(records) if records else None)


def _stack(records: list) -> Diagnostics:
    steps = np.array([s for s, _ in records])
    moments = [m for _, m in records]
    groups = moments[0].group_variance.keys()
    return Diagnostics(
        step=steps,
        variance_trace=np.array([float(m.variance_trace) for m in moments]),
        mean_snr=np.array([float(m.mean_snr) for m in moments]),
        group_variance={g: np.array([float(m.group_variance[g]) for m in moments])
                        for g in groups},
        group_snr={g: np.array([float(m.group_snr[g]) for m in moments]) for g in groups})
