"""Tests of vijax.diagnostics: reductions against NumPy, groups, chunking, scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vijax import diagnostics as D
from vijax.families import GaussianParams, MeanFieldGaussian

KEY = jax.random.key(0)
MF = MeanFieldGaussian()
Q = GaussianParams(jnp.array([0.5, -1.0, 2.0]), jnp.array([0.1, -0.2, 0.3]))


def _grad(key, p):  # a toy gradient function: loc-dependent noise
    return jax.tree.map(lambda x: x + jax.random.normal(key, x.shape), p)


def test_moments_match_numpy_and_groups_split_the_trace():
    g = D.gradient_samples(KEY, _grad, Q, 5000)
    f = np.asarray(D.flatten_gradients(g), np.float64)
    assert f.shape == (5000, 6)
    m = D.gradient_moments(g)
    np.testing.assert_allclose(float(m.variance_trace), f.var(0, ddof=1).sum(), rtol=1e-4)
    cov = np.asarray(D.gradient_covariance(g))
    np.testing.assert_allclose(np.trace(cov), f.var(0, ddof=1).sum(), rtol=1e-3)
    snr = np.abs(f.mean(0)) / f.std(0, ddof=1)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(m.snr)[0], snr, rtol=1e-3)
    np.testing.assert_allclose(float(m.mean_snr), snr.mean(), rtol=1e-3)
    assert set(m.group_variance) == {"loc", "log_scale"}
    np.testing.assert_allclose(sum(float(v) for v in m.group_variance.values()),
                               float(m.variance_trace), rtol=1e-5)
    np.testing.assert_allclose(float(m.group_snr["loc"]), snr[:3].mean(), rtol=1e-3)
    assert m.num_samples == 5000


def test_nested_groups_and_chunking():
    params = {"encoder": {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}, "decoder": {"w": jnp.ones(3)}}
    full = D.gradient_samples(KEY, _grad, params, 64)
    chunked = D.gradient_samples(KEY, _grad, params, 64, chunk_size=16)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(chunked), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert set(D.gradient_moments(full).group_variance) == {"encoder", "decoder"}
    assert set(D.gradient_moments(full, group_depth=2).group_variance) == {
        "encoder/w", "encoder/b", "decoder/w"}


def test_scores_have_mean_zero():
    s = D.scores(KEY, Q, MF, 20_000)
    m = D.gradient_moments(s)
    mean = np.asarray(jax.flatten_util.ravel_pytree(m.mean)[0])
    se = np.asarray(jax.flatten_util.ravel_pytree(m.standard_error)[0])
    assert np.all(np.abs(mean) < 5 * se)
    assert float(m.variance_trace) > 1.0


def test_snr_of_a_constant_gradient():
    g = D.gradient_samples(KEY, lambda k, p: p, Q, 4)
    m = D.gradient_moments(g)
    assert np.all(np.isinf(np.asarray(m.snr.loc)))  # mean 0.5, std 0
    assert float(m.variance_trace) == 0.0


@pytest.mark.parametrize("call,match", [
    (lambda: D.gradient_samples(KEY, "grad", Q, 4), "grad_fn must be a callable"),
    (lambda: D.gradient_samples(KEY, _grad, Q, 0), "num_samples must be >= 1"),
    (lambda: D.gradient_samples(KEY, _grad, Q, 4, chunk_size=0), "chunk_size must be >= 1"),
    (lambda: D.gradient_samples(jax.random.split(KEY), _grad, Q, 4), "key must be a single"),
    (lambda: D.gradient_moments(D.gradient_samples(KEY, _grad, Q, 1)), "at least 2 samples"),
    (lambda: D.flatten_gradients({}), "at least one array"),
    (lambda: D.flatten_gradients({"a": jnp.ones((3, 2)), "b": jnp.ones((4,))}),
     "same leading"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("key", [jax.random.key(7), jax.random.PRNGKey(7)])
def test_gradient_samples_use_jax_split_keys(key):
    """Replicate s sees jax.random.split(key, n)[s] (the split is computed fused for Threefry
    keys): the same gradients as a loop over those keys. (XLA's RngBitGenerator, the "rbg"
    keys, does not promise the same bits under jit and vmap as eagerly.)"""
    got = D.gradient_samples(key, _grad, Q, 4)
    keys = jax.random.split(key, 4)
    want = [_grad(keys[s], Q) for s in range(4)]
    for s in range(4):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want[s]), strict=True):
            np.testing.assert_allclose(a[s], b, rtol=1e-6)
