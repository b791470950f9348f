"""Fitting the earthquake mixture model by CAVI: ``init``, ``fit``, ``predict``, sharding.

``fit`` runs every random restart inside one jit-compiled ``lax.while_loop`` (stopping at
``max_iter`` sweeps or when the relative ELBO change falls below ``tol``), vmaps the
restarts, and keeps the restart with the best final ELBO. The event axis is sharded over
all local devices: the global updates need only sums over events, which XLA turns into
partial sums and one all-reduce.

Several processes (``jax.distributed.initialize`` before any other JAX call; README, "Several
processes or hosts"): when ``jax.process_count() > 1``, :func:`fit` and :func:`init` take
``data`` as this process's own events. Each process's events, padded with zero-weight events
to a common count, become its rows of global arrays sharded over every process's devices,
and the same jitted code runs: the global updates are the same sums, all-reduced across
processes. The random initialisation draws its seed events over the events in the order of
their concatenation over processes (``process 0``'s, then ``process 1``'s, ...), so the same
key gives the same seeds, and the fit equals a single-process fit on the concatenation within
float rounding. The globals, ELBOs and histories are the same on every process; the
``responsibilities`` are this process's events' rows. Every process must pass the same key
and settings: the integers, ``tol``, the prior and ``init_params`` (checked, by a digest of
their values); ``num_clusters`` is bounded by the events of all the processes together.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vijax import _checks, _distributed
from vijax.cavi import _validate
from vijax.cavi._validate import as_observations, as_prior
from vijax.cavi.model import (
    SUM_BLOCK,
    Observations,
    Params,
    Prior,
    _assign_with_elbo,
    _event_scores,
    _event_terms,
    _responsibilities,
    _update_globals,
    event_weights,
    sum_blocks,
)

__all__ = ["FitResult", "as_observations", "as_prior", "event_scores", "fit", "init", "predict",
           "predict_labels", "shard_events"]

Array = jax.Array


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the best restart's variational parameters (``responsibilities`` ``(N, K)``).
        elbo: the best restart's final ELBO.
        restart_elbos: ``(R,)`` every restart's final ELBO.
        elbo_history: ``(R, max_iter + 1)``: entry ``t`` is the ELBO after ``t`` sweeps
            (entry 0 after initialisation); NaN after the restart stopped.
        num_iters: ``(R,)`` sweeps each restart ran.
        converged: ``(R,)`` whether the relative ELBO change fell below ``tol``.
        best_restart: index of the restart kept.
    """

    params: Params
    elbo: Array
    restart_elbos: Array
    elbo_history: Array
    num_iters: Array
    converged: Array
    best_restart: Array

    @property
    def labels(self) -> Array:
        """``(N,)`` hard cluster labels: each event's most probable cluster under ``q(Z)``
        (``argmax_k r_nk``, the first on ties)."""
        return jnp.argmax(self.params.responsibilities, axis=-1)


def float_dtype() -> jnp.dtype:
    """float32 by default, float64 when ``jax_enable_x64`` is on."""
    return _validate.working_dtype()


# ------------------------------------------------------------------------------- init


def init(key: Array, data: Any, prior: Prior, num_clusters: int) -> tuple[Params, Array]:
    """Initial variational parameters and their ELBO.

    The centres ``m_k`` are ``K`` distinct events drawn at random (zero-weight events
    excluded; the draw does not depend on padding at the end of the events); each
    cluster starts as if it held ``N/K`` events like its seed: ``s_k = rho + tau N/K``,
    ``a_k = alpha + (N/K) S_seed``, ``b_k = beta + N/K`` (and ``g_k = c_k + N/K``; with
    learned precisions ``c_k = c0 + N/K`` and ``d_k = d0 (1 + (N/K) / c0)``, so that
    ``E[tau_k]`` is the prior mean ``c0 / d0``, which then replaces ``tau`` in ``s_k``). Then
    ``q(Z)`` is updated, so the state is a proper point of the coordinate ascent.

    Several processes: ``data`` is this process's events; the seeds are drawn over all
    processes' events as in :func:`fit` (the same as :func:`init` on their concatenation),
    and the responsibilities returned are this process's events' rows.

    Args:
        key: PRNG key.
        data: events, in any form :func:`fit` accepts.
        prior: :class:`Prior`.
        num_clusters: ``K``, ``1 <= K <= N``.

    Returns:
        ``(params, elbo)``, in the working dtype.

    Raises:
        ValueError: naming the argument, for bad input, before anything is compiled.
    """
    raw, num_clusters = _distributed.agree(
        lambda: _checked_inputs(key, data, prior, num_clusters))
    obs, prior = _validate.to_observations(raw), _validate.to_prior(prior, num_clusters)
    if not _distributed.multiprocess():
        return _init(key, obs, prior, num_clusters=num_clusters)
    _check_settings(raw, key=key, num_clusters=num_clusters, prior=prior)
    events = _global_events(obs)
    key, prior = _replicated_inputs(events.mesh, key, prior)
    params, value = _init(key, events.data, prior, events.order, num_clusters=num_clusters)
    return _local_result(events, (params, value))


