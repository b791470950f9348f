"""The estimator layer on amortised families: a linear-Gaussian latent-variable model (not the
VAE) whose encoder can output the exact posterior, and the VAE itself as a client.

The model is ``p(z) = N(0, I_D)``, ``p(x|z) = N(W z + b, s^2 I_P)``, with posterior
``N(A (x - b), Sigma)``, ``Sigma = (I + W^T W / s^2)^-1``, ``A = Sigma W^T / s^2``; ``W`` has
orthogonal columns so ``Sigma`` is diagonal and a mean-field encoder affine in ``x`` outputs
the exact posterior. The decoder's weights are closed over by the log joint, so one
``jax.grad`` of the surrogate gives encoder and decoder gradients. Float64 throughout.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vijax import diagnostics as D
from vijax import estimators as E
from vijax.families import GaussianParams, MeanFieldGaussian

P, D_LATENT, B, NOISE = 6, 3, 4, 0.7
REPLICATES = 4000
Z_MAX = 5.0
MF = MeanFieldGaussian()


def _log_likelihood(mean, x):
    r = (x - mean) / NOISE
    return jnp.sum(-0.5 * r * r - math.log(NOISE) - 0.5 * math.log(2 * math.pi), axis=-1)


def _encode(phi, x):
    mean = x @ phi["A"] + phi["c"]
    return GaussianParams(mean, jnp.broadcast_to(0.5 * phi["log_var"], mean.shape))


def _log_joint(theta, x):
    return E.StandardNormalPrior(lambda z: _log_likelihood(z @ theta["W"] + theta["b"], x))


def surrogate(key, params, x, objective, estimator, state=()):
    """The per-image surrogate ``(B,)`` of the amortised model."""
    q = _encode(params["encoder"], x)
    return estimator.surrogate(key, q, _log_joint(params["decoder"], x), MF, objective, state)


def grads(key, params, x, objective, estimator):
    """Ascent direction of the batch-mean objective, for encoder and decoder."""
    return jax.grad(lambda p: jnp.mean(surrogate(key, p, x, objective, estimator).surrogate))(
        params)


@pytest.fixture(scope="module")
def problem():
    """Exact-posterior parameters, a perturbed encoder, and a batch drawn from the model."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        q, _ = np.linalg.qr(rng.normal(size=(P, D_LATENT)))
        w = q * np.array([2.0, 1.0, 0.5])  # orthogonal columns, (P, D)
        b = rng.normal(size=P)
        sigma = np.linalg.inv(np.eye(D_LATENT) + w.T @ w / NOISE**2)
        assert np.allclose(sigma, np.diag(np.diag(sigma)), atol=1e-12)
        a = sigma @ w.T / NOISE**2  # (D, P): posterior mean A (x - b)
        exact = {"encoder": {"A": jnp.asarray(a.T), "c": jnp.asarray(-b @ a.T),
                             "log_var": jnp.asarray(np.log(np.diag(sigma)))},
                 "decoder": {"W": jnp.asarray(w.T), "b": jnp.asarray(b)}}
        z = rng.normal(size=(B, D_LATENT))
        x = jnp.asarray(z @ w.T + b + NOISE * rng.normal(size=(B, P)))
        off = {"encoder": {"A": exact["encoder"]["A"] + 0.3 * rng.normal(size=(P, D_LATENT)),
                           "c": exact["encoder"]["c"] + 0.5,
                           "log_var": exact["encoder"]["log_var"] - 0.7},
               "decoder": exact["decoder"]}
        yield {"exact": exact, "off": off, "x": x}


def _samples(params, x, objective, estimator, replicates=REPLICATES, seed=1, part="encoder"):
    g = D.gradient_samples(jax.random.key(seed),
                           lambda k, p: grads(k, p, x, objective, estimator)[part], params,
                           replicates)
    return np.asarray(D.flatten_gradients(g))


def _max_z(a, b):
    """Largest per-coordinate |mean(a - b)| / standard error (paired: same keys)."""
    d = a - b
    se = d.std(axis=0, ddof=1) / math.sqrt(d.shape[0])
    return float(np.max(np.abs(d.mean(axis=0)) / np.maximum(se, 1e-300)))


