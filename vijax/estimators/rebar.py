"""REBAR and RELAX: the relaxation as a control variate, unbiased for discrete latents
(Tucker, Mnih, Maddison, Lawson, Sohl-Dickstein 2017; Grathwohl, Choi, Wu, Roeder, Duvenaud 2018).

For a discrete family with logits ``l`` and the learning signal ``f`` of the objective
(``ELBO(kl="mc")``: ``log p(x, b) - log q(b)``; ``kl="analytic"``: ``log p(x|b)``, the KL
being exact; ``Expectation``: ``f(b)``), draw ``z = relaxed_noise(l)``, ``b = hard(z)`` and
``z~ ~ p(z | b)`` (``conditional_noise``), all reparameterised in ``l``. With a control
variate ``c``, the gradient

    g = [f(b) - c(z~)] grad log q(b) + grad c(z) - grad c(z~) + grad_l f(b)|_b

is unbiased for ``grad E_q[f]`` whatever ``c`` (``E[grad c(z)] = E[c(z~) grad log q(b) +
grad c(z~)]``). REBAR: ``c(z) = eta f(soft(z, lambda))``, the relaxed model; RELAX adds a
learned network, ``c(z) = eta f(soft(z, lambda)) + r_rho(z)``. The control variate's
parameters ``psi = (eta, log lambda[, rho])`` are fitted along the way to minimise the
estimator's variance: ``E[g] `` does not depend on ``psi``, so ``d Var(g) / d psi =
d E[|g|^2] / d psi``, estimated on the same draws by differentiating ``|g|^2`` (a gradient of
a gradient) and applied with the ``optimizer`` passed in. ``g`` is measured on the family's
parameters (the logits, one per data point and unit for an amortised encoder), which the
chain rule carries to the network's weights.

The estimators carry ``psi`` and the optimizer's state in their state (``init_state()``);
``k`` draws are averaged. Cost: the model is evaluated at ``b``, ``soft(z)`` and
``soft(z~)``, and the variance gradient differentiates through two of them twice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from vijax._checks import check_int
from vijax.estimators._mlp import MLPParams, mlp_apply, mlp_init
from vijax.estimators._surrogate import Estimator, Surrogate, over_draws
from vijax.estimators.gumbel_softmax import _RELAXATION, check_relaxation
from vijax.estimators.objectives import ELBO, Expectation

__all__ = ["REBAR", "RELAX", "ControlVariateState"]


class ControlVariateParams(NamedTuple):
    eta: jax.Array
    log_temperature: jax.Array
    network: MLPParams | tuple


class ControlVariateState(NamedTuple):
    """``params``: ``(eta, log_temperature, network)``; ``opt_state``: the optimizer's."""

    params: ControlVariateParams
    opt_state: Any


def _stopped_value(x: jax.Array) -> jax.Array:
    """``x`` with value zero and the gradient of ``x``."""
    return x - jax.lax.stop_gradient(x)


@dataclasses.dataclass(frozen=True)
class REBAR(Estimator):
    """REBAR; ``eta`` and the temperature are fitted by ``optimizer`` (``optax.adam(1e-2)``)."""

    optimizer: Any = None
    eta: float = 1.0
    temperature: float = 0.5
    objectives: ClassVar[tuple[type, ...]] = (ELBO, Expectation)
    needs_reparameterization: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not (callable(getattr(self.optimizer, "init", None))
                and callable(getattr(self.optimizer, "update", None))):
            raise ValueError(f"optimizer must be an optax.GradientTransformation for the control "
                             f"variate's parameters (e.g. optax.adam(1e-2)); got "
                             f"{self.optimizer!r}")

    def check(self, objective, family) -> None:
        super().check(objective, family)
        check_relaxation(self, objective, family, (*_RELAXATION, "conditional_noise"))

    def _network(self) -> MLPParams | tuple:
        return ()

    def _r(self, network, z, event_ndim):
        return 0.0

    def init_state(self) -> ControlVariateState:
        dtype = jnp.result_type(float)  # not weak-typed: one compilation
        params = ControlVariateParams(jnp.asarray(float(self.eta), dtype),
                                      jnp.asarray(math.log(self.temperature), dtype),
                                      self._network())
        return ControlVariateState(params, self.optimizer.init(params))

    def surrogate(self, key, params, log_joint, family, objective, state) -> Surrogate:
        k = objective.num_samples
        key_z, key_cond = jax.random.split(key)
        z = family.relaxed_noise(key_z, params, k)
        b = jax.lax.stop_gradient(family.hard(z))
        z_cond = family.conditional_noise(key_cond, params, b)
        event_ndim = z.ndim - 1 - len(family.batch_shape(params))
        density = objective.log_density(log_joint)

        def signal(y, logits):  # f at y (exact or relaxed), differentiable in y and logits
            f = over_draws(density, y)
            return f - family.log_prob(logits, y) if objective.uses_log_q else f

        def surrogate_of(logits, z, z_cond, psi):
            f_b = signal(b, logits)
            lam = jnp.exp(psi.log_temperature)

            def c(zz, lg):
                return (psi.eta * signal(family.soft(zz, lam), lg)
                        + self._r(psi.network, zz, event_ndim))

            c_z, c_cond = c(z, logits), c(z_cond, logits)
            log_q_b = family.log_prob(logits, b)
            # the score's coefficient: no gradient in the logits, but it stays a function of
            # psi, whose variance gradient needs it
            stop = jax.lax.stop_gradient
            coefficient = stop(f_b) - c(stop(z_cond), stop(logits))
            score = coefficient * _stopped_value(log_q_b)
            total = f_b + score + _stopped_value(c_z) - _stopped_value(c_cond)
            return jnp.mean(total, axis=0)

        psi, opt_state = state

        # fit psi: minimise |g|^2 with g the estimator's gradient in the family's parameters
        def variance(p):
            logits = jax.lax.stop_gradient(params)

            def s(l):
                zz = family.relaxed_noise(key_z, l, k)
                zc = family.conditional_noise(key_cond, l, b)
                return jnp.sum(surrogate_of(l, zz, zc, p))

            return jnp.sum(jnp.square(jax.grad(s)(logits)))

        d_psi = jax.grad(variance)(psi)
        updates, opt_state = self.optimizer.update(d_psi, opt_state, psi)
        new_psi = jax.tree.map(lambda a, u: a + u, psi, updates)
        new_state = jax.lax.stop_gradient(ControlVariateState(new_psi, opt_state))

        out = surrogate_of(params, z, z_cond, jax.lax.stop_gradient(psi))
        value = jnp.mean(signal(b, params), axis=0)
        if isinstance(objective, ELBO) and objective.kl == "analytic":
            kl = log_joint.kl(family, params)
            value, out = value - kl, out - kl
        return Surrogate(value, out, new_state)


@dataclasses.dataclass(frozen=True)
class RELAX(REBAR):
    """REBAR's control variate plus a network ``r_rho(z)`` (``hidden`` tanh units on the
    ``num_latents`` values of ``z``), all fitted to minimise the variance."""

    num_latents: int = 0
    hidden: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("num_latents", self.num_latents, minimum=1)
        check_int("hidden", self.hidden, minimum=1)

    def _network(self) -> MLPParams:
        return mlp_init(self.seed, self.num_latents, self.hidden)

    def _r(self, network, z, event_ndim):
        return mlp_apply(network, z, event_ndim)

    def check(self, objective, family) -> None:
        super().check(objective, family)
