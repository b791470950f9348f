"""Tests of vijax.vi: fit is init then steps, a step is the optimizer's update along the
estimator, fitting reaches the exact posterior, diagnostics along the run, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import no_compilation

from vijax import estimators as E
from vijax import vi
from vijax.families import FullRankGaussian, MeanFieldGaussian
from vijax.models import simulate_conjugate_gaussian

KEY = jax.random.key(0)
MF = MeanFieldGaussian()
MODEL = simulate_conjugate_gaussian(jax.random.key(1), num_data=10, dim=3, prior_loc=0.5,
                                    prior_scale=2.0, noise_scale=1.5)
OPT = optax.adam(0.05)  # one object: compiled steps are shared between tests
P0 = MF.init(jnp.zeros(3))
P4 = MF.init(np.zeros(4))


def test_fit_is_init_then_step_with_the_split_keys():
    res = vi.fit(KEY, P0, MODEL.log_joint, MF, OPT, num_steps=7, estimator=E.STL(),
                 progress=False)
    state = vi.init(P0, MF, OPT, E.STL())
    keys = jax.random.split(jax.random.split(KEY)[0], 7)
    values = []
    for k in keys:
        state, info = vi.step(k, state, MODEL.log_joint, MF, OPT, estimator=E.STL())
        values.append(float(info.value))
    for a, b in zip(jax.tree.leaves(res.state.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.values, values, rtol=1e-5)
    assert int(res.state.step) == 7 and res.diagnostics is None


def test_init_takes_a_plain_tuple_and_step_keeps_its_structure():
    state = vi.init((jnp.zeros(3), jnp.zeros(3)), MF, OPT, E.Reparam())
    new, _ = vi.step(KEY, state, MODEL.log_joint, MF, OPT)
    assert type(new.params).__name__ == "GaussianParams"


def test_a_step_is_the_optimizer_update_along_the_estimate():
    state = vi.init(P0, MF, OPT, E.Reparam())
    new, info = vi.step(KEY, state, MODEL.log_joint, MF, OPT)
    est = E.estimate(KEY, P0, MODEL.log_joint, MF)
    updates, _ = OPT.update(jax.tree.map(jnp.negative, est.grad), OPT.init(P0), P0)
    want = optax.apply_updates(P0, updates)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(float(info.value), float(est.value), rtol=1e-6)


def test_fit_reaches_the_exact_posterior_and_stl_variance_vanishes():
    res = vi.fit(KEY, P0, MODEL.log_joint, MF, OPT, num_steps=600, estimator=E.STL(),
                 diagnostics_every=200, num_replicates=64, progress=False)
    post = MODEL.posterior()
    np.testing.assert_allclose(res.state.params.loc, post.loc, atol=2e-3)
    np.testing.assert_allclose(res.state.params.log_scale, post.log_scale, atol=2e-3)
    assert float(MODEL.kl_to_posterior(res.state.params)) < 1e-4
    d = res.diagnostics
    np.testing.assert_array_equal(d.step, [0, 200, 400, 600])
    assert d.variance_trace[0] > 1.0 and d.variance_trace[-1] < 1e-6 * d.variance_trace[0]
    assert set(d.group_variance) == {"loc", "log_scale"} and d.group_snr["loc"].shape == (4,)
    assert res.values.shape == (600,)


def test_fit_with_a_stateful_baseline_and_a_full_rank_family():
    fr = FullRankGaussian()
    est = E.Score(E.MovingAverage(0.9))
    res = vi.fit(KEY, fr.init(jnp.zeros(3)), MODEL.log_joint, fr, optax.adam(0.02),
                 num_steps=300, objective=E.ELBO(8), estimator=est, progress=False)
    assert int(res.state.estimator_state.count) == 300
    # from a KL of 23 nats to the posterior to a few hundredths (the score function is noisy)
    assert float(MODEL.kl_to_posterior(fr.init(jnp.zeros(3)))) > 20
    assert float(MODEL.kl_to_posterior(res.state.params)) < 0.2


def test_nonfinite_objective_stops_with_the_step():
    def bad_log_joint(z):
        return jnp.where(jnp.sum(z) > 1e9, 0.0, jnp.log(-1.0 + 0 * jnp.sum(z)))

    with pytest.raises(FloatingPointError, match="step 1"):
        vi.fit(KEY, P0, bad_log_joint, MF, OPT, num_steps=3, progress=False)


@pytest.mark.parametrize("kwargs,match", [
    ({"optimizer": "adam"}, "optimizer must be an optax"),
    ({"num_steps": 0}, "num_steps must be >= 1"),
    ({"estimator": "stl"}, "estimators are objects"),
    ({"diagnostics_every": 0}, "diagnostics_every must be >= 1"),
    ({"num_replicates": 1}, "num_replicates must be >= 2"),
    ({"key": 3}, "key must be"),
    ({"params": P4}, "log_joint failed"),
])
def test_bad_input_fails_before_training(kwargs, match):
    args = {"key": KEY, "params": P0, "log_joint": MODEL.log_joint, "family": MF,
            "optimizer": OPT, "num_steps": 5, "progress": False, **kwargs}
    with no_compilation(), pytest.raises(ValueError, match=match):
        vi.fit(args.pop("key"), args.pop("params"), args.pop("log_joint"), args.pop("family"),
               args.pop("optimizer"), **args)
