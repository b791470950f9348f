"""Tests of vijax.models.logistic_regression: the log joint and its gradient against hand
computations in float64, finiteness at extreme logits, the breast cancer loader, bad input.

The model computes in float32 (64-bit JAX off), so comparisons with float64 use rtol 1e-5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from vijax.models.logistic_regression import (
    LogisticRegression,
    load_breast_cancer,
    logistic_regression,
)

RTOL = 1e-5


def log_sigmoid64(t):
    """log sigmoid(t) = -log(1 + exp(-t)), stable in float64 for any t."""
    return -np.logaddexp(0.0, -np.asarray(t, np.float64))


def reference_log_joint(x, y, prior_scale, z):
    """The log joint as a direct float64 sum with scipy's normal log density."""
    x, y, z = (np.asarray(a, np.float64) for a in (x, y, z))
    logits = x @ z
    log_likelihood = np.sum(y * log_sigmoid64(logits) + (1 - y) * log_sigmoid64(-logits))
    return log_likelihood + np.sum(stats.norm.logpdf(z, loc=0.0, scale=prior_scale))


def closed_form_grad(x, y, prior_scale, z):
    """x^T (y - sigmoid(x z)) - z / prior_scale^2, in float64."""
    x, y, z = (np.asarray(a, np.float64) for a in (x, y, z))
    return x.T @ (y - special.expit(x @ z)) - z / prior_scale ** 2


def small_problem(seed=0, n=20, d=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (rng.uniform(size=n) < 0.5).astype(np.float64)
    points = rng.normal(size=(4, d)) * 1.5
    return x, y, points


def log_joint_fn(jit):
    fn = LogisticRegression.log_joint
    return jax.jit(fn) if jit else fn


@pytest.mark.parametrize("jit", [False, True])
def test_log_joint_matches_direct_sum(jit):
    x, y, points = small_problem()
    prior_scale = 1.7
    model = logistic_regression(x, y, prior_scale)
    for z in points:
        got = log_joint_fn(jit)(model, jnp.asarray(z, jnp.float32))
        np.testing.assert_allclose(got, reference_log_joint(x, y, prior_scale, z), rtol=RTOL)


def test_log_joint_constants_at_zero():
    """At z = 0 every logit is 0: N log(1/2) - D/2 log(2 pi) - D log s."""
    x, y, _ = small_problem(n=7, d=5)
    model = logistic_regression(x, y, prior_scale=0.3)
    want = 7 * np.log(0.5) - 2.5 * np.log(2 * np.pi) - 5 * np.log(0.3)
    np.testing.assert_allclose(model.log_joint(jnp.zeros(5)), want, rtol=RTOL)


@pytest.mark.parametrize("jit", [False, True])
def test_grad_matches_closed_form(jit):
    x, y, points = small_problem(seed=1)
    prior_scale = 0.8
    model = logistic_regression(x, y, prior_scale)
    grad = jax.grad(LogisticRegression.log_joint, argnums=1)
    grad = jax.jit(grad) if jit else grad
    for z in points:
        np.testing.assert_allclose(grad(model, jnp.asarray(z, jnp.float32)),
                                   closed_form_grad(x, y, prior_scale, z), rtol=RTOL, atol=1e-5)


def test_vmap_over_a_batch_of_weights():
    x, y, points = small_problem(seed=2)
    model = logistic_regression(x, y)
    batch = jax.vmap(model.log_joint)(jnp.asarray(points, jnp.float32))
    assert batch.shape == (points.shape[0],)
    loop = [model.log_joint(jnp.asarray(z, jnp.float32)) for z in points]
    np.testing.assert_allclose(batch, loop, rtol=1e-6)


def test_finite_and_accurate_at_extreme_logits():
    """|x z| ~ 1e3 with labels on both sides: no log of a rounded probability, no inf/nan."""
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.5, 0.5]]) * 1e3
    y = np.array([1.0, 1.0, 0.0, 0.0, 1.0])  # the second and third are badly misclassified
    z = np.array([1.2, 0.9])
    model = logistic_regression(x, y)
    value = model.log_joint(jnp.asarray(z, jnp.float32))
    grad = jax.grad(model.log_joint)(jnp.asarray(z, jnp.float32))
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, reference_log_joint(x, y, 1.0, z), rtol=RTOL)
    np.testing.assert_allclose(grad, closed_form_grad(x, y, 1.0, z), rtol=RTOL, atol=1e-3)


