"""vijax.random: the counter-mode words are Threefry-2x32's, uniform, independent across keys,
splits and the two words of a block; reproducible; other keys and dtypes go through jax.random.

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
from jax.extend.random import threefry_2x32
from scipy import stats

from vijax import random as R

N = 1 << 20  # words per statistical test


@pytest.fixture(scope="module")
def words():
    """``N`` words of key 0, as int64 for NumPy."""
    return np.asarray(R.bits(jax.random.key(0), (N,))).astype(np.int64)


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


def test_words_are_threefry_blocks_of_the_tagged_counter():
    """Block m = threefry_2x32(key, (m, TAG)) gives words m and m + ceil(n/2) (checked against
    JAX's public Threefry), for an odd n."""
    key = jax.random.key(7)
    n = 11
    m = 6
    counts = jnp.concatenate([jnp.arange(m, dtype=jnp.uint32),
                              jnp.full((m,), R.TAG, jnp.uint32)])
    want = threefry_2x32(jax.random.key_data(key), counts)[:n]
    np.testing.assert_array_equal(R.bits(key, (n,)), want)


def test_words_are_not_the_data_of_split_keys():
    key = jax.random.key(3)
    children = np.asarray(jax.random.key_data(jax.random.split(key, 8))).ravel()
    got = np.asarray(R.bits(key, (16,)))
    assert not np.any(np.isin(got, children))


def test_every_bit_is_fair(words):
    ones = np.array([np.sum((words >> b) & 1) for b in range(32)])
    se = math.sqrt(N * 0.25)
    assert np.all(np.abs(ones - N / 2) < 6 * se), (ones - N / 2) / se


def test_bytes_are_uniform(words):
    for shift in (0, 8, 16, 24):
        counts = np.bincount((words >> shift) & 0xFF, minlength=256)
        assert _uniform_chi2(counts) < _chi2_bound(255), shift


@pytest.mark.parametrize("lag", [1, 2, N // 2])  # N // 2: the two words of one block
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
    b = np.asarray(R.bits(other, (N,))).astype(np.int64)
    assert _pair_chi2(words, b) < _chi2_bound(255)
    assert abs(np.corrcoef(words / 2.0**32, b / 2.0**32)[0, 1]) < 6 / math.sqrt(N)
    assert np.mean(words == b) < 1e-4


def test_uniform_and_normal_fit_their_distributions():
    key = jax.random.key(11)
    n = 200_000
    u = np.asarray(R.uniform(key, (n,), minval=-2.0, maxval=3.0))
    assert u.min() >= -2.0 and u.max() < 3.0
    assert stats.kstest(u, stats.uniform(-2.0, 5.0).cdf).statistic < 2 / math.sqrt(n)
    z = np.asarray(R.normal(key, (n,)))
    assert np.all(np.isfinite(z))
    assert stats.kstest(z, stats.norm.cdf).statistic < 2 / math.sqrt(n)
    # the tails: P(|z| > 3) = 2.70e-3 within 6 standard errors
    p = 2 * stats.norm.sf(3.0)
    assert abs(np.mean(np.abs(z) > 3) - p) < 6 * math.sqrt(p * (1 - p) / n)


def test_same_key_same_draws_under_jit_and_vmap():
    key = jax.random.key(5)
    a = R.normal(key, (3, 5))
    np.testing.assert_array_equal(a, R.normal(key, (3, 5)))
    np.testing.assert_array_equal(a, jax.jit(R.normal, static_argnums=1)(key, (3, 5)))
    keys = jax.random.split(key, 4)
    batched = jax.vmap(lambda k: R.uniform(k, (7,)))(keys)
    np.testing.assert_array_equal(batched, np.stack([R.uniform(k, (7,)) for k in keys]))
    # a raw PRNGKey holds the same Threefry key as jax.random.key(seed)
    np.testing.assert_array_equal(R.bits(jax.random.PRNGKey(5), (9,)), R.bits(key, (9,)))
    assert R.normal(key, ()).shape == () and R.bits(key, (0, 3)).shape == (0, 3)
    # a prefix of a longer draw is not the shorter draw (the block of word i depends on n)
    assert not np.array_equal(R.bits(key, (4,)), R.bits(key, (8,))[:4])


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
