"""The reparameterisation gradient, total derivative (MODEL.md §3; Kingma and Welling 2014).

``grad_phi f(t(eps, phi), phi)`` with ``z = t(eps, phi)``: ``log q`` is differentiated both
through the sample and through its parameters. Unbiased for every objective; with the
closed-form entropy or KL (``ELBO(kl="entropy" | "analytic")``) only the model term is
sampled.
"""

from __future__ import annotations

import dataclasses

from vijax.estimators._surrogate import Estimator, Surrogate, over_draws

__all__ = ["Reparam"]


@dataclasses.dataclass(frozen=True)
class Reparam(Estimator):
    """Total derivative of the objective through reparameterised draws."""

    def surrogate(self, key, params, log_joint, family, objective, state) -> Surrogate:
        z, log_q = family.sample_and_log_prob(key, params, objective.num_samples)
        log_p = over_draws(objective.log_density(log_joint), z)
        value = objective.value(log_p, log_q, params, family, log_joint)
        return Surrogate(value, value, state)
