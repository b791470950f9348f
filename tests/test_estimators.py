"""Tests of vijax.estimators: unbiasedness against the exact conjugate gradient, STL's zero
variance at the posterior, the closed-form variances and their crossover, the family, bad input.

Monte-Carlo thresholds are 5 estimated standard errors; keys are fixed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vijax import estimators as E

KEY = jax.random.key(7)
FAMILY = E.MeanFieldGaussian()
MODEL = E.simulate_conjugate_gaussian(jax.random.key(1), num_data=10, dim=3, prior_loc=0.5,
                                      prior_scale=2.0, noise_scale=1.5)
POST = MODEL.posterior()
# a q away from the posterior: shifted mean, wider scale
Q = E.GaussianParams(POST.loc + jnp.array([0.6, -0.3, 0.1]), POST.log_scale + 0.4)
N = 20_000

# one compiled per-sample estimator per name, shared by the tests
PER_SAMPLE = {name: E.gradient_estimator(MODEL.log_joint, FAMILY, estimator=name,
                                         num_samples=N, per_sample=True)
              for name in ("score", "reparam", "stl")}


def flat(tree):
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0], dtype=np.float64)


# ----------------------------------------------------------------------------- conjugate model


def test_conjugate_model_closed_forms():
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
    direct = (stats.norm(0.5, 2.0).logpdf(z).sum() + stats.norm(z, 1.5).logpdf(x).sum())
    np.testing.assert_allclose(float(MODEL.log_joint(jnp.asarray(z, jnp.float32))), direct,
                               rtol=1e-5)
    np.testing.assert_allclose(float(MODEL.kl_to_posterior(Q)),
                               float(MODEL.log_evidence() - MODEL.elbo(Q)), rtol=1e-3)
    assert float(MODEL.kl_to_posterior(Q)) > 0
    # the Monte-Carlo ELBO agrees with the exact one (jitted and not)
    z = FAMILY.sample(KEY, Q, N)
    vals = np.asarray(jax.vmap(MODEL.log_joint)(z) - FAMILY.log_prob(Q, z), dtype=np.float64)
    se = vals.std(ddof=1) / np.sqrt(N)
    assert abs(vals.mean() - float(MODEL.elbo(Q))) < 5 * se
    mc = E.elbo(KEY, Q, MODEL.log_joint, FAMILY, num_samples=N)
    mc_jit = jax.jit(lambda k, p: E.elbo(k, p, MODEL.log_joint, FAMILY, num_samples=N))(KEY, Q)
    np.testing.assert_allclose(float(mc), float(mc_jit), rtol=1e-5)
    assert abs(float(mc) - float(MODEL.elbo(Q))) < 5 * se


# ----------------------------------------------------------------------------- estimators


@pytest.mark.parametrize("name", ["score", "reparam", "stl"])
def test_estimators_unbiased_for_exact_gradient(name):
    g = PER_SAMPLE[name](KEY, Q)
    mom = E.gradient_moments(g)
    err = np.abs(flat(mom.mean) - flat(MODEL.elbo_grad(Q)))
    assert np.all(err < 5 * flat(mom.standard_error) + 1e-4), (err, flat(mom.standard_error))
    # the mean-gradient path (not jitted, per_sample=False) is the mean of the per-sample one
    mean = E.elbo_grad(KEY, Q, MODEL.log_joint, FAMILY, estimator=name, num_samples=N)
    np.testing.assert_allclose(flat(mean), flat(mom.mean), rtol=1e-4, atol=1e-4)


def test_estimator_aliases_and_identity_total_equals_path_minus_score():
    def per_sample(name):  # the same compiled function as PER_SAMPLE[name] (shared cache)
        return E.elbo_grad(KEY, Q, MODEL.log_joint, FAMILY, estimator=name, num_samples=N,
                           per_sample=True)

    g_total, g_path = per_sample("total"), per_sample("path")
    np.testing.assert_array_equal(flat(g_total), flat(per_sample("reparam")))
    np.testing.assert_array_equal(flat(g_path), flat(per_sample("stl")))
    np.testing.assert_array_equal(flat(per_sample("reinforce")), flat(per_sample("score")))
    # same split keys -> same samples: total = path - grad log q, sample by sample
    scores = E.score(KEY, Q, FAMILY, N)
    np.testing.assert_allclose(flat(g_total), flat(g_path) - flat(scores), rtol=1e-4, atol=1e-4)
    assert np.abs(flat(scores)).max() > 0.1


def test_stl_variance_is_zero_at_the_posterior_and_total_is_not():
    stl = E.gradient_moments(PER_SAMPLE["stl"](KEY, POST)).variance_trace
    total = E.gradient_moments(PER_SAMPLE["reparam"](KEY, POST)).variance_trace
    exact_total = MODEL.gradient_variance(POST, "reparam")
    assert float(MODEL.gradient_variance(POST, "stl")) == 0.0
    # float32 rounding: (1000 * eps)^2 relative to the total derivative's variance
    assert float(stl) < (1000 * np.finfo(np.float32).eps) ** 2 * float(total), (stl, total)
    assert float(total) > 0.5 * float(exact_total) > 0


def test_stl_variance_at_the_posterior_scales_with_precision():
    """In float64 the STL residual at the posterior shrinks by ~eps64^2 / eps32^2."""
    with jax.enable_x64(True):
        model = E.conjugate_gaussian(np.asarray(MODEL.x, np.float64), 0.5, 2.0, 1.5)
        post = model.posterior()
        g = E.elbo_grad(jax.random.key(3), post, model.log_joint, FAMILY, estimator="stl",
                        num_samples=512, per_sample=True)
        assert post.loc.dtype == jnp.float64
        stl = float(E.gradient_moments(g).variance_trace)
        assert stl < (1000 * np.finfo(np.float64).eps) ** 2 * float(
            model.gradient_variance(post, "reparam"))


@pytest.mark.parametrize("log_scale_offset", [np.log(0.3), 0.4])
def test_closed_form_variances_and_their_crossover(log_scale_offset):
    """MC total variance matches the closed form; the total derivative wins iff s^2 < sigma^2/2."""
    q = E.GaussianParams(Q.loc, POST.log_scale + log_scale_offset)
    traces = {}
    for name in ("reparam", "stl"):
        g = E.flatten_gradients(PER_SAMPLE[name](KEY, q))
        dev2 = np.asarray(jnp.sum((g - g.mean(0)) ** 2, axis=1), dtype=np.float64)
        se = dev2.std(ddof=1) / np.sqrt(N)
        exact = float(MODEL.gradient_variance(q, name))
        assert abs(dev2.mean() - exact) < 5 * se, (name, dev2.mean(), exact, se)
        traces[name] = exact
    r = np.exp(2 * log_scale_offset)  # s^2 / sigma^2
    assert (traces["reparam"] < traces["stl"]) == (r < 0.5)


def test_score_has_mean_zero():
    s = E.score(KEY, Q, FAMILY, N)
    mom = E.gradient_moments(s)
    assert np.all(np.abs(flat(mom.mean)) < 5 * flat(mom.standard_error))
    assert jax.tree.leaves(s)[0].shape == (N, 3)


def test_gradient_moments_reductions():
    g = PER_SAMPLE["reparam"](KEY, Q)
    mom = E.gradient_moments(g)
    f = np.asarray(E.flatten_gradients(g), dtype=np.float64)
    assert f.shape == (N, 6)
    cov = np.asarray(E.gradient_covariance(g))
    np.testing.assert_allclose(float(mom.variance_trace), np.trace(cov), rtol=1e-4)
    np.testing.assert_allclose(np.trace(cov), f.var(axis=0, ddof=1).sum(), rtol=1e-3)
    np.testing.assert_allclose(flat(mom.snr), np.abs(f.mean(0)) / f.std(0, ddof=1), rtol=1e-3)
    assert mom.num_samples == N


# ----------------------------------------------------------------------------- family


def test_mean_field_gaussian_family():
    fam = E.MeanFieldGaussian()
    params = fam.init(jnp.array([[0.0, 1.0], [2.0, -1.0]]), jnp.array([0.5, 2.0]))  # batch 2
    z = fam.sample(KEY, params, (5000,))
    assert z.shape == (5000, 2, 2)
    lp = fam.log_prob(params, z)
    assert lp.shape == (5000, 2)
    loc, scale = np.asarray(params.loc), np.exp(np.asarray(params.log_scale))
    expected = stats.norm(loc, scale).logpdf(np.asarray(z)).sum(-1)
    np.testing.assert_allclose(np.asarray(lp), expected, rtol=1e-5, atol=1e-5)
    for b in range(2):
        for d in range(2):
            assert stats.kstest(np.asarray(z[:, b, d]), stats.norm(loc[b, d], scale[b, d]).cdf
                                ).pvalue > 1e-4
    np.testing.assert_allclose(np.asarray(fam.entropy(params)),
                               stats.norm(loc, scale).entropy().sum(-1), rtol=1e-5)
    kl = np.sum(np.log(1 / scale) + (scale**2 + loc**2) / 2 - 0.5, axis=-1)
    np.testing.assert_allclose(np.asarray(fam.kl_to_standard_normal(params)), kl, rtol=1e-5)
    # jitted with the family as a static argument
    f = jax.jit(lambda k, p: fam.sample_and_log_prob(k, p, 3))
    zz, ll = f(KEY, params)
    np.testing.assert_allclose(np.asarray(ll), np.asarray(fam.log_prob(params, zz)), rtol=1e-6)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_value_error():
    lj = MODEL.log_joint
    cases = [
        (lambda: E.elbo_grad(KEY, Q, lj, FAMILY, estimator="bogus"), "estimator"),
        (lambda: E.gradient_estimator(lj, FAMILY, estimator="reparm"), "estimator"),
        (lambda: E.elbo_grad(KEY, Q, lj, FAMILY, num_samples=0), "num_samples"),
        (lambda: E.elbo(KEY, Q, lj, FAMILY, num_samples=-3), "num_samples"),
        (lambda: E.elbo_grad(KEY, Q, lambda z: z, FAMILY), "scalar"),
        (lambda: E.elbo_grad(KEY, Q, "not callable", FAMILY), "log_joint"),
        (lambda: E.elbo_grad(KEY, Q, lj, object()), "family"),
        (lambda: E.elbo_grad(jnp.zeros(5), Q, lj, FAMILY), "key"),
        (lambda: FAMILY.sample(KEY, E.GaussianParams(jnp.zeros(3), jnp.zeros(2))),
         "log_scale"),
        (lambda: FAMILY.sample(KEY, Q, 0), "sample_shape"),
        (lambda: FAMILY.log_prob(Q, jnp.zeros(4)), "z"),
        (lambda: FAMILY.init(jnp.zeros(3), -1.0), "scale"),
        (lambda: FAMILY.init(jnp.zeros(3), jnp.ones(4)), "scale"),
        (lambda: E.MeanFieldGaussian(event_ndim=-1), "event_ndim"),
        (lambda: E.gradient_moments(jax.tree.map(lambda x: x[:1], PER_SAMPLE["stl"](KEY, Q))),
         "2 samples"),
        (lambda: MODEL.gradient_variance(Q, "score"), "estimator"),
        (lambda: E.conjugate_gaussian(jnp.zeros(3)), "x"),
        (lambda: E.conjugate_gaussian(jnp.zeros((4, 3)), prior_loc=jnp.zeros(2)), "prior_loc"),
        (lambda: E.conjugate_gaussian(jnp.zeros((4, 3)), prior_scale=0.0), "prior_scale"),
        (lambda: E.conjugate_gaussian(jnp.zeros((4, 3)), noise_scale=-1.0), "noise_scale"),
        (lambda: E.simulate_conjugate_gaussian(KEY, 0, 3), "num_data"),
    ]
    for fn, word in cases:
        with pytest.raises(ValueError, match=word):
            fn()
    # shape errors still raise under jit
    with pytest.raises(ValueError, match="log_scale"):
        jax.jit(lambda p: FAMILY.sample(KEY, p))(E.GaussianParams(jnp.zeros(3), jnp.zeros(2)))


# ----------------------------------------------------------------------------- review fixes

SMALL = E.conjugate_gaussian(np.ones((5, 2)))


def test_concrete_params_and_log_joint_shapes_are_checked_before_tracing():
    nan_params = E.GaussianParams(jnp.array([np.nan, 0.0]), jnp.zeros(2))
    lj = SMALL.log_joint
    grad_fn = E.gradient_estimator(lj, FAMILY)
    for fn in (lambda p: E.elbo_grad(KEY, p, lj, FAMILY), lambda p: E.elbo(KEY, p, lj, FAMILY),
               lambda p: grad_fn(KEY, p)):
        with pytest.raises(ValueError, match="params.loc must be finite"):
            fn(nan_params)
        # a 3-d q for a 2-d model: a clear error naming log_joint, params and the shapes
        with pytest.raises(ValueError, match=r"log_joint failed on a latent z of shape \(3,\)"
                                             r".*params"):
            fn(FAMILY.init(np.zeros(3)))
    with pytest.raises(ValueError, match="family"):
        E.gradient_estimator(lj, object())  # at construction, not at the first call


_TRACES = []


def _counting_log_joint(z):
    _TRACES.append(1)  # runs at trace time only once elbo_grad is jitted and cached
    return -0.5 * jnp.sum(z * z)


def test_elbo_grad_is_jitted_and_cached():
    p1, p2 = FAMILY.init(np.zeros(2)), FAMILY.init(np.array([1.0, -1.0]), 0.5)
    g1 = E.elbo_grad(KEY, p1, _counting_log_joint, FAMILY, num_samples=4)
    traces = len(_TRACES)
    g2 = E.elbo_grad(jax.random.key(9), p2, _counting_log_joint, FAMILY, num_samples=4)
    assert len(_TRACES) == traces > 0  # second call: no retrace, no op-by-op evaluation
    # d/dloc [-z^2/2 - log q(z)] at z = loc + scale * eps is -z (log q(z) does not depend on
    # loc along the path), so the mean loc gradient is -mean(z) over the same split keys
    z = jax.vmap(lambda k: FAMILY.sample(k, p2))(jax.random.split(jax.random.key(9), 4))
    np.testing.assert_allclose(np.asarray(g2.loc), -np.asarray(z).mean(0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(g1.loc), np.asarray(g2.loc))


def test_init_accepts_lists():
    p = FAMILY.init([0.0, 1.0], [1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(p.loc), [0.0, 1.0])
    np.testing.assert_allclose(np.asarray(p.log_scale), [0.0, np.log(2.0)], rtol=1e-6)
    assert jnp.issubdtype(FAMILY.init([0, 1]).loc.dtype, jnp.floating)


def test_simulate_checks_prior_loc_before_using_it():
    for prior_loc, word in ((np.zeros(3), r"prior_loc must be a scalar or have shape \(2,\)"),
                            (np.nan, "prior_loc must be finite")):
        with pytest.raises(ValueError, match=word):
            E.simulate_conjugate_gaussian(KEY, 4, 2, prior_loc=prior_loc)


def test_samplers_and_elbo_grad_follow_the_x64_setting():
    from vijax import samplers as S

    def dtypes():
        fam_p = FAMILY.init(np.zeros(2))
        model = E.conjugate_gaussian(np.ones((3, 2)))
        g = E.elbo_grad(KEY, fam_p, model.log_joint, FAMILY, num_samples=2)
        floats = [S.normal(KEY, 0.0, 1.0, 2), S.exponential(KEY, 1.0, 2), S.gumbel(KEY),
                  S.gumbel_softmax(KEY, 0.5, logits=np.zeros(3)), FAMILY.sample(KEY, fam_p),
                  *jax.tree.leaves(g)]
        return {x.dtype for x in floats}, S.categorical(KEY, logits=np.zeros(3)).dtype

    assert dtypes() == ({jnp.dtype(jnp.float32)}, jnp.dtype(jnp.int32))
    with jax.enable_x64(True):
        assert dtypes() == ({jnp.dtype(jnp.float64)}, jnp.dtype(jnp.int64))
