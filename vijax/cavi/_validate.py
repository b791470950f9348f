"""The argument checks of :mod:`vijax.cavi`: one set, called at the top of every public
function, built on :mod:`vijax._checks` (every failure a ``ValueError`` that names the
argument, says what was wrong and what was expected).

Two kinds of check:

- structure (types, shapes, dtypes): reads no values, so it costs nothing and also runs
  under ``jit``; every public function checks the structure of all its arguments.
- values (finite, positive, whole counts, probabilities; checked after the cast to the
  working dtype, so that ``1e39`` or ``1e-40`` is refused in float32 rather than becoming
  ``inf`` or 0): where data and hyperparameters enter, that is :func:`as_observations`,
  :func:`as_prior`, :func:`param_values` and the entry points that call them (``init``,
  ``fit``, ``predict``, ``simulate``, ``sample_events``). Under ``jit`` value checks are
  skipped, as everywhere in vijax; the building blocks of :mod:`vijax.cavi.model` check
  structure only, so that a jitted loop copies nothing to the host.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _checks
from vijax.cavi._types import EventTerms, Observations, Params, Prior

POSITIVE_HYPERPARAMETERS = ("tau", "alpha", "beta", "rho")
# The Gamma prior of learned per-cluster precisions (optional, given together).
PRECISION_PRIOR = ("tau_shape", "tau_rate")


def working_dtype() -> np.dtype:
    """float32 by default, float64 when ``jax_enable_x64`` is on."""
    return np.dtype(jnp.result_type(float))


# --------------------------------------------------------------------------- structure


def array(name: str, x: Any, shape: tuple[int | None, ...]) -> tuple[int, ...]:
    """``x`` is an array (or nested list) of real numbers of ``shape``; reads no values."""
    if x is None:
        raise ValueError(f"{name} must be an array of shape {_show_shape(shape)}; got None")
    _checks.float_dtype(name, x)
    return _checks.check_shape(name, x, shape)


def flag(name: str, x: Any) -> bool:
    """``x`` is a bool (a static argument)."""
    if not isinstance(x, bool | np.bool_):
        raise ValueError(f"{name} must be True or False; got {x!r:.80}")
    return bool(x)


def _show_shape(shape: tuple[int | None, ...]) -> str:
    parts = ["any" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")


def data_structure(data: Any, name: str = "data") -> int:
    """``data`` is an :class:`Observations` of ``N >= 1`` events; returns ``N``."""
    _checks.check_instance(name, data, Observations,
                           "cavi.as_observations converts a (locations, strengths) pair or "
                           "vijax.data.load_quakes()'s result")
    (n, _) = array(f"{name}.locations", data.locations, (None, 2))
    if n < 1:
        raise ValueError(f"{name}.locations must hold at least one event; got shape (0, 2)")
    array(f"{name}.strengths", data.strengths, (n,))
    if data.weights is not None:
        array(f"{name}.weights", data.weights, (n,))
    return n


def prior_structure(prior: Any, num_clusters: int | None = None, name: str = "prior") -> None:
    """``prior`` is a :class:`Prior` whose fields have the shapes of MODEL.md section 1 for
    ``num_clusters`` clusters (``pi`` and ``concentration`` not checked against ``K`` when
    None)."""
    _checks.check_instance(name, prior, Prior)
    for field in POSITIVE_HYPERPARAMETERS:
        array(f"{name}.{field}", getattr(prior, field), ())
    array(f"{name}.nu", prior.nu, (2,))
    if prior.pi is not None and prior.concentration is not None:
        raise ValueError(f"{name}: give pi (fixed mixture weights) or concentration "
                         "(learned weights with a Dirichlet prior), not both")
    if prior.pi is not None:
        _checks.float_dtype(f"{name}.pi", prior.pi)
        shape = _checks.shape_of(f"{name}.pi", prior.pi)
        if len(shape) != 1 or (num_clusters is not None and shape[0] != num_clusters):
            k = "K" if num_clusters is None else num_clusters
            raise ValueError(f"{name}.pi must have shape ({k},) (one weight per cluster); "
                             f"got shape {shape}")
    if prior.concentration is not None:
        _checks.float_dtype(f"{name}.concentration", prior.concentration)
        shape = _checks.shape_of(f"{name}.concentration", prior.concentration)
        if shape != () and (len(shape) != 1 or (num_clusters is not None
                                                and shape[0] != num_clusters)):
            k = "K" if num_clusters is None else num_clusters
            raise ValueError(f"{name}.concentration must be a scalar or have shape ({k},); "
                             f"got shape {shape}")
    if (prior.tau_shape is None) != (prior.tau_rate is None):
        given, missing = (("tau_shape", "tau_rate") if prior.tau_rate is None
                          else ("tau_rate", "tau_shape"))
        raise ValueError(f"{name}.{missing} is None but {name}.{given} is given: learned "
                         "per-cluster precisions need both (tau_k ~ Gamma(tau_shape, "
                         "tau_rate)); give neither for one fixed tau")
    if prior.tau_shape is not None:
        for field in PRECISION_PRIOR:
            array(f"{name}.{field}", getattr(prior, field), ())


def params_structure(params: Any, *, responsibilities: bool, num_events: int | None = None,
                     name: str = "params") -> int:
    """``params`` is a :class:`Params` with ``(K,)`` ``gamma_shape``, ``gamma_rate`` and
    ``precision``, ``(K, 2)`` ``mean``, ``(K,)`` or None ``concentration``, ``(K,)`` or None
    ``tau_shape`` and ``tau_rate`` (together) and, when ``responsibilities``, ``(N, K)``
    responsibilities; returns ``K``."""
    _checks.check_instance(name, params, Params,
                           "fit(...).params, init(...)[0] or a Params(...) of arrays")
    (k,) = array(f"{name}.gamma_shape", params.gamma_shape, (None,))
    if k < 1:
        raise ValueError(f"{name}.gamma_shape must hold at least one cluster; got shape (0,)")
    array(f"{name}.gamma_rate", params.gamma_rate, (k,))
    array(f"{name}.mean", params.mean, (k, 2))
    array(f"{name}.precision", params.precision, (k,))
    if params.concentration is not None:
        array(f"{name}.concentration", params.concentration, (k,))
    if (params.tau_shape is None) != (params.tau_rate is None):
        raise ValueError(f"{name}.tau_shape and {name}.tau_rate (q(tau_k) = Gamma(c_k, d_k)) "
                         "must be given together or both be None; got only "
                         + ("tau_shape" if params.tau_rate is None else "tau_rate"))
    if params.tau_shape is not None:
        array(f"{name}.tau_shape", params.tau_shape, (k,))
        array(f"{name}.tau_rate", params.tau_rate, (k,))
    if responsibilities:
        array(f"{name}.responsibilities", params.responsibilities, (num_events, k))
    return k


# The factors a prior may learn: the field that marks them in Prior and Params, and what
# they are when learned and when fixed.
LEARNED_FACTORS = (("concentration", "learned mixture weights", "fixed mixture weights"),
                   ("tau_shape", "learned per-cluster precisions", "one fixed tau"))


def learned_factors_agree(prior: Prior, params: Params) -> None:
    """The learned factors of ``prior`` and ``params`` agree: weights and precisions."""
    for field, learned, fixed in LEARNED_FACTORS:
        in_params = getattr(params, field) is not None
        if (getattr(prior, field) is not None) != in_params:
            raise ValueError(
                f"prior and params disagree: params.{field} is "
                + (f"given ({learned}) but prior.{field} is None" if in_params else
                   f"None ({fixed}) but prior.{field} is given ({learned})")
                + "; pass the prior the params belong to")


def model_inputs(data: Any, prior: Any, params: Any, *,
                 responsibilities: bool) -> tuple[int, int]:
    """The structure of the three arguments of a model function; returns ``(N, K)``."""
    n = data_structure(data)
    k = params_structure(params, responsibilities=responsibilities, num_events=n)
    prior_structure(prior, k)
    learned_factors_agree(prior, params)
    return n, k


def events_structure(events: Any, num_events: int, name: str = "events") -> None:
    """``events`` is None or the :class:`EventTerms` of ``num_events`` events."""
    if events is None:
        return
    _checks.check_instance(name, events, EventTerms,
                           "cavi.event_terms(data, prior), or None")
    array(f"{name}.log_strength", events.log_strength, (num_events,))
    array(f"{name}.constant", events.constant, (num_events,))
    _checks.check_shape(f"{name}.scale_exponent", events.scale_exponent, ())


# ------------------------------------------------------------------------------ values


def check_observations(data: Any) -> Observations:
    """Check events given as :class:`Observations`, anything with ``locations`` and
    ``strengths`` attributes (such as :func:`vijax.data.load_quakes`'s result), or a
    ``(locations, strengths)`` pair: structure and values, without any JAX operation. Returns
    them, unconverted, as an :class:`Observations` (for :func:`to_observations`)."""
    if hasattr(data, "locations") and hasattr(data, "strengths"):
        locations, strengths = data.locations, data.strengths
        weights = getattr(data, "weights", None)
    elif isinstance(data, tuple | list) and len(data) == 2:
        (locations, strengths), weights = data, None
    else:
        raise ValueError("data must be Observations(locations, strengths) or a "
                         f"(locations, strengths) pair; got {type(data).__name__}")
    raw = Observations(locations, strengths, weights)
    data_structure(raw)
    _checks.check_real("data.locations", locations)
    _checks.check_real("data.strengths", strengths)
    _checks.check_nonnegative_integers("data.strengths", strengths)
    if weights is not None:
        _checks.check_real("data.weights", weights)
        if _checks.is_concrete(weights):
            w = np.asarray(weights)
            if np.any(w < 0) or not np.any(w > 0):
                raise ValueError("data.weights must be >= 0 with at least one > 0 (1 for an event, "
                                 f"0 for padding); got {w[:6]}")
    return raw


def to_observations(raw: Observations) -> Observations:
    """Checked events (:func:`check_observations`) as arrays of the working dtype."""
    dtype = working_dtype()
    weights = None if raw.weights is None else _as_array(raw.weights, dtype)
    return Observations(_as_array(raw.locations, dtype), _as_array(raw.strengths, dtype),
                        weights)


def as_observations(data: Any) -> Observations:
    """Accept :class:`Observations`, anything with ``locations`` and ``strengths``
    attributes (such as :func:`vijax.data.load_quakes`'s result), or a
    ``(locations, strengths)`` pair; check it; return arrays of the working dtype."""
    return to_observations(check_observations(data))


def check_prior(prior: Any, num_clusters: int) -> None:
    """Check the hyperparameters for ``num_clusters`` clusters, structure and values (after
    the cast to the working dtype), without any JAX operation."""
    prior_structure(prior, num_clusters)
    for field in POSITIVE_HYPERPARAMETERS:
        # tau, beta and rho divide (s_k = rho + tau N_k, lam = a / b, 1 / sqrt(rho)).
        _checks.check_real(f"prior.{field}", getattr(prior, field), positive=True,
                           divisor=field != "alpha")
    _checks.check_real("prior.nu", prior.nu)
    if prior.tau_shape is not None:
        for field in PRECISION_PRIOR:
            _checks.check_real(f"prior.{field}", getattr(prior, field), positive=True,
                               divisor=field == "tau_rate")
        default = Prior._field_defaults["tau"]
        if _checks.is_concrete(prior.tau) and np.asarray(prior.tau) != default:
            raise ValueError(f"prior.tau is {np.asarray(prior.tau)!r:.40} but tau_shape and "
                             "tau_rate are given: give one fixed tau or a Gamma prior on "
                             f"per-cluster precisions, not both (leave tau at its default "
                             f"{default}, which is not used)")
    if prior.concentration is not None:
        _checks.check_real("prior.concentration", prior.concentration, positive=True)
    elif prior.pi is not None:
        check_weights(prior.pi, num_clusters)


def check_weights(pi: Any, num_clusters: int) -> None:
    """Fixed mixture weights: ``(K,)``, finite, non-negative, and summing to 1 within the
    float resolution of their dtype and the working dtype (``K`` ulps of the coarser);
    :func:`to_prior` then divides them by their sum. Weights that miss 1 by more are
    refused rather than silently rescaled: they are more likely a mistake than rounding."""
    _checks.check_probabilities("prior.pi", pi, length=num_clusters, atol=None)
    if not _checks.is_concrete(pi):
        return
    v = np.asarray(pi)
    eps = max(np.finfo(v.dtype if v.dtype.kind == "f" else np.float64).eps,
              np.finfo(working_dtype()).eps)
    total = float(np.sum(v, dtype=np.float64))
    if not abs(total - 1.0) <= num_clusters * eps:
        raise ValueError(f"prior.pi must sum to 1 within float resolution (|sum - 1| <= "
                         f"K eps = {num_clusters * eps:.3g}); it sums to {total!r} (divide it "
                         f"by its sum if that is what you mean)")


def to_prior(prior: Prior, num_clusters: int) -> Prior:
    """A checked prior (:func:`check_prior`) as arrays of the working dtype, with
    ``concentration`` broadcast to ``(K,)``."""
    dtype = working_dtype()
    concentration = pi = None
    if prior.concentration is not None:
        concentration = _as_array(prior.concentration, dtype, (num_clusters,))
    elif prior.pi is not None:  # within K ulps of the simplex: put it on it
        if _checks.is_concrete(prior.pi):
            pi64 = np.asarray(prior.pi, np.float64)
            pi = _as_array(pi64 / pi64.sum(), dtype)
        else:
            pi = jnp.asarray(prior.pi, dtype)
            pi = pi / jnp.sum(pi)
    scalars = {f: _as_array(getattr(prior, f), dtype) for f in POSITIVE_HYPERPARAMETERS}
    if prior.tau_shape is not None:
        scalars.update({f: _as_array(getattr(prior, f), dtype) for f in PRECISION_PRIOR})
    return Prior(nu=_as_array(prior.nu, dtype), pi=pi, concentration=concentration, **scalars)


def as_prior(prior: Any, num_clusters: int) -> Prior:
    """Check the hyperparameters for ``num_clusters`` clusters (an int ``>= 1``); return them
    as arrays of the working dtype (``concentration`` broadcast to ``(K,)``)."""
    num_clusters = _checks.check_int("num_clusters", num_clusters, 1)
    check_prior(prior, num_clusters)
    return to_prior(prior, num_clusters)


def _as_array(x: Any, dtype: Any, shape: tuple[int, ...] | None = None) -> jax.Array:
    """``x`` as a JAX array of ``dtype`` (broadcast to ``shape``), converted on the host when
    it holds values, so that no computation is compiled for the conversion."""
    if _checks.is_concrete(x):
        v = np.asarray(x).astype(dtype)
        return jax.device_put(v if shape is None else np.ascontiguousarray(
            np.broadcast_to(v, shape)))
    x = jnp.asarray(x, dtype)
    return x if shape is None else jnp.broadcast_to(x, shape)


def positive_events(data: Observations) -> int:
    """The number of events of positive weight (all of them when the weights are None or
    not concrete)."""
    n = _checks.shape_of("data.strengths", data.strengths)[0]
    if data.weights is not None and _checks.is_concrete(data.weights):
        n = int(np.sum(np.asarray(data.weights) > 0))
    return n


def num_clusters(num_clusters: Any, data: Observations) -> int:
    """``1 <= K <= N``, counting only events of positive weight."""
    return _checks.check_int("num_clusters", num_clusters, 1, positive_events(data))


def param_values(params: Params, name: str = "params") -> None:
    """The global factors' values (after the cast to the working dtype): ``gamma_shape``,
    ``gamma_rate``, ``precision``, ``concentration``, ``tau_shape`` and ``tau_rate`` > 0,
    ``mean`` finite."""
    for field in ("gamma_shape", "gamma_rate", "precision", "concentration", "tau_shape",
                  "tau_rate"):
        value = getattr(params, field)
        if value is not None:
            _checks.check_real(f"{name}.{field}", value, positive=True,
                               divisor=field in ("gamma_rate", "precision", "tau_rate"))
    _checks.check_real(f"{name}.mean", params.mean)


def tolerance(tol: Any, dtype: Any = None) -> float:
    """``tol >= 0``, or None for the default of ``dtype`` (:func:`default_tolerance`); a
    ``tol`` below the dtype's resolution is warned about: the relative change of an ELBO
    computed in that dtype cannot be resolved below it."""
    dtype = working_dtype() if dtype is None else dtype
    if tol is None:
        return default_tolerance(dtype)
    tol = _checks.check_scalar("tol", tol, minimum=0.0)
    eps = float(jnp.finfo(dtype).eps)
    if 0.0 < tol < eps:
        warnings.warn(f"tol={tol:g} is below the resolution of {np.dtype(dtype)} (eps = "
                      f"{eps:.3g}), the dtype the ELBO is computed in: its relative change "
                      "cannot be resolved that finely, so restarts stop only when the ELBO "
                      f"stops changing or at max_iter. Use tol >= {eps:.3g}, tol=0 to run "
                      "max_iter sweeps, or enable jax_enable_x64.", UserWarning, stacklevel=3)
    return tol


def default_tolerance(dtype: Any) -> float:
    """``1e-7`` in float64; ``8 eps = 9.5e-7`` in float32, above the rounding of its ELBO."""
    return max(1e-7, 8.0 * float(jnp.finfo(dtype).eps))


def devices(devices: Any, name: str = "devices") -> list:
    """None (all local devices) or a non-empty sequence of ``jax.Device``; returns a list."""
    if devices is None:
        return jax.local_devices()
    if not isinstance(devices, list | tuple) or not devices or not all(
            isinstance(d, jax.Device) for d in devices):
        raise ValueError(f"{name} must be None or a non-empty list of jax.Device (e.g. "
                         f"jax.local_devices()); got {devices!r:.80}")
    return list(devices)
