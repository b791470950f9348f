"""Stochastic VI for the earthquake mixture (vijax.cavi.stochastic): the step against CAVI
and against its definition, the schedule, streaming sources, and bad input.

Every test uses K = 4 clusters, minibatches of 100 events and windows of 4 minibatches, so
that the compiled step, shuffle and window loop are shared."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_refused, bad_case_ids

from vijax import cavi

PRIOR = cavi.Prior(tau=0.5, alpha=2.0, beta=0.2, nu=(1.0, -1.0), rho=0.1)
LEARNED = PRIOR._replace(concentration=1.5)
PRECISIONS = cavi.Prior(alpha=2.0, beta=0.2, nu=(1.0, -1.0), rho=0.1, concentration=1.5,
                        tau_shape=2.0, tau_rate=4.0)
MEANS = np.array([[0.0, 0.0], [12.0, 0.0], [0.0, 12.0], [12.0, 12.0]])
RATES = np.array([4.0, 15.0, 40.0, 90.0])
K, N, B, WB = 4, 2000, 100, 4


@pytest.fixture(scope="module")
def events():
    """2,000 events of four well-separated clusters (weights 1/4), float32 NumPy arrays."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, K, N)
    x = MEANS[labels] + rng.standard_normal((N, 2)) / np.sqrt(0.5)
    return x.astype(np.float32), rng.poisson(RATES[labels]).astype(np.float32)


def _globals(params):
    return params._replace(responsibilities=None)


def _weighted(events):
    """The events with weights 1: every test's full data set, so that one compiled init,
    sweep and step serve them all."""
    return cavi.as_observations(events)._replace(weights=jnp.ones(N))


# ----------------------------------------------------------------- the step against CAVI


@pytest.mark.parametrize("prior_", [LEARNED, PRECISIONS], ids=["weights", "precisions"])
def test_one_full_batch_step_with_rho_one_is_one_cavi_sweep(events, prior_):
    """With the whole data set as the batch (scale N/|B| = 1) and rho_1 = (1 + 0)^-kappa = 1,
    the step's global factors are the CAVI sweep's, to the bit: with learned weights, and
    with learned per-cluster precisions too (the blend is generic over Params)."""
    obs, prior = _weighted(events), cavi.as_prior(prior_, K)
    params0, _ = cavi.init(jax.random.key(1), obs, prior_, K)
    swept, _ = cavi.sweep(obs, prior, params0)
    state = cavi.SVIState(_globals(params0), jnp.zeros((), jnp.int32))
    stepped, info = cavi.stochastic_step(state, obs, prior, N, tau0=0.0, kappa=0.7)
    assert float(info.step_size) == 1.0 and int(stepped.step) == 1
    for field in cavi.Params._fields[1:]:
        if getattr(swept, field) is None:
            assert getattr(stepped.params, field) is None
            continue
        np.testing.assert_array_equal(getattr(stepped.params, field), getattr(swept, field),
                                      err_msg=field)
    # The sweep moved the factors: the equality is not that of two unchanged states.
    assert float(jnp.max(jnp.abs(swept.mean - params0.mean))) > 1e-3


