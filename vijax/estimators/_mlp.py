"""A one-hidden-layer network ``R^n -> R`` for the learned parts of estimators (RELAX's
control variate, the learned baseline), applied per batch element; plain pytrees, no Flax."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class MLPParams(NamedTuple):
    w1: jax.Array  # (n, hidden)
    b1: jax.Array  # (hidden,)
    w2: jax.Array  # (hidden,)
    b2: jax.Array  # ()


def mlp_init(seed: int, num_inputs: int, hidden: int, bias: float = 0.0) -> MLPParams:
    """Glorot-scaled first layer; a zero output layer, so the network starts as ``bias``."""
    w1 = jax.random.normal(jax.random.key(seed), (num_inputs, hidden)) / math.sqrt(num_inputs)
    return MLPParams(w1, jnp.zeros(hidden), jnp.zeros(hidden), jnp.asarray(bias, w1.dtype))


def mlp_apply(params: MLPParams, x: jax.Array, event_ndim: int) -> jax.Array:
    """``w2 . tanh(W1 x + b1) + b2`` with ``x``'s last ``event_ndim`` axes flattened."""
    x = x.reshape(x.shape[: x.ndim - event_ndim] + (-1,))
    return jnp.tanh(x @ params.w1 + params.b1) @ params.w2 + params.b2
