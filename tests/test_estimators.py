"""Tests of vijax.estimators on models with known answers.

- Every (family, estimator) pair on the conjugate Gaussian, mean-field, full-rank and batched:
  the mean gradient matches the exact gradient within Monte-Carlo error.
- STL and DReG (k = 1) are zero to rounding at the exact posterior.
- On IWAE_k (a model that is not the VAE): DReG and the score function agree with the total
  derivative (unbiased), STL does not (biased).
- The baselines keep the score function unbiased and lower its variance by a measured factor;
  the control variate never does worse than the better of total derivative and STL.
- The surrogate keeps the objective's value; bad input fails before compilation.

Monte-Carlo thresholds are 5 estimated standard errors; keys are fixed.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import gradient_replicates, no_compilation, z_scores

from vijax import estimators as E
from vijax.families import FullRankGaussian, GaussianParams, MeanFieldGaussian
from vijax.models import conjugate_gaussian, simulate_conjugate_gaussian

KEY = jax.random.key(7)
MF, FR = MeanFieldGaussian(), FullRankGaussian()
MODEL = simulate_conjugate_gaussian(jax.random.key(1), num_data=10, dim=3, prior_loc=0.5,
                                    prior_scale=2.0, noise_scale=1.5)
POST = MODEL.posterior()
Q = GaussianParams(POST.loc + jnp.array([0.6, -0.3, 0.1]), POST.log_scale + 0.4)
Q_FR = FR.init(Q.loc, jnp.array([[1.0, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.2, 0.1, 0.6]]))
Z_MAX = 5.0

# three independent conjugate problems, one factor of a batched family each
_MODELS = [simulate_conjugate_gaussian(jax.random.key(i), 6, 3, 0.0, 1.5, 1.0) for i in (2, 3, 4)]
BATCHED = jax.tree.map(lambda *xs: jnp.stack(xs), *_MODELS)


def batched_log_joint(z):
    """``z (3, 3) -> (3,)``: one log joint per problem."""
    return jax.vmap(lambda m, zb: m.log_joint(zb))(BATCHED, z)


Q_B = GaussianParams(jnp.stack([m.posterior().loc + 0.5 for m in _MODELS]),
                     jnp.stack([m.posterior().log_scale - 0.3 for m in _MODELS]))
EXACT_B = GaussianParams(*[jnp.stack(x) for x in zip(*[m.elbo_grad(jax.tree.map(
    lambda x, i=i: x[i], Q_B)) for i, m in enumerate(_MODELS)], strict=True)])

CASES = {  # name: (log_joint, family, params, exact gradient)
    "mean-field": (MODEL.log_joint, MF, Q, MODEL.elbo_grad(Q)),
    "full-rank": (MODEL.log_joint, FR, Q_FR, MODEL.elbo_grad(Q_FR)),
    "batched": (batched_log_joint, MF, Q_B, EXACT_B),
}
ESTIMATORS = {  # name: (objective, estimator, state)
    "total": (E.ELBO(1), E.Reparam(), None),
    "total-entropy": (E.ELBO(1, kl="entropy"), E.Reparam(), None),
    "stl": (E.ELBO(1), E.STL(), None),
    "score": (E.ELBO(4), E.Score(), None),
    "score-ma": (E.ELBO(4), E.Score(E.MovingAverage(0.9)),
                 E.MovingAverageState(jnp.asarray(-60.0), jnp.asarray(3, jnp.int32))),
    "score-loo": (E.ELBO(4), E.Score(E.LeaveOneOut()), None),
    "control-variate": (E.ELBO(4), E.ScoreControlVariate(), None),
}
REPLICATES = 4000


def flat(tree):
    return np.asarray(jax.flatten_util.ravel_pytree(tree)[0], dtype=np.float64)


def replicates(log_joint, family, params, objective, estimator, state=None, n=REPLICATES,
               key=KEY):
    """``(n, P)`` replicate gradient estimates (``conftest.gradient_replicates``)."""
    return gradient_replicates(key, log_joint, family, params, objective, estimator, state, n)


def max_z(samples, target):
    return float(np.max(z_scores(samples, target, floor=1e-6)))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_every_estimator_is_unbiased_on_every_family(case, name):
    log_joint, family, params, exact = CASES[case]
    objective, estimator, state = ESTIMATORS[name]
    g = replicates(log_joint, family, params, objective, estimator, state)
    assert max_z(g, flat(exact)) < Z_MAX


@pytest.mark.parametrize("family,params", [(MF, POST), (FR, FR.init(POST.loc, jnp.diag(
    jnp.exp(POST.log_scale))))])
def test_stl_and_dreg_are_zero_at_the_exact_posterior(family, params):
    total = replicates(MODEL.log_joint, family, params, E.ELBO(1), E.Reparam(), n=256)
    scale = float(np.sum(total.var(axis=0)))
    assert scale > 1.0
    for objective, estimator in ((E.ELBO(1), E.STL()), (E.IWAE(1), E.DReG()),
                                 (E.IWAE(5), E.DReG())):
        g = replicates(MODEL.log_joint, family, params, objective, estimator, n=256)
        # float32 rounding only: (1000 eps)^2 relative to the total derivative's variance
        assert np.sum(g.var(axis=0)) < (1000 * np.finfo(np.float32).eps) ** 2 * scale


def test_dreg_equals_stl_at_k1():
    a = replicates(MODEL.log_joint, MF, Q, E.IWAE(1), E.DReG(), n=64)
    b = replicates(MODEL.log_joint, MF, Q, E.ELBO(1), E.STL(), n=64)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["mean-field", "batched"])
def test_iwae_dreg_and_score_unbiased_stl_biased(case):
    """Against the total derivative (unbiased by construction), paired on the same keys."""
    log_joint, family, params, _ = CASES[case]
    obj = E.IWAE(5)
    n = 8000
    total = replicates(log_joint, family, params, obj, E.Reparam(), n=n)
    for estimator in (E.DReG(), E.Score(E.LeaveOneOut())):
        g = replicates(log_joint, family, params, obj, estimator, n=n)
        assert max_z(g - total, 0.0) < Z_MAX, estimator
    stl = replicates(log_joint, family, params, obj, E.STL(), n=n)
    assert max_z(stl - total, 0.0) > 10.0  # STL's bias is many standard errors


def test_surrogates_keep_the_objective_value():
    values = set()
    for objective, estimator, state in ESTIMATORS.values():
        if objective != E.ELBO(4):
            continue
        s = E.surrogate(KEY, Q, MODEL.log_joint, MF, objective=objective, estimator=estimator,
                        state=estimator.init_state() if state is None else state)
        np.testing.assert_allclose(s.surrogate, s.value, rtol=1e-6)
        values.add(round(float(s.value), 4))
    assert len(values) == 1  # the same draws, the same value, whatever the estimator
    # ELBO(kl="mc") at the sample against its expectation, the exact ELBO
    fn = E.gradient(MODEL.log_joint, MF, objective=E.ELBO(1))
    vals = np.asarray(jax.vmap(lambda k: fn.raw(k, Q, ()).value)(jax.random.split(KEY, 3000)))
    assert abs(vals.mean() - float(MODEL.elbo(Q))) < 5 * vals.std() / math.sqrt(vals.size)


def test_iwae_value_rises_with_k_towards_the_evidence():
    means = []
    for k in (1, 10, 100):
        fn = E.gradient(MODEL.log_joint, MF, objective=E.IWAE(k))
        v = jax.vmap(lambda key, fn=fn: fn.raw(key, Q, ()).value)(jax.random.split(KEY, 500))
        means.append(float(jnp.mean(v)))
    assert means[0] < means[1] < means[2] < float(MODEL.log_evidence())
    assert abs(means[0] - float(MODEL.elbo(Q))) < 0.2


def test_baselines_lower_the_score_variance_by_a_measured_factor():
    """Far from the posterior the signal f_i has a large mean: a baseline removes it."""
    plain = replicates(MODEL.log_joint, MF, Q, E.ELBO(4), E.Score())
    loo = replicates(MODEL.log_joint, MF, Q, E.ELBO(4), E.Score(E.LeaveOneOut()))
    ma_state = E.MovingAverageState(jnp.asarray(float(MODEL.elbo(Q))), jnp.asarray(5))
    ma = replicates(MODEL.log_joint, MF, Q, E.ELBO(4), E.Score(E.MovingAverage()), ma_state)
    var = {k: float(np.sum(v.var(axis=0))) for k, v in
           (("plain", plain), ("loo", loo), ("ma", ma))}
    assert var["plain"] / var["loo"] > 20, var
    assert var["plain"] / var["ma"] > 20, var


@pytest.mark.parametrize("offset", [0.0, 0.4, 1.5])
def test_control_variate_never_worse_than_total_or_stl(offset):
    q = GaussianParams(POST.loc + offset, POST.log_scale + offset / 2)
    var = {}
    for name, est in (("total", E.Reparam()), ("stl", E.STL()),
                      ("cv", E.ScoreControlVariate())):
        g = replicates(MODEL.log_joint, MF, q, E.ELBO(8), est, n=3000)
        var[name] = float(np.sum(g.var(axis=0)))
    # Monte-Carlo error of a variance from 3,000 replicates, and the cost of estimating c
    assert var["cv"] <= 1.15 * min(var["total"], var["stl"]) + 1e-9, var


def test_moving_average_state_is_carried():
    est = E.Score(E.MovingAverage(0.5))
    fn = E.gradient(MODEL.log_joint, MF, objective=E.ELBO(2), estimator=est)
    out = fn(KEY, Q, est.init_state())
    assert int(out.state.count) == 1
    np.testing.assert_allclose(float(out.state.mean), float(jnp.mean(out.value)), rtol=1e-5)
    out2 = fn(jax.random.key(8), Q, out.state)
    want = 0.5 * float(out.state.mean) + 0.5 * float(out2.value)
    np.testing.assert_allclose(float(out2.state.mean), want, rtol=1e-5)


_TRACES = []


def _counting_log_joint(z):
    _TRACES.append(1)
    return -0.5 * jnp.sum(z * z)


def test_gradient_is_jitted_and_cached():
    p1, p2 = MF.init(np.zeros(2)), MF.init(np.array([1.0, -1.0]), 0.5)
    E.estimate(KEY, p1, _counting_log_joint, MF, objective=E.ELBO(4))
    traces = len(_TRACES)
    g2 = E.estimate(jax.random.key(9), p2, _counting_log_joint, MF, objective=E.ELBO(4))
    assert len(_TRACES) == traces > 0  # the second call neither retraces nor probes again
    # d/dloc [-z^2/2 - log q(z)] at z = loc + scale eps is -z: the mean over the 4 draws
    z = MF.sample(jax.random.key(9), p2, 4)
    np.testing.assert_allclose(np.asarray(g2.grad.loc), -np.asarray(z).mean(0), rtol=1e-5,
                               atol=1e-6)


def test_dreg_keeps_the_parameters_dtype_when_the_model_is_float64():
    """x64 on, float32 parameters, a model holding float64 data (a review finding)."""
    with jax.enable_x64(True):
        model = conjugate_gaussian(np.ones((3, 2)))  # float64
        q = MF.init(np.zeros(2, np.float32))
        g = E.estimate(KEY, q, model.log_joint, MF, objective=E.IWAE(3), estimator=E.DReG())
        assert {x.dtype for x in jax.tree.leaves(g.grad)} == {jnp.dtype(jnp.float32)}


def test_gradient_follows_x64():
    with jax.enable_x64(True):
        model = conjugate_gaussian(np.ones((3, 2)))
        g = E.estimate(KEY, MF.init(np.zeros(2)), model.log_joint, MF, estimator=E.STL())
        assert {x.dtype for x in jax.tree.leaves(g.grad)} == {jnp.dtype(jnp.float64)}


LJ = MODEL.log_joint
INT_PARAMS = GaussianParams(np.zeros(3, np.int32), np.zeros(3, np.int32))
KEYS = jax.random.split(KEY, 3)
Q4 = MF.init(np.zeros(4))
Q_E0 = MeanFieldGaussian(0).init(np.zeros(3))


class _NotReparameterized(MeanFieldGaussian):
    """A family whose draws may not be differentiated (as the discrete ones will be)."""

    reparameterized = False


NR = _NotReparameterized()


def test_score_function_runs_on_a_family_without_reparameterisation():
    g = replicates(LJ, NR, Q, E.ELBO(4), E.Score(E.LeaveOneOut()))
    assert max_z(g, flat(MODEL.elbo_grad(Q))) < Z_MAX


@pytest.mark.parametrize("call,match", [
    (lambda: E.estimate(KEY, Q, LJ, MF, estimator="stl"), r"estimators are objects now"),
    (lambda: E.estimate(KEY, Q, LJ, MF, objective="elbo"), r"objective must be ELBO"),
    (lambda: E.ELBO(0), r"num_samples must be >= 1"),
    (lambda: E.IWAE(1.5), r"num_samples must be an integer"),
    (lambda: E.ELBO(kl="exact"), r"kl must be one of"),
    (lambda: E.Score(baseline="vimco"), r"baseline must be None"),
    (lambda: E.MovingAverage(1.0), r"decay must be in \[0, 1\)"),
    (lambda: E.estimate(KEY, Q, LJ, MF, objective=E.ELBO(1), estimator=E.DReG()),
     r"DReG\(\) applies to objective IWAE"),
    (lambda: E.estimate(KEY, Q, LJ, MF, objective=E.ELBO(kl="entropy"), estimator=E.STL()),
     r"STL\(\) needs log q at the samples"),
    (lambda: E.estimate(KEY, Q, LJ, MF, objective=E.ELBO(1),
                        estimator=E.Score(E.LeaveOneOut())), r"needs num_samples >= 2"),
    (lambda: E.estimate(KEY, Q, LJ, NR, estimator=E.STL()), r"not reparameterised: use Score"),
    (lambda: E.estimate(KEY, Q, LJ, NR, objective=E.IWAE(2), estimator=E.DReG()),
     r"not reparameterised"),
    (lambda: E.estimate(KEY, Q, LJ, MF, objective=E.ELBO(1), estimator=E.ScoreControlVariate()),
     r"needs num_samples >= 2"),
    (lambda: E.estimate(KEY, Q, LJ, MF, objective=E.ELBO(2), estimator=E.Score(
        E.MovingAverage())), r"carries a state between steps"),
    (lambda: E.estimate(KEY, Q, LJ, MF, objective=E.ELBO(kl="analytic")),
     r"StandardNormalPrior"),
    (lambda: E.estimate(KEY, Q, lambda z: z, MF), r"log_joint must return a scalar"),
    (lambda: E.estimate(KEY, Q_B, LJ, MF), r"log_joint must return shape \(3,\)"),
    (lambda: E.estimate(KEY, Q4, LJ, MF),
     r"log_joint failed on one draw z of shape \(4,\)"),
    (lambda: E.estimate(KEY, Q_B, lambda z: jnp.sum(z), MF),
     r"must return shape \(3,\) \(one value per data point\)"),
    (lambda: E.estimate(KEY, Q, "log p", MF), r"log_joint must be a callable"),
    (lambda: E.estimate(KEY, Q, LJ, object()), r"family must be a vijax family"),
    (lambda: E.estimate(KEY, Q_FR, LJ, MF), r"params.log_scale must have params.loc's shape"),
    (lambda: E.estimate(KEY, {"loc": Q.loc}, LJ, MF), r"params must be GaussianParams"),
    (lambda: E.estimate(KEY, INT_PARAMS, LJ, MF), r"params.loc must hold floating-point"),
    (lambda: E.estimate(np.zeros(5), Q, LJ, MF), r"key must be"),
    (lambda: E.estimate(KEYS, Q, LJ, MF), r"key must be a single"),
    (lambda: E.estimate(KEY, Q, LJ, MF, estimator=E.Score(), state=(1.0,)),
     r"state must have the structure"),
    (lambda: E.estimate(KEY, Q, LJ, MeanFieldGaussian), r"family must be a family object"),
    (lambda: E.estimate(KEY, Q, lambda z: jnp.sum(z).astype(jnp.int32), MF),
     r"must return floating-point log densities"),
    (lambda: E.estimate(KEY, Q_E0, E.StandardNormalPrior(lambda z: -z**2), MeanFieldGaussian(0),
                        objective=E.ELBO(kl="analytic")), r"prior has event_ndim = 1"),
])
def test_bad_input_fails_before_compilation(call, match):
    with no_compilation(), pytest.raises(ValueError, match=match):
        call()
