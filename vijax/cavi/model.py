"""The earthquake mixture model and its mean-field family: block updates and the exact ELBO.

Specification: ``docs/MODEL.md`` section 1. For events ``n = 1..N`` with 2-D location
``X_n`` and integer strength ``S_n``, and clusters ``k = 1..K``::

    mu_k ~ N(nu, rho^-1 I_2)    lam_k ~ Gamma(alpha, beta)    Z_n ~ Cat(pi)
    X_n | Z_n = k ~ N(mu_k, tau^-1 I_2)    S_n | Z_n = k ~ Poisson(lam_k)

with ``q(Z_n) = Cat(r_n)``, ``q(lam_k) = Gamma(a_k, b_k)``, ``q(mu_k) = N(m_k, s_k^-1 I_2)``.

Learned mixture weights (an extension of MODEL.md): give the prior a Dirichlet
``concentration`` ``c`` instead of fixed ``pi``; then ``pi ~ Dir(c)`` and
``q(pi) = Dir(g)``. Everything where ``log pi_k`` appeared takes
``E[log pi_k] = psi(g_k) - psi(sum_j g_j)``; the coordinate update, by the same argument as
for ``q(lam)`` (``log q*(pi) = sum_k (c_k + sum_n r_nk - 1) log pi_k + const``), is
``g_k = c_k + sum_n r_nk``; and the ELBO gains
``E[log p(pi)] = log Gamma(sum c) - sum log Gamma(c_k) + sum (c_k - 1) E[log pi_k]`` and the
entropy ``H[q(pi)] = -log Gamma(sum g) + sum log Gamma(g_k) - sum (g_k - 1) E[log pi_k]``.

Learned per-cluster location precisions (an extension of MODEL.md): give the prior a Gamma
``tau_shape`` ``c0`` and ``tau_rate`` ``d0`` instead of the fixed ``tau``; then::

    tau_k ~ Gamma(c0, d0)    X_n | Z_n = k ~ N(mu_k, tau_k^-1 I_2)    q(tau_k) = Gamma(c_k, d_k)

with ``mu_k ~ N(nu, rho^-1 I_2)`` independent of ``tau_k`` (not a Normal-Gamma prior). Write
``N_k = sum_n r_nk``, ``E[tau_k] = c_k/d_k``, ``E[log tau_k] = psi(c_k) - log d_k =
log(c_k/d_k) + f(c_k)`` and ``Q_k(m) = sum_n r_nk ||X_n - m||^2``. Where MODEL.md has
``log tau`` and ``tau``, the expectations ``E[log tau_k]`` and ``E[tau_k]`` appear:

- the log-joint expectation of event ``n`` in cluster ``k`` (the ``q(Z)`` update and the
  data part of the ELBO; the 2-D Gaussian's normaliser is ``tau_k / (2 pi)``)::

      L_nk = E[log pi_k] + E[log tau_k] - log(2 pi) - E[tau_k]/2 (||X_n - m_k||^2 + 2/s_k)
             + S_n (psi(a_k) - log b_k) - a_k/b_k - log Gamma(S_n + 1)

- ``q(mu_k)``: ``log q*(mu_k) = -rho/2 ||mu_k - nu||^2 - E[tau_k]/2 Q_k(mu_k) + const``, so
  ``s_k = rho + E[tau_k] N_k`` and ``m_k = nu + E[tau_k] sum_n r_nk (X_n - nu) / s_k``;
- ``q(tau_k)``: ``log q*(tau_k) = (c0 - 1) log tau_k - d0 tau_k + sum_n r_nk [log tau_k -
  tau_k/2 E||X_n - mu_k||^2] + const`` (each event contributes ``2/2 = 1`` to the shape:
  two coordinates, each with ``log tau_k / 2``), a Gamma density with::

      c_k = c0 + N_k        d_k = d0 + (Q_k(m_k) + 2 N_k / s_k) / 2

- the ELBO gains, for each cluster, the prior and entropy terms
  ``E[log p(tau_k)] = c0 log d0 - log Gamma(c0) + (c0 - 1) E[log tau_k] - d0 E[tau_k]`` and
  ``H[q(tau_k)] = c_k - log d_k + log Gamma(c_k) + (1 - c_k) psi(c_k)``, the latter in the
  form of ``H[q(lam_k)]`` below (``log(2 pi)/2 + log(c_k)/2 - log d_k + R(c_k) + (1 - c_k)
  f(c_k)``).

``q(mu_k)`` depends on ``q(tau_k)`` and ``q(tau_k)`` on ``q(mu_k)``, so the global update is
sequential: ``q(lam)``, ``q(pi)`` and ``q(mu)`` from ``r`` (``q(mu)`` with the current
``E[tau]``), then ``q(tau)`` from ``r`` and the new ``q(mu)``. Each is the exact maximiser of
its block given the rest, so the ELBO never decreases. With a fixed ``tau`` every formula
holds with ``E[tau_k] = tau``, ``E[log tau_k] = log tau`` and no ``q(tau)`` terms.

``Q_k(m_k)`` in float32. Expanded about a common centre, ``Q_k(m) = sum r ||X - nu||^2 -
2 (m - nu).sum r (X - nu) + N_k ||m - nu||^2`` cancels terms of the order of the squared
distance to ``nu`` (``1e10`` for events ``1e5`` from it in clusters of spread 1: no digit of
the result is left). The statistics are instead taken about the means ``m'_k`` of the
``q(mu)`` the responsibilities came from, from differences formed event by event:
``T_k = sum_n r_nk (X_n - m'_k)`` and ``U_k = Q_k(m'_k)`` (:class:`Statistics`
``residual_sums`` and ``squared_residuals``); with the step ``D_k = m_k - m'_k`` of the
update of ``q(mu)``::

    Q_k(m_k) = U_k - 2 D_k.T_k + N_k ||D_k||^2 = U_k + D_k.(N_k D_k - 2 T_k)

exactly. What cancels is now of the order of ``N_k ||D_k||^2``: at a fixed point ``D_k = 0``
and ``Q_k(m_k) = U_k`` to float32 resolution; a step of ``d`` cluster spreads costs about
``d^2`` ulps of ``Q_k``, and since ``d_k`` is a maximiser an error ``delta`` in it lowers the
ELBO only by order ``c_k delta^2``. (A second pass over the events with the new means would
be exact, but costs a pass, and stochastic VI's minibatch statistics cannot make one.)

The ELBO in float32. Written as in MODEL.md, the ELBO at strengths of ``1e9`` adds per
event terms of order ``S log S ~ 2e10`` that cancel to order one (``S E[log lam] - E[lam]
- log Gamma(S + 1)``), and the Gamma entropy cancels terms of order ``a log a``; float32
keeps no digit of the result. The code computes the same quantities, exactly, as sums of
parts that are each small, with the functions of :mod:`vijax.cavi._numerics`::

    f(x)    = psi(x) - log x                                    (= -1/(2x) - ...)
    R(x)    = log Gamma(x) - (x - 1/2) log x + x - log(2 pi)/2  (= 1/(12x) - ...)
    h(S)    = log Gamma(S + 1) - S log S + S                    (= log(2 pi S)/2 + R(S); h(0) = 0)
    g(S, l) = S log(l / S) + S - l                              (<= 0; g(0, l) = -l)

and ``lam_k = a_k / b_k``, so that ``E[lam_k] = lam_k`` and ``E[log lam_k] = log lam_k +
f(a_k)``:

- the log-joint expectation of event ``n`` in cluster ``k`` is, since
  ``S f(a) + g(S, a/b) - h(S) = S (psi(a) - log b) - a/b - log Gamma(S + 1)``,

      L_nk = o_n + E[log pi_k] + E[log tau_k] - E[tau_k]/2 (||X_n - m_k||^2 + 2/s_k)
             + S_n f(a_k) + g(S_n, lam_k)
      o_n  = -log(2 pi) - h(S_n)

- ``H[q(lam_k)] = a - log b + log Gamma(a) + (1 - a) psi(a)
  = log(2 pi)/2 + log(a)/2 - log b + R(a) + (1 - a) f(a)``;
- with ``G = sum_k g_k``, ``E[log pi_k] = log(g_k / G) + f(g_k) - f(G)`` and
  ``H[q(pi)] = sum_k [log(g_k)/2 + R(g_k) - (g_k - 1)(f(g_k) - f(G))] - (K - 1/2) log G
  + (K - 1) log(2 pi)/2 - R(G)`` (the ``g log g`` parts of the ``log Gamma`` cancel).

:func:`elbo` evaluates ``L_nk`` in this form. The update of ``q(Z)`` needs only differences
of ``L_nk`` over ``k``, and ``g`` costs a logarithm per event and cluster, so
:func:`assignment_logits` centres each event's logits instead. Let ``2^e`` be a power of two
near the largest strength (``max S / 2^e`` in ``[1/4, 1/2)``), ``l_n`` be ``log(S_n / 2^e)``
rounded to the working dtype (0 when ``S_n = 0``), and write ``E[log lam_k] - e log 2 = E_k +
E'_k`` and ``lam_k = v_k + v'_k`` as two floats each, the second holding what the first
rounds away (logarithms of order one are so carried to about ``1e-15``). Then::

    C_nk = E[log pi_k] + E[log tau_k] - E[tau_k]/s_k - v'_k - E[tau_k]/2 ||X_n - m_k||^2
           + S_n (E_k - l_n) - (v_k - S_n) + S_n E'_k
    L_nk = C_nk + c_n,    c_n = o_n - S_n (log(S_n / 2^e) - l_n)     (EventTerms.constant)

``c_n`` does not depend on ``k``, so ``softmax_k C_nk = softmax_k L_nk``. Every
intermediate is of order ``|lam_k - S_n|``, not ``S_n log S_n``, and the product that could
round at that order is exact: ``E_k - l_n`` and ``v_k - S_n`` are exact differences
(Sterbenz), and for the clusters whose rate is within ``2^-12`` of ``S_n``, ``E_k - l_n`` has
at most 12 significant bits, so with ``S_n = S_hi + S_lo`` split into halves of 12 bits both
``S_hi (E_k - l_n)`` and ``S_lo (E_k - l_n)`` are exact. The ELBO at ``r_n = softmax(C_n)``
is ``sum_n [logsumexp_k C_nk + c_n]`` plus the global terms (:func:`assign_with_elbo`).

Sums over events (:func:`statistics`) are taken in blocks of at most :data:`SUM_BLOCK`
events and then over the blocks, and the updates of ``q(mu)`` sum locations around the prior
mean, ``m_k = nu + tau sum_n r_nk (X_n - nu) / s_k`` (the same number), so that sums over
``1e6`` events of strengths ``1e9`` or of locations ``1e5`` from the origin keep about float32
resolution.

Every public function here is pure and traceable (``jit``, ``vmap``, ``grad``); those that
pass over the events run a jit-compiled core (listed in ``COMPILED``). Each checks the
structure of its arguments (types, shapes, dtypes) at its top, before anything is traced;
those checks read no values, so they cost nothing under ``jit``. Values are checked where
data enter (:func:`vijax.cavi.init`, ``fit``, ``predict``, ``as_observations``,
``as_prior``). Sums over events are weighted by ``Observations.weights`` (1 for an event, 0
for padding), so that the data axis can be padded (to a multiple of the device count, or of
the blocks of :func:`statistics`) and sharded without changing any sum.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from vijax.cavi import _validate
from vijax.cavi._numerics import (
    HALF_LOG_2PI,
    LOG_2PI,
    digamma_minus_log,
    divide_hilo,
    log_factorial_remainder,
    log_hilo,
    poisson_deviance,
    split_float32,
    stirling_remainder,
    times_power_of_two,
    two_sum,
)
from vijax.cavi._types import EventTerms, Observations, Params, Prior, Statistics

Array = jax.Array

__all__ = ["LOG_2PI", "SUM_BLOCK", "EventTerms", "Observations", "Params", "Prior",
           "Statistics", "sum_blocks"]

# Sums over more events than this are taken in blocks of at most this many, then over the
# blocks: the rounding error of a float32 sum grows with the length of its sequential runs,
# and sums over 1e6 events of strengths 1e9 or locations 1e5 otherwise lose 1e-6 of their
# value, enough to put a float32 fit's fixed point 5e-5 of the ELBO below float64's. (Few,
# large blocks: a batched product runs one call per block.)
SUM_BLOCK = 16384


def sum_blocks(num_events: int) -> int:
    """How many blocks :func:`statistics` sums ``num_events`` events in: ``ceil(N /
    SUM_BLOCK)`` when that divides ``N`` (:func:`vijax.cavi.fit` pads the events so), else 1."""
    blocks = -(-num_events // SUM_BLOCK)
    return blocks if blocks > 1 and num_events % blocks == 0 else 1


# ------------------------------------------------------------------- per-event quantities


def event_weights(data: Observations) -> Array:
    """``(N,)`` the events' weights: ``data.weights``, or ones when it is None."""
    _validate.data_structure(data)
    if data.weights is None:
        return jnp.ones(data.strengths.shape, data.locations.dtype)
    return data.weights


