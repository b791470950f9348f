"""vijax.random: the unrolled cipher is Threefry-2x32, the draws are jax.random's for Threefry
keys; the words are uniform and independent within a stream and across seeds, splits and
fold_in; reproducible; other keys and dtypes go through jax.random.

Statistical tests use fixed keys (deterministic) and thresholds from the sample size: a
chi-square statistic is compared with its mean + 6 standard deviations (``df + 6 sqrt(2 df)``),
a proportion or a correlation with 6 standard errors, a KS statistic with ``2 / sqrt(n)``
(p ~ 3e-4).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import no_compilation
from jax.extend.random import threefry_2x32
from scipy import stats

from vijax import random as R

N = 1 << 20  # words per statistical test
_bits = jax.jit(R.bits, static_argnums=1)
_uniform = jax.jit(R.uniform, static_argnums=(1, 2))
_normal = jax.jit(R.normal, static_argnums=(1, 2))
_jax_uniform = jax.jit(jax.random.uniform, static_argnums=(1, 2))


@pytest.fixture(scope="module")
def words():
    """``N`` words of key 0, as int64 for NumPy."""
    return np.asarray(_bits(jax.random.key(0), (N,))).astype(np.int64)


def _chi2_bound(df: int) -> float:
    return df + 6 * math.sqrt(2 * df)


def _uniform_chi2(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(np.sum((counts - expected) ** 2 / expected))


def _pair_chi2(a: np.ndarray, b: np.ndarray, bins: int = 16) -> float:
    """Chi-square of the ``bins x bins`` table of the top bits of two word streams against
    independent uniform margins (df = bins^2 - 1)."""
    shift = 32 - int(math.log2(bins))
    table = np.bincount((a >> shift) * bins + (b >> shift), minlength=bins * bins)
    return _uniform_chi2(table)


def test_unrolled_cipher_is_jax_threefry():
    """The unrolled cipher against JAX's (rolled) Threefry-2x32 on random keys and blocks."""
    k0, k1, x0, x1 = np.random.default_rng(0).integers(0, 2**32, (4, 257), dtype=np.uint32)
    got = R.threefry_2x32(jnp.asarray(k0), jnp.asarray(k1), jnp.asarray(x0), jnp.asarray(x1))
    want = jax.vmap(lambda a, b, c, d: threefry_2x32(jnp.stack([a, b]), jnp.stack([c, d])))(
        k0, k1, x0, x1)
    np.testing.assert_array_equal(np.stack(got, -1), want)




@pytest.mark.parametrize("shape", [(), (2, 3, 5)])
def test_draws_are_jax_randoms_for_threefry_keys(shape):
    for key in (jax.random.key(9), jax.random.PRNGKey(9)):
        np.testing.assert_array_equal(_bits(key, shape), jax.random.bits(key, shape))
        np.testing.assert_array_equal(_normal(key, shape, float), jax.random.normal(key, shape))
        # both jitted: eagerly, XLA contracts jax.random.uniform's u * (b - a) + a to an FMA
        np.testing.assert_array_equal(_uniform(key, shape, float, -2.0, 3.0),
                                      _jax_uniform(key, shape, float, -2.0, 3.0))
    keys = jax.random.split(jax.random.key(9), 3)
    np.testing.assert_array_equal(jax.vmap(lambda k: _normal(k, shape, float))(keys),
                                  jax.vmap(lambda k: jax.random.normal(k, shape))(keys))


def test_every_bit_is_fair(words):
    ones = np.array([np.sum((words >> b) & 1) for b in range(32)])
    se = math.sqrt(N * 0.25)
    assert np.all(np.abs(ones - N / 2) < 6 * se), (ones - N / 2) / se


def test_bytes_are_uniform(words):
    for shift in (0, 8, 16, 24):
        counts = np.bincount((words >> shift) & 0xFF, minlength=256)
        assert _uniform_chi2(counts) < _chi2_bound(255), shift


@pytest.mark.parametrize("lag", [1, 2, 1000])
def test_words_in_one_stream_are_independent(words, lag):
    assert _pair_chi2(words[:-lag], words[lag:]) < _chi2_bound(255)
    u = words / 2.0**32
    r = np.corrcoef(u[:-lag], u[lag:])[0, 1]
    assert abs(r) < 6 / math.sqrt(N - lag)


