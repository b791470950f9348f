"""Mathematical properties of the CAVI updates, the ELBO and the fitting driver."""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from conftest import assert_refused, bad_case_ids, no_compilation
from jax.scipy import stats
from sklearn.metrics import adjusted_rand_score

from vijax import cavi
from vijax.cavi import _numerics, _validate, model
from vijax.cavi.fit import _fit, _init

PRIOR = cavi.Prior(tau=0.5, alpha=2.0, beta=0.2, nu=(1.0, -1.0), rho=0.1)
LEARNED = PRIOR._replace(concentration=1.5)
MEANS = np.array([[0.0, 0.0], [12.0, 0.0], [0.0, 12.0], [12.0, 12.0]])
RATES = np.array([4.0, 15.0, 40.0, 90.0])


def random_params(key, n, k, learned, dtype=jnp.float64):
    """Arbitrary valid variational parameters, not at any optimum."""
    ks = jax.random.split(key, 6)
    r = jax.nn.softmax(jax.random.normal(ks[0], (n, k), dtype), axis=-1)
    g = jnp.exp(jax.random.normal(ks[5], (k,), dtype)) + 0.5 if learned else None
    return model.Params(
        responsibilities=r,
        gamma_shape=jnp.exp(jax.random.normal(ks[1], (k,), dtype)) + 1.0,
        gamma_rate=jnp.exp(jax.random.normal(ks[2], (k,), dtype)) * 0.1 + 0.05,
        mean=3.0 * jax.random.normal(ks[3], (k, 2), dtype),
        precision=jnp.exp(jax.random.normal(ks[4], (k,), dtype)) + 0.1,
        concentration=g,
    )


def small_problem(seed, n, k, learned):
    data, _ = cavi.simulate(jax.random.key(seed), LEARNED if learned else PRIOR, k, n)
    prior = cavi.as_prior(LEARNED if learned else PRIOR, k)
    params = random_params(jax.random.key(seed + 100), n, k, learned)
    return cavi.as_observations(data), prior, params


# ------------------------------------------------------------------ each update is argmax


@pytest.mark.parametrize("learned", [False, True])
def test_each_block_update_zeroes_the_elbo_gradient_in_that_block(learned):
    with jax.enable_x64(True):
        data, prior, params = small_problem(0, 40, 3, learned)
        # One gradient in every parameter, compiled once and evaluated after each update.
        grad = jax.jit(jax.grad(model.elbo, argnums=2))

        def largest(g, block):
            return max(float(np.max(np.abs(getattr(g, field)))) for field in block)

        # q(Z): on the simplex the gradient in r_n must be the same for every k (Lagrange).
        g = grad(data, prior, model.update_assignments(data, prior, params))
        g_r = np.asarray(g.responsibilities)
        assert np.max(np.abs(g_r - g_r.mean(axis=1, keepdims=True))) < 1e-8
        g = grad(data, prior, model.update_rates(data, prior, params))
        assert largest(g, ("gamma_shape", "gamma_rate")) < 1e-8
        g = grad(data, prior, model.update_locations(data, prior, params))
        assert largest(g, ("mean", "precision")) < 1e-8
        if learned:
            g = grad(data, prior, model.update_weights(data, prior, params))
            assert largest(g, ("concentration",)) < 1e-8

        # The gradients are not zero before the updates: the check can fail.
        g = grad(data, prior, params)
        g_r = np.asarray(g.responsibilities)
        assert np.max(np.abs(g_r - g_r.mean(axis=1, keepdims=True))) > 1e-3
        assert min(largest(g, ("gamma_shape",)), largest(g, ("mean",))) > 1e-3


# -------------------------------------------------------------- the ELBO never decreases


def _block_trajectory(data, prior, params, num_sweeps):
    """The ELBO after every single block update, over ``num_sweeps`` sweeps."""
    blocks = [model.update_rates, model.update_locations, model.update_weights,
              model.update_assignments]

    def one_sweep(params, _):
        states = []
        for update in blocks:
            params = update(data, prior, params)
            states.append(params)
        # One vmapped ELBO over the four states: a quarter of the code to compile.
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
        return params, jax.vmap(lambda p: model.elbo(data, prior, p))(stacked)

    _, values = jax.lax.scan(one_sweep, params, None, length=num_sweeps)
    return values.ravel()


@pytest.mark.parametrize(("seed", "n", "k", "learned"),
                         [(0, 60, 3, False), (1, 60, 3, True), (2, 25, 6, False),
                          (3, 25, 6, True), (4, 5, 5, False)])
def test_elbo_never_decreases_after_any_block_update(seed, n, k, learned):
    with jax.enable_x64(True):
        data, prior, params = small_problem(seed, n, k, learned)
        values = np.asarray(jax.jit(_block_trajectory, static_argnums=3)(
            data, prior, params, 40))
        steps = np.diff(np.concatenate([[float(model.elbo(data, prior, params))], values]))
        assert np.all(np.isfinite(values))
        assert steps.min() >= -1e-9 * np.abs(values).max(), steps.min()
        assert values[-1] - values[0] > 0  # it did move


def test_fit_history_is_monotone_and_matches_the_exact_elbo():
    with jax.enable_x64(True):
        data, _ = cavi.sample_events(jax.random.key(3), MEANS, RATES, np.full(4, 0.25), 0.5, 300)
        res = cavi.fit(jax.random.key(4), data, LEARNED, 4, num_restarts=3, max_iter=60,
                       tol=1e-10)
        for hist, t in zip(np.asarray(res.elbo_history), np.asarray(res.num_iters), strict=True):
            h = hist[: t + 1]
            assert np.all(np.isfinite(h)) and np.all(np.isnan(hist[t + 1:]))
            assert np.diff(h).min() >= -1e-9 * np.abs(h).max()
        exact = model.elbo(cavi.as_observations(data), cavi.as_prior(LEARNED, 4), res.params)
        np.testing.assert_allclose(res.elbo, exact, rtol=1e-12)
        assert res.elbo == res.restart_elbos.max()


def test_fit_follows_init_then_sweep():
    """The fit's loop carries only the global factors; its states must be those of the
    public ``init`` followed by ``sweep``."""
    with jax.enable_x64(True):
        data, _ = cavi.sample_events(jax.random.key(3), MEANS, RATES, np.full(4, 0.25), 0.5, 120)
        obs, prior = cavi.as_observations(data), cavi.as_prior(LEARNED, 4)
        res = cavi.fit(jax.random.key(4), data, LEARNED, 4, max_iter=15, tol=0.0)
        params, value = cavi.init(jax.random.key(4), obs, prior, 4)
        values = [value]
        for _ in range(15):
            params, value = cavi.sweep(obs, prior, params)
            values.append(value)
        np.testing.assert_allclose(res.elbo_history[0], values, rtol=1e-10)
        np.testing.assert_allclose(res.params.responsibilities, params.responsibilities,
                                   atol=1e-10)
        np.testing.assert_allclose(res.params.mean, params.mean, rtol=1e-10)


# ------------------------------------------------------------- ELBO against Monte Carlo


