"""Reparameterised samplers: pure functions of an explicit PRNG key (``docs/MODEL.md`` §4).

Every sampler is ``z = t(noise, parameters)`` with parameter-free noise, so ``jax.grad``
differentiates a sample with respect to its parameters (location, scale, rate, logits,
probabilities). Parameters batch: the output has shape ``sample_shape + batch_shape`` (plus the
category axis ``K`` for the relaxed one-hot samplers), where ``batch_shape`` is the broadcast
shape of the parameters.

- :func:`normal`: ``z = loc + scale * eps``, ``eps ~ N(0, 1)``.
- :func:`exponential`: inverse CDF, ``z = -log(1 - u) / rate``, ``u ~ U[0, 1)``, so
  ``dz/drate = -z / rate``.
- :func:`gumbel`: ``g = loc - scale * log(-log u)``.
- :func:`categorical`: Gumbel-max, ``argmax_k (logits_k + g_k)``, exactly
  ``Cat(softmax(logits))``.
- :func:`gumbel_softmax`: Concrete / Gumbel-softmax (Maddison, Mnih, Teh 2017; Jang, Gu, Poole
  2017), ``y = softmax((logits + g) / temperature)``, with its density
  :func:`gumbel_softmax_log_prob`.
- :func:`straight_through_gumbel_softmax`: the hard one-hot forward, the relaxed gradient
  backward: ``hard + soft - stop_gradient(soft)``.
- :func:`anneal_temperature`: Jang et al.'s schedule ``max(min_temperature, exp(-rate * t))``.

The noise comes from :mod:`vijax.random`: the numbers ``jax.random`` gives for the same key,
computed for Threefry keys with the cipher unrolled so that XLA fuses it with the transform
(2-3x faster on CPU); other key implementations go through ``jax.random`` itself.

Categorical parameters are keyword-only, ``logits=`` or ``probs=`` (exactly one); the category
axis is the last one. With the same key, :func:`categorical`, :func:`gumbel_softmax` and
:func:`straight_through_gumbel_softmax` use the same Gumbel noise, so the argmax of the relaxed
sample is the Gumbel-max sample.

Bad input raises ``ValueError`` naming the argument at the public function, before anything is
converted, allocated or compiled: keys, shapes and output sizes always (a ``sample_shape`` whose
output would not fit in the device's memory is refused), values (non-positive
rate/scale/temperature, probabilities that are negative or do not sum to one) when they are
concrete, i.e. not traced under ``jit``/``grad``. Values are checked as JAX computes with them,
after the cast to its float dtype (float32 unless x64 is on): ``1e39`` becomes ``inf`` and a
rate, scale or temperature of ``1e-40`` becomes 0 in float32, so both are refused (a positive
parameter must be at least the smallest normal float, ``1.18e-38`` in float32; a temperature,
and the scale of :func:`normal_log_prob`, at most its reciprocal, ``8.5e37``, because XLA
divides through the reciprocal, which would be flushed to 0 above it).

Finite logits of any size are safe: the relaxed samplers subtract each row's maximum before
adding the noise and again before dividing by the temperature (softmax ignores a constant per
row), so they never return NaN; :func:`gumbel_softmax_log_prob` refuses points on the boundary
of the simplex (``-inf`` under ``jit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from vijax import random as _random
from vijax._checks import (
    check_key,
    check_output_size,
    check_probabilities,
    check_real,
    check_scalar,
    float_dtype,
    is_concrete,
    shape_of,
)

Array = jax.Array
ArrayLike = Any

__all__ = [
    "normal",
    "normal_log_prob",
    "exponential",
    "exponential_log_prob",
    "gumbel",
    "categorical",
    "gumbel_softmax",
    "gumbel_softmax_log_prob",
    "straight_through_gumbel_softmax",
    "anneal_temperature",
    "as_logits",
]


# ----------------------------------------------------------------------------- helpers


def _sample_shape(sample_shape: int | Sequence[int]) -> tuple[int, ...]:
    """``sample_shape`` as a tuple of integers >= 1 (an int ``n`` means ``(n,)``)."""
    if isinstance(sample_shape, int | np.integer) and not isinstance(sample_shape, bool):
        sample_shape = (sample_shape,)
    try:
        shape = tuple(sample_shape)
    except TypeError as e:
        raise ValueError(f"sample_shape must be an int or a tuple of ints; got {sample_shape!r}"
                         ) from e
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, int | np.integer):
            raise ValueError(f"sample_shape must hold integers; got {sample_shape!r}")
        if n < 1:
            raise ValueError(f"sample_shape entries (sample counts) must be >= 1; "
                             f"got {sample_shape!r}")
    return tuple(int(n) for n in shape)


def _float(name: str, x: ArrayLike) -> Array:
    """``x`` (checked already) as a floating JAX array; integers and booleans become the default
    float."""
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    x = jnp.asarray(x)
    return x if jnp.issubdtype(dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _broadcast(**shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast shape of the named shapes, or a ValueError naming them."""
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        desc = ", ".join(f"{k} {v}" for k, v in shapes.items())
        raise ValueError(f"shapes do not broadcast: {desc}; expected shapes that broadcast "
                         "against each other (batch over parameters)") from None


