"""Discrete families and their Concrete relaxations (MODEL.md section 4).

Parameters are logits (a plain array, batch axes first). :class:`Bernoulli` factors over the
last ``event_ndim`` axes; :class:`Categorical`'s event axes end with the category axis ``K``
(``event_ndim=2`` with logits ``(B, 20, 10)`` is 20 ten-way variables per data point) and its
samples are one-hot, so a decoder takes them as they are.

Both share the relaxation machinery the relaxation-based estimators use (Jang, Gu, Poole 2017;
Maddison, Mnih, Teh 2017; Tucker et al. 2017):

- ``relaxed_noise(key, logits, shape)``: ``z = logits + logistic noise`` (Bernoulli) or
  ``z = log softmax(logits) + Gumbel noise`` (categorical), reparameterised in the logits;
- ``hard(z)``: the exact discrete sample ``H(z)`` (``z > 0``; the one-hot ``argmax``);
- ``soft(z, temperature)``: the relaxed sample ``sigmoid(z / t)`` / ``softmax(z / t)``;
- ``conditional_noise(key, logits, b, shape)``: ``z~ ~ p(z | H(z) = b)``, reparameterised in
  the logits (REBAR's conditional sample). Bernoulli, with ``theta = sigmoid(logits)`` and
  ``v ~ U(0, 1)``: ``u' = (1 - theta) + v theta`` when ``b = 1``, ``u' = v (1 - theta)`` when
  ``b = 0``, ``z~ = logits + logit(u')``. Categorical, with ``p = softmax(logits)``:
  ``z~_b = -log(-log v_b)`` and ``z~_i = -log(-log(v_i) / p_i - log v_b)`` for ``i != b``.

The relaxed families are distributions of their own, with densities: the binary Concrete

    log p(x) = log t - softplus(t y - a) - softplus(a - t y) + softplus(y) + softplus(-y),
    y = logit(x), a = logits

(the logistic density of ``y``, times the Jacobian of the sigmoid), and the Concrete
(Gumbel-softmax) density of :func:`vijax.samplers.gumbel_softmax_log_prob`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from vijax import random as _random
from vijax._checks import (
    check_finite,
    check_floating,
    check_int,
    check_key,
    check_scalar,
    shape_of,
)
from vijax.families._common import _sum_event
from vijax.samplers import _sample_shape, gumbel_softmax_log_prob

Array = jax.Array

__all__ = ["Bernoulli", "Categorical", "RelaxedBernoulli", "RelaxedCategorical",
           "bernoulli_log_density"]


def _tiny(dtype: Any) -> float:
    return float(jnp.finfo(dtype).tiny)


def _uniform(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
    """``U(0, 1)`` strictly inside the interval (logit and log stay finite)."""
    return _random.uniform(key, shape, dtype, minval=_tiny(dtype), maxval=1.0)


def bernoulli_log_density(logits: Array, x: Array) -> Array:
    """Elementwise ``x l - softplus(l)``: ``log Bernoulli(x | sigmoid(l))`` at ``x`` in
    ``{0, 1}``, and its continuous extension on ``[0, 1]`` (the Bernoulli decoder of a VAE).

    ``softplus(l) = max(l, 0) + log1p(exp(-|l|))``: one ``exp`` and one ``log1p`` per entry,
    exact for every finite ``l`` (``exp(-|l|) <= 1``), fused by XLA with a following sum (and
    into the product that makes the logits). ``jax.nn.softplus``, ``logaddexp(l, 0)`` with its
    infinity and NaN handling, measured 4-10x slower on CPU for ``(2500, 784)`` logits, the
    IWAE evaluation's largest elementwise cost. The derivative is set by hand
    (``custom_jvp``): ``d/dl = x - sigmoid(l)``, ``d/dx = l``, with ``sigmoid(l) = 1 / (1 + e)``
    for ``l >= 0`` and ``e / (1 + e)`` otherwise, ``e = exp(-|l|)`` reused from the forward
    pass; equal, up to rounding, to autodiff of ``x l - softplus(l)``.

    Args:
        logits: ``l``, any shape.
        x: values broadcasting against ``logits`` (integer or boolean ``x`` is cast to the
            logits' float dtype first).

    Returns:
        the elementwise log-densities, of the broadcast shape.
    """
    dtype = jnp.result_type(logits, x, float)
    return _bernoulli_log_density(jnp.asarray(logits, dtype), jnp.asarray(x, dtype))


@jax.custom_jvp
def _bernoulli_log_density(logits: Array, x: Array) -> Array:
    return _bernoulli_terms(logits, x)[0]


def _bernoulli_terms(logits: Array, x: Array) -> tuple[Array, Array]:
    """``x l - softplus(l)`` and ``e = exp(-|l|)`` (for the derivative)."""
    e = jnp.exp(-jnp.abs(logits))
    return x * logits - jnp.maximum(logits, 0) - jnp.log1p(e), e


@_bernoulli_log_density.defjvp
def _bernoulli_log_density_jvp(primals, tangents):
    logits, x = primals
    d_logits, d_x = tangents
    value, e = _bernoulli_terms(logits, x)
    sigmoid = jnp.where(logits >= 0, 1, e) / (1 + e)
    return value, (x - sigmoid) * d_logits + logits * d_x


@dataclasses.dataclass(frozen=True)
class _Discrete:
    """What Bernoulli and categorical share: checks, shapes, sampling through ``hard``."""

    event_ndim: int = 1
    reparameterized: ClassVar[bool] = False
    min_event_ndim: ClassVar[int] = 0

    def __post_init__(self) -> None:
        check_int("event_ndim", self.event_ndim, minimum=self.min_event_ndim)

    def check(self, params: Any, name: str = "params", values: bool = True) -> Array:
        shape = shape_of(name, params)
        if len(shape) < self.event_ndim:
            raise ValueError(f"{name} (logits) must have at least event_ndim = "
                             f"{self.event_ndim} axes; got shape {shape}")
        check_floating(name, params)
        if values:
            check_finite(name, params)
        return jnp.asarray(params)

    def batch_shape(self, params: Array) -> tuple[int, ...]:
        shape = jnp.shape(params)
        return tuple(shape[: len(shape) - self.event_ndim])

    def event_shape(self, params: Array) -> tuple[int, ...]:
        shape = jnp.shape(params)
        return tuple(shape[len(shape) - self.event_ndim:])

    def sample(self, key: Array, params: Array, sample_shape: int | Sequence[int] = ()) -> Array:
        """Exact draws (not differentiable), ``sample_shape + logits.shape``, as floats."""
        check_key("key", key)
        return jax.lax.stop_gradient(self.hard(self.relaxed_noise(key, params, sample_shape)))

    def sample_and_log_prob(self, key: Array, params: Array,
                            sample_shape: int | Sequence[int] = ()) -> tuple[Array, Array]:
        z = self.sample(key, params, sample_shape)
        return z, self.log_prob(params, z)


@dataclasses.dataclass(frozen=True)
class Bernoulli(_Discrete):
    """Independent Bernoulli variables with ``P(b = 1) = sigmoid(logits)``."""

    def relaxed_noise(self, key: Array, params: Array,
                      sample_shape: int | Sequence[int] = ()) -> Array:
        u = _uniform(key, _sample_shape(sample_shape) + jnp.shape(params),
                     jnp.result_type(params, float))
        return params + jnp.log(u) - jnp.log1p(-u)

    @staticmethod
    def hard(z: Array) -> Array:
        return (z > 0).astype(z.dtype)

    @staticmethod
    def soft(z: Array, temperature: Any) -> Array:
        return jax.nn.sigmoid(z / temperature)

    def conditional_noise(self, key: Array, params: Array, b: Array) -> Array:
        """``z~ ~ p(z | H(z) = b)`` for draws ``b`` of shape ``sample_shape + logits.shape``."""
        v = _uniform(key, jnp.shape(b), jnp.result_type(params, float))
        # logit(u) in log space (u can be subnormal: its log must not underflow to -inf):
        # b = 0: u = v (1 - theta);       1 - u = 1 - v (1 - theta)
        # b = 1: u = 1 - (1 - v) theta;   1 - u = (1 - v) theta
        log_theta, log_1m_theta = jax.nn.log_sigmoid(params), jax.nn.log_sigmoid(-params)
        theta, one_m_theta = jnp.exp(log_theta), jnp.exp(log_1m_theta)
        log_u = jnp.where(b > 0.5, jnp.log1p(-(1.0 - v) * theta), jnp.log(v) + log_1m_theta)
        log_1m_u = jnp.where(b > 0.5, jnp.log1p(-v) + log_theta, jnp.log1p(-v * one_m_theta))
        return params + log_u - log_1m_u

    def log_prob(self, params: Array, z: Array) -> Array:
        """``sum b l - softplus(l)`` over the event axes (also the continuous extension at
        relaxed ``b`` in ``[0, 1]``, as REBAR evaluates it), by :func:`bernoulli_log_density`."""
        return _sum_event(bernoulli_log_density(params, z), self.event_ndim)

    def entropy(self, params: Array) -> Array:
        """``H = sum softplus(l) - sigmoid(l) l``."""
        return _sum_event(jax.nn.softplus(params) - jax.nn.sigmoid(params) * params,
                          self.event_ndim)

    def kl_to_uniform(self, params: Array) -> Array:
        """``KL(q || Bernoulli(1/2)^n) = n log 2 - H``."""
        n = math.prod(self.event_shape(params))
        return n * math.log(2.0) - self.entropy(params)


@dataclasses.dataclass(frozen=True)
class Categorical(_Discrete):
    """Independent categorical variables, one-hot, ``P(b = e_k) = softmax(logits)_k``; the last
    event axis is the category axis (``K >= 2``)."""

    min_event_ndim = 1

    def check(self, params: Any, name: str = "params", values: bool = True) -> Array:
        shape = shape_of(name, params)
        if shape and shape[-1] < 2:
            raise ValueError(f"{name} (logits) must have at least 2 categories on the last "
                             f"axis; got shape {shape}")
        return super().check(params, name, values)

    def relaxed_noise(self, key: Array, params: Array,
                      sample_shape: int | Sequence[int] = ()) -> Array:
        u = _uniform(key, _sample_shape(sample_shape) + jnp.shape(params),
                     jnp.result_type(params, float))
        return jax.nn.log_softmax(params, axis=-1) - jnp.log(-jnp.log(u))

    @staticmethod
    def hard(z: Array) -> Array:
        return jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=z.dtype)

    @staticmethod
    def soft(z: Array, temperature: Any) -> Array:
        return jax.nn.softmax(z / temperature, axis=-1)

    def conditional_noise(self, key: Array, params: Array, b: Array) -> Array:
        """``z~ ~ p(z | argmax z = b)`` for one-hot draws ``b``."""
        v = _uniform(key, jnp.shape(b), jnp.result_type(params, float))
        log_v = jnp.log(v)
        log_vb = jnp.sum(b * log_v, axis=-1, keepdims=True)
        p = jax.nn.softmax(params, axis=-1)
        others = -jnp.log(-log_v / p - log_vb)
        return jnp.where(b > 0.5, -jnp.log(-log_v), others)

    def log_prob(self, params: Array, z: Array) -> Array:
        """``sum b . log softmax(l)`` over the event axes."""
        return _sum_event(z * jax.nn.log_softmax(params, axis=-1), self.event_ndim)

    def entropy(self, params: Array) -> Array:
        logp = jax.nn.log_softmax(params, axis=-1)
        return _sum_event(-jnp.exp(logp) * logp, self.event_ndim)

    def kl_to_uniform(self, params: Array) -> Array:
        """``KL(q || uniform) = sum over the variables of (log K - H)``."""
        shape = self.event_shape(params)
        variables = math.prod(shape[:-1])
        return variables * math.log(shape[-1]) - self.entropy(params)


# ----------------------------------------------------------------------------- relaxations


@dataclasses.dataclass(frozen=True)
class _Relaxed:
    """What the two relaxations share: a fixed ``temperature``, the checks and shapes of
    their exact family (``exact``), and samples ``soft(relaxed_noise, temperature)``."""

    temperature: float = 1.0
    event_ndim: int = 1
    reparameterized: ClassVar[bool] = True
    exact: ClassVar[type[_Discrete]]

    def __post_init__(self) -> None:
        check_scalar("temperature", self.temperature, minimum=0.0, strict=True)
        check_int("event_ndim", self.event_ndim, minimum=self.exact.min_event_ndim)

    def _exact(self) -> _Discrete:
        return self.exact(self.event_ndim)

    def check(self, params: Any, name: str = "params", values: bool = True) -> Array:
        return self._exact().check(params, name, values)

    def batch_shape(self, params: Array) -> tuple[int, ...]:
        return self._exact().batch_shape(params)

    def event_shape(self, params: Array) -> tuple[int, ...]:
        return self._exact().event_shape(params)

    def sample(self, key: Array, params: Array, sample_shape: int | Sequence[int] = ()) -> Array:
        check_key("key", key)
        exact = self._exact()
        return exact.soft(exact.relaxed_noise(key, params, sample_shape), self.temperature)

    # a draw of sample(), then its log_prob, as for the exact families
    sample_and_log_prob = _Discrete.sample_and_log_prob


@dataclasses.dataclass(frozen=True)
class RelaxedBernoulli(_Relaxed):
    """Binary Concrete (relaxed Bernoulli) at a fixed ``temperature``: ``sigmoid(z / t)``,
    ``z = logits + logistic noise``; reparameterised."""

    exact: ClassVar[type[_Discrete]] = Bernoulli

    def log_prob(self, params: Array, x: Array) -> Array:
        """The binary Concrete log-density (module docstring), summed over the event axes."""
        t = self.temperature
        y = jnp.log(x) - jnp.log1p(-x)
        lp = (math.log(t) - jax.nn.softplus(t * y - params) - jax.nn.softplus(params - t * y)
              + jax.nn.softplus(y) + jax.nn.softplus(-y))
        return _sum_event(lp, self.event_ndim)


@dataclasses.dataclass(frozen=True)
class RelaxedCategorical(_Relaxed):
    """Concrete / Gumbel-softmax at a fixed ``temperature``: ``softmax(z / t)``; the last event
    axis is the category axis; reparameterised."""

    exact: ClassVar[type[_Discrete]] = Categorical

    def log_prob(self, params: Array, y: Array) -> Array:
        """The Concrete log-density of each variable (``samplers.gumbel_softmax_log_prob``),
        summed over the variables."""
        lp = gumbel_softmax_log_prob(y, self.temperature, logits=params)
        return _sum_event(lp, self.event_ndim - 1)
