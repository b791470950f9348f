"""The score-function estimator (REINFORCE, Williams 1992) and its baselines (MODEL.md §3).

Draws are not differentiated (``z = stop_gradient(sample)``), so any family works, discrete
ones included. For an objective ``L(z_1..z_k; phi)``,

    grad E[L] = E[sum_i weight * (f_i - b_i) grad_phi log q_phi(z_i)] + E[grad_phi L |_z fixed]

with the learning signal ``f_i`` and weight of the objective (``ELBO``: ``f_i = log p_i - log
q_i``, weight ``1/k``; ``IWAE``: ``f_i = IWAE_k``, weight 1) and a baseline ``b_i`` that does
not depend on ``z_i``, which keeps the estimator unbiased (``E[grad log q] = 0``):

- ``None``: ``b_i = 0``;
- :class:`MovingAverage` ``(decay)``: an exponential moving average of past signals, carried in
  the estimator's state (Williams 1992; the NVIL baseline's constant part, Mnih and Gregor
  2014);
- :class:`LeaveOneOut`: from the other ``k - 1`` draws of the same step: RLOO for the ELBO
  (Kool, van Hoof, Welling 2019), VIMCO for IWAE (Mnih and Rezende 2016); ``k >= 2``.

The surrogate keeps the objective's value: the score part is added as
``(log q - stop_gradient(log q))``, zero in value.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vijax._checks import check_scalar
from vijax.estimators._surrogate import Estimator, Surrogate, over_draws

__all__ = ["Score", "MovingAverage", "LeaveOneOut", "MovingAverageState"]


class MovingAverageState(NamedTuple):
    """``mean``: the running average of the learning signal; ``count``: updates so far."""

    mean: jax.Array
    count: jax.Array


@dataclasses.dataclass(frozen=True)
class MovingAverage:
    """``b = m_t``, ``m_{t+1} = decay m_t + (1 - decay) mean(f)`` (``b = 0`` at the first step,
    then ``m_1 = mean(f)`` of that step)."""

    decay: float = 0.9

    def __post_init__(self) -> None:
        d = check_scalar("decay", self.decay, minimum=0.0)
        if d >= 1.0:
            raise ValueError(f"decay must be in [0, 1); got {d}")

    min_samples = 1

    def init_state(self) -> MovingAverageState:
        return MovingAverageState(jnp.zeros(()), jnp.zeros((), jnp.int32))

    def __call__(self, objective, log_p, log_q, signals, state):
        mean = jnp.mean(signals)
        started = state.count > 0
        baseline = jnp.where(started, state.mean, 0.0).astype(signals.dtype)
        new_mean = jnp.where(started, self.decay * state.mean + (1 - self.decay) * mean, mean)
        return baseline, MovingAverageState(new_mean.astype(state.mean.dtype), state.count + 1)


@dataclasses.dataclass(frozen=True)
class LeaveOneOut:
    """``b_i`` from the other draws of the step (RLOO for the ELBO, VIMCO for IWAE)."""

    min_samples = 2

    def init_state(self) -> tuple:
        return ()

    def __call__(self, objective, log_p, log_q, signals, state):
        return objective.leave_one_out(log_p, log_q), state


BASELINES = (MovingAverage, LeaveOneOut)


@dataclasses.dataclass(frozen=True)
class Score(Estimator):
    """Score-function gradient with an optional baseline (``None``, ``MovingAverage(decay)``,
    ``LeaveOneOut()``)."""

    baseline: Any = None
    needs_reparameterization = False

    def __post_init__(self) -> None:
        if self.baseline is not None and not isinstance(self.baseline, BASELINES):
            raise ValueError("baseline must be None, MovingAverage(decay) or LeaveOneOut(); "
                             f"got {self.baseline!r}")

    def check(self, objective, family) -> None:
        super().check(objective, family)
        need = getattr(self.baseline, "min_samples", 1)
        if objective.num_samples < need:
            raise ValueError(f"baseline {self.baseline!r} needs num_samples >= {need} draws "
                             f"(it uses the other draws of the step); got {objective!r}")

    def init_state(self) -> Any:
        return () if self.baseline is None else self.baseline.init_state()

    def surrogate(self, key, params, log_joint, family, objective, state) -> Surrogate:
        z = jax.lax.stop_gradient(family.sample(key, params, objective.num_samples))
        log_q = family.log_prob(params, z)
        log_p = over_draws(objective.log_density(log_joint), z)
        value = objective.value(log_p, log_q, params, family, log_joint)
        lp, lq = jax.lax.stop_gradient(log_p), jax.lax.stop_gradient(log_q)
        signals, weight = objective.signals(lp, lq)
        if self.baseline is None:
            baseline = jnp.zeros_like(signals)
        else:
            baseline, state = self.baseline(objective, lp, lq, signals, state)
        advantage = jax.lax.stop_gradient(signals - baseline)
        score_part = weight * jnp.sum(advantage * (log_q - lq), axis=0)
        return Surrogate(value, value + score_part, state)
