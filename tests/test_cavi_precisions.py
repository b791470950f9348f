"""Learned per-cluster location precisions (``Prior.tau_shape``, ``tau_rate``) in CAVI:
each block update is an argmax, the ELBO never decreases and equals a Monte-Carlo estimate,
clusters of different spreads are recovered, float32 keeps float32 resolution, and bad
input is refused before anything compiles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from conftest import assert_refused, bad_case_ids, no_compilation
from jax.scipy import stats
from sklearn.metrics import adjusted_rand_score

from vijax import cavi
from vijax.cavi import model

FIXED = cavi.Prior(tau=0.5, alpha=2.0, beta=0.2, nu=(1.0, -1.0), rho=0.1)
LEARNED = FIXED._replace(tau=1.0, tau_shape=2.0, tau_rate=3.0)
BOTH = LEARNED._replace(concentration=1.5)  # learned weights and precisions


def random_params(key, n, k, prior, dtype=jnp.float64):
    """Arbitrary valid variational parameters for ``prior``, not at any optimum."""
    ks = jax.random.split(key, 8)
    positive = lambda i, scale, floor: jnp.exp(jax.random.normal(ks[i], (k,), dtype)) * scale \
        + floor  # noqa: E731
    learned_tau = prior.tau_shape is not None
    return model.Params(
        responsibilities=jax.nn.softmax(jax.random.normal(ks[0], (n, k), dtype), axis=-1),
        gamma_shape=positive(1, 1.0, 1.0),
        gamma_rate=positive(2, 0.1, 0.05),
        mean=3.0 * jax.random.normal(ks[3], (k, 2), dtype),
        precision=positive(4, 1.0, 0.1),
        concentration=positive(5, 1.0, 0.5) if prior.concentration is not None else None,
        tau_shape=positive(6, 2.0, 0.5) if learned_tau else None,
        tau_rate=positive(7, 1.0, 0.2) if learned_tau else None,
    )


def small_problem(seed, n, k, prior):
    data, _ = cavi.simulate(jax.random.key(seed), prior, k, n)
    params = random_params(jax.random.key(seed + 100), n, k, prior)
    return cavi.as_observations(data), cavi.as_prior(prior, k), params


# ------------------------------------------------------------------ each update is argmax


def _largest(g, block):
    return max(float(np.max(np.abs(getattr(g, field)))) for field in block)


BLOCK_UPDATES = (model.update_assignments, model.update_rates, model.update_locations,
                 model.update_precisions, model.update_weights, model.update_globals)


_elbo_gradient = jax.jit(jax.grad(model.elbo, argnums=2))


def test_each_block_update_zeroes_the_elbo_gradient_in_that_block():
    with jax.enable_x64(True):
        data, prior, params = small_problem(7, 30, 3, BOTH)
        g_z, g_lam, g_mu, g_tau, g_pi, g_all, g_before = [
            _elbo_gradient(data, prior, update(data, prior, params)) for update in BLOCK_UPDATES
        ] + [_elbo_gradient(data, prior, params)]
        g_r = np.asarray(g_z.responsibilities)  # constant over k on the simplex (Lagrange)
        assert np.max(np.abs(g_r - g_r.mean(axis=1, keepdims=True))) < 1e-8
        assert _largest(g_lam, ("gamma_shape", "gamma_rate")) < 1e-8
        assert _largest(g_mu, ("mean", "precision")) < 1e-8  # given E[tau]
        assert _largest(g_tau, ("tau_shape", "tau_rate")) < 1e-8  # given q(mu)
        assert _largest(g_pi, ("concentration",)) < 1e-8
        # The joint update ends with q(tau) given the new q(mu): zero in q(tau), q(lam), q(pi).
        assert _largest(g_all, ("tau_shape", "tau_rate", "gamma_shape", "gamma_rate",
                                "concentration")) < 1e-8
        # Before the updates the gradients are not zero: the checks can fail.
        assert min(_largest(g_before, ("tau_shape",)), _largest(g_before, ("tau_rate",)),
                   _largest(g_before, ("mean",))) > 1e-3


def test_the_precision_update_is_the_closed_form_and_uses_the_new_means():
    """``c_k = c0 + N_k``, ``d_k = d0 + (sum_n r_nk ||X_n - m_k||^2 + 2 N_k / s_k) / 2`` with
    the ``m_k`` of the same update, written out directly; and the exact identity of the ELBO
    with ``q(tau) = p(tau)`` against the fixed-tau ELBO at ``tau = E[tau]``."""
    with jax.enable_x64(True):
        data, prior, params = small_problem(7, 30, 3, BOTH)
        new = model.update_globals(data, prior, params)
        x, r = np.asarray(data.locations), np.asarray(params.responsibilities)
        counts = r.sum(0)
        e_tau = np.asarray(params.tau_shape / params.tau_rate)
        s = prior.rho + e_tau * counts
        m = (prior.rho * np.asarray(prior.nu) + e_tau[:, None] * (r.T @ x)) / s[:, None]
        sq = np.sum(r * np.sum((x[:, None, :] - m[None]) ** 2, -1), 0)
        np.testing.assert_allclose(new.mean, m, rtol=1e-12)
        np.testing.assert_allclose(new.precision, s, rtol=1e-12)
        np.testing.assert_allclose(new.tau_shape, prior.tau_shape + counts, rtol=1e-12)
        np.testing.assert_allclose(new.tau_rate, prior.tau_rate + 0.5 * (sq + 2 * counts / s),
                                   rtol=1e-12)

        # q(tau_k) = Gamma(c0, d0) for every k: no KL term, E[tau] = c0/d0, and E[log tau]
        # = log(c0/d0) + psi(c0) - log c0: the ELBO is the fixed-tau one plus N (psi - log).
        c0, d0 = float(prior.tau_shape), float(prior.tau_rate)
        at_prior = params._replace(tau_shape=jnp.full(3, c0), tau_rate=jnp.full(3, d0))
        fixed_prior = cavi.as_prior(FIXED._replace(tau=c0 / d0, concentration=1.5), 3)
        fixed = params._replace(tau_shape=None, tau_rate=None)
        np.testing.assert_allclose(
            model.elbo(data, prior, at_prior) - model.elbo(data, fixed_prior, fixed),
            30 * (scipy.special.digamma(c0) - np.log(c0)), rtol=1e-10)
        # update_precisions is the identity for a fixed tau.
        assert model.update_precisions(data, fixed_prior, fixed) is fixed


# -------------------------------------------------------------- the ELBO never decreases


def test_elbo_never_decreases_after_any_block_update():
    """Over 15 sweeps of the five block updates (in the fit's order, and q(tau) both before
    and after q(mu)), from arbitrary parameters: no block update lowers the ELBO."""
    with jax.enable_x64(True):
        data, prior, params = small_problem(7, 30, 3, BOTH)
        values = [float(model.elbo(data, prior, params))]
        for sweep in range(15):
            blocks = BLOCK_UPDATES[1:5] if sweep % 2 else (
                model.update_precisions, *BLOCK_UPDATES[1:5])
            for update in (*blocks, model.update_assignments):
                params = update(data, prior, params)
                values.append(float(model.elbo(data, prior, params)))
        steps = np.diff(values)
        assert np.all(np.isfinite(values))
        assert steps.min() >= -1e-9 * np.abs(values).max(), steps.min()
        assert values[-1] - values[0] > 0


# ------------------------------------------------------------- ELBO against Monte Carlo


def _log_joint_minus_log_q(key, data, prior, params):
    """One draw of ``log p - log q`` from ``q``, written with jax.scipy.stats densities,
    independently of the model code (precisions learned, weights fixed or learned)."""
    k_z, k_lam, k_mu, k_pi, k_tau = jax.random.split(key, 5)
    r, a, b, m, s = (params.responsibilities, params.gamma_shape, params.gamma_rate,
                     params.mean, params.precision)
    c, d = params.tau_shape, params.tau_rate
    x, counts = data.locations, data.strengths
    z = jax.random.categorical(k_z, jnp.log(r), axis=-1)
    lam = jax.random.gamma(k_lam, a, dtype=a.dtype) / b
    tau = jax.random.gamma(k_tau, c, dtype=c.dtype) / d
    mu = m + jax.random.normal(k_mu, m.shape, m.dtype) / jnp.sqrt(s)[:, None]
    sd = lambda precision: 1.0 / jnp.sqrt(precision)  # noqa: E731
    log_p = (jnp.sum(stats.norm.logpdf(mu, prior.nu, sd(prior.rho)))
             + jnp.sum(stats.gamma.logpdf(lam, prior.alpha, scale=1.0 / prior.beta))
             + jnp.sum(stats.gamma.logpdf(tau, prior.tau_shape, scale=1.0 / prior.tau_rate))
             + jnp.sum(stats.norm.logpdf(x, mu[z], sd(tau[z])[:, None]))
             + jnp.sum(stats.poisson.logpmf(counts, lam[z])))
    log_q = (jnp.sum(jnp.log(r[jnp.arange(r.shape[0]), z]))
             + jnp.sum(stats.gamma.logpdf(lam, a, scale=1.0 / b))
             + jnp.sum(stats.gamma.logpdf(tau, c, scale=1.0 / d))
             + jnp.sum(stats.norm.logpdf(mu, m, sd(s)[:, None])))
    if params.concentration is None:
        k = r.shape[1]
        log_p += jnp.sum(jnp.full((k,), -jnp.log(k))[z])
    else:
        pi = jax.random.dirichlet(k_pi, params.concentration)
        log_p += stats.dirichlet.logpdf(pi, prior.concentration) + jnp.sum(jnp.log(pi)[z])
        log_q += stats.dirichlet.logpdf(pi, params.concentration)
    return log_p - log_q


def test_elbo_matches_a_monte_carlo_estimate():
    with jax.enable_x64(True):
        data, prior, params = small_problem(7, 30, 3, BOTH)
        draws = jax.jit(jax.vmap(_log_joint_minus_log_q, in_axes=(0, None, None, None)))(
            jax.random.split(jax.random.key(8), 20_000), data, prior, params)
        mean, se = float(draws.mean()), float(draws.std() / np.sqrt(draws.size))
        exact = float(model.elbo(data, prior, params))
        assert abs(mean - exact) < 5 * se, (mean, exact, se)
        assert se < 0.02 * abs(exact)


# ------------------------------------------------------------------------------ recovery


SPREAD_MEANS = np.array([[0.0, 0.0], [15.0, 0.0], [0.0, 15.0]])
SPREAD_TAUS = np.array([0.5, 20.0, 3.0])  # standard deviations 1.4, 0.22 and 0.58
SPREAD_RATES = np.array([10.0, 30.0, 60.0])
SPREAD_PRIOR = cavi.Prior(alpha=1.0, beta=0.05, nu=(5.0, 5.0), rho=0.01, concentration=1.0,
                          tau_shape=1.0, tau_rate=1.0)


# The float32 fits of this file share one compilation: N = 1000 events, K = 3 clusters, 4
# restarts of at most 60 sweeps, priors with learned weights and precisions.
N_FIT, K_FIT = 1000, 3


def fit32(key, data, prior, tol=None):
    return cavi.fit(key, data, prior, K_FIT, num_restarts=4, max_iter=60, tol=tol)


@pytest.fixture(scope="module")
def spreads():
    data, labels = cavi.sample_events(jax.random.key(11), SPREAD_MEANS, SPREAD_RATES,
                                      np.full(3, 1 / 3), SPREAD_TAUS, N_FIT)
    res = fit32(jax.random.key(12), data, SPREAD_PRIOR)
    return data, np.asarray(labels), res


def test_clusters_of_different_spreads_are_recovered(spreads):
    data, labels, res = spreads
    assert bool(res.converged[res.best_restart])
    assert adjusted_rand_score(labels, np.asarray(res.params.responsibilities).argmax(1)) > 0.99
    order = np.argmin(((SPREAD_MEANS[:, None] - np.asarray(res.params.mean)[None]) ** 2)
                      .sum(-1), 1)
    assert sorted(order) == [0, 1, 2]
    e_tau = np.asarray(res.params.tau_shape / res.params.tau_rate, np.float64)[order]
    counts = np.bincount(labels, minlength=3)
    # The estimate of tau_k from N_k 2-D events has relative standard deviation 1/sqrt(N_k).
    assert np.all(np.abs(e_tau / SPREAD_TAUS - 1) < 5 / np.sqrt(counts)), e_tau
    # ...and is the sample's own: (c0 + N_k) / (d0 + sum ||X - m||^2 / 2 + N_k / s_k).
    x = np.asarray(data.locations, np.float64)
    m = np.asarray(res.params.mean, np.float64)[order]
    s = np.asarray(res.params.precision, np.float64)[order]
    scatter = np.array([np.sum((x[labels == k] - m[k]) ** 2) for k in range(3)])
    np.testing.assert_allclose(e_tau, (1 + counts) / (1 + scatter / 2 + counts / s), rtol=1e-3)
    # The fit reports the ELBO of the parameters it returns.
    obs, prior = cavi.as_observations(data), cavi.as_prior(SPREAD_PRIOR, K_FIT)
    np.testing.assert_allclose(res.elbo, model.elbo(obs, prior, res.params), rtol=1e-6)


def test_init_puts_the_expected_precisions_at_the_prior_mean(valid):
    params = valid["params"]
    c0, d0 = LEARNED.tau_shape, LEARNED.tau_rate
    np.testing.assert_allclose(params.tau_shape / params.tau_rate, c0 / d0, rtol=1e-6)
    np.testing.assert_allclose(params.tau_shape, c0 + 6 / 2, rtol=1e-6)  # N/K = 3 events
    np.testing.assert_allclose(params.precision, LEARNED.rho + c0 / d0 * 3, rtol=1e-6)


def test_predict_weighs_distances_by_each_cluster_s_spread(spreads):
    data, labels, res = spreads
    r = cavi.predict(data, SPREAD_PRIOR, res.params)
    np.testing.assert_allclose(r, res.params.responsibilities, atol=1e-5)
    # An event 12 units from the wide cluster's centre (8.5 of its standard deviations) and
    # 3 from the tightest one's (13.6 of its) belongs to the wide one; with one shared tau
    # it would go to the nearer centre.
    probe = (np.array([[12.0, 0.0]]), np.array([20.0]))
    order = np.argmin(((SPREAD_MEANS[:, None] - np.asarray(res.params.mean)[None]) ** 2)
                      .sum(-1), 1)
    assert int(np.asarray(cavi.predict(probe, SPREAD_PRIOR, res.params)).argmax()) == order[0]


def test_simulate_draws_per_cluster_precisions_from_the_prior():
    data, truth = cavi.simulate(jax.random.key(9), SPREAD_PRIOR, 3, 5_000)
    assert truth.precisions.shape == (3,)
    labels = np.asarray(truth.labels)
    x = np.asarray(data.locations, np.float64)
    for k in range(3):
        sel = labels == k
        var = x[sel].var(0).mean()  # the variance 1 / tau_k, estimated from 2 N_k values
        assert abs(var * float(truth.precisions[k]) - 1) < 5 * np.sqrt(2 / (2 * sel.sum()))
    fixed, truth = cavi.simulate(jax.random.key(9), SPREAD_PRIOR._replace(
        tau_shape=None, tau_rate=None), 3, 5_000)
    assert truth.precisions is None
    np.testing.assert_array_equal(fixed.strengths, data.strengths)  # the other draws unchanged


# ------------------------------------------------------------------- float32 numerics


FAR = np.array([[1e5, 1e5], [1e5 + 30.0, 1e5], [1e5, 1e5 - 30.0]])  # far from the origin


def _far_problem():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, N_FIT)
    taus = np.array([1.0, 4.0, 0.25])
    x = FAR[labels] + rng.normal(size=(N_FIT, 2)) / np.sqrt(taus[labels, None])
    s = rng.poisson(np.array([1e6, 3e5, 5e4])[labels])
    prior = cavi.Prior(alpha=1.0, beta=1e-5, nu=(1e5, 1e5), rho=1e-6, concentration=1.0,
                       tau_shape=1.0, tau_rate=1.0)
    return (x.astype(np.float32), s.astype(np.float32)), labels, prior


def _quakes_problem():
    from vijax.data import load_quakes

    q = load_quakes()
    prior = cavi.Prior(alpha=1.0, beta=1.0 / float(q.stations.mean()),
                       nu=tuple(q.locations.mean(0)), rho=0.01, concentration=1.0,
                       tau_shape=1.0, tau_rate=1.0)
    return (np.asarray(q.locations, np.float32), np.asarray(q.strengths, np.float32)), prior


def _in_dtype(raw, prior, params, dtype, k):
    obs = cavi.as_observations(tuple(np.asarray(a, dtype) for a in raw))
    return obs, cavi.as_prior(prior, k), jax.tree.map(
        lambda leaf: jnp.asarray(np.asarray(leaf, dtype)), params)


def _evaluate(raw, prior, params, dtype, k=K_FIT):
    """The ELBO at ``params``, the ELBO of ``assign_with_elbo`` at their globals and the
    joint global update's ``q(tau)`` and means, with float32 inputs evaluated in ``dtype``."""
    with jax.enable_x64(dtype == np.float64):
        obs, prior, params = _in_dtype(raw, prior, params, dtype, k)
        new = model.update_globals(obs, prior, params)
        return (float(model.elbo(obs, prior, params)),
                float(model.assign_with_elbo(obs, prior, params)[1]),
                np.asarray(new.tau_rate, np.float64), np.asarray(new.mean, np.float64))


