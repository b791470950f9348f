"""Tests of vijax.samplers: goodness of fit, exact Gumbel-max, closed-form gradients, bad input.

Statistical thresholds: goodness-of-fit p-values > 1e-4 with fixed keys (deterministic);
Monte-Carlo gradients within 5 estimated standard errors.
"""

import contextlib
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


_exponential = jax.jit(S.exponential, static_argnames="sample_shape")
_normal = jax.jit(S.normal, static_argnames="sample_shape")
_gumbel = jax.jit(S.gumbel, static_argnames="sample_shape")


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg", "raw"])
def test_samplers_fit_and_repeat_with_keys_of_any_implementation(impl):
    """The noise comes from vijax.random (jax.random's words, fused) for Threefry keys and
    from jax.random for the others: every key fits the distribution and repeats its draws."""
    key = jax.random.PRNGKey(3) if impl == "raw" else jax.random.key(3, impl=impl)
    n = 20_000
    for fn, dist in ((_exponential, stats.expon()), (_normal, stats.norm()),
                     (_gumbel, stats.gumbel_r())):
        z = np.asarray(fn(key, sample_shape=(n,)))
        assert stats.kstest(z, dist.cdf).pvalue > P_MIN, fn
        np.testing.assert_array_equal(z, fn(key, sample_shape=(n,)))


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


# ----------------------------------------------------------------------------- float32 extremes


def test_relaxed_and_categorical_samples_at_float32_extremes():
    """Finite logits near the float32 limit, temperatures from the smallest normal float32 to
    the largest: points of the simplex, never NaN; Gumbel-max stays exact."""
    big = np.float32(F32.max / 1.5)
    logits = np.array([[big, big, 0.0, -big], [F32.max, -F32.max, 1.0, 0.0]], np.float32)
    idx = np.asarray(S.categorical(KEY, logits=logits, sample_shape=4000))
    # row 0: categories 0 and 1 equally likely, 2 and 3 impossible in float32; row 1: only 0
    counts = np.bincount(idx[:, 0], minlength=4)
    assert counts[2] == counts[3] == 0 and chi2_pvalue(counts[:2], np.array([0.5, 0.5])) > P_MIN
    assert np.all(idx[:, 1] == 0)
    for t in (F32.tiny, 1e-30, 0.1, 1.0, 1e30, T_MAX):
        for fn in (S.gumbel_softmax, S.straight_through_gumbel_softmax):
            y = np.asarray(fn(KEY, t, logits=logits, sample_shape=4000))
            assert np.all(np.isfinite(y)) and np.all(y >= 0), (fn.__name__, t)
            np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)
            if t <= 1.0:  # hotter samples may tie in float32, and argmax takes the first
                np.testing.assert_array_equal(y.argmax(-1), idx)
    cold = np.asarray(S.gumbel_softmax(KEY, F32.tiny, logits=logits, sample_shape=4000))
    np.testing.assert_array_equal(cold, np.eye(4, dtype=np.float32)[idx])  # one-hot


def test_samplers_at_float32_extreme_parameters_never_return_nan():
    z = np.asarray(S.exponential(KEY, np.float32([F32.tiny, 1.0, F32.max]), sample_shape=N))
    assert not np.any(np.isnan(z)) and np.all(z >= 0) and np.all(np.isfinite(z[:, 1:]))
    # rate = tiny: z overflows only above 3.4e38, with probability exp(-tiny * max) = e^-4
    p_inf = np.exp(-float(F32.tiny) * float(F32.max))
    assert abs(np.mean(np.isinf(z[:, 0])) - p_inf) < 5 * np.sqrt(p_inf * (1 - p_inf) / N)
    for fn in (S.normal, S.gumbel):
        z = np.asarray(fn(KEY, np.float32([-F32.max, 0.0, F32.max]), F32.tiny, sample_shape=100))
        assert np.all(np.isfinite(z))
        np.testing.assert_allclose(z, np.broadcast_to([-F32.max, 0.0, F32.max], z.shape),
                                   rtol=0, atol=1e-36)
    t = np.asarray(S.anneal_temperature(jnp.array([0, 10**9]), rate=F32.max,
                                        min_temperature=F32.tiny, initial_temperature=T_MAX))
    np.testing.assert_array_equal(t, [T_MAX, F32.tiny])


def _concrete_log_prob_float64(y, t, logits):
    """Maddison et al. (2017) eq. 9 as written, in float64."""
    from scipy.special import gammaln, logsumexp

    y, logits = np.asarray(y, np.float64), np.asarray(logits, np.float64)
    k = y.shape[-1]
    return (gammaln(k) + (k - 1) * np.log(t) + np.sum(logits - (t + 1) * np.log(y), -1)
            - k * logsumexp(logits - t * np.log(y), axis=-1))


