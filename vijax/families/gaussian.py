"""Gaussian families: mean-field (diagonal) and full-rank (Cholesky), batched or not.

The interface every family implements is described in :mod:`vijax.families`. Maths:
``docs/MODEL.md`` section 2 (the Gaussian KL) and section 4 (``z = mu + sigma eps``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax import random as _random
from vijax._checks import check_finite, check_int, check_key, shape_of
from vijax.families._common import _as_float, _checked_fields, _sum_event
from vijax.samplers import _sample_shape

Array = jax.Array
ArrayLike = Any

__all__ = ["GaussianParams", "MeanFieldGaussian", "FullRankParams", "FullRankGaussian"]

_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- mean field


class GaussianParams(NamedTuple):
    """Mean-field Gaussian parameters: ``q(z) = N(loc, diag(exp(log_scale))^2)``.

    ``loc`` and ``log_scale`` have the same shape ``batch_shape + event_shape``.
    """

    loc: Array
    log_scale: Array


@dataclasses.dataclass(frozen=True)
class MeanFieldGaussian:
    """Diagonal Gaussian, ``z = loc + exp(log_scale) * eps``, ``eps ~ N(0, I)``.

    Attributes:
      event_ndim: trailing axes of ``loc`` that form one latent ``z`` (summed in
        :meth:`log_prob`); the leading ones are batch axes (one ``q(z|x_i)`` per data point).
    """

    event_ndim: int = 1
    reparameterized: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_int("event_ndim", self.event_ndim, minimum=0)

    @staticmethod
    def init(loc: ArrayLike, scale: ArrayLike | None = None) -> GaussianParams:
        """Parameters from a location and a scale (> 0, default 1), stored as ``log_scale``."""
        check_finite("loc", loc)
        loc = _as_float(loc)
        if scale is None:
            return GaussianParams(loc, jnp.zeros_like(loc))
        check_finite("scale", scale)
        if not np.all(np.asarray(scale) > 0):
            raise ValueError(f"scale must be > 0; got {np.asarray(scale)}")
        scale = jnp.asarray(scale, loc.dtype)
        try:
            ok = np.broadcast_shapes(scale.shape, loc.shape) == loc.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"scale must broadcast to loc's shape {loc.shape}; got shape "
                             f"{scale.shape}")
        return GaussianParams(loc, jnp.log(jnp.broadcast_to(scale, loc.shape)))

    def check(self, params: Any, name: str = "params", values: bool = True) -> GaussianParams:
        if not isinstance(params, GaussianParams):
            if isinstance(params, tuple | list) and len(params) == 2:
                params = GaussianParams(*params)
            else:
                raise ValueError(f"{name} must be GaussianParams(loc, log_scale) for "
                                 f"MeanFieldGaussian; got {type(params).__name__}")
        loc_shape = shape_of(f"{name}.loc", params.loc)
        scale_shape = shape_of(f"{name}.log_scale", params.log_scale)
        if scale_shape != loc_shape:
            raise ValueError(f"{name}.log_scale must have {name}.loc's shape {loc_shape}; got "
                             f"shape {scale_shape}")
        if len(loc_shape) < self.event_ndim:
            raise ValueError(f"{name}.loc must have at least event_ndim = {self.event_ndim} "
                             f"axes; got shape {loc_shape}")
        return _checked_fields(params, name, values)

    def batch_shape(self, params: GaussianParams) -> tuple[int, ...]:
        shape = jnp.shape(params.loc)
        return tuple(shape[: len(shape) - self.event_ndim])

    def event_shape(self, params: GaussianParams) -> tuple[int, ...]:
        shape = jnp.shape(params.loc)
        return tuple(shape[len(shape) - self.event_ndim:])

    def _noise(self, key: Array, params: GaussianParams, sample_shape) -> Array:
        loc = params.loc
        dtype = jnp.result_type(loc, params.log_scale, float)
        return _random.normal(key, _sample_shape(sample_shape) + jnp.shape(loc), dtype)

    def sample(self, key: Array, params: GaussianParams,
               sample_shape: int | Sequence[int] = ()) -> Array:
        """``loc + exp(log_scale) * eps``: ``sample_shape + loc.shape``, differentiable."""
        check_key("key", key)
        eps = self._noise(key, params, sample_shape)
        return params.loc + jnp.exp(params.log_scale) * eps

    def log_prob(self, params: GaussianParams, z: ArrayLike) -> Array:
        """``sum over the event axes of log N(z_d; loc_d, exp(log_scale_d)^2)``."""
        u = (z - params.loc) * jnp.exp(-params.log_scale)
        return _sum_event(-0.5 * u * u - params.log_scale - 0.5 * _LOG_2PI, self.event_ndim)

    def sample_and_log_prob(self, key: Array, params: GaussianParams,
                            sample_shape: int | Sequence[int] = ()) -> tuple[Array, Array]:
        """``(z, log q(z))`` with ``log q = sum -eps^2/2 - log_scale - log(2 pi)/2``."""
        check_key("key", key)
        eps = self._noise(key, params, sample_shape)
        z = params.loc + jnp.exp(params.log_scale) * eps
        log_q = -0.5 * eps * eps - params.log_scale - 0.5 * _LOG_2PI
        return z, _sum_event(log_q, self.event_ndim)

    def entropy(self, params: GaussianParams) -> Array:
        """``H(q) = sum_d (log_scale_d + (1 + log 2 pi) / 2)`` over the event axes."""
        return _sum_event(params.log_scale + 0.5 * (1.0 + _LOG_2PI), self.event_ndim)

    def kl_to_standard_normal(self, params: GaussianParams) -> Array:
        """``KL(q || N(0, I)) = 1/2 sum_d (s_d^2 + loc_d^2 - 1 - log s_d^2)`` (MODEL.md §2)."""
        two_log_s = 2.0 * params.log_scale
        kl = 0.5 * (jnp.exp(two_log_s) + params.loc**2 - 1.0 - two_log_s)
        return _sum_event(kl, self.event_ndim)


# ----------------------------------------------------------------------------- full rank


class FullRankParams(NamedTuple):
    """Full-rank Gaussian parameters, unconstrained: ``q(z) = N(loc, L L^T)`` with
    ``L = tril(tril_raw, -1) + diag(exp(diag(tril_raw)))`` (the Cholesky factor; the
    diagonal of ``tril_raw`` holds ``log L_dd``, its upper triangle is ignored).

    Shapes: ``loc`` ``batch_shape + (D,)``, ``tril_raw`` ``batch_shape + (D, D)``.
    """

    loc: Array
    tril_raw: Array


@dataclasses.dataclass(frozen=True)
class FullRankGaussian:
    """Gaussian with a dense covariance through its Cholesky factor, ``z = loc + L eps``.

    The event is the last axis of ``loc`` (``D``); leading axes are batch axes.
    """

    event_ndim: ClassVar[int] = 1
    reparameterized: ClassVar[bool] = True

    @staticmethod
    def init(loc: ArrayLike, scale_tril: ArrayLike | None = None) -> FullRankParams:
        """Parameters from a location ``(..., D)`` and a lower-triangular Cholesky factor
        ``(..., D, D)`` with a positive diagonal (default the identity)."""
        check_finite("loc", loc)
        loc = _as_float(loc)
        if loc.ndim < 1:
            raise ValueError(f"loc must have an event axis (shape (..., D)); got shape "
                             f"{loc.shape}")
        d = loc.shape[-1]
        if scale_tril is None:
            return FullRankParams(loc, jnp.zeros(loc.shape + (d,), loc.dtype))
        check_finite("scale_tril", scale_tril)
        tril = jnp.asarray(scale_tril, loc.dtype)
        if tril.shape != loc.shape + (d,):
            raise ValueError(f"scale_tril must have shape {loc.shape + (d,)}; got shape "
                             f"{tril.shape}")
        diag = np.asarray(jnp.diagonal(tril, axis1=-2, axis2=-1))
        if not np.all(diag > 0):
            raise ValueError("scale_tril must have a positive diagonal (a Cholesky factor); "
                             f"got diagonal entries {diag.ravel()[:6]}")
        if np.any(np.asarray(jnp.triu(tril, 1)) != 0):
            raise ValueError("scale_tril must be lower triangular; found non-zero entries "
                             "above the diagonal")
        raw = jnp.tril(tril, -1) + jnp.einsum("...d,de->...de", jnp.log(jnp.asarray(diag)),
                                              jnp.eye(d, dtype=loc.dtype))
        return FullRankParams(loc, raw)

    def check(self, params: Any, name: str = "params", values: bool = True) -> FullRankParams:
        if not isinstance(params, FullRankParams):
            if isinstance(params, tuple | list) and len(params) == 2:
                params = FullRankParams(*params)
            else:
                raise ValueError(f"{name} must be FullRankParams(loc, tril_raw) for "
                                 f"FullRankGaussian; got {type(params).__name__}")
        loc_shape = shape_of(f"{name}.loc", params.loc)
        if len(loc_shape) < 1:
            raise ValueError(f"{name}.loc must have shape (..., D); got a scalar")
        want = loc_shape + loc_shape[-1:]
        got = shape_of(f"{name}.tril_raw", params.tril_raw)
        if got != want:
            raise ValueError(f"{name}.tril_raw must have shape {want} (loc's shape plus D); got "
                             f"shape {got}")
        return _checked_fields(params, name, values)

    def batch_shape(self, params: FullRankParams) -> tuple[int, ...]:
        return tuple(jnp.shape(params.loc)[:-1])

    def event_shape(self, params: FullRankParams) -> tuple[int, ...]:
        return tuple(jnp.shape(params.loc)[-1:])

    @staticmethod
    def scale_tril(params: FullRankParams) -> Array:
        """The Cholesky factor ``L`` (lower triangular, positive diagonal)."""
        raw = params.tril_raw
        log_diag = jnp.diagonal(raw, axis1=-2, axis2=-1)
        return jnp.tril(raw, -1) + jnp.exp(log_diag)[..., None] * jnp.eye(raw.shape[-1],
                                                                           dtype=raw.dtype)

    def _noise(self, key: Array, params: FullRankParams, sample_shape) -> Array:
        dtype = jnp.result_type(params.loc, params.tril_raw, float)
        return _random.normal(key, _sample_shape(sample_shape) + jnp.shape(params.loc),
                              dtype)

    def sample(self, key: Array, params: FullRankParams,
               sample_shape: int | Sequence[int] = ()) -> Array:
        """``loc + L eps``: ``sample_shape + loc.shape``, differentiable."""
        check_key("key", key)
        eps = self._noise(key, params, sample_shape)
        return params.loc + jnp.einsum("...de,...e->...d", self.scale_tril(params), eps)

    def log_prob(self, params: FullRankParams, z: ArrayLike) -> Array:
        """``log N(z; loc, L L^T) = -|L^-1 (z - loc)|^2 / 2 - sum log L_dd - D log(2 pi) / 2``."""
        z = jnp.asarray(z)
        diff = z - params.loc
        batch = jnp.broadcast_shapes(diff.shape[:-1], params.tril_raw.shape[:-2])
        d = diff.shape[-1]
        tril = jnp.broadcast_to(self.scale_tril(params), batch + (d, d))
        u = jax.lax.linalg.triangular_solve(tril, jnp.broadcast_to(diff, batch + (d,))[..., None],
                                            left_side=True, lower=True)[..., 0]
        log_diag = jnp.diagonal(params.tril_raw, axis1=-2, axis2=-1)
        return (-0.5 * jnp.sum(u * u, axis=-1) - jnp.sum(log_diag, axis=-1)
                - 0.5 * d * _LOG_2PI)

    def sample_and_log_prob(self, key: Array, params: FullRankParams,
                            sample_shape: int | Sequence[int] = ()) -> tuple[Array, Array]:
        """``(z, log q(z))`` with ``log q = -|eps|^2/2 - sum log L_dd - D log(2 pi)/2``."""
        check_key("key", key)
        eps = self._noise(key, params, sample_shape)
        z = params.loc + jnp.einsum("...de,...e->...d", self.scale_tril(params), eps)
        log_diag = jnp.diagonal(params.tril_raw, axis1=-2, axis2=-1)
        d = eps.shape[-1]
        return z, (-0.5 * jnp.sum(eps * eps, axis=-1) - jnp.sum(log_diag, axis=-1)
                   - 0.5 * d * _LOG_2PI)

    def entropy(self, params: FullRankParams) -> Array:
        """``H(q) = sum_d log L_dd + D (1 + log 2 pi) / 2``."""
        log_diag = jnp.diagonal(params.tril_raw, axis1=-2, axis2=-1)
        return jnp.sum(log_diag, axis=-1) + 0.5 * log_diag.shape[-1] * (1.0 + _LOG_2PI)

    def kl_to_standard_normal(self, params: FullRankParams) -> Array:
        """``KL(q || N(0, I)) = 1/2 (tr(L L^T) + |loc|^2 - D) - sum_d log L_dd``."""
        tril = self.scale_tril(params)
        log_diag = jnp.diagonal(params.tril_raw, axis1=-2, axis2=-1)
        d = log_diag.shape[-1]
        return (0.5 * (jnp.sum(tril * tril, axis=(-2, -1)) + jnp.sum(params.loc**2, axis=-1)
                       - d) - jnp.sum(log_diag, axis=-1))