@pytest.fixture(scope="module")
def float32_cases():
    """Near-optimal parameters (float64 sweeps from a good start, rounded to float32), and
    the same with the means moved by 3 cluster spreads (a large step for q(tau)). The far
    case starts from the true labels, the Fiji catalogue (first 1,000 events: all of them)
    from a float32 fit."""
    far, labels, far_prior = _far_problem()
    quakes, quakes_prior = _quakes_problem()
    starts = {"far": np.eye(K_FIT)[labels],
              "quakes": fit32(jax.random.key(0), quakes, quakes_prior).params.responsibilities}
    cases = {}
    for name, raw, prior in (("far", far, far_prior), ("quakes", quakes, quakes_prior)):
        with jax.enable_x64(True):
            ones = np.ones(K_FIT)
            start = model.Params(starts[name], ones, ones, np.zeros((K_FIT, 2)), ones, ones,
                                 ones, ones)
            obs, prior_k, params = _in_dtype(raw, prior, start, np.float64, K_FIT)
            params = model.update_globals(obs, prior_k, params)
            for _ in range(5):
                params, _ = model.sweep(obs, prior_k, params)
            params = jax.tree.map(lambda leaf: np.asarray(leaf, np.float32), params)
        spread = 1.0 / np.sqrt(params.tau_shape / params.tau_rate)
        moved = params._replace(mean=params.mean + (3 * spread[:, None]).astype(np.float32))
        cases[name] = raw, prior, {"optimum": params, "means moved": moved}
    return cases


