"""ELBO gradient estimators: score function, reparameterisation, sticking the landing.

Specification: ``docs/MODEL.md`` §3. For a log joint ``log p(x, z)`` and a variational family
``q_phi(z)``, the evidence lower bound is ``L(phi) = E_{z ~ q_phi}[log p(x, z) - log q_phi(z)]``
and, with ``z = t(eps, phi)`` reparameterised, its gradient is estimated by

- ``"score"`` (REINFORCE): ``(log p(x, z) - log q_phi(z)) * grad_phi log q_phi(z)``, ``z`` not
  differentiated;
- ``"reparam"`` (alias ``"total"``), the total derivative:
  ``grad_phi [log p(x, t(eps, phi)) - log q_phi(t(eps, phi))]``;
- ``"stl"`` (alias ``"path"``), sticking the landing (Roeder, Wu, Duvenaud 2017), the path
  derivative only: ``grad_phi [log p(x, t(eps, phi)) - log q_{stop_gradient(phi)}(t(eps, phi))]``.
  The stop-gradient is on the parameters fed to ``log q``, never on the sample.

All three are unbiased. The total derivative is the path derivative minus the score
``grad_phi log q_phi(z)`` (mean zero); when ``q`` is the exact posterior the path derivative is
zero for every ``eps``.

Conventions:

- ``log_joint(z) -> scalar`` takes one latent ``z`` of the family's event shape; close over
  the data (``functools.partial(model.log_joint, x)`` or a lambda). Estimators ``vmap`` it.
- A family is a small immutable (hashable) object with ``sample(key, params, sample_shape)``
  (reparameterised, differentiable in ``params``) and ``log_prob(params, z)``; ``params`` is
  a pytree. :class:`MeanFieldGaussian` with :class:`GaussianParams` ``(loc, log_scale)`` is
  written so that a VAE encoder can reuse it (batch axes in ``loc`` give one ``q(z|x)`` per
  data point); the VAE currently keeps its own small Gaussian density.
- Per-sample gradients are ``vmap(grad)`` over split keys, so means, covariances and variances
  are reductions (:func:`gradient_moments`), not loops.

:class:`ConjugateGaussian` is a model whose posterior, ELBO and ELBO gradient are known in
closed form; the tests and the variance studies use it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from vijax._checks import (
    check_finite,
    check_int,
    check_key,
    check_positive,
    check_scalar,
    check_shape,
    shape_of,
)
from vijax.samplers import _sample_shape

Array = jax.Array
ArrayLike = Any
LogJoint = Callable[[Array], Array]

__all__ = [
    "ESTIMATORS",
    "Family",
    "GaussianParams",
    "MeanFieldGaussian",
    "elbo",
    "elbo_grad",
    "gradient_estimator",
    "score",
    "GradientMoments",
    "flatten_gradients",
    "gradient_moments",
    "gradient_covariance",
    "ConjugateGaussian",
    "conjugate_gaussian",
    "simulate_conjugate_gaussian",
]

#: Estimator names accepted by :func:`elbo_grad` (and their aliases).
ESTIMATORS = {"score": "score", "reinforce": "score", "reparam": "reparam", "total": "reparam",
              "stl": "stl", "path": "stl"}


# ----------------------------------------------------------------------------- families


class Family(Protocol):
    """A reparameterisable variational family (duck-typed; hashable so ``jit`` can take it)."""

    def sample(self, key: Array, params: Any, sample_shape: int | Sequence[int] = ()) -> Array:
        ...

    def log_prob(self, params: Any, z: ArrayLike) -> Array:
        ...


class GaussianParams(NamedTuple):
    """Mean-field Gaussian parameters: ``q(z) = N(loc, diag(exp(log_scale))^2)``.

    ``loc`` and ``log_scale`` have the same shape ``batch_shape + event_shape``.
    """

    loc: Array
    log_scale: Array


@dataclasses.dataclass(frozen=True)
class MeanFieldGaussian:
    """Mean-field (diagonal) Gaussian family, ``z = loc + exp(log_scale) * eps``, ``eps ~ N(0, I)``.

    Attributes:
      event_ndim: number of trailing axes of ``loc`` that form one latent ``z`` (summed in
        :meth:`log_prob`); the leading ones are batch axes (e.g. one ``q(z|x)`` per image).
    """

    event_ndim: int = 1

    def __post_init__(self) -> None:
        check_int("event_ndim", self.event_ndim, minimum=0)

    @staticmethod
    def init(loc: ArrayLike, scale: ArrayLike | None = None) -> GaussianParams:
        """Parameters from a location and a scale (> 0, default 1), stored as ``log_scale``."""
        check_finite("loc", loc)
        loc = jnp.asarray(loc)
        loc = loc.astype(jnp.result_type(float, loc.dtype))
        if scale is None:
            return GaussianParams(loc, jnp.zeros_like(loc))
        check_positive("scale", scale)
        scale = jnp.asarray(scale, loc.dtype)
        try:
            ok = np.broadcast_shapes(scale.shape, loc.shape) == loc.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"scale must broadcast to loc's shape {loc.shape}; got shape "
                             f"{scale.shape}")
        scale = jnp.broadcast_to(scale, loc.shape)
        return GaussianParams(loc, jnp.log(scale))

    def _check(self, params: Any) -> GaussianParams:
        if not isinstance(params, GaussianParams):
            if isinstance(params, tuple) and len(params) == 2:
                params = GaussianParams(*params)
            else:
                raise ValueError("params must be GaussianParams(loc, log_scale); got "
                                 f"{type(params).__name__}")
        loc_shape = shape_of("params.loc", params.loc)
        check_shape("params.log_scale", params.log_scale, loc_shape)
        if len(loc_shape) < self.event_ndim:
            raise ValueError(f"params.loc must have at least event_ndim = {self.event_ndim} "
                             f"axes; got shape {loc_shape}")
        check_finite("params.loc", params.loc)
        check_finite("params.log_scale", params.log_scale)
        return params

    def sample(self, key: Array, params: GaussianParams,
               sample_shape: int | Sequence[int] = ()) -> Array:
        """Reparameterised sample ``loc + exp(log_scale) * eps``.

        Returns:
          ``sample_shape + loc.shape`` samples, differentiable in ``params``.
        """
        check_key("key", key)
        params = self._check(params)
        shape = _sample_shape(sample_shape) + tuple(jnp.shape(params.loc))
        loc = jnp.asarray(params.loc)
        eps = jax.random.normal(key, shape, jnp.result_type(loc, params.log_scale, float))
        return loc + jnp.exp(params.log_scale) * eps

    def log_prob(self, params: GaussianParams, z: ArrayLike) -> Array:
        """``log q(z) = sum over the event axes of log N(z_d; loc_d, exp(log_scale_d)^2)``.

        Args:
          z: ``sample_shape + loc.shape`` (or anything broadcasting with ``loc``).

        Returns:
          ``broadcast(z, loc).shape`` without its last ``event_ndim`` axes.
        """
        params = self._check(params)
        zs = shape_of("z", z)
        try:
            np.broadcast_shapes(zs, tuple(jnp.shape(params.loc)))
        except ValueError:
            raise ValueError(f"z must broadcast with params.loc's shape "
                             f"{tuple(jnp.shape(params.loc))}; got shape {zs}") from None
        u = (jnp.asarray(z) - params.loc) * jnp.exp(-params.log_scale)
        lp = -0.5 * u * u - params.log_scale - 0.5 * jnp.log(2 * jnp.pi)
        return jnp.sum(lp, axis=tuple(range(-self.event_ndim, 0)))

    def sample_and_log_prob(self, key: Array, params: GaussianParams,
                            sample_shape: int | Sequence[int] = ()) -> tuple[Array, Array]:
        """``(z, log q(z))`` for a reparameterised sample ``z``."""
        z = self.sample(key, params, sample_shape)
        return z, self.log_prob(params, z)

    def entropy(self, params: GaussianParams) -> Array:
        """``H(q) = sum_d (log_scale_d + (1 + log 2 pi) / 2)`` over the event axes."""
        params = self._check(params)
        h = params.log_scale + 0.5 * (1.0 + jnp.log(2 * jnp.pi))
        return jnp.sum(h, axis=tuple(range(-self.event_ndim, 0)))

    def kl_to_standard_normal(self, params: GaussianParams) -> Array:
        """``KL(q || N(0, I)) = -1/2 sum_d (1 + log s_d^2 - loc_d^2 - s_d^2)`` (MODEL.md §2)."""
        params = self._check(params)
        two_log_s = 2.0 * params.log_scale
        kl = -0.5 * (1.0 + two_log_s - params.loc**2 - jnp.exp(two_log_s))
        return jnp.sum(kl, axis=tuple(range(-self.event_ndim, 0)))


# ----------------------------------------------------------------------------- estimators


def _estimator_name(estimator: str) -> str:
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}; got {estimator!r}")
    return ESTIMATORS[estimator]


def _surrogate(estimator: str, log_joint: LogJoint,
               family: Family) -> Callable[[Any, Array], Array]:
    """``f(params, key)``: one sample's function whose ``grad`` is the estimator's sample."""

    if estimator == "reparam":

        def f(params, key):
            z = family.sample(key, params)
            return log_joint(z) - family.log_prob(params, z)

    elif estimator == "stl":

        def f(params, key):
            z = family.sample(key, params)
            return log_joint(z) - family.log_prob(jax.lax.stop_gradient(params), z)

    else:  # score

        def f(params, key):
            z = jax.lax.stop_gradient(family.sample(key, params))
            log_q = family.log_prob(params, z)
            weight = jax.lax.stop_gradient(log_joint(z) - log_q)
            return weight * log_q

    return f


def _check_log_joint(log_joint: Any) -> None:
    if not callable(log_joint):
        raise ValueError("log_joint must be a callable z -> scalar; got "
                         f"{type(log_joint).__name__}")


def _check_family(family: Any) -> None:
    if not (callable(getattr(family, "sample", None))
            and callable(getattr(family, "log_prob", None))):
        raise ValueError("family must have sample(key, params, sample_shape) and "
                         f"log_prob(params, z) methods; got {type(family).__name__}")


def _check_settings(log_joint: Any, family: Any, num_samples: Any) -> int:
    """Checks shared by :func:`elbo`, :func:`elbo_grad` and :func:`gradient_estimator`."""
    _check_log_joint(log_joint)
    _check_family(family)
    return check_int("num_samples", num_samples, minimum=1)


def _check_params(family: Family, params: Any) -> None:
    """The family's own parameter check (shapes always, finite values when concrete), if any.

    Runs on the caller's (usually concrete) ``params`` before anything is traced: inside
    ``jit`` the value checks are skipped.
    """
    check = getattr(family, "_check", None)
    if callable(check):
        check(params)


def _sig(x: Any) -> tuple[tuple[int, ...], Any]:
    """``(shape, dtype)`` of an array, tracer or Python number (hashable)."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return tuple(x.shape), x.dtype
    return tuple(jnp.shape(x)), jnp.result_type(x)