def _log_joint_minus_log_q(key, data, prior, params):
    """One draw of ``log p(X, S, Z, lam, mu, pi) - log q(Z, lam, mu, pi)`` from ``q``,
    written with jax.scipy.stats densities, independently of the model code."""
    k_z, k_lam, k_mu, k_pi = jax.random.split(key, 4)
    r, a, b, m, s = (params.responsibilities, params.gamma_shape, params.gamma_rate, params.mean,
                     params.precision)
    x, counts = data.locations, data.strengths
    z = jax.random.categorical(k_z, jnp.log(r), axis=-1)
    lam = jax.random.gamma(k_lam, a, dtype=a.dtype) / b
    mu = m + jax.random.normal(k_mu, m.shape, m.dtype) / jnp.sqrt(s)[:, None]
    sd = lambda precision: 1.0 / jnp.sqrt(precision)  # noqa: E731
    log_p = (jnp.sum(stats.norm.logpdf(mu, prior.nu, sd(prior.rho)))
             + jnp.sum(stats.gamma.logpdf(lam, prior.alpha, scale=1.0 / prior.beta))
             + jnp.sum(stats.norm.logpdf(x, mu[z], sd(prior.tau)))
             + jnp.sum(stats.poisson.logpmf(counts, lam[z])))
    log_q = (jnp.sum(jnp.log(r[jnp.arange(r.shape[0]), z]))
             + jnp.sum(stats.gamma.logpdf(lam, a, scale=1.0 / b))
             + jnp.sum(stats.norm.logpdf(mu, m, sd(s)[:, None])))
    if params.concentration is None:
        k = r.shape[1]
        log_pi = jnp.log(prior.pi) if prior.pi is not None else jnp.full((k,), -jnp.log(k))
        log_p += jnp.sum(log_pi[z])
    else:
        pi = jax.random.dirichlet(k_pi, params.concentration)
        log_p += stats.dirichlet.logpdf(pi, prior.concentration) + jnp.sum(jnp.log(pi)[z])
        log_q += stats.dirichlet.logpdf(pi, params.concentration)
    return log_p - log_q


@pytest.mark.parametrize("weights", ["fixed", "uniform", "learned"])
def test_elbo_matches_a_monte_carlo_estimate(weights):
    with jax.enable_x64(True):
        data, prior, params = small_problem(7, 30, 3, weights == "learned")
        if weights == "fixed":
            prior = prior._replace(pi=jnp.array([0.2, 0.3, 0.5]))
        draws = jax.jit(jax.vmap(_log_joint_minus_log_q, in_axes=(0, None, None, None)))(
            jax.random.split(jax.random.key(8), 20_000), data, prior, params)
        mean, se = float(draws.mean()), float(draws.std() / np.sqrt(draws.size))
        exact = float(model.elbo(data, prior, params))
        assert abs(mean - exact) < 5 * se, (mean, exact, se)
        assert se < 0.02 * abs(exact)  # the estimate is sharp enough to catch a wrong constant


# ------------------------------------------------------------------------------ recovery


WEIGHTS = np.array([0.1, 0.2, 0.3, 0.4])


@pytest.fixture(scope="module")
def recovered():
    """A fit of well-separated simulated clusters, shared by the tests that need one."""
    data, labels = cavi.sample_events(jax.random.key(11), MEANS, RATES, WEIGHTS, 0.5, 2000)
    res = cavi.fit(jax.random.key(12), data, LEARNED, 4, num_restarts=8, max_iter=200)
    return data, labels, res


def test_well_separated_clusters_are_recovered(recovered):
    data, labels, res = recovered
    weights = WEIGHTS
    assert bool(res.converged[res.best_restart])
    found = np.asarray(res.params.responsibilities).argmax(1)
    assert adjusted_rand_score(np.asarray(labels), found) >= 0.95
    # Match clusters by their centres, then compare rates and weights.
    order = np.argmin(((MEANS[:, None] - np.asarray(res.params.mean)[None]) ** 2).sum(-1), 1)
    assert sorted(order) == [0, 1, 2, 3]
    rates = np.asarray(res.params.gamma_shape / res.params.gamma_rate)[order]
    counts = np.bincount(np.asarray(labels), minlength=4)
    empirical = np.bincount(np.asarray(labels), np.asarray(data.strengths), 4) / counts
    np.testing.assert_allclose(rates, empirical, rtol=0.02)  # the sample's own rates
    assert np.all(np.abs(rates - RATES) < 5 * np.sqrt(RATES / counts))  # the true ones
    g = np.asarray(res.params.concentration)[order]
    np.testing.assert_allclose(g / g.sum(), weights, atol=0.03)
    np.testing.assert_allclose(np.asarray(res.params.mean)[order], MEANS, atol=0.2)


# ------------------------------------------------------ vmap, sharding and dtype behaviour


def test_vmapped_restarts_equal_restarts_run_one_by_one():
    with jax.enable_x64(True):
        data, _ = cavi.sample_events(jax.random.key(5), MEANS, RATES, np.full(4, 0.25), 0.5, 200)
        key = jax.random.key(6)
        together = cavi.fit(key, data, PRIOR, 4, num_restarts=4, max_iter=30, tol=1e-9)
        for i, k in enumerate(jax.random.split(key, 4)):
            alone = cavi.fit(k, data, PRIOR, 4, num_restarts=1, max_iter=30, tol=1e-9)
            np.testing.assert_allclose(alone.elbo, together.restart_elbos[i], rtol=1e-12)
            np.testing.assert_allclose(alone.elbo_history[0], together.elbo_history[i],
                                       rtol=1e-12)
            assert alone.num_iters[0] == together.num_iters[i]
        assert len(np.unique(np.round(np.asarray(together.restart_elbos), 6))) > 1


SHARDED_SCRIPT = textwrap.dedent("""
    import json, jax, numpy as np
    from vijax import cavi
    assert jax.local_device_count() == {devices}, jax.local_devices()
    data, _ = cavi.sample_events(jax.random.key(21), {means}, {rates}, [0.25] * 4, 0.5, 1001)
    prior = cavi.Prior(tau=0.5, alpha=2.0, beta=0.2, nu=(1.0, -1.0), rho=0.1,
                       concentration=1.5)
    res = cavi.fit(jax.random.key(22), data, prior, 4, num_restarts=3, max_iter=40, tol=0.0)
    r = res.params.responsibilities
    print(json.dumps({{"elbos": np.asarray(res.restart_elbos).tolist(),
                      "mean": np.asarray(res.params.mean).tolist(),
                      "r_shape": list(r.shape), "r_sum": float(r.sum()),
                      "sharding": str(cavi.shard_events(cavi.as_observations(data))
                                      .locations.sharding)}}))
""")


def _run_on(devices):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_PLATFORMS": "cpu"}
    script = SHARDED_SCRIPT.format(devices=devices, means=MEANS.tolist(), rates=RATES.tolist())
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_over_8_devices_equals_one_device():
    one, eight = _run_on(1), _run_on(8)
    assert "events" in eight["sharding"] and "events" not in one["sharding"]
    assert eight["r_shape"] == [1001, 4]
    np.testing.assert_allclose(eight["r_sum"], 1001, rtol=1e-5)
    np.testing.assert_allclose(eight["elbos"], one["elbos"], rtol=1e-5)
    np.testing.assert_allclose(eight["mean"], one["mean"], atol=1e-3)