def test_surrogate_value_is_the_bound_whatever_the_estimator(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["off"]
        key = jax.random.key(3)
        for k, estimators in ((1, (E.Reparam(), E.STL())), (5, (E.Reparam(), E.STL(), E.DReG(),
                                                                E.Score(E.LeaveOneOut())))):
            q = _encode(params["encoder"], x)
            eps = jax.random.normal(key, (k, B, D_LATENT), jnp.float64)
            z = q.loc + jnp.exp(q.log_scale) * eps
            log_q = jnp.sum(-0.5 * eps**2 - q.log_scale - 0.5 * math.log(2 * math.pi), -1)
            log_p = (_log_likelihood(z @ params["decoder"]["W"] + params["decoder"]["b"], x)
                     + jnp.sum(-0.5 * z**2 - 0.5 * math.log(2 * math.pi), -1))
            want = jax.nn.logsumexp(log_p - log_q, axis=0) - math.log(k)
            for est in estimators:
                out = surrogate(key, params, x, E.IWAE(k), est)
                assert out.value.shape == (B,)
                np.testing.assert_allclose(out.value, want, rtol=1e-12, atol=1e-10)
                np.testing.assert_allclose(out.surrogate, want, rtol=1e-12, atol=1e-10)


def test_every_elbo_estimator_unbiased_on_the_amortised_family(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["off"]
        total = _samples(params, x, E.ELBO(4), E.Reparam())
        for est in (E.STL(), E.Score(E.LeaveOneOut()), E.ScoreControlVariate()):
            g = _samples(params, x, E.ELBO(4), est)
            assert _max_z(g, total) < Z_MAX, est
            assert np.max(np.abs(g - total)) > 1e-2  # they differ sample by sample


def test_dreg_equals_stl_at_k1_per_key(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["off"]
        key = jax.random.key(2)
        stl = grads(key, params, x, E.ELBO(1), E.STL())
        dreg = grads(key, params, x, E.IWAE(1), E.DReG())
        for a, b in zip(jax.tree.leaves(dreg), jax.tree.leaves(stl), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_dreg_and_vimco_unbiased_for_iwae_and_stl_biased(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["off"]
        total = _samples(params, x, E.IWAE(5), E.Reparam())
        assert _max_z(_samples(params, x, E.IWAE(5), E.DReG()), total) < Z_MAX
        assert _max_z(_samples(params, x, E.IWAE(5), E.Score(E.LeaveOneOut())), total) < Z_MAX
        # theory: STL is biased for IWAE; with these replicates the bias is detected
        assert _max_z(_samples(params, x, E.IWAE(5), E.STL()), total) > 2 * Z_MAX


def test_decoder_gradient_same_for_the_pathwise_estimators(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["off"]
        key = jax.random.key(4)
        ref = grads(key, params, x, E.IWAE(5), E.Reparam())["decoder"]
        for est in (E.STL(), E.DReG()):
            got = grads(key, params, x, E.IWAE(5), est)["decoder"]
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_zero_variance_at_exact_posterior(problem):
    with jax.enable_x64(True):
        x, params = problem["x"], problem["exact"]
        for objective, est in ((E.ELBO(1), E.STL()), (E.IWAE(5), E.DReG())):
            flat = _samples(params, x, objective, est, replicates=64, seed=5)
            assert np.max(np.abs(flat)) < 1e-10  # every key: zero to float64 rounding
        total = _samples(params, x, E.ELBO(1), E.Reparam(), replicates=64, seed=5)
        assert float(total.var(axis=0, ddof=1).sum()) > 1e-2


# --------------------------------------------------------------------------- the VAE


def _tiny_vae():
    from vijax.vae import models

    return models.VAE(models.VAEConfig(input_dim=8, hidden=(5,), latent_dim=2))


def test_vae_train_step_follows_the_loss_for_every_estimator():
    from vijax.vae import loss, train

    model = _tiny_vae()
    optimizer = optax.adam(1e-2)
    x = jnp.round(jax.random.uniform(jax.random.key(1), (4, 8)))
    for objective, est in ((E.IWAE(3), E.DReG()), (E.ELBO(3), E.Score(E.MovingAverage()))):
        state = train.init(jax.random.PRNGKey(0), model, optimizer, est)
        params = jax.tree.map(jnp.copy, state.params)
        _, step_key = jax.random.split(state.key)
        want, (_, est_state) = jax.jit(lambda k, p, o=objective, e=est: loss(
            k, model, p, x, objective=o, estimator=e, state=e.init_state()))(step_key, params)
        new, value = train.train_step(state, x, model=model, optimizer=optimizer,
                                      objective=objective, estimator=est)
        np.testing.assert_allclose(value, want, rtol=1e-5)
        assert int(new.step) == 1
        assert jax.tree.structure(new.estimator_state) == jax.tree.structure(est_state)
        moved = [float(jnp.max(jnp.abs(a - b))) for a, b in
                 zip(jax.tree.leaves(new.params), jax.tree.leaves(params), strict=True)]
        assert min(moved) > 0


def test_vae_encoder_gradient_variance_dreg_below_total():
    from vijax.vae import bound_gradient

    model = _tiny_vae()
    params = model.init_params(jax.random.key(0))
    x = jnp.round(jax.random.uniform(jax.random.key(1), (6, 8)))
    var = {}
    for est in (E.Reparam(), E.DReG()):
        g = D.gradient_samples(jax.random.key(2), lambda k, p, e=est: bound_gradient(
            k, model, p, x, objective=E.IWAE(20), estimator=e)[1]["encoder"], params, 500)
        var[type(est).__name__] = float(D.gradient_moments(g).variance_trace)
    assert var["DReG"] < var["Reparam"], var


@pytest.mark.parametrize(("objective", "estimator", "match"), [
    (E.ELBO(kl="analytic"), "dreg", "estimators are objects now"),
    (E.ELBO(kl="entropy"), E.STL(), "needs log q at the samples"),
    (E.ELBO(1), E.DReG(), "applies to objective IWAE"),
    ("iwae", E.Reparam(), "objective must be ELBO"),
])
def test_vae_rejects_estimators_that_do_not_apply(objective, estimator, match):
    from vijax.vae import train

    model = _tiny_vae()
    optimizer = optax.adam(1e-2)
    state = train.init(jax.random.PRNGKey(0), model, optimizer)
    with pytest.raises(ValueError, match=match):
        train.train_step(state, jnp.zeros((2, 8)), model=model, optimizer=optimizer,
                         objective=objective, estimator=estimator)


# --------------------------------------------------------------------------- discrete latents


def test_discrete_vae_bound_reaches_the_enumerated_likelihood_and_trains():
    import itertools

    from vijax.vae import VAE, VAEConfig, fit, iwae_bound, log_joint

    model = VAE(VAEConfig(input_dim=8, hidden=(5,), latent_dim=3, latent="bernoulli"))
    params = model.init_params(jax.random.key(0))
    x = jnp.round(jax.random.uniform(jax.random.key(5), (2, 8)))
    states = jnp.array(list(itertools.product([0.0, 1.0], repeat=3)))
    lj = log_joint(model, params, x)
    exact = jax.nn.logsumexp(jax.vmap(lambda b: lj(jnp.broadcast_to(b, (2, 3))))(states), 0)
    # the discrete model's bound at large k is log p(x) (Monte-Carlo spread at k = 3000: ~0.005)
    mean = np.mean([np.asarray(iwae_bound(jax.random.key(s), model, params, x, 3000))
                    for s in range(4)], axis=0)
    np.testing.assert_allclose(mean, exact, atol=0.01)
    cat = VAEConfig(input_dim=8, hidden=(5,), latent_dim=2, latent="categorical", categories=3)
    images = np.random.default_rng(0).uniform(size=(40, 8)).astype(np.float32)
    for config, est in ((cat, E.GumbelSoftmax(E.Anneal(rate=1e-2, every=2))),
                        (cat, E.REBAR(optax.adam(1e-3)))):
        r = fit(jax.random.key(3), images, optimizer=optax.adam(1e-2), config=config, epochs=1,
                batch_size=20, objective=E.ELBO(kl="analytic"), estimator=est, progress=False)
        assert np.all(np.isfinite([h["train_loss"] for h in r.history]))
    assert int(r.state.estimator_state.params.eta.shape == ())  # REBAR's state carried
