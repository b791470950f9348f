"""The one k-sample surrogate every estimator implements, its checks, and jitted gradients.

An estimator is a small frozen object whose ``surrogate(key, params, log_joint, family,
objective, state)`` draws ``k = objective.num_samples`` latents from ``q_params`` and returns
``(value, surrogate, state)``: ``value`` is the objective's estimate (shape ``batch_shape``) and
``surrogate`` a function of the parameters with the same value whose gradient is the
estimator's sample. Gradients with respect to anything ``log_joint`` closes over (a decoder's
weights) come out of the same ``jax.grad``: the VAE differentiates
``mean(surrogate(...).surrogate)`` with respect to encoder and decoder at once.

Conventions: ``log_joint(z)`` takes one draw ``z`` of shape ``batch_shape + event_shape`` and
returns ``batch_shape`` values (a scalar for an unbatched family); the estimators ``vmap`` it
over the ``k`` draws.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from vijax._checks import check_key
from vijax.estimators.objectives import ELBO, IWAE, OBJECTIVES, Expectation

Array = jax.Array

__all__ = ["Estimator", "Surrogate", "Estimate", "GradientFn", "surrogate", "gradient",
           "estimate", "over_draws", "check_setup", "check_estimator"]


class Surrogate(NamedTuple):
    """Output of an estimator: ``value`` and ``surrogate`` (``batch_shape``), new ``state``."""

    value: Array
    surrogate: Array
    state: Any


class Estimate(NamedTuple):
    """Output of :func:`estimate`: the objective (``batch_shape``), the gradient of its sum
    over the batch (a pytree like ``params``), and the estimator's new state."""

    value: Array
    grad: Any
    state: Any


def over_draws(fn: Callable[[Array], Array], z: Array) -> Array:
    """``fn`` applied to each of the ``k`` draws ``z[i]`` (``vmap`` over axis 0)."""
    return jax.vmap(fn)(z)


@dataclasses.dataclass(frozen=True)
class Estimator:
    """Base of the estimators: what each one needs, and its (empty) state.

    Subclasses set the class variables and implement :meth:`surrogate`.
    """

    #: The family's ``sample`` must be differentiable in its parameters.
    needs_reparameterization: ClassVar[bool] = True
    #: The objective must use ``log q`` at the samples (``ELBO(kl="mc")`` or ``IWAE``).
    needs_log_q: ClassVar[bool] = False
    #: Objectives the estimator applies to.
    objectives: ClassVar[tuple[type, ...]] = (ELBO, IWAE, Expectation)
    #: Fewest draws per estimate.
    min_samples: ClassVar[int] = 1

    def check(self, objective: Any, family: Any) -> None:
        """Raise ``ValueError`` when the estimator does not apply to ``objective``/``family``."""
        name = type(self).__name__
        if not isinstance(objective, self.objectives):
            allowed = " or ".join(o.__name__ for o in self.objectives)
            raise ValueError(f"estimator {name}() applies to objective {allowed}; got "
                             f"{objective!r}")
        if self.needs_log_q and not objective.uses_log_q:
            raise ValueError(f"estimator {name}() needs log q at the samples: use "
                             f"ELBO(kl='mc') or IWAE; got {objective!r}")
        if self.needs_reparameterization and not getattr(family, "reparameterized", False):
            raise ValueError(f"estimator {name}() differentiates through the sample; family "
                             f"{type(family).__name__} is not reparameterised: use Score()")
        if objective.num_samples < self.min_samples:
            raise ValueError(f"estimator {self!r} needs num_samples >= {self.min_samples} "
                             f"draws; got objective {objective!r}")

    def init_state(self) -> Any:
        """The state carried between steps (``()`` when the estimator has none)."""
        return ()

    @property
    def needs_state(self) -> bool:
        return jax.tree.leaves(self.init_state()) != []

    def surrogate(self, key: Array, params: Any, log_joint: Callable, family: Any,
                  objective: Any, state: Any) -> Surrogate:  # pragma: no cover - abstract
        raise NotImplementedError


# ----------------------------------------------------------------------------- checks


