"""Helpers shared by the families."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _sum_event(x: jax.Array, event_ndim: int) -> jax.Array:
    """Sum over the last ``event_ndim`` axes (one latent's terms)."""
    return jnp.sum(x, axis=tuple(range(x.ndim - event_ndim, x.ndim)))


def _as_float(x: Any) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.result_type(float, x.dtype))