def _check_categories(logits: ArrayLike | None, probs: ArrayLike | None
                      ) -> tuple[tuple[int, ...], np.dtype]:
    """Checks of ``logits=``/``probs=`` (exactly one) on the values as JAX will hold them;
    returns their shape ``(..., K)`` and float dtype. Converts nothing."""
    if (logits is None) == (probs is None):
        raise ValueError("pass exactly one of logits= or probs=; got "
                         + ("both" if logits is not None else "neither"))
    if probs is not None:
        check_probabilities("probs", probs)
        return shape_of("probs", probs), float_dtype("probs", probs)
    shape = shape_of("logits", logits)
    dtype = float_dtype("logits", logits)
    if len(shape) == 0:
        raise ValueError("logits must have a category axis (shape (..., K)); got a scalar")
    if shape[-1] < 1:
        raise ValueError(f"logits must have at least one category; got shape {shape}")
    if is_concrete(logits):
        v = np.asarray(logits)
        with np.errstate(over="ignore"):
            cast = v.astype(dtype)
        if np.any(np.isnan(cast)) or np.any(v == np.inf):
            raise ValueError("logits must not be NaN or +inf (-inf marks an impossible "
                             "category)")
        if np.any(cast == np.inf):
            raise ValueError(f"logits must be at most {float(jnp.finfo(dtype).max):.4g}, the "
                             f"largest {dtype} (JAX computes them in {dtype}); got "
                             f"{v[cast == np.inf].ravel()[0]}, which becomes +inf (logits "
                             "matter only up to a constant per row: subtract the row maximum)")
        if np.any(np.all(cast == -np.inf, axis=-1)):
            raise ValueError(f"logits must have at least one finite entry per row (in {dtype}); "
                             "found a row of -inf")
    return shape, dtype


def _to_logits(logits: ArrayLike | None, probs: ArrayLike | None) -> Array:
    """The checked ``logits=`` or ``log(probs=)`` as a JAX array."""
    if probs is not None:
        return jnp.log(_float("probs", probs))
    return _float("logits", logits)


def as_logits(*, logits: ArrayLike | None = None, probs: ArrayLike | None = None) -> Array:
    """Validated unnormalised log-probabilities from exactly one of ``logits=``/``probs=``.

    Args:
      logits: ``(..., K)`` real log-probabilities up to an additive constant per row
        (``-inf`` allowed for impossible categories; NaN and ``+inf`` are not, nor finite values
        that overflow to ``+inf`` in JAX's float dtype).
      probs: ``(..., K)`` non-negative, summing to one along the last axis.

    Returns:
      ``(..., K)`` logits (``log(probs)`` when probabilities are given).
    """
    _check_categories(logits, probs)
    return _to_logits(logits, probs)


def _check_location_scale(loc: ArrayLike, scale: ArrayLike, divisor: bool = False
                          ) -> tuple[tuple[int, ...], int]:
    """Checks of ``loc`` (finite) and ``scale`` (> 0; with ``divisor``, at most 1 / the
    smallest normal float) in JAX's float dtype; returns their broadcast shape and the larger
    item size."""
    loc_dtype = check_real("loc", loc)
    scale_dtype = check_real("scale", scale, positive=True, divisor=divisor)
    batch = _broadcast(loc=shape_of("loc", loc), scale=shape_of("scale", scale))
    return batch, max(loc_dtype.itemsize, scale_dtype.itemsize)