def check_setup(log_joint: Any, family: Any, objective: Any, estimator: Any) -> None:
    """Checks of the settings, once, before anything is traced."""
    if not callable(log_joint):
        raise ValueError("log_joint must be a callable z -> log p(x, z); got "
                         f"{type(log_joint).__name__}")
    if isinstance(family, type):
        raise ValueError(f"family must be a family object, e.g. {family.__name__}(); got the "
                         f"class {family.__name__}")
    for method in ("sample", "log_prob", "sample_and_log_prob", "check", "batch_shape"):
        if not callable(getattr(family, method, None)):
            raise ValueError(f"family must be a vijax family (MeanFieldGaussian(), "
                             f"FullRankGaussian(), ...) with a {method} method; got "
                             f"{type(family).__name__}")
    check_estimator(objective, estimator, family)
    objective.check_log_joint(log_joint)
    objective.check_family(family, log_joint)
    ndim = getattr(log_joint, "event_ndim", None)
    if ndim is not None and ndim != getattr(family, "event_ndim", ndim):
        raise ValueError(f"log_joint's prior has event_ndim = {ndim} but the family's is "
                         f"{family.event_ndim}: pass StandardNormalPrior(..., event_ndim="
                         f"{family.event_ndim})")


def check_estimator(objective: Any, estimator: Any, family: Any) -> None:
    """``objective`` and ``estimator`` are vijax objects and the estimator applies."""
    if not isinstance(objective, OBJECTIVES):
        raise ValueError(f"objective must be ELBO(num_samples, kl), IWAE(num_samples) or "
                         f"Expectation(num_samples); got {objective!r}")
    if not isinstance(estimator, Estimator):
        hint = " (estimators are objects now, e.g. STL(), not strings)" if isinstance(
            estimator, str) else ""
        raise ValueError("estimator must be Reparam(), STL(), DReG(), Score(baseline=...) or "
                         f"ScoreControlVariate(); got {estimator!r}{hint}")
    estimator.check(objective, family)


def check_state(estimator: Estimator, state: Any) -> Any:
    """``state`` has the structure of ``estimator.init_state()`` (``None``: the initial state,
    refused when the estimator carries one)."""
    return _check_state(estimator, state)


def _check_state(estimator: Estimator, state: Any) -> Any:
    if state is None:
        if estimator.needs_state:
            raise ValueError(f"estimator {estimator!r} carries a state between steps: pass "
                             "state=estimator.init_state() and then the state each call returns")
        return estimator.init_state()
    want = jax.tree.structure(estimator.init_state())
    if jax.tree.structure(state) != want:
        raise ValueError(f"state must have the structure of estimator.init_state() ({want}); "
                         f"got {jax.tree.structure(state)}")
    return state


def _check_log_joint_output(log_joint: Callable, family: Any, objective: Any,
                            params: Any) -> None:
    """The log density maps one draw to ``batch_shape`` values (cached per signature)."""
    leaves, treedef = jax.tree.flatten(params)
    sig = (log_joint, family, objective, treedef,
           tuple((tuple(jnp.shape(x)), jnp.result_type(x)) for x in leaves))
    tracing = any(isinstance(x, jax.core.Tracer) for x in leaves)
    if _hashable(*sig) and not tracing:  # a closure over tracers must not outlive its trace
        _probe_cached(*sig)
    else:
        _probe(*sig)


def _probe(log_joint, family, objective, treedef, leaf_sigs) -> None:
    """Abstract evaluation (no FLOPs) of the log density on one draw."""
    params = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(*sd) for sd in leaf_sigs])
    fn = objective.log_density(log_joint)
    z = jax.eval_shape(lambda p: family.sample(jax.random.key(0), p), params)
    batch = family.batch_shape(params)
    what = "log_joint" if fn is log_joint else "log_joint.log_likelihood"
    try:
        out = jax.eval_shape(fn, z)
    except Exception as e:  # the user's function failed on a well-formed latent
        raise ValueError(f"{what} failed on one draw z of shape {z.shape} (dtype {z.dtype}); "
                         f"expected it to take z of shape batch_shape + event_shape and "
                         f"return batch_shape {batch}. The error was: {type(e).__name__}: "
                         f"{e}") from e
    if getattr(out, "shape", None) != batch:
        kind = "a scalar" if batch == () else f"shape {batch} (one value per data point)"
        raise ValueError(f"{what} must return {kind} for one draw z of shape {z.shape}; got "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"{what} must return floating-point log densities; got dtype "
                         f"{out.dtype} (its gradient would be zero)")


def _check_call(key: Any, params: Any, log_joint: Callable, family: Any, objective: Any,
                estimator: Estimator, state: Any, values: bool = True) -> tuple[Any, Any]:
    check_key("key", key)
    params = family.check(params, values=values)
    _check_log_joint_output(log_joint, family, objective, params)
    return params, _check_state(estimator, state)


_probe_cached = functools.lru_cache(maxsize=256)(_probe)


# ----------------------------------------------------------------------------- public


