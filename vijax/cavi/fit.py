"""Fitting the earthquake mixture model by CAVI: ``init``, ``fit``, checks and sharding.

``fit`` runs every random restart inside one jit-compiled ``lax.while_loop`` (stopping at
``max_iter`` sweeps or when the relative ELBO change falls below ``tol``), vmaps the
restarts, and keeps the restart with the best final ELBO. The event axis is sharded over
all local devices: the global updates need only sums over events, which XLA turns into
partial sums and one all-reduce.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vijax import _checks
from vijax.cavi.model import (
    Observations,
    Params,
    Prior,
    assign_with_elbo,
    event_terms,
    event_weights,
    responsibilities,
    update_globals,
)

Array = jax.Array


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the best restart's variational parameters (``responsibilities`` ``(N, K)``).
        elbo: the best restart's final ELBO.
        restart_elbos: ``(R,)`` every restart's final ELBO.
        elbo_history: ``(R, max_iter + 1)``: entry ``t`` is the ELBO after ``t`` sweeps
            (entry 0 after initialisation); NaN after the restart stopped.
        num_iters: ``(R,)`` sweeps each restart ran.
        converged: ``(R,)`` whether the relative ELBO change fell below ``tol``.
        best_restart: index of the restart kept.
    """

    params: Params
    elbo: Array
    restart_elbos: Array
    elbo_history: Array
    num_iters: Array
    converged: Array
    best_restart: Array


def float_dtype() -> jnp.dtype:
    """float32 by default, float64 when ``jax_enable_x64`` is on."""
    return jnp.result_type(float)


# ----------------------------------------------------------------------------- checks


def as_observations(data: Any) -> Observations:
    """Accept :class:`Observations`, anything with ``locations`` and ``strengths``
    attributes (such as :func:`vijax.data.load_quakes`'s result), or a
    ``(locations, strengths)`` pair; check it; return float arrays of the default dtype."""
    if hasattr(data, "locations") and hasattr(data, "strengths"):
        locations, strengths = data.locations, data.strengths
        weights = getattr(data, "weights", None)
    elif isinstance(data, tuple | list) and len(data) == 2:
        (locations, strengths), weights = data, None
    else:
        raise ValueError("data must be Observations(locations, strengths) or a "
                         f"(locations, strengths) pair; got {type(data).__name__}")
    (n, _) = _checks.check_shape("locations", locations, (None, 2))
    _checks.check_finite("locations", locations)
    if n < 1:
        raise ValueError("locations must hold at least one event; got shape (0, 2)")
    _checks.check_shape("strengths", strengths, (n,))
    _checks.check_nonnegative_integers("strengths", strengths)
    dtype = float_dtype()
    if weights is not None:
        _checks.check_shape("weights", weights, (n,))
        _checks.check_finite("weights", weights)
        if _checks.is_concrete(weights):
            w = np.asarray(weights)
            if np.any(w < 0) or not np.any(w > 0):
                raise ValueError("weights must be >= 0 with at least one > 0 (1 for an event, "
                                 f"0 for padding); got {w[:6]}")
        weights = jnp.asarray(weights, dtype)
    return Observations(jnp.asarray(locations, dtype), jnp.asarray(strengths, dtype), weights)


def as_prior(prior: Prior, num_clusters: int) -> Prior:
    """Check the hyperparameters for ``num_clusters`` clusters; return them as arrays."""
    if not isinstance(prior, Prior):
        raise ValueError(f"prior must be a vijax.cavi.Prior; got {type(prior).__name__}")
    dtype = float_dtype()
    for name in ("tau", "alpha", "beta", "rho"):
        value = getattr(prior, name)
        _checks.check_shape(f"prior.{name}", value, ())
        _checks.check_positive(f"prior.{name}", value)
    _checks.check_shape("prior.nu", prior.nu, (2,))
    _checks.check_finite("prior.nu", prior.nu)
    pi = concentration = None
    if prior.concentration is not None:
        if prior.pi is not None:
            raise ValueError("prior: give pi (fixed mixture weights) or concentration "
                             "(learned weights with a Dirichlet prior), not both")
        c = np.asarray(prior.concentration, dtype)
        if c.shape not in ((), (num_clusters,)):
            raise ValueError(f"prior.concentration must be a scalar or have shape "
                             f"({num_clusters},); got shape {c.shape}")
        _checks.check_positive("prior.concentration", c)
        concentration = jnp.broadcast_to(jnp.asarray(c), (num_clusters,))
    elif prior.pi is not None:
        _checks.check_probabilities("prior.pi", prior.pi, length=num_clusters)
        _checks.check_shape("prior.pi", prior.pi, (num_clusters,))
        pi = jnp.asarray(prior.pi, dtype)
    scalars = {n: jnp.asarray(getattr(prior, n), dtype) for n in ("tau", "alpha", "beta", "rho")}
    return Prior(nu=jnp.asarray(prior.nu, dtype), pi=pi, concentration=concentration, **scalars)