def _hashable(*objs: Any) -> bool:
    try:
        hash(objs)
    except TypeError:
        return False
    return True


def _probe(log_joint: LogJoint, family: Family, key_sig: tuple, treedef: Any,
           leaf_sigs: tuple[tuple, ...]) -> None:
    """Abstract evaluation (no FLOPs) of ``log_joint`` on one latent drawn from ``params``."""
    params = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(*sd) for sd in leaf_sigs])
    z = jax.eval_shape(lambda k, p: family.sample(k, p), jax.ShapeDtypeStruct(*key_sig), params)
    try:
        out = jax.eval_shape(log_joint, z)
    except (TypeError, ValueError) as e:
        raise ValueError(f"log_joint failed on a latent z of shape {z.shape} (dtype {z.dtype}) "
                         f"drawn from params with leaf shapes {[sd[0] for sd in leaf_sigs]}; "
                         "expected log_joint to accept one latent of the family's event shape "
                         f"and return a scalar. The error was: {type(e).__name__}: {e}") from e
    if jnp.shape(out) != ():
        raise ValueError("log_joint must return a scalar for one latent z of shape "
                         f"{z.shape}; got shape {jnp.shape(out)}")


_probe_cached = functools.lru_cache(maxsize=256)(_probe)


def _check_scalar_output(log_joint: LogJoint, family: Family, key: Array, params: Any) -> None:
    """``log_joint`` accepts a latent drawn from ``params`` and returns a scalar.

    Cached per (log_joint, family, parameter shapes and dtypes) when those are hashable.
    """
    leaves, treedef = jax.tree.flatten(params)
    args = (log_joint, family, _sig(key), treedef, tuple(_sig(x) for x in leaves))
    (_probe_cached if _hashable(*args) else _probe)(*args)


