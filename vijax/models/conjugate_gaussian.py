"""A conjugate Gaussian model whose posterior, ELBO, ELBO gradient and estimator variances are
known in closed form: the reference the estimator tests and studies measure against.

``z ~ N(prior_loc, prior_scale^2 I_D)``, ``x_i | z ~ N(z, noise_scale^2 I_D)``, ``i = 1..N``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vijax._checks import check_finite, check_int, check_key, check_scalar, check_shape, shape_of
from vijax.families import FullRankGaussian, FullRankParams, GaussianParams

Array = jax.Array
ArrayLike = Any

__all__ = ["ConjugateGaussian", "conjugate_gaussian", "simulate_conjugate_gaussian"]


class ConjugateGaussian(NamedTuple):
    """Conjugate Gaussian model with a closed-form posterior, ELBO and ELBO gradient.

    ``z ~ N(prior_loc, prior_scale^2 I_D)``, ``x_i | z ~ N(z, noise_scale^2 I_D)``, ``i = 1..N``.
    The posterior is ``N(mu, sigma^2 I_D)`` with precision
    ``Lambda = 1/prior_scale^2 + N/noise_scale^2`` and
    ``mu = (prior_loc/prior_scale^2 + sum_i x_i/noise_scale^2) / Lambda``, so
    ``log p(x, z) = log p(x) + log N(z; mu, sigma^2 I)``. Build with :func:`conjugate_gaussian`.

    Attributes:
      x: ``(N, D)`` observations.
      prior_loc: ``(D,)``.
      prior_scale, noise_scale: scalars > 0.
    """

    x: Array
    prior_loc: Array
    prior_scale: Array
    noise_scale: Array

    @property
    def precision(self) -> Array:
        """Posterior precision ``Lambda = 1/prior_scale^2 + N/noise_scale^2`` (per coordinate)."""
        return 1.0 / self.prior_scale**2 + self.x.shape[0] / self.noise_scale**2

    def log_joint(self, z: ArrayLike) -> Array:
        """``log p(x, z)`` for one latent ``z`` of shape ``(D,)``; a scalar.

        Uses ``sum_i ||x_i - z||^2 = sum_i ||x_i - xbar||^2 + N ||xbar - z||^2`` (exact and
        stable), so the ``z``-dependent work is ``O(D)``: under ``vmap`` over samples the data
        terms, which do not depend on ``z``, are computed once.
        """
        z = jnp.asarray(z)
        n, d = self.x.shape
        xbar = jnp.mean(self.x, axis=0)
        scatter = jnp.sum((self.x - xbar) ** 2)
        u = (z - self.prior_loc) / self.prior_scale
        v = (xbar - z) / self.noise_scale
        log2pi = jnp.log(2 * jnp.pi)
        return (-0.5 * jnp.sum(u * u) - d * (jnp.log(self.prior_scale) + 0.5 * log2pi)
                - 0.5 * (n * jnp.sum(v * v) + scatter / self.noise_scale**2)
                - n * d * (jnp.log(self.noise_scale) + 0.5 * log2pi))

    def posterior(self) -> GaussianParams:
        """The exact posterior as mean-field Gaussian parameters (it is isotropic)."""
        lam = self.precision
        mu = (self.prior_loc / self.prior_scale**2
              + jnp.sum(self.x, axis=0) / self.noise_scale**2) / lam
        return GaussianParams(mu, jnp.full_like(mu, -0.5 * jnp.log(lam)))

    def log_evidence(self) -> Array:
        """``log p(x) = log p(x, mu) - log N(mu; mu, sigma^2 I)``, i.e.
        ``log p(x, mu) + D/2 log(2 pi / Lambda)``."""
        post = self.posterior()
        d = post.loc.shape[-1]
        return self.log_joint(post.loc) + 0.5 * d * jnp.log(2 * jnp.pi / self.precision)

    def kl_to_posterior(self, params: GaussianParams | FullRankParams) -> Array:
        """``KL(q || p(z|x))`` in closed form, for ``q = N(m, S)`` mean-field or full-rank::

            KL = 1/2 [Lambda tr S + Lambda |m - mu|^2 - D - log det S - D log Lambda]
        """
        lam = self.precision
        mu = self.posterior().loc
        if isinstance(params, FullRankParams):
            m = params.loc
            tril = FullRankGaussian.scale_tril(params)
            trace = jnp.sum(tril * tril, axis=(-2, -1))
            log_det = 2.0 * jnp.sum(jnp.diagonal(params.tril_raw, axis1=-2, axis2=-1), axis=-1)
        else:
            m, log_s = params
            trace = jnp.sum(jnp.exp(2 * log_s), axis=-1)
            log_det = 2.0 * jnp.sum(log_s, axis=-1)
        d = m.shape[-1]
        return 0.5 * (lam * trace + lam * jnp.sum((m - mu) ** 2, axis=-1) - d - log_det
                      - d * jnp.log(lam))

    def elbo(self, params: GaussianParams | FullRankParams) -> Array:
        """Exact ELBO ``log p(x) - KL(q || p(z|x))`` of a mean-field or full-rank ``q``."""
        return self.log_evidence() - self.kl_to_posterior(params)

    def elbo_grad(self, params: GaussianParams | FullRankParams) -> Any:
        """Exact ELBO gradient (a pytree like ``params``). Mean field, by hand:
        ``d/dm = Lambda (mu - m)``, ``d/dlog s = 1 - Lambda s^2``; full rank: ``jax.grad`` of
        the closed-form :meth:`elbo`."""
        if isinstance(params, FullRankParams):
            return jax.grad(self.elbo)(params)
        m, log_s = params
        lam = self.precision
        mu = self.posterior().loc
        return GaussianParams(lam * (mu - m), 1.0 - lam * jnp.exp(2 * log_s))

    def gradient_variance(self, params: GaussianParams, estimator: Any) -> Array:
        """Exact total variance (covariance trace) of one ``ELBO(1)`` sample of ``Reparam()``
        or ``STL()`` (the estimator objects of :mod:`vijax.estimators`).

        Per coordinate, with ``delta = m - mu``, ``r = s^2 / sigma^2`` (``sigma^2 = 1/Lambda``)::

            reparam: Var_m = r / sigma^2       Var_log_s = delta^2 r / sigma^2 + 2 r^2
            stl:     Var_m = (1 - r)^2 / s^2   Var_log_s = delta^2 r / sigma^2 + 2 (1 - r)^2

        so STL has the lower variance exactly when ``r > 1/2`` (``q`` wider than half the
        posterior variance) and it is zero at the posterior (``delta = 0``, ``r = 1``).
        """
        name = type(estimator).__name__
        if name not in ("Reparam", "STL"):
            raise ValueError("estimator must be Reparam() or STL() for the closed-form "
                             f"variance; got {estimator!r} (use a Monte-Carlo estimate)")
        m, log_s = params
        mu, _ = self.posterior()
        lam = self.precision
        s2 = jnp.exp(2 * log_s)
        r = s2 * lam
        common = (m - mu) ** 2 * r * lam
        if name == "Reparam":
            return jnp.sum(r * lam + common + 2 * r**2)
        return jnp.sum((1 - r) ** 2 / s2 + common + 2 * (1 - r) ** 2)


def _check_prior_loc(prior_loc: ArrayLike, d: int) -> None:
    ps = shape_of("prior_loc", prior_loc)
    if ps not in ((), (d,)):
        raise ValueError(f"prior_loc must be a scalar or have shape ({d},); got shape {ps}")
    check_finite("prior_loc", prior_loc)


def conjugate_gaussian(x: ArrayLike, prior_loc: ArrayLike = 0.0, prior_scale: float = 1.0,
                       noise_scale: float = 1.0) -> ConjugateGaussian:
    """A validated :class:`ConjugateGaussian` for observations ``x`` of shape ``(N, D)``.

    Args:
      x: ``(N, D)`` observations, ``N >= 1``.
      prior_loc: scalar or ``(D,)`` prior mean.
      prior_scale: prior standard deviation > 0.
      noise_scale: observation noise standard deviation > 0.
    """
    n, d = check_shape("x", x, (None, None))
    if n < 1 or d < 1:
        raise ValueError(f"x must have at least one observation and one dimension; got shape "
                         f"{(n, d)}")
    check_finite("x", x)
    _check_prior_loc(prior_loc, d)
    check_scalar("prior_scale", prior_scale, minimum=0.0, strict=True)
    check_scalar("noise_scale", noise_scale, minimum=0.0, strict=True)
    x = jnp.asarray(x, dtype=jnp.result_type(float, x))
    dt = x.dtype
    return ConjugateGaussian(x, jnp.broadcast_to(jnp.asarray(prior_loc, dt), (d,)),
                             jnp.asarray(prior_scale, dt), jnp.asarray(noise_scale, dt))


def simulate_conjugate_gaussian(key: Array, num_data: int, dim: int, prior_loc: ArrayLike = 0.0,
                                prior_scale: float = 1.0,
                                noise_scale: float = 1.0) -> ConjugateGaussian:
    """Draw ``z`` from the prior and ``num_data`` observations, and return the model."""
    check_key("key", key)
    n = check_int("num_data", num_data, minimum=1)
    d = check_int("dim", dim, minimum=1)
    _check_prior_loc(prior_loc, d)
    check_scalar("prior_scale", prior_scale, minimum=0.0, strict=True)
    check_scalar("noise_scale", noise_scale, minimum=0.0, strict=True)
    kz, kx = jax.random.split(key)
    z = jnp.asarray(prior_loc) + prior_scale * jax.random.normal(kz, (d,))
    x = z + noise_scale * jax.random.normal(kx, (n, d))
    return conjugate_gaussian(x, prior_loc, prior_scale, noise_scale)