@pytest.mark.parametrize("name", ["far", "quakes"])
def test_float32_elbo_and_precision_update_match_float64(name, float32_cases):
    raw, prior, points = float32_cases[name]
    for label, params in points.items():
        single = _evaluate(raw, prior, params, np.float32)
        double = _evaluate(raw, prior, params, np.float64)
        elbo_errors = np.abs(np.subtract(single[:2], double[:2])) / np.abs(double[:2])
        assert np.all(elbo_errors <= 1e-6), (label, elbo_errors)
        # d_k: sum_n r ||X_n - m_k||^2 without cancellation (a square expanded about nu would
        # lose every digit at 1e5 from the origin).
        np.testing.assert_allclose(single[2], double[2], rtol=2e-5, err_msg=label)


def test_float32_fit_far_from_the_origin_never_decreases_the_elbo(float32_cases):
    raw, prior, points = float32_cases["far"]
    res = fit32(jax.random.key(1), raw, prior, tol=0.0)
    assert res.elbo.dtype == jnp.float32
    eps = float(jnp.finfo(jnp.float32).eps)
    for hist in np.asarray(res.elbo_history, np.float64):
        assert np.all(np.diff(hist) >= -2 * eps * np.abs(hist[1:])), np.diff(hist).min()
    best = _evaluate(raw, prior, points["optimum"], np.float64)[0]
    exact = _evaluate(raw, prior, res.params, np.float64)[0]
    assert abs(exact - float(res.elbo)) <= 1e-6 * abs(exact)
    assert exact >= best - 2e-6 * abs(best)