def _check_clusters(num_clusters: Any, data: Observations) -> int:
    """``1 <= K <= N``, counting only events of positive weight."""
    n = data.strengths.shape[0]
    if data.weights is not None and _checks.is_concrete(data.weights):
        n = int(np.sum(np.asarray(data.weights) > 0))
    return _checks.check_int("num_clusters", num_clusters, 1, n)


# ------------------------------------------------------------------------------- init


def init(key: Array, data: Observations, prior: Prior, num_clusters: int,
         event_sum: Array | None = None) -> tuple[Params, Array]:
    """Initial variational parameters and their ELBO.

    The centres ``m_k`` are ``K`` distinct events drawn at random (zero-weight events
    excluded; the draw does not depend on padding at the end of the events); each
    cluster starts as if it held ``N/K`` events like its seed: ``s_k = rho + tau N/K``,
    ``a_k = alpha + (N/K) S_seed``, ``b_k = beta + N/K`` (and ``g_k = c_k + N/K``). Then
    ``q(Z)`` is updated, so the state is a proper point of the coordinate ascent.

    Args:
        key: PRNG key.
        data: :class:`Observations` as :func:`as_observations` returns them.
        prior: :class:`Prior` as :func:`as_prior` returns it (arrays; a ``(K,)``
            concentration when the weights are learned).
        num_clusters: ``K``, static.
        event_sum: optional, see :func:`vijax.cavi.model.assign_with_elbo`.

    Returns:
        ``(params, elbo)``.
    """
    return assign_with_elbo(data, prior, _initial_globals(key, data, prior, num_clusters),
                            event_sum)


def _initial_globals(key: Array, data: Observations, prior: Prior, num_clusters: int) -> Params:
    """The global factors of :func:`init` (``responsibilities`` left None)."""
    x, s = data.locations, data.strengths
    w = event_weights(data)
    seeds = jax.random.choice(key, s.shape[0], (num_clusters,), replace=False, p=w / w.sum())
    per_cluster = jnp.sum(w) / num_clusters
    ones = jnp.ones((num_clusters,), x.dtype)
    g = (None if prior.concentration is None
         else jnp.broadcast_to(prior.concentration + per_cluster, (num_clusters,)))
    return Params(
        responsibilities=None,
        gamma_shape=prior.alpha + per_cluster * s[seeds],
        gamma_rate=(prior.beta + per_cluster) * ones,
        mean=x[seeds],
        precision=(prior.rho + prior.tau * per_cluster) * ones,
        concentration=g,
    )


def _run(key: Array, data: Observations, prior: Prior, tol: Array, num_clusters: int,
         max_iter: int) -> tuple[Params, Array, Array, Array, Array]:
    """One restart: :func:`init`, then sweeps in a ``lax.while_loop``.

    The loop carries only the global factors (``K``-sized): each iteration assigns ``q(Z)``
    from them (with the ELBO of that state), then updates them from the new ``r``. The
    ``(N, K)`` responsibilities never cross the loop boundary, so vmapped restarts, whose
    loop selects every carried value per restart, pay no extra pass over them; the final
    ``r`` is assigned once more after the loop. The sequence of states is that of
    :func:`init` followed by :func:`vijax.cavi.model.sweep`.
    """
    event_sum = event_terms(data, prior) @ event_weights(data)
    globals0 = _initial_globals(key, data, prior, num_clusters)
    dtype = data.locations.dtype
    history = jnp.full((max_iter + 1,), jnp.nan, dtype)

    def cond(carry):
        _, _, _, change, t, _ = carry
        return (t <= max_iter) & (change >= tol)

    def body(carry):
        state, _, value, _, t, history = carry  # state: the globals of state t
        assigned, new_value = assign_with_elbo(data, prior, state, event_sum)
        change = jnp.where(t == 0, jnp.inf,
                           jnp.abs(new_value - value) / jnp.maximum(jnp.abs(new_value), 1e-30))
        following = update_globals(data, prior, assigned)._replace(responsibilities=None)
        return following, state, new_value, change, t + 1, history.at[t].set(new_value)

    carry = (globals0, globals0, jnp.asarray(jnp.nan, dtype), jnp.asarray(jnp.inf, dtype),
             jnp.asarray(0), history)
    _, last, value, change, t, history = jax.lax.while_loop(cond, body, carry)
    params, _ = assign_with_elbo(data, prior, last, event_sum)
    return params, value, history, t - 1, change < tol