def test_float32_by_default_and_float64_under_x64():
    data, _ = cavi.sample_events(jax.random.key(1), MEANS, RATES, np.full(4, 0.25), 0.5, 50)
    assert cavi.fit(jax.random.key(0), data, PRIOR, 2, max_iter=3).elbo.dtype == jnp.float32
    with jax.enable_x64(True):
        res = cavi.fit(jax.random.key(0), data, PRIOR, 2, max_iter=3)
        assert res.elbo.dtype == jnp.float64 and res.params.mean.dtype == jnp.float64


def test_predict_gives_the_fitted_responsibilities_and_normalised_rows(recovered):
    data, _, res = recovered
    r = cavi.predict(data, LEARNED, res.params)
    np.testing.assert_allclose(r, res.params.responsibilities, atol=1e-5)
    new = cavi.predict((MEANS, np.rint(RATES)), LEARNED, res.params)
    np.testing.assert_allclose(new.sum(1), 1.0, rtol=1e-5)
    # Each true centre is claimed with confidence by a different cluster.
    assert sorted(np.asarray(new).argmax(1).tolist()) == [0, 1, 2, 3]
    assert np.asarray(new).max(1).min() > 0.99


def test_simulate_draws_events_with_the_model_s_moments():
    data, truth = cavi.simulate(jax.random.key(9), LEARNED, 3, 20_000)
    labels = np.asarray(truth.labels)
    for k in range(3):
        mask = labels == k
        s, x = np.asarray(data.strengths)[mask], np.asarray(data.locations)[mask]
        lam = float(truth.rates[k])
        assert abs(s.mean() - lam) < 5 * np.sqrt(lam / mask.sum())
        assert np.all(np.abs(x.mean(0) - np.asarray(truth.means[k])) < 5 / np.sqrt(
            0.5 * mask.sum()))
        np.testing.assert_allclose(mask.mean(), truth.weights[k], atol=5 * np.sqrt(0.25 / 2e4))


# ------------------------------------------------------------------- extreme valid input


def test_extreme_but_valid_input_gives_finite_results():
    locations = np.array([[0.0, 0.0], [1e4, 0.0], [0.0, 1e4], [1e4, 1e4], [5e3, -1e4]])
    strengths = np.array([1e5, 0, 3, 1e5, 7])
    for prior in (PRIOR, LEARNED):  # one point per cluster: K = N
        res = cavi.fit(jax.random.key(0), (locations, strengths), prior, 5, num_restarts=2,
                       max_iter=20)
        for leaf in jax.tree.leaves(res._replace(elbo_history=None)):
            assert np.all(np.isfinite(np.asarray(leaf))), res
        for hist, t in zip(res.elbo_history, res.num_iters, strict=True):
            assert np.all(np.isfinite(hist[: int(t) + 1]))
        assert np.isfinite(res.elbo) and np.isfinite(res.restart_elbos).all()
        assert sorted(np.asarray(res.params.responsibilities).argmax(1).tolist()) == [0, 1, 2,
                                                                                       3, 4]


def test_initial_seeds_do_not_depend_on_padding_the_events():
    """Sharding pads the events with zero-weight rows; the draw must not see them."""
    data, _ = cavi.sample_events(jax.random.key(2), MEANS, RATES, np.full(4, 0.25), 0.5, 101)
    obs = cavi.as_observations(data)
    prior = cavi.as_prior(LEARNED, 4)
    padded = cavi.Observations(jnp.pad(obs.locations, ((0, 11), (0, 0))),
                               jnp.pad(obs.strengths, (0, 11)),
                               jnp.pad(jnp.ones(101, obs.locations.dtype), (0, 11)))
    for seed in range(3):
        a, elbo_a = cavi.init(jax.random.key(seed), obs, prior, 4)
        b, elbo_b = cavi.init(jax.random.key(seed), padded, prior, 4)
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_allclose(elbo_a, elbo_b, rtol=1e-5)
        np.testing.assert_array_equal(b.responsibilities[:101], a.responsibilities)


def test_init_accepts_a_plain_prior_with_a_scalar_concentration():
    data, _ = cavi.sample_events(jax.random.key(2), MEANS, RATES, np.full(4, 0.25), 0.5, 50)
    params, value = cavi.init(jax.random.key(0), cavi.as_observations(data), LEARNED, 4)
    assert params.concentration.shape == (4,) and np.isfinite(value)


def test_tol_controls_stopping_and_the_converged_flag():
    data, _ = cavi.sample_events(jax.random.key(2), MEANS, RATES, np.full(4, 0.25), 0.5, 200)
    fixed = cavi.fit(jax.random.key(0), data, PRIOR, 4, num_restarts=2, max_iter=25, tol=0.0)
    assert np.all(fixed.num_iters == 25) and not np.any(fixed.converged)
    loose = cavi.fit(jax.random.key(0), data, PRIOR, 4, num_restarts=2, max_iter=25, tol=1.0)
    assert np.all(loose.num_iters == 1) and np.all(loose.converged)
    mid = cavi.fit(jax.random.key(0), data, PRIOR, 4, num_restarts=2, max_iter=25, tol=1e-3)
    t = np.asarray(mid.num_iters)
    assert np.all((t > 1) & (t < 25)) and np.all(mid.converged)
    for hist, n in zip(np.asarray(mid.elbo_history), t, strict=True):
        assert abs(hist[n] - hist[n - 1]) / abs(hist[n]) < 1e-3
        assert abs(hist[n - 1] - hist[n - 2]) / abs(hist[n - 1]) >= 1e-3


# ------------------------------------------------------------------- float32 numerics

EPS32 = float(jnp.finfo(jnp.float32).eps)


def test_stable_special_functions_equal_their_definitions():
    """f, R, h and log(1 + u) - u of the model's docstring, against SciPy in float64 where
    the definitions are accurate, and against their leading asymptotic terms beyond."""
    with jax.enable_x64(True):
        x = np.concatenate([np.geomspace(1e-3, 1e3, 300), [9.999, 10.0, 10.001]])
        f, r = jax.jit(_numerics.digamma_minus_log), jax.jit(_numerics.stirling_remainder)
        np.testing.assert_allclose(f(x), scipy.special.digamma(x) - np.log(x), rtol=1e-12,
                                   atol=1e-13)
        # (the definition itself cancels to about 1e-12 absolute at x = 1e3)
        np.testing.assert_allclose(r(x), scipy.special.gammaln(x) - (x - 0.5) * np.log(x) + x
                                   - 0.5 * np.log(2 * np.pi), rtol=1e-12, atol=2e-12)
        big = np.geomspace(1e3, 1e15, 50)
        np.testing.assert_allclose(f(big), -0.5 / big - 1 / (12 * big**2), rtol=1e-10)
        np.testing.assert_allclose(r(big), 1 / (12 * big) - 1 / (360 * big**3), rtol=1e-10)
        s = np.concatenate([np.arange(0.0, 300.0), np.geomspace(300, 1e12, 50).round()])
        h = [math.lgamma(k + 1) - (k * math.log(k) if k else 0.0) + k for k in s[:300]]
        h_big = 0.5 * np.log(2 * np.pi * s[300:]) + 1 / (12 * s[300:]) - 1 / (360 * s[300:]**3)
        np.testing.assert_allclose(_numerics.log_factorial_remainder(s), h + list(h_big),
                                   rtol=1e-12, atol=1e-13)
        u = np.concatenate([-np.geomspace(1e-12, 0.999, 100), np.geomspace(1e-12, 1e6, 100)])
        series = -u**2 / 2 + u**3 / 3 - u**4 / 4 + u**5 / 5 - u**6 / 6
        expected = np.where(np.abs(u) < 1e-3, series, np.log1p(u) - u)
        np.testing.assert_allclose(_numerics.log1p_minus_x(u), expected, rtol=1e-12)
        # g(S, lam) is the Poisson log-likelihood ratio of lam against S.
        counts, rates = np.array([0.0, 1, 7, 40, 3000]), np.array([0.5, 2.0, 7.3, 35.0, 2950.0])
        np.testing.assert_allclose(
            _numerics.poisson_deviance(counts, rates),
            scipy.stats.poisson.logpmf(counts, rates) - scipy.stats.poisson.logpmf(
                counts, np.maximum(counts, 1e-300)), rtol=1e-10)  # SciPy's difference cancels
    # In float32 the counts 0..299 keep h to float32 resolution of its parts.
    np.testing.assert_allclose(_numerics.log_factorial_remainder(s[:300].astype(np.float32)), h,
                               atol=5e-7)