# -------------------------------------------------------------------------- bad input

GOOD_X = np.zeros((6, 2))
GOOD_S = np.arange(6.0)

BAD_PRIORS = [  # (changes to LEARNED, the argument the message must name)
    ({"tau_rate": None}, "prior.tau_rate"), ({"tau_shape": None}, "prior.tau_shape"),
    ({"tau_shape": 0.0}, "prior.tau_shape"), ({"tau_shape": -1.0}, "prior.tau_shape"),
    ({"tau_shape": np.nan}, "prior.tau_shape"), ({"tau_shape": 1e39}, "prior.tau_shape"),
    ({"tau_shape": np.ones(2)}, "prior.tau_shape"), ({"tau_shape": "1"}, "prior.tau_shape"),
    ({"tau_rate": -np.inf}, "prior.tau_rate"), ({"tau_rate": 1e-40}, "prior.tau_rate"),
    ({"tau_rate": 1 + 2j}, "prior.tau_rate"), ({"tau_rate": [[1.0]]}, "prior.tau_rate"),
    ({"tau": 0.25}, "prior.tau"),  # a fixed tau and a Gamma prior: two meanings
]


@pytest.fixture(scope="module")
def valid():
    obs = cavi.as_observations((GOOD_X, GOOD_S))
    prior = cavi.as_prior(LEARNED, 2)
    params, _ = cavi.init(jax.random.key(0), obs, LEARNED, 2)
    fixed, _ = cavi.init(jax.random.key(0), obs, FIXED, 2)
    return {"obs": obs, "prior": prior, "params": params, "fixed": fixed,
            "fixed_prior": cavi.as_prior(FIXED, 2)}


