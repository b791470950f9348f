"""Special functions and double-word arithmetic that keep the CAVI ELBO exact in float32.

The ELBO of MODEL.md section 1 holds terms of order ``S log S`` (``1e10`` at strengths of
``1e9``) that cancel to order one: ``S E[log lam] - E[lam] - log Gamma(S + 1)`` per event and
``a + log Gamma(a) + (1 - a) psi(a)`` per cluster. Written with the functions below, every
large part cancels algebraically and what is left is computed from small quantities:

- :func:`digamma_minus_log` ``f(x) = psi(x) - log x`` (``-1/(2x) - ...``),
- :func:`stirling_remainder` ``R(x) = log Gamma(x) - (x - 1/2) log x + x - log(2 pi)/2``,
- :func:`log_factorial_remainder` ``h(S) = log Gamma(S + 1) - S log S + S``,
- :func:`poisson_deviance` ``g(S, lam) = S log(lam / S) + S - lam`` (``-lam`` at ``S = 0``),

each by its asymptotic series where the direct form would cancel, and the direct form
elsewhere. Where a product ``S * log(lam)`` itself must be resolved below the precision of
the working dtype, values are carried as unevaluated sums ``hi + lo`` of two floats
(double-word arithmetic: Dekker 1971, "A floating-point technique for extending the available
precision"; Knuth's TwoSum). Splits are made by masking mantissa bits, so the products stay
exact whether or not the compiler fuses multiply-adds. In float64 the low words are zero.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

Array = jax.Array

LOG_2PI = 1.8378770664093453  # log(2 pi)
HALF_LOG_2PI = 0.9189385332046727  # log(2 pi) / 2

# From here up the asymptotic series are accurate to float64 resolution; below it the
# arguments are shifted up by _SHIFT with the recurrences of psi and log Gamma.
_SERIES_FROM = 10.0


def is_double(dtype) -> bool:
    return jnp.dtype(dtype) == jnp.float64


def times_power_of_two(x: Array, exponent: Array) -> Array:
    """``x 2^exponent``, exactly (a product with a power of two built from its bits; for
    ``|exponent| < 127``), where ``jnp.ldexp`` goes through ``pow``."""
    exponent = jnp.asarray(exponent, jnp.int32)
    if is_double(x.dtype):
        bits = jax.lax.shift_left((exponent + 1023).astype(jnp.uint64), jnp.uint64(52))
        return x * jax.lax.bitcast_convert_type(bits, jnp.float64)
    bits = jax.lax.shift_left((exponent + 127).astype(jnp.uint32), jnp.uint32(23))
    return x * jax.lax.bitcast_convert_type(bits, jnp.float32)


# ------------------------------------------------------------------ special functions


_SHIFT = 10


def _f_series(x: Array) -> Array:
    """``psi(x) - log x``, A&S 6.3.18 to ``x^-12``; the next term is below 1e-15 at 10."""
    inv2 = 1.0 / (x * x)
    return -0.5 / x - inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (
        1.0 / 240 - inv2 * (1.0 / 132 - inv2 * (691.0 / 32760))))))


def _r_series(x: Array) -> Array:
    """``log Gamma(x) - (x - 1/2) log x + x - log(2 pi)/2``, A&S 6.1.41 to ``x^-11``."""
    inv = 1.0 / x
    inv2 = inv * inv
    return inv * (1.0 / 12 - inv2 * (1.0 / 360 - inv2 * (1.0 / 1260 - inv2 * (
        1.0 / 1680 - inv2 * (1.0 / 1188 - inv2 * (691.0 / 360360))))))


def _harmonic_and_product(x: Array) -> tuple[Array, Array]:
    """``sum_{i<10} 1/(x + i)`` and ``prod_{i<10} (x + i)``, with a single division (small
    ``x``: the product is at most 20^10)."""
    numerator, product = jnp.ones_like(x), x
    for i in range(1, _SHIFT):
        numerator = numerator * (x + i) + product
        product = product * (x + i)
    return numerator / product, product


def digamma_minus_log(x: Array) -> Array:
    """``f(x) = psi(x) - log x`` for ``x > 0``, without cancellation at large ``x``.

    ``f(x) = -1/(2x) - sum_k B_2k / (2k x^2k)`` (Abramowitz & Stegun 6.3.18) for ``x >= 10``;
    below, ``psi(x) = psi(x + 10) - sum_{i<10} 1/(x + i)`` gives
    ``f(x) = f(x + 10) + log(1 + 10/x) - sum_{i<10} 1/(x + i)``.
    """
    small = x < _SERIES_FROM
    xs = jnp.where(small, x, 1.0)
    harmonic, _ = _harmonic_and_product(xs)
    shifted = _f_series(xs + _SHIFT) + jnp.log1p(_SHIFT / xs) - harmonic
    return jnp.where(small, shifted, _f_series(jnp.where(small, _SERIES_FROM, x)))


def stirling_remainder(x: Array) -> Array:
    """``R(x) = log Gamma(x) - (x - 1/2) log x + x - log(2 pi)/2`` for ``x > 0``.

    ``R(x) = 1/(12x) - 1/(360x^3) + 1/(1260x^5) - ...`` (A&S 6.1.41) for ``x >= 10``; below,
    ``log Gamma(x) = log Gamma(x + 10) - sum_{i<10} log(x + i)`` gives
    ``R(x) = R(x + 10) + (x - 1/2) log(1 + 10/x) - log(prod_{i<10} (x + i) / (x + 10)^10) - 10``.
    """
    small = x < _SERIES_FROM
    xs = jnp.where(small, x, 1.0)
    _, product = _harmonic_and_product(xs)
    top = xs + _SHIFT
    top2 = top * top
    top10 = top2 * top2 * top2 * top2 * top2
    shifted = (_r_series(top) + (xs - 0.5) * jnp.log1p(_SHIFT / xs)
               - jnp.log(product / top10) - _SHIFT)
    return jnp.where(small, shifted, _r_series(jnp.where(small, _SERIES_FROM, x)))


# h(S) at S = 0, 1, ..., 9, to float64 precision.
_H_SMALL = [math.lgamma(k + 1.0) - (k * math.log(k) if k else 0.0) + k for k in range(10)]


def log_factorial_remainder(s: Array) -> Array:
    """``h(S) = log Gamma(S + 1) - S log S + S`` for ``S >= 0`` (``h(0) = 0``).

    ``h(S) = log(2 pi S)/2 + R(S)`` for ``S >= 10``; a table for the counts 0..9; the direct
    form for other ``S < 10`` (every term small there).
    """
    big = s >= _SERIES_FROM
    ss = jnp.where(big, s, _SERIES_FROM)
    series = 0.5 * (LOG_2PI + jnp.log(ss)) + _r_series(ss)
    sd = jnp.where(big, 0.0, s)
    direct = gammaln(sd + 1.0) - jax.scipy.special.xlogy(sd, sd) + sd
    table = direct
    for k in range(len(_H_SMALL)):
        table = jnp.where(sd == k, _H_SMALL[k], table)
    return jnp.where(big, series, table)


def log1p_minus_x(u: Array) -> Array:
    """``log(1 + u) - u`` for ``u > -1``, without cancellation near 0.

    With ``t = u / (2 + u)``, ``log(1 + u) = 2 atanh(t)`` and ``2t - u = -t u``, so
    ``log(1 + u) - u = -t u + 2 t^3 (1/3 + t^2/5 + t^4/7 + ...)``: no cancellation, since
    ``|2 t^3 / 3| <= |t u| / 6`` for ``|t| <= 1/5`` (``-1/3 <= u <= 1/2``), where nine terms
    reach float64 resolution. Outside, the direct form cancels at most a factor of 6.
    """
    near = (u >= -1.0 / 3) & (u <= 0.5)
    un = jnp.where(near, u, 0.0)
    t = un / (2.0 + un)
    t2 = t * t
    tail = 1.0 / 3 + t2 * (1.0 / 5 + t2 * (1.0 / 7 + t2 * (1.0 / 9 + t2 * (1.0 / 11 + t2 * (
        1.0 / 13 + t2 * (1.0 / 15 + t2 * (1.0 / 17 + t2 * (1.0 / 19))))))))
    series = -t * un + 2.0 * t * t2 * tail
    uf = jnp.where(near, 1.0, u)
    return jnp.where(near, series, jnp.log1p(uf) - uf)


def poisson_deviance(s: Array, rate_hi: Array, rate_lo: Array | float = 0.0) -> Array:
    """``g(S, lam) = S log(lam / S) + S - lam`` (``-lam`` at ``S = 0``), ``lam = hi + lo``.

    ``g <= 0`` is the Poisson log-likelihood ratio of ``lam`` against the best rate ``S``.
    With ``u = (lam - S) / S`` formed from the exact difference ``hi - S``,
    ``g = S (log(1 + u) - u)`` keeps full relative precision when ``lam`` is close to ``S``.
    """
    positive = s > 0
    sp = jnp.where(positive, s, 1.0)
    diff = (rate_hi - sp) + rate_lo
    u = diff / sp
    value = sp * log1p_minus_x(u)
    return jnp.where(positive, value, -(rate_hi + rate_lo))


# ----------------------------------------------------------------- double-word arithmetic


def two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """``s + e = a + b`` exactly, ``s = fl(a + b)`` (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def split_float32(x: Array) -> tuple[Array, Array]:
    """``x = hi + lo`` exactly, ``hi`` the top 12 significant bits of a float32 (a bit mask)
    and ``lo`` the other 12: products of either with a 12-bit number are exact."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    hi = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
    return hi, x - hi


def _two_prod32(a: Array, b: Array) -> tuple[Array, Array]:
    """``p + e = a b`` exactly in float32 (Dekker's product with a bit-mask split)."""
    ah, al = split_float32(a)
    bh, bl = split_float32(b)
    p = a * b
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


@jax.custom_jvp
def divide_hilo(a: Array, b: Array) -> tuple[Array, Array]:
    """``a / b`` as ``hi + lo`` to about twice the working precision (``lo = 0`` in float64)."""
    q = a / b
    if is_double(q.dtype):
        return q, jnp.zeros_like(q)
    p, e = _two_prod32(q, b)
    return q, ((a - p) - e) / b


@divide_hilo.defjvp
def _divide_hilo_jvp(primals, tangents):
    a, b = primals
    da, db = tangents
    hi, lo = divide_hilo(a, b)
    return (hi, lo), ((da - hi * db) / b, jnp.zeros_like(lo))


def _log_table(bits: int):
    """``r_j`` (12 significant bits) near ``1 / (1 + (j + 1/2) / 2^bits)`` and ``-log r_j``
    as a float32 pair, for ``j = 0 .. 2^bits - 1``."""
    size = 1 << bits
    r, hi, lo = [], [], []
    for j in range(size):
        c = 1.0 + (j + 0.5) / size
        e = math.floor(math.log2(1.0 / c))
        rj = round((1.0 / c) * 2.0 ** (11 - e)) / 2.0 ** (11 - e)  # 12 significant bits
        value = -math.log(rj)
        h = float(np.float32(value))
        r.append(rj)
        hi.append(h)
        lo.append(float(np.float32(value - h)))
    return (np.asarray(r, np.float32), np.asarray(hi, np.float32),
            np.asarray(lo, np.float32))


_TABLE_BITS = 10
# One (2^bits, 3) table (r_j, -log r_j hi, lo): a single lookup.
_TABLE = np.stack(_log_table(_TABLE_BITS), axis=1)
# log 2 in three parts; the first two have 16 significant bits so that e * part is exact.
_LN2_HI = float(np.float32(round(math.log(2.0) * 2**16) / 2**16))
_LN2_MID = float(np.float32(round((math.log(2.0) - _LN2_HI) * 2**33) / 2**33))
_LN2_LO = float(np.float32(math.log(2.0) - _LN2_HI - _LN2_MID))


def _log_hilo32(x: Array) -> tuple[Array, Array]:
    """``log x = hi + lo`` for positive normal float32 ``x``, to about ``1e-13`` absolute.

    ``x = 2^e m`` with ``m`` in ``[1, 2)``; a table gives ``r_j`` of 12 bits with ``m r_j``
    within ``2^-10`` of 1; ``m = m_hi + m_lo`` (12 bits each) makes ``v = m r_j - 1 = A + B``
    exact, and ``log x = e log 2 - log r_j + log1p(v)`` is summed in double-word arithmetic,
    with ``log1p(v) = v - v^2/2 + v^3/3 - v^4/4`` (``|v| < 2^-10``, next term below 1e-16).
    """
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    e = ((bits >> 23) & jnp.uint32(0xFF)).astype(jnp.int32) - 127
    m_bits = (bits & jnp.uint32(0x007FFFFF)) | jnp.uint32(0x3F800000)
    m = jax.lax.bitcast_convert_type(m_bits, jnp.float32)
    j = ((bits >> (23 - _TABLE_BITS)) & jnp.uint32((1 << _TABLE_BITS) - 1)).astype(jnp.int32)
    r, neg_log_r_hi, neg_log_r_lo = jnp.moveaxis(jnp.asarray(_TABLE)[j], -1, 0)
    m_hi, m_lo = split_float32(m)
    a = m_hi * r - 1.0  # exact: a 24-bit product within 2^-10 of 1
    b = m_lo * r  # exact: 12 x 12 bits
    ef = e.astype(jnp.float32)
    hi, err = two_sum(ef * _LN2_HI, neg_log_r_hi)
    hi, err2 = two_sum(hi, ef * _LN2_MID)
    hi, err3 = two_sum(hi, a)
    hi, err4 = two_sum(hi, b)
    v = a + b
    poly = v * v * (-0.5 + v * (1.0 / 3 - 0.25 * v))
    lo = (((err + err2) + (err3 + err4)) + (neg_log_r_lo + ef * _LN2_LO)) + poly
    return two_sum(hi, lo)


@jax.custom_jvp
def log_hilo(x: Array) -> tuple[Array, Array]:
    """``log x`` as ``hi + lo``: ``hi`` is ``log x`` in the working dtype and ``lo`` the
    part it rounds away, to about ``1e-13`` in float32 (``lo = 0`` in float64)."""
    if is_double(x.dtype):
        return jnp.log(x), jnp.zeros_like(x)
    return _log_hilo32(x)


@log_hilo.defjvp
def _log_hilo_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    hi, lo = log_hilo(x)
    return (hi, lo), (dx / x, jnp.zeros_like(lo))