def test_double_word_logarithm_and_quotient_in_float32():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.exp(rng.uniform(-80, 85, 20_000)),
                        rng.integers(1, 2**31, 20_000)]).astype(np.float32)
    hi, lo = jax.jit(_numerics.log_hilo)(x)
    assert hi.dtype == lo.dtype == jnp.float32
    log = np.log(x.astype(np.float64))
    error = np.abs(np.asarray(hi, np.float64) + np.asarray(lo, np.float64) - log)
    assert np.all(error <= 2e-14 * np.maximum(np.abs(log), 1.0)), error.max()
    assert np.mean(np.asarray(hi) == log.astype(np.float32)) > 0.999  # hi is log x rounded
    a, b = (np.exp(rng.uniform(-20, 20, (2, 20_000)))).astype(np.float32)
    q, q_lo = jax.jit(_numerics.divide_hilo)(a, b)
    quotient = a.astype(np.float64) / b
    assert np.max(np.abs(np.asarray(q, np.float64) + np.asarray(q_lo, np.float64) - quotient)
                  / quotient) < 1e-14
    normal = x[x > 1e-30]  # both halves normal numbers: CPUs flush subnormals to 0
    s_hi, s_lo = jax.jit(_numerics.split_float32)(normal)
    assert np.all(np.asarray(s_hi, np.float64) + np.asarray(s_lo, np.float64) == normal)


def test_logits_are_the_model_s_formula():
    """The reorganised logits equal MODEL.md's L_nk, written out with every constant."""
    with jax.enable_x64(True):
        data, prior, params = small_problem(7, 30, 3, True)  # as a Monte Carlo test's
        a, b, g = params.gamma_shape, params.gamma_rate, params.concentration
        x, s = np.asarray(data.locations), np.asarray(data.strengths)
        sq = np.sum((x[:, None, :] - np.asarray(params.mean)[None]) ** 2, axis=-1)
        formula = (scipy.special.digamma(g) - scipy.special.digamma(g.sum()) + np.log(prior.tau)
                   - np.log(2 * np.pi) - prior.tau / 2 * (sq + 2 / params.precision)
                   + s[:, None] * (scipy.special.digamma(a) - np.log(b)) - a / b
                   - scipy.special.gammaln(s + 1)[:, None])
        np.testing.assert_allclose(model.assignment_logits(data, prior, params), formula,
                                   rtol=1e-12, atol=1e-10)
        # q(Z) is its softmax, and the ELBO there is its log-normaliser plus global terms.
        assigned, value = model.assign_with_elbo(data, prior, params)
        np.testing.assert_allclose(assigned.responsibilities,
                                   scipy.special.softmax(formula, axis=1), rtol=1e-10)
        np.testing.assert_allclose(model.elbo(data, prior, assigned), value, rtol=1e-12)
        empty = assigned._replace(responsibilities=jnp.zeros_like(formula))  # no data part
        np.testing.assert_allclose(value - model.elbo(data, prior, empty),
                                   scipy.special.logsumexp(formula, axis=1).sum(), rtol=1e-12)


EXTREME_N, EXTREME_K = 2000, 4
EXTREME_MEANS = np.array([[0.0, 0.0], [1e5, 0.0], [0.0, 1e5], [1e5, 1e5]])


def _extreme_prior(strength):
    return cavi.Prior(tau=1.0, alpha=2.0, beta=2.0 / strength, nu=(5e4, 5e4), rho=1e-10,
                      concentration=1.0)


@pytest.fixture(scope="module")
def extreme():
    """Events 1e5 apart with strengths up to 1e6 and 1e9, rounded to float32, and float64
    parameters near the optimum (sweeps from the true labels), rounded to float32."""
    problems = {}
    for strength in (1e6, 1e9):
        rates = strength * np.array([1.0, 0.7, 0.45, 0.25])
        with jax.enable_x64(True):
            data, labels = cavi.sample_events(jax.random.key(0), EXTREME_MEANS, rates,
                                              np.full(EXTREME_K, 0.25), 1.0, EXTREME_N)
            raw = (np.asarray(data.locations, np.float32), np.asarray(data.strengths, np.float32))
            obs = cavi.as_observations(raw)
            prior = cavi.as_prior(_extreme_prior(strength), EXTREME_K)
            ones = jnp.ones(EXTREME_K)
            params = model.update_globals(obs, prior, model.Params(
                jax.nn.one_hot(labels, EXTREME_K, dtype=jnp.float64), ones, ones,
                jnp.zeros((EXTREME_K, 2)), ones, ones))
            for _ in range(5):
                params, _ = model.sweep(obs, prior, params)
        problems[strength] = raw, jax.tree.map(lambda leaf: np.asarray(leaf, np.float32), params)
    return problems


def _elbos(raw, prior, params, dtype):
    """``elbo`` at ``params`` and the value of ``assign_with_elbo`` at their global factors,
    with data and parameters (float32 numbers) in ``dtype``."""
    with jax.enable_x64(dtype == np.float64):
        obs = cavi.as_observations(tuple(np.asarray(a, dtype) for a in raw))
        prior = cavi.as_prior(prior, EXTREME_K)
        params = jax.tree.map(lambda leaf: jnp.asarray(np.asarray(leaf, dtype)), params)
        assigned, value = model.assign_with_elbo(obs, prior, params)
        return (float(model.elbo(obs, prior, params)), float(value),
                float(model.elbo(obs, prior, assigned)))