def test_concrete_log_prob_matches_float64_and_never_returns_nan():
    rng = np.random.default_rng(1)
    y = rng.dirichlet(np.ones(5), size=200).astype(np.float32)
    logits = rng.normal(size=5).astype(np.float32)
    for t in (0.05, 0.5, 1.0, 2.0, 20.0, 300.0):
        got = np.asarray(S.gumbel_softmax_log_prob(y, t, logits=logits), np.float64)
        want = _concrete_log_prob_float64(y, t, logits)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, t), err_msg=t)
    # extreme temperatures and logits: finite or -inf, never NaN (the old formula gave NaN)
    for t in (F32.tiny, 1e-30, 1e30, T_MAX):
        for lg in (logits, np.float32([0.0, -np.inf, 1.0, -F32.max, F32.max])):
            got = np.asarray(S.gumbel_softmax_log_prob(y, t, logits=lg))
            assert not np.any(np.isnan(got)) and not np.any(got == np.inf), (t, lg)
    huge = np.float32([3e38, 3e38, 0.0])
    lp = S.gumbel_softmax_log_prob(np.float32([0.2, 0.3, 0.5]), 1.0, logits=huge)
    same = S.gumbel_softmax_log_prob(np.float32([0.2, 0.3, 0.5]), 1.0,
                                     logits=np.float32([0.0, 0.0, -3e38]))
    assert np.isfinite(float(lp)) and float(lp) == float(same)  # a constant per row is no change


def test_concrete_log_prob_on_the_boundary_is_refused_or_minus_inf_under_jit():
    one_hot = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], np.float32)
    with pytest.raises(ValueError, match="open simplex"):
        S.gumbel_softmax_log_prob(one_hot, 0.5, logits=np.zeros(3))
    lp = jax.jit(S.gumbel_softmax_log_prob)
    got = np.asarray(lp(one_hot, 0.5, logits=jnp.zeros(3)))
    assert got[0] == -np.inf and np.isfinite(got[1])
    np.testing.assert_allclose(got[1], _concrete_log_prob_float64(one_hot[1], 0.5, np.zeros(3)),
                               rtol=1e-5)
    grads = jax.grad(lambda lg, t: lp(one_hot, t, logits=lg)[1], argnums=(0, 1))(
        jnp.zeros(3), 0.5)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


# ----------------------------------------------------------------------------- bad input


# Every public function, given bad or extreme input, raises a ValueError that names the
# argument, before any work: nothing is transferred to the device, nothing compiled (and, for
# the jitted rows, the error comes from tracing, before lowering). Inputs are built here, once.
F32 = np.finfo(np.float32)
T_MAX = np.float32(1 / F32.tiny)  # the largest temperature: XLA divides through 1 / t
KEYS = jax.random.split(KEY, 3)  # a batch of keys where one is expected
RAW_KEY = jax.random.PRNGKey(0)
BAD_KEYS = [("int", 42), ("None", None), ("batch", KEYS), ("raw batch", jax.random.split(RAW_KEY)),
            ("float pair", np.zeros(2, np.float32)), ("three words", np.zeros(3, np.uint32)),
            ("key data list", [0, 1])]
BAD_SAMPLE_SHAPES = [("zero", 0), ("negative", (10, -1)), ("float", (2.5,)), ("string", "ab"),
                     ("None", None), ("bool", (True,)),
                     ("beyond memory", (2**40,)),  # 4 TiB of float32
                     ("int64 overflow", (2**62, 2**62))]
BAD_REALS = [("nan", np.nan), ("inf", np.inf), ("float32 overflow", 1e39),
             ("string", "a"), ("complex", np.array([1 + 1j])), ("ragged", [[1.0], [1.0, 2.0]]),
             ("key", KEY)]
BAD_POSITIVES = BAD_REALS + [("zero", 0.0), ("negative", -1.0),
                             ("float32 underflow", 1e-40), ("float32 zero", 1e-46),
                             ("negative entry", jnp.array([1.0, -2.0]))]
BAD_DIVISORS = BAD_POSITIVES + [("reciprocal underflow", 1e38)]  # 1 / 1e38 flushes to 0