def _bad_cases():
    cases = []
    for name in ("fit", "init", "predict", "simulate", "as_prior"):
        cases += [(name, {"prior": LEARNED._replace(**c)}, arg) for c, arg in BAD_PRIORS]
    bad_params = [  # (changes to the learned params, the argument named)
        ({"tau_rate": None}, "params.tau_rate"), ({"tau_shape": None}, "params.tau_"),
        ({"tau_shape": np.ones(3)}, "params.tau_shape"),
        ({"tau_rate": np.ones((2, 1))}, "params.tau_rate"),
        ({"tau_shape": None, "tau_rate": None}, "prior"),  # learned prior, fixed params
    ]
    cases += [("predict", {"params": c}, arg) for c, arg in bad_params]
    cases += [("predict", {"params": {"tau_rate": -np.ones(2)}}, "params.tau_rate"),
              ("predict", {"params": {"tau_shape": np.full(2, np.nan)}}, "params.tau_shape"),
              ("predict", {"params": {"tau_rate": np.full(2, 1e-40)}}, "params.tau_rate"),
              ("predict", {"params": "fixed"}, "prior")]  # fixed params, learned prior
    for name in ("elbo", "sweep", "update_precisions", "update_locations", "update_globals",
                 "assign_with_elbo", "responsibilities", "global_terms"):
        cases += [(name, {"params": c}, arg) for c, arg in bad_params]
        cases += [(name, {"params": "fixed"}, "prior"),
                  (name, {"prior": "prior_shape_only"}, "prior.tau_rate"),
                  (name, {"prior": "prior_shape_vector"}, "prior.tau_shape")]
    cases += [("statistics", {"means": np.zeros((3, 2))}, "means"),
              ("statistics", {"means": "abc"}, "means")]
    return cases