@pytest.mark.parametrize("strength", [1e6, 1e9])
def test_float32_elbo_matches_float64_at_extreme_scales(strength, extreme):
    """Strengths up to 1e9 (terms of order S log S = 2e10 per event in MODEL.md's form),
    locations 1e5 apart: float32 loses no more than float32 resolution of the ELBO, at the
    optimum and away from it (the same float32 numbers evaluated in float64 are the
    reference)."""
    raw, optimum = extreme[strength]
    swap = np.array([1, 0, 2, 3])
    points = {
        "optimum": optimum,
        "rates 0.1% off": optimum._replace(gamma_shape=optimum.gamma_shape * np.float32(1.001)),
        "means 0.5 off": optimum._replace(mean=optimum.mean + np.float32(0.5)),
        "rates swapped": optimum._replace(gamma_shape=optimum.gamma_shape[swap],
                                          gamma_rate=optimum.gamma_rate[swap]),
    }
    prior = _extreme_prior(strength)
    for label, params in points.items():
        single = _elbos(raw, prior, params, np.float32)
        double = _elbos(raw, prior, params, np.float64)
        errors = np.abs(np.subtract(single, double)) / np.abs(double)
        assert np.all(errors <= 1e-6), (label, errors)
        assert abs(single[1] - single[2]) <= 1e-6 * abs(single[1]), label  # the two forms


def test_float32_fit_never_decreases_the_elbo_at_extreme_scales(extreme):
    for strength, (raw, optimum) in extreme.items():
        prior = _extreme_prior(strength)
        # (restarts and sweeps as in the `recovered` fixture: one compilation for both)
        res = cavi.fit(jax.random.key(1), raw, prior, EXTREME_K, num_restarts=8, max_iter=200,
                       tol=0.0)
        assert res.elbo.dtype == jnp.float32
        for hist in np.asarray(res.elbo_history, np.float64):
            assert np.all(np.diff(hist) >= -2 * EPS32 * np.abs(hist[1:])), np.diff(hist).min()
        # The reported ELBO is the ELBO of the returned parameters, to float32 resolution,
        # and the fit reaches the float64 optimum to within the float32 resolution of its
        # parameters (means of 1e5 are resolved to 0.008).
        exact = _elbos(raw, prior, res.params, np.float64)[0]
        assert abs(float(res.elbo) - exact) <= 1e-6 * abs(exact)
        best = _elbos(raw, prior, optimum, np.float64)[0]
        assert exact >= best - 2e-6 * abs(best), (exact, best)


def test_updates_over_many_events_keep_float32_resolution():
    """Means of 1e5 from float32 sums over 7 blocks of 16384 events: within 1.5 ulp (0.012)
    of float64's (one sequential sum of the same events is 2 ulp off)."""
    rng = np.random.default_rng(0)
    n, k = 7 * model.SUM_BLOCK, EXTREME_K
    assert model.sum_blocks(n) == 7
    labels = rng.integers(0, k, n)
    rates = 1e9 * np.array([1.0, 0.7, 0.45, 0.25])
    raw = ((EXTREME_MEANS[labels] + rng.normal(size=(n, 2))).astype(np.float32),
           rng.poisson(rates[labels]).astype(np.float32))
    r = np.eye(k, dtype=np.float32)[labels]
    results = []
    for dtype in (np.float32, np.float64):
        with jax.enable_x64(dtype == np.float64):
            obs = cavi.as_observations(tuple(a.astype(dtype) for a in raw))
            ones = jnp.ones(k, dtype)
            params = model.Params(jnp.asarray(r, dtype), ones, ones, jnp.zeros((k, 2), dtype), ones)
            new = model.update_globals(obs, cavi.as_prior(_extreme_prior(1e9)._replace(
                concentration=None), k), params)
            results.append([np.asarray(new.mean, np.float64),
                            np.asarray(new.gamma_shape / new.gamma_rate, np.float64)])
    (m32, rate32), (m64, rate64) = results
    assert np.max(np.abs(m32 - m64)) < 1.5 * np.spacing(np.float32(1e5))
    np.testing.assert_allclose(rate32, rate64, rtol=2e-7)


# -------------------------------------------------------------------------- bad input

GOOD_X = np.zeros((6, 2))
GOOD_S = np.arange(6.0)
GOOD_MEANS, GOOD_RATES, GOOD_WEIGHTS = MEANS[:2], RATES[:2], np.array([0.4, 0.6])

# What JAX compiles: every jit-compiled core of vijax.cavi. A bad argument must be refused
# before any of them (or anything else) is compiled.
COMPILED = (_fit, _init, *model.COMPILED)


@contextlib.contextmanager
def nothing_compiled():
    """:func:`conftest.no_compilation`, and no jit cache of vijax.cavi grew (a trace that hit
    a cache would compile nothing but still be work done)."""
    before = [f._cache_size() for f in COMPILED]
    with no_compilation():
        yield
    assert [f._cache_size() for f in COMPILED] == before


@pytest.fixture(scope="module")
def valid():
    """Valid arguments of every public function (float32), built once."""
    obs = cavi.as_observations((GOOD_X, GOOD_S))
    prior = cavi.as_prior(PRIOR, 2)
    params, _ = cavi.init(jax.random.key(0), obs, PRIOR, 2)
    return {
        "key": jax.random.key(0), "obs": obs, "prior": prior, "params": params,
        "globals": params._replace(responsibilities=None),
        "learned": params._replace(concentration=jnp.ones(2, params.mean.dtype)),
        "events": cavi.event_terms(obs, prior),
        "keys": jax.random.split(jax.random.key(0), 2),
    }


def _defaults(name, v):
    """The valid arguments of public function ``name`` (``v``: the ``valid`` fixture)."""
    data, raw = v["obs"], (GOOD_X, GOOD_S)
    model_args = {"data": data, "prior": v["prior"], "params": v["params"]}
    return {
        "fit": {"key": v["key"], "data": raw, "prior": PRIOR, "num_clusters": 2},
        "init": {"key": v["key"], "data": raw, "prior": PRIOR, "num_clusters": 2},
        "predict": {"data": raw, "prior": PRIOR, "params": v["params"]},
        "predict_labels": {"data": raw, "prior": PRIOR, "params": v["params"]},
        "event_scores": {"data": raw, "prior": PRIOR, "params": v["params"]},
        "simulate": {"key": v["key"], "prior": PRIOR, "num_clusters": 2, "num_events": 10},
        "sample_events": {"key": v["key"], "means": GOOD_MEANS, "rates": GOOD_RATES,
                          "weights": GOOD_WEIGHTS, "tau": 0.5, "num_events": 10},
        "as_observations": {"data": raw},
        "as_prior": {"prior": PRIOR, "num_clusters": 2},
        "shard_events": {"data": data},
        "event_weights": {"data": data},
        "event_terms": {"data": data, "prior": v["prior"]},
        "statistics": {"data": data, "responsibilities": v["params"].responsibilities},
        "global_terms": {"prior": v["prior"], "params": v["globals"]},
        "assignment_logits": {**model_args, "params": v["globals"]},
        "responsibilities": {**model_args, "params": v["globals"]},
        "update_assignments": {**model_args, "params": v["globals"]},
        "assign_with_elbo": {**model_args, "params": v["globals"]},
    }.get(name, model_args)  # elbo, sweep and the updates of the global factors


def _observations(**changes):
    fields = {"locations": jnp.zeros((6, 2)), "strengths": jnp.arange(6.0), "weights": None}
    return cavi.Observations(**{**fields, **changes})