def _location_scale(key: Array, loc: ArrayLike, scale: ArrayLike,
                    sample_shape: int | Sequence[int]) -> tuple[Array, Array, tuple[int, ...]]:
    """Checked ``loc``, ``scale`` (> 0) as float arrays, and the output shape
    ``sample_shape + broadcast(loc, scale).shape`` (checked to fit in memory)."""
    check_key("key", key)
    shape = _sample_shape(sample_shape)
    batch, itemsize = _check_location_scale(loc, scale)
    check_output_size("sample_shape", shape + batch, f"f{itemsize}")
    return _float("loc", loc), _float("scale", scale), shape + batch


def _check_temperature(temperature: ArrayLike, batch_shape: tuple[int, ...]) -> None:
    """``temperature`` is > 0 (at least the smallest normal float in JAX's dtype) and its shape
    broadcasts TO ``batch_shape`` (never enlarges it: the output shape is fixed by the logits and
    ``sample_shape``)."""
    check_real("temperature", temperature, positive=True, divisor=True)
    t_shape = shape_of("temperature", temperature)
    try:
        ok = tuple(np.broadcast_shapes(t_shape, batch_shape)) == tuple(batch_shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"temperature must broadcast to the batch shape {batch_shape} of the "
                         f"logits (their shape without the category axis); got shape {t_shape}")


def _check_relaxed(key: Array, temperature: ArrayLike, logits: ArrayLike | None,
                   probs: ArrayLike | None, sample_shape: int | Sequence[int]
                   ) -> tuple[int, ...]:
    """All checks of the relaxed samplers; returns ``sample_shape`` as a tuple."""
    check_key("key", key)
    shape = _sample_shape(sample_shape)
    lg_shape, dtype = _check_categories(logits, probs)
    _check_temperature(temperature, lg_shape[:-1])
    check_output_size("sample_shape", shape + lg_shape, dtype)
    return shape


# ----------------------------------------------------------------------------- samplers


def normal(key: Array, loc: ArrayLike = 0.0, scale: ArrayLike = 1.0,
           sample_shape: int | Sequence[int] = ()) -> Array:
    """Gaussian location-scale sample ``z = loc + scale * eps``, ``eps ~ N(0, 1)``.

    Differentiable in ``loc`` (``dz/dloc = 1``) and ``scale`` (``dz/dscale = eps``).

    Args:
      key: PRNG key.
      loc: array broadcasting with ``scale``.
      scale: array > 0.
      sample_shape: leading sample axes (an int ``n`` means ``(n,)``).

    Returns:
      ``sample_shape + broadcast(loc, scale).shape`` samples.
    """
    loc, scale, shape = _location_scale(key, loc, scale, sample_shape)
    return loc + scale * _random.normal(key, shape, jnp.result_type(loc, scale))


def normal_log_prob(z: ArrayLike, loc: ArrayLike = 0.0, scale: ArrayLike = 1.0) -> Array:
    """Elementwise ``log N(z; loc, scale^2) = -((z - loc)/scale)^2 / 2 - log scale - log(2 pi)/2``.

    ``z`` may be infinite (log-density ``-inf``), not NaN; ``scale`` is at most
    ``1 / tiny`` (``8.5e37`` in float32), as XLA divides through the reciprocal.

    Returns:
      ``broadcast(z, loc, scale)``-shaped log-densities (no sum over axes).
    """
    z_dtype = check_real("z", z, finite=False)
    _, itemsize = _check_location_scale(loc, scale, divisor=True)
    shape = _broadcast(z=shape_of("z", z), loc=shape_of("loc", loc), scale=shape_of("scale", scale))
    check_output_size("z, loc and scale (broadcast together)", shape,
                      f"f{max(itemsize, z_dtype.itemsize)}", "log-densities")
    z, loc, scale = _float("z", z), _float("loc", loc), _float("scale", scale)
    u = (z - loc) / scale
    return -0.5 * u * u - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)