BAD_CASES = _bad_cases()


def _arguments(name, change, v):
    params = v["params"]
    if name == "global_terms":
        args = {"prior": v["prior"], "params": params._replace(responsibilities=None)}
    elif name == "statistics":
        args = {"data": v["obs"], "responsibilities": params.responsibilities}
    elif name in ("fit", "init"):
        args = {"key": jax.random.key(0), "data": (GOOD_X, GOOD_S), "prior": LEARNED,
                "num_clusters": 2}
    elif name == "simulate":
        args = {"key": jax.random.key(0), "prior": LEARNED, "num_clusters": 2,
                "num_events": 10}
    elif name == "as_prior":
        args = {"prior": LEARNED, "num_clusters": 2}
    elif name == "predict":
        args = {"data": (GOOD_X, GOOD_S), "prior": LEARNED, "params": params}
    else:
        args = {"data": v["obs"], "prior": v["prior"], "params": params}
    for field, value in change.items():
        if field == "params" and isinstance(value, dict):
            value = args["params"]._replace(**value)
        elif isinstance(value, str) and value == "fixed":
            value = v["fixed"]
        elif isinstance(value, str) and value == "prior_shape_only":
            value = v["prior"]._replace(tau_rate=None)
        elif isinstance(value, str) and value == "prior_shape_vector":
            value = v["prior"]._replace(tau_shape=jnp.ones(2))
        args[field] = value
    return args