def _bad_inputs():
    rows = []  # (id, function, args, kwargs, word the message must contain)

    def add(ident, fn, args, kwargs, word):
        rows.append(pytest.param(fn, args, kwargs, word, id=ident))

    samplers = {  # name: (function, the good arguments after the key, keyword arguments)
        "normal": (S.normal, (0.0, 1.0), {}),
        "exponential": (S.exponential, (1.0,), {}),
        "gumbel": (S.gumbel, (0.0, 1.0), {}),
        "categorical": (S.categorical, (), {"probs": PROBS}),
        "gumbel_softmax": (S.gumbel_softmax, (0.5,), {"probs": PROBS}),
        "straight_through": (S.straight_through_gumbel_softmax, (0.5,), {"probs": PROBS}),
    }
    for name, (fn, args, kw) in samplers.items():
        for what, key in BAD_KEYS:
            add(f"{name}-key-{what}", fn, (key, *args), kw, "key")
        for what, shape in BAD_SAMPLE_SHAPES:
            add(f"{name}-sample_shape-{what}", fn, (KEY, *args), {**kw, "sample_shape": shape},
                "sample_shape")
    for name, fn in (("normal", S.normal), ("gumbel", S.gumbel)):
        for what, v in BAD_REALS:
            add(f"{name}-loc-{what}", fn, (KEY, v, 1.0), {}, "loc")
        for what, v in BAD_POSITIVES:
            add(f"{name}-scale-{what}", fn, (KEY, 0.0, v), {}, "scale")
        add(f"{name}-shapes", fn, (KEY, jnp.zeros(3), jnp.ones(4)), {}, "loc")
    for what, v in BAD_POSITIVES:
        add(f"exponential-rate-{what}", S.exponential, (KEY, v), {}, "rate")
        add(f"exponential_log_prob-rate-{what}", S.exponential_log_prob, (1.0, v), {}, "rate")
    for what, v in BAD_DIVISORS:
        add(f"normal_log_prob-scale-{what}", S.normal_log_prob, (0.0, 0.0, v), {}, "scale")
    for what, v in BAD_REALS:
        add(f"normal_log_prob-loc-{what}", S.normal_log_prob, (0.0, v, 1.0), {}, "loc")
    for what, v in [("nan", np.nan), ("string", "a"), ("ragged", [[1.0], [1.0, 2.0]]),
                    ("key", KEY)]:
        add(f"normal_log_prob-z-{what}", S.normal_log_prob, (v,), {}, "z")
        add(f"exponential_log_prob-z-{what}", S.exponential_log_prob, (v,), {}, "z")
    add("normal_log_prob-shapes", S.normal_log_prob, (jnp.zeros(3), jnp.zeros(4)), {}, "z")
    add("exponential_log_prob-shapes", S.exponential_log_prob, (jnp.zeros(3), jnp.ones(4)), {},
        "rate")
    add("normal_log_prob-broadcast beyond memory", S.normal_log_prob,
        (np.zeros((2**20, 1), np.float32), np.zeros((1, 2**20), np.float32)), {}, "z, loc")

    bad_categories = [
        ("probs negative", {"probs": [0.5, -0.1, 0.6]}, "probs"),
        ("probs sum", {"probs": [0.5, 0.6]}, "probs"),
        ("probs nan", {"probs": [np.nan, 1.0]}, "probs"),
        ("probs scalar", {"probs": 1.0}, "probs"),
        ("probs string", {"probs": np.array(["a", "b"])}, "probs"),
        ("probs ragged", {"probs": [[1.0], [0.5, 0.5]]}, "probs"),
        ("both", {"probs": PROBS, "logits": PROBS}, "logits= or probs="),
        ("neither", {}, "logits= or probs="),
        ("logits scalar", {"logits": 1.0}, "logits"),
        ("logits no category", {"logits": np.zeros((2, 0))}, "logits"),
        ("logits nan", {"logits": [0.0, np.nan]}, "logits"),
        ("logits +inf", {"logits": [0.0, np.inf]}, "logits"),
        ("logits float32 overflow", {"logits": [0.0, 1e39]}, "logits"),
        ("logits row of -inf", {"logits": [[0.0, 1.0], [-np.inf, -np.inf]]}, "logits"),
        ("logits string", {"logits": np.array(["a", "b"])}, "logits"),
        ("logits complex", {"logits": np.array([1j, 0])}, "logits"),
        ("logits key", {"logits": KEY}, "logits"),
    ]
    for what, kw, word in bad_categories:
        add(f"as_logits-{what}", S.as_logits, (), kw, word)
        add(f"categorical-{what}", S.categorical, (KEY,), kw, word)
        add(f"gumbel_softmax-{what}", S.gumbel_softmax, (KEY, 0.5), kw, word)
        add(f"gumbel_softmax_log_prob-{what}", S.gumbel_softmax_log_prob,
            (np.full(2, 0.5), 0.5), kw, word)
    for what, v in BAD_DIVISORS + [("enlarges the batch", jnp.ones((2, 1))),
                                   ("does not broadcast", jnp.ones(3))]:
        add(f"gumbel_softmax-temperature-{what}", S.gumbel_softmax, (KEY, v), {"probs": PROBS},
            "temperature")
        add(f"straight_through-temperature-{what}", S.straight_through_gumbel_softmax, (KEY, v),
            {"probs": PROBS}, "temperature")
        add(f"gumbel_softmax_log_prob-temperature-{what}", S.gumbel_softmax_log_prob,
            (np.full((2, 4), 0.25), v), {"probs": PROBS}, "temperature")
    for what, y in [("wrong K", jnp.ones((2, 3)) / 3), ("off the simplex", [1.5, -0.5, 0, 0]),
                    ("row sum", [0.1, 0.1, 0.1, 0.1]), ("nan", [np.nan, 0.5, 0.25, 0.25]),
                    ("inf", [np.inf, 0.0, 0.0, 0.0]), ("one-hot", [1.0, 0.0, 0.0, 0.0]),
                    ("float32 underflow", [1 - 3e-40, 1e-40, 1e-40, 1e-40]),
                    ("scalar", 1.0), ("string", np.array(["a"] * 4)), ("key", KEY)]:
        add(f"gumbel_softmax_log_prob-y-{what}", S.gumbel_softmax_log_prob, (y, 1.0),
            {"probs": PROBS[0]}, r"\by\b")

    for what, step in [("negative", -1), ("float", 2.5), ("whole float", 2.0),
                       ("float array", np.array([1.0, 2.0])), ("bool", True),
                       ("beyond int32", np.int64(2**40)), ("string", "3"),
                       ("ragged", [[1], [1, 2]]), ("key", KEY)]:
        add(f"anneal_temperature-step-{what}", S.anneal_temperature, (step,), {}, "step")
    for name, values in [("rate", [-1.0, np.nan, np.inf, 1e39, "a", True]),
                         ("min_temperature", [0.0, -1.0, 1e-40, 1e38, 1e39, np.nan, None]),
                         ("initial_temperature", [0.0, 1e-46, 1e38, 1e39, np.inf, "hot"]),
                         ("update_every", [0, -3, 2.0, True, 2**40, "1"])]:
        for v in values:
            add(f"anneal_temperature-{name}-{v!r}", S.anneal_temperature, (10,), {name: v}, name)

    jitted = {  # shape, key and size errors are raised while tracing, before lowering
        "normal": jax.jit(S.normal, static_argnames="sample_shape"),
        "exponential": jax.jit(S.exponential, static_argnames="sample_shape"),
        "categorical": jax.jit(S.categorical, static_argnames="sample_shape"),
        "gumbel_softmax": jax.jit(S.gumbel_softmax, static_argnames="sample_shape"),
        "gumbel_softmax_log_prob": jax.jit(S.gumbel_softmax_log_prob),
        "anneal_temperature": jax.jit(S.anneal_temperature),
    }
    add("jit-normal-shapes", jitted["normal"], (KEY, jnp.zeros(3), jnp.ones(4)), {}, "loc")
    add("jit-normal-key batch", jitted["normal"], (KEYS, 0.0, 1.0), {}, "key")
    add("jit-exponential-sample_shape beyond memory", jitted["exponential"], (KEY, 1.0),
        {"sample_shape": (2**40,)}, "sample_shape")
    add("jit-categorical-key batch", jitted["categorical"], (KEYS,), {"probs": PROBS}, "key")
    add("jit-gumbel_softmax-temperature shape", jitted["gumbel_softmax"], (KEY, jnp.ones(3)),
        {"probs": PROBS}, "temperature")
    add("jit-gumbel_softmax_log_prob-y shape", jitted["gumbel_softmax_log_prob"],
        (jnp.ones((2, 3)) / 3, 1.0), {"probs": PROBS}, r"\by\b")
    add("jit-anneal_temperature-float step", jitted["anneal_temperature"],
        (jnp.array([1.0, 2.0]),), {}, "step")
    return rows