def exponential(key: Array, rate: ArrayLike = 1.0,
                sample_shape: int | Sequence[int] = ()) -> Array:
    """Exponential(rate) sample by the inverse CDF: ``z = -log(1 - u) / rate``, ``u ~ U[0, 1)``.

    ``u < 1`` keeps ``z`` finite (up to float overflow for rates near the smallest normal float).
    Differentiable in ``rate``: ``dz/drate = -z / rate``, so ``d E[z] / d rate = -1 / rate^2``.

    Args:
      key: PRNG key.
      rate: array > 0 (the batch shape), at least the smallest normal float of its dtype.
      sample_shape: leading sample axes.

    Returns:
      ``sample_shape + rate.shape`` non-negative samples.
    """
    check_key("key", key)
    shape = _sample_shape(sample_shape) + shape_of("rate", rate)
    dtype = check_real("rate", rate, positive=True)
    check_output_size("sample_shape", shape, dtype)
    rate = _float("rate", rate)
    u = _random.uniform(key, shape, rate.dtype)
    return -jnp.log1p(-u) / rate


def exponential_log_prob(z: ArrayLike, rate: ArrayLike = 1.0) -> Array:
    """Elementwise ``log Exp(z; rate) = log rate - rate * z`` for ``z >= 0`` (``-inf`` below).

    ``z`` may be infinite (log-density ``-inf``), not NaN.
    """
    z_dtype = check_real("z", z, finite=False)
    rate_dtype = check_real("rate", rate, positive=True)
    shape = _broadcast(z=shape_of("z", z), rate=shape_of("rate", rate))
    check_output_size("z and rate (broadcast together)", shape,
                      f"f{max(z_dtype.itemsize, rate_dtype.itemsize)}", "log-densities")
    z, rate = _float("z", z), _float("rate", rate)
    return jnp.where(z >= 0, jnp.log(rate) - rate * z, -jnp.inf)


def gumbel(key: Array, loc: ArrayLike = 0.0, scale: ArrayLike = 1.0,
           sample_shape: int | Sequence[int] = ()) -> Array:
    """Gumbel(loc, scale) sample by the inverse CDF: ``g = loc - scale * log(-log u)``.

    ``u`` is uniform on ``[tiny, 1)`` (``tiny`` the smallest normal float), so ``g`` is finite.

    Args:
      key: PRNG key.
      loc: array broadcasting with ``scale``.
      scale: array > 0.
      sample_shape: leading sample axes; ``gumbel(key, sample_shape=(n, K))`` gives standard
        Gumbel noise.

    Returns:
      ``sample_shape + broadcast(loc, scale).shape`` samples.
    """
    loc, scale, shape = _location_scale(key, loc, scale, sample_shape)
    return loc + scale * _standard_gumbel(key, shape, jnp.result_type(loc, scale))


def _standard_gumbel(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
    u = _random.uniform(key, shape, dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
    return -jnp.log(-jnp.log(u))


def _row_max(x: Array) -> Array:
    """The maximum of each row (last axis), kept as an axis, with no gradient: the functions it
    shifts (softmax, argmax, the Concrete density) do not change under a constant per row."""
    return jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))


def _perturbed_logits(key: Array, logits: Array, sample_shape: tuple[int, ...]) -> Array:
    """``logits - max(logits) + g`` with ``g`` standard Gumbel of shape
    ``sample_shape + logits.shape``.

    Subtracting each row's maximum changes no probability and keeps the sum finite for finite
    logits near the float limit (``3e38 + g`` would overflow to ``inf``).
    """
    return (logits - _row_max(logits)) + _standard_gumbel(key, sample_shape + logits.shape,
                                                           logits.dtype)


def _relaxed(perturbed: Array, temperature: Array) -> Array:
    """``softmax(perturbed / temperature)`` along the last axis, the row maximum subtracted
    BEFORE the division: the largest entry becomes ``0 / temperature = 0`` and the others
    ``<= 0`` (``-inf`` at most), so no temperature makes ``inf - inf``."""
    e = jnp.exp((perturbed - _row_max(perturbed)) / temperature[..., None])
    return e / jnp.sum(e, axis=-1, keepdims=True)