def test_a_step_blends_the_scaled_coordinate_update_in_natural_parameters(events):
    """Step t = 6 from an arbitrary state, on a minibatch of 60 events padded to 2,000 rows,
    against the update written out from the public building blocks: the intermediate
    factors from the statistics times N/|B| (MODEL.md section 1's updates), blended with
    rho_6 = (6 + tau0)^-kappa, linearly in (a, b, s, g) and in s*m for the means."""
    prior = cavi.as_prior(LEARNED, K)
    weights = np.zeros(N, np.float32)
    weights[np.random.default_rng(0).choice(N, 60, replace=False)] = 1.0
    batch = cavi.as_observations(events)._replace(weights=jnp.asarray(weights))
    params0, _ = cavi.init(jax.random.key(2), _weighted(events), LEARNED, K)
    old = _globals(params0)._replace(gamma_shape=params0.gamma_shape * 0.7,
                                     precision=params0.precision * 1.3,
                                     mean=params0.mean + 0.5)
    n_total, tau0, kappa = 50_000, 3.0, 0.6
    state = cavi.SVIState(old, jnp.asarray(5, jnp.int32))
    new, info = cavi.stochastic_step(state, batch, prior, n_total, tau0=tau0, kappa=kappa)

    with jax.enable_x64(False):
        r = np.asarray(cavi.responsibilities(batch, prior, old), np.float64)
    w, x, s = weights[:, None], np.asarray(events[0], np.float64), np.asarray(events[1])
    scale = n_total / 60.0
    counts = scale * (w * r).sum(0)
    strength_sums = scale * (w * r * s[:, None]).sum(0)
    location_sums = scale * (w * r).T @ x
    nu, tau, rho0 = np.array([1.0, -1.0]), 0.5, 0.1
    hat = {"gamma_shape": 2.0 + strength_sums, "gamma_rate": 0.2 + counts,
           "precision": rho0 + tau * counts, "concentration": 1.5 + counts}
    mean_hat = (rho0 * nu + tau * location_sums) / hat["precision"][:, None]
    rho = (6 + tau0) ** -kappa
    assert float(info.step_size) == pytest.approx(rho, rel=1e-6)
    assert int(new.step) == 6
    for field, value in hat.items():
        expected = (1 - rho) * np.asarray(getattr(old, field), np.float64) + rho * value
        np.testing.assert_allclose(getattr(new.params, field), expected, rtol=2e-5,
                                   err_msg=field)
    s_old, m_old = np.asarray(old.precision, np.float64), np.asarray(old.mean, np.float64)
    s_new = (1 - rho) * s_old + rho * hat["precision"]
    m_new = ((1 - rho) * s_old[:, None] * m_old + rho * hat["precision"][:, None] * mean_hat
             ) / s_new[:, None]
    np.testing.assert_allclose(new.params.mean, m_new, rtol=2e-5, atol=2e-5)
    # Blending the means linearly instead would be far off: the check can fail.
    assert np.max(np.abs((1 - rho) * m_old + rho * mean_hat - m_new)) > 1e-2


def test_a_step_blends_learned_precisions_from_the_scaled_statistics(events):
    """With learned precisions: q(mu) from E[tau_k] of the current state, then q(tau) from
    the new q(mu), both from statistics times N/|B|, blended linearly in (c, d) and in s*m."""
    prior = cavi.as_prior(PRECISIONS, K)
    weights = np.zeros(N, np.float32)
    weights[np.random.default_rng(1).choice(N, 80, replace=False)] = 1.0
    batch = cavi.as_observations(events)._replace(weights=jnp.asarray(weights))
    params0, _ = cavi.init(jax.random.key(3), _weighted(events), PRECISIONS, K)
    old = _globals(params0)._replace(mean=params0.mean + 0.3,
                                     tau_rate=params0.tau_rate * 1.5)
    n_total, tau0, kappa = 20_000, 2.0, 0.8
    new, _ = cavi.stochastic_step(cavi.SVIState(old, jnp.asarray(3, jnp.int32)), batch, prior,
                                  n_total, tau0=tau0, kappa=kappa)

    r = np.asarray(cavi.responsibilities(batch, prior, old), np.float64) * weights[:, None]
    x, scale = np.asarray(events[0], np.float64), n_total / 80.0
    nu, rho0, c0, d0 = np.array([1.0, -1.0]), 0.1, 2.0, 4.0
    e_tau = np.asarray(old.tau_shape, np.float64) / np.asarray(old.tau_rate, np.float64)
    counts = scale * r.sum(0)
    s_hat = rho0 + e_tau * counts
    m_hat = nu + e_tau[:, None] * scale * (r.T @ (x - nu)) / s_hat[:, None]
    squares = ((x[:, None, :] - m_hat[None]) ** 2).sum(-1) + 2.0 / s_hat[None]
    c_hat, d_hat = c0 + counts, d0 + 0.5 * scale * (r * squares).sum(0)
    rho = (4 + tau0) ** -kappa
    for field, value in (("tau_shape", c_hat), ("tau_rate", d_hat), ("precision", s_hat)):
        expected = (1 - rho) * np.asarray(getattr(old, field), np.float64) + rho * value
        np.testing.assert_allclose(getattr(new.params, field), expected, rtol=2e-4,
                                   err_msg=field)
    s_old = np.asarray(old.precision, np.float64)
    m_new = ((1 - rho) * s_old[:, None] * np.asarray(old.mean, np.float64)
             + rho * s_hat[:, None] * m_hat) / ((1 - rho) * s_old + rho * s_hat)[:, None]
    np.testing.assert_allclose(new.params.mean, m_new, rtol=2e-4, atol=2e-4)


