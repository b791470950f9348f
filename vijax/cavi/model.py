"""The earthquake mixture model and its mean-field family: block updates and the exact ELBO.

Specification: ``docs/MODEL.md`` section 1. For events ``n = 1..N`` with 2-D location
``X_n`` and integer strength ``S_n``, and clusters ``k = 1..K``::

    mu_k ~ N(nu, rho^-1 I_2)    lam_k ~ Gamma(alpha, beta)    Z_n ~ Cat(pi)
    X_n | Z_n = k ~ N(mu_k, tau^-1 I_2)    S_n | Z_n = k ~ Poisson(lam_k)

with ``q(Z_n) = Cat(r_n)``, ``q(lam_k) = Gamma(a_k, b_k)``, ``q(mu_k) = N(m_k, s_k^-1 I_2)``.

Learned mixture weights (an extension of MODEL.md): give the prior a Dirichlet
``concentration`` ``c`` instead of fixed ``pi``; then ``pi ~ Dir(c)`` and
``q(pi) = Dir(g)``. Everything where ``log pi_k`` appeared takes
``E[log pi_k] = psi(g_k) - psi(sum_j g_j)``; the coordinate update, by the same argument as
for ``q(lam)`` (``log q*(pi) = sum_k (c_k + sum_n r_nk - 1) log pi_k + const``), is
``g_k = c_k + sum_n r_nk``; and the ELBO gains
``E[log p(pi)] = log Gamma(sum c) - sum log Gamma(c_k) + sum (c_k - 1) E[log pi_k]`` and the
entropy ``H[q(pi)] = -log Gamma(sum g) + sum log Gamma(g_k) - sum (g_k - 1) E[log pi_k]``.

Every function here is pure and traceable (``jit``, ``vmap``, ``grad``); argument checks live
at the public entry points in :mod:`vijax.cavi.fit`. Sums over events are weighted by
``Observations.weights`` (1 for an event, 0 for padding), so that the data axis can be
padded to a multiple of the device count and sharded without changing any sum.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

Array = jax.Array

LOG_2PI = 1.8378770664093453  # log(2 pi)


class Prior(NamedTuple):
    """Hyperparameters (MODEL.md section 1).

    Attributes:
        tau: location precision within a cluster, > 0.
        alpha, beta: Gamma(shape, rate) prior on the Poisson rates, > 0.
        nu: ``(2,)`` prior mean of the cluster centres.
        rho: prior precision of the cluster centres, > 0.
        pi: ``(K,)`` fixed mixture weights on the simplex; None means uniform ``1/K``.
        concentration: Dirichlet prior on learned mixture weights, a scalar or ``(K,)``,
            > 0. When given, the weights are learned (``q(pi)``) and ``pi`` must be None.
    """

    tau: Array | float = 1.0
    alpha: Array | float = 1.0
    beta: Array | float = 1.0
    nu: Array | tuple[float, float] = (0.0, 0.0)
    rho: Array | float = 1.0
    pi: Array | None = None
    concentration: Array | float | None = None


class Observations(NamedTuple):
    """Events: ``locations`` ``(N, 2)``, ``strengths`` ``(N,)`` counts, ``weights`` ``(N,)``.

    ``weights`` is 1 for a real event and 0 for padding; None means all ones.
    """

    locations: Array
    strengths: Array
    weights: Array | None = None


class Params(NamedTuple):
    """Variational parameters.

    Attributes:
        responsibilities: ``(N, K)`` rows of ``r_n`` on the simplex, ``q(Z_n) = Cat(r_n)``.
        gamma_shape, gamma_rate: ``(K,)`` ``a_k, b_k`` of ``q(lam_k) = Gamma(a_k, b_k)``
            (shape-rate), so ``E[lam_k] = gamma_shape / gamma_rate``.
        mean, precision: ``(K, 2)`` ``m_k`` and ``(K,)`` ``s_k`` of ``q(mu_k)``.
        concentration: ``(K,)`` ``g_k`` of ``q(pi) = Dir(g)``; None when ``pi`` is fixed.
    """

    responsibilities: Array
    gamma_shape: Array
    gamma_rate: Array
    mean: Array
    precision: Array
    concentration: Array | None = None


class Statistics(NamedTuple):
    """Sufficient statistics of the global updates, each a sum over events.

    ``counts`` ``sum_n r_nk``, ``strength_sums`` ``sum_n r_nk S_n``, ``location_sums``
    ``sum_n r_nk X_n`` (``(K, 2)``). With sharded events each is a partial sum plus an
    all-reduce.
    """

    counts: Array
    strength_sums: Array
    location_sums: Array


def event_weights(data: Observations) -> Array:
    """``(N,)`` the events' weights: ``data.weights``, or ones when it is None."""
    if data.weights is None:
        return jnp.ones(data.strengths.shape, data.locations.dtype)
    return data.weights


