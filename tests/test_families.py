"""Tests of vijax.families: densities against SciPy, entropies and KLs against their closed
forms and Monte Carlo, the noise form of log q, batch shapes, the parameterisations, bad input.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vijax.families import FullRankGaussian, FullRankParams, GaussianParams, MeanFieldGaussian

KEY = jax.random.key(0)
MF = MeanFieldGaussian()
FR = FullRankGaussian()
LOC = jnp.array([0.5, -1.0, 2.0])
SCALE = jnp.array([0.3, 1.2, 2.0])
TRIL = jnp.array([[0.8, 0.0, 0.0], [0.4, 1.1, 0.0], [-0.3, 0.2, 0.5]])


def test_mean_field_log_prob_entropy_kl_against_scipy():
    q = MF.init(LOC, SCALE)
    z = MF.sample(KEY, q, 5)
    assert z.shape == (5, 3)
    want = stats.norm(np.asarray(LOC), np.asarray(SCALE)).logpdf(np.asarray(z)).sum(-1)
    np.testing.assert_allclose(MF.log_prob(q, z), want, rtol=1e-5)
    z2, lq = MF.sample_and_log_prob(KEY, q, 5)
    np.testing.assert_array_equal(z2, z)
    np.testing.assert_allclose(lq, want, rtol=1e-5)
    np.testing.assert_allclose(MF.entropy(q), stats.norm(0, np.asarray(SCALE)).entropy().sum(),
                               rtol=1e-6)
    kl = 0.5 * np.sum(SCALE**2 + LOC**2 - 1 - np.log(SCALE**2))
    np.testing.assert_allclose(MF.kl_to_standard_normal(q), kl, rtol=1e-6)


def test_full_rank_log_prob_entropy_kl_against_scipy():
    q = FR.init(LOC, TRIL)
    np.testing.assert_allclose(FR.scale_tril(q), TRIL, rtol=1e-6)
    cov = np.asarray(TRIL @ TRIL.T, np.float64)
    dist = stats.multivariate_normal(np.asarray(LOC), cov)
    z = FR.sample(KEY, q, 7)
    np.testing.assert_allclose(FR.log_prob(q, z), dist.logpdf(np.asarray(z)), rtol=1e-5)
    np.testing.assert_allclose(FR.sample_and_log_prob(KEY, q, 7)[1], dist.logpdf(np.asarray(z)),
                               rtol=1e-5)
    np.testing.assert_allclose(FR.entropy(q), dist.entropy(), rtol=1e-6)
    kl = 0.5 * (np.trace(cov) + np.sum(np.asarray(LOC) ** 2) - 3 - np.log(np.linalg.det(cov)))
    np.testing.assert_allclose(FR.kl_to_standard_normal(q), kl, rtol=1e-5)
    # the sample covariance of many draws is L L^T
    many = np.asarray(FR.sample(KEY, q, 200_000), np.float64)
    np.testing.assert_allclose(np.cov(many, rowvar=False), cov, atol=0.03)


def test_full_rank_with_diagonal_factor_is_the_mean_field_family():
    mf, fr = MF.init(LOC, SCALE), FR.init(LOC, jnp.diag(SCALE))
    np.testing.assert_allclose(FR.sample(KEY, fr, 4), MF.sample(KEY, mf, 4), rtol=1e-6)
    z = MF.sample(KEY, mf, 4)
    for f, p in ((MF, mf), (FR, fr)):
        assert f.batch_shape(p) == () and f.event_shape(p) == (3,)
    np.testing.assert_allclose(FR.log_prob(fr, z), MF.log_prob(mf, z), rtol=1e-5)
    np.testing.assert_allclose(FR.kl_to_standard_normal(fr), MF.kl_to_standard_normal(mf),
                               rtol=1e-5)


@pytest.mark.parametrize("family,params", [
    (MF, MF.init(LOC, SCALE)), (FR, FR.init(LOC, TRIL))])
def test_noise_form_of_log_q_has_the_same_total_derivative(family, params):
    """log q(t(eps, phi); phi) = log N(eps) - log|det dt/deps|: same value and gradient."""

    def direct(p):
        return jnp.sum(family.log_prob(p, family.sample(KEY, p, 3)))

    def noise(p):
        return jnp.sum(family.sample_and_log_prob(KEY, p, 3)[1])

    np.testing.assert_allclose(direct(params), noise(params), rtol=1e-5)
    g1, g2 = jax.grad(direct)(params), jax.grad(noise)(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_entropy_and_kl_match_monte_carlo():
    n = 200_000
    for family, q in ((MF, MF.init(LOC, SCALE)), (FR, FR.init(LOC, TRIL))):
        z, lq = family.sample_and_log_prob(KEY, q, n)
        lq = np.asarray(lq, np.float64)
        se = lq.std() / np.sqrt(n)
        assert abs(-lq.mean() - float(family.entropy(q))) < 5 * se
        log_prior = np.asarray(stats.norm.logpdf(np.asarray(z, np.float64)).sum(-1))
        kl = lq - log_prior
        assert abs(kl.mean() - float(family.kl_to_standard_normal(q))) < 5 * kl.std() / np.sqrt(n)


def test_batched_families_have_one_factor_per_row():
    locs = jnp.stack([LOC, -LOC])
    mf = MF.init(locs, jnp.stack([SCALE, 2 * SCALE]))
    fr = FR.init(locs, jnp.stack([TRIL, 2 * TRIL]))
    for family, q in ((MF, mf), (FR, fr)):
        assert family.batch_shape(q) == (2,) and family.event_shape(q) == (3,)
        z = family.sample(KEY, q, 4)
        assert z.shape == (4, 2, 3)
        assert family.log_prob(q, z).shape == (4, 2)
        assert family.entropy(q).shape == (2,) and family.kl_to_standard_normal(q).shape == (2,)
        one = jax.tree.map(lambda x: x[1], q)
        np.testing.assert_allclose(family.log_prob(q, z)[:, 1], family.log_prob(one, z[:, 1]),
                                   rtol=1e-5)
    # a second event axis for the mean-field family (an image-shaped latent)
    mf2 = MeanFieldGaussian(event_ndim=2)
    q = mf2.init(jnp.zeros((5, 2, 3)))
    assert mf2.batch_shape(q) == (5,) and mf2.log_prob(q, mf2.sample(KEY, q)).shape == (5,)


@pytest.mark.parametrize("call,match", [
    (lambda: MF.check(GaussianParams(jnp.zeros(3), jnp.zeros(2))), r"params.log_scale must"),
    (lambda: MF.check(GaussianParams(jnp.zeros(3, jnp.int32), jnp.zeros(3, jnp.int32))),
     r"params.loc must hold floating-point"),
    (lambda: MF.check(GaussianParams(jnp.array([0.0, jnp.nan]), jnp.zeros(2))),
     r"params.loc must be finite"),
    (lambda: MF.check({"loc": 0}), r"params must be GaussianParams"),
    (lambda: MeanFieldGaussian(event_ndim=2).check(GaussianParams(jnp.zeros(3), jnp.zeros(3))),
     r"at least event_ndim = 2"),
    (lambda: MeanFieldGaussian(event_ndim=-1), r"event_ndim must be >= 0"),
    (lambda: MF.init([0.0, 1.0], [1.0, -1.0]), r"scale must be > 0"),
    (lambda: MF.init([0.0, 1.0], [1.0, 1.0, 1.0]), r"scale must broadcast"),
    (lambda: FR.check(FullRankParams(jnp.zeros(3), jnp.zeros((3, 2)))), r"tril_raw must have"),
    (lambda: FR.check(GaussianParams(jnp.zeros(3), jnp.zeros(3)) + (1,)),
     r"params must be FullRankParams"),
    (lambda: FR.init(jnp.zeros(2), jnp.array([[1.0, 0.0], [0.5, -1.0]])), r"positive diagonal"),
    (lambda: FR.init(jnp.zeros(2), jnp.array([[1.0, 0.3], [0.5, 1.0]])), r"lower triangular"),
    (lambda: FR.init(0.0), r"loc must have an event axis"),
    (lambda: MF.sample(jax.random.split(KEY, 2), MF.init(LOC)), r"key must be a single"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_init_accepts_lists_and_follows_x64():
    q = MF.init([0.0, 1.0], 2.0)
    np.testing.assert_allclose(q.log_scale, np.log(2.0))
    with jax.enable_x64(True):
        assert FR.init(np.zeros(2)).loc.dtype == jnp.float64
        assert MF.sample(KEY, MF.init(np.zeros(2))).dtype == jnp.float64
