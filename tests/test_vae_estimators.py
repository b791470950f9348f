"""Tests of ``vijax.vae.gradients``: total derivative, STL and DReG for the ELBO and IWAE.

The model is linear-Gaussian, ``p(z) = N(0, I_D)``, ``p(x|z) = N(W z + b, s^2 I_P)``, whose
posterior is ``N(A (x - b), Sigma)`` with ``Sigma = (I + W^T W / s^2)^-1``,
``A = Sigma W^T / s^2``; ``W`` has orthogonal columns so ``Sigma`` is diagonal and a mean-field
encoder affine in ``x`` can output the exact posterior. Float64 throughout, so "zero" means
rounding of float64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vijax.estimators import flatten_gradients
from vijax.vae import gradients as G

P, D, B, NOISE = 6, 3, 4, 0.7
REPLICATES = 4000  # replicate gradients for the unbiasedness tests
Z_MAX = 5.0  # per-coordinate threshold in standard errors (24 coordinates)


def _log_likelihood(mean, x):
    r = (x - mean) / NOISE
    return jnp.sum(-0.5 * r * r - math.log(NOISE) - 0.5 * math.log(2 * math.pi), axis=-1)


def _encode(phi, x):
    mean = x @ phi["A"] + phi["c"]
    return mean, jnp.broadcast_to(phi["log_var"], mean.shape)


def _decode(theta, z):
    return z @ theta["W"] + theta["b"]


MODEL = G.LatentModel(_encode, _decode, _log_likelihood)


@pytest.fixture(scope="module")
def problem():
    """Exact-posterior parameters, a perturbed encoder, and a batch drawn from the model."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        q, _ = np.linalg.qr(rng.normal(size=(P, D)))
        w = q * np.array([2.0, 1.0, 0.5])  # orthogonal columns, (P, D)
        b = rng.normal(size=P)
        sigma = np.linalg.inv(np.eye(D) + w.T @ w / NOISE**2)
        assert np.allclose(sigma, np.diag(np.diag(sigma)), atol=1e-12)
        a = sigma @ w.T / NOISE**2  # (D, P): posterior mean A (x - b)
        exact = {"encoder": {"A": jnp.asarray(a.T), "c": jnp.asarray(-b @ a.T),
                             "log_var": jnp.asarray(np.log(np.diag(sigma)))},
                 "decoder": {"W": jnp.asarray(w.T), "b": jnp.asarray(b)}}
        z = rng.normal(size=(B, D))
        x = jnp.asarray(z @ w.T + b + NOISE * rng.normal(size=(B, P)))
        off = {"encoder": {"A": exact["encoder"]["A"] + 0.3 * rng.normal(size=(P, D)),
                           "c": exact["encoder"]["c"] + 0.5,
                           "log_var": exact["encoder"]["log_var"] - 0.7},
               "decoder": exact["decoder"]}
        yield {"exact": exact, "off": off, "x": x}


def _samples(params, x, estimator, k, replicates=REPLICATES, seed=1):
    g = G.encoder_gradient_samples(jax.random.key(seed), MODEL, params, x, estimator=estimator,
                                   num_samples=k, num_replicates=replicates)
    return np.asarray(flatten_gradients(g))


def _max_z(a, b):
    """Largest per-coordinate |mean(a - b)| / standard error (paired: same keys)."""
    d = a - b
    se = d.std(axis=0, ddof=1) / math.sqrt(d.shape[0])
    return float(np.max(np.abs(d.mean(axis=0)) / se))


