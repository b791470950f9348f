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
  (Kool, van Hoof, Welling 2019), VIMCO for IWAE (Mnih and Rezende 2016); ``k >= 2``;
- :class:`Learned`: an input-dependent baseline network fitted to the signal (NVIL).

The surrogate keeps the objective's value: the score part is added as
``(log q - stop_gradient(log q))``, zero in value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vijax._checks import check_int, check_scalar
from vijax.estimators._mlp import MLPParams, mlp_apply, mlp_init
from vijax.estimators._surrogate import Estimator, Surrogate, over_draws

__all__ = ["Score", "MovingAverage", "LeaveOneOut", "MovingAverageState", "Learned",
           "LearnedState"]


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

    def __call__(self, objective, log_p, log_q, signals, state, params, family):
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

    def __call__(self, objective, log_p, log_q, signals, state, params, family):
        return objective.leave_one_out(log_p, log_q), state


class LearnedState(NamedTuple):
    """The baseline network's parameters, its optimizer's state, and the running mean of the
    learning signal the network's output is added to (NVIL's centring)."""

    params: MLPParams
    opt_state: Any
    mean: jax.Array
    count: jax.Array


@dataclasses.dataclass(frozen=True)
class Learned:
    """An input-dependent baseline ``b(x) = m + r_psi(params of q(z|x))``: a running mean ``m``
    of past learning signals (decay 0.9; 0 at the first step) plus a one-hidden-layer network
    on the family's (stopped) parameters fitted to the rest by least squares with
    ``optimizer`` at every step; both use only past steps, so the estimator stays unbiased
    (NVIL, Mnih and Gregor 2014, whose baseline reads ``x``; here it reads ``x`` through the
    encoder's output, which needs no access to the data).

    Attributes:
      optimizer: an Optax optimizer for ``psi`` (e.g. ``optax.adam(1e-3)``).
      num_inputs: the size of one factor's parameters (the event size of the logits).
      hidden: hidden units.
      seed: of the initial weights (the output layer starts at zero).
    """

    optimizer: Any = None
    num_inputs: int = 0
    hidden: int = 64
    seed: int = 0
    min_samples = 1

    def __post_init__(self) -> None:
        if not (callable(getattr(self.optimizer, "init", None))
                and callable(getattr(self.optimizer, "update", None))):
            raise ValueError("optimizer must be an optax.GradientTransformation for the "
                             f"baseline (e.g. optax.adam(1e-3)); got {self.optimizer!r}")
        check_int("num_inputs", self.num_inputs, minimum=1)
        check_int("hidden", self.hidden, minimum=1)

    def init_state(self) -> LearnedState:
        p = mlp_init(self.seed, self.num_inputs, self.hidden)
        return LearnedState(p, self.optimizer.init(p), jnp.zeros(()), jnp.zeros((), jnp.int32))

    def __call__(self, objective, log_p, log_q, signals, state, params, family):
        inputs = jax.lax.stop_gradient(jax.tree.leaves(params)[0])
        event_ndim = inputs.ndim - len(family.batch_shape(params))
        size = math.prod(inputs.shape[inputs.ndim - event_ndim:])
        if size != self.num_inputs:
            raise ValueError(f"Learned(num_inputs={self.num_inputs}) does not match the family's "
                             f"parameters: one factor has {size} values")

        started = state.count > 0
        mean = jnp.where(started, state.mean, 0.0).astype(signals.dtype)  # past steps only

        def fit(p):  # the network fits what the running mean leaves
            b = mean + mlp_apply(p, inputs, event_ndim)
            return jnp.mean(jnp.square(signals - b))

        baseline = mean + mlp_apply(state.params, inputs, event_ndim)
        updates, opt_state = self.optimizer.update(jax.grad(fit)(state.params), state.opt_state,
                                                   state.params)
        new = jax.tree.map(lambda a, u: a + u, state.params, updates)
        new_mean = jnp.where(started, 0.9 * state.mean + 0.1 * jnp.mean(signals),
                             jnp.mean(signals)).astype(state.mean.dtype)
        return (jnp.broadcast_to(baseline, signals.shape),
                LearnedState(new, opt_state, new_mean, state.count + 1))


BASELINES = (MovingAverage, LeaveOneOut, Learned)


@dataclasses.dataclass(frozen=True)
class Score(Estimator):
    """Score-function gradient with an optional baseline (``None``, ``MovingAverage(decay)``,
    ``LeaveOneOut()``)."""

    baseline: Any = None
    needs_reparameterization = False

    def __post_init__(self) -> None:
        if self.baseline is not None and not isinstance(self.baseline, BASELINES):
            raise ValueError("baseline must be None, MovingAverage(decay), LeaveOneOut() or "
                             f"Learned(optimizer, num_inputs); got {self.baseline!r}")

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
            baseline, state = self.baseline(objective, lp, lq, signals, state, params, family)
        advantage = jax.lax.stop_gradient(signals - baseline)
        score_part = weight * jnp.sum(advantage * (log_q - lq), axis=0)
        return Surrogate(value, value + score_part, state)
