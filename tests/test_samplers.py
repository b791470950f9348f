"""Tests of vijax.samplers: goodness of fit, exact Gumbel-max, closed-form gradients, bad input.

Statistical thresholds: goodness-of-fit p-values > 1e-4 with fixed keys (deterministic);
Monte-Carlo gradients within 5 estimated standard errors.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vijax import samplers as S

N = 100_000
KEY = jax.random.key(20260101)
PROBS = np.array([[0.1, 0.2, 0.5, 0.2], [0.7, 0.1, 0.1, 0.1]], dtype=np.float32)
P_MIN = 1e-4


def maybe_jit(fn, jit, **static):
    f = partial(fn, **static)
    return jax.jit(f) if jit else f


def chi2_pvalue(counts, probs):
    return stats.chisquare(counts, probs * counts.sum()).pvalue


def category_counts(idx, k):
    return np.bincount(np.asarray(idx).ravel(), minlength=k)


# ----------------------------------------------------------------------------- goodness of fit


@pytest.mark.parametrize("jit", [False, True])
def test_exponential_matches_scipy(jit):
    rate = jnp.array([0.5, 1.0, 3.0])
    z = np.asarray(maybe_jit(S.exponential, jit, sample_shape=(N,))(KEY, rate))
    assert z.shape == (N, 3) and np.all(z >= 0) and np.all(np.isfinite(z))
    for j, r in enumerate(np.asarray(rate)):
        assert stats.kstest(z[:, j], stats.expon(scale=1 / r).cdf).pvalue > P_MIN


@pytest.mark.parametrize("jit", [False, True])
def test_normal_matches_scipy(jit):
    loc, scale = jnp.array([[-1.0], [2.0]]), jnp.array([0.5, 3.0])  # batch (2, 2)
    z = np.asarray(maybe_jit(S.normal, jit, sample_shape=N)(KEY, loc, scale))
    assert z.shape == (N, 2, 2)
    for i in range(2):
        for j in range(2):
            dist = stats.norm(float(loc[i, 0]), float(scale[j]))
            assert stats.kstest(z[:, i, j], dist.cdf).pvalue > P_MIN


@pytest.mark.parametrize("jit", [False, True])
def test_gumbel_matches_scipy(jit):
    g = np.asarray(maybe_jit(S.gumbel, jit, sample_shape=(N,))(KEY, 1.0, jnp.array([1.0, 2.0])))
    assert np.all(np.isfinite(g))
    for j, sc in enumerate([1.0, 2.0]):
        assert stats.kstest(g[:, j], stats.gumbel_r(1.0, sc).cdf).pvalue > P_MIN


@pytest.mark.parametrize("jit", [False, True])
def test_categorical_gumbel_max_matches_probs(jit):
    for kw in ({"probs": PROBS}, {"logits": np.log(PROBS) + 3.0}):  # logits up to a constant
        idx = np.asarray(maybe_jit(S.categorical, jit, sample_shape=(N,))(KEY, **kw))
        assert idx.shape == (N, 2)
        for b in range(2):
            assert chi2_pvalue(category_counts(idx[:, b], 4), PROBS[b]) > P_MIN


_gumbel_softmax = jax.jit(S.gumbel_softmax, static_argnames="sample_shape")
_categorical = jax.jit(S.categorical, static_argnames="sample_shape")


@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0, 10.0, 100.0])
def test_gumbel_softmax_argmax_is_exactly_categorical(temperature):
    y = _gumbel_softmax(KEY, temperature, probs=PROBS, sample_shape=(N,))
    idx = np.asarray(jnp.argmax(y, axis=-1))
    np.testing.assert_array_equal(idx, np.asarray(_categorical(KEY, probs=PROBS,
                                                               sample_shape=(N,))))
    for b in range(2):
        assert chi2_pvalue(category_counts(idx[:, b], 4), PROBS[b]) > P_MIN
    np.testing.assert_allclose(np.asarray(y).sum(-1), 1.0, atol=1e-5)


def test_binary_concrete_matches_logistic_closed_form():
    """K = 2: y_1 = sigmoid((a + L) / lam), L ~ Logistic: P(y_1 <= t) = sigmoid(lam logit t - a)."""
    logits = jnp.array([0.7, -0.4])
    a = float(logits[0] - logits[1])
    for lam in (0.5, 2.0):
        y1 = np.asarray(_gumbel_softmax(KEY, lam, logits=logits, sample_shape=(N,)))[:, 0]

        def cdf(t, lam=lam):
            with np.errstate(divide="ignore", over="ignore"):  # float32 samples may round to 1
                return 1.0 / (1.0 + np.exp(-(lam * np.log(t / (1 - t)) - a)))

        assert stats.kstest(y1, cdf).pvalue > P_MIN
        # the log-density is the log of the derivative of that CDF
        t = np.linspace(0.01, 0.99, 99)
        s = cdf(t)
        expected = np.log(s * (1 - s) * lam / (t * (1 - t)))
        y = jnp.stack([t, 1 - t], axis=-1).astype(jnp.float32)
        got = S.gumbel_softmax_log_prob(y, lam, logits=logits)
        np.testing.assert_allclose(np.asarray(got), expected, atol=2e-4)


def test_concrete_density_normalises_on_the_simplex():
    """int p(y) dy = E_{y ~ Dirichlet(1,1,1)}[p(y) / 2] = 1 (the uniform density is (K-1)! = 2)."""
    rng = np.random.default_rng(0)
    y = rng.dirichlet(np.ones(3), size=200_000).astype(np.float32)
    for lam, probs in ((1.0, [0.2, 0.3, 0.5]), (2.0, [0.6, 0.3, 0.1])):
        w = np.exp(np.asarray(S.gumbel_softmax_log_prob(y, lam, probs=np.float32(probs)),
                              dtype=np.float64)) / 2.0
        se = w.std(ddof=1) / np.sqrt(w.size)
        assert abs(w.mean() - 1.0) < 5 * se + 1e-3, (w.mean(), se)


# ----------------------------------------------------------------------------- gradients


def _mc_check(samples, expected):
    samples = np.asarray(samples, dtype=np.float64)
    se = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    assert np.all(np.abs(samples.mean(0) - expected) < 5 * se + 1e-6), (samples.mean(0), expected,
                                                                        se)


@pytest.mark.parametrize("jit", [False, True])
def test_exponential_rate_gradient(jit):
    """Per sample dz/drate = -z/rate (exact); d E[z] / d rate = -1/rate^2 (within MC error)."""
    rate = jnp.array([0.5, 2.0])

    def per_sample(r):
        return jax.jacfwd(lambda rr: S.exponential(KEY, rr, sample_shape=(N,)))(r)

    f = jax.jit(per_sample) if jit else per_sample
    jac = np.asarray(f(rate))  # (N, 2, 2), diagonal in the batch axes
    z = np.asarray(S.exponential(KEY, rate, sample_shape=(N,)))
    np.testing.assert_allclose(jac[:, [0, 1], [0, 1]], -z / np.asarray(rate), rtol=1e-5)
    assert np.all(jac[:, [0, 1], [1, 0]] == 0)
    _mc_check(jac[:, [0, 1], [0, 1]], -1.0 / np.asarray(rate) ** 2)
    g = jax.grad(lambda r: S.exponential(KEY, r, sample_shape=(N,))[:, 1].mean())(rate)
    np.testing.assert_allclose(np.asarray(g), [0.0, jac[:, 1, 1].mean()], rtol=1e-4)


def test_normal_and_gumbel_gradients_match_closed_forms():
    # d/dloc E[z^2] = 2 loc, d/dscale E[z^2] = 2 scale for z ~ N(loc, scale^2)
    loc, scale = 0.7, 1.3

    def sq(params, key):
        return S.normal(key, params[0], params[1]) ** 2

    keys = jax.random.split(KEY, N)
    g = jax.jit(jax.vmap(jax.grad(sq), in_axes=(None, 0)))(jnp.array([loc, scale]), keys)
    _mc_check(g, [2 * loc, 2 * scale])
    # Gumbel(loc, scale): d E[g] / dloc = 1, d E[g] / dscale = Euler's gamma
    gg = jax.jit(jax.vmap(jax.grad(lambda p, k: S.gumbel(k, p[0], p[1])), in_axes=(None, 0)))(
        jnp.array([0.3, 2.0]), keys)
    np.testing.assert_allclose(np.asarray(gg[:, 0]), 1.0)
    _mc_check(gg, [1.0, np.euler_gamma])


def test_gumbel_softmax_jacobian_closed_form():
    """dy/dlogits = (diag(y) - y y^T) / temperature for the same noise."""
    logits = jnp.array([0.1, -0.5, 1.2, 0.0])
    for t in (0.3, 2.0):
        jac = jax.jacrev(lambda lg, t=t: S.gumbel_softmax(KEY, t, logits=lg))(logits)
        y = S.gumbel_softmax(KEY, t, logits=logits)
        expected = (jnp.diag(y) - jnp.outer(y, y)) / t
        np.testing.assert_allclose(np.asarray(jac), np.asarray(expected), atol=1e-6)
    # probs= is differentiable too (through log)
    gp = jax.grad(lambda p: S.gumbel_softmax(KEY, 0.5, probs=p)[2])(jnp.array([0.1, 0.2, 0.5,
                                                                              0.2]))
    assert np.all(np.isfinite(np.asarray(gp))) and np.any(np.asarray(gp) != 0)


@pytest.mark.parametrize("jit", [False, True])
def test_straight_through_forward_one_hot_backward_relaxed(jit):
    logits = jnp.log(jnp.asarray(PROBS))
    w = jnp.arange(1.0, 5.0)
    st = maybe_jit(S.straight_through_gumbel_softmax, jit, sample_shape=(64,))
    soft = maybe_jit(S.gumbel_softmax, jit, sample_shape=(64,))
    y = np.asarray(st(KEY, 0.5, logits=logits))
    assert set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(y.sum(-1), 1.0)
    idx = S.categorical(KEY, logits=logits, sample_shape=(64,))
    np.testing.assert_array_equal(y.argmax(-1), np.asarray(idx))
    g_st = jax.grad(lambda lg: jnp.sum(st(KEY, 0.5, logits=lg) * w))(logits)
    g_soft = jax.grad(lambda lg: jnp.sum(soft(KEY, 0.5, logits=lg) * w))(logits)
    np.testing.assert_allclose(np.asarray(g_st), np.asarray(g_soft), rtol=1e-6, atol=1e-7)
    assert np.any(np.asarray(g_st) != 0)


def test_relaxed_samples_approach_one_hot_and_barycentre():
    lg = jnp.log(jnp.asarray(PROBS[0]))
    cold = _gumbel_softmax(KEY, 0.01, logits=lg, sample_shape=(1000,))
    hot = _gumbel_softmax(KEY, 1000.0, logits=lg, sample_shape=(1000,))
    assert float(jnp.mean(jnp.max(cold, -1))) > 0.99
    np.testing.assert_allclose(np.asarray(hot), 0.25, atol=0.01)


@pytest.mark.parametrize("jit", [False, True])
def test_anneal_temperature_schedule(jit):
    f = maybe_jit(S.anneal_temperature, jit, rate=1e-3, min_temperature=0.5, update_every=100)
    steps = jnp.array([0, 99, 100, 250, 600, 700, 5000])
    got = np.asarray(f(steps))
    t = np.array([0, 0, 100, 200, 600, 700, 5000])
    np.testing.assert_allclose(got, np.maximum(0.5, np.exp(-1e-3 * t)), rtol=1e-6)
    assert got[0] == 1.0 and got[-1] == 0.5 and np.all(np.diff(got) <= 0)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_value_error_naming_the_argument():
    k = KEY
    cases = [
        (lambda: S.exponential(k, 0.0), "rate"),
        (lambda: S.exponential(k, jnp.array([1.0, -2.0])), "rate"),
        (lambda: S.normal(k, 0.0, 0.0), "scale"),
        (lambda: S.gumbel(k, 0.0, -1.0), "scale"),
        (lambda: S.gumbel_softmax(k, 0.0, probs=PROBS), "temperature"),
        (lambda: S.straight_through_gumbel_softmax(k, -1.0, probs=PROBS), "temperature"),
        (lambda: S.categorical(k, probs=[0.5, -0.1, 0.6]), "probs"),
        (lambda: S.categorical(k, probs=[0.5, 0.6]), "probs"),
        (lambda: S.categorical(k, probs=PROBS, logits=PROBS), "exactly one"),
        (lambda: S.categorical(k), "exactly one"),
        (lambda: S.categorical(k, logits=1.0), "logits"),
        (lambda: S.categorical(k, logits=[0.0, np.nan]), "logits"),
        (lambda: S.normal(k, jnp.zeros(3), jnp.ones(4)), "shapes do not broadcast"),
        (lambda: S.exponential(k, 1.0, sample_shape=0), "sample_shape"),
        (lambda: S.exponential(k, 1.0, sample_shape=(10, -1)), "sample_shape"),
        (lambda: S.exponential(k, 1.0, sample_shape=(2.5,)), "sample_shape"),
        (lambda: S.gumbel_softmax(k, jnp.ones(3), probs=PROBS), "temperature"),
        (lambda: S.gumbel_softmax_log_prob(jnp.ones((2, 3)) / 3, 1.0, probs=PROBS), "y"),
        (lambda: S.gumbel_softmax_log_prob(jnp.array([1.5, -0.5, 0, 0]), 1.0, probs=PROBS[0]),
         "y"),
        (lambda: S.exponential(jnp.zeros(3), 1.0), "key"),
        (lambda: S.anneal_temperature(10, rate=-1.0), "rate"),
        (lambda: S.anneal_temperature(10, min_temperature=0.0), "min_temperature"),
        (lambda: S.anneal_temperature(-1), "step"),
        (lambda: S.anneal_temperature(10, update_every=0), "update_every"),
    ]
    for fn, word in cases:
        with pytest.raises(ValueError, match=word):
            fn()


def test_shape_errors_raise_under_jit_and_values_are_skipped_when_traced():
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        jax.jit(lambda l, s: S.normal(KEY, l, s))(jnp.zeros(3), jnp.ones(4))
    with pytest.raises(ValueError, match="temperature"):
        jax.jit(lambda t: S.gumbel_softmax(KEY, t, probs=PROBS))(jnp.ones(3))
    # a traced rate is not value-checked (it cannot be) and sampling works
    z = jax.jit(lambda r: S.exponential(KEY, r, sample_shape=5))(jnp.array(2.0))
    assert z.shape == (5,) and np.all(np.asarray(z) >= 0)


def test_non_numeric_parameters_raise_value_error_before_conversion():
    for fn, word in [(lambda: S.categorical(KEY, logits="ab"), "logits"),
                     (lambda: S.gumbel_softmax(KEY, 1.0, logits=np.array(["a", "b"])), "logits"),
                     (lambda: S.gumbel_softmax(KEY, "hot", logits=np.zeros(2)), "temperature"),
                     (lambda: S.normal(KEY, "a"), "loc"),
                     (lambda: S.exponential(KEY, np.array([1 + 1j])), "rate")]:
        with pytest.raises(ValueError, match=word):
            fn()


def test_temperature_broadcasts_to_the_batch_shape_and_never_enlarges_it():
    logits = jnp.log(jnp.asarray(PROBS))  # batch (2,), K = 4
    for fn in (S.gumbel_softmax, S.straight_through_gumbel_softmax):
        with pytest.raises(ValueError, match="temperature"):
            fn(KEY, jnp.ones(3), logits=jnp.zeros((1, 4)))  # (3,) does not fit in batch (1,)
        with pytest.raises(ValueError, match="temperature"):
            fn(KEY, jnp.ones((2, 1)), logits=logits)  # would enlarge batch (2,) to (2, 2)
    with pytest.raises(ValueError, match="temperature"):
        S.gumbel_softmax_log_prob(jnp.full(4, 0.25), jnp.ones(3), logits=jnp.zeros((1, 4)))
    # a per-row temperature acts row by row (same key, same Gumbel noise)
    y = S.gumbel_softmax(KEY, jnp.array([0.5, 2.0]), logits=logits, sample_shape=3)
    assert y.shape == (3, 2, 4)
    for b, t in enumerate((0.5, 2.0)):
        np.testing.assert_allclose(np.asarray(y[:, b]), np.asarray(
            S.gumbel_softmax(KEY, t, logits=logits, sample_shape=3)[:, b]), rtol=1e-6)


def test_concrete_log_prob_requires_points_of_the_simplex():
    lg = jnp.zeros(2)
    for y in ([0.1, 0.1], [np.nan, 1.0], [np.inf, 0.0], [1.2, -0.2], [[0.5, 0.5], [0.3, 0.3]]):
        with pytest.raises(ValueError, match="y must"):
            S.gumbel_softmax_log_prob(np.array(y), 1.0, logits=lg)
    # K = 2, temperature 1, equal logits: p(y) = 1 on the simplex (uniform), so log p = 0
    np.testing.assert_allclose(np.asarray(S.gumbel_softmax_log_prob(
        np.array([0.3, 0.7]), 1.0, logits=lg)), 0.0, atol=1e-6)


def test_anneal_temperature_requires_integer_steps():
    for step in (2.5, 2.0, np.array([1.0, 2.0]), True):
        with pytest.raises(ValueError, match="step"):
            S.anneal_temperature(step)
    with pytest.raises(ValueError, match="step"):
        jax.jit(S.anneal_temperature)(jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(np.asarray(S.anneal_temperature(np.array([0, 1000]), rate=1e-3,
                                                                  min_temperature=0.1)),
                               [1.0, np.exp(-1.0)], rtol=1e-6)