def event_terms(data: Observations, prior: Prior) -> EventTerms:
    """The per-event quantities of the ELBO (:class:`EventTerms`): ``l_n``, ``log(S_n / 2^e)``
    in the working dtype, ``c_n = o_n - S_n (log(S_n / 2^e) - l_n)`` and ``e``. They depend
    on ``data`` only (``prior`` is checked, not read: ``log tau`` is a per-cluster term).

    They do not change during a fit, so :func:`fit` computes them once and passes them to
    every :func:`sweep`.
    """
    _validate.data_structure(data)
    _validate.prior_structure(prior)
    return _event_terms(data, prior)


@jax.jit
def _event_terms(data: Observations, prior: Prior) -> EventTerms:
    x = data.locations
    s = data.strengths.astype(x.dtype)
    # max S / 2^e in [1/4, 1/2) (frexp's mantissa is in [1/2, 1)); e = 1 when all S are 0.
    exponent = jnp.frexp(jnp.max(s))[1].astype(jnp.int32) + 1
    positive = s > 0
    hi, lo = log_hilo(jnp.where(positive, times_power_of_two(s, -exponent), 1.0))
    offset = -LOG_2PI - log_factorial_remainder(s)
    return EventTerms(jnp.where(positive, hi, 0.0), offset - jnp.where(positive, s * lo, 0.0),
                      exponent)