def expected_log_weights(prior: Prior, params: Params) -> Array:
    """``E[log pi_k]``: ``log pi_k`` when fixed, ``psi(g_k) - psi(sum g)`` when learned."""
    num_clusters = params.gamma_shape.shape[-1]
    if params.concentration is not None:
        g = params.concentration
        return digamma(g) - digamma(jnp.sum(g, axis=-1, keepdims=True))
    if prior.pi is None:
        return jnp.full((num_clusters,), -jnp.log(num_clusters), params.gamma_shape.dtype)
    return jnp.log(jnp.asarray(prior.pi, params.gamma_shape.dtype))


def event_terms(data: Observations, prior: Prior) -> Array:
    """``(N,)`` the parts of ``L_nk`` that do not depend on ``k``:
    ``log tau - log(2 pi) - log Gamma(S_n + 1)``. They cancel in ``q(Z)`` and are constant
    during a fit, so :func:`fit` sums them once rather than every sweep."""
    s = data.strengths.astype(data.locations.dtype)
    return jnp.log(jnp.asarray(prior.tau, s.dtype)) - LOG_2PI - gammaln(s + 1.0)


def assignment_logits(data: Observations, prior: Prior, params: Params,
                      include_event_terms: bool = True) -> Array:
    """``(N, K)`` log-joint expectations ``L_nk = E_q[log p(Z_n = k, X_n, S_n | mu, lam)]``.

    These are the unnormalised ``log r_nk`` of MODEL.md with every constant kept::

        L_nk = E[log pi_k] + log tau - log(2 pi) - tau/2 (||X_n - m_k||^2 + 2/s_k)
               + S_n (psi(a_k) - log b_k) - a_k/b_k - log Gamma(S_n + 1)

    so that ``r_n = softmax(L_n)`` and ``sum_n logsumexp_k L_nk`` is the data part of the
    ELBO at that ``r``. With ``include_event_terms=False`` the terms constant in ``k``
    (:func:`event_terms`) are left out. The distance is formed from differences, not
    expanded, so that locations far from the origin keep their precision.
    """
    x = data.locations
    s = data.strengths.astype(x.dtype)
    tau = jnp.asarray(prior.tau, x.dtype)
    # Two (N, K) planes rather than an (N, K, 2) block: the size-2 axis vectorises badly.
    dx = x[:, 0:1] - params.mean[None, :, 0]
    dy = x[:, 1:2] - params.mean[None, :, 1]
    sq_dist = dx * dx + dy * dy
    e_log_rate = digamma(params.gamma_shape) - jnp.log(params.gamma_rate)
    per_cluster = (expected_log_weights(prior, params) - tau / params.precision
                   - params.gamma_shape / params.gamma_rate)
    logits = per_cluster[None, :] - 0.5 * tau * sq_dist + s[:, None] * e_log_rate[None, :]
    if include_event_terms:
        logits = logits + event_terms(data, prior)[:, None]
    return logits


