"""Gumbel-softmax (Concrete) and straight-through estimators for discrete latents
(Jang, Gu, Poole 2017; Maddison, Mnih, Teh 2017; Bengio, Leonard, Courville 2013).

For a discrete family (``Bernoulli``, ``Categorical``) with logits ``l``, draw
``z = relaxed_noise(l)`` (logistic / Gumbel noise, reparameterised) and feed the model

- :class:`GumbelSoftmax`: the relaxed sample ``y = soft(z, t)`` (``sigmoid(z/t)``,
  ``softmax(z/t)``); the objective is the relaxed one, biased for the discrete objective, the
  bias shrinking with the temperature ``t`` (and the variance growing);
- :class:`STGumbelSoftmax`: the exact sample forward, the relaxed gradient backward:
  ``y = hard(z) + soft(z, t) - stop_gradient(soft(z, t))``;
- :class:`StraightThrough` (Bengio et al.; "annealed ST" with a schedule): an exact draw
  ``b`` forward and the gradient of ``soft(l, t)`` (the probabilities, sharpened by ``t``)
  backward: ``y = b + soft(l, t) - stop_gradient(soft(l, t))``.

With ``ELBO(kl="analytic")`` (and ``log_joint = UniformPrior(...)``) the KL to the prior is
the exact discrete one, as in Jang et al.; with ``ELBO(kl="mc")`` ``log q`` is the family's
``log_prob`` at ``y`` (exact at a hard ``y``, its continuous extension at a relaxed one).
The temperature is a constant or :class:`~vijax.estimators.Anneal` (the estimator then
counts its steps in its state). Objectives: ``ELBO``, ``Expectation``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from vijax.estimators._surrogate import Estimator, Surrogate, over_draws
from vijax.estimators._temperature import Anneal, check_temperature, temperature_at
from vijax.estimators.objectives import ELBO, Expectation

__all__ = ["Relaxation", "GumbelSoftmax", "STGumbelSoftmax", "StraightThrough"]

_RELAXATION = ("relaxed_noise", "hard", "soft")


def check_relaxation(estimator: Any, objective: Any, family: Any,
                     methods: tuple[str, ...]) -> None:
    """``family`` has the relaxation ``methods`` and ``objective`` is not ``kl='entropy'``."""
    name = type(estimator).__name__
    missing = [m for m in methods if not callable(getattr(family, m, None))]
    if missing:
        raise ValueError(f"estimator {name}() needs a discrete family with a relaxation "
                         f"(Bernoulli, Categorical); {type(family).__name__} lacks {missing}")
    if isinstance(objective, ELBO) and objective.kl == "entropy":
        raise ValueError(f"estimator {name}() takes ELBO(kl='analytic') or ELBO(kl='mc'); got "
                         "kl='entropy'")


@dataclasses.dataclass(frozen=True)
class Relaxation(Estimator):
    """Base of the estimators that use a discrete family's relaxation."""

    temperature: Any = 1.0
    objectives: ClassVar[tuple[type, ...]] = (ELBO, Expectation)
    needs_reparameterization: ClassVar[bool] = False
    family_methods: ClassVar[tuple[str, ...]] = _RELAXATION

    def __post_init__(self) -> None:
        check_temperature(self.temperature)

    def check(self, objective, family) -> None:
        super().check(objective, family)
        check_relaxation(self, objective, family, self.family_methods)

    def init_state(self) -> Any:
        return jnp.zeros((), jnp.int32) if isinstance(self.temperature, Anneal) else ()

    def _temperature(self, state: Any) -> tuple[Any, Any]:
        if isinstance(self.temperature, Anneal):
            return temperature_at(self.temperature, state), state + 1
        return self.temperature, state

    def relaxed_sample(self, key, params, family, k, t):  # pragma: no cover - abstract
        raise NotImplementedError

    def surrogate(self, key, params, log_joint, family, objective, state) -> Surrogate:
        t, state = self._temperature(state)
        y = self.relaxed_sample(key, params, family, objective.num_samples, t)
        log_p = over_draws(objective.log_density(log_joint), y)
        log_q = family.log_prob(params, y) if objective.uses_log_q else None
        value = objective.value(log_p, log_q, params, family, log_joint)
        return Surrogate(value, value, state)


@dataclasses.dataclass(frozen=True)
class GumbelSoftmax(Relaxation):
    """The relaxed sample ``soft(z, t)`` forward and backward."""

    def relaxed_sample(self, key, params, family, k, t):
        return family.soft(family.relaxed_noise(key, params, k), t)


@dataclasses.dataclass(frozen=True)
class STGumbelSoftmax(Relaxation):
    """Straight-through Gumbel-softmax: ``hard(z)`` forward, ``soft(z, t)``'s gradient."""

    def relaxed_sample(self, key, params, family, k, t):
        z = family.relaxed_noise(key, params, k)
        soft = family.soft(z, t)
        return jax.lax.stop_gradient(family.hard(z)) + soft - jax.lax.stop_gradient(soft)


@dataclasses.dataclass(frozen=True)
class StraightThrough(Relaxation):
    """Straight-through (Bengio et al. 2013): an exact draw forward, ``soft(logits, t)``'s
    gradient backward."""

    def relaxed_sample(self, key, params, family, k, t):
        b = jax.lax.stop_gradient(family.sample(key, params, k))
        soft = family.soft(params, t)
        return b + soft - jax.lax.stop_gradient(soft)