# ----------------------------------------------------------------- per-cluster quantities


def expected_log_weights(prior: Prior, params: Params) -> Array:
    """``E[log pi_k]``: ``log pi_k`` when fixed, ``log(g_k/G) + f(g_k) - f(G)``
    (``= psi(g_k) - psi(G)``, ``G = sum g``) when learned."""
    return _weights(prior, params)[0]


def _weights(prior: Prior, params: Params) -> tuple[Array, Array | None, Array | None]:
    """``E[log pi_k]`` and, when learned, ``f(g_k)`` and ``f(G)``."""
    num_clusters = params.gamma_shape.shape[-1]
    if params.concentration is not None:
        g = params.concentration
        total = jnp.sum(g, axis=-1, keepdims=True)
        f_g, f_total = digamma_minus_log(g), digamma_minus_log(total)
        return jnp.log(g / total) + f_g - f_total, f_g, f_total
    if prior.pi is None:
        log_pi = jnp.full((num_clusters,), -jnp.log(num_clusters), params.gamma_shape.dtype)
    else:
        log_pi = jnp.log(jnp.asarray(prior.pi, params.gamma_shape.dtype))
    return log_pi, None, None


def _expected_tau(prior: Prior, params: Params) -> Array:
    """``E[tau_k]`` ``(K,)`` when learned; the fixed ``tau`` (a scalar) otherwise."""
    if params.tau_shape is None:
        return jnp.asarray(prior.tau, params.gamma_shape.dtype)
    return params.tau_shape / params.tau_rate