def _check_call(key: Array, params: Any, log_joint: LogJoint, family: Family) -> None:
    """Per-call checks, on the caller's values, before the jitted core runs."""
    check_key("key", key)
    _check_params(family, params)
    _check_scalar_output(log_joint, family, key, params)


def _elbo_impl(key, params, log_joint, family, num_samples):
    f = _surrogate("reparam", log_joint, family)
    keys = jax.random.split(key, num_samples)
    return jnp.mean(jax.vmap(f, in_axes=(None, 0))(params, keys))


def _elbo_grad_impl(key, params, log_joint, family, estimator, num_samples, per_sample):
    f = _surrogate(estimator, log_joint, family)
    keys = jax.random.split(key, num_samples)
    grads = jax.vmap(jax.grad(f), in_axes=(None, 0))(params, keys)
    if per_sample:
        return grads
    return jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)


def _jit_elbo(log_joint, family, num_samples):
    return jax.jit(functools.partial(_elbo_impl, log_joint=log_joint, family=family,
                                     num_samples=num_samples))


def _jit_elbo_grad(log_joint, family, estimator, num_samples, per_sample):
    return jax.jit(functools.partial(_elbo_grad_impl, log_joint=log_joint, family=family,
                                     estimator=estimator, num_samples=num_samples,
                                     per_sample=per_sample))