@pytest.mark.parametrize("pair", ["seeds", "split", "fold_in"])
def test_streams_of_related_keys_are_independent(words, pair):
    key = jax.random.key(0)
    other = {"seeds": jax.random.key(1), "split": jax.random.split(key)[0],
             "fold_in": jax.random.fold_in(key, 1)}[pair]
    b = np.asarray(_bits(other, (N,))).astype(np.int64)
    assert _pair_chi2(words, b) < _chi2_bound(255)
    assert abs(np.corrcoef(words / 2.0**32, b / 2.0**32)[0, 1]) < 6 / math.sqrt(N)
    assert np.mean(words == b) < 1e-4


def test_uniform_and_normal_fit_their_distributions():
    key = jax.random.key(11)
    n = 200_000
    u = np.asarray(_uniform(key, (n,), float, -2.0, 3.0))
    assert u.min() >= -2.0 and u.max() < 3.0
    assert stats.kstest(u, stats.uniform(-2.0, 5.0).cdf).statistic < 2 / math.sqrt(n)
    z = np.asarray(_normal(key, (n,), float))
    assert np.all(np.isfinite(z))
    assert stats.kstest(z, stats.norm.cdf).statistic < 2 / math.sqrt(n)
    # the tails: P(|z| > 3) = 2.70e-3 within 6 standard errors
    p = 2 * stats.norm.sf(3.0)
    assert abs(np.mean(np.abs(z) > 3) - p) < 6 * math.sqrt(p * (1 - p) / n)


def test_split_is_jax_split():
    for key in (jax.random.key(3), jax.random.PRNGKey(3)):
        got = jax.jit(R.split, static_argnums=1)(key, 5)
        want = jax.random.split(key, 5)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(want))
    rbg = jax.random.key(3, impl="rbg")
    np.testing.assert_array_equal(jax.random.key_data(R.split(rbg, 3)),
                                  jax.random.key_data(jax.random.split(rbg, 3)))


def test_same_key_same_words_eagerly_and_under_jit_for_any_shape():
    key = jax.random.key(5)
    np.testing.assert_array_equal(R.bits(key, (3,)), _bits(key, (3,)))
    assert _normal(key, (), float).shape == () and _bits(key, (0, 3)).shape == (0, 3)
    # word i is block i whatever the shape: a shorter draw is a prefix of a longer one
    np.testing.assert_array_equal(_bits(key, (4,)), _bits(key, (2, 4))[0])


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_other_key_implementations_go_through_jax_random(impl):
    key = jax.random.key(2, impl=impl)
    assert not R.is_threefry(key)
    np.testing.assert_array_equal(R.uniform(key, (6,)), jax.random.uniform(key, (6,)))
    np.testing.assert_array_equal(R.normal(key, (6,)), jax.random.normal(key, (6,)))
    np.testing.assert_array_equal(R.bits(key, (6,)), jax.random.bits(key, (6,)))


def test_other_dtypes_go_through_jax_random():
    key = jax.random.key(2)
    np.testing.assert_array_equal(R.normal(key, (6,), jnp.bfloat16),
                                  jax.random.normal(key, (6,), jnp.bfloat16))
    with jax.enable_x64(True):
        np.testing.assert_array_equal(R.uniform(key, (6,), jnp.float64),
                                      jax.random.uniform(key, (6,), jnp.float64))
        assert R.normal(key, (6,), jnp.float64).dtype == jnp.float64


@pytest.mark.parametrize(("call", "match"), [
    (lambda: R.normal(jax.random.split(jax.random.key(0), 3), (4,)), "single PRNG key"),
    (lambda: R.bits(jax.random.split(jax.random.PRNGKey(0), 3), (4,)), "single PRNG"),
    (lambda: R.uniform(np.zeros(2, np.float32), (3,)), "key must be a PRNG key"),
    (lambda: R.bits(jax.random.key(0), (-1,)), "shape entries must be >= 0"),
    (lambda: R.normal(jax.random.key(0), (2.7,)), "shape entries must be an integer"),
    (lambda: R.uniform(jax.random.key(0), 5), "shape must be a sequence"),
    (lambda: R.split(jax.random.key(0), 2.5), "num must be an integer"),
    (lambda: R.split(jax.random.key(0), -1), "num must be >= 0"),
])
def test_bad_keys_and_shapes_are_refused_before_compiling(call, match):
    with no_compilation(), pytest.raises(ValueError, match=match):
        call()