def categorical(key: Array, *, logits: ArrayLike | None = None, probs: ArrayLike | None = None,
                sample_shape: int | Sequence[int] = ()) -> Array:
    """Categorical sample by the Gumbel-max trick: ``argmax_k (logits_k + g_k)``, ``g`` Gumbel.

    Exact: ``P(argmax = k) = softmax(logits)_k``. Not differentiable (an index); see
    :func:`gumbel_softmax` for the relaxation.

    Args:
      key: PRNG key.
      logits: ``(..., K)`` (keyword-only; or ``probs=``, exactly one).
      probs: ``(..., K)`` probabilities summing to one.
      sample_shape: leading sample axes.

    Returns:
      ``sample_shape + batch_shape`` integer indices in ``[0, K)`` (int32, int64 under x64).
    """
    check_key("key", key)
    shape = _sample_shape(sample_shape)
    lg_shape, dtype = _check_categories(logits, probs)
    check_output_size("sample_shape", shape + lg_shape, dtype, "perturbed logits")
    lg = _to_logits(logits, probs)
    return jnp.argmax(_perturbed_logits(key, lg, shape), axis=-1)


def gumbel_softmax(key: Array, temperature: ArrayLike, *, logits: ArrayLike | None = None,
                   probs: ArrayLike | None = None,
                   sample_shape: int | Sequence[int] = ()) -> Array:
    """Gumbel-softmax / Concrete relaxed one-hot sample ``y = softmax((logits + g) / temperature)``.

    ``g`` is standard Gumbel noise (the same as :func:`categorical` draws for the same key, so
    ``argmax(y)`` is that exact categorical sample at every temperature). As
    ``temperature -> 0`` the sample tends to a one-hot vector; as it grows, to the barycentre
    ``(1/K, ..., 1/K)``. Differentiable in ``logits``/``probs`` and ``temperature``.
    Density: :func:`gumbel_softmax_log_prob`.

    Computed as ``softmax((x - max x) / temperature)`` with ``x = logits - max(logits) + g``
    (the same value: softmax ignores a constant per row), so finite logits of any size and any
    accepted temperature give a point of the simplex, never NaN.

    Args:
      key: PRNG key.
      temperature: array > 0 broadcasting to ``batch_shape`` (the logits without their last
        axis), from the smallest normal float to its reciprocal (``1.18e-38`` to ``8.5e37``
        in float32; XLA divides through the reciprocal, which must not flush to 0).
      logits: ``(..., K)`` (keyword-only; or ``probs=``, exactly one).
      probs: ``(..., K)`` probabilities summing to one.
      sample_shape: leading sample axes.

    Returns:
      ``sample_shape + batch_shape + (K,)`` points of the simplex.
    """
    shape = _check_relaxed(key, temperature, logits, probs, sample_shape)
    lg = _to_logits(logits, probs)
    return _relaxed(_perturbed_logits(key, lg, shape), _float("temperature", temperature))


def straight_through_gumbel_softmax(key: Array, temperature: ArrayLike, *,
                                    logits: ArrayLike | None = None,
                                    probs: ArrayLike | None = None,
                                    sample_shape: int | Sequence[int] = ()) -> Array:
    """Straight-through Gumbel-softmax: ``hard + (soft - stop_gradient(soft))``.

    The value is the one-hot Gumbel-max sample ``hard = one_hot(argmax(logits + g))`` (an exact
    categorical sample); the gradient is that of the relaxed sample ``soft``
    (:func:`gumbel_softmax` with the same key). Biased as a gradient estimator of the discrete
    objective (Jang, Gu, Poole 2017, §2.2); unbiased in value.

    Args and shapes as :func:`gumbel_softmax`.

    Returns:
      ``sample_shape + batch_shape + (K,)`` one-hot vectors (in value).
    """
    shape = _check_relaxed(key, temperature, logits, probs, sample_shape)
    lg = _to_logits(logits, probs)
    perturbed = _perturbed_logits(key, lg, shape)
    soft = _relaxed(perturbed, _float("temperature", temperature))
    hard = jax.nn.one_hot(jnp.argmax(perturbed, axis=-1), lg.shape[-1], dtype=soft.dtype)
    # parenthesised so that the forward value is exactly one-hot (soft - soft == 0 exactly)
    return hard + (soft - jax.lax.stop_gradient(soft))


