"""Tests of vijax.models.conjugate_gaussian: the closed forms the estimator tests rely on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vijax import diagnostics as D
from vijax import estimators as E
from vijax.families import FullRankGaussian, GaussianParams, MeanFieldGaussian
from vijax.models import conjugate_gaussian, simulate_conjugate_gaussian

KEY = jax.random.key(7)
MF = MeanFieldGaussian()
MODEL = simulate_conjugate_gaussian(jax.random.key(1), num_data=10, dim=3, prior_loc=0.5,
                                    prior_scale=2.0, noise_scale=1.5)
POST = MODEL.posterior()
Q = GaussianParams(POST.loc + jnp.array([0.6, -0.3, 0.1]), POST.log_scale + 0.4)
N = 20_000


def flat(tree):
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0], dtype=np.float64)


def test_closed_forms_against_scipy_and_autodiff():
    # the exact gradient is the gradient of the exact ELBO, zero at the posterior
    np.testing.assert_allclose(flat(MODEL.elbo_grad(Q)), flat(jax.grad(MODEL.elbo)(Q)),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(flat(MODEL.elbo_grad(POST)), 0.0, atol=1e-4)
    # the ELBO at the posterior is log p(x), checked against the Gaussian marginal of x
    x = np.asarray(MODEL.x, dtype=np.float64)
    n = x.shape[0]
    cov = 1.5**2 * np.eye(n) + 2.0**2 * np.ones((n, n))
    log_px = sum(stats.multivariate_normal(np.full(n, 0.5), cov).logpdf(x[:, d])
                 for d in range(x.shape[1]))
    np.testing.assert_allclose(float(MODEL.log_evidence()), log_px, rtol=1e-5)
    np.testing.assert_allclose(float(MODEL.elbo(POST)), log_px, rtol=1e-5)
    # log_joint (written with sufficient statistics) against the direct sum of log-densities
    z = np.array([0.3, -1.2, 2.0])
    direct = stats.norm(0.5, 2.0).logpdf(z).sum() + stats.norm(z, 1.5).logpdf(x).sum()
    np.testing.assert_allclose(float(MODEL.log_joint(jnp.asarray(z, jnp.float32))), direct,
                               rtol=1e-5)
    assert float(MODEL.kl_to_posterior(Q)) > 0
    # the Monte-Carlo ELBO agrees with the exact one
    z, log_q = MF.sample_and_log_prob(KEY, Q, N)
    vals = np.asarray(jax.vmap(MODEL.log_joint)(z) - log_q, dtype=np.float64)
    assert abs(vals.mean() - float(MODEL.elbo(Q))) < 5 * vals.std(ddof=1) / np.sqrt(N)


def test_full_rank_elbo_equals_mean_field_on_a_diagonal_and_is_smaller_off_the_posterior():
    fr = FullRankGaussian()
    q_fr = fr.init(Q.loc, jnp.diag(jnp.exp(Q.log_scale)))
    np.testing.assert_allclose(float(MODEL.elbo(q_fr)), float(MODEL.elbo(Q)), rtol=1e-5)
    np.testing.assert_allclose(flat(MODEL.elbo_grad(q_fr).loc), flat(MODEL.elbo_grad(Q).loc),
                               rtol=1e-4)
    correlated = fr.init(POST.loc, jnp.exp(POST.log_scale[0]) * jnp.array(
        [[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    assert float(MODEL.elbo(correlated)) < float(MODEL.log_evidence())


@pytest.mark.parametrize("log_scale_offset", [np.log(0.3), 0.4])
def test_closed_form_variances_and_their_crossover(log_scale_offset):
    """MC total variance matches the closed form; the total derivative wins iff s^2 < sigma^2/2."""
    q = GaussianParams(Q.loc, POST.log_scale + log_scale_offset)
    traces = {}
    for est in (E.Reparam(), E.STL()):
        fn = E.gradient(MODEL.log_joint, MF, estimator=est)
        g = D.flatten_gradients(D.gradient_samples(KEY, lambda k, p, fn=fn: fn.raw(k, p, ()).grad,
                                                   q, N))
        dev2 = np.asarray(jnp.sum((g - g.mean(0)) ** 2, axis=1), dtype=np.float64)
        se = dev2.std(ddof=1) / np.sqrt(N)
        exact = float(MODEL.gradient_variance(q, est))
        assert abs(dev2.mean() - exact) < 5 * se, (est, dev2.mean(), exact, se)
        traces[type(est).__name__] = exact
    r = np.exp(2 * log_scale_offset)  # s^2 / sigma^2
    assert (traces["Reparam"] < traces["STL"]) == (r < 0.5)
    assert float(MODEL.gradient_variance(POST, E.STL())) == 0.0


@pytest.mark.parametrize("call,word", [
    (lambda: MODEL.gradient_variance(Q, E.Score()), "estimator"),
    (lambda: conjugate_gaussian(jnp.zeros(3)), "x"),
    (lambda: conjugate_gaussian(jnp.zeros((4, 3)), prior_loc=jnp.zeros(2)), "prior_loc"),
    (lambda: conjugate_gaussian(jnp.zeros((4, 3)), prior_scale=0.0), "prior_scale"),
    (lambda: conjugate_gaussian(jnp.zeros((4, 3)), noise_scale=-1.0), "noise_scale"),
    (lambda: simulate_conjugate_gaussian(KEY, 0, 3), "num_data"),
    (lambda: simulate_conjugate_gaussian(KEY, 4, 2, prior_loc=np.zeros(3)),
     r"prior_loc must be a scalar or have shape \(2,\)"),
    (lambda: simulate_conjugate_gaussian(KEY, 4, 2, prior_loc=np.nan), "prior_loc must be finite"),
])
def test_bad_input(call, word):
    with pytest.raises(ValueError, match=word):
        call()
