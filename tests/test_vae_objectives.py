"""The VAE's log-likelihood, loss and IWAE bound against their straightforward computations.

``bernoulli_log_likelihood`` has a hand-written derivative (``custom_jvp``) and a softplus
written out for speed; the training loss and the chunked, streaming IWAE bound are built on
it. Each is compared here with the plain formula ``x l - jax.nn.softplus(l)`` differentiated
by autodiff, on the same noise: equal up to float32 rounding.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vijax.families import GaussianParams
from vijax.vae import VAE, VAEConfig, bernoulli_log_likelihood, iwae_bound, loss
from vijax.vae.objectives import FAMILY

#: A small network: the maths is the same at every size, and it compiles in a moment.
MODEL = VAE(VAEConfig(input_dim=12, hidden=(8,), latent_dim=3))


def _plain(logits, x):
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


@pytest.fixture(scope="module")
def params():
    return MODEL.init_params(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def batch():
    return np.round(np.random.default_rng(0).random((5, 12))).astype(np.float32)


def test_bernoulli_log_likelihood_and_its_derivatives_equal_the_softplus_form():
    logits = jnp.array([[-100.0, -30.0, -5.0, -1e-3, 0.0, 1e-3, 5.0, 30.0, 100.0]] * 3)
    x = jnp.array([[0.0] * 9, [1.0] * 9, [0.3] * 9])
    np.testing.assert_allclose(bernoulli_log_likelihood(logits, x), _plain(logits, x),
                               rtol=1e-6)
    # first derivatives in both arguments: d/dl = x - sigmoid(l), d/dx = l
    ours = jax.grad(lambda l, x: jnp.sum(bernoulli_log_likelihood(l, x)), (0, 1))(logits, x)
    plain = jax.grad(lambda l, x: jnp.sum(_plain(l, x)), (0, 1))(logits, x)
    for a, b in zip(ours, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours[0], x - jax.nn.sigmoid(logits), rtol=1e-6, atol=1e-7)
    # second derivative (the rule is itself differentiable): -sigmoid(l) sigmoid(-l)
    second = jax.vmap(jax.grad(jax.grad(lambda l: bernoulli_log_likelihood(l[None], 0.3))))(
        logits[0])
    expected = -jax.nn.sigmoid(logits[0]) * jax.nn.sigmoid(-logits[0])
    np.testing.assert_allclose(second, expected, rtol=1e-5, atol=1e-30)


def test_training_loss_and_gradient_equal_the_straightforward_computation(params, batch):
    key = jax.random.PRNGKey(1)

    def straightforward(p):  # the course's loss written out: one draw, closed-form KL
        mean, log_var = MODEL.apply({"params": p}, batch, method="encode")
        z = FAMILY.sample_and_log_prob(key, GaussianParams(mean, 0.5 * log_var), 1)[0]
        log_lik = _plain(MODEL.apply({"params": p}, z, method="decode"), batch)[0]
        kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1 - log_var, axis=-1)
        return -jnp.mean(log_lik - kl)

    value, grads = jax.jit(jax.value_and_grad(lambda p: loss(key, MODEL, p, batch)[0]))(params)
    ref_value, ref_grads = jax.jit(jax.value_and_grad(straightforward))(params)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_iwae_bound_equals_the_bound_computed_at_once(params, batch):
    key, k, chunk = jax.random.PRNGKey(2), 7, 3  # a last, partial chunk of 1

    @jax.jit
    def at_once(params):
        mean, log_var = MODEL.apply({"params": params}, batch, method="encode")
        q = GaussianParams(mean, 0.5 * log_var)
        log_w = []
        for chunk_key in jax.random.split(key, math.ceil(k / chunk)):  # iwae_bound's keys
            z, log_q = FAMILY.sample_and_log_prob(chunk_key, q, chunk)
            log_prior = -0.5 * jnp.sum(z**2, -1) - 1.5 * math.log(2 * math.pi)
            log_w.append(_plain(MODEL.apply({"params": params}, z, method="decode"), batch)
                         + log_prior - log_q)
        return jax.nn.logsumexp(jnp.concatenate(log_w)[:k], axis=0) - math.log(k)

    expected = at_once(params)
    bound = jax.jit(iwae_bound, static_argnums=(1, 4, 5))(key, MODEL, params, batch, k, chunk)
    np.testing.assert_allclose(bound, expected, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_, jnp.uint8])
def test_integer_and_boolean_pixels_give_the_float_pixels_value_and_gradient(dtype):
    logits = jnp.linspace(-4.0, 4.0, 12).reshape(2, 6)
    x = (jnp.arange(12).reshape(2, 6) % 3 == 0)
    as_float = x.astype(jnp.float32)

    def total(l, pixels):
        return jnp.sum(bernoulli_log_likelihood(l, pixels))

    np.testing.assert_allclose(total(logits, x.astype(dtype)), total(logits, as_float),
                               rtol=1e-6)
    np.testing.assert_allclose(jax.grad(total)(logits, x.astype(dtype)),
                               jax.grad(total)(logits, as_float), rtol=1e-6)
