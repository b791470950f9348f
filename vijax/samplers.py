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

Categorical parameters are keyword-only, ``logits=`` or ``probs=`` (exactly one); the category
axis is the last one. With the same key, :func:`categorical`, :func:`gumbel_softmax` and
:func:`straight_through_gumbel_softmax` use the same Gumbel noise, so the argmax of the relaxed
sample is the Gumbel-max sample.

Bad input raises ``ValueError`` at the public function: shapes always, values (non-positive
rate/scale/temperature, probabilities that are negative or do not sum to one) when they are
concrete, i.e. not traced under ``jit``/``grad``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from vijax._checks import (
    check_finite,
    check_key,
    check_positive,
    check_probabilities,
    check_scalar,
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
    """``x`` as a floating JAX array (integers promoted to the default float)."""
    shape_of(name, x)  # a clear error for ragged lists and non-arrays
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    floating = jnp.issubdtype(dtype, jnp.floating)
    if not (floating or jnp.issubdtype(dtype, jnp.integer) or dtype == np.bool_):
        raise ValueError(f"{name} must hold real numbers; got dtype {dtype}")
    x = jnp.asarray(x)
    return x if floating else x.astype(jnp.result_type(float))


def _broadcast(**shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast shape of the named shapes, or a ValueError naming them."""
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        desc = ", ".join(f"{k} {v}" for k, v in shapes.items())
        raise ValueError(f"shapes do not broadcast: {desc}; expected shapes that broadcast "
                         "against each other (batch over parameters)") from None


def as_logits(*, logits: ArrayLike | None = None, probs: ArrayLike | None = None) -> Array:
    """Validated unnormalised log-probabilities from exactly one of ``logits=``/``probs=``.

    Args:
      logits: ``(..., K)`` real log-probabilities up to an additive constant per row
        (``-inf`` allowed for impossible categories; NaN and ``+inf`` are not).
      probs: ``(..., K)`` non-negative, summing to one along the last axis.

    Returns:
      ``(..., K)`` logits (``log(probs)`` when probabilities are given).
    """
    if (logits is None) == (probs is None):
        raise ValueError("pass exactly one of logits= or probs=; got "
                         + ("both" if logits is not None else "neither"))
    if probs is not None:
        check_probabilities("probs", probs)
        p = _float("probs", probs)
        return jnp.log(p)
    lg = _float("logits", logits)
    if lg.ndim == 0:
        raise ValueError("logits must have a category axis (shape (..., K)); got a scalar")
    if lg.shape[-1] < 1:
        raise ValueError(f"logits must have at least one category; got shape {lg.shape}")
    if is_concrete(lg):
        v = np.asarray(lg)
        if np.any(np.isnan(v)) or np.any(v == np.inf):
            raise ValueError("logits must not be NaN or +inf (-inf marks an impossible "
                             "category)")
        if np.any(np.all(v == -np.inf, axis=-1)):
            raise ValueError("logits must have at least one finite entry per row; found a row "
                             "of -inf")
    return lg


def _location_scale(key: Array, loc: ArrayLike, scale: ArrayLike,
                    sample_shape: int | Sequence[int]) -> tuple[Array, Array, tuple[int, ...]]:
    """Checked ``loc``, ``scale`` (> 0) as float arrays, and the output shape
    ``sample_shape + broadcast(loc, scale).shape``."""
    check_key("key", key)
    check_finite("loc", loc)
    check_positive("scale", scale)
    loc, scale = _float("loc", loc), _float("scale", scale)
    batch = _broadcast(loc=loc.shape, scale=scale.shape)
    return loc, scale, _sample_shape(sample_shape) + batch


def _temperature(temperature: ArrayLike, batch_shape: tuple[int, ...]) -> Array:
    """Checked ``temperature`` (> 0) whose shape broadcasts TO ``batch_shape`` (never enlarges
    it: the output shape is fixed by the logits and ``sample_shape``)."""
    check_positive("temperature", temperature)
    t = _float("temperature", temperature)
    try:
        ok = tuple(np.broadcast_shapes(t.shape, batch_shape)) == tuple(batch_shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"temperature must broadcast to the batch shape {batch_shape} of the "
                         f"logits (their shape without the category axis); got shape {t.shape}")
    return t


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
    return loc + scale * jax.random.normal(key, shape, jnp.result_type(loc, scale))


def normal_log_prob(z: ArrayLike, loc: ArrayLike = 0.0, scale: ArrayLike = 1.0) -> Array:
    """Elementwise ``log N(z; loc, scale^2) = -((z - loc)/scale)^2 / 2 - log scale - log(2 pi)/2``.

    Returns:
      ``broadcast(z, loc, scale)``-shaped log-densities (no sum over axes).
    """
    check_positive("scale", scale)
    z, loc, scale = _float("z", z), _float("loc", loc), _float("scale", scale)
    _broadcast(z=z.shape, loc=loc.shape, scale=scale.shape)
    u = (z - loc) / scale
    return -0.5 * u * u - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi)


def exponential(key: Array, rate: ArrayLike = 1.0,
                sample_shape: int | Sequence[int] = ()) -> Array:
    """Exponential(rate) sample by the inverse CDF: ``z = -log(1 - u) / rate``, ``u ~ U[0, 1)``.

    ``u < 1`` keeps ``z`` finite. Differentiable in ``rate``: ``dz/drate = -z / rate``, so
    ``d E[z] / d rate = -1 / rate^2``.

    Args:
      key: PRNG key.
      rate: array > 0 (the batch shape).
      sample_shape: leading sample axes.

    Returns:
      ``sample_shape + rate.shape`` non-negative samples.
    """
    check_key("key", key)
    check_positive("rate", rate)
    rate = _float("rate", rate)
    u = jax.random.uniform(key, _sample_shape(sample_shape) + rate.shape, rate.dtype)
    return -jnp.log1p(-u) / rate


def exponential_log_prob(z: ArrayLike, rate: ArrayLike = 1.0) -> Array:
    """Elementwise ``log Exp(z; rate) = log rate - rate * z`` for ``z >= 0`` (``-inf`` below)."""
    check_positive("rate", rate)
    z, rate = _float("z", z), _float("rate", rate)
    _broadcast(z=z.shape, rate=rate.shape)
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
    u = jax.random.uniform(key, shape, dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
    return -jnp.log(-jnp.log(u))


def _perturbed_logits(key: Array, logits: Array, sample_shape: tuple[int, ...]) -> Array:
    """``logits + g`` with ``g`` standard Gumbel of shape ``sample_shape + logits.shape``."""
    return logits + _standard_gumbel(key, sample_shape + logits.shape, logits.dtype)


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
    lg = as_logits(logits=logits, probs=probs)
    return jnp.argmax(_perturbed_logits(key, lg, _sample_shape(sample_shape)), axis=-1)


def gumbel_softmax(key: Array, temperature: ArrayLike, *, logits: ArrayLike | None = None,
                   probs: ArrayLike | None = None,
                   sample_shape: int | Sequence[int] = ()) -> Array:
    """Gumbel-softmax / Concrete relaxed one-hot sample ``y = softmax((logits + g) / temperature)``.

    ``g`` is standard Gumbel noise (the same as :func:`categorical` draws for the same key, so
    ``argmax(y)`` is that exact categorical sample at every temperature). As
    ``temperature -> 0`` the sample tends to a one-hot vector; as it grows, to the barycentre
    ``(1/K, ..., 1/K)``. Differentiable in ``logits``/``probs`` and ``temperature``.
    Density: :func:`gumbel_softmax_log_prob`.

    Args:
      key: PRNG key.
      temperature: array > 0 broadcasting to ``batch_shape`` (the logits without their last axis).
      logits: ``(..., K)`` (keyword-only; or ``probs=``, exactly one).
      probs: ``(..., K)`` probabilities summing to one.
      sample_shape: leading sample axes.

    Returns:
      ``sample_shape + batch_shape + (K,)`` points of the open simplex.
    """
    check_key("key", key)
    lg = as_logits(logits=logits, probs=probs)
    t = _temperature(temperature, lg.shape[:-1])
    perturbed = _perturbed_logits(key, lg, _sample_shape(sample_shape))
    return jax.nn.softmax(perturbed / t[..., None], axis=-1)


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
    check_key("key", key)
    lg = as_logits(logits=logits, probs=probs)
    t = _temperature(temperature, lg.shape[:-1])
    perturbed = _perturbed_logits(key, lg, _sample_shape(sample_shape))
    soft = jax.nn.softmax(perturbed / t[..., None], axis=-1)
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
    simplex. Computed in log space (``logsumexp``); invariant to adding a constant to the
    logits. At very low temperatures samples underflow (some ``y_k == 0``) and the density is
    then not representable in floating point.

    Args:
      y: ``(..., K)`` points of the open simplex (finite, non-negative, each row summing to 1
        within ``1e-4``, checked when concrete), broadcasting with the logits.
      temperature: array > 0 broadcasting to the batch shape.
      logits: ``(..., K)`` (keyword-only; or ``probs=``, exactly one).
      probs: ``(..., K)`` probabilities summing to one.

    Returns:
      ``broadcast(y, logits).shape[:-1]`` log-densities.
    """
    lg = as_logits(logits=logits, probs=probs)
    y = _float("y", y)
    if y.ndim == 0 or y.shape[-1] != lg.shape[-1]:
        raise ValueError(f"y must have K = {lg.shape[-1]} entries on its last axis (the "
                         f"logits' category axis); got shape {y.shape}")
    _broadcast(y=y.shape, logits=lg.shape)
    if is_concrete(y):
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
    batch = _broadcast(y=y.shape[:-1], logits=lg.shape[:-1])
    t = _temperature(temperature, batch)[..., None]
    k = lg.shape[-1]
    log_y = jnp.log(y)
    log_norm = jax.nn.logsumexp(lg - t * log_y, axis=-1)
    return (gammaln(jnp.asarray(k, y.dtype)) + (k - 1) * jnp.log(t[..., 0])
            + jnp.sum(lg - (t + 1) * log_y, axis=-1) - k * log_norm)


def anneal_temperature(step: ArrayLike, rate: float = 1e-4, min_temperature: float = 0.5,
                       initial_temperature: float = 1.0, update_every: int = 1) -> Array:
    """Jang et al. (2017) annealing: ``max(min_temperature, initial * exp(-rate * t))``.

    ``t`` is ``step`` rounded down to a multiple of ``update_every`` (Jang et al. update the
    temperature every N steps with ``rate`` in {1e-5, 1e-4} and ``min_temperature = 0.5``).
    Jittable in ``step``.

    Args:
      step: integer training step(s) >= 0 (scalar or array of an integer dtype; floats such
        as ``2.5`` or ``2.0`` are rejected).
      rate: decay rate r >= 0.
      min_temperature: floor > 0.
      initial_temperature: temperature at step 0, > 0.
      update_every: temperature changes every this many steps, >= 1.

    Returns:
      temperatures, the shape of ``step``.
    """
    check_scalar("rate", rate, minimum=0.0)
    check_scalar("min_temperature", min_temperature, minimum=0.0, strict=True)
    check_scalar("initial_temperature", initial_temperature, minimum=0.0, strict=True)
    if isinstance(update_every, bool) or not isinstance(update_every, int | np.integer) \
            or update_every < 1:
        raise ValueError(f"update_every must be an integer >= 1; got {update_every!r}")
    step_dtype = step.dtype if hasattr(step, "dtype") else np.asarray(step).dtype
    if not jnp.issubdtype(step_dtype, jnp.integer):
        raise ValueError(f"step must be an integer training step (integer dtype); got dtype "
                         f"{step_dtype}")
    if is_concrete(step) and np.any(np.asarray(step) < 0):
        raise ValueError(f"step must be >= 0; got {np.asarray(step).ravel().min()}")
    step = jnp.asarray(step)
    t = (step // update_every) * update_every
    dtype = jnp.result_type(float)
    return jnp.maximum(jnp.asarray(min_temperature, dtype),
                       initial_temperature * jnp.exp(-rate * t.astype(dtype)))
