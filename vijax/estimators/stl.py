"""Sticking the landing (Roeder, Wu, Duvenaud 2017): the path derivative only (MODEL.md §3).

``grad_phi [log p(x, t(eps, phi)) - log q_{stop_gradient(phi)}(t(eps, phi))]``: the stop
gradient is on the parameters fed to ``log q``, never on the sample. This drops the score
term ``grad_phi log q_phi(z)|_z`` (mean zero), so STL is unbiased for the ELBO, and its
gradient is zero for every ``eps`` when ``q`` is the exact posterior. For ``IWAE_k`` with
``k > 1`` the dropped term is weighted by the normalised importance weights and no longer has
mean zero: STL is biased there (Tucker et al. 2019); :class:`~vijax.estimators.DReG` is the
unbiased fix. Needs ``log q`` at the samples: ``ELBO(kl="mc")`` or ``IWAE``.
"""

from __future__ import annotations

import dataclasses

import jax

from vijax.estimators._surrogate import Estimator, Surrogate, over_draws

__all__ = ["STL"]


@dataclasses.dataclass(frozen=True)
class STL(Estimator):
    """Path derivative: ``log q`` evaluated with stopped parameters."""

    needs_log_q = True

    def surrogate(self, key, params, log_joint, family, objective, state) -> Surrogate:
        z = family.sample(key, params, objective.num_samples)
        stopped = jax.lax.stop_gradient(params)
        log_q = family.log_prob(stopped, z)
        log_p = over_draws(objective.log_density(log_joint), z)
        value = objective.value(log_p, log_q, stopped, family, log_joint)
        return Surrogate(value, value, state)