BAD_DATA = [  # (value of data, the argument the message must name)
    ("quakes", "data"),
    ((np.zeros((6, 3)), GOOD_S), "data.locations"),
    ((np.zeros(6), GOOD_S), "data.locations"),
    ((np.zeros((0, 2)), np.zeros(0)), "data.locations"),
    ((np.full((6, 2), np.nan), GOOD_S), "data.locations"),
    ((np.full((6, 2), 1e39), GOOD_S), "data.locations"),  # inf in float32
    ((GOOD_X.astype(np.complex64), GOOD_S), "data.locations"),
    (([["a", "b"]] * 6, GOOD_S), "data.locations"),
    ((GOOD_X, -GOOD_S), "data.strengths"),
    ((GOOD_X, GOOD_S + 0.5), "data.strengths"),
    ((GOOD_X, GOOD_S[:5]), "data.strengths"),
    ((GOOD_X, np.full(6, 1e39)), "data.strengths"),
    ((GOOD_X, [None] * 6), "data.strengths"),
    (cavi.Observations(GOOD_X, GOOD_S, -np.ones(6)), "data.weights"),
    (cavi.Observations(GOOD_X, GOOD_S, np.zeros(6)), "data.weights"),
    (cavi.Observations(GOOD_X, GOOD_S, np.ones(5)), "data.weights"),
]
BAD_PRIOR = [  # (changes to PRIOR, or a whole prior, and the argument named)
    ({"tau": 0.0}, "prior.tau"), ({"tau": -np.inf}, "prior.tau"),
    ({"tau": 1e39}, "prior.tau"),  # inf in float32
    ({"tau": np.ones(2)}, "prior.tau"), ({"tau": "1"}, "prior.tau"), ({"tau": None}, "prior.tau"),
    ({"alpha": -1.0}, "prior.alpha"), ({"alpha": np.nan}, "prior.alpha"),
    ({"beta": np.inf}, "prior.beta"), ({"beta": 1e38}, "prior.beta"),  # 1/beta is 0
    ({"rho": 0}, "prior.rho"), ({"rho": 1e-40}, "prior.rho"),  # 0 in float32
    ({"nu": (1.0, 2.0, 3.0)}, "prior.nu"), ({"nu": (np.nan, 0.0)}, "prior.nu"),
    ({"nu": 1.0}, "prior.nu"),
    ({"pi": [0.5, 0.6]}, "prior.pi"), ({"pi": [1.2, -0.2]}, "prior.pi"),
    ({"pi": [0.2, 0.3, 0.5]}, "prior.pi"), ({"pi": [0.5, np.nan]}, "prior.pi"),
    ({"concentration": -1.0}, "prior.concentration"),
    ({"concentration": "abc"}, "prior.concentration"),
    ({"concentration": 1 + 2j}, "prior.concentration"),
    ({"concentration": np.ones(3)}, "prior.concentration"),
    ({"concentration": 1e-40}, "prior.concentration"),
    ({"concentration": 1.0, "pi": [0.5, 0.5]}, "prior"),
]
NOT_A_PRIOR = [({"tau": 1.0}, "prior"), (None, "prior"), (tuple(PRIOR), "prior")]


BAD_SCALARS = {  # function: [(argument, bad value, argument named)]
    "fit": [("num_clusters", 0, "num_clusters"), ("num_clusters", 7, "num_clusters"),
            ("num_clusters", 2.0, "num_clusters"), ("num_clusters", True, "num_clusters"),
            ("num_clusters", "2", "num_clusters"), ("num_restarts", 0, "num_restarts"),
            ("num_restarts", 1.5, "num_restarts"), ("max_iter", 0, "max_iter"),
            ("max_iter", None, "max_iter"), ("tol", -1e-3, "tol"), ("tol", "abc", "tol"),
            ("tol", np.nan, "tol"), ("tol", np.inf, "tol"), ("key", 0, "key"),
            ("key", None, "key"), ("key", "keys", "key")],
    "init": [("num_clusters", 0, "num_clusters"), ("num_clusters", 7, "num_clusters"),
             ("num_clusters", 2.5, "num_clusters"), ("key", 0, "key"), ("key", "keys", "key")],
    "simulate": [("num_clusters", 0, "num_clusters"), ("num_clusters", 1.5, "num_clusters"),
                 ("num_events", 0, "num_events"), ("num_events", 2.5, "num_events"),
                 ("key", 0, "key"), ("key", "keys", "key")],
    "sample_events": [("means", np.zeros((2, 3)), "means"), ("means", [[0, np.nan]] * 2, "means"),
                      ("means", np.full((2, 2), 1e39), "means"), ("rates", RATES[:3], "rates"),
                      ("rates", [1.0, -1.0], "rates"), ("rates", [1.0, 1e-40], "rates"),
                      ("weights", [0.5, 0.6], "weights"), ("weights", [1.0], "weights"),
                      ("tau", np.ones(3), "tau"), ("tau", 0.0, "tau"), ("tau", 1e39, "tau"),
                      ("num_events", 0, "num_events"), ("key", 0, "key"), ("key", "keys", "key")],
    "as_prior": [("num_clusters", 0, "num_clusters"), ("num_clusters", "2", "num_clusters")],
    "predict": [("params", None, "params"), ("params", "tuple", "params"),
                ("params", {"precision": np.ones(3)}, "params.precision"),
                ("params", {"gamma_rate": -np.ones(2)}, "params.gamma_rate"),
                ("params", {"gamma_rate": np.full(2, 1e-40)}, "params.gamma_rate"),
                ("params", {"gamma_shape": np.zeros(2)}, "params.gamma_shape"),
                ("params", {"mean": np.full((2, 2), np.nan)}, "params.mean"),
                ("params", {"mean": np.zeros((2, 3))}, "params.mean"),
                ("params", {"concentration": np.ones(2)}, "prior"),  # learned vs fixed
                ("prior", LEARNED, "prior")],
    "shard_events": [("devices", "cpu", "devices"), ("devices", [], "devices")],
    "statistics": [("responsibilities", np.ones((5, 2)), "responsibilities"),
                   ("responsibilities", None, "responsibilities")],
    "event_weights": [("data", _observations(weights=jnp.ones(5)), "data.weights")],
    "event_terms": [("prior", PRIOR._replace(tau=np.ones(2)), "prior.tau")],
    "assignment_logits": [("include_event_terms", "yes", "include_event_terms"),
                          ("events", "events", "events")],
}
MODEL_FUNCTIONS = ["elbo", "sweep", "update_rates", "update_locations", "update_weights",
                   "update_precisions", "update_globals", "assign_with_elbo", "responsibilities",
                   "assignment_logits", "update_assignments", "global_terms", "event_terms",
                   "event_weights", "statistics", "shard_events"]
NEEDS_RESPONSIBILITIES = ["elbo", "sweep", "update_rates", "update_locations", "update_weights",
                          "update_precisions", "update_globals"]
TAKE_EVENTS = ["sweep", "assign_with_elbo", "responsibilities", "assignment_logits"]


# predict_labels and event_scores check their arguments as predict does
BAD_SCALARS["predict_labels"] = BAD_SCALARS["event_scores"] = BAD_SCALARS["predict"]


