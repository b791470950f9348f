"""Variational families: objects that hold no parameters; parameters are pytrees.

A family is a small frozen (hashable) object with

- ``sample(key, params, sample_shape=())``: reparameterised draws ``z = t(eps, params)``,
  shape ``sample_shape + batch_shape + event_shape``, differentiable in ``params``;
- ``log_prob(params, z)``: ``log q(z)`` summed over the event axes, shape
  ``broadcast(z's leading axes, batch_shape)``;
- ``sample_and_log_prob(key, params, sample_shape=())``: both at once, ``log q`` computed from
  the noise (``log q(t(eps, phi); phi) = log N(eps) - log |det dt/deps|``: the same value and,
  sample by sample, the same total derivative in ``phi`` as ``log_prob(params, z)``, cheaper
  and without a solve);
- ``entropy(params)`` and ``kl_to_standard_normal(params)`` in closed form, shape
  ``batch_shape``;
- ``check(params)``: the parameters' structure, shapes, dtype (floating) and, when concrete,
  finiteness, with errors naming the argument; returns the parameters (lists made arrays);
- ``batch_shape(params)``, ``event_shape(params)``;
- ``reparameterized``: whether ``sample`` is differentiable in ``params`` (the pathwise
  estimators need it; the score function does not).

Batched (amortised) families: leading axes of the parameters are batch axes, one ``q(z|x_i)``
per data point; a VAE encoder's output ``(mean, log_var)`` is :class:`GaussianParams`
``(mean, log_var / 2)`` of a :class:`MeanFieldGaussian` with a batch axis.

Discrete families (:mod:`~vijax.families.discrete`): :class:`Bernoulli` and
:class:`Categorical` (``reparameterized`` false: the score function, or the relaxation-based
estimators, which use their ``relaxed_noise`` / ``hard`` / ``soft`` / ``conditional_noise``),
and their Concrete relaxations :class:`RelaxedBernoulli` and :class:`RelaxedCategorical`
(reparameterised, with their log-densities). Each discrete family has ``kl_to_uniform``.
"""

from vijax.families.discrete import (
    Bernoulli,
    Categorical,
    RelaxedBernoulli,
    RelaxedCategorical,
    bernoulli_log_density,
)
from vijax.families.gaussian import (
    FullRankGaussian,
    FullRankParams,
    GaussianParams,
    MeanFieldGaussian,
)

__all__ = ["GaussianParams", "MeanFieldGaussian", "FullRankParams", "FullRankGaussian",
           "Bernoulli", "Categorical", "RelaxedBernoulli", "RelaxedCategorical",
           "bernoulli_log_density"]
