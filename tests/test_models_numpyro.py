"""Tests of vijax.models.numpyro_model: the adapter's log joint and gradient against hand-written
log joints (the Jacobian of the constraining transform included), jit/vmap, bad input.

The models compute in float32 (64-bit JAX off), so comparisons use rtol 1e-5.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats as jstats
from scipy import stats

numpyro = pytest.importorskip("numpyro")
dist = pytest.importorskip("numpyro.distributions")

from vijax.models.logistic_regression import logistic_regression  # noqa: E402
from vijax.models.numpyro_model import NumPyroLogJoint, from_numpyro  # noqa: E402

KEY = jax.random.key(20260101)
RTOL = 1e-5


def numpyro_logistic_regression(x, y, prior_scale):
    d = x.shape[1]
    w = numpyro.sample("w", dist.Normal(0.0, prior_scale).expand([d]).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)


def normal_with_unknown_scale(x):
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.deterministic("twice_mu", 2 * mu)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", dist.Normal(mu, sigma), obs=x)


def no_latent_sites(x):
    numpyro.sample("x", dist.Normal(0.0, 1.0), obs=x)


@pytest.fixture(scope="module")
def logistic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = (rng.uniform(size=30) < 0.4).astype(np.float32)
    prior_scale = 1.3
    adapted = from_numpyro(KEY, numpyro_logistic_regression, x, y, prior_scale=prior_scale)
    return adapted, logistic_regression(x, y, prior_scale), rng.normal(size=(3, 4)) * 1.5


@pytest.fixture(scope="module")
def scale_model():
    data = np.array([0.3, -1.2, 2.1, 0.8, 1.5], np.float32)
    return from_numpyro(KEY, normal_with_unknown_scale, data), data


def test_logistic_regression_matches_the_hand_written_model(logistic):
    adapted, reference, points = logistic
    assert isinstance(adapted, NumPyroLogJoint)
    assert adapted.init_z.shape == (4,) and np.all(np.isfinite(adapted.init_z))
    for z in jnp.asarray(points, jnp.float32):
        np.testing.assert_allclose(adapted.log_joint(z), reference.log_joint(z), rtol=RTOL)
        np.testing.assert_allclose(jax.grad(adapted.log_joint)(z),
                                   jax.grad(reference.log_joint)(z), rtol=RTOL, atol=1e-5)
        np.testing.assert_array_equal(adapted.unravel(z)["w"], z)  # identity transform on R^D


def hand_log_joint(z, data):
    """log N(mu; 0, 1) + log HalfNormal(sigma; 1) + sum_n log N(x_n; mu, sigma) + u,
    with z = (mu, u), sigma = exp(u); + u is log |d sigma / du|."""
    mu, u = z[0], z[1]
    sigma = jnp.exp(u)
    return (jstats.norm.logpdf(mu) + jnp.log(2.0) + jstats.norm.logpdf(sigma)
            + jnp.sum(jstats.norm.logpdf(data, mu, sigma)) + u)


def test_positive_latent_includes_the_log_jacobian(scale_model):
    adapted, data = scale_model
    assert adapted.init_z.shape == (2,)
    z0 = jnp.array([0.4, -0.7])
    # ravel_pytree flattens the dict in sorted key order: mu, then sigma's unconstrained u.
    assert set(adapted.unravel(z0)) == {"mu", "sigma"}
    np.testing.assert_array_equal(adapted.unravel(z0)["mu"], z0[0])
    np.testing.assert_array_equal(adapted.unravel(z0)["sigma"], z0[1])
    for z in [z0, jnp.array([-1.1, 0.9]), jnp.array([2.0, -2.5])]:
        mu, u = (float(v) for v in z)
        scipy_value = (stats.norm.logpdf(mu) + stats.halfnorm.logpdf(np.exp(u))
                       + stats.norm.logpdf(data.astype(np.float64), mu, np.exp(u)).sum() + u)
        np.testing.assert_allclose(adapted.log_joint(z), scipy_value, rtol=RTOL)
        np.testing.assert_allclose(adapted.log_joint(z), hand_log_joint(z, data), rtol=RTOL)
        np.testing.assert_allclose(jax.grad(adapted.log_joint)(z),
                                   jax.grad(hand_log_joint)(z, data), rtol=RTOL, atol=1e-5)


def test_constrain_gives_the_latent_sites_in_their_support(scale_model):
    adapted, _ = scale_model
    z = jnp.array([0.4, -0.7])
    values = adapted.constrain(z)
    assert set(values) == {"mu", "sigma"}  # latent sample sites only: no deterministic, no obs
    np.testing.assert_allclose(values["mu"], 0.4, rtol=1e-6)
    np.testing.assert_allclose(values["sigma"], np.exp(-0.7), rtol=1e-6)


@pytest.mark.parametrize("which", ["logistic", "scale_model"])
def test_jit_and_vmap(which, request):
    adapted = request.getfixturevalue(which)[0]
    d = adapted.init_z.shape[0]
    batch = jax.random.normal(jax.random.key(1), (5, d))
    loop_values = np.array([adapted.log_joint(z) for z in batch])
    loop_grads = np.stack([jax.grad(adapted.log_joint)(z) for z in batch])

    values = jax.jit(jax.vmap(adapted.log_joint))(batch)
    assert values.shape == (5,)
    np.testing.assert_allclose(values, loop_values, rtol=RTOL)
    grads = jax.jit(jax.vmap(jax.grad(adapted.log_joint)))(batch)
    assert grads.shape == (5, d)
    np.testing.assert_allclose(grads, loop_grads, rtol=RTOL, atol=1e-5)
    constrained = jax.vmap(adapted.constrain)(batch)
    assert all(v.shape[0] == 5 for v in constrained.values())

    # One function object: jit compiles once and is reused for new points.
    assert adapted.log_joint is adapted.log_joint
    jitted = jax.jit(adapted.log_joint)
    for z in batch:
        np.testing.assert_allclose(jitted(z), adapted.log_joint(z), rtol=RTOL)
    assert jitted._cache_size() == 1


def test_bad_key_names_key():
    for key in [0, np.zeros(3, np.uint32), np.zeros(2, np.float32)]:
        with pytest.raises(ValueError, match="key"):
            from_numpyro(key, normal_with_unknown_scale, np.ones(3, np.float32))


def test_not_callable_names_model():
    with pytest.raises(ValueError, match="model"):
        from_numpyro(KEY, "normal_with_unknown_scale", np.ones(3, np.float32))


def test_no_latent_site_names_model():
    with pytest.raises(ValueError, match="model"):
        from_numpyro(KEY, no_latent_sites, np.ones(3, np.float32))


def test_wrong_point_shape_names_z(scale_model):
    adapted, _ = scale_model
    with pytest.raises(ValueError, match="z"):
        adapted.log_joint(jnp.zeros(3))


def test_missing_numpyro_says_how_to_install(monkeypatch):
    for name in [m for m in sys.modules if m == "numpyro" or m.startswith("numpyro.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match="pip install numpyro"):
        from_numpyro(KEY, normal_with_unknown_scale, np.ones(3, np.float32))
