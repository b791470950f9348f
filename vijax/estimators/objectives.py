"""Objectives: the ELBO and the importance-weighted bound, as functions of ``k`` log weights.

Draw ``z_1..z_k ~ q`` (one draw is a whole batch when the family is batched) and let
``log p_i = log p(x, z_i)`` and ``log q_i = log q(z_i)``, each of shape ``batch_shape``.

- :class:`ELBO` ``(num_samples=k, kl=...)``, the Monte-Carlo evidence lower bound averaged over
  the ``k`` draws (MODEL.md §3):

  - ``kl="mc"``: ``(1/k) sum_i [log p_i - log q_i]`` (``log q`` at the samples; what STL needs);
  - ``kl="entropy"``: ``(1/k) sum_i log p_i + H(q)`` (closed-form entropy);
  - ``kl="analytic"``: ``(1/k) sum_i log p(x | z_i) - KL(q || N(0, I))``, for a model whose
    prior is a standard normal: ``log_joint`` must then be a :class:`StandardNormalPrior`
    (the course's VAE objective, MODEL.md §2).

- :class:`IWAE` ``(num_samples=k)``: ``log (1/k) sum_i exp(log p_i - log q_i)`` (Burda, Grosse,
  Salakhutdinov 2016); its expectation is the ELBO at ``k = 1`` and rises to ``log p(x)``.

Each objective also gives what the score-function estimator needs: the learning signal of
each draw and its leave-one-out baseline (RLOO for the ELBO, VIMCO for IWAE).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from vijax._checks import check_int
from vijax.families import GaussianParams, MeanFieldGaussian

Array = jax.Array

__all__ = ["ELBO", "IWAE", "Expectation", "StandardNormalPrior", "UniformPrior", "KL_CHOICES",
           "OBJECTIVES"]

#: Values of ``ELBO(kl=...)``.
KL_CHOICES = ("mc", "entropy", "analytic")


@dataclasses.dataclass(frozen=True)
class StandardNormalPrior:
    """A log joint ``log p(x|z) + log N(z; 0, I)`` from a log-likelihood ``z -> log p(x|z)``.

    Called on ``z`` (``batch_shape + (D,)``) it returns the log joint, so it serves every
    objective; :class:`ELBO` ``(kl="analytic")`` uses its ``log_likelihood`` with the closed-form
    KL instead.
    """

    log_likelihood: Callable[[Array], Array]
    event_ndim: int = 1

    def __post_init__(self) -> None:
        if not callable(self.log_likelihood):
            raise ValueError("log_likelihood must be a callable z -> log p(x|z); got "
                             f"{type(self.log_likelihood).__name__}")
        check_int("event_ndim", self.event_ndim, minimum=0)

    def __call__(self, z: Array) -> Array:
        family = MeanFieldGaussian(self.event_ndim)
        standard = GaussianParams(jnp.zeros((), z.dtype), jnp.zeros((), z.dtype))
        return self.log_likelihood(z) + family.log_prob(standard, z)

    @staticmethod
    def kl(family: Any, params: Any) -> Array:
        """``KL(q || N(0, I))`` in closed form (the family's)."""
        return family.kl_to_standard_normal(params)


@dataclasses.dataclass(frozen=True)
class UniformPrior:
    """A log joint ``log p(x|z) + log p(z)`` with a uniform prior over a discrete ``family``'s
    values (``Bernoulli(1/2)`` units, or ``K`` equally likely categories): ``log p(z)`` is the
    family's ``log_prob`` at zero logits (``-n log 2``, ``-V log K``), and
    :class:`ELBO` ``(kl="analytic")`` uses ``family.kl_to_uniform``.
    """

    log_likelihood: Callable[[Array], Array]
    family: Any

    def __post_init__(self) -> None:
        if not callable(self.log_likelihood):
            raise ValueError("log_likelihood must be a callable z -> log p(x|z); got "
                             f"{type(self.log_likelihood).__name__}")
        if not callable(getattr(self.family, "kl_to_uniform", None)):
            raise ValueError("family must be a discrete family (Bernoulli, Categorical); got "
                             f"{self.family!r}")

    def __call__(self, z: Array) -> Array:
        return self.log_likelihood(z) + self.family.log_prob(jnp.zeros_like(z), z)

    @staticmethod
    def kl(family: Any, params: Any) -> Array:
        return family.kl_to_uniform(params)


def _leave_one_out_mean(x: Array) -> Array:
    """``mean_{j != i} x_j`` along axis 0 (``k >= 2``)."""
    k = x.shape[0]
    return (jnp.sum(x, axis=0) - x) / (k - 1)


@dataclasses.dataclass(frozen=True)
class _Objective:
    """What the objectives share: ``num_samples`` draws, no requirement on the log joint or
    the family, the log joint averaged as it is, and the leave-one-out mean of the learning
    signals as the RLOO baseline."""

    num_samples: int = 1

    def __post_init__(self) -> None:
        check_int("num_samples", self.num_samples, minimum=1)

    def check_log_joint(self, log_joint: Any) -> None:
        """Refuse a log joint the objective cannot use (a ValueError naming it)."""

    def check_family(self, family: Any, log_joint: Any) -> None:
        """Refuse a family the objective cannot use (a ValueError naming it)."""

    def log_density(self, log_joint: Callable) -> Callable:
        """The function of ``z`` the Monte-Carlo part averages."""
        return log_joint

    def leave_one_out(self, log_p: Array, log_q: Array) -> Array:
        """RLOO baseline ``b_i = mean_{j != i} f_j`` (independent of ``z_i``)."""
        return _leave_one_out_mean(self.signals(log_p, log_q)[0])


@dataclasses.dataclass(frozen=True)
class ELBO(_Objective):
    """Monte-Carlo ELBO over ``num_samples`` draws; ``kl`` in :data:`KL_CHOICES`."""

    kl: str = "mc"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl not in KL_CHOICES:
            raise ValueError(f"kl must be one of {KL_CHOICES}; got {self.kl!r}")

    @property
    def uses_log_q(self) -> bool:
        """Whether the value needs ``log q`` at the samples (the Monte-Carlo KL)."""
        return self.kl == "mc"

    def check_log_joint(self, log_joint: Any) -> None:
        if self.kl == "analytic" and not (hasattr(log_joint, "log_likelihood")
                                          and callable(getattr(log_joint, "kl", None))):
            raise ValueError("ELBO(kl='analytic') needs log_joint = StandardNormalPrior("
                             "log_likelihood) or UniformPrior(log_likelihood, family) (a prior "
                             f"with a closed-form KL); got {type(log_joint).__name__}: use "
                             "kl='mc' or kl='entropy'")

    def check_family(self, family: Any, log_joint: Any) -> None:
        if self.kl == "entropy" and not callable(getattr(family, "entropy", None)):
            raise ValueError(f"ELBO(kl='entropy') needs a family with a closed-form entropy; "
                             f"{type(family).__name__} has none: use kl='mc'")

    def log_density(self, log_joint: Callable) -> Callable:
        return log_joint.log_likelihood if self.kl == "analytic" else log_joint

    def value(self, log_p: Array, log_q: Array, params: Any, family: Any,
              log_joint: Any = None) -> Array:
        """``batch_shape`` ELBO estimates from ``(k,) + batch_shape`` log densities
        (``log_joint`` gives the closed-form KL of ``kl="analytic"``)."""
        if self.kl == "mc":
            return jnp.mean(log_p - log_q, axis=0)
        if self.kl == "entropy":
            return jnp.mean(log_p, axis=0) + family.entropy(params)
        return jnp.mean(log_p, axis=0) - log_joint.kl(family, params)

    def signals(self, log_p: Array, log_q: Array) -> tuple[Array, float]:
        """Score-function learning signal ``f_i`` of each draw, and its weight ``1/k``:
        the score part of the gradient is ``(1/k) sum_i (f_i - b_i) grad log q(z_i)``."""
        f = log_p - log_q if self.kl == "mc" else log_p
        return f, 1.0 / log_p.shape[0]


@dataclasses.dataclass(frozen=True)
class IWAE(_Objective):
    """Importance-weighted bound ``IWAE_k``, ``k = num_samples``."""

    #: The value needs ``log q`` at the samples.
    uses_log_q: ClassVar[bool] = True

    def value(self, log_p: Array, log_q: Array, params: Any = None, family: Any = None,
              log_joint: Any = None) -> Array:
        """``logsumexp_i (log p_i - log q_i) - log k``, shape ``batch_shape``."""
        return bound_from_log_weights(log_p - log_q)

    def signals(self, log_p: Array, log_q: Array) -> tuple[Array, float]:
        """Every draw's learning signal is the bound itself (weight 1)."""
        bound = self.value(log_p, log_q)
        return jnp.broadcast_to(bound, log_p.shape), 1.0

    def leave_one_out(self, log_p: Array, log_q: Array) -> Array:
        """VIMCO baseline (Mnih and Rezende 2016): the bound with ``log w_i`` replaced by the
        mean of the other log weights, ``b_i = log (1/k) [sum_{j != i} w_j + exp(mean_{j != i}
        log w_j)]``."""
        lw = log_p - log_q
        k = lw.shape[0]
        others = _leave_one_out_mean(lw)
        eye = jnp.eye(k, dtype=bool).reshape((k, k) + (1,) * (lw.ndim - 1))
        replaced = jnp.where(eye, others[:, None], lw[None])  # row i: lw with lw_i replaced
        return jax.nn.logsumexp(replaced, axis=1) - math.log(k)


@dataclasses.dataclass(frozen=True)
class Expectation(_Objective):
    """``E_q[f(z)]`` with ``f = log_joint``, averaged over ``num_samples`` draws: no entropy, no
    ``log q`` (the objective of a control problem, such as the RELAX paper's toy problem
    ``E_{b ~ Bernoulli(theta)}[-(b - t)^2]``)."""

    uses_log_q: ClassVar[bool] = False

    def value(self, log_p: Array, log_q: Array, params: Any = None, family: Any = None,
              log_joint: Any = None) -> Array:
        return jnp.mean(log_p, axis=0)

    def signals(self, log_p: Array, log_q: Array) -> tuple[Array, float]:
        return log_p, 1.0 / log_p.shape[0]


def bound_from_log_weights(log_weights: Array) -> Array:
    """``log (1/k) sum_i exp(log_weights_i)`` along axis 0 (the IWAE bound's one formula)."""
    return jax.nn.logsumexp(log_weights, axis=0) - math.log(log_weights.shape[0])


#: The objective classes.
OBJECTIVES = (ELBO, IWAE, Expectation)