def _checked_inputs(key: Any, data: Any, prior: Any, num_clusters: Any) -> tuple[Any, int]:
    """The checks :func:`init` and :func:`fit` share: one key, the events, ``K`` and the
    prior; returns the checked events and ``K``."""
    _checks.check_key("key", key)
    raw = _validate.check_observations(data)
    k = _num_clusters(num_clusters, raw)
    _validate.check_prior(prior, k)
    return raw, k


@partial(jax.jit, static_argnames=("num_clusters",))
def _init(key: Array, data: Observations, prior: Prior, order: Array | None = None, *,
          num_clusters: int) -> tuple[Params, Array]:
    globals0 = _initial_globals(key, _in_order(data, order), prior, num_clusters)
    return _assign_with_elbo(data, prior, globals0, None)


def _in_order(data: Observations, order: Array | None) -> Observations:
    """The events in the order of their concatenation over processes (rows ``order`` of the
    global arrays, padding left out), for the random initialisation; ``data`` itself when
    ``order`` is None (one process). Gathers ``4 N`` numbers once per fit."""
    if order is None:
        return data
    return jax.tree.map(lambda leaf: leaf[order], data)


def _initial_globals(key: Array, data: Observations, prior: Prior, num_clusters: int) -> Params:
    """The global factors of :func:`init` (``responsibilities`` left None)."""
    x, s = data.locations, data.strengths
    w = event_weights(data)
    # K distinct events, each drawn with probability proportional to its weight (Gumbel top-k,
    # as jax.random.choice(replace=False, p=w / sum w) does), with the noise and the weights
    # in float32 whatever the working dtype, so that a key gives the same seeds in float32 and
    # float64.
    scores = jnp.where(w > 0, jax.random.gumbel(key, w.shape, jnp.float32)
                       + jnp.log(w.astype(jnp.float32)), -jnp.inf)
    seeds = jax.lax.top_k(scores, num_clusters)[1]
    per_cluster = jnp.sum(w) / num_clusters
    ones = jnp.ones((num_clusters,), x.dtype)
    g = (None if prior.concentration is None
         else jnp.broadcast_to(prior.concentration + per_cluster, (num_clusters,)))
    tau, tau_shape, tau_rate = prior.tau, None, None
    if prior.tau_shape is not None:  # E[tau_k] at the prior mean c0 / d0
        tau = prior.tau_shape / prior.tau_rate
        tau_shape = (prior.tau_shape + per_cluster) * ones
        tau_rate = prior.tau_rate * (1.0 + per_cluster / prior.tau_shape) * ones
    return Params(
        responsibilities=None,
        gamma_shape=prior.alpha + per_cluster * s[seeds],
        gamma_rate=(prior.beta + per_cluster) * ones,
        mean=x[seeds],
        precision=(prior.rho + tau * per_cluster) * ones,
        concentration=g,
        tau_shape=tau_shape,
        tau_rate=tau_rate,
    )