def test_the_step_size_schedule():
    t = np.arange(1, 200)
    rho = np.asarray(cavi.stochastic_step_size(t, 4.0, 0.75))
    np.testing.assert_allclose(rho, (t + 4.0) ** -0.75, rtol=1e-6)
    assert np.all(np.diff(rho) < 0)
    assert float(cavi.stochastic_step_size(1, 0.0, 0.9)) == 1.0  # tau0 = 0 forgets the start


# --------------------------------------------------------------------- SVI reaches CAVI


@pytest.fixture(scope="module")
def cavi_and_svi(events):
    """Batch CAVI (sweeps to convergence) and SVI (10 passes of 20 minibatches of 100
    events) from the same start."""
    obs, prior = _weighted(events), cavi.as_prior(LEARNED, K)
    start, _ = cavi.init(jax.random.key(0), obs, LEARNED, K)
    params, value, previous = start, np.inf, -np.inf
    for _ in range(500):
        params, value = cavi.sweep(obs, prior, params)
        if abs(float(value) - previous) < 1e-7 * abs(float(value)):
            break
        previous = float(value)
    holdout = (events[0][:500] + 0.25, events[1][:500])
    svi = cavi.fit_stochastic(jax.random.key(5), events, LEARNED, K, batch_size=B,
                              window_batches=WB, num_passes=10, tau0=1.0, kappa=0.7,
                              init_params=_globals(start), holdout=holdout, eval_every=2)
    return start, params, float(value), svi, holdout


def test_svi_reaches_the_batch_cavi_elbo(events, cavi_and_svi):
    """Tolerance 1e-4 nats per event. SVI's final global factors carry the noise of the last
    minibatches, shrunk by rho_200 = 201^-0.7 = 0.024; the ELBO is quadratic about CAVI's
    fixed point, so the gap is second order in that noise: measured 4e-6 per event here.
    From the same start the ELBO per event rises by 29 nats; without the N/|B| scale (steps
    told num_events = |B|) SVI stops 6e-2 per event short, so the test can fail."""
    start, _, batch_elbo, svi, _ = cavi_and_svi
    prior = cavi.as_prior(LEARNED, K)
    obs = _weighted(events)
    _, svi_elbo = cavi.assign_with_elbo(obs, prior, svi.params)
    _, start_elbo = cavi.assign_with_elbo(obs, prior, _globals(start))
    gap = (batch_elbo - float(svi_elbo)) / N
    assert -1e-5 < gap < 1e-4, gap
    assert (batch_elbo - float(start_elbo)) / N > 1.0


def test_the_run_records_its_schedule_and_held_out_elbo(cavi_and_svi):
    _, batch_params, _, svi, holdout = cavi_and_svi
    steps = len(svi.step_sizes)
    assert steps == 10 * N // B
    np.testing.assert_allclose(svi.step_sizes, (np.arange(1, steps + 1) + 1.0) ** -0.7,
                               rtol=1e-6)
    np.testing.assert_array_equal(svi.batch_events, B)
    h = svi.history
    # every 2 windows of 4 minibatches, plus the start
    np.testing.assert_array_equal(h.step, np.arange(0, steps + 1, 2 * WB))
    np.testing.assert_array_equal(h.events, h.step * B)
    # the held-out ELBO is the public function's, and rises from the start to CAVI's level
    assert h.held_out_elbo[-1] == pytest.approx(
        float(cavi.held_out_elbo(holdout, LEARNED, svi.params)), abs=1e-6)
    final_cavi = float(cavi.held_out_elbo(holdout, LEARNED, batch_params))
    assert h.held_out_elbo[0] < final_cavi - 1.0
    assert abs(h.held_out_elbo[-1] - final_cavi) < 1e-3


def test_held_out_elbo_is_the_per_event_data_part_of_the_elbo(cavi_and_svi):
    """(ELBO at the optimal q(Z) minus the global terms) / M, from the model's functions."""
    params, holdout = cavi_and_svi[3].params, cavi_and_svi[4]
    prior = cavi.as_prior(LEARNED, K)
    _, value = cavi.assign_with_elbo(cavi.as_observations(holdout), prior, params)
    expected = (float(value) - float(cavi.global_terms(prior, params))) / len(holdout[1])
    assert float(cavi.held_out_elbo(holdout, LEARNED, params)) == pytest.approx(expected,
                                                                                rel=1e-6)


