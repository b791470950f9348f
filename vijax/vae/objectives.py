"""The VAE as a client of :mod:`vijax.estimators` (``docs/MODEL.md`` sections 2 and 3).

The encoder gives an amortised mean-field Gaussian family, one ``q(z|x_b)`` per image: its
parameters are :class:`~vijax.families.GaussianParams` ``(mean, log_var / 2)``
(:func:`variational_params`). The decoder and the standard normal prior give the log joint
``log p(x_b | z) + log N(z; 0, I)`` (:func:`log_joint`, a
:class:`~vijax.estimators.StandardNormalPrior`), with

    log p(x|z) = sum_i x_i l_i - softplus(l_i)        (l: the decoder's logits)

which equals ``sum_i x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i)`` and never takes the
log of a rounded probability. Every objective (``ELBO(k, kl)``, ``IWAE(k)``) and estimator
(total derivative, STL, DReG, score function, control variate) of the estimator layer then
applies, through the one surrogate: :func:`loss` is minus its batch mean, differentiated
with respect to encoder and decoder at once. The course's objective is
``ELBO(kl="analytic")`` with the total derivative.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vijax._checks import check_int, check_key, check_pixels
from vijax.estimators import (
    ELBO,
    Estimator,
    Reparam,
    Score,
    StandardNormalPrior,
    UniformPrior,
    check_estimator,
    check_state,
    over_draws,
)
from vijax.estimators.objectives import KL_CHOICES
from vijax.families import (
    Bernoulli,
    Categorical,
    GaussianParams,
    MeanFieldGaussian,
    bernoulli_log_density,
)

__all__ = ["FAMILY", "family", "bernoulli_log_likelihood", "variational_params", "log_joint",
           "prior_params", "posterior_mean", "elbo", "loss", "bound_gradient", "check_training",
           "log_weights", "iwae_bound"]

#: The encoder's family: a mean-field Gaussian with one batch axis (one ``q`` per image).
FAMILY = MeanFieldGaussian()

_FAMILIES = {"gaussian": FAMILY, "bernoulli": Bernoulli(), "categorical": Categorical(2)}


def family(model: nn.Module) -> Any:
    """The amortised family of ``model``'s latents: ``MeanFieldGaussian()``, ``Bernoulli()`` or
    ``Categorical(event_ndim=2)`` (``D`` variables of ``K`` categories)."""
    return _FAMILIES[model.config.latent]


def bernoulli_log_likelihood(logits: jax.Array, x: jax.Array) -> jax.Array:
    """``log p(x|z) = sum_i x_i l_i - softplus(l_i)`` over the last axis: the decoder's
    log-likelihood, :func:`vijax.families.bernoulli_log_density` summed (its fast softplus and
    hand-written derivative are what make the IWAE evaluation fast).

    Args:
        logits: ``(..., P)`` decoder logits ``l``.
        x: ``(..., P)`` pixels in ``[0, 1]`` (broadcast against ``logits``).

    Returns:
        ``(...)`` log-likelihoods.
    """
    return jnp.sum(bernoulli_log_density(logits, x), axis=-1)


def check_model(model: Any) -> None:
    if not hasattr(getattr(model, "config", None), "input_dim") or not hasattr(model, "apply"):
        raise ValueError(f"model must be a vijax.vae.VAE (e.g. VAE(VAEConfig())); got "
                         f"{model!r}")


def check_batch(x: jax.Array, model: nn.Module) -> None:
    """``model`` is a VAE and ``x`` a batch of its pixels (values checked when concrete)."""
    check_model(model)
    check_pixels("x", x, model.config.input_dim)


def variational_params(model: nn.Module, params: dict, x: jax.Array) -> Any:
    """The encoder's ``q(z|x_b)``: ``GaussianParams(mean, log_var / 2)``, each ``(B, D)``, or
    the logits ``(B, D)`` / ``(B, D, K)`` of discrete latents."""
    out = model.apply({"params": params}, x, method="encode")
    if model.config.latent == "gaussian":
        mean, log_var = out
        return GaussianParams(mean, 0.5 * log_var)
    return out


def prior_params(model: nn.Module, batch: int) -> Any:
    """The prior as parameters of the model's family, for ``batch`` draws: ``N(0, I)``, or zero
    logits (uniform)."""
    zeros = jnp.zeros((batch, *model.config.latent_shape), jnp.float32)
    return GaussianParams(zeros, zeros) if model.config.latent == "gaussian" else zeros


def posterior_mean(model: nn.Module, params: dict, x: jax.Array) -> jax.Array:
    """``E_q[z|x]``: the Gaussian mean, or the probabilities of the discrete latents."""
    q = variational_params(model, params, x)
    if model.config.latent == "gaussian":
        return q.loc
    return jax.nn.sigmoid(q) if model.config.latent == "bernoulli" else jax.nn.softmax(q, -1)


def log_joint(model: nn.Module, params: dict, x: jax.Array) -> Any:
    """``z -> log p(x_b | z_b) + log p(z_b)`` per image ``(B,)``: a standard normal prior
    (:class:`StandardNormalPrior`) or a uniform one over the discrete values
    (:class:`UniformPrior`)."""

    def log_likelihood(z):
        return bernoulli_log_likelihood(model.apply({"params": params}, z, method="decode"), x)

    if model.config.latent == "gaussian":
        return StandardNormalPrior(log_likelihood)
    return UniformPrior(log_likelihood, family(model))


def check_training(objective: Any, estimator: Any, model: Any = None) -> None:
    """``objective`` and ``estimator`` are estimator-layer objects that apply to the VAE's
    family (the Gaussian one when ``model`` is not given)."""
    check_estimator(objective, estimator, FAMILY if model is None else family(model))


def loss(key: jax.Array, model: nn.Module, params: dict, x: jax.Array, *,
         objective: Any = ELBO(kl="analytic"), estimator: Estimator = Reparam(),
         state: Any = None) -> tuple[jax.Array, tuple[jax.Array, Any]]:
    """The training loss ``-mean_b surrogate_b`` and ``(mean_b objective_b, new state)``.

    ``jax.grad`` of it (``has_aux=True``) is minus the estimator's gradient of the batch-mean
    objective, with respect to encoder and decoder.
    """
    check_key("key", key)
    check_batch(x, model)
    check_training(objective, estimator, model)
    state = check_state(estimator, state)
    q = variational_params(model, params, x)
    out = estimator.surrogate(key, q, log_joint(model, params, x), family(model), objective,
                              state)
    return -jnp.mean(out.surrogate), (jnp.mean(out.value), out.state)


def bound_gradient(key: jax.Array, model: nn.Module, params: dict, x: jax.Array, *,
                   objective: Any = ELBO(kl="analytic"), estimator: Estimator = Reparam(),
                   state: Any = None) -> tuple[jax.Array, dict, Any]:
    """The batch-mean objective, the estimator's gradient of it (ascent direction; a pytree
    like ``params``: ``["encoder"]`` and ``["decoder"]``) and the estimator's new state.

    Traceable: ``vijax.diagnostics.gradient_samples(key, lambda k, p: bound_gradient(k, model,
    p, x, ...)[1]["encoder"], params, R)`` gives ``R`` replicate encoder gradients.
    """
    (_, (value, state)), grads = jax.value_and_grad(
        lambda p: loss(key, model, p, x, objective=objective, estimator=estimator,
                       state=state), has_aux=True)(params)
    return value, jax.tree.map(jnp.negative, grads), state


def elbo(key: jax.Array, model: nn.Module, params: dict, x: jax.Array,
         kl: str = "analytic") -> jax.Array:
    """One-sample ELBO per image ``(B,)`` (nats): ``kl`` in ``("analytic", "mc", "entropy")``.

    ``"analytic"`` (the course's): ``log p(x|z) - KL(q || N(0, I))``; ``"mc"``:
    ``log p(x|z) + log p(z) - log q(z|x)``; the same expectation.
    """
    check_key("key", key)
    check_batch(x, model)
    if kl not in KL_CHOICES:
        raise ValueError(f"kl must be one of {KL_CHOICES}; got {kl!r}")
    q = variational_params(model, params, x)
    fam = family(model)
    estimator = Reparam() if fam.reparameterized else Score()  # the same value
    return estimator.surrogate(key, q, log_joint(model, params, x), fam, ELBO(kl=kl), ()).value


def log_weights(key: jax.Array, model: nn.Module, params: dict, x: jax.Array,
                q: GaussianParams, num_samples: int) -> jax.Array:
    """``log w_i = log p(x, z_i) - log q(z_i|x)`` for ``num_samples`` draws, ``(S, B)``.

    ``q`` is :func:`variational_params` of ``x`` (computed once per batch by the caller).
    """
    z, log_q = family(model).sample_and_log_prob(key, q, num_samples)
    return over_draws(log_joint(model, params, x), z) - log_q


def iwae_bound(key: jax.Array, model: nn.Module, params: dict, x: jax.Array,
               num_samples: int, chunk_size: int | None = None) -> jax.Array:
    """Importance-weighted bound ``log (1/k) sum_i w_i`` per image, ``k = num_samples``.

    The ``k`` samples are drawn ``chunk_size`` at a time inside a ``lax.scan`` that keeps a
    running log-sum-exp ``(m, s)`` with ``sum_i w_i = exp(m) s``, so memory is
    ``O(chunk_size * B * P)`` whatever ``k``. A last partial chunk is masked out. At
    ``k = 1`` its expectation is the ELBO; it increases with ``k`` towards ``log p(x)``.
    (``IWAE(k)`` of :mod:`vijax.estimators` is the same bound, drawn in one piece.)

    Args:
        key: PRNG key.
        model, params: the VAE.
        x: ``(B, P)`` pixels in ``[0, 1]``.
        num_samples: ``k >= 1`` (static).
        chunk_size: draws per chunk (static); default ``min(k, 100)``.

    Returns:
        ``(B,)`` bounds (nats; ``-bound`` estimates the negative log-likelihood).
    """
    check_key("key", key)
    check_batch(x, model)
    k = check_int("num_samples", num_samples, 1)
    c = min(k, 100) if chunk_size is None else check_int("chunk_size", chunk_size, 1)
    c = min(c, k)
    n_chunks = -(-k // c)
    q = variational_params(model, params, x)
    batch = x.shape[0]

    def body(carry, inputs):
        m, s = carry
        chunk_key, start = inputs
        lw = log_weights(chunk_key, model, params, x, q, c)
        valid = (start + jnp.arange(c))[:, None] < k
        lw = jnp.where(valid, lw, -jnp.inf)
        new_m = jnp.maximum(m, jnp.max(lw, axis=0))
        s = s * jnp.exp(m - new_m) + jnp.sum(jnp.exp(lw - new_m), axis=0)
        return (new_m, s), None

    dtype = jnp.result_type(jax.tree.leaves(q)[0].dtype, x.dtype)
    init = (jnp.full((batch,), -jnp.inf, dtype), jnp.zeros((batch,), dtype))
    keys = jax.random.split(key, n_chunks)
    starts = jnp.arange(n_chunks) * c
    (m, s), _ = jax.lax.scan(body, init, (keys, starts))
    return m + jnp.log(s) - math.log(k)