def _run(key: Array, data: Observations, prior: Prior, tol: Array, order: Array | None,
         start: Params | None, num_clusters: int,
         max_iter: int) -> tuple[Params, Array, Array, Array, Array]:
    """One restart: :func:`init` (or the global factors ``start``), then sweeps in a
    ``lax.while_loop``.

    The loop carries only the global factors (``K``-sized): each iteration assigns ``q(Z)``
    from them (with the ELBO of that state), then updates them from the new ``r``. The
    ``(N, K)`` responsibilities never cross the loop boundary, so vmapped restarts, whose
    loop selects every carried value per restart, pay no extra pass over them; the final
    ``r`` is assigned once more after the loop. The sequence of states is that of
    :func:`init` followed by :func:`vijax.cavi.model.sweep`. ``order``: as in
    :func:`_in_order`.
    """
    events = _event_terms(data, prior)
    globals0 = (_initial_globals(key, _in_order(data, order), prior, num_clusters)
                if start is None else start)
    dtype = data.locations.dtype
    history = jnp.full((max_iter + 1,), jnp.nan, dtype)

    def cond(carry):
        _, _, _, change, t, _ = carry
        return (t <= max_iter) & (change >= tol)

    def body(carry):
        state, _, value, _, t, history = carry  # state: the globals of state t
        assigned, new_value = _assign_with_elbo(data, prior, state, events)
        change = jnp.where(t == 0, jnp.inf,
                           jnp.abs(new_value - value) / jnp.maximum(jnp.abs(new_value), 1e-30))
        following = _update_globals(data, prior, assigned)._replace(responsibilities=None)
        return following, state, new_value, change, t + 1, history.at[t].set(new_value)

    carry = (globals0, globals0, jnp.asarray(jnp.nan, dtype), jnp.asarray(jnp.inf, dtype),
             jnp.asarray(0), history)
    _, last, value, change, t, history = jax.lax.while_loop(cond, body, carry)
    params = last._replace(responsibilities=_responsibilities(data, prior, last, events))
    return params, value, history, t - 1, change < tol


@partial(jax.jit, static_argnames=("num_clusters", "num_restarts", "max_iter"))
def _fit(key: Array, data: Observations, prior: Prior, tol: Array, order: Array | None = None,
         start: Params | None = None, *, num_clusters: int, num_restarts: int,
         max_iter: int) -> FitResult:
    keys = jax.random.split(key, num_restarts) if num_restarts > 1 else key[None]
    run = partial(_run, data=data, prior=prior, tol=tol, order=order, start=start,
                  num_clusters=num_clusters, max_iter=max_iter)
    params, values, history, iters, converged = jax.vmap(lambda k: run(k))(keys)
    best = jnp.argmax(jnp.where(jnp.isnan(values), -jnp.inf, values))
    best_params = jax.tree.map(lambda leaf: leaf[best], params)
    return FitResult(best_params, values[best], values, history, iters, converged, best)


# --------------------------------------------------------------------------- sharding


def shard_events(data: Observations, devices: list | None = None) -> Observations:
    """Pad the events to a multiple of the device count (weight 0) and shard them.

    With one device, the data come back unpadded and unsharded. One process's devices
    (under several processes, :func:`fit` builds its global arrays itself).
    """
    _validate.data_structure(data)
    devices = _validate.devices(devices)
    n = data.strengths.shape[0]
    weights = event_weights(data)
    if len(devices) == 1:
        return data._replace(weights=weights)
    pad = (-n) % len(devices)
    padded = Observations(
        jnp.pad(data.locations, ((0, pad), (0, 0))),
        jnp.pad(data.strengths, (0, pad)),
        jnp.pad(weights, (0, pad)),
    )
    mesh = Mesh(np.asarray(devices), ("events",))
    return jax.device_put(padded, NamedSharding(mesh, PartitionSpec("events")))


def _pad_for_sums(data: Observations) -> Observations:
    """Pad more than ``SUM_BLOCK`` events with zero-weight events so that they split into
    :func:`vijax.cavi.model.sum_blocks` blocks whose size is a multiple of 16 times the
    device count (odd sizes make the blocked product slow), so that sums over events are
    taken in blocks. Adds fewer than ``16 devices`` events per block."""
    n = data.strengths.shape[0]
    if n <= SUM_BLOCK:
        return data
    pad = _summed_size(n, jax.local_device_count()) - n
    return Observations(jnp.pad(data.locations, ((0, pad), (0, 0))),
                        jnp.pad(data.strengths, (0, pad)),
                        jnp.pad(event_weights(data), (0, pad)))