def _bad_cases():
    cases = []
    for name in ("fit", "init", "predict", "predict_labels", "event_scores", "as_observations"):
        cases += [(name, {"data": d}, arg) for d, arg in BAD_DATA]
    for name in ("fit", "init", "simulate", "as_prior", "predict", "predict_labels",
                 "event_scores"):
        cases += [(name, {"prior": PRIOR._replace(**c)}, arg) for c, arg in BAD_PRIOR]
        cases += [(name, {"prior": p}, arg) for p, arg in NOT_A_PRIOR]
    for name, rows in BAD_SCALARS.items():
        cases += [(name, {field: value}, arg) for field, value, arg in rows]
    for name in ("fit", "init"):  # K counts the events of positive weight only
        cases.append((name, {"data": cavi.Observations(GOOD_X, GOOD_S, [1, 1, 0, 0, 0, 0]),
                             "num_clusters": 3}, "num_clusters"))
    for name in MODEL_FUNCTIONS:  # structure only: the building blocks read no values
        takes = set(inspect.signature(getattr(cavi, name)).parameters)
        if "data" in takes:
            cases += [(name, {"data": (GOOD_X, GOOD_S)}, "data"),
                      (name, {"data": _observations(locations=jnp.zeros((6, 3)))},
                       "data.locations"),
                      (name, {"data": _observations(strengths=jnp.zeros(5))}, "data.strengths")]
        if "prior" in takes:
            cases += [(name, {"prior": {"tau": 1.0}}, "prior"),
                      (name, {"prior": "prior_tau_vector"}, "prior.tau")]
        if "params" in takes:
            cases += [(name, {"params": None}, "params"),
                      (name, {"params": {"mean": jnp.zeros((2, 3))}}, "params.mean"),
                      (name, {"params": {"gamma_rate": jnp.ones(3)}}, "params.gamma_rate"),
                      (name, {"params": {"concentration": jnp.ones(2)}}, "prior"),
                      (name, {"prior": "prior_pi_of_3"}, "prior.pi")]
        if name in NEEDS_RESPONSIBILITIES:
            cases += [(name, {"params": {"responsibilities": None}}, "params.responsibilities"),
                      (name, {"params": {"responsibilities": jnp.ones((7, 2))}},
                       "params.responsibilities")]
        if name in TAKE_EVENTS:
            cases += [(name, {"events": "events"}, "events"),
                      (name, {"events": "short_events"}, "events.log_strength")]
    return cases


BAD_CASES = _bad_cases()


def _resolve(name, change, v):
    """The arguments of one bad call: the defaults with ``change`` applied."""
    args = dict(_defaults(name, v))
    for field, value in change.items():
        if isinstance(value, dict) and field == "params":
            value = args["params"]._replace(**value)
        elif isinstance(value, str) and value == "keys" and field == "key":
            value = v["keys"]
        elif isinstance(value, str) and value == "tuple" and field == "params":
            value = tuple(v["params"])
        elif isinstance(value, str) and value == "prior_tau_vector":
            value = v["prior"]._replace(tau=jnp.ones(2))
        elif isinstance(value, str) and value == "prior_pi_of_3":
            value = v["prior"]._replace(pi=jnp.full(3, 1 / 3))
        elif isinstance(value, str) and value == "events":
            value = tuple(v["events"])
        elif isinstance(value, str) and value == "short_events":
            value = v["events"]._replace(log_strength=jnp.zeros(5))
        args[field] = value
    return args


def test_every_public_function_has_bad_input_cases():
    from vijax.cavi import stochastic  # its own table: tests/test_cavi_stochastic.py

    functions = ({name for name in cavi.__all__ if not name[0].isupper()}
                 - set(stochastic.__all__))
    assert functions == {name for name, _, _ in BAD_CASES}
    assert len(BAD_CASES) > 250


@pytest.mark.parametrize(("name", "change", "argument"), BAD_CASES, ids=bad_case_ids(BAD_CASES))
def test_bad_input_raises_a_value_error_naming_the_argument_before_compiling(
        name, change, argument, valid):
    args = _resolve(name, change, valid)
    assert_refused(argument, lambda: getattr(cavi, name)(**args), nothing_compiled())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"data": (np.zeros((6, 3)), GOOD_S)}, r"locations must have shape \(any, 2\)"),
    ({"data": (GOOD_X, -GOOD_S)}, "strengths must be >= 0"),
    ({"data": (GOOD_X, GOOD_S + 0.5)}, "strengths must hold whole numbers"),
    ({"data": "quakes"}, "data must be"),
    ({"num_clusters": 7}, r"num_clusters must be in \[1, 6\]"),
    ({"prior": PRIOR._replace(pi=[0.5, 0.6])}, "prior.pi must sum to 1"),
    ({"prior": PRIOR._replace(concentration=1.0, pi=[0.5, 0.5])}, "not both"),
    ({"prior": PRIOR._replace(tau=1e39)}, "prior.tau must be finite in float32"),
    ({"prior": PRIOR._replace(rho=1e-40)}, "prior.rho must be at least 1.175e-38"),
    ({"prior": PRIOR._replace(concentration="abc")}, "prior.concentration must hold real"),
    ({"tol": -1e-3}, "tol must be >= 0"),
    ({"key": jax.random.split(jax.random.key(0), 2)}, "key must be a single PRNG key"),
])
def test_fit_s_messages_say_what_was_wrong_and_what_was_expected(kwargs, match):
    args = {"key": jax.random.key(0), "data": (GOOD_X, GOOD_S), "prior": PRIOR,
            "num_clusters": 2, **kwargs}
    with nothing_compiled(), pytest.raises(ValueError, match=match):
        cavi.fit(**args)


def test_values_that_float64_represents_are_accepted_under_x64():
    """The float32 limits are checked after the cast to the working dtype, not before."""
    with jax.enable_x64(True):
        prior = cavi.as_prior(PRIOR._replace(rho=1e-40, tau=1e39, beta=1e38), 2)
        assert prior.rho.dtype == jnp.float64 and float(prior.rho) == 1e-40
    with pytest.raises(ValueError, match="prior.rho"):
        cavi.as_prior(PRIOR._replace(rho=1e-40), 2)