def gumbel_softmax_log_prob(y: ArrayLike, temperature: ArrayLike, *,
                            logits: ArrayLike | None = None,
                            probs: ArrayLike | None = None) -> Array:
    """Log-density of the Concrete / Gumbel-softmax distribution (Maddison et al. 2017, eq. 9).

    With ``alpha = exp(logits)``, ``lam = temperature`` and ``K`` categories::

        p(y) = (K - 1)! lam^(K-1) prod_k alpha_k y_k^(-lam-1) / (sum_i alpha_i y_i^(-lam))^K

    a density with respect to the Lebesgue measure of the first ``K - 1`` coordinates of the
    simplex. Computed in log space: with ``a_k = logits_k - lam log y_k``,
    ``log p = log (K-1)! + (K-1) log lam + sum_k log_softmax(a)_k - sum_k log y_k``, after
    subtracting the row maxima of the logits and of ``a`` (the density is invariant to both), so
    neither large logits nor large temperatures overflow.

    The density lives on the OPEN simplex. A point with an entry that is 0 in the float dtype
    (a one-hot point, or a relaxed sample that underflowed at a low temperature) is refused
    when ``y`` is concrete; under ``jit`` its log-density is ``-inf`` (outside the support).

    Args:
      y: ``(..., K)`` points of the open simplex (finite, entries > 0 (at least the smallest
        normal float), each row summing to 1 within ``1e-4``, checked when concrete),
        broadcasting with the logits.
      temperature: array > 0 broadcasting to the batch shape (the range of
        :func:`gumbel_softmax`).
      logits: ``(..., K)`` (keyword-only; or ``probs=``, exactly one).
      probs: ``(..., K)`` probabilities summing to one.

    Returns:
      ``broadcast(y, logits).shape[:-1]`` log-densities (finite, or ``-inf``; never NaN for
      accepted inputs).
    """
    lg_shape, lg_dtype = _check_categories(logits, probs)
    k = lg_shape[-1]
    y_shape = shape_of("y", y)
    y_dtype = float_dtype("y", y)
    if len(y_shape) == 0 or y_shape[-1] != k:
        raise ValueError(f"y must have K = {k} entries on its last axis (the logits' category "
                         f"axis); got shape {y_shape}")
    _broadcast(y=y_shape, logits=lg_shape)
    if is_concrete(y):
        _check_open_simplex(y, y_dtype)
    batch = _broadcast(y=y_shape[:-1], logits=lg_shape[:-1])
    _check_temperature(temperature, batch)
    check_output_size("y and logits (broadcast together)", batch + (k,),
                      f"f{max(y_dtype.itemsize, lg_dtype.itemsize)}", "values")
    lg = _to_logits(logits, probs)
    y = _float("y", y)
    t = _float("temperature", temperature)[..., None]
    tiny = jnp.finfo(y.dtype).tiny
    inside = jnp.all(y >= tiny, axis=-1)  # the open simplex as the dtype holds it (no 0s)
    log_y = jnp.log(jnp.where(y >= tiny, y, 1.0))  # keeps NaN out of the masked-out branch
    lg = lg - _row_max(lg)  # <= 0, so no logit overflows below
    # a = lg - t log y (>= lg, since log y <= 0): for t < 1, t log y stays within 88 of 0; for
    # t >= 1 it is formed as t (lg / t - log y) after shifting by its row maximum, so even the
    # largest accepted temperature gives a <= 0 without overflow. Each branch sees a safe
    # temperature, so neither gives NaN, not even in the gradient.
    t_lo, t_hi = jnp.where(t < 1, t, 1.0), jnp.where(t < 1, 1.0, t)
    b = lg / t_hi - log_y
    a = jnp.where(t < 1, lg - t_lo * log_y, t_hi * (b - _row_max(b)))
    log_p = (gammaln(jnp.asarray(k, y.dtype)) + (k - 1) * jnp.log(t[..., 0])
             + jnp.sum(jax.nn.log_softmax(a, axis=-1), axis=-1) - jnp.sum(log_y, axis=-1))
    return jnp.where(inside, log_p, -jnp.inf)


def _check_open_simplex(y: ArrayLike, dtype: np.dtype) -> None:
    """Concrete ``y`` is a point of the open simplex in ``dtype``: finite, rows summing to one,
    entries > 0 (at least the smallest normal number once cast)."""
    v = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("y must be finite (a point of the simplex); found "
                         f"{np.size(v) - np.isfinite(v).sum()} non-finite value(s)")
    if np.any(v < 0):
        raise ValueError("y must lie on the simplex (entries >= 0); got negative values, "
                         f"e.g. {v[v < 0].ravel()[0]}")
    sums = v.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=1e-4):
        bad = sums[~np.isclose(sums, 1.0, atol=1e-4)].ravel()
        raise ValueError("y must lie on the simplex (each row summing to 1 along the last "
                         f"axis, atol 1e-4); got row sums such as {bad[0]:.6g}")
    with np.errstate(under="ignore"):
        cast = np.asarray(y).astype(dtype).astype(np.float64)
    tiny = float(jnp.finfo(dtype).tiny)
    if np.any(cast < tiny):
        raise ValueError(f"y must lie in the open simplex (every entry > 0; at least {tiny:.4g}, "
                         f"the smallest normal {dtype}): the Concrete density is not defined on "
                         f"its boundary; got {int(np.sum(cast < tiny))} entries that are 0 in "
                         f"{dtype}, e.g. {v[cast < tiny].ravel()[0]} (a one-hot point, or a "
                         "relaxed sample that underflowed at a low temperature: raise the "
                         "temperature)")


