"""Doubly reparameterised gradient of ``IWAE_k`` (Tucker, Lawson, Gu, Maddison 2019).

With ``log w_i = log p(x, z_i) - log q(z_i)`` and ``w~_i = w_i / sum_j w_j``, the variational
parameters' gradient is

    sum_i w~_i^2 (d log w_i / d z_i) (d z_i / d phi)      (``log q``'s parameters stopped)

and everything ``log p`` closes over (a decoder) gets the total derivative
``sum_i w~_i grad log w_i``. Unbiased for ``grad IWAE_k``; at ``k = 1`` it is STL.

One pass of the model forward and backward: a ``custom_vjp`` around ``log w`` multiplies the
cotangent reaching each ``z_i`` by ``w~_i`` once more. ``jax.closure_convert`` hoists what
``log_joint`` closes over (the decoder's weights) into explicit arguments, so their gradients
cross the custom rule.
"""

from __future__ import annotations

import dataclasses
import functools

import jax

from vijax.estimators._surrogate import Estimator, Surrogate, over_draws
from vijax.estimators.objectives import IWAE, bound_from_log_weights

__all__ = ["DReG"]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _reweighted(log_weights, z, *consts):
    return log_weights(z, *consts)


def _fwd(log_weights, z, *consts):
    lw, pullback = jax.vjp(log_weights, z, *consts)
    return lw, (pullback, jax.nn.softmax(lw, axis=0))


def _bwd(log_weights, residuals, cotangent):
    pullback, w_norm = residuals
    d_z, *d_consts = pullback(cotangent)
    w = w_norm.astype(d_z.dtype).reshape(w_norm.shape + (1,) * (d_z.ndim - w_norm.ndim))
    return (d_z * w, *d_consts)


_reweighted.defvjp(_fwd, _bwd)


@dataclasses.dataclass(frozen=True)
class DReG(Estimator):
    """DReG for ``IWAE(num_samples=k)``."""

    objectives = (IWAE,)
    needs_log_q = True

    def surrogate(self, key, params, log_joint, family, objective, state) -> Surrogate:
        z = family.sample(key, params, objective.num_samples)
        stopped = jax.lax.stop_gradient(params)

        def log_weights(z):
            return over_draws(log_joint, z) - family.log_prob(stopped, z)

        converted, consts = jax.closure_convert(log_weights, z)
        value = bound_from_log_weights(_reweighted(converted, z, *consts))
        return Surrogate(value, value, state)
