"""Mathematical properties of the CAVI updates, the ELBO and the fitting driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy import stats
from sklearn.metrics import adjusted_rand_score

from vijax import cavi
from vijax.cavi import model
from vijax.cavi.fit import _fit

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
        f = model.elbo

        # q(Z): r = softmax(eta); the gradient in eta vanishes at eta = log r*.
        upd = model.update_assignments(data, prior, params)
        grad_eta = jax.grad(lambda eta: f(data, prior, upd._replace(
            responsibilities=jax.nn.softmax(eta, axis=-1))))(jnp.log(upd.responsibilities))
        assert np.max(np.abs(grad_eta)) < 1e-8

        upd = model.update_rates(data, prior, params)
        g_a, g_b = jax.grad(lambda a, b: f(data, prior, upd._replace(gamma_shape=a, gamma_rate=b)),
                            argnums=(0, 1))(upd.gamma_shape, upd.gamma_rate)
        assert np.max(np.abs(g_a)) < 1e-8 and np.max(np.abs(g_b)) < 1e-8

        upd = model.update_locations(data, prior, params)
        g_m, g_s = jax.grad(lambda m, s: f(data, prior, upd._replace(mean=m, precision=s)),
                            argnums=(0, 1))(upd.mean, upd.precision)
        assert np.max(np.abs(g_m)) < 1e-8 and np.max(np.abs(g_s)) < 1e-8

        if learned:
            upd = model.update_weights(data, prior, params)
            g_g = jax.grad(lambda g: f(data, prior, upd._replace(concentration=g)))(
                upd.concentration)
            assert np.max(np.abs(g_g)) < 1e-8

        # The gradients are not zero before the update: the check can fail.
        g0 = jax.grad(lambda a: f(data, prior, params._replace(gamma_shape=a)))(params.gamma_shape)
        assert np.max(np.abs(g0)) > 1e-3


# -------------------------------------------------------------- the ELBO never decreases


def _block_trajectory(data, prior, params, num_sweeps):
    """The ELBO after every single block update, over ``num_sweeps`` sweeps."""
    blocks = [model.update_rates, model.update_locations, model.update_weights,
              model.update_assignments]

    def one_sweep(params, _):
        values = []
        for update in blocks:
            params = update(data, prior, params)
            values.append(model.elbo(data, prior, params))
        return params, jnp.stack(values)

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


# -------------------------------------------------------------------------- bad input

GOOD_X = np.zeros((6, 2))
GOOD_S = np.arange(6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"data": (np.zeros((6, 3)), GOOD_S)}, r"locations must have shape \(any, 2\)"),
    ({"data": (np.full((6, 2), np.nan), GOOD_S)}, "locations must be finite"),
    ({"data": (np.zeros(6), GOOD_S)}, "locations must have shape"),
    ({"data": (GOOD_X, -GOOD_S)}, "strengths must be >= 0"),
    ({"data": (GOOD_X, GOOD_S + 0.5)}, "strengths must hold whole numbers"),
    ({"data": (GOOD_X, GOOD_S[:5])}, r"strengths must have shape \(6,\)"),
    ({"data": "quakes"}, "data must be"),
    ({"data": (GOOD_X.astype(np.complex64), GOOD_S)}, "locations must hold real numbers"),
    ({"data": cavi.Observations(GOOD_X, GOOD_S, -np.ones(6))}, "weights must be >= 0"),
    ({"data": cavi.Observations(GOOD_X, GOOD_S, np.zeros(6))}, "at least one > 0"),
    ({"data": cavi.Observations(GOOD_X, GOOD_S, [1, 1, 0, 0, 0, 0]), "num_clusters": 3},
     r"num_clusters must be in \[1, 2\]"),
    ({"num_clusters": 0}, r"num_clusters must be in \[1, 6\]"),
    ({"num_clusters": 7}, r"num_clusters must be in \[1, 6\]"),
    ({"num_clusters": 2.0}, "num_clusters must be an integer"),
    ({"prior": PRIOR._replace(tau=0.0)}, r"prior.tau must be > 0"),
    ({"prior": PRIOR._replace(alpha=-1.0)}, r"prior.alpha must be > 0"),
    ({"prior": PRIOR._replace(beta=np.inf)}, r"prior.beta must be finite"),
    ({"prior": PRIOR._replace(rho=0)}, r"prior.rho must be > 0"),
    ({"prior": PRIOR._replace(nu=(1.0, 2.0, 3.0))}, r"prior.nu must have shape \(2,\)"),
    ({"prior": PRIOR._replace(pi=[0.5, 0.6])}, "prior.pi must sum to 1"),
    ({"prior": PRIOR._replace(pi=[1.2, -0.2])}, "prior.pi must be non-negative"),
    ({"prior": PRIOR._replace(pi=[0.2, 0.3, 0.5])}, "prior.pi must have 2 entries"),
    ({"prior": PRIOR._replace(concentration=-1.0)}, r"prior.concentration must be > 0"),
    ({"prior": PRIOR._replace(concentration=1.0, pi=[0.5, 0.5])}, "not both"),
    ({"prior": {"tau": 1.0}}, "prior must be a vijax.cavi.Prior"),
    ({"max_iter": 0}, "max_iter must be >= 1"),
    ({"tol": -1e-3}, "tol must be >= 0"),
    ({"num_restarts": 0}, "num_restarts must be >= 1"),
    ({"key": 0}, "key must be a PRNG key"),
])
def test_bad_input_raises_a_value_error_naming_the_argument_before_compiling(kwargs, match):
    args = {"key": jax.random.key(0), "data": (GOOD_X, GOOD_S), "prior": PRIOR,
            "num_clusters": 2, **kwargs}
    compiled_before = _fit._cache_size()
    with pytest.raises(ValueError, match=match):
        cavi.fit(**args)
    assert _fit._cache_size() == compiled_before


def test_predict_rejects_a_prior_that_does_not_match_the_fitted_params(recovered):
    data, _, res = recovered
    with pytest.raises(ValueError, match="learned mixture weights"):
        cavi.predict(data, PRIOR, res.params)


def test_simulate_rejects_a_tau_that_is_not_a_scalar():
    with pytest.raises(ValueError, match=r"tau must have shape \(\)"):
        cavi.sample_events(jax.random.key(0), MEANS, RATES, np.full(4, 0.25), np.ones(3), 10)


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