@partial(jax.jit, static_argnames=("num_clusters", "num_restarts", "max_iter"))
def _fit(key: Array, data: Observations, prior: Prior, tol: Array, *, num_clusters: int,
         num_restarts: int, max_iter: int) -> FitResult:
    keys = jax.random.split(key, num_restarts) if num_restarts > 1 else key[None]
    run = partial(_run, data=data, prior=prior, tol=tol, num_clusters=num_clusters,
                  max_iter=max_iter)
    params, values, history, iters, converged = jax.vmap(lambda k: run(k))(keys)
    best = jnp.argmax(jnp.where(jnp.isnan(values), -jnp.inf, values))
    best_params = jax.tree.map(lambda leaf: leaf[best], params)
    return FitResult(best_params, values[best], values, history, iters, converged, best)


# --------------------------------------------------------------------------- sharding


def shard_events(data: Observations, devices: list | None = None) -> Observations:
    """Pad the events to a multiple of the device count (weight 0) and shard them.

    With one device, the data come back unpadded and unsharded.
    """
    devices = jax.local_devices() if devices is None else devices
    n = data.strengths.shape[0]
    weights = event_weights(data)
    if len(devices) == 1:
        return data._replace(weights=weights)
    pad = (-n) % len(devices)
    padded = Observations(
        jnp.pad(data.locations, ((0, pad), (0, 0))),
        jnp.pad(data.strengths, (0, pad)),
        jnp.pad(weights, (0, pad)),
    )
    mesh = Mesh(np.asarray(devices), ("events",))
    return jax.device_put(padded, NamedSharding(mesh, PartitionSpec("events")))


# -------------------------------------------------------------------------------- fit


def fit(key: Array, data: Any, prior: Prior, num_clusters: int, num_restarts: int = 1,
        max_iter: int = 200, tol: float = 1e-7) -> FitResult:
    """Fit the mixture by CAVI from ``num_restarts`` random initialisations; keep the best.

    Args:
        key: PRNG key (``jax.random.key(seed)``). Restart ``i`` starts from
            ``split(key, R)[i]``; a single restart uses ``key`` itself, so restart ``i`` of a
            run equals a one-restart fit with ``split(key, R)[i]``.
        data: :class:`Observations`, a ``(locations (N, 2), strengths (N,))`` pair, or
            anything with those two attributes (e.g. ``vijax.data.load_quakes()``).
        prior: :class:`Prior` hyperparameters; ``pi`` of length ``num_clusters`` if given.
        num_clusters: ``K``, ``1 <= K <= N``.
        num_restarts: ``R >= 1`` restarts, run in parallel (vmapped).
        max_iter: at most this many sweeps per restart, ``>= 1``.
        tol: stop a restart when ``|ELBO_t - ELBO_{t-1}| / |ELBO_t| < tol`` (``>= 0``);
            ``tol=0`` always runs ``max_iter`` sweeps (and reports ``converged=False``).

    Returns:
        :class:`FitResult`.

    Raises:
        ValueError: naming the argument, for bad input, before anything is compiled.
    """
    _checks.check_key("key", key)
    obs = as_observations(data)
    n = obs.strengths.shape[0]
    num_clusters = _check_clusters(num_clusters, obs)
    prior = as_prior(prior, num_clusters)
    num_restarts = _checks.check_int("num_restarts", num_restarts, 1)
    max_iter = _checks.check_int("max_iter", max_iter, 1)
    tol = _checks.check_scalar("tol", tol, minimum=0.0)
    result = _fit(key, shard_events(obs), prior, jnp.asarray(tol, obs.locations.dtype),
                  num_clusters=num_clusters, num_restarts=num_restarts, max_iter=max_iter)
    r = result.params.responsibilities[:n]
    return result._replace(params=result.params._replace(responsibilities=r))


@jax.jit
def _predict(data: Observations, prior: Prior, params: Params) -> Array:
    return responsibilities(data, prior, params)


def predict(data: Any, prior: Prior, params: Params) -> Array:
    """``(M, K)`` cluster probabilities ``q(Z)`` of new events under fitted ``params``.

    Args:
        data: new events, in any form :func:`fit` accepts.
        prior: the prior used to fit.
        params: fitted :class:`Params` (e.g. ``fit(...).params``).
    """
    obs = as_observations(data)
    num_clusters = int(np.shape(params.gamma_shape)[-1])
    prior = as_prior(prior, num_clusters)
    _checks.check_shape("params.mean", params.mean, (num_clusters, 2))
    if (prior.concentration is None) != (params.concentration is None):
        raise ValueError("prior and params disagree: params were fitted with "
                         + ("learned" if params.concentration is not None else "fixed")
                         + " mixture weights; pass the prior used to fit them")
    return _predict(obs._replace(weights=None), prior, params)
