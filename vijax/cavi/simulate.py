"""Sampling from the earthquake mixture model (MODEL.md section 1), with explicit keys."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vijax import _checks
from vijax.cavi._types import Observations, Prior
from vijax.cavi._validate import check_prior, to_prior, working_dtype

Array = jax.Array


class Truth(NamedTuple):
    """The latent values behind simulated events.

    Attributes:
        means: ``(K, 2)`` cluster centres ``mu_k``.
        rates: ``(K,)`` Poisson rates ``lam_k``.
        weights: ``(K,)`` mixture weights ``pi``.
        labels: ``(N,)`` cluster of each event ``Z_n``.
        precisions: ``(K,)`` location precisions ``tau_k`` when the prior learns them
            (``Prior.tau_shape``); None for a fixed ``tau``.
    """

    means: Array
    rates: Array
    weights: Array
    labels: Array
    precisions: Array | None = None


def sample_events(key: Array, means: Array, rates: Array, weights: Array, tau: float,
                  num_events: int) -> tuple[Observations, Array]:
    """Draw ``num_events`` events given the cluster parameters.

    ``Z_n ~ Cat(weights)``, ``X_n ~ N(means[Z_n], tau^-1 I_2)``, ``S_n ~ Poisson(rates[Z_n])``.

    Args:
        key: PRNG key.
        means: ``(K, 2)``; rates: ``(K,)`` > 0; weights: ``(K,)`` on the simplex.
        tau: location precision, > 0: a scalar, or ``(K,)`` one per cluster.
        num_events: ``N >= 1``.

    Returns:
        ``(Observations, labels)`` with ``labels`` ``(N,)`` ints.
    """
    _checks.check_key("key", key)
    (k, _) = _checks.check_shape("means", means, (None, 2))
    _checks.check_real("means", means)
    _checks.check_shape("rates", rates, (k,))
    _checks.check_real("rates", rates, positive=True)
    _checks.check_shape("weights", weights, (k,))
    _checks.check_probabilities("weights", weights, length=k)
    if _checks.shape_of("tau", tau) != (k,):
        _checks.check_shape("tau", tau, ())
    _checks.check_real("tau", tau, positive=True, divisor=True)
    num_events = _checks.check_int("num_events", num_events, 1)
    dtype = working_dtype()
    means, rates = jnp.asarray(means, dtype), jnp.asarray(rates, dtype)
    key_z, key_x, key_s = jax.random.split(key, 3)
    labels = jax.random.choice(key_z, k, (num_events,), p=jnp.asarray(weights, dtype))
    noise = jax.random.normal(key_x, (num_events, 2), dtype)
    scale = 1.0 / jnp.sqrt(jnp.asarray(tau, dtype))
    locations = means[labels] + noise * (scale if scale.ndim == 0 else scale[labels, None])
    strengths = jax.random.poisson(key_s, rates[labels]).astype(dtype)
    return Observations(locations, strengths), labels


def simulate(key: Array, prior: Prior, num_clusters: int,
             num_events: int) -> tuple[Observations, Truth]:
    """Draw cluster parameters from the prior, then events: the full generative model.

    ``mu_k ~ N(nu, rho^-1 I)``, ``lam_k ~ Gamma(alpha, beta)``, ``pi`` as given (uniform
    when None) or ``pi ~ Dir(concentration)``, ``tau_k ~ Gamma(tau_shape, tau_rate)`` when
    the prior learns the precisions (``tau`` otherwise); then :func:`sample_events`.

    Returns:
        ``(Observations, Truth)``.
    """
    _checks.check_key("key", key)
    num_clusters = _checks.check_int("num_clusters", num_clusters, 1)
    check_prior(prior, num_clusters)
    num_events = _checks.check_int("num_events", num_events, 1)

    prior = to_prior(prior, num_clusters)
    dtype = working_dtype()
    key_mu, key_lam, key_pi, key_events = jax.random.split(key, 4)
    means = prior.nu + jax.random.normal(key_mu, (num_clusters, 2), dtype) / jnp.sqrt(prior.rho)
    rates = jax.random.gamma(key_lam, prior.alpha, (num_clusters,), dtype) / prior.beta
    # A tiny shape alpha can underflow a draw to 0 in float32; keep the rate valid.
    rates = jnp.maximum(rates, jnp.finfo(dtype).tiny)
    if prior.concentration is not None:
        weights = jax.random.dirichlet(key_pi, prior.concentration, dtype=dtype)
    elif prior.pi is not None:
        weights = prior.pi
    else:
        weights = jnp.full((num_clusters,), 1.0 / num_clusters, dtype)
    precisions = None
    if prior.tau_shape is not None:  # fold_in(key, 4): a fifth child, the others unchanged
        precisions = jax.random.gamma(jax.random.fold_in(key, 4), prior.tau_shape,
                                      (num_clusters,), dtype) / prior.tau_rate
        precisions = jnp.maximum(precisions, jnp.finfo(dtype).tiny)
    tau = prior.tau if precisions is None else precisions
    data, labels = sample_events(key_events, means, rates, weights, tau, num_events)
    return data, Truth(means, rates, weights, labels, precisions)
