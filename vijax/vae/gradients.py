"""Gradient estimators of the VAE's bounds: total derivative, sticking the landing, DReG.

Specification: ``docs/MODEL.md`` sections 2 and 3. For an image ``x``, an encoder (parameters
``phi``) giving ``q_phi(z|x) = N(mu(x), diag sigma^2(x))`` and a decoder (parameters ``theta``)
giving ``p_theta(x|z)``, draw ``z_i = mu + sigma * eps_i``, ``eps_i ~ N(0, I)``, ``i = 1..k``, and

    log w_i = log p_theta(x|z_i) + log p(z_i) - log q_phi(z_i|x),    p(z) = N(0, I)
    IWAE_k  = log (1/k) sum_i w_i        (k = 1: the ELBO with a Monte-Carlo KL)
    w~_i    = w_i / sum_j w_j            (normalised importance weights)

Every estimator here is the gradient of a *surrogate* whose value is ``IWAE_k`` for the same
draws and whose gradient is the estimator's sample (:func:`surrogate_bound`):

- ``"total"``: reparameterisation, the total derivative ``grad [log (1/k) sum_i w_i]``, i.e.
  ``sum_i w~_i grad log w_i`` with ``log q`` differentiated in ``phi`` both through ``z_i`` and
  through its parameters ``(mu, sigma)``. Unbiased for ``grad IWAE_k``.
- ``"stl"``: sticking the landing (Roeder, Wu, Duvenaud 2017): as ``"total"`` but ``log q`` is
  evaluated with ``stop_gradient`` on the encoder's mean and log-variance (never on ``z_i``),
  which drops the score term ``-sum_i w~_i grad_phi log q_phi(z_i)|_z``. At ``k = 1`` that term
  has mean zero and STL is unbiased for the ELBO's gradient; when ``q`` is the exact posterior,
  ``log w`` is constant in ``z`` and STL's encoder gradient is zero for every ``eps``. For
  ``k > 1`` the dropped term, weighted by ``w~_i``, no longer has mean zero: **STL is biased
  for the IWAE gradient** (Tucker et al. 2019, section 3).
- ``"dreg"``: doubly reparameterised (Tucker et al. 2019), unbiased for ``k >= 1``:

      encoder:  sum_i w~_i^2 (d log w_i / d z_i) (d z_i / d phi)   (log q's parameters stopped)
      decoder:  sum_i w~_i grad_theta log w_i                     (as the total derivative)

  It costs one decoder pass forward and backward, as the others: a ``custom_vjp`` around
  ``log w`` multiplies the cotangent flowing into each ``z_i`` by ``w~_i`` once more. At
  ``k = 1`` (``w~_1 = 1``) DReG is STL.

The decoder's gradient is the same for the three estimators (for the same draws).

A model is a :class:`LatentModel`: ``encode(phi, x) -> (mean, log_var)``,
``decode(theta, z) -> output`` and ``log_likelihood(output, x) -> log p(x|z)``, so any
Gaussian-encoder model works (the tests use a linear-Gaussian one whose posterior is exact);
a :class:`vijax.vae.models.VAE` is turned into one by :func:`as_latent_model` (Bernoulli pixels
from logits). Parameters are a mapping ``{"encoder": phi, "decoder": theta}``, as the VAE's.

Variance studies use :func:`encoder_gradient_samples`: replicate gradients of the encoder's
parameters on a fixed batch, one per key, by ``vmap`` (optionally in chunks through
``lax.map``), reduced by :func:`vijax.estimators.gradient_moments`
(:func:`encoder_gradient_moments`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vijax._checks import check_int, check_key, shape_of
from vijax.estimators import GradientMoments, gradient_moments
from vijax.vae import objectives
from vijax.vae.objectives import (
    bernoulli_log_likelihood,
    gaussian_log_density,
    standard_normal_log_density,
)

__all__ = ["ESTIMATORS", "LatentModel", "as_latent_model", "surrogate_bound", "surrogate_loss",
           "bound_gradient", "encoder_gradient_samples", "encoder_gradient_moments",
           "check_training_estimator", "training_loss"]

#: Estimator names accepted by ``estimator``.
ESTIMATORS = ("total", "stl", "dreg")



class LatentModel(NamedTuple):
    """A Gaussian-encoder latent-variable model, as three pure functions (hashable).

    Attributes:
      encode: ``(phi, x (B, P)) -> (mean (B, D), log_var (B, D))``: ``q(z|x)``.
      decode: ``(theta, z (k, B, D)) -> output`` (e.g. logits ``(k, B, P)``).
      log_likelihood: ``(output, x (B, P)) -> (k, B)``: ``log p(x|z)`` (broadcasting ``x``).
    """

    encode: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]
    decode: Callable[[Any, jax.Array], Any]
    log_likelihood: Callable[[Any, jax.Array], jax.Array]


@functools.lru_cache(maxsize=64)
def _vae_latent_model(model: Any) -> LatentModel:
    def encode(phi, x):
        return model.apply({"params": {"encoder": phi}}, x, method="encode")

    def decode(theta, z):
        return model.apply({"params": {"decoder": theta}}, z, method="decode")

    return LatentModel(encode, decode, bernoulli_log_likelihood)


def as_latent_model(model: Any) -> LatentModel:
    """``model`` as a :class:`LatentModel`: itself, or a Flax ``VAE`` with Bernoulli pixels.

    The same ``VAE`` always gives the same (cached) object, so jitted functions are shared.
    """
    if isinstance(model, LatentModel):
        return model
    if hasattr(model, "apply") and hasattr(model, "encode") and hasattr(model, "decode"):
        return _vae_latent_model(model)
    raise ValueError("model must be a vijax.vae.VAE or a LatentModel(encode, decode, "
                     f"log_likelihood); got {type(model).__name__}")


# --------------------------------------------------------------------------- the maths


def _log_weights(lm: LatentModel, theta, x, z, mean, log_var) -> jax.Array:
    """``log w = log p(x|z) + log p(z) - log q(z; mean, log_var)``, shape ``(k, B)``."""
    return (lm.log_likelihood(lm.decode(theta, z), x) + standard_normal_log_density(z)
            - gaussian_log_density(z, mean, log_var))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _dreg_log_weights(lm, theta, x, z, mean, log_var):
    """``log w`` whose backward pass multiplies the cotangent of ``z_i`` by ``w~_i`` again."""
    return _log_weights(lm, theta, x, z, mean, log_var)


def _dreg_fwd(lm, theta, x, z, mean, log_var):
    lw, pullback = jax.vjp(functools.partial(_log_weights, lm), theta, x, z, mean, log_var)
    return lw, (pullback, jax.nn.softmax(lw, axis=0))


def _dreg_bwd(lm, residuals, cotangent):
    pullback, w_norm = residuals
    d_theta, d_x, d_z, d_mean, d_log_var = pullback(cotangent)
    return d_theta, d_x, d_z * w_norm[..., None], d_mean, d_log_var


_dreg_log_weights.defvjp(_dreg_fwd, _dreg_bwd)


def _surrogate(lm: LatentModel, estimator: str, params: Mapping, x: jax.Array,
               eps: jax.Array) -> jax.Array:
    """Per-image surrogate ``(B,)`` for the draws ``eps`` ``(k, B, D)``."""
    phi, theta = params["encoder"], params["decoder"]
    mean, log_var = lm.encode(phi, x)
    z = mean + jnp.exp(0.5 * log_var) * eps
    if estimator == "total":
        lw = _log_weights(lm, theta, x, z, mean, log_var)
    else:
        q_mean, q_log_var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(log_var)
        if estimator == "stl":
            lw = _log_weights(lm, theta, x, z, q_mean, q_log_var)
        else:
            lw = _dreg_log_weights(lm, theta, x, z, q_mean, q_log_var)
    return jax.nn.logsumexp(lw, axis=0) - math.log(eps.shape[0])


def _draws(lm: LatentModel, key: jax.Array, params: Mapping, x: jax.Array,
           num_samples: int) -> jax.Array:
    mean_shape = jax.eval_shape(lm.encode, params["encoder"], x)[0]
    return jax.random.normal(key, (num_samples, *mean_shape.shape), mean_shape.dtype)


# --------------------------------------------------------------------------- checks


def _check(key: Any, model: Any, params: Any, x: Any, estimator: Any,
           num_samples: Any) -> tuple[LatentModel, int]:
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}; got {estimator!r}")
    k = check_int("num_samples", num_samples, minimum=1)
    check_key("key", key)
    lm = as_latent_model(model)
    if not (isinstance(params, Mapping) and "encoder" in params and "decoder" in params):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError("params must be a mapping with 'encoder' and 'decoder' entries; got "
                         f"{got}")
    shape = shape_of("x", x)
    if len(shape) != 2 or shape[0] < 1:
        raise ValueError(f"x must have shape (batch, features) with batch >= 1; got shape "
                         f"{shape}")
    return lm, k


# --------------------------------------------------------------------------- public API


def surrogate_bound(key: jax.Array, model: Any, params: Mapping, x: jax.Array, *,
                    estimator: str = "total", num_samples: int = 1) -> jax.Array:
    """Per-image surrogate: value ``IWAE_k(x)``, gradient the chosen estimator's.

    ``k = num_samples`` draws per image from one key (``eps`` of shape ``(k, B, D)``); at
    ``k = 1`` the value is the one-sample ELBO with a Monte-Carlo KL. The value does not depend
    on ``estimator``; the gradient with respect to ``params`` does (module docstring).

    Args:
      key: PRNG key for ``eps ~ N(0, I)``.
      model: a :class:`LatentModel` or a :class:`vijax.vae.models.VAE`.
      params: ``{"encoder": phi, "decoder": theta}``.
      x: ``(B, P)`` data.
      estimator: ``"total"``, ``"stl"`` or ``"dreg"``.
      num_samples: ``k >= 1`` importance samples per image.

    Returns:
      ``(B,)`` bound estimates (nats).
    """
    lm, k = _check(key, model, params, x, estimator, num_samples)
    return _surrogate(lm, estimator, params, x, _draws(lm, key, params, x, k))


def surrogate_loss(key: jax.Array, model: Any, params: Mapping, x: jax.Array,
                   estimator: str = "total", num_samples: int = 1) -> jax.Array:
    """Training loss ``-mean_b surrogate_bound(x_b)`` (a scalar; nats per image).

    Same positional arguments as ``objectives.negative_elbo``, so a training step can call
    either; ``jax.grad`` of it is minus the estimator's gradient of the batch-mean bound.
    """
    return -jnp.mean(surrogate_bound(key, model, params, x, estimator=estimator,
                                     num_samples=num_samples))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _bound_gradient(lm, estimator, k, key, params, x):
    eps = _draws(lm, key, params, x, k)
    return jax.value_and_grad(lambda p: jnp.mean(_surrogate(lm, estimator, p, x, eps)))(params)


def bound_gradient(key: jax.Array, model: Any, params: Mapping, x: jax.Array, *,
                   estimator: str = "total", num_samples: int = 1) -> tuple[jax.Array, Any]:
    """Batch-mean bound and the estimator's gradient of it (jitted).

    Returns:
      ``(value, grads)``: the scalar ``mean_b IWAE_k(x_b)`` estimate and a pytree like
      ``params`` (ascent direction: the gradient of the bound, not of the loss).
    """
    lm, k = _check(key, model, params, x, estimator, num_samples)
    return _bound_gradient(lm, estimator, k, key, params, x)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _encoder_gradient_samples(lm, estimator, k, num_replicates, chunk_size, key, params, x):
    theta = params["decoder"]

    def one(replicate_key):
        eps = _draws(lm, replicate_key, params, x, k)

        def objective(phi):
            return jnp.mean(_surrogate(lm, estimator, {"encoder": phi, "decoder": theta}, x,
                                       eps))

        return jax.grad(objective)(params["encoder"])

    keys = jax.random.split(key, num_replicates)
    if chunk_size is None or chunk_size >= num_replicates:
        return jax.vmap(one)(keys)
    return jax.lax.map(one, keys, batch_size=chunk_size)


def encoder_gradient_samples(key: jax.Array, model: Any, params: Mapping, x: jax.Array, *,
                             estimator: str = "total", num_samples: int = 1,
                             num_replicates: int = 100,
                             chunk_size: int | None = None) -> Any:
    """Replicate estimates of ``grad_phi mean_b IWAE_k(x_b)`` on a fixed batch, one per key.

    ``key`` is split into ``num_replicates`` keys; each gives fresh draws ``eps (k, B, D)``
    and one gradient of the batch-mean surrogate with respect to the encoder's parameters,
    computed by ``vmap`` over the keys (in chunks of ``chunk_size`` through ``lax.map`` when
    given, to bound memory), never by a Python loop.

    Args:
      key, model, params, x, estimator, num_samples: as in :func:`surrogate_bound`.
      num_replicates: ``R >= 2`` replicate gradients.
      chunk_size: replicates per vectorised chunk (``None``: all at once).

    Returns:
      a pytree like ``params["encoder"]`` with a leading axis ``R`` on every leaf.
    """
    lm, k = _check(key, model, params, x, estimator, num_samples)
    r = check_int("num_replicates", num_replicates, minimum=2)
    c = None if chunk_size is None else check_int("chunk_size", chunk_size, minimum=1)
    return _encoder_gradient_samples(lm, estimator, k, r, c, key, params, x)


def encoder_gradient_moments(key: jax.Array, model: Any, params: Mapping, x: jax.Array, *,
                             estimator: str = "total", num_samples: int = 1,
                             num_replicates: int = 100,
                             chunk_size: int | None = None) -> GradientMoments:
    """Mean, standard error, total variance (trace) and per-coordinate SNR of the encoder's
    gradient estimates (:func:`encoder_gradient_samples` reduced by
    :func:`vijax.estimators.gradient_moments`).

    ``variance_trace`` is ``sum_p Var(g_p)``, the total variance of one replicate (one batch
    gradient); ``snr`` is ``|mean_p| / std_p`` per parameter; a scalar summary is e.g. its mean.
    """
    grads = encoder_gradient_samples(key, model, params, x, estimator=estimator,
                                     num_samples=num_samples, num_replicates=num_replicates,
                                     chunk_size=chunk_size)
    return gradient_moments(grads)


# --------------------------------------------------------------------------- training


def check_training_estimator(estimator: Any) -> str | tuple[str, int]:
    """Validate the ``estimator`` argument of ``vijax.vae.train``; returns it normalised.

    Accepted: the one-sample ELBO estimators of ``objectives`` (``"analytic"``, ``"mc"``,
    ``"stl"``); ``"total"`` or ``"dreg"`` (one-sample ELBO here, ``k = 1``); or a pair
    ``(name, k)`` with ``name`` in :data:`ESTIMATORS` and ``k >= 1`` importance samples, e.g.
    ``("dreg", 50)`` (a list is turned into a tuple, so the result is hashable).
    """
    if isinstance(estimator, str):
        if estimator in objectives.ESTIMATORS or estimator in ESTIMATORS:
            return estimator
    elif isinstance(estimator, tuple | list) and len(estimator) == 2:
        name, k = estimator
        if not isinstance(name, str) or name not in ESTIMATORS:
            raise ValueError(f"estimator[0] must be one of {ESTIMATORS}; got {name!r}")
        return (name, check_int("estimator[1] (num_samples)", k, minimum=1))
    names = tuple(dict.fromkeys(objectives.ESTIMATORS + ESTIMATORS))
    raise ValueError(f"estimator must be one of {names} or a pair (name, num_samples) with "
                     f"name in {ESTIMATORS}; got {estimator!r}")


def training_loss(key: jax.Array, model: Any, params: Mapping, x: jax.Array,
                  estimator: str | tuple[str, int] = "analytic") -> jax.Array:
    """The loss a training step differentiates, for any :func:`check_training_estimator` value.

    ``objectives.negative_elbo`` for ``"analytic"``, ``"mc"``, ``"stl"``; otherwise
    :func:`surrogate_loss` (minus the batch-mean ``IWAE_k`` surrogate; ``k = 1`` for a name).
    """
    estimator = check_training_estimator(estimator)
    if isinstance(estimator, str):
        if estimator in objectives.ESTIMATORS:
            return objectives.negative_elbo(key, model, params, x, estimator)
        return surrogate_loss(key, model, params, x, estimator, 1)
    return surrogate_loss(key, model, params, x, *estimator)
