"""The pytrees of :mod:`vijax.cavi` (MODEL.md section 1), apart from the code that uses them
so that the checks in :mod:`vijax.cavi._validate` and the model can both import them."""

from __future__ import annotations

from typing import NamedTuple

import jax

Array = jax.Array


class Prior(NamedTuple):
    """Hyperparameters (MODEL.md section 1).

    Attributes:
        tau: location precision within a cluster, > 0.
        alpha, beta: Gamma(shape, rate) prior on the Poisson rates, > 0.
        nu: ``(2,)`` prior mean of the cluster centres.
        rho: prior precision of the cluster centres, > 0.
        pi: ``(K,)`` fixed mixture weights on the simplex; None means uniform ``1/K``.
        concentration: Dirichlet prior on learned mixture weights, a scalar or ``(K,)``,
            > 0. When given, the weights are learned (``q(pi)``) and ``pi`` must be None.
        tau_shape, tau_rate: Gamma(shape, rate) prior on per-cluster location precisions,
            scalars > 0, given together. When given, each cluster has its own precision
            ``tau_k ~ Gamma(tau_shape, tau_rate)``, learned (``q(tau_k)``), and ``tau`` must
            be left at its default (it is not used). None (the default): one fixed ``tau``.
    """

    tau: Array | float = 1.0
    alpha: Array | float = 1.0
    beta: Array | float = 1.0
    nu: Array | tuple[float, float] = (0.0, 0.0)
    rho: Array | float = 1.0
    pi: Array | None = None
    concentration: Array | float | None = None
    tau_shape: Array | float | None = None
    tau_rate: Array | float | None = None


class Observations(NamedTuple):
    """Events: ``locations`` ``(N, 2)``, ``strengths`` ``(N,)`` counts, ``weights`` ``(N,)``.

    ``weights`` is 1 for a real event and 0 for padding; None means all ones.
    """

    locations: Array
    strengths: Array
    weights: Array | None = None


class Params(NamedTuple):
    """Variational parameters.

    Attributes:
        responsibilities: ``(N, K)`` rows of ``r_n`` on the simplex, ``q(Z_n) = Cat(r_n)``;
            None where only the global factors are meant (as :func:`vijax.cavi.predict`
            and :func:`vijax.cavi.assign_with_elbo` accept them).
        gamma_shape, gamma_rate: ``(K,)`` ``a_k, b_k`` of ``q(lam_k) = Gamma(a_k, b_k)``
            (shape-rate), so ``E[lam_k] = gamma_shape / gamma_rate``.
        mean, precision: ``(K, 2)`` ``m_k`` and ``(K,)`` ``s_k`` of ``q(mu_k)``.
        concentration: ``(K,)`` ``g_k`` of ``q(pi) = Dir(g)``; None when ``pi`` is fixed.
        tau_shape, tau_rate: ``(K,)`` ``c_k, d_k`` of ``q(tau_k) = Gamma(c_k, d_k)``
            (shape-rate), so ``E[tau_k] = tau_shape / tau_rate``; None when ``tau`` is fixed
            (a prior without ``tau_shape``).
    """

    responsibilities: Array | None
    gamma_shape: Array
    gamma_rate: Array
    mean: Array
    precision: Array
    concentration: Array | None = None
    tau_shape: Array | None = None
    tau_rate: Array | None = None


class Statistics(NamedTuple):
    """Sufficient statistics of the global updates, each a sum over events.

    ``counts`` ``sum_n r_nk``, ``strength_sums`` ``sum_n r_nk S_n``, ``location_sums``
    ``sum_n r_nk X_n`` (``(K, 2)``). With sharded events each is a partial sum plus an
    all-reduce.

    With learned precisions (``Prior.tau_shape``) the update of ``q(tau)`` also needs sums
    about per-cluster centres ``m'_k`` (the means of ``q(mu)`` the responsibilities were
    computed with, :mod:`vijax.cavi.model` explains why): ``residual_sums``
    ``sum_n r_nk (X_n - m'_k)`` ``(K, 2)`` and ``squared_residuals``
    ``sum_n r_nk ||X_n - m'_k||^2`` ``(K,)``; None otherwise.
    """

    counts: Array
    strength_sums: Array
    location_sums: Array
    residual_sums: Array | None = None
    squared_residuals: Array | None = None


class EventTerms(NamedTuple):
    """What the ELBO needs of each event that no variational parameter changes
    (:mod:`vijax.cavi.model` explains the centring).

    :func:`vijax.cavi.event_terms` computes them; :func:`vijax.cavi.fit` does so once per
    fit and passes them to every sweep.

    Attributes:
        log_strength: ``(N,)`` ``l_n``, ``log(S_n / 2^e)`` rounded to the working dtype (0
            where ``S_n = 0``): the centre of the event's logits.
        constant: ``(N,)`` ``c_n = -log(2 pi) - h(S_n) - S_n (log(S_n / 2^e) - l_n)``,
            what :func:`vijax.cavi.assignment_logits` leaves out of ``L_nk`` when asked to.
        scale_exponent: ``()`` ``e``, with ``max_n S_n / 2^e`` in ``[1/4, 1/2)``.
    """

    log_strength: Array
    constant: Array
    scale_exponent: Array