def test_tol_below_the_working_resolution_is_warned_about():
    data, _ = cavi.sample_events(jax.random.key(2), MEANS, RATES, np.full(4, 0.25), 0.5, 200)
    with pytest.warns(UserWarning, match="tol=1e-09 is below the resolution of float32"):
        cavi.fit(jax.random.key(0), data, PRIOR, 4, num_restarts=2, max_iter=25, tol=1e-9)
    small, _ = cavi.sample_events(jax.random.key(1), MEANS, RATES, np.full(4, 0.25), 0.5, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cavi.fit(jax.random.key(0), data, PRIOR, 4, num_restarts=2, max_iter=25, tol=0.0)
        with jax.enable_x64(True):  # (the fit of test_float32_by_default_and_float64_under_x64)
            cavi.fit(jax.random.key(0), small, PRIOR, 2, max_iter=3, tol=1e-9)


def test_default_tol_is_resolved_in_the_working_dtype():
    """float32 resolves the relative ELBO change to about eps = 1.2e-7: its default stops
    at 8 eps; float64 keeps 1e-7."""
    assert cavi.fit.__defaults__[-1] is None
    eps32 = float(jnp.finfo(jnp.float32).eps)
    assert _validate.default_tolerance(jnp.float32) == 8 * eps32
    assert _validate.default_tolerance(jnp.float64) == 1e-7
    data, _ = cavi.sample_events(jax.random.key(2), MEANS, RATES, np.full(4, 0.25), 0.5, 200)
    res = cavi.fit(jax.random.key(0), data, PRIOR, 4, num_restarts=2, max_iter=25)
    assert np.all(res.converged)
    for hist, n in zip(np.asarray(res.elbo_history), np.asarray(res.num_iters), strict=True):
        assert abs(hist[n] - hist[n - 1]) / abs(hist[n]) < 8 * eps32


def test_quakes_catalogue_loads_as_locations_and_integer_strengths():
    from vijax.data import load_quakes
    from vijax.data.quakes import describe_quakes

    q = load_quakes()
    assert q.locations.shape == (1000, 2) and q.strengths.shape == (1000,)
    assert q.strengths.dtype.kind == "i" and q.strengths.min() >= 0
    assert np.all((q.long > 0) & (q.long < 360)) and np.all(q.lat < 0)
    assert "Fiji" in describe_quakes()
    obs = cavi.as_observations(q)
    np.testing.assert_allclose(obs.locations, q.locations, rtol=1e-6)


@pytest.mark.parametrize("pi", [[0.1] * 10, np.float32([0.1] * 10), [1 / 3] * 3,
                                np.float32([0.25, 0.25, 0.5])])
def test_fixed_weights_within_float_resolution_are_put_on_the_simplex(pi):
    prior = cavi.as_prior(cavi.Prior(pi=pi), len(pi))
    got = np.asarray(prior.pi, np.float64)
    given = np.asarray(pi, np.float64)
    # proportional to what was given, and summing to 1 up to the rounding of the cast
    np.testing.assert_allclose(got / given, 1 / given.sum(), rtol=2e-7)
    assert abs(got.sum() - 1.0) < len(pi) * np.finfo(prior.pi.dtype).eps / 2


@pytest.mark.parametrize("pi", [[0.3, 0.3, 0.3], [0.5, 0.5 + 1e-5], np.float32([0.2, 0.7])])
def test_fixed_weights_off_the_simplex_are_refused_not_rescaled(pi):
    with pytest.raises(ValueError, match=r"prior.pi must sum to 1 within float resolution"):
        cavi.as_prior(cavi.Prior(pi=pi), len(pi))


# ------------------------------------------------------ what scikit-learn users expect


def test_hard_labels_are_the_most_probable_cluster_of_fit_and_predict(recovered):
    data, labels, res = recovered
    np.testing.assert_array_equal(res.labels, np.argmax(res.params.responsibilities, 1))
    np.testing.assert_array_equal(cavi.predict_labels(data, LEARNED, res.params), res.labels)
    assert adjusted_rand_score(np.asarray(labels), np.asarray(res.labels)) >= 0.95


def test_event_scores_sum_with_the_global_terms_to_the_elbo(recovered):
    data, _, res = recovered
    scores = np.asarray(cavi.event_scores(data, LEARNED, res.params), np.float64)
    prior = cavi.as_prior(LEARNED, 4)
    total = scores.sum() + float(cavi.global_terms(prior, res.params))
    np.testing.assert_allclose(total, float(res.elbo), rtol=2e-6)
    # each score is the event's ELBO term at r_n = q(Z_n), computed by elbo()'s own formula:
    # one event at a time, the global terms subtracted
    obs = cavi.as_observations(data)
    for n in (0, 17, 1999):
        one = cavi.Observations(obs.locations[n:n + 1], obs.strengths[n:n + 1])
        params = res.params._replace(responsibilities=res.params.responsibilities[n:n + 1])
        term = float(cavi.elbo(one, prior, params)) - float(cavi.global_terms(prior, params))
        np.testing.assert_allclose(scores[n], term, rtol=1e-4, atol=1e-3)
    # an event far from every cluster, or with an unlikely strength, scores below all others
    outliers = cavi.event_scores((np.array([[40.0, -30.0], [0.0, 0.0]]), np.array([4, 900])),
                                 LEARNED, res.params)
    assert np.all(np.asarray(outliers) < scores.min())


def test_a_warm_start_from_init_continues_that_fit_exactly():
    data, _ = cavi.sample_events(jax.random.key(4), MEANS, RATES, WEIGHTS, 0.5, 300)
    key = jax.random.key(5)
    cold = cavi.fit(key, data, LEARNED, 4, max_iter=6, tol=0.0)
    start, value = cavi.init(key, data, LEARNED, 4)
    warm = cavi.fit(jax.random.key(99), data, LEARNED, 4, max_iter=6, tol=0.0,
                    init_params=start)
    np.testing.assert_allclose(warm.elbo_history, cold.elbo_history, rtol=1e-6)
    np.testing.assert_allclose(warm.elbo_history[0, 0], value, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(warm.params), jax.tree.leaves(cold.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # six sweeps, then six more from where they stopped, are twelve sweeps
    longer = cavi.fit(key, data, LEARNED, 4, max_iter=12, tol=0.0)
    resumed = cavi.fit(key, data, LEARNED, 4, max_iter=6, tol=0.0, init_params=cold.params)
    np.testing.assert_allclose(resumed.elbo_history[0], longer.elbo_history[0, 6:], rtol=1e-6)
    np.testing.assert_allclose(resumed.params.mean, longer.params.mean, rtol=1e-5, atol=1e-5)


def test_a_key_gives_the_same_initial_seeds_in_float32_and_float64():
    data, _ = cavi.sample_events(jax.random.key(6), MEANS, RATES, WEIGHTS, 0.5, 200)
    x32 = np.asarray(data[0])
    for seed in range(3):
        m32 = np.asarray(cavi.init(jax.random.key(seed), data, LEARNED, 4)[0].mean)
        with jax.enable_x64(True):
            m64 = np.asarray(cavi.init(jax.random.key(seed), (x32.astype(np.float64), data[1]),
                                       LEARNED, 4)[0].mean)
        assert m64.dtype == np.float64
        np.testing.assert_array_equal(m32.astype(np.float64), m64)


def _start(k=4, learned=True):
    return random_params(jax.random.key(0), 1, k, learned, jnp.float32)._replace(
        responsibilities=None)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"init_params": _start(3)}, "init_params has 3 clusters but num_clusters is 4"),
    ({"init_params": _start(learned=False)}, "prior and params disagree"),
    ({"init_params": _start(), "num_restarts": 2}, "init_params .a warm start. needs"),
    ({"init_params": _start()._replace(precision=-jnp.ones(4))}, "init_params.precision"),
    ({"init_params": "params"}, "init_params must be a vijax.cavi.Params"),
])
def test_a_bad_warm_start_is_refused_before_compiling(kwargs, match):
    data = (np.zeros((10, 2)), np.arange(10))
    with no_compilation(), pytest.raises(ValueError, match=match):
        cavi.fit(jax.random.key(0), data, LEARNED, 4, **kwargs)