BAD_INPUTS = _bad_inputs()


def test_bad_input_table_covers_every_public_function():
    covered = {p.values[0].__name__ for p in BAD_INPUTS}  # jitted functions keep the name
    assert covered == set(S.__all__), set(S.__all__) ^ covered
    assert len(BAD_INPUTS) >= 300


@contextlib.contextmanager
def before_any_work():
    """Fail if JAX lowers or compiles anything, or moves host data to the device, in the block.

    Caches are cleared first, so an eager operation would have to compile and be seen. (A
    failed trace of a jitted function still adds an entry to ``_cache_size()`` in JAX 0.10, so
    the lowering and compile events are the signal that nothing was built.)
    """
    events = []

    def listener(event, duration, **kwargs):
        if "jaxpr_to_mlir_module" in event or "backend_compile" in event:
            events.append(event)

    jax.clear_caches()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with jax.transfer_guard_host_to_device("disallow"):
            yield
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not events, f"lowered or compiled {len(events)} computation(s) before failing"


@pytest.mark.parametrize("fn, args, kwargs, word", BAD_INPUTS)
def test_bad_input_raises_value_error_naming_the_argument_before_any_work(fn, args, kwargs,
                                                                          word):
    with before_any_work(), pytest.raises(ValueError, match=word):
        fn(*args, **kwargs)


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