def _gamma_log_prior(shape0: Array, rate0: Array, mean: Array, log_mean: Array) -> Array:
    """``E[log Gamma(x; shape0, rate0)] = shape0 log rate0 - log Gamma(shape0)
    + (shape0 - 1) E[log x] - rate0 E[x]`` from ``E[x]`` and ``E[log x]``."""
    return shape0 * jnp.log(rate0) - gammaln(shape0) + (shape0 - 1.0) * log_mean - rate0 * mean


def _gamma_entropy(shape: Array, rate: Array, shape_term: Array) -> Array:
    """``H[Gamma(a, b)] = a - log b + log Gamma(a) + (1 - a) psi(a)``, as
    ``log(2 pi)/2 + log(a)/2 - log b + R(a) + (1 - a) f(a)`` (``shape_term`` = ``f(a)``), whose
    parts are all small (module docstring)."""
    return (HALF_LOG_2PI + 0.5 * jnp.log(shape) - jnp.log(rate) + stirling_remainder(shape)
            + (1.0 - shape) * shape_term)


class _Clusters(NamedTuple):
    """Per-cluster quantities of ``L_nk`` (module docstring) and the global ELBO terms,
    computed together so that each special function is evaluated once."""

    constant: Array  # E[log pi_k] + E[log tau_k] - E[tau_k]/s_k
    tau: Array  # E[tau_k], (K,)
    shape_term: Array  # f(a_k)
    rate: Array  # lam_k = rate + rate_error
    rate_error: Array
    log_rate: Array  # E[log lam_k] - e log 2 = log_rate + log_rate_error
    log_rate_error: Array
    global_terms: Array  # global_terms(prior, params)


def _clusters(prior: Prior, params: Params, scale_exponent: Array | int = 0) -> _Clusters:
    dtype = params.gamma_shape.dtype
    k = params.gamma_shape.shape[-1]
    a, b, m, s = params.gamma_shape, params.gamma_rate, params.mean, params.precision
    tau = jnp.broadcast_to(_expected_tau(prior, params), (k,))
    rate, rate_error = divide_hilo(a, b)
    shape_term = digamma_minus_log(a)
    # log(lam / 2^e): the division by a power of two is exact; log(l + l') = log l + l'/l
    # to within (l'/l)^2 / 2 < 1e-14.
    log_hi, log_lo = log_hilo(times_power_of_two(rate, -jnp.asarray(scale_exponent, jnp.int32)))
    log_rate, log_rate_error = two_sum(log_hi, (log_lo + rate_error / rate) + shape_term)
    e_log_pi, f_g, f_total = _weights(prior, params)

    # The global terms: priors and entropies, the entropies in the forms of the docstring.
    nu = jnp.asarray(prior.nu, dtype)
    rho, alpha, beta = prior.rho, prior.alpha, prior.beta
    e_log_rate = jnp.log(rate) + shape_term
    log_p_mu = (jnp.log(rho) - LOG_2PI
                - 0.5 * rho * (jnp.sum((m - nu) ** 2, axis=-1) + 2.0 / s))
    log_p_lam = _gamma_log_prior(alpha, beta, rate, e_log_rate)
    entropy_mu = 1.0 + LOG_2PI - jnp.log(s)
    entropy_lam = _gamma_entropy(a, b, shape_term)
    total = jnp.sum(log_p_mu + log_p_lam + entropy_mu + entropy_lam)
    if params.tau_shape is None:
        e_log_tau = jnp.log(tau)
    else:
        c_tau, d_tau = params.tau_shape, params.tau_rate
        f_tau = digamma_minus_log(c_tau)
        e_log_tau = jnp.log(tau) + f_tau
        total = total + jnp.sum(
            _gamma_log_prior(prior.tau_shape, prior.tau_rate, tau, e_log_tau)
            + _gamma_entropy(c_tau, d_tau, f_tau))
    if params.concentration is not None:
        g = params.concentration
        c = jnp.broadcast_to(jnp.asarray(prior.concentration, dtype), g.shape)
        log_p_pi = gammaln(jnp.sum(c)) - jnp.sum(gammaln(c)) + jnp.sum((c - 1.0) * e_log_pi)
        big_g = jnp.sum(g)
        entropy_pi = (jnp.sum(0.5 * jnp.log(g) + stirling_remainder(g)
                              - (g - 1.0) * (f_g - f_total))
                      - (k - 0.5) * jnp.log(big_g) + (k - 1) * HALF_LOG_2PI
                      - stirling_remainder(big_g))
        total = total + log_p_pi + entropy_pi
    constant = e_log_pi + e_log_tau - tau / s
    return _Clusters(constant, tau, shape_term, rate, rate_error, log_rate, log_rate_error, total)