# ------------------------------------------------------------------------- streaming


def _batches(key, source, **kwargs):
    return [tuple(np.asarray(leaf) for leaf in b)
            for b in cavi.minibatches(key, source, B, window_batches=WB, **kwargs)]


def _as_rows(batches):
    """The weight-1 events of ``batches`` as sorted rows (x, y, S)."""
    rows = np.concatenate([np.column_stack([x[w > 0], s[w > 0]]) for x, s, w in batches])
    return rows[np.lexsort(rows.T[::-1])]


@pytest.fixture(scope="module")
def event_file(events, tmp_path_factory):
    """The events written to a .npy file in three chunks of unequal sizes."""
    x, s = events
    path = tmp_path_factory.mktemp("svi") / "events.npy"
    cuts = [0, 700, 1300, N]
    cavi.write_events(path, ((x[a:b], s[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)),
                      N)
    return path


def test_minibatches_from_a_memmap_or_a_file_equal_those_in_memory(events, event_file):
    """For the same key, minibatch i of a memmap, of a path read at offsets, of an (N, 3)
    array and of the arrays in memory are the same; each pass holds every event once, in
    minibatches of at most 100 events padded with weight 0, and the next pass differs."""
    x, s = events
    key = jax.random.key(3)
    in_memory = _batches(key, (x, s))
    mapped = np.load(event_file, mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    for source in (mapped, event_file, str(event_file), np.column_stack([x, s])):
        other = _batches(key, source)
        assert len(other) == len(in_memory)
        for a, b in zip(in_memory, other, strict=True):
            for leaf_a, leaf_b in zip(a, b, strict=True):
                np.testing.assert_array_equal(leaf_a, leaf_b)
    # 2,000 events: windows of 400 events, 5 of them, each 4 full minibatches
    assert len(in_memory) == N // B
    assert all(w.shape == (B,) and w.sum() <= B for _, _, w in in_memory)
    data_rows = np.column_stack([x, s])
    np.testing.assert_array_equal(_as_rows(in_memory), data_rows[np.lexsort(data_rows.T[::-1])])
    second = _batches(key, (x, s), pass_index=1)
    assert not np.array_equal(second[0][1], in_memory[0][1])


def test_a_ragged_source_and_a_stream_of_chunks_are_read_once_per_pass(events):
    """1,234 events: three full windows and a ragged one of 34 events, spread over one
    minibatch; a stream of uneven chunks (a callable, called once per pass) gives every
    event once as well."""
    x, s = events[0][:1234], events[1][:1234]
    data_rows = np.column_stack([x, s])
    data_rows = data_rows[np.lexsort(data_rows.T[::-1])]
    batches = _batches(jax.random.key(4), (x, s))
    assert len(batches) == 3 * WB + 1
    assert sorted(int(w.sum()) for _, _, w in batches)[0] == 34
    np.testing.assert_array_equal(_as_rows(batches), data_rows)

    def chunks():
        cuts = [0, 150, 151, 900, 1234]
        return ((x[a:b], s[a:b]) for a, b in zip(cuts, cuts[1:], strict=False))

    streamed = _batches(jax.random.key(4), chunks, num_events=1234)
    np.testing.assert_array_equal(_as_rows(streamed), data_rows)
    assert len(streamed) == len(batches)


def test_fitting_from_a_file_equals_fitting_in_memory(events, event_file):
    kwargs = {"batch_size": B, "window_batches": WB, "num_passes": 2, "num_steps": 30}
    in_memory = cavi.fit_stochastic(jax.random.key(7), events, LEARNED, K, **kwargs)
    from_file = cavi.fit_stochastic(jax.random.key(7), event_file, LEARNED, K, **kwargs)
    for a, b in zip(in_memory.params, from_file.params, strict=True):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    assert len(in_memory.step_sizes) == 30 and int(in_memory.state.step) == 30


def test_bad_values_in_a_streamed_file_are_refused_when_read(events, tmp_path):
    x, s = events
    path = tmp_path / "bad.npy"
    records = np.empty(N, cavi.EVENT_DTYPE)
    records["locations"], records["strengths"] = x, s
    records["locations"][1500] = np.nan
    np.save(path, records)
    with pytest.raises(ValueError, match=r"source \(events 1200\.\.1599\) locations"):
        cavi.fit_stochastic(jax.random.key(0), path, LEARNED, K, batch_size=B,
                            window_batches=WB)


# ------------------------------------------------------------------------- bad input

GOOD_X = np.zeros((6, 2))
GOOD_S = np.arange(6.0)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """Valid arguments of every public function, built (and compiled) once."""
    obs = cavi.as_observations((GOOD_X, GOOD_S))
    state = cavi.stochastic_init(jax.random.key(0), obs, PRIOR, 2, 6)
    folder = tmp_path_factory.mktemp("bad")
    np.save(folder / "wide.npy", np.zeros((6, 4), np.float32))
    np.save(folder / "fortran.npy", np.asfortranarray(np.zeros((6, 3), np.float32)))
    (folder / "text.npy").write_text("not an array")
    return {"obs": obs, "state": state, "prior": cavi.as_prior(PRIOR, 2), "folder": folder}


def _defaults(name, v):
    key, raw = jax.random.key(0), (GOOD_X, GOOD_S)
    return {
        "fit_stochastic": {"key": key, "source": raw, "prior": PRIOR, "num_clusters": 2,
                           "batch_size": 3},
        "stochastic_init": {"key": key, "batch": raw, "prior": PRIOR, "num_clusters": 2,
                            "num_events": 6},
        "stochastic_step": {"state": v["state"], "batch": v["obs"], "prior": v["prior"],
                            "num_events": 6},
        "stochastic_step_size": {"t": 3},
        "held_out_elbo": {"data": raw, "prior": PRIOR, "params": v["state"].params},
        "minibatches": {"key": key, "source": raw, "batch_size": 3},
        "write_events": {"path": v["folder"] / "out.npy", "chunks": [raw], "num_events": 6},
    }[name]


SCHEDULE = [({"tau0": -1.0}, "tau0"), ({"tau0": np.nan}, "tau0"), ({"tau0": "1"}, "tau0"),
            ({"kappa": 0.5}, "kappa"), ({"kappa": 1.01}, "kappa"), ({"kappa": None}, "kappa")]
SOURCES = [  # (a bad source, the argument named)
    ("quakes", "source"), (42, "source"),
    ((np.zeros((6, 3)), GOOD_S), "source.locations"),
    ((GOOD_X, GOOD_S[:5]), "source.strengths"),
    ((np.zeros((0, 2)), np.zeros(0)), "source.locations"),
    ((np.full((6, 2), np.nan), GOOD_S), "source"),
    ((GOOD_X, GOOD_S + 0.5), "source"),
    ((GOOD_X, -GOOD_S), "source"),
    ((GOOD_X.astype(np.complex64), GOOD_S), "source"),
    (np.zeros(6, [("locations", "<f4", (3,)), ("strengths", "<i4")]), "source"),
    (np.zeros(6, [("x", "<f4", (2,)), ("strengths", "<i4")]), "source"),
    (cavi.Observations(GOOD_X, GOOD_S, np.ones(6)), "source.weights"),
    ("missing.npy", "source"), ("wide.npy", "source"), ("fortran.npy", "source"),
    ("text.npy", "source"),
]
BAD_CASES = (
    [("fit_stochastic", change, arg) for change, arg in [
        ({"key": 0}, "key"), ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"), ({"batch_size": True}, "batch_size"),
        ({"num_passes": 0}, "num_passes"), ({"num_steps": -1}, "num_steps"),
        ({"window_batches": 0}, "window_batches"), ({"eval_every": 0}, "eval_every"),
        ({"num_clusters": 4}, "num_clusters"), ({"num_clusters": 7}, "num_clusters"),
        ({"prior": PRIOR._replace(tau=-1.0)}, "prior.tau"),
        ({"num_events": 7}, "num_events"), ({"num_events": 0}, "num_events"),
        ({"source": lambda: iter([])}, "num_events"),
        ({"source": iter([(GOOD_X, GOOD_S)]), "num_events": 6, "num_passes": 2},
         "num_passes"),
        ({"holdout": (np.zeros((6, 3)), GOOD_S)}, "holdout"),
        ({"holdout": (GOOD_X, GOOD_S - 1)}, "holdout"),
        ({"init_params": "wide_mean"}, "init_params.mean"),
        ({"init_params": "three_clusters"}, "init_params"),
        ({"init_params": "learned"}, "prior and params disagree"),
        ({"init_params": "negative"}, "init_params.precision"),
        *SCHEDULE, *[({"source": src}, arg) for src, arg in SOURCES]]]
    + [("minibatches", change, arg) for change, arg in [
        ({"key": "key"}, "key"), ({"batch_size": -3}, "batch_size"),
        ({"window_batches": 1.5}, "window_batches"), ({"pass_index": -1}, "pass_index"),
        ({"num_events": 5}, "num_events"),
        *[({"source": src}, arg) for src, arg in SOURCES]]]
    + [("stochastic_init", change, arg) for change, arg in [
        ({"key": None}, "key"), ({"batch": (GOOD_X, GOOD_S + 0.5)}, "batch"),
        ({"num_clusters": 7}, "num_clusters"), ({"num_events": 5}, "num_events"),
        ({"num_events": 6.0}, "num_events"),
        ({"prior": PRIOR._replace(rho=0.0)}, "prior.rho")]]
    + [("stochastic_step", change, arg) for change, arg in [
        ({"state": "params"}, "state"), ({"state": "float_step"}, "state.step"),
        ({"batch": (GOOD_X, GOOD_S)}, "batch"),
        ({"batch": "wide_batch"}, "batch.locations"),
        ({"prior": "not a prior"}, "prior"), ({"num_events": 0}, "num_events"),
        ({"num_events": 2.5}, "num_events"), *SCHEDULE]]
    + [("stochastic_step_size", change, arg) for change, arg in [
        ({"t": 0}, "t"), ({"t": np.array([1.0, np.nan])}, "t"), ({"t": "one"}, "t"),
        *SCHEDULE]]
    + [("held_out_elbo", change, arg) for change, arg in [
        ({"data": (GOOD_X, -GOOD_S)}, "data.strengths"),
        ({"data": "quakes"}, "data"),
        ({"params": "wide_mean"}, "params.mean"), ({"params": "negative"}, "params.precision"),
        ({"params": "learned"}, "prior and params disagree")]]
    + [("write_events", change, arg) for change, arg in [
        ({"path": 3}, "path"), ({"num_events": 0}, "num_events"),
        ({"num_events": 7}, "num_events"), ({"chunks": 5}, "chunks"),
        ({"chunks": [(GOOD_X, GOOD_S + 0.5)]}, "chunks[0]"),
        ({"chunks": [(GOOD_X, GOOD_S * 1e10)]}, "chunks[0]"),
        ({"chunks": [(np.zeros((6, 3)), GOOD_S)]}, "chunks[0].locations")]]
)


def _resolve(name, change, v):
    args = _defaults(name, v)
    params = v["state"].params
    special = {
        "params": params,
        "three_clusters": params._replace(gamma_shape=jnp.ones(3), gamma_rate=jnp.ones(3),
                                          mean=jnp.zeros((3, 2)), precision=jnp.ones(3)),
        "wide_mean": params._replace(mean=jnp.zeros((2, 3))),
        "learned": params._replace(concentration=jnp.ones(2)),
        "negative": params._replace(precision=-params.precision),
        "float_step": v["state"]._replace(step=jnp.zeros(())),
        "wide_batch": v["obs"]._replace(locations=jnp.zeros((6, 3))),
    }
    for field, value in change.items():
        if isinstance(value, str) and value in special:
            value = special[value]
            if field == "state" and not isinstance(value, cavi.SVIState):
                value = v["state"]._replace(params=value) if value is not params else value
        elif field == "source" and isinstance(value, str) and value.endswith(".npy"):
            value = v["folder"] / value
        args[field] = value
    return args


def test_every_public_function_has_bad_input_cases():
    from vijax.cavi import stochastic

    functions = {name for name in stochastic.__all__ if not name[0].isupper()}
    assert functions == {name for name, _, _ in BAD_CASES}


@pytest.mark.parametrize(("name", "change", "argument"), BAD_CASES, ids=bad_case_ids(BAD_CASES))
def test_bad_input_raises_a_value_error_naming_the_argument_before_compiling(
        name, change, argument, valid):
    args = _resolve(name, change, valid)

    def call():
        result = getattr(cavi, name)(**args)
        if name == "minibatches":  # a generator: its checks run at the first batch
            next(result)

    assert_refused(argument, call)
    assert not (valid["folder"] / "out.npy").exists() or name != "write_events"