def responsibilities(data: Observations, prior: Prior, params: Params) -> Array:
    """``(N, K)`` ``q(Z_n)`` for the events in ``data`` under the global factors of ``params``.

    This is the ``q(Z)`` update; applied to new events it gives their cluster probabilities.
    """
    return jax.nn.softmax(assignment_logits(data, prior, params), axis=-1)


def update_assignments(data: Observations, prior: Prior, params: Params) -> Params:
    """The exact maximiser of the ELBO in ``q(Z)``: ``r_n = softmax_k(L_nk)``."""
    return params._replace(responsibilities=responsibilities(data, prior, params))


def statistics(data: Observations, responsibilities: Array) -> Statistics:
    """Weighted sufficient statistics of ``responsibilities`` ``(N, K)``."""
    x = data.locations
    w = event_weights(data)
    # One (4, N) @ (N, K) product with the rows [1, S_n, X_n1, X_n2]: a single pass over r,
    # faster on CPU than separate reductions.
    features = jnp.concatenate(
        [w[:, None], (w * data.strengths.astype(x.dtype))[:, None], w[:, None] * x], axis=1)
    # HIGHEST: on GPUs a float32 product otherwise defaults to TF32 (10-bit mantissa).
    sums = jnp.matmul(features.T, responsibilities, precision=jax.lax.Precision.HIGHEST)
    return Statistics(counts=sums[0], strength_sums=sums[1], location_sums=sums[2:].T)


def rates_from_statistics(prior: Prior, stats: Statistics) -> tuple[Array, Array]:
    """``a_k = alpha + sum_n r_nk S_n``, ``b_k = beta + sum_n r_nk``."""
    return prior.alpha + stats.strength_sums, prior.beta + stats.counts


def locations_from_statistics(prior: Prior, stats: Statistics) -> tuple[Array, Array]:
    """``s_k = rho + tau sum_n r_nk``, ``m_k = (rho nu + tau sum_n r_nk X_n) / s_k``."""
    dtype = stats.location_sums.dtype
    nu = jnp.asarray(prior.nu, dtype)
    precision = prior.rho + prior.tau * stats.counts
    mean = (prior.rho * nu[None, :] + prior.tau * stats.location_sums) / precision[:, None]
    return mean, precision


def weights_from_statistics(prior: Prior, stats: Statistics) -> Array:
    """``g_k = c_k + sum_n r_nk`` (learned weights only)."""
    return prior.concentration + stats.counts


def update_rates(data: Observations, prior: Prior, params: Params) -> Params:
    """The exact maximiser of the ELBO in ``q(lam)``."""
    shape, rate = rates_from_statistics(prior, statistics(data, params.responsibilities))
    return params._replace(gamma_shape=shape, gamma_rate=rate)


def update_locations(data: Observations, prior: Prior, params: Params) -> Params:
    """The exact maximiser of the ELBO in ``q(mu)``."""
    mean, precision = locations_from_statistics(prior, statistics(data, params.responsibilities))
    return params._replace(mean=mean, precision=precision)


def update_weights(data: Observations, prior: Prior, params: Params) -> Params:
    """The exact maximiser of the ELBO in ``q(pi)``; the identity when ``pi`` is fixed."""
    if params.concentration is None:
        return params
    g = weights_from_statistics(prior, statistics(data, params.responsibilities))
    return params._replace(concentration=g)


def update_globals(data: Observations, prior: Prior, params: Params) -> Params:
    """``q(lam)``, ``q(mu)`` and ``q(pi)`` updated together from one pass of statistics.

    They depend on the data only through ``r``, not on each other, so the order is free.
    """
    stats = statistics(data, params.responsibilities)
    shape, rate = rates_from_statistics(prior, stats)
    mean, precision = locations_from_statistics(prior, stats)
    g = None if params.concentration is None else weights_from_statistics(prior, stats)
    return params._replace(gamma_shape=shape, gamma_rate=rate, mean=mean, precision=precision,
                           concentration=g)