# ------------------------------------------------------------------------------- q(Z)


def _split_strengths(s: Array) -> tuple[Array, Array]:
    """``S = S_hi + S_lo`` with 12 significant bits in each half (float32), so that products
    with a 12-bit factor are exact; ``(S, 0)`` in float64, which needs no split."""
    if s.dtype == jnp.float64:
        return s, jnp.zeros_like(s)
    return split_float32(s)


def _centred_logits(data: Observations, prior: Prior, params: Params, events: EventTerms,
                    c: _Clusters) -> Array:
    """``C_nk`` of the module docstring (``c`` from :func:`_clusters` at
    ``events.scale_exponent``)."""
    x = data.locations
    s = data.strengths.astype(x.dtype)
    s_hi, s_lo = _split_strengths(s)
    # Two (N, K) planes rather than an (N, K, 2) block: the size-2 axis vectorises badly.
    # Differences, not an expanded square, keep locations far from the origin exact.
    dx = x[:, 0:1] - params.mean[None, :, 0]
    dy = x[:, 1:2] - params.mean[None, :, 1]
    log_ratio = c.log_rate[None, :] - events.log_strength[:, None]  # exact
    rate_gap = c.rate[None, :] - s[:, None]  # exact where it matters
    poisson = (((s_hi[:, None] * log_ratio - rate_gap) + s_lo[:, None] * log_ratio)
               + s[:, None] * c.log_rate_error[None, :])
    return ((c.constant - c.rate_error)[None, :] - 0.5 * c.tau[None, :] * (dx * dx + dy * dy)
            + poisson)


def assignment_logits(data: Observations, prior: Prior, params: Params,
                      include_event_terms: bool = True,
                      events: EventTerms | None = None) -> Array:
    """``(N, K)`` log-joint expectations ``L_nk = E_q[log p(Z_n = k, X_n, S_n | mu, lam)]``.

    These are the unnormalised ``log r_nk`` of MODEL.md with every constant kept::

        L_nk = E[log pi_k] + log tau - log(2 pi) - tau/2 (||X_n - m_k||^2 + 2/s_k)
               + S_n (psi(a_k) - log b_k) - a_k/b_k - log Gamma(S_n + 1)

    (with learned precisions ``E[log tau_k]`` and ``E[tau_k]`` in place of ``log tau`` and
    ``tau``)
    so that ``r_n = softmax(L_n)`` and ``sum_n logsumexp_k L_nk`` is the data part of the
    ELBO at that ``r``. They are computed as ``C_nk + c_n`` (module docstring), accurately
    in float32 at any strength. With ``include_event_terms=False`` the per-event constant
    ``c_n`` is left out: the centred logits ``C_nk``, with the same softmax. ``events``
    (:func:`event_terms`) may be passed in when known.
    """
    n, _ = _validate.model_inputs(data, prior, params, responsibilities=False)
    _validate.events_structure(events, n)
    include_event_terms = _validate.flag("include_event_terms", include_event_terms)
    return _assignment_logits(data, prior, _globals(params), events,
                              include_event_terms=include_event_terms)


@partial(jax.jit, static_argnames=("include_event_terms",))
def _assignment_logits(data, prior, params, events, *, include_event_terms):
    if events is None:
        events = _event_terms(data, prior)
    logits = _centred_logits(data, prior, params, events,
                             _clusters(prior, params, events.scale_exponent))
    if include_event_terms:
        logits = logits + events.constant[:, None]
    return logits


def responsibilities(data: Observations, prior: Prior, params: Params,
                     events: EventTerms | None = None) -> Array:
    """``(N, K)`` ``q(Z_n)`` for the events in ``data`` under the global factors of ``params``.

    This is the ``q(Z)`` update; applied to new events it gives their cluster probabilities.
    """
    n, _ = _validate.model_inputs(data, prior, params, responsibilities=False)
    _validate.events_structure(events, n)
    return _responsibilities(data, prior, _globals(params), events)


@jax.jit
def _responsibilities(data, prior, params, events):
    logits = _assignment_logits(data, prior, params, events, include_event_terms=False)
    return jax.nn.softmax(logits, axis=-1)


def update_assignments(data: Observations, prior: Prior, params: Params) -> Params:
    """The exact maximiser of the ELBO in ``q(Z)``: ``r_n = softmax_k(L_nk)``."""
    _validate.model_inputs(data, prior, params, responsibilities=False)
    r = _responsibilities(data, prior, _globals(params), None)
    return params._replace(responsibilities=r)