def test_surrogate_value_is_the_bound_whatever_the_estimator(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["off"]
        key = jax.random.key(3)
        for k in (1, 5):
            values = [G.surrogate_bound(key, MODEL, params, x, estimator=e, num_samples=k)
                      for e in G.ESTIMATORS]
            # closed form: log mean_i w_i with the same eps
            mean, log_var = _encode(params["encoder"], x)
            eps = jax.random.normal(key, (k, B, D), jnp.float64)
            z = mean + jnp.exp(0.5 * log_var) * eps
            log_q = jnp.sum(-0.5 * eps**2 - 0.5 * log_var - 0.5 * math.log(2 * math.pi), -1)
            log_p = (_log_likelihood(_decode(params["decoder"], z), x)
                     + jnp.sum(-0.5 * z**2 - 0.5 * math.log(2 * math.pi), -1))
            want = jax.nn.logsumexp(log_p - log_q, axis=0) - math.log(k)
            for v in values:
                assert v.shape == (B,)
                np.testing.assert_allclose(v, want, rtol=1e-12, atol=1e-10)


def test_stl_and_dreg_unbiased_for_elbo(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["off"]
        total = _samples(params, x, "total", 1)
        stl = _samples(params, x, "stl", 1)
        assert _max_z(stl, total) < Z_MAX
        # the two differ sample by sample (by the score term), so the test has something to do
        assert np.max(np.abs(stl - total)) > 1e-2


def test_dreg_equals_stl_at_k1_per_key(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["off"]
        stl = _samples(params, x, "stl", 1, replicates=64, seed=7)
        dreg = _samples(params, x, "dreg", 1, replicates=64, seed=7)
        np.testing.assert_array_equal(dreg, stl)  # exactly: the extra factor w~_1 is 1.0
        for e in ("stl", "dreg"):  # and the decoder's gradient too
            _, grads = G.bound_gradient(jax.random.key(2), MODEL, params, x, estimator=e)
            if e == "stl":
                ref = grads
            else:
                for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref), strict=True):
                    np.testing.assert_array_equal(a, b)


def test_dreg_unbiased_for_iwae_and_stl_biased(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["off"]
        total = _samples(params, x, "total", 5)
        dreg = _samples(params, x, "dreg", 5)
        stl = _samples(params, x, "stl", 5)
        assert _max_z(dreg, total) < Z_MAX
        # theory: STL is biased for IWAE; with these replicates the bias is detected
        assert _max_z(stl, total) > 2 * Z_MAX


def test_decoder_gradient_same_for_all_estimators(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["off"]
        grads = {e: G.bound_gradient(jax.random.key(4), MODEL, params, x, estimator=e,
                                     num_samples=5)[1]["decoder"] for e in G.ESTIMATORS}
        for e in ("stl", "dreg"):
            for a, b in zip(jax.tree.leaves(grads[e]), jax.tree.leaves(grads["total"]),
                            strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_zero_variance_at_exact_posterior(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["exact"]
        var = {}
        for e, k in (("total", 1), ("stl", 1), ("dreg", 5), ("total", 5)):
            g = G.encoder_gradient_samples(jax.random.key(5), MODEL, params, x, estimator=e,
                                           num_samples=k, num_replicates=64)
            flat = np.asarray(flatten_gradients(g))
            var[e, k] = float(flat.var(axis=0, ddof=1).sum())
            if e != "total":
                assert np.max(np.abs(flat)) < 1e-10  # every key: zero to float64 rounding
        moments = G.encoder_gradient_moments(jax.random.key(5), MODEL, params, x,
                                             estimator="stl", num_replicates=64)
        assert float(moments.variance_trace) < 1e-20
        assert var["stl", 1] < 1e-20 and var["dreg", 5] < 1e-20
        assert var["total", 1] > 1e-2 and var["total", 5] > 1e-3


def _tiny_vae():
    from vijax.vae import models

    return models.VAE(models.VAEConfig(input_dim=8, hidden=(5,), latent_dim=2))


def test_total_and_stl_match_objectives_elbo_on_the_vae():
    from vijax.vae import objectives

    model = _tiny_vae()
    params = model.init_params(jax.random.key(0))
    x = jnp.round(jax.random.uniform(jax.random.key(1), (3, 8)))
    key = jax.random.key(2)
    for mine, theirs in (("total", "mc"), ("stl", "stl")):
        v, g = G.bound_gradient(key, model, params, x, estimator=mine)
        v2, g2 = jax.jit(jax.value_and_grad(
            lambda p, e=theirs: -objectives.negative_elbo(key, model, p, x, e)))(params)
        np.testing.assert_allclose(v, v2, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g2), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"estimator": "reinforce"}, "estimator must be one of"),
    ({"estimator": None}, "estimator must be one of"),
    ({"num_samples": 0}, "num_samples must be >= 1"),
    ({"num_samples": 2.5}, "num_samples must be an integer"),
    ({"num_replicates": 1}, "num_replicates must be >= 2"),
    ({"chunk_size": 0}, "chunk_size must be >= 1"),
    ({"x": jnp.zeros((P,))}, "x must have shape"),
    ({"params": {"encoder": {}}}, "params must be a mapping with 'encoder' and 'decoder'"),
    ({"model": object()}, "model must be a vijax.vae.VAE or a LatentModel"),
    ({"key": 3}, "key must be a PRNG key"),
])
def test_bad_input(problem, kwargs, match):
    args = {"key": jax.random.key(0), "model": MODEL, "params": problem["off"],
            "x": problem["x"], **kwargs}
    with pytest.raises(ValueError, match=match):
        G.encoder_gradient_samples(args.pop("key"), args.pop("model"), args.pop("params"),
                                   args.pop("x"), **args)
    if "num_replicates" not in kwargs and "chunk_size" not in kwargs:
        args = {"key": jax.random.key(0), "model": MODEL, "params": problem["off"],
                "x": problem["x"], **kwargs}
        with pytest.raises(ValueError, match=match):
            G.surrogate_bound(args.pop("key"), args.pop("model"), args.pop("params"),
                              args.pop("x"), **args)


def test_train_step_accepts_iwae_estimators():
    from vijax.vae import train

    model = _tiny_vae()
    optimizer = train.adam(1e-2)
    x = jnp.round(jax.random.uniform(jax.random.key(1), (4, 8)))
    state = train.init(jax.random.PRNGKey(0), model, optimizer)
    params = jax.tree.map(jnp.copy, state.params)
    _, step_key = jax.random.split(state.key)
    want = jax.jit(G.surrogate_loss, static_argnums=(1, 4, 5))(step_key, model, params, x,
                                                               "dreg", 3)
    new, loss = train.train_step(state, x, model=model, optimizer=optimizer,
                                 estimator=("dreg", 3))
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert int(new.step) == 1
    moved = [float(jnp.max(jnp.abs(a - b)))
             for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(params), strict=True)]
    assert min(moved) > 0


@pytest.mark.parametrize(("estimator", "match"), [
    ("iwae", "estimator must be one of"),
    (("score", 5), r"estimator\[0\] must be one of"),
    (("dreg", 0), r"estimator\[1\] \(num_samples\) must be >= 1"),
    (("dreg", 5, 1), "estimator must be one of"),
])
def test_bad_training_estimator(estimator, match):
    with pytest.raises(ValueError, match=match):
        G.check_training_estimator(estimator)
    assert G.check_training_estimator(["stl", 5]) == ("stl", 5)
    assert G.check_training_estimator("analytic") == "analytic"
