"""Gradient estimators for any model and any family, through one k-sample surrogate.

Objectives (:mod:`~vijax.estimators.objectives`): ``ELBO(num_samples, kl)`` and
``IWAE(num_samples)``. Estimators, one small module each, all implementing
``surrogate(key, params, log_joint, family, objective, state)``:

- :class:`Reparam`: the total derivative (reparameterisation);
- :class:`STL`: sticking the landing, the path derivative (Roeder et al. 2017);
- :class:`DReG`: doubly reparameterised, for ``IWAE`` (Tucker et al. 2019);
- :class:`Score`: the score function with ``baseline=None``, :class:`MovingAverage` or
  :class:`LeaveOneOut` (RLOO / VIMCO);
- :class:`ScoreControlVariate`: the score term as a control variate with its estimated
  optimal coefficient;
- for discrete latents (``Bernoulli``, ``Categorical``): :class:`GumbelSoftmax`,
  :class:`STGumbelSoftmax`, :class:`StraightThrough` (a temperature or :class:`Anneal`), the
  score function with any baseline (:class:`Learned` for NVIL's), :class:`REBAR` and
  :class:`RELAX`.

Entry points: :func:`surrogate` (inside your own ``jax.grad``, e.g. an amortised encoder),
:func:`gradient` (a checked, jitted, cached ``(key, params, state) -> Estimate``),
:func:`estimate` (one call). Per-sample gradients and their moments:
:mod:`vijax.diagnostics`; a training loop: :mod:`vijax.vi`.

Example::

    family = MeanFieldGaussian()
    grad_fn = gradient(model.log_joint, family, objective=IWAE(10), estimator=DReG())
    value, grad, _ = grad_fn(key, params)
"""

from vijax.estimators._surrogate import (
    Estimate,
    Estimator,
    GradientFn,
    Surrogate,
    check_estimator,
    check_state,
    estimate,
    gradient,
    over_draws,
    surrogate,
)
from vijax.estimators._temperature import Anneal
from vijax.estimators.control_variate import ScoreControlVariate
from vijax.estimators.dreg import DReG
from vijax.estimators.gumbel_softmax import GumbelSoftmax, STGumbelSoftmax, StraightThrough
from vijax.estimators.objectives import (
    ELBO,
    IWAE,
    Expectation,
    StandardNormalPrior,
    UniformPrior,
)
from vijax.estimators.rebar import REBAR, RELAX, ControlVariateState
from vijax.estimators.reparam import Reparam
from vijax.estimators.score import (
    Learned,
    LearnedState,
    LeaveOneOut,
    MovingAverage,
    MovingAverageState,
    Score,
)
from vijax.estimators.stl import STL

__all__ = ["ELBO", "IWAE", "Expectation", "StandardNormalPrior", "UniformPrior", "Estimator",
           "Reparam", "STL", "DReG", "Score", "MovingAverage", "MovingAverageState",
           "LeaveOneOut", "Learned", "LearnedState", "ScoreControlVariate", "GumbelSoftmax",
           "STGumbelSoftmax", "StraightThrough", "Anneal", "REBAR", "RELAX",
           "ControlVariateState", "Surrogate", "Estimate", "GradientFn",
           "surrogate", "gradient", "estimate", "over_draws", "check_estimator", "check_state"]