def _globals(params: Params) -> Params:
    """``params`` without the responsibilities, for the functions that do not read them
    (so that compiled code does not depend on them)."""
    return params._replace(responsibilities=None)


# ----------------------------------------------------------------- the global updates


def statistics(data: Observations, responsibilities: Array,
               means: Array | None = None) -> Statistics:
    """Weighted sufficient statistics of ``responsibilities`` ``(N, K)``.

    With ``means`` ``(K, 2)`` (the centres ``m'_k`` of ``q(mu)`` for learned precisions),
    also ``residual_sums`` and ``squared_residuals`` about them. Over more than
    :data:`SUM_BLOCK` events the sums are taken per block of events and then over the blocks
    (:func:`sum_blocks`), which keeps them to about float32 resolution at ``N = 1e6``.
    """
    n = _validate.data_structure(data)
    (_, k) = _validate.array("responsibilities", responsibilities, (n, None))
    if means is not None:
        _validate.array("means", means, (k, 2))
    return _statistics(data, responsibilities, jnp.zeros(2, data.locations.dtype), means)


def _block_sum(x: Array) -> Array:
    """``sum`` over axis 0 of ``(N, ...)``, per block of :func:`sum_blocks` then over the
    blocks."""
    n = x.shape[0]
    blocks = sum_blocks(n)
    if blocks > 1:
        return jnp.sum(jnp.sum(x.reshape(blocks, n // blocks, *x.shape[1:]), axis=1), axis=0)
    return jnp.sum(x, axis=0)


@jax.jit
def _statistics(data: Observations, responsibilities: Array, centre: Array,
                means: Array | None = None) -> Statistics:
    """:func:`statistics`, with ``location_sums`` ``sum_n r_nk (X_n - centre)``."""
    x = data.locations - centre
    n = x.shape[0]
    w = event_weights(data)
    # One product with the rows [1, S_n, X_n1, X_n2]: a single pass over r, faster on CPU
    # than separate reductions. HIGHEST: on GPUs a float32 product otherwise uses TF32.
    features = jnp.concatenate(
        [w[:, None], (w * data.strengths.astype(x.dtype))[:, None], w[:, None] * x], axis=1)
    highest = jax.lax.Precision.HIGHEST
    blocks = sum_blocks(n)
    if blocks > 1:
        size, k = n // blocks, responsibilities.shape[-1]
        sums = jnp.sum(jnp.einsum("bnf,bnk->bfk", features.reshape(blocks, size, 4),
                                  responsibilities.reshape(blocks, size, k),
                                  precision=highest), axis=0)
    else:
        sums = jnp.matmul(features.T, responsibilities, precision=highest)
    stats = Statistics(counts=sums[0], strength_sums=sums[1], location_sums=sums[2:].T)
    if means is None:
        return stats
    # Residuals about each cluster's own centre, formed event by event (module docstring).
    dx = data.locations[:, 0:1] - means[None, :, 0]
    dy = data.locations[:, 1:2] - means[None, :, 1]
    wr = w[:, None] * responsibilities
    residuals = _block_sum(jnp.stack([wr * dx, wr * dy, wr * (dx * dx + dy * dy)], axis=1))
    return stats._replace(residual_sums=residuals[0:2].T, squared_residuals=residuals[2])


def rates_from_statistics(prior: Prior, stats: Statistics) -> tuple[Array, Array]:
    """``a_k = alpha + sum_n r_nk S_n``, ``b_k = beta + sum_n r_nk``."""
    return prior.alpha + stats.strength_sums, prior.beta + stats.counts


def _locations_around_nu(prior: Prior, stats: Statistics, tau: Array) -> tuple[Array, Array]:
    """The ``q(mu)`` update ``s_k = rho + tau N_k``, ``m_k = (rho nu + tau sum_n r_nk X_n) / s_k``
    from location sums taken around ``nu`` (``sum_n r_nk (X_n - nu)``):
    ``m_k = nu + tau sum_n r_nk (X_n - nu) / s_k``, the same number, but accurate where the
    locations are far from the origin and near ``nu``.
    ``tau``: :func:`_expected_tau` (a scalar when fixed, ``(K,)`` when learned)."""
    dtype = stats.location_sums.dtype
    nu = jnp.asarray(prior.nu, dtype)
    precision = prior.rho + tau * stats.counts
    return (nu[None, :] + jnp.reshape(tau, (-1, 1)) * stats.location_sums / precision[:, None],
            precision)


def precisions_from_statistics(prior: Prior, stats: Statistics, mean: Array, precision: Array,
                               centres: Array) -> tuple[Array, Array]:
    """``c_k = c0 + N_k``, ``d_k = d0 + (Q_k(m_k) + 2 N_k / s_k) / 2`` (learned precisions).

    ``mean`` ``m_k`` and ``precision`` ``s_k`` are those of ``q(mu)``; ``stats`` holds the
    residual sums about ``centres`` ``m'_k`` (:func:`statistics` with ``means=centres``), and
    ``Q_k(m_k) = U_k + D_k.(N_k D_k - 2 T_k)`` with ``D_k = m_k - m'_k`` (module docstring).
    """
    counts = stats.counts
    step = mean - centres
    squared = stats.squared_residuals + jnp.sum(
        step * (counts[:, None] * step - 2.0 * stats.residual_sums), axis=-1)
    squared = jnp.maximum(squared, 0.0)  # a sum of squares; rounding must not make it < 0
    return prior.tau_shape + counts, prior.tau_rate + 0.5 * squared + counts / precision


def weights_from_statistics(prior: Prior, stats: Statistics) -> Array:
    """``g_k = c_k + sum_n r_nk`` (learned weights only)."""
    return prior.concentration + stats.counts


def _nu(prior: Prior, data: Observations) -> Array:
    return jnp.asarray(prior.nu, data.locations.dtype)


def update_rates(data: Observations, prior: Prior, params: Params) -> Params:
    """The exact maximiser of the ELBO in ``q(lam)``."""
    _validate.model_inputs(data, prior, params, responsibilities=True)
    stats = _statistics(data, params.responsibilities, _nu(prior, data))
    shape, rate = rates_from_statistics(prior, stats)
    return params._replace(gamma_shape=shape, gamma_rate=rate)


def update_locations(data: Observations, prior: Prior, params: Params) -> Params:
    """The exact maximiser of the ELBO in ``q(mu)`` (given ``E[tau_k]`` when learned)."""
    _validate.model_inputs(data, prior, params, responsibilities=True)
    stats = _statistics(data, params.responsibilities, _nu(prior, data))
    mean, precision = _locations_around_nu(prior, stats, _expected_tau(prior, params))
    return params._replace(mean=mean, precision=precision)


def update_precisions(data: Observations, prior: Prior, params: Params) -> Params:
    """The exact maximiser of the ELBO in ``q(tau)`` given ``r`` and ``q(mu)``; the identity
    when ``tau`` is fixed."""
    _validate.model_inputs(data, prior, params, responsibilities=True)
    if params.tau_shape is None:
        return params
    stats = _statistics(data, params.responsibilities, _nu(prior, data), params.mean)
    shape, rate = precisions_from_statistics(prior, stats, params.mean, params.precision,
                                             params.mean)
    return params._replace(tau_shape=shape, tau_rate=rate)


def update_weights(data: Observations, prior: Prior, params: Params) -> Params:
    """The exact maximiser of the ELBO in ``q(pi)``; the identity when ``pi`` is fixed."""
    _validate.model_inputs(data, prior, params, responsibilities=True)
    if params.concentration is None:
        return params
    g = weights_from_statistics(prior, _statistics(data, params.responsibilities,
                                                   _nu(prior, data)))
    return params._replace(concentration=g)


def update_globals(data: Observations, prior: Prior, params: Params) -> Params:
    """``q(lam)``, ``q(mu)``, ``q(pi)`` and ``q(tau)`` updated from one pass of statistics.

    The first three depend on the data only through ``r``, not on each other, so their order
    is free; with learned precisions ``q(mu)`` uses the current ``E[tau]`` and then ``q(tau)``
    the new ``q(mu)``: each block an exact maximiser given the others.
    """
    _validate.model_inputs(data, prior, params, responsibilities=True)
    return _update_globals(data, prior, params)


@jax.jit
def _update_globals(data: Observations, prior: Prior, params: Params) -> Params:
    means = None if params.tau_shape is None else params.mean
    stats = _statistics(data, params.responsibilities, _nu(prior, data), means)
    return _globals_from_statistics(prior, stats, params)


def _globals_from_statistics(prior: Prior, stats: Statistics, params: Params) -> Params:
    """The global factors' coordinate updates from ``stats`` (location sums taken around
    ``nu``, as :func:`_update_globals` takes them); ``params`` gives the structure (which
    factors are learned). Stochastic VI calls it with minibatch statistics scaled to the
    data set's size.

    With learned precisions the update is sequential: ``q(mu)`` from ``E[tau]`` of
    ``params``, then ``q(tau)`` from the new ``q(mu)``; ``stats`` must then hold the residual
    sums about ``params.mean`` (:func:`statistics` with ``means=params.mean``)."""
    shape, rate = rates_from_statistics(prior, stats)
    mean, precision = _locations_around_nu(prior, stats, _expected_tau(prior, params))
    g = None if params.concentration is None else weights_from_statistics(prior, stats)
    new = params._replace(gamma_shape=shape, gamma_rate=rate, mean=mean, precision=precision,
                          concentration=g)
    if params.tau_shape is None:
        return new
    tau_shape, tau_rate = precisions_from_statistics(prior, stats, mean, precision,
                                                     params.mean)
    return new._replace(tau_shape=tau_shape, tau_rate=tau_rate)


# ------------------------------------------------------------------------------- ELBO


def global_terms(prior: Prior, params: Params) -> Array:
    """The ELBO's terms that involve no event: priors and entropies of the global factors.

    ``sum_k E[log p(mu_k)] + E[log p(lam_k)] + H[q(mu_k)] + H[q(lam_k)]``, plus
    ``E[log p(pi)] + H[q(pi)]`` when the weights are learned and ``sum_k E[log p(tau_k)]
    + H[q(tau_k)]`` when the precisions are; the entropies in the forms of the module
    docstring.
    """
    k = _validate.params_structure(params, responsibilities=False)
    _validate.prior_structure(prior, k)
    _validate.learned_factors_agree(prior, params)
    return _global_terms(prior, _globals(params))


@jax.jit
def _global_terms(prior: Prior, params: Params) -> Array:
    return _clusters(prior, params).global_terms


def elbo(data: Observations, prior: Prior, params: Params) -> Array:
    """The exact ELBO of MODEL.md section 1 at any ``params`` (``r`` need not be optimal).

    ``sum_nk r_nk (L_nk - log r_nk)`` (with ``0 log 0 = 0``) plus :func:`global_terms`,
    with ``L_nk`` in the first form of the module docstring, which loses no precision.
    """
    _validate.model_inputs(data, prior, params, responsibilities=True)
    return _elbo(data, prior, params)


@jax.jit
def _elbo(data: Observations, prior: Prior, params: Params) -> Array:
    x = data.locations
    s = data.strengths.astype(x.dtype)
    c = _clusters(prior, params)
    offset = -LOG_2PI - log_factorial_remainder(s)
    dx = x[:, 0:1] - params.mean[None, :, 0]
    dy = x[:, 1:2] - params.mean[None, :, 1]
    inner = (c.constant[None, :] - 0.5 * c.tau[None, :] * (dx * dx + dy * dy)
             + s[:, None] * c.shape_term[None, :]
             + poisson_deviance(s[:, None], c.rate[None, :], c.rate_error[None, :]))
    r = params.responsibilities
    safe_r = jnp.where(r > 0, r, 1.0)
    per_entry = jnp.where(r > 0, r * (inner - jnp.log(safe_r)), 0.0)
    per_event = jnp.sum(per_entry, axis=-1) + jnp.sum(r, axis=-1) * offset
    return per_event @ event_weights(data) + c.global_terms


def assign_with_elbo(data: Observations, prior: Prior, params: Params,
                     events: EventTerms | None = None) -> tuple[Params, Array]:
    """The ``q(Z)`` update and the exact ELBO at the result, from one pass over the events.

    At ``r_n = softmax(L_n)``, ``sum_k r_nk (L_nk - log r_nk) = logsumexp_k L_nk``, so the
    ELBO needs no second pass: ``sum_n [logsumexp_k C_nk + c_n]`` plus :func:`global_terms`
    (module docstring). ``events`` (:func:`event_terms`) may be passed in when known.
    ``params.responsibilities`` is not read (it may be None).
    """
    n, _ = _validate.model_inputs(data, prior, params, responsibilities=False)
    _validate.events_structure(events, n)
    return _assign_with_elbo(data, prior, _globals(params), events)


@jax.jit
def _assign_with_elbo(data: Observations, prior: Prior, params: Params,
                      events: EventTerms | None) -> tuple[Params, Array]:
    r, scores, global_value = _local_step(data, prior, params, events)
    value = scores @ event_weights(data) + global_value
    return params._replace(responsibilities=r), value


def _local_step(data: Observations, prior: Prior, params: Params,
                events: EventTerms | None) -> tuple[Array, Array, Array]:
    """``r_n = softmax_k C_nk``, each event's score ``logsumexp_k L_nk`` (its ELBO term at
    that ``r_n``) and :func:`global_terms`, from one pass over the events."""
    if events is None:
        events = _event_terms(data, prior)
    c = _clusters(prior, params, events.scale_exponent)
    logits = _centred_logits(data, prior, params, events, c)
    peak = jnp.max(logits, axis=-1, keepdims=True)
    unnormalised = jnp.exp(logits - peak)
    total = jnp.sum(unnormalised, axis=-1, keepdims=True)
    scores = (peak + jnp.log(total))[:, 0] + events.constant
    return unnormalised / total, scores, c.global_terms


@jax.jit
def _event_scores(data: Observations, prior: Prior, params: Params) -> Array:
    return _local_step(data, prior, params, None)[1]


def sweep(data: Observations, prior: Prior, params: Params,
          events: EventTerms | None = None) -> tuple[Params, Array]:
    """One CAVI sweep: the global factors from ``r``, then ``q(Z)``; returns the new ELBO.

    Each block update is an exact coordinate maximiser, so the ELBO never decreases.
    """
    n, _ = _validate.model_inputs(data, prior, params, responsibilities=True)
    _validate.events_structure(events, n)
    return _sweep(data, prior, params, events)


@jax.jit
def _sweep(data: Observations, prior: Prior, params: Params,
           events: EventTerms | None) -> tuple[Params, Array]:
    return _assign_with_elbo(data, prior, _globals(_update_globals(data, prior, params)),
                             events)


# The compiled cores, for tests that check that bad input is refused before compiling.
COMPILED = (_event_terms, _assignment_logits, _responsibilities, _statistics, _event_scores,
            _update_globals, _global_terms, _elbo, _assign_with_elbo, _sweep)
