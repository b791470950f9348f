"""Gradient diagnostics for any estimator and any training loop: per-sample gradients and
their moments, covariance and signal-to-noise ratio, per parameter group.

Per-sample gradients are ``vmap`` of a gradient function over split keys (in chunks through
``lax.map`` to bound memory), so a variance study is a reduction, not a loop (the shape of
Optax's old ``monte_carlo`` module). :func:`gradient_samples` takes any
``grad_fn(key, params) -> pytree``: an estimator's (``lambda k, p: fn.raw(k, p, state).grad``
with ``fn = vijax.estimators.gradient(...)``), a VAE's loss gradient, or your own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from vijax import random as _random
from vijax._checks import check_int, check_key

Array = jax.Array

__all__ = ["GradientMoments", "gradient_samples", "scores", "flatten_gradients", "gradient_moments",
           "gradient_covariance", "parameter_groups"]


class GradientMoments(NamedTuple):
    """Moments of per-sample gradients ``g_1..g_n`` (each flattened to ``P`` numbers).

    Attributes:
      mean: pytree, ``mean_s g_s``.
      standard_error: pytree, ``std_s(g_s) / sqrt(n)`` per coordinate (ddof = 1).
      variance_trace: scalar, ``trace Cov(g) = sum_p Var(g_p)`` (ddof = 1), the total variance
        of one sample's gradient.
      snr: pytree, per coordinate ``|mean| / std`` (``inf`` where the std is 0 and the mean
        is not, 0 where both are).
      mean_snr: scalar, the mean of ``snr`` over coordinates with a finite value.
      group_variance: ``{group: variance trace of that group's coordinates}``.
      group_snr: ``{group: mean finite SNR of that group}``.
      num_samples: ``n``.
    """

    mean: Any
    standard_error: Any
    variance_trace: Array
    snr: Any
    mean_snr: Array
    group_variance: dict
    group_snr: dict
    num_samples: int


def gradient_samples(key: Array, grad_fn: Callable[[Array, Any], Any], params: Any,
                     num_samples: int, *, chunk_size: int | None = None) -> Any:
    """``grad_fn(k_s, params)`` for ``num_samples`` split keys ``k_s``, by ``vmap``.

    Jitted with ``grad_fn`` as a static argument: calls with the same function object (and
    parameter shapes) reuse one executable; a new lambda or ``functools.partial`` per call
    compiles again, so in a loop build the function once.

    Args:
      key: one PRNG key, split into ``num_samples``.
      grad_fn: ``(key, params) -> gradient pytree`` (traceable).
      params: where to evaluate it.
      num_samples: replicates, ``>= 1``.
      chunk_size: replicates per vectorised chunk (``lax.map``); ``None``: all at once.

    Returns:
      the gradient pytree with a leading axis ``num_samples`` on every leaf.
    """
    check_key("key", key)
    if not callable(grad_fn):
        raise ValueError(f"grad_fn must be a callable (key, params) -> gradients; got "
                         f"{type(grad_fn).__name__}")
    n = check_int("num_samples", num_samples, minimum=1)
    c = None if chunk_size is None else check_int("chunk_size", chunk_size, minimum=1)
    return _samples(grad_fn, n, c, key, params)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _samples(grad_fn, n, chunk, key, params):
    keys = _random.split(key, n)  # jax.random.split's keys, the cipher fused
    one = functools.partial(_one, grad_fn, params)
    if chunk is None or chunk >= n:
        return jax.vmap(one)(keys)
    return jax.lax.map(one, keys, batch_size=chunk)


def _one(grad_fn, params, key):
    return grad_fn(key, params)


def scores(key: Array, params: Any, family: Any, num_samples: int) -> Any:
    """Per-sample scores ``grad_phi log q_phi(z_s)``, ``z_s ~ q_phi`` (draws not differentiated).

    Their expectation is zero (``E_q[grad log q] = grad int q = 0``): the term the total
    derivative carries and STL drops (MODEL.md §3).

    Returns:
      a pytree like ``params`` with a leading axis ``num_samples``.
    """
    check_key("key", key)
    n = check_int("num_samples", num_samples, minimum=1)
    params = family.check(params)
    return gradient_samples(key, _score_fn(family), params, n)


@functools.lru_cache(maxsize=64)
def _score_fn(family: Any) -> Callable:
    """``(key, params) -> grad log q(z)`` at a draw ``z`` held fixed; one object per family so
    that :func:`gradient_samples` compiles once."""

    def one(k, p):
        return family.log_prob(p, jax.lax.stop_gradient(family.sample(k, p)))

    return jax.grad(one, argnums=1)


def flatten_gradients(per_sample_grads: Any) -> Array:
    """Per-sample gradient pytree (leading axis ``n`` on each leaf) as an ``(n, P)`` matrix."""
    leaves = jax.tree.leaves(per_sample_grads)
    if not leaves:
        raise ValueError("per_sample_grads must hold at least one array")
    n = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
    if len(n) != 1 or None in n:
        raise ValueError("per_sample_grads must have the same leading (sample) axis on every "
                         f"leaf; got leading sizes {sorted(map(str, n))}")
    return jnp.concatenate([jnp.reshape(x, (jnp.shape(x)[0], -1)) for x in leaves], axis=1)


def parameter_groups(tree: Any, depth: int = 1) -> dict[str, Any]:
    """``{name: subtree}`` from the first ``depth`` levels of a pytree's key paths
    (``GaussianParams`` gives ``loc`` and ``log_scale``; a VAE ``encoder`` and ``decoder``)."""
    groups: dict[str, list] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(_key_name(k) for k in path[:depth]) or "params"
        groups.setdefault(name, []).append(leaf)
    return groups


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _finite_mean(x: Array) -> Array:
    ok = jnp.isfinite(x)
    return jnp.sum(jnp.where(ok, x, 0.0)) / jnp.maximum(jnp.sum(ok), 1)


def gradient_moments(per_sample_grads: Any, group_depth: int = 1) -> GradientMoments:
    """Mean, standard error, total variance, SNR, and per-group variance and SNR.

    Args:
      per_sample_grads: leaves of shape ``(n, *param_shape)`` with ``n >= 2`` (e.g. from
        :func:`gradient_samples`).
      group_depth: parameter groups are the first ``group_depth`` levels of the key paths.
    """
    flat = flatten_gradients(per_sample_grads)
    n = flat.shape[0]
    if n < 2:
        raise ValueError(f"per_sample_grads must hold at least 2 samples for a variance; got {n}")
    template = jax.tree.map(lambda x: x[0], per_sample_grads)
    _, unravel = ravel_pytree(template)
    mean = jnp.mean(flat, axis=0)
    var = jnp.var(flat, axis=0, ddof=1)
    std = jnp.sqrt(var)
    snr = jnp.where(std > 0, jnp.abs(mean) / jnp.where(std > 0, std, 1.0),
                    jnp.where(mean == 0, 0.0, jnp.inf))
    group_variance, group_snr = {}, {}
    var_tree, snr_tree = unravel(var), unravel(snr)
    for name, leaves in parameter_groups(var_tree, group_depth).items():
        group_variance[name] = sum(jnp.sum(v) for v in leaves)
    for name, leaves in parameter_groups(snr_tree, group_depth).items():
        group_snr[name] = _finite_mean(jnp.concatenate([jnp.ravel(v) for v in leaves]))
    return GradientMoments(mean=unravel(mean), standard_error=unravel(std / jnp.sqrt(n)),
                           variance_trace=jnp.sum(var), snr=snr_tree,
                           mean_snr=_finite_mean(snr), group_variance=group_variance,
                           group_snr=group_snr, num_samples=int(n))


def gradient_covariance(per_sample_grads: Any) -> Array:
    """The ``(P, P)`` sample covariance (ddof = 1) of the flattened per-sample gradients."""
    flat = flatten_gradients(per_sample_grads)
    if flat.shape[0] < 2:
        raise ValueError("per_sample_grads must hold at least 2 samples for a covariance; "
                         f"got {flat.shape[0]}")
    return jnp.atleast_2d(jnp.cov(flat, rowvar=False))