@pytest.mark.parametrize(("name", "change", "argument"), BAD_CASES, ids=bad_case_ids(BAD_CASES))
def test_bad_input_raises_a_value_error_naming_the_argument_before_compiling(
        name, change, argument, valid):
    args = _arguments(name, change, valid)
    assert_refused(argument, lambda: getattr(cavi, name)(**args))


@pytest.mark.parametrize(("prior", "match"), [
    (LEARNED._replace(tau=0.25), "give one fixed tau or a Gamma prior"),
    (LEARNED._replace(tau_rate=None), "learned per-cluster precisions need both"),
    (LEARNED._replace(tau_shape=-1.0), "prior.tau_shape must be"),
])
def test_messages_say_what_was_wrong_and_what_was_expected(prior, match):
    with no_compilation(), pytest.raises(ValueError, match=match):
        cavi.fit(jax.random.key(0), (GOOD_X, GOOD_S), prior, 2)


def test_mismatched_prior_and_params_are_named_both_ways(valid):
    with pytest.raises(ValueError, match="params.tau_shape is given .* prior.tau_shape is None"):
        cavi.elbo(valid["obs"], valid["fixed_prior"], valid["params"])
    with pytest.raises(ValueError, match="params.tau_shape is None .* prior.tau_shape is given"):
        cavi.elbo(valid["obs"], valid["prior"], valid["fixed"])