def global_terms(prior: Prior, params: Params) -> Array:
    """The ELBO's terms that involve no event: priors and entropies of the global factors.

    ``sum_k E[log p(mu_k)] + E[log p(lam_k)] + H[q(mu_k)] + H[q(lam_k)]``, plus
    ``E[log p(pi)] + H[q(pi)]`` when the weights are learned.
    """
    dtype = params.gamma_shape.dtype
    a, b, m, s = params.gamma_shape, params.gamma_rate, params.mean, params.precision
    nu = jnp.asarray(prior.nu, dtype)
    rho, alpha, beta = prior.rho, prior.alpha, prior.beta
    e_log_rate = digamma(a) - jnp.log(b)
    log_p_mu = (jnp.log(rho) - LOG_2PI
                - 0.5 * rho * (jnp.sum((m - nu) ** 2, axis=-1) + 2.0 / s))
    log_p_lam = (alpha * jnp.log(beta) - gammaln(alpha) + (alpha - 1.0) * e_log_rate
                 - beta * a / b)
    entropy_mu = 1.0 + LOG_2PI - jnp.log(s)
    entropy_lam = a - jnp.log(b) + gammaln(a) + (1.0 - a) * digamma(a)
    total = jnp.sum(log_p_mu + log_p_lam + entropy_mu + entropy_lam)
    if params.concentration is not None:
        g = params.concentration
        c = jnp.broadcast_to(jnp.asarray(prior.concentration, dtype), g.shape)
        e_log_pi = expected_log_weights(prior, params)
        log_p_pi = gammaln(jnp.sum(c)) - jnp.sum(gammaln(c)) + jnp.sum((c - 1.0) * e_log_pi)
        entropy_pi = -gammaln(jnp.sum(g)) + jnp.sum(gammaln(g)) - jnp.sum((g - 1.0) * e_log_pi)
        total = total + log_p_pi + entropy_pi
    return total


def elbo(data: Observations, prior: Prior, params: Params) -> Array:
    """The exact ELBO of MODEL.md section 1 at any ``params`` (``r`` need not be optimal).

    ``sum_nk r_nk (L_nk - log r_nk)`` (with ``0 log 0 = 0``) plus :func:`global_terms`.
    """
    logits = assignment_logits(data, prior, params)
    r = params.responsibilities
    safe_r = jnp.where(r > 0, r, 1.0)
    per_entry = jnp.where(r > 0, r * (logits - jnp.log(safe_r)), 0.0)
    data_terms = jnp.sum(per_entry, axis=-1) @ event_weights(data)
    return data_terms + global_terms(prior, params)


def assign_with_elbo(data: Observations, prior: Prior, params: Params,
                     event_sum: Array | None = None) -> tuple[Params, Array]:
    """The ``q(Z)`` update and the exact ELBO at the result, from one pass over the events.

    At ``r_n = softmax(L_n)``, ``sum_k r_nk (L_nk - log r_nk) = logsumexp_k L_nk``, so the
    ELBO needs no second pass: ``sum_n logsumexp_k L_nk`` plus :func:`global_terms`.
    ``event_sum``, the weighted sum of :func:`event_terms`, may be passed in when known.
    """
    w = event_weights(data)
    if event_sum is None:
        event_sum = event_terms(data, prior) @ w
    logits = assignment_logits(data, prior, params, include_event_terms=False)
    peak = jnp.max(logits, axis=-1, keepdims=True)
    unnormalised = jnp.exp(logits - peak)
    total = jnp.sum(unnormalised, axis=-1, keepdims=True)
    log_norm = (peak + jnp.log(total))[:, 0]
    value = log_norm @ w + event_sum + global_terms(prior, params)
    return params._replace(responsibilities=unnormalised / total), value


def sweep(data: Observations, prior: Prior, params: Params,
          event_sum: Array | None = None) -> tuple[Params, Array]:
    """One CAVI sweep: the global factors from ``r``, then ``q(Z)``; returns the new ELBO.

    Each block update is an exact coordinate maximiser, so the ELBO never decreases.
    """
    return assign_with_elbo(data, prior, update_globals(data, prior, params), event_sum)