# One jitted function per (log_joint, family, settings), shared by elbo/elbo_grad and
# gradient_estimator; jit then caches one executable per parameter shape. (A jitted closure
# dispatches faster than jax.jit with static arguments.)
_cached_elbo = functools.lru_cache(maxsize=256)(_jit_elbo)
_cached_elbo_grad = functools.lru_cache(maxsize=256)(_jit_elbo_grad)


def elbo(key: Array, params: Any, log_joint: LogJoint, family: Family,
         num_samples: int = 1) -> Array:
    """Monte-Carlo ELBO ``mean_s [log p(x, z_s) - log q(z_s)]``, ``z_s ~ q`` (one key per sample).

    Uses the same split keys as :func:`elbo_grad`, so ``jax.grad`` of this with respect to
    ``params`` is the mean ``"reparam"`` estimate. Jitted (and cached per ``log_joint``,
    ``family``, ``num_samples`` and parameter shapes) when ``log_joint`` and ``family`` are
    hashable; the argument checks run first, on the caller's values.

    Returns:
      a scalar.
    """
    n = _check_settings(log_joint, family, num_samples)
    _check_call(key, params, log_joint, family)
    if _hashable(log_joint, family):
        return _cached_elbo(log_joint, family, n)(key, params)
    return _elbo_impl(key, params, log_joint, family, n)


def elbo_grad(key: Array, params: Any, log_joint: LogJoint, family: Family, *,
              estimator: str = "reparam", num_samples: int = 1,
              per_sample: bool = False) -> Any:
    """ELBO gradient estimate with respect to the variational ``params`` (MODEL.md §3).

    The key is split into ``num_samples`` keys, one latent sample each; the per-sample
    gradients are ``jax.vmap(jax.grad(surrogate))`` over those keys. The computation is
    jitted and cached per (``log_joint``, ``family``, ``estimator``, ``num_samples``,
    ``per_sample``, parameter shapes) when ``log_joint`` and ``family`` are hashable
    (functions, bound methods, frozen dataclasses are); a new lambda per call recompiles, so
    in a loop pass the same function or use :func:`gradient_estimator`. The checks (key,
    settings, the family's check of ``params``, ``log_joint``'s output shape) run first, on the
    caller's values.

    Args:
      key: PRNG key.
      params: the family's parameter pytree (e.g. :class:`GaussianParams`).
      log_joint: ``z -> log p(x, z)``, a scalar for one latent of the family's event shape.
      family: e.g. ``MeanFieldGaussian()``.
      estimator: ``"score"`` (alias ``"reinforce"``), ``"reparam"`` (alias ``"total"``) or
        ``"stl"`` (alias ``"path"``).
      num_samples: Monte-Carlo samples, >= 1.
      per_sample: return every sample's gradient (leading axis ``num_samples`` on each leaf)
        instead of their mean.

    Returns:
      a pytree like ``params``: the mean gradient, or the per-sample gradients.
    """
    name = _estimator_name(estimator)
    n = _check_settings(log_joint, family, num_samples)
    _check_call(key, params, log_joint, family)
    per_sample = bool(per_sample)
    if _hashable(log_joint, family):
        return _cached_elbo_grad(log_joint, family, name, n, per_sample)(key, params)
    return _elbo_grad_impl(key, params, log_joint, family, name, n, per_sample)


