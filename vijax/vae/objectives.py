"""Objectives of the VAE (``docs/MODEL.md`` sections 2 and 3), per image, all constants kept.

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || N(0, I))
    KL      = -1/2 sum_d (1 + log sigma_d^2 - mu_d^2 - sigma_d^2)
    IWAE_k  = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)   (Burda et al. 2016)

Estimators of the ELBO (one reparameterised sample ``z = mu + sigma * eps``):

- ``"analytic"`` (the course's): ``log p(x|z) - KL`` with the closed-form KL;
- ``"mc"``: ``log p(x|z) + log p(z) - log q(z|x)`` (Monte-Carlo KL);
- ``"stl"``, sticking the landing (Roeder, Wu, Duvenaud 2017): as ``"mc"`` but ``log q`` is
  evaluated with ``stop_gradient`` on the encoder's mean and log-variance (never on ``z``),
  which drops the zero-mean score term from the gradient; same value as ``"mc"``.

``log p(x|z)`` comes from the decoder's logits ``l``: ``sum_i x_i l_i - softplus(l_i)``, which
equals ``sum_i x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i)`` and never takes the log
of a rounded probability.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from vijax._checks import check_int, check_shape

__all__ = ["ESTIMATORS", "bernoulli_log_likelihood", "gaussian_kl", "gaussian_log_density",
           "standard_normal_log_density", "elbo", "negative_elbo", "iwae_bound", "log_weights"]

#: Accepted values of ``estimator``.
ESTIMATORS = ("analytic", "mc", "stl")

_LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
    """``log p(x|z) = sum_i x_i l_i - softplus(l_i)`` over the last axis.

    Args:
        logits: ``(..., P)`` decoder logits ``l``.
        x: ``(..., P)`` pixels in ``[0, 1]`` (broadcast against ``logits``).

    Returns:
        ``(...)`` log-likelihoods.
    """
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """``KL(N(mean, diag exp(log_var)) || N(0, I)) = 1/2 sum_d (sigma^2 + mu^2 - 1 - log sigma^2)``.

    Args:
        mean, log_var: ``(..., D)``.

    Returns:
        ``(...)`` KL divergences (nats).
    """
    return 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var, axis=-1)


def gaussian_log_density(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """``log N(z; mean, diag exp(log_var))``, summed over the last axis."""
    return -0.5 * jnp.sum(_LOG_2PI + log_var + jnp.square(z - mean) * jnp.exp(-log_var), axis=-1)


def standard_normal_log_density(z: jax.Array) -> jax.Array:
    return -0.5 * jnp.sum(_LOG_2PI + jnp.square(z), axis=-1)


def check_batch(x: jax.Array, model: nn.Module) -> None:
    """``x`` is a floating ``(B, input_dim)`` batch (shape and dtype only: works under ``jit``)."""
    check_shape("x", x, (None, model.config.input_dim))
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must hold floating-point pixels in [0, 1]; got dtype {x.dtype}")


def elbo(key: jax.Array, model: nn.Module, params: dict, x: jax.Array,
         estimator: str = "analytic") -> jax.Array:
    """One-sample ELBO per image.

    Args:
        key: PRNG key for ``eps ~ N(0, I)``.
        model: a :class:`vijax.vae.models.VAE`.
        params: its parameters.
        x: ``(B, P)`` pixels in ``[0, 1]``.
        estimator: ``"analytic"``, ``"mc"`` or ``"stl"`` (see the module docstring).

    Returns:
        ``(B,)`` ELBO estimates (nats; the negative is the loss).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}; got {estimator!r}")
    check_batch(x, model)
    variables = {"params": params}
    mean, log_var = model.apply(variables, x, method="encode")
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    z = mean + jnp.exp(0.5 * log_var) * eps
    log_lik = bernoulli_log_likelihood(model.apply(variables, z, method="decode"), x)
    if estimator == "analytic":
        return log_lik - gaussian_kl(mean, log_var)
    if estimator == "stl":
        mean, log_var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(log_var)
    return log_lik + standard_normal_log_density(z) - gaussian_log_density(z, mean, log_var)


def negative_elbo(key: jax.Array, model: nn.Module, params: dict, x: jax.Array,
                  estimator: str = "analytic") -> jax.Array:
    """The training loss: the mean over the batch of ``-ELBO(x)`` (a scalar, nats per image)."""
    return -jnp.mean(elbo(key, model, params, x, estimator))


def log_weights(key: jax.Array, model: nn.Module, params: dict, x: jax.Array,
                mean: jax.Array, log_var: jax.Array, num_samples: int) -> jax.Array:
    """``log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x)`` for ``num_samples`` draws.

    Args:
        key: PRNG key.
        model, params: the VAE.
        x: ``(B, P)`` pixels; ``mean``, ``log_var``: ``(B, D)``, the encoder's output for ``x``.
        num_samples: ``S``, draws per image.

    Returns:
        ``(S, B)`` log importance weights.
    """
    eps = jax.random.normal(key, (num_samples, *mean.shape), mean.dtype)
    z = mean + jnp.exp(0.5 * log_var) * eps
    logits = model.apply({"params": params}, z, method="decode")
    return (bernoulli_log_likelihood(logits, x) + standard_normal_log_density(z)
            + 0.5 * jnp.sum(_LOG_2PI + log_var + jnp.square(eps), axis=-1))


def iwae_bound(key: jax.Array, model: nn.Module, params: dict, x: jax.Array,
               num_samples: int, chunk_size: int | None = None) -> jax.Array:
    """Importance-weighted bound ``log (1/k) sum_i w_i`` per image, ``k = num_samples``.

    The ``k`` samples are drawn ``chunk_size`` at a time inside a ``lax.scan`` that keeps a
    running log-sum-exp ``(m, s)`` with ``sum_i w_i = exp(m) s``, so memory is
    ``O(chunk_size * B * P)`` whatever ``k``. A last partial chunk is masked out. At
    ``k = 1`` its expectation is the ELBO; it increases with ``k`` towards ``log p(x)``.

    Args:
        key: PRNG key.
        model, params: the VAE.
        x: ``(B, P)`` pixels in ``[0, 1]``.
        num_samples: ``k >= 1`` (static).
        chunk_size: draws per chunk (static); default ``min(k, 100)``.

    Returns:
        ``(B,)`` bounds (nats; ``-bound`` estimates the negative log-likelihood).
    """
    k = check_int("num_samples", num_samples, 1)
    c = min(k, 100) if chunk_size is None else check_int("chunk_size", chunk_size, 1)
    c = min(c, k)
    check_batch(x, model)
    n_chunks = -(-k // c)
    mean, log_var = model.apply({"params": params}, x, method="encode")
    batch = x.shape[0]

    def body(carry, inputs):
        m, s = carry
        chunk_key, start = inputs
        lw = log_weights(chunk_key, model, params, x, mean, log_var, c)
        valid = (start + jnp.arange(c))[:, None] < k
        lw = jnp.where(valid, lw, -jnp.inf)
        new_m = jnp.maximum(m, jnp.max(lw, axis=0))
        s = s * jnp.exp(m - new_m) + jnp.sum(jnp.exp(lw - new_m), axis=0)
        return (new_m, s), None

    dtype = jnp.result_type(mean.dtype, x.dtype)
    init = (jnp.full((batch,), -jnp.inf, dtype), jnp.zeros((batch,), dtype))
    keys = jax.random.split(key, n_chunks)
    starts = jnp.arange(n_chunks) * c
    (m, s), _ = jax.lax.scan(body, init, (keys, starts))
    return m + jnp.log(s) - math.log(k)