def surrogate(key: Array, params: Any, log_joint: Callable, family: Any, *,
              objective: Any = ELBO(), estimator: Estimator | None = None,
              state: Any = None) -> Surrogate:
    """The estimator's surrogate for ``q = family(params)`` and ``log_joint`` (traceable).

    Use it inside your own ``jax.grad`` (an amortised family: ``params = encoder(phi, x)``; a
    ``log_joint`` closing over a decoder's weights): ``grad(sum(surrogate(...).surrogate))`` is
    the estimator's gradient of the summed objective, ``value`` the objective's estimate.

    Args:
      key: one PRNG key.
      params: the family's parameters (batch axes lead).
      log_joint: ``z (batch_shape + event_shape) -> batch_shape``.
      family: e.g. ``MeanFieldGaussian()``.
      objective: ``ELBO(num_samples, kl)`` or ``IWAE(num_samples)``.
      estimator: default ``Reparam()``.
      state: the estimator's state when it has one (``estimator.init_state()`` at first).

    Returns:
      :class:`Surrogate` ``(value, surrogate, state)``.
    """
    estimator = _default(estimator)
    check_setup(log_joint, family, objective, estimator)
    params, state = _check_call(key, params, log_joint, family, objective, estimator, state)
    return estimator.surrogate(key, params, log_joint, family, objective, state)


def _default(estimator: Estimator | None) -> Estimator:
    if estimator is None:
        from vijax.estimators.reparam import Reparam

        return Reparam()
    return estimator


def _loss(log_joint, family, objective, estimator, key, params, state):
    out = estimator.surrogate(key, params, log_joint, family, objective, state)
    return jnp.sum(out.surrogate), (out.value, out.state)


def _jit_gradient(log_joint, family, objective, estimator):
    loss = functools.partial(_loss, log_joint, family, objective, estimator)
    grad = jax.value_and_grad(loss, argnums=1, has_aux=True)

    def raw(key, params, state):
        (_, (value, new_state)), g = grad(key, params, state)
        return Estimate(value, g, new_state)

    return jax.jit(raw)


def _hashable(*objs: Any) -> bool:
    try:
        hash(objs)
    except TypeError:
        return False
    return True


_cached_gradient = functools.lru_cache(maxsize=256)(_jit_gradient)


class GradientFn(NamedTuple):
    """A checked, jitted ``(key, params, state=None) -> Estimate`` (see :func:`gradient`).

    Attributes:
      raw: the jitted ``(key, params, state) -> Estimate`` without per-call checks, for use
        inside ``jit``/``vmap``/``scan``; per-sample gradients are
        ``gradient_samples(key, lambda k, p: fn.raw(k, p, state).grad, params, n)``.
    """

    raw: Callable
    log_joint: Callable
    family: Any
    objective: Any
    estimator: Estimator

    def check(self, key: Array, params: Any, state: Any = None,
              values: bool = False) -> tuple[Any, Any]:
        """The per-call checks (structure, shapes, dtypes; finiteness of the parameters only
        with ``values``, which copies them to the host): the checked ``params`` and
        ``state``."""
        return _check_call(key, params, self.log_joint, self.family, self.objective,
                           self.estimator, state, values)

    def __call__(self, key: Array, params: Any, state: Any = None) -> Estimate:
        params, state = self.check(key, params, state)
        return self.raw(key, params, state)


def gradient(log_joint: Callable, family: Any, *, objective: Any = ELBO(),
             estimator: Estimator | None = None) -> GradientFn:
    """A jitted gradient estimator for ``log_joint`` and ``family``, checked once.

    Calls return :class:`Estimate` ``(value, grad, state)``: ``grad`` is the estimator's
    gradient of ``sum over the batch of the objective`` (each factor of a batched family gets
    its own data point's gradient). The jitted function is cached per (``log_joint``,
    ``family``, ``objective``, ``estimator``) when they are hashable (functions, bound methods
    and frozen dataclasses are), so a loop that calls this again does not recompile.
    """
    estimator = _default(estimator)
    check_setup(log_joint, family, objective, estimator)
    make = _cached_gradient if _hashable(log_joint, family, objective, estimator) else \
        _jit_gradient
    return GradientFn(make(log_joint, family, objective, estimator), log_joint, family,
                      objective, estimator)


def estimate(key: Array, params: Any, log_joint: Callable, family: Any, *,
             objective: Any = ELBO(), estimator: Estimator | None = None,
             state: Any = None) -> Estimate:
    """One gradient estimate: ``gradient(log_joint, family, ...)(key, params, state)``, with the
    parameters' values checked too. Compiled once per (``log_joint``, family, objective,
    estimator): a new lambda per call compiles again, so pass the same function in a loop."""
    fn = gradient(log_joint, family, objective=objective, estimator=estimator)
    params, state = fn.check(key, params, state, values=True)
    return fn.raw(key, params, state)