def _summed_size(n: int, num_devices: int) -> int:
    """The event count :func:`_pad_for_sums` pads ``n > SUM_BLOCK`` events to on
    ``num_devices`` devices (``n`` itself up to ``SUM_BLOCK``)."""
    if n <= SUM_BLOCK:
        return n
    align = 16 * num_devices
    padded = n
    for blocks in range(-(-n // SUM_BLOCK), -(-n // SUM_BLOCK) + 3):
        padded = blocks * align * -(-n // (blocks * align))
        if sum_blocks(padded) == blocks:
            break
    return padded


# ------------------------------------------------------------------- several processes


class _GlobalEvents(NamedTuple):
    """The events of every process as global arrays (several processes)."""

    data: Observations  # sharded over every process's devices, padding of weight 0
    order: Array  # (N,) replicated: the row of each event of the concatenation
    mesh: Mesh
    start: int  # this process's first row
    count: int  # this process's events


def _global_events(obs: Observations) -> _GlobalEvents:
    """This process's events ``obs`` as its rows of global arrays over ``jax.devices()``.

    Every process pads its events with zero-weight events to one count ``L``: the largest
    process's count rounded up to a multiple of the local device count, and more so that the
    ``P L`` rows split into the aligned blocks of :func:`_pad_for_sums`. Each process's rows
    are contiguous, so rows ``start:start + count`` are its events.
    """
    count = int(obs.strengths.shape[0])
    counts = _distributed.allgather(np.int64(count)).reshape(-1)
    processes, local_devices = jax.process_count(), jax.local_device_count()
    rows = -(-int(counts.max()) // local_devices) * local_devices
    rows = _summed_size(processes * rows, jax.device_count()) // processes
    mesh = _distributed.global_mesh("events")
    pad = rows - count
    local = Observations(np.pad(np.asarray(obs.locations), ((0, pad), (0, 0))),
                         np.pad(np.asarray(obs.strengths), (0, pad)),
                         np.pad(np.asarray(event_weights(obs)), (0, pad)))
    data = jax.tree.map(lambda leaf: _distributed.global_rows(mesh, leaf), local)
    starts = _distributed.process_rows(mesh, processes * rows)
    order = np.concatenate([starts[p] + np.arange(counts[p]) for p in range(processes)])
    return _GlobalEvents(data, _distributed.replicated(mesh, order.astype(np.int32)), mesh,
                         int(starts[jax.process_index()]), count)


def _replicated_inputs(mesh: Mesh, key: Array, *rest: Any) -> tuple:
    """``key`` and the host values ``rest`` (prior, tolerance) replicated over ``mesh``."""
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    raw = _distributed.replicated(mesh, np.asarray(jax.random.key_data(key) if typed else key))
    key = jax.random.wrap_key_data(raw, impl=jax.random.key_impl(key)) if typed else raw
    return (key, *_distributed.replicated(mesh, rest))


def _num_clusters(num_clusters: Any, raw: Observations) -> int:
    """``K``: ``1 <= K <= N`` on one process; ``K >= 1`` on each of several processes, whose
    bound, the events of positive weight of every process, :func:`_check_settings` checks."""
    if not _distributed.multiprocess():
        return _validate.num_clusters(num_clusters, raw)
    return _checks.check_int("num_clusters", num_clusters, 1)


def _check_settings(raw: Observations, **settings: Any) -> None:
    """Several processes, after their own checks: ``settings`` (the key as its bits, the
    prior and warm start as converted, the integers and tolerance) must be the same on every
    process (:func:`vijax._distributed.check_same`), and ``num_clusters`` at most the events
    of positive weight of all the processes together. Raises on every process alike."""
    key = settings["key"]
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    settings["key"] = np.asarray(jax.random.key_data(key) if typed else key)
    _distributed.check_same(settings)
    total = int(_distributed.allgather(np.int64(_validate.positive_events(raw))).sum())
    if settings["num_clusters"] > total:
        raise ValueError(f"num_clusters must be <= the {total} events of positive weight of "
                         f"all {jax.process_count()} processes; got "
                         f"{settings['num_clusters']}")


def _local_result(events: _GlobalEvents, result: Any) -> Any:
    """``result`` (holding one :class:`Params`) with its responsibilities cut to this
    process's events' rows and every array made an array of this process."""
    def local(leaf):
        if not isinstance(leaf, Params):
            return leaf
        r = _distributed.local_rows(leaf.responsibilities, events.start,
                                    events.start + events.count)
        return leaf._replace(responsibilities=jax.device_put(r, jax.local_devices()[0]))

    result = jax.tree.map(local, result, is_leaf=lambda leaf: isinstance(leaf, Params))
    return _distributed.to_local(result)


# -------------------------------------------------------------------------------- fit


def fit(key: Array, data: Any, prior: Prior, num_clusters: int, num_restarts: int = 1,
        max_iter: int = 200, tol: float | None = None,
        init_params: Params | None = None) -> FitResult:
    """Fit the mixture by CAVI from ``num_restarts`` random initialisations; keep the best.

    Args:
        key: PRNG key (``jax.random.key(seed)``). Restart ``i`` starts from
            ``split(key, R)[i]``; a single restart uses ``key`` itself, so restart ``i`` of a
            run equals a one-restart fit with ``split(key, R)[i]``.
        data: :class:`Observations`, a ``(locations (N, 2), strengths (N,))`` pair, or
            anything with those two attributes (e.g. ``vijax.data.load_quakes()``).
        prior: :class:`Prior` hyperparameters; ``pi`` of length ``num_clusters`` if given.
        num_clusters: ``K``, ``1 <= K <= N``.
        num_restarts: ``R >= 1`` restarts, run in parallel (vmapped).
        max_iter: at most this many sweeps per restart, ``>= 1``.
        tol: stop a restart when ``|ELBO_t - ELBO_{t-1}| / |ELBO_t| < tol`` (``>= 0``);
            ``tol=0`` always runs ``max_iter`` sweeps (and reports ``converged=False``).
            None (the default) means ``1e-7`` in float64 and ``8 eps = 9.5e-7`` in float32,
            where the ELBO is resolved to about ``1e-7``; a ``tol`` below ``eps`` of the
            working dtype is warned about.
        init_params: a warm start: sweeps start from the global factors of these
            :class:`Params` (e.g. an earlier ``fit(...).params``, on these or other events;
            their responsibilities are not read) instead of a random initialisation; needs
            ``num_restarts=1`` and the prior's learned factors. ``key`` is then not used.

    Returns:
        :class:`FitResult`. Several processes: the same on every process, except
        ``params.responsibilities``, this process's events' rows; all arrays of this
        process (usable without the others).

    Raises:
        ValueError: naming the argument, for bad input, before anything is compiled.
            Several processes: on every process when any process's arguments are bad, or
            when the key or the settings (``num_clusters``, ``num_restarts``, ``max_iter``,
            ``tol``, ``prior``, ``init_params``) differ between processes.
    """
    def check():
        raw, k = _checked_inputs(key, data, prior, num_clusters)
        restarts = _checks.check_int("num_restarts", num_restarts, 1)
        if init_params is not None:
            _check_start(init_params, prior, k, restarts)
        return (raw, k, restarts, _checks.check_int("max_iter", max_iter, 1),
                _validate.tolerance(tol))

    raw, num_clusters, num_restarts, max_iter, tol = _distributed.agree(check)
    obs = _validate.to_observations(raw)
    prior = _validate.to_prior(prior, num_clusters)
    start = None if init_params is None else _global_factors(init_params, obs.locations.dtype)
    n = obs.strengths.shape[0]
    tol = np.asarray(tol, obs.locations.dtype)
    static = {"num_clusters": num_clusters, "num_restarts": num_restarts, "max_iter": max_iter}
    if _distributed.multiprocess():
        _check_settings(raw, key=key, num_clusters=num_clusters, num_restarts=num_restarts,
                        max_iter=max_iter, tol=tol, prior=prior, init_params=start)
        events = _global_events(obs)
        key, prior, tol, start = _replicated_inputs(events.mesh, key, prior, tol, start)
        return _local_result(events, _fit(key, events.data, prior, tol, events.order, start,
                                          **static))
    result = _fit(key, shard_events(_pad_for_sums(obs)), prior, jax.device_put(tol), None,
                  start, **static)
    r = result.params.responsibilities[:n]
    return result._replace(params=result.params._replace(responsibilities=r))


def predict(data: Any, prior: Prior, params: Params) -> Array:
    """``(M, K)`` cluster probabilities ``q(Z)`` of new events under fitted ``params``.

    Args:
        data: new events, in any form :func:`fit` accepts.
        prior: the prior used to fit.
        params: fitted :class:`Params` (e.g. ``fit(...).params``); only the global factors
            are read.

    Several processes: each process predicts its own ``data`` on its own devices, with no
    communication (``fit``'s params are the same on every process and are arrays of it).

    Raises:
        ValueError: naming the argument, for bad input, before anything is compiled.
    """
    return _responsibilities(*_new_events(data, prior, params), None)


def predict_labels(data: Any, prior: Prior, params: Params) -> Array:
    """``(M,)`` hard cluster labels of new events: ``argmax_k`` of :func:`predict` (the
    first on ties); arguments as for :func:`predict`."""
    return jnp.argmax(predict(data, prior, params), axis=-1)


def event_scores(data: Any, prior: Prior, params: Params) -> Array:
    """``(M,)`` each event's contribution to the ELBO under the global factors of ``params``.

    With ``q(Z_n)`` at its optimum given the globals, event ``n`` adds
    ``sum_k r_nk (L_nk - log r_nk) = logsumexp_k L_nk`` to the ELBO (``L_nk`` of
    :func:`vijax.cavi.assignment_logits`, every constant kept), a lower bound on its
    expected log-likelihood ``E_q[log p(X_n, S_n | mu, lam, pi)]`` marginal over ``Z_n``.
    Over the events a fit used, ``sum_n score_n + global_terms(prior, params)`` is the ELBO
    after the last ``q(Z)`` update, so ``fit(...).elbo`` for ``fit``'s params. On new events
    the scores rank how well the fitted model explains them (outliers score low), as
    scikit-learn's ``score_samples``; arguments as for :func:`predict`.

    Raises:
        ValueError: naming the argument, for bad input, before anything is compiled.
    """
    return _event_scores(*_new_events(data, prior, params))


def _new_events(data: Any, prior: Prior, params: Params,
                weighted: bool = False) -> tuple[Observations, Prior, Params]:
    """The checks of the functions of fitted ``params`` and events (:func:`predict`,
    :func:`event_scores`, ``held_out_elbo``); their arguments as arrays of the working dtype
    (the events' weights dropped unless ``weighted``, the params' global factors only)."""
    raw = _validate.check_observations(data)
    num_clusters = _validate.params_structure(params, responsibilities=False)
    _validate.check_prior(prior, num_clusters)
    _validate.learned_factors_agree(prior, params)
    _validate.param_values(params)

    obs = _validate.to_observations(raw)
    prior = _validate.to_prior(prior, num_clusters)
    return (obs if weighted else obs._replace(weights=None), prior,
            _global_factors(params, obs.locations.dtype))


def _check_start(params: Any, prior: Prior, num_clusters: int, num_restarts: int) -> None:
    """``fit``'s ``init_params``: global factors for ``num_clusters`` clusters that go with
    ``prior``, and one restart."""
    k = _validate.params_structure(params, responsibilities=False, name="init_params")
    if k != num_clusters:
        raise ValueError(f"init_params has {k} clusters but num_clusters is {num_clusters}")
    _validate.learned_factors_agree(prior, params)
    _validate.param_values(params, name="init_params")
    if num_restarts != 1:
        raise ValueError(f"init_params (a warm start) needs num_restarts=1; got {num_restarts}"
                         " (every restart would start from the same point)")


def _global_factors(params: Params, dtype: Any) -> Params:
    """The global factors of ``params`` as arrays of ``dtype`` (responsibilities None),
    converted on the host (nothing compiled)."""
    return Params(None, *(None if leaf is None else _validate._as_array(leaf, dtype)
                          for leaf in params[1:]))