def gradient_estimator(log_joint: LogJoint, family: Family, *, estimator: str = "reparam",
                       num_samples: int = 1,
                       per_sample: bool = False) -> Callable[[Array, Any], Any]:
    """A jitted ``grad_fn(key, params)`` equal to :func:`elbo_grad` with these settings.

    Checks the settings once (``log_joint`` callable, ``family`` with ``sample`` and
    ``log_prob``, ``estimator``, ``num_samples``); each call checks the key and ``params``
    (the family's check, on the caller's values) before the jitted function runs. Compile
    happens at the first call (and per parameter shape).
    """
    name = _estimator_name(estimator)
    n = _check_settings(log_joint, family, num_samples)
    per_sample = bool(per_sample)

    make = _cached_elbo_grad if _hashable(log_joint, family) else _jit_elbo_grad
    jitted = make(log_joint, family, name, n, per_sample)  # shared with elbo_grad if hashable

    def grad_fn(key: Array, params: Any) -> Any:
        _check_call(key, params, log_joint, family)
        return jitted(key, params)

    return grad_fn


def score(key: Array, params: Any, family: Family, num_samples: int) -> Any:
    """Per-sample scores ``grad_phi log q_phi(z_s)``, ``z_s ~ q_phi`` (samples not differentiated).

    Their expectation is zero (``E_q[grad log q] = grad int q = 0``); this is the term the
    total derivative carries and STL drops.

    Returns:
      a pytree like ``params`` with a leading axis ``num_samples``.
    """
    check_key("key", key)
    _check_family(family)
    n = check_int("num_samples", num_samples, minimum=1)
    _check_params(family, params)
    keys = jax.random.split(key, n)

    def one(p, k):
        z = jax.lax.stop_gradient(family.sample(k, p))
        return family.log_prob(p, z)

    return jax.vmap(jax.grad(one), in_axes=(None, 0))(params, keys)


# ----------------------------------------------------------------------------- reductions


class GradientMoments(NamedTuple):
    """Moments of per-sample gradients ``g_1..g_n`` (each flattened to ``P`` numbers).

    Attributes:
      mean: pytree, ``mean_s g_s``.
      standard_error: pytree, ``std_s(g_s) / sqrt(n)`` per coordinate (ddof = 1).
      variance_trace: scalar, ``trace Cov(g) = sum_p Var(g_p)`` (ddof = 1), the total variance
        of one sample's gradient.
      snr: pytree, per coordinate ``|mean| / std`` (``inf`` where the std is 0 and mean is not).
      num_samples: ``n``.
    """

    mean: Any
    standard_error: Any
    variance_trace: Array
    snr: Any
    num_samples: int


def flatten_gradients(per_sample_grads: Any) -> Array:
    """Per-sample gradient pytree (leading axis ``n`` on each leaf) as an ``(n, P)`` matrix."""
    leaves = jax.tree.leaves(per_sample_grads)
    if not leaves:
        raise ValueError("per_sample_grads must hold at least one array")
    n = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
    if len(n) != 1 or None in n:
        raise ValueError("per_sample_grads must have the same leading (sample) axis on every "
                         f"leaf; got leading sizes {sorted(map(str, n))}")
    return jnp.concatenate([jnp.reshape(x, (jnp.shape(x)[0], -1)) for x in leaves], axis=1)


def gradient_moments(per_sample_grads: Any) -> GradientMoments:
    """Mean, standard error, total variance (covariance trace) and SNR of per-sample gradients.

    Args:
      per_sample_grads: output of ``elbo_grad(..., per_sample=True)``: leaves of shape
        ``(n, *param_shape)`` with ``n >= 2``.
    """
    flat = flatten_gradients(per_sample_grads)
    n = flat.shape[0]
    if n < 2:
        raise ValueError(f"per_sample_grads must hold at least 2 samples for a variance; got {n}")
    template = jax.tree.map(lambda x: x[0], per_sample_grads)
    _, unravel = ravel_pytree(template)
    mean = jnp.mean(flat, axis=0)
    var = jnp.var(flat, axis=0, ddof=1)
    std = jnp.sqrt(var)
    snr = jnp.where(std > 0, jnp.abs(mean) / jnp.where(std > 0, std, 1.0),
                    jnp.where(mean == 0, 0.0, jnp.inf))
    return GradientMoments(mean=unravel(mean), standard_error=unravel(std / jnp.sqrt(n)),
                           variance_trace=jnp.sum(var), snr=unravel(snr), num_samples=int(n))