def _check_schedule_number(name: str, x: Any, minimum: float, strict: bool) -> float:
    """A Python/NumPy real (not a bool) ``> minimum`` (strict) or ``>= minimum`` that stays finite
    in JAX's default float (float32 unless x64 is on); when strict (a temperature), one that
    :func:`gumbel_softmax` accepts (from the smallest normal float to its reciprocal)."""
    if isinstance(x, bool | np.bool_):
        raise ValueError(f"{name} must be a real number; got {x!r}")
    v = check_scalar(name, x, minimum=minimum, strict=strict)
    check_real(name, np.float64(v), positive=strict, divisor=strict)
    return v


def anneal_temperature(step: ArrayLike, rate: float = 1e-4, min_temperature: float = 0.5,
                       initial_temperature: float = 1.0, update_every: int = 1) -> Array:
    """Jang et al. (2017) annealing: ``max(min_temperature, initial * exp(-rate * t))``.

    ``t`` is ``step`` rounded down to a multiple of ``update_every`` (Jang et al. update the
    temperature every N steps with ``rate`` in {1e-5, 1e-4} and ``min_temperature = 0.5``).
    Jittable in ``step``.

    Args:
      step: integer training step(s) >= 0 (scalar or array of an integer dtype; floats such
        as ``2.5`` or ``2.0`` are rejected), at most the largest default int (``2**31 - 1``
        unless x64 is on).
      rate: decay rate r >= 0.
      min_temperature: floor > 0.
      initial_temperature: temperature at step 0, > 0.
      update_every: temperature changes every this many steps, in ``[1, 2**31 - 1]`` (the
        default int).

    The three reals must stay finite in JAX's default float, and the two temperatures must be
    ones :func:`gumbel_softmax` accepts (``1.18e-38`` to ``8.5e37`` in float32).

    Returns:
      temperatures, the shape of ``step``.
    """
    rate = _check_schedule_number("rate", rate, 0.0, strict=False)
    min_temperature = _check_schedule_number("min_temperature", min_temperature, 0.0, strict=True)
    initial_temperature = _check_schedule_number("initial_temperature", initial_temperature, 0.0,
                                                 strict=True)
    int_dtype = jnp.result_type(int)
    int_max = int(jnp.iinfo(int_dtype).max)
    if isinstance(update_every, bool) or not isinstance(update_every, int | np.integer) \
            or not 1 <= update_every <= int_max:
        raise ValueError(f"update_every must be an integer in [1, {int_max}] (the default int, "
                         f"{int_dtype}); got {update_every!r}")
    shape_of("step", step)  # a clear error for ragged lists and non-arrays
    step_dtype = step.dtype if hasattr(step, "dtype") else np.asarray(step).dtype
    if not jnp.issubdtype(step_dtype, jnp.integer):
        raise ValueError(f"step must be an integer training step (integer dtype); got dtype "
                         f"{step_dtype}")
    if is_concrete(step):
        v = np.asarray(step)
        if np.any(v < 0):
            raise ValueError(f"step must be >= 0; got {v.ravel().min()}")
        if np.any(v > int_max):
            raise ValueError(f"step must be at most {int_max} (the default int, {int_dtype}; "
                             f"enable jax_enable_x64 for int64); got {v.ravel().max()}")
    step = jnp.asarray(step).astype(int_dtype)
    t = (step // int(update_every)) * int(update_every)
    dtype = jnp.result_type(float)
    return jnp.maximum(jnp.asarray(min_temperature, dtype),
                       initial_temperature * jnp.exp(-rate * t.astype(dtype)))
