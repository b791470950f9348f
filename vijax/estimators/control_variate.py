"""The score term as a control variate with its estimated optimal coefficient (MODEL.md §3).

The total derivative is the path derivative minus the score term, ``g = p - s`` with
``p = grad_phi [log p(z) - log q_{stop phi}(z)]`` (STL) and ``s = grad_phi log q_phi(z)|_z``,
``E[s] = 0``. Any coefficient ``c`` keeps ``p - c * s`` unbiased when ``c`` does not depend on
the draw it multiplies; ``c = 1`` is the total derivative, ``c = 0`` STL. Per coordinate, the
variance is smallest at ``c* = Cov(p, s) / Var(s) = E[p s] / E[s^2]``. The seed's "handling the
score function" and "cases where the score function decreases the variance" are the two
ends of this line; the estimator picks the point between from the data.

Here ``c*`` is estimated for each leaf of the family's parameters (``loc``, ``log_scale``, ...:
the coordinates of a leaf share one coefficient, which minimises the leaf's total variance
and is estimated with far less noise than one per coordinate), per draw, leave one out, from
the other ``k - 1`` draws of the step:

    c_i = sum_{j != i} <p_j, s_j> / sum_{j != i} |s_j|^2

(0 where the denominator is 0), so each draw's coefficient is independent of it and the
estimator stays unbiased. For an amortised family the coefficients live on the family's
parameters (pooled over the batch), and the chain rule carries ``p - c s`` to the network's
weights. The per-draw ``p_j`` and ``s_j`` come from backward passes on one copy of the family's
parameters per draw: the model is evaluated twice (once for the coefficients, once for the
surrogate); the score costs only the family. ELBO with ``kl="mc"``, ``k >= 2``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vijax.estimators._surrogate import Estimator, Surrogate, over_draws
from vijax.estimators.objectives import ELBO

__all__ = ["ScoreControlVariate"]


def stopped_leaf(x: jax.Array) -> jax.Array:
    return jax.lax.stop_gradient(x)


def _loo_coefficient(p: jax.Array, s: jax.Array) -> jax.Array:
    """``(k, 1, ..., 1)`` coefficients of one leaf: pooled over its coordinates, leave one out."""
    axes = tuple(range(1, p.ndim))
    ps, ss = jnp.sum(p * s, axis=axes), jnp.sum(s * s, axis=axes)
    num = jnp.sum(ps) - ps
    den = jnp.sum(ss) - ss
    c = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
    return c.reshape((-1,) + (1,) * len(axes))


@dataclasses.dataclass(frozen=True)
class ScoreControlVariate(Estimator):
    """``p - c s`` with the leave-one-out optimal coefficient ``c`` per parameter leaf."""

    objectives = (ELBO,)
    needs_log_q = True
    min_samples = 2

    def surrogate(self, key, params, log_joint, family, objective, state) -> Surrogate:
        k = objective.num_samples
        stopped = jax.lax.stop_gradient(params)
        copies = jax.tree.map(lambda x: jnp.broadcast_to(x, (k, *jnp.shape(x))), stopped)

        # one copy of the parameters per draw: per-draw gradients in one backward pass each
        # (family.sample(key, copies) draws the same noise as family.sample(key, params, k))
        def path(c):
            z = family.sample(key, c)
            return jnp.sum(over_draws(log_joint, z)
                           - family.log_prob(jax.lax.stop_gradient(c), z))

        def score(c):
            return jnp.sum(family.log_prob(c, jax.lax.stop_gradient(family.sample(key, c))))

        p, s = jax.grad(path)(copies), jax.grad(score)(copies)
        coef = jax.lax.stop_gradient(jax.tree.map(_loo_coefficient, p, s))

        z = family.sample(key, params, k)
        log_p = over_draws(log_joint, z)
        value = objective.value(log_p, family.log_prob(stopped, z), stopped, family)
        # value of params, gradient c * (gradient of params): the c-weighted score term
        mixed = jax.tree.map(lambda x, c: stopped_leaf(x) + c * (x - stopped_leaf(x)), params,
                             coef)
        log_q_c = family.log_prob(mixed, jax.lax.stop_gradient(z))
        score_part = jnp.mean(log_q_c - jax.lax.stop_gradient(log_q_c), axis=0)
        return Surrogate(value, value - score_part, state)
