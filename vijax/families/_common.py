"""Helpers shared by the families."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vijax._checks import check_finite, check_floating


def _sum_event(x: jax.Array, event_ndim: int) -> jax.Array:
    """Sum over the last ``event_ndim`` axes (one latent's terms)."""
    return jnp.sum(x, axis=tuple(range(x.ndim - event_ndim, x.ndim)))


def _as_float(x: Any) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.result_type(float, x.dtype))


def _checked_fields(params: Any, name: str, values: bool) -> Any:
    """Every field of the NamedTuple ``params`` floating (and finite when ``values``), after
    its shapes were checked; lists converted to arrays."""
    for field in params._fields:
        check_floating(f"{name}.{field}", getattr(params, field))
        if values:
            check_finite(f"{name}.{field}", getattr(params, field))
    return type(params)(*(jnp.asarray(p) if isinstance(p, list) else p for p in params))