def test_constructor_converts_to_float():
    model = logistic_regression(np.arange(6).reshape(3, 2), np.array([True, False, True]), 2)
    assert model.x.dtype == jnp.result_type(float) and model.y.dtype == model.x.dtype
    assert model.prior_scale.dtype == model.x.dtype and model.prior_scale.shape == ()
    np.testing.assert_array_equal(model.y, [1.0, 0.0, 1.0])


@pytest.mark.parametrize("intercept", [True, False])
def test_load_breast_cancer(intercept):
    model = load_breast_cancer(prior_scale=2.0, intercept=intercept)
    d = 31 if intercept else 30
    assert model.x.shape == (569, d) and model.y.shape == (569,)
    assert model.x.dtype == model.y.dtype == jnp.result_type(float)
    features = np.asarray(model.x[:, :30], np.float64)
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(features.std(axis=0), 1.0, rtol=1e-5)
    if intercept:
        np.testing.assert_array_equal(model.x[:, 30], 1.0)
    y = np.asarray(model.y)
    assert set(np.unique(y)) == {0.0, 1.0} and y.sum() == 357  # 357 benign, 212 malignant
    assert float(model.prior_scale) == 2.0
    assert np.isfinite(model.log_joint(jnp.zeros(d)))


GOOD_X = np.ones((3, 2))
GOOD_Y = np.array([0.0, 1.0, 1.0])


@pytest.mark.parametrize("kwargs, name", [
    (dict(x=np.ones(3)), "x"),
    (dict(x=np.ones((3, 2, 1))), "x"),
    (dict(x=np.ones((0, 2)), y=np.ones(0)), "x"),
    (dict(x=np.ones((3, 0))), "x"),
    (dict(x=np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]])), "x"),
    (dict(x=np.array([[1.0, np.inf], [0.0, 1.0], [1.0, 1.0]])), "x"),
    (dict(x=np.ones((3, 2)) * 1j), "x"),
    (dict(x=[[1.0, 2.0], [3.0]]), "x"),
    (dict(y=np.array([0.0, 1.0])), "y"),
    (dict(y=np.ones((3, 1))), "y"),
    (dict(y=np.array([0.0, 1.0, 0.5])), "y"),
    (dict(y=np.array([0.0, 1.0, 2.0])), "y"),
    (dict(y=np.array([0.0, 1.0, -1.0])), "y"),
    (dict(y=np.array([0.0, 1.0, np.nan])), "y"),
    (dict(prior_scale=0.0), "prior_scale"),
    (dict(prior_scale=-1.0), "prior_scale"),
    (dict(prior_scale=np.inf), "prior_scale"),
    (dict(prior_scale=np.nan), "prior_scale"),
    (dict(prior_scale="wide"), "prior_scale"),
    (dict(prior_scale=np.ones(2)), "prior_scale"),
])
def test_bad_input_names_the_argument(kwargs, name):
    args = dict(x=GOOD_X, y=GOOD_Y, prior_scale=1.0) | kwargs
    with pytest.raises(ValueError, match=name):
        logistic_regression(**args)


def test_bad_weight_shape_names_z():
    model = logistic_regression(GOOD_X, GOOD_Y)
    with pytest.raises(ValueError, match="z"):
        model.log_joint(jnp.zeros(3))


@pytest.mark.parametrize("kwargs, name", [
    (dict(prior_scale=-1.0), "prior_scale"),
    (dict(prior_scale=0.0), "prior_scale"),
    (dict(intercept="yes"), "intercept"),
    (dict(intercept=1), "intercept"),
])
def test_loader_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        load_breast_cancer(**kwargs)