def gradient_covariance(per_sample_grads: Any) -> Array:
    """The ``(P, P)`` sample covariance (ddof = 1) of the flattened per-sample gradients."""
    flat = flatten_gradients(per_sample_grads)
    if flat.shape[0] < 2:
        raise ValueError("per_sample_grads must hold at least 2 samples for a covariance; "
                         f"got {flat.shape[0]}")
    return jnp.atleast_2d(jnp.cov(flat, rowvar=False))


# ----------------------------------------------------------------------------- conjugate model


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

    def elbo(self, params: GaussianParams) -> Array:
        """Exact ELBO of ``q = N(m, diag s^2)`` (``s0 = prior_scale``, ``sx = noise_scale``)::

            E_q log p(z)   = sum_d [-log(2 pi s0^2)/2 - ((m_d - m0_d)^2 + s_d^2) / (2 s0^2)]
            E_q log p(x|z) = sum_id [-log(2 pi sx^2)/2 - ((x_id - m_d)^2 + s_d^2) / (2 sx^2)]
            H(q) = sum_d [log s_d + (1 + log 2 pi) / 2]
        """
        m, log_s = params
        s2 = jnp.exp(2 * log_s)
        n, d = self.x.shape
        log2pi = jnp.log(2 * jnp.pi)
        prior = jnp.sum(-0.5 * log2pi - jnp.log(self.prior_scale)
                        - ((m - self.prior_loc) ** 2 + s2) / (2 * self.prior_scale**2))
        lik = jnp.sum(-0.5 * log2pi - jnp.log(self.noise_scale)
                      - ((self.x - m) ** 2 + s2) / (2 * self.noise_scale**2))
        ent = jnp.sum(log_s + 0.5 * (1.0 + log2pi))
        return prior + lik + ent

    def elbo_grad(self, params: GaussianParams) -> GaussianParams:
        """Exact ELBO gradient: ``d/dm = Lambda (mu - m)``, ``d/dlog s = 1 - Lambda s^2``."""
        m, log_s = params
        lam = self.precision
        mu = self.posterior().loc
        return GaussianParams(lam * (mu - m), 1.0 - lam * jnp.exp(2 * log_s))

    def kl_to_posterior(self, params: GaussianParams) -> Array:
        """``KL(q || p(z|x)) = log p(x) - ELBO(q)``, in closed form."""
        m, log_s = params
        mu, log_sig = self.posterior()
        r = jnp.exp(2 * (log_s - log_sig))
        return jnp.sum(0.5 * (r + (m - mu) ** 2 * self.precision - 1.0) - (log_s - log_sig))

    def gradient_variance(self, params: GaussianParams, estimator: str) -> Array:
        """Exact total variance (covariance trace) of one sample of ``"reparam"`` or ``"stl"``.

        Per coordinate, with ``delta = m - mu``, ``r = s^2 / sigma^2`` (``sigma^2 = 1/Lambda``)::

            reparam: Var_m = r / sigma^2       Var_log_s = delta^2 r / sigma^2 + 2 r^2
            stl:     Var_m = (1 - r)^2 / s^2   Var_log_s = delta^2 r / sigma^2 + 2 (1 - r)^2

        so STL has the lower variance exactly when ``r > 1/2`` (``q`` wider than half the
        posterior variance) and it is zero at the posterior (``delta = 0``, ``r = 1``).
        """
        name = _estimator_name(estimator)
        if name == "score":
            raise ValueError("estimator must be 'reparam' or 'stl' for the closed-form variance; "
                             "got 'score' (use a Monte-Carlo estimate)")
        m, log_s = params
        mu, _ = self.posterior()
        lam = self.precision
        s2 = jnp.exp(2 * log_s)
        r = s2 * lam
        common = (m - mu) ** 2 * r * lam
        if name == "reparam":
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
