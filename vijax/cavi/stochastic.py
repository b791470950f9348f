"""Stochastic variational inference (SVI) for the earthquake mixture, streaming events from
disk.

Hoffman, Blei, Wang and Paisley (2013), *Stochastic Variational Inference*, JMLR 14,
algorithm 2, for the model of ``docs/MODEL.md`` section 1 (:mod:`vijax.cavi.model`). The
state holds only the global factors ``q(lam)``, ``q(mu)`` (and ``q(pi)``, ``q(tau)`` when
learned). Step ``t = 1, 2, ...`` takes a minibatch ``B`` of events and

1. the local step: ``q(Z_n) = softmax_k L_nk`` for ``n`` in ``B`` under the current global
   factors (:func:`vijax.cavi.model._assign_with_elbo`, the ``q(Z)`` update of CAVI);
2. the intermediate global factors: the sufficient statistics of the minibatch
   (:func:`vijax.cavi.model._statistics`, sums over ``B``) are scaled by ``N / |B|`` (``N``
   events in the data set, ``|B|`` the minibatch's events of weight 1; every ``Statistics``
   field, by ``jax.tree.map``), and the CAVI updates of the global factors are applied to
   them (:func:`vijax.cavi.model._globals_from_statistics`), as if the data set were ``N/|B|``
   copies of the minibatch;
3. the blend, in natural parameters, with step size ``rho_t = (t + tau0)^(-kappa)``,
   ``kappa`` in ``(0.5, 1]`` and ``tau0 >= 0`` (Robbins-Monro: ``sum rho_t = inf``,
   ``sum rho_t^2 < inf``)::

       eta_t = (1 - rho_t) eta_{t-1} + rho_t eta_hat

   Every factor is in an exponential family whose natural parameters are affine in the
   fields of :class:`vijax.cavi.Params`, except the mean of ``q(mu_k)``: the Gamma factors
   (``(a - 1, -b)``), the Dirichlet (``g - 1``) and the Gaussian's precision ``s_k`` (its
   natural parameter ``-s_k/2``) blend as the fields themselves (the weights sum to one, so
   the constants pass through); the Gaussian's other natural parameter is ``s_k m_k``, so::

       s_t = (1 - rho) s_{t-1} + rho s_hat
       m_t = [(1 - rho) s_{t-1} m_{t-1} + rho s_hat m_hat] / s_t
           = w m_{t-1} + w' m_hat,   w = (1 - rho) s_{t-1} / s_t,  w' = rho s_hat / s_t

   (the second form, used here, is the same number and is exactly ``m_hat`` when
   ``rho = 1``). The code blends every field of ``Params`` but ``mean`` linearly, so new
   Gamma-type fields are blended without change here.

With the whole data set as the batch (``N = |B|``, scale 1) and ``rho = 1`` (``tau0 = 0`` at
the first step), a step is one CAVI sweep: the global factors become the coordinate
update from ``q(Z)`` of the current ones, i.e. the global factors after
:func:`vijax.cavi.sweep` from ``init``'s state (tested to the bit).

Held-out ELBO. For held-out events ``H`` (``M`` of them, weight 1) and global factors ``q``::

    held_out_elbo = (1/M) sum_{n in H} logsumexp_k L_nk

the data part of the ELBO at the locally optimal ``q(Z_n)`` (``L_nk`` of
:mod:`vijax.cavi.model`, every constant kept), without the global terms (priors and
entropies of the global factors, which belong to the training set's posterior and do not
grow with ``M``). It lower-bounds ``(1/M) sum_n E_q[log p(X_n, S_n | mu, lam, pi)]``, the
expected log-likelihood of the held-out events, and is computed as
:func:`vijax.cavi.assign_with_elbo` minus :func:`vijax.cavi.global_terms`.

Streaming sources. A source is read in *windows* of ``W = window_batches * batch_size``
consecutive events. Sources with random access (arrays in memory, ``np.memmap``, a path to a
``.npy`` file, read with ``np.fromfile`` at offsets so that no file page stays mapped and the
resident memory stays bounded) are read window by window in an order drawn afresh each pass;
streams (a callable returning an iterator of chunks, called once per pass, or a one-pass
iterator) in their own order, chunks joined or split into windows. Each pass reads each event
exactly once. Within a window, with the window's ``c`` events laid out row-major in a
``batch_size x n`` grid (``n = ceil(c / batch_size)``, ``n = window_batches`` for a full
window; the ragged end padded with weight-0 events), minibatch ``j`` takes from row ``r`` the
event in column ``(sigma(j) + s_r) mod n``, with ``sigma`` a uniformly random permutation of
the ``n`` minibatches and ``s_r`` an independent uniform shift per row, both drawn from the
window's key (``fold_in(key, index of the window in the source)`` of the pass's key). So
every minibatch holds one event from each row (``window_batches`` consecutive events of the
source): stratified over the window, re-partitioned each pass, each event in exactly one
minibatch per pass, and the ragged last window of a source (wherever the pass takes it)
spread evenly over its ``n`` minibatches. (A full random permutation sorts the window,
which on CPU costs more than the step itself.) Every minibatch has ``batch_size`` rows;
padding has weight 0 so that one compiled step serves all of them. Records of
:data:`EVENT_DTYPE` (files, memmaps, arrays) go to the device as raw 32-bit words and are
decoded there; other layouts are converted on the host. Memory: a path is read with
``np.fromfile``, so the resident memory is a few windows whatever the file's size; the pages
of an ``np.memmap`` that has been read stay resident (they count in the RSS until
unmapped), so pass the path for files larger than memory.

Every public function checks its arguments at its top (:mod:`vijax._checks`,
:mod:`vijax.cavi._validate`) and raises a ``ValueError`` naming the argument before anything
is compiled; the values of a streamed source (memmaps, files, streams) are checked window by
window as they are read.
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _checks
from vijax.cavi import _validate
from vijax.cavi._types import Observations, Params, Prior
from vijax.cavi.fit import _global_factors, _initial_globals, _new_events
from vijax.cavi.model import (
    _assign_with_elbo,
    _event_scores,
    _global_terms,
    _globals_from_statistics,
    _statistics,
    event_weights,
)

__all__ = ["EVENT_DTYPE", "SVIHistory", "SVIInfo", "SVIResult", "SVIState", "fit_stochastic",
           "held_out_elbo", "minibatches", "stochastic_init", "stochastic_step",
           "stochastic_step_size", "write_events"]

Array = jax.Array

# One event of an event file (:func:`write_events`): 12 bytes, so 1e8 events are 1.2 GB.
EVENT_DTYPE = np.dtype([("locations", "<f4", (2,)), ("strengths", "<i4")])
_INT32_MAX = np.iinfo(np.int32).max


class SVIState(NamedTuple):
    """The state of SVI.

    Attributes:
        params: the global factors (:class:`vijax.cavi.Params`, ``responsibilities`` None).
        step: ``()`` int32, the number of steps taken ``t``; the next uses ``rho_{t+1}``.
    """

    params: Params
    step: Array


class SVIInfo(NamedTuple):
    """What a step reports.

    Attributes:
        step_size: ``rho_t`` of the step.
        elbo_estimate: ``(N/|B|) sum_{n in B} logsumexp_k L_nk + global_terms``, the unbiased
            minibatch estimate of the ELBO at the locally optimal ``q(Z)`` under the global
            factors *before* the step.
        batch_events: ``|B|``, the minibatch's events of weight 1.
    """

    step_size: Array
    elbo_estimate: Array
    batch_events: Array


class SVIHistory(NamedTuple):
    """The held-out ELBO along a run, one entry per evaluation (NumPy arrays).

    Attributes:
        step: steps taken.
        events: events processed (weight 1), over all passes.
        seconds: wall-clock seconds of training (reading, shuffling, steps, compilation
            included; the held-out evaluations excluded).
        held_out_elbo: :func:`held_out_elbo` per event (NaN when no ``holdout``).
    """

    step: np.ndarray
    events: np.ndarray
    seconds: np.ndarray
    held_out_elbo: np.ndarray


class SVIResult(NamedTuple):
    """What :func:`fit_stochastic` returns.

    Attributes:
        params: the final global factors (``responsibilities`` None; :func:`vijax.cavi.predict`
            gives ``q(Z)`` of any events).
        state: the final :class:`SVIState`, for further :func:`stochastic_step` calls by
            hand (``fit_stochastic(init_params=result.params)`` starts a new run: the step
            count and so the step size start again).
        history: :class:`SVIHistory`.
        step_sizes, batch_events: ``(T,)`` the step size and the minibatch's events of every
            step. (The minibatch ELBO estimate of :class:`SVIInfo` is left out of the fit:
            its per-event constants cost a quarter of a step; :func:`stochastic_step`
            reports it.)
    """

    params: Params
    state: SVIState
    history: SVIHistory
    step_sizes: np.ndarray
    batch_events: np.ndarray


# ----------------------------------------------------------------------- argument checks


def _real_number(name: str, x: Any) -> None:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {x!r:.80}")


def _check_tau0(tau0: Any) -> float:
    _real_number("tau0", tau0)
    return _checks.check_scalar("tau0", tau0, minimum=0.0)


def _check_kappa(kappa: Any) -> float:
    _real_number("kappa", kappa)
    kappa = _checks.check_scalar("kappa", kappa, minimum=0.5, strict=True)
    if kappa > 1.0:
        raise ValueError(f"kappa must be in (0.5, 1] (Robbins-Monro: sum rho_t = inf and "
                         f"sum rho_t^2 < inf); got {kappa}")
    return kappa


def _check_num_events(num_events: Any, at_least: int = 1) -> int:
    return _checks.check_int("num_events", num_events, at_least)


def _check_state(state: Any, name: str = "state") -> int:
    _checks.check_instance(name, state, SVIState, "stochastic_init(...) or fit_stochastic(...)"
                           ".state")
    k = _validate.params_structure(state.params, responsibilities=False,
                                   name=f"{name}.params")
    _checks.check_shape(f"{name}.step", state.step, ())
    dtype = getattr(state.step, "dtype", None) or np.asarray(state.step).dtype
    if not np.issubdtype(np.dtype(dtype), np.integer):
        raise ValueError(f"{name}.step must be an integer count of steps; got dtype {dtype}")
    return k


# -------------------------------------------------------------------------- the step


def stochastic_step_size(t: Any, tau0: float = 1.0, kappa: float = 0.7) -> Array:
    """``rho_t = (t + tau0)^(-kappa)``, the step size of step ``t >= 1``.

    Raises:
        ValueError: naming the argument, for ``t < 1``, ``tau0 < 0`` or ``kappa`` outside
            ``(0.5, 1]``, before anything is compiled.
    """
    tau0, kappa = _check_tau0(tau0), _check_kappa(kappa)
    _checks.check_real("t", t)
    if _checks.is_concrete(t) and np.any(np.asarray(t) < 1):
        raise ValueError(f"t must be >= 1 (steps count from 1); got {np.asarray(t)}")
    dtype = _validate.working_dtype()
    return _step_size(jnp.asarray(t, dtype), jnp.asarray(tau0, dtype), jnp.asarray(kappa, dtype))


def _step_size(t: Array, tau0: Array, kappa: Array) -> Array:
    return (t + tau0) ** (-kappa)


def _blend(old: Params, new: Params, rho: Array) -> Params:
    """``(1 - rho) old + rho new`` in natural parameters (module docstring): every field but
    ``mean`` linearly; ``mean`` weighted by the precisions."""
    fields = {}
    for name in Params._fields:
        a, b = getattr(old, name), getattr(new, name)
        if name in ("responsibilities", "mean") or a is None:
            fields[name] = None
        else:
            fields[name] = (1.0 - rho) * a + rho * b
    precision = fields["precision"]
    w_old = ((1.0 - rho) * old.precision / precision)[:, None]
    w_new = (rho * new.precision / precision)[:, None]
    fields["mean"] = w_old * old.mean + w_new * new.mean
    return Params(**fields)


def _scaled_statistics(batch: Observations, prior: Prior, params: Params, r: Array,
                       scale: Array):
    """The minibatch's sufficient statistics (sums around ``nu``, and around the current
    centres when the precisions are learned), every field times ``scale``."""
    nu = jnp.asarray(prior.nu, batch.locations.dtype)
    if getattr(params, "tau_shape", None) is None:
        stats = _statistics(batch, r, nu)
    else:
        stats = _statistics(batch, r, nu, params.mean)
    return jax.tree.map(lambda s: scale * s, stats)


def _step(state: SVIState, batch: Observations, prior: Prior, num_events: Array,
          tau0: Array, kappa: Array, estimate: bool = True) -> tuple[SVIState, SVIInfo]:
    """The step; without ``estimate`` the ELBO estimate is NaN, and XLA then drops the
    per-event constants of the ELBO (a quarter of the step's cost)."""
    params = state.params
    t = state.step + 1
    dtype = params.gamma_shape.dtype
    rho = _step_size(t.astype(dtype), tau0, kappa)
    assigned, value = _assign_with_elbo(batch, prior, params, None)
    count = jnp.sum(event_weights(batch))
    scale = num_events / count
    stats = _scaled_statistics(batch, prior, params, assigned.responsibilities, scale)
    target = _globals_from_statistics(prior, stats, params)
    if estimate:
        outside = _global_terms(prior, params)
        value = scale * (value - outside) + outside
    else:
        value = jnp.asarray(jnp.nan, dtype)
    info = SVIInfo(rho, value, count)
    return SVIState(_blend(params, target, rho), t), info


_step_jit = jax.jit(_step)


def stochastic_step(state: SVIState, batch: Any, prior: Prior, num_events: int, *,
                    tau0: float = 1.0, kappa: float = 0.7) -> tuple[SVIState, SVIInfo]:
    """One SVI step (module docstring): ``q(Z)`` of ``batch``, the intermediate global
    factors from its statistics scaled by ``N/|B|``, the blend with ``rho_{t+1}``.

    The step is deterministic (no key): the randomness is in the choice of minibatches
    (:func:`minibatches`).

    Args:
        state: :class:`SVIState` (:func:`stochastic_init`).
        batch: :class:`vijax.cavi.Observations` of the working dtype (as
            :func:`minibatches` yields them); ``weights`` 0 marks padding, so batches of one
            shape share one compiled step. Like the other building blocks, only its
            structure is checked here.
        prior: :class:`vijax.cavi.Prior` of arrays (:func:`vijax.cavi.as_prior`).
        num_events: ``N``, the events in the whole data set, ``>= 1``.
        tau0, kappa: the step-size schedule ``rho_t = (t + tau0)^(-kappa)``, ``tau0 >= 0``,
            ``kappa`` in ``(0.5, 1]``.

    Returns:
        ``(state, info)``: the new :class:`SVIState` and the step's :class:`SVIInfo`.
    """
    k = _check_state(state)
    _validate.data_structure(batch, "batch")
    _validate.prior_structure(prior, k)
    _validate.learned_factors_agree(prior, state.params)
    num_events = _check_num_events(num_events)
    tau0, kappa = _check_tau0(tau0), _check_kappa(kappa)
    dtype = state.params.gamma_shape.dtype
    return _step_jit(state, batch, prior, jnp.asarray(num_events, dtype),
                     jnp.asarray(tau0, dtype), jnp.asarray(kappa, dtype))


# -------------------------------------------------------------------------- the start


@partial(jax.jit, static_argnames=("num_clusters",))
def _init_state(key: Array, batch: Observations, prior: Prior, num_events: Array, *,
                num_clusters: int) -> SVIState:
    w = event_weights(batch)
    scaled = batch._replace(weights=w * (num_events / jnp.sum(w)))
    params = _initial_globals(key, scaled, prior, num_clusters)
    return SVIState(params, jnp.zeros((), jnp.int32))


def stochastic_init(key: Array, batch: Any, prior: Prior, num_clusters: int,
                    num_events: int) -> SVIState:
    """The start of SVI: :func:`vijax.cavi.init`'s global factors, computed on ``batch`` as
    if the data set were ``N / |B|`` copies of it.

    The centres are ``K`` distinct events of the batch drawn at random (weight-0 events
    excluded) and each cluster starts as if it held ``N/K`` events like its seed
    (``s_k = rho + tau N/K``, ``a_k = alpha + (N/K) S_seed``, ``b_k = beta + N/K``, ...):
    ``init``'s rule with the batch's weights scaled by ``N / |B|``.

    Args:
        key: PRNG key.
        batch: events, in any form :func:`vijax.cavi.fit` accepts.
        prior: :class:`vijax.cavi.Prior`.
        num_clusters: ``K``, at most the batch's events of positive weight.
        num_events: ``N >= |B|``, the events in the whole data set.

    Returns:
        :class:`SVIState` at step 0.

    Raises:
        ValueError: naming the argument, for bad input, before anything is compiled.
    """
    _checks.check_key("key", key)
    raw = _named_observations("batch", batch)
    num_clusters = _validate.num_clusters(num_clusters, raw)
    _validate.check_prior(prior, num_clusters)
    n = np.shape(raw.strengths)[0] if raw.weights is None else int(
        np.sum(np.asarray(raw.weights) > 0))
    num_events = _check_num_events(num_events, n)
    obs = _validate.to_observations(raw)
    dtype = obs.locations.dtype
    return _init_state(key, obs, _validate.to_prior(prior, num_clusters),
                       jnp.asarray(num_events, dtype), num_clusters=num_clusters)


# ----------------------------------------------------------------------- held-out ELBO


@jax.jit
def _held_out_elbo(data: Observations, prior: Prior, params: Params) -> Array:
    w = event_weights(data)
    return _event_scores(data._replace(weights=None), prior, params) @ w / jnp.sum(w)


def held_out_elbo(data: Any, prior: Prior, params: Params) -> Array:
    """``(1/M) sum_{n in H} logsumexp_k L_nk``: the data part of the ELBO per held-out event
    at the locally optimal ``q(Z)`` (module docstring; no global terms).

    Args:
        data: the held-out events, in any form :func:`vijax.cavi.fit` accepts (weights, if
            given, weigh the sum and the count ``M``).
        prior: the prior of the fit.
        params: the global factors (``responsibilities`` not read).

    Raises:
        ValueError: naming the argument, for bad input, before anything is compiled.
    """
    return _held_out_elbo(*_new_events(data, prior, params, weighted=True))


# --------------------------------------------------------------------------- sources


class _Source:
    """A checked source of events: random access (``read``) or a stream (``chunks``).

    Sources of :data:`EVENT_DTYPE` records also have ``read_raw``: the records' bytes as
    ``(n, 3)`` uint32 words (x, y, strength), which go to the device as they are and are
    decoded and checked there (no pass over the events on the host)."""

    def __init__(self, num_events: int | None, read: Callable | None = None,
                 chunks: Callable[[], Iterator] | None = None, once: bool = False,
                 checked: bool = False, read_raw: Callable | None = None) -> None:
        self.num_events, self.read, self.chunks = num_events, read, chunks
        self.once, self.checked, self.used = once, checked, False
        self.read_raw = read_raw


def _record_columns(name: str, dtype: np.dtype, shape: tuple[int, ...]) -> str:
    """The layout of an array of events: ``"structured"`` (fields ``locations`` ``(2,)`` and
    ``strengths``) or ``"columns"`` (``(N, 3)``: x, y, strength)."""
    if dtype.names is not None:
        if len(shape) != 1:
            raise ValueError(f"{name} must be a 1-D structured array of events; got shape "
                             f"{shape}")
        for field, sub in (("locations", (2,)), ("strengths", ())):
            if field not in dtype.names or dtype.fields[field][0].shape != sub:
                raise ValueError(f"{name} must have fields 'locations' of shape (2,) and "
                                 f"'strengths' (as vijax.cavi.EVENT_DTYPE); got dtype {dtype}")
            _checks.float_dtype(f"{name}['{field}']", np.zeros(0, dtype.fields[field][0].base))
        return "structured"
    _checks.float_dtype(name, np.zeros(0, dtype))
    if len(shape) != 2 or shape[1] != 3:
        raise ValueError(f"{name} must be a structured array of events (vijax.cavi.EVENT_DTYPE)"
                         f" or have shape (N, 3) (x, y, strength); got shape {shape}")
    return "columns"


def _split(records: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    if layout == "structured":
        return records["locations"], records["strengths"]
    return records[:, :2], records[:, 2]


def _open_file(path: Path, name: str) -> _Source:
    if not path.is_file():
        raise ValueError(f"{name} must be an existing .npy file of events; {str(path)!r:.80} "
                         "is not a file")
    try:
        mapped = np.load(path, mmap_mode="r")
    except Exception as e:  # not a .npy file
        raise ValueError(f"{name} must be a .npy file of events (numpy.save or "
                         f"vijax.cavi.write_events); could not read {str(path)!r:.80}: {e}"
                         ) from e
    if not isinstance(mapped, np.memmap):
        raise ValueError(f"{name} must be a .npy file of events; {str(path)!r:.80} is not one")
    dtype, shape, offset = mapped.dtype, mapped.shape, mapped.offset
    fortran = not mapped.flags.c_contiguous
    del mapped
    layout = _record_columns(name, dtype, shape)
    if fortran:
        raise ValueError(f"{name} must be stored in C order; {str(path)!r:.80} is in Fortran "
                         "order")
    n = shape[0]
    if n < 1:
        raise ValueError(f"{name} must hold at least one event; {str(path)!r:.80} holds none")
    per_row = 3 if layout == "columns" else 1
    row_bytes = dtype.itemsize * per_row

    def read(start: int, stop: int):
        records = np.fromfile(path, dtype=dtype, count=(stop - start) * per_row,
                              offset=offset + start * row_bytes)
        return _split(records.reshape(-1, 3) if layout == "columns" else records, layout)

    def read_raw(start: int, stop: int):
        return np.fromfile(path, dtype=np.uint32, count=(stop - start) * 3,
                           offset=offset + start * row_bytes).reshape(-1, 3)

    return _Source(n, read=read, read_raw=read_raw if dtype == EVENT_DTYPE else None)


def _array_source(locations: Any, strengths: Any, name: str, check_values: bool) -> _Source:
    (n, _) = _validate.array(f"{name}.locations", locations, (None, 2))
    if n < 1:
        raise ValueError(f"{name}.locations must hold at least one event; got shape (0, 2)")
    _validate.array(f"{name}.strengths", strengths, (n,))
    # Arrays that are not memory-mapped are in memory anyway: as NumPy, sliced on the host.
    if not isinstance(locations, np.memmap):
        locations = np.asarray(locations)
    if not isinstance(strengths, np.memmap):
        strengths = np.asarray(strengths)
    if check_values:
        _check_values(name, locations, strengths, 0)

    def read(start: int, stop: int):
        return np.asarray(locations[start:stop]), np.asarray(strengths[start:stop])

    return _Source(n, read=read, checked=check_values)


def _open_source(source: Any, num_events: Any, name: str = "source") -> _Source:
    """Check the structure of ``source`` (and, for arrays in memory, its values)."""
    if isinstance(source, str | os.PathLike):
        src = _open_file(_checks.check_path(name, source), name)
    elif isinstance(source, np.ndarray) and (source.dtype.names is not None
                                             or source.ndim == 2):
        layout = _record_columns(name, source.dtype, source.shape)
        loc, s = _split(source, layout)
        src = _array_source(loc, s, name, check_values=not isinstance(source, np.memmap))
        if source.dtype == EVENT_DTYPE and source.flags.c_contiguous:
            src.read_raw = lambda start, stop: source[start:stop].view(np.uint32).reshape(-1, 3)
    elif isinstance(source, Observations) or (hasattr(source, "locations")
                                               and hasattr(source, "strengths")):
        if getattr(source, "weights", None) is not None:
            raise ValueError(f"{name}.weights must be None: every event of a source is an "
                             "event (padding is added by the minibatches)")
        src = _array_source(source.locations, source.strengths, name, check_values=not any(
            isinstance(a, np.memmap) for a in (source.locations, source.strengths)))
    elif isinstance(source, tuple | list) and len(source) == 2:
        src = _array_source(source[0], source[1], name, check_values=not any(
            isinstance(a, np.memmap) for a in source))
    elif callable(source) or isinstance(source, Iterator):
        if num_events is None:
            raise ValueError(f"num_events must be given (the events in the data set, an int "
                             f">= 1) when {name} is a stream of chunks")
        once = not callable(source)
        src = _Source(None, chunks=(lambda: iter(source)) if once else source, once=once)
    else:
        raise ValueError(
            f"{name} must be a path to a .npy file of events, a structured array "
            "(vijax.cavi.EVENT_DTYPE) or an (N, 3) array (x, y, strength), a (locations, "
            "strengths) pair or Observations (arrays or np.memmap), or a callable returning "
            f"an iterator of such chunks; got {type(source).__name__}")
    if num_events is not None:
        num_events = _check_num_events(num_events)
        if src.num_events is not None and num_events != src.num_events:
            raise ValueError(f"num_events must be None or the {src.num_events} events of "
                             f"{name}; got {num_events}")
        src.num_events = num_events
    return src


def _chunk_arrays(chunk: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A chunk of a stream as ``(locations, strengths)`` NumPy arrays (structure checked)."""
    if isinstance(chunk, np.ndarray) and (chunk.dtype.names is not None or chunk.ndim == 2):
        loc, s = _split(chunk, _record_columns(name, chunk.dtype, chunk.shape))
    elif hasattr(chunk, "locations") and hasattr(chunk, "strengths"):
        loc, s = chunk.locations, chunk.strengths
    elif isinstance(chunk, tuple | list) and len(chunk) == 2:
        loc, s = chunk
    else:
        raise ValueError(f"{name} must be a (locations, strengths) pair, Observations or an "
                         f"array of events; got {type(chunk).__name__}")
    (n, _) = _validate.array(f"{name}.locations", loc, (None, 2))
    _validate.array(f"{name}.strengths", s, (n,))
    return np.asarray(loc), np.asarray(s)


def _check_values(name: str, loc: np.ndarray, s: np.ndarray, start: int) -> None:
    """Locations finite and strengths whole numbers >= 0 in the working dtype: a fast test,
    then :mod:`vijax._checks` for the message."""
    dtype = _validate.working_dtype()
    with np.errstate(over="ignore", invalid="ignore"):
        ok_loc = np.issubdtype(loc.dtype, np.number) and bool(
            np.isfinite(loc.astype(dtype, copy=False)).all())
        if np.issubdtype(s.dtype, np.integer):
            ok_s = s.size == 0 or int(s.min()) >= 0
        else:
            ok_s = np.issubdtype(s.dtype, np.floating) and bool(
                (np.isfinite(s.astype(dtype, copy=False)) & (s >= 0) & (s == np.floor(s))).all())
    if ok_loc and ok_s:
        return
    where = f"{name} (events {start}..{start + len(s) - 1})"
    _checks.check_real(f"{where} locations", loc)
    _checks.check_real(f"{where} strengths", s)
    _checks.check_nonnegative_integers(f"{where} strengths", s)
    raise ValueError(f"{where} must hold finite locations and whole strengths >= 0")


class _Window(NamedTuple):
    """A window of ``c`` events laid out for the shuffle: row-major in the first ``n``
    columns of a ``batch_size x window_batches`` grid (module docstring).

    Attributes:
        records: ``(batch_size, window_batches, 3)``: x, y, strength in the working dtype, or
            the uint32 words of :data:`EVENT_DTYPE` records (decoded on the device).
        count: ``c``.
        num_batches: ``n = ceil(c / batch_size)``.
    """

    records: Any
    count: Any
    num_batches: Any


def _layout(records: np.ndarray, batch_size: int, window_batches: int) -> _Window:
    """``(c, 3)`` records row-major in a ``batch_size x n`` grid, ``n = ceil(c/batch_size)``,
    inside a ``batch_size x window_batches`` grid of zeros."""
    c = len(records)
    if c == batch_size * window_batches:
        return _Window(records.reshape(batch_size, window_batches, 3), np.int32(c),
                       np.int32(window_batches))
    n = -(-c // batch_size)
    grid = np.zeros((batch_size, window_batches, 3), records.dtype)
    grid[:, :n] = np.pad(records, ((0, batch_size * n - c), (0, 0))).reshape(batch_size, n, 3)
    return _Window(grid, np.int32(c), np.int32(n))


def _columns(loc: np.ndarray, s: np.ndarray, dtype: np.dtype) -> np.ndarray:
    records = np.empty((len(s), 3), dtype)
    records[:, :2] = loc
    records[:, 2] = s
    return records


def _windows(key: Array, src: _Source, pass_index: int, batch_size: int,
             window_batches: int) -> Iterator[tuple[Array, _Window, tuple[int, int] | None]]:
    """The windows of one pass: ``(key of the window, laid-out window, span)``, read on the
    host; ``span`` ``(start, stop)`` where the window's values are still to be checked (on
    the device: :data:`EVENT_DTYPE` records), None where they were checked here."""
    size = batch_size * window_batches
    dtype = _validate.working_dtype()
    key_order, key_windows = jax.random.split(jax.random.fold_in(key, pass_index))
    if src.read is not None:
        count = -(-src.num_events // size)
        order = np.asarray(jax.random.permutation(key_order, count)) if count > 1 else [0]
        for w in order:
            start, stop = int(w) * size, min(int(w + 1) * size, src.num_events)
            span = None
            if src.read_raw is not None:
                records = src.read_raw(start, stop)
                span = None if src.checked else (start, stop)
            else:
                loc, s = src.read(start, stop)
                if not src.checked:
                    _check_values("source", loc, s, start)
                records = _columns(loc, s, dtype)
            yield (jax.random.fold_in(key_windows, w),
                   _layout(records, batch_size, window_batches), span)
        return
    if src.once and src.used:
        raise ValueError("source is an iterator, which can be read once: pass a callable "
                         "returning an iterator of chunks for more than one pass")
    src.used = True
    buffer, held, seen, w = [], 0, 0, 0
    for i, chunk in enumerate(src.chunks()):
        loc, s = _chunk_arrays(chunk, f"source chunk {i}")
        _check_values(f"source chunk {i}", loc, s, seen)
        seen += len(s)
        if seen > src.num_events:
            raise ValueError(f"source holds more events than num_events={src.num_events}")
        buffer.append(_columns(loc, s, dtype))
        held += len(s)
        if held < size:
            continue
        # join once per chunk, then cut windows at an offset (no copy of the rest per window)
        joined, offset = np.concatenate(buffer), 0
        while held - offset >= size:
            yield (jax.random.fold_in(key_windows, w),
                   _layout(joined[offset:offset + size], batch_size, window_batches), None)
            w += 1
            offset += size
        buffer, held = [joined[offset:]], held - offset
    if seen != src.num_events:
        raise ValueError(f"source held {seen} events but num_events={src.num_events}")
    if held:
        yield (jax.random.fold_in(key_windows, w),
               _layout(np.concatenate(buffer), batch_size, window_batches), None)


def _decode(window: _Window, dtype: Any) -> tuple[Observations, Array]:
    """The window's events as ``(batch_size, window_batches)`` grids (weights 1 on the
    ``c`` events, 0 on padding) and whether any event is invalid (non-finite location or
    negative strength: only :data:`EVENT_DTYPE` words are checked here)."""
    records = window.records
    if records.dtype == jnp.uint32:
        loc = jax.lax.bitcast_convert_type(records[..., :2], jnp.float32).astype(dtype)
        s = jax.lax.bitcast_convert_type(records[..., 2], jnp.int32).astype(dtype)
    else:
        loc, s = records[..., :2].astype(dtype), records[..., 2].astype(dtype)
    rows, cols = records.shape[:2]
    row, col = jnp.arange(rows)[:, None], jnp.arange(cols)[None, :]
    n = window.num_batches
    real = (col < n) & (row * n + col < window.count)
    invalid = jnp.any(real & ~(jnp.isfinite(loc).all(axis=-1) & (s >= 0)))
    return Observations(loc, s, real.astype(dtype)), invalid


def _shuffle(key: Array, window: _Window, dtype: Any) -> tuple[Observations, Array]:
    """The minibatches of a window (module docstring): ``(window_batches, batch_size)``
    leading axes; minibatch ``j`` takes column ``(sigma(j) + s_r) mod n`` of row ``r``.
    Also whether the window holds an invalid event (:func:`_decode`)."""
    grid, invalid = _decode(window, dtype)
    rows, cols = grid.strengths.shape
    n = window.num_batches
    key_sigma, key_shift = jax.random.split(key)
    column = jnp.arange(cols)
    in_use = column < n
    # sigma: a uniform permutation of the n columns in use; the rest stay in place.
    u = jnp.where(in_use, jax.random.uniform(key_sigma, (cols,)), 2.0 + column)
    sigma = jnp.argsort(u)
    shift = jax.random.randint(key_shift, (rows, 1), 0, n)
    index = jnp.where(in_use[None, :], (sigma[None, :] + shift) % n, column[None, :])

    def take(leaf):
        if leaf.ndim == 3:
            picked = jnp.take_along_axis(leaf, index[:, :, None], axis=1)
            return jnp.swapaxes(picked, 0, 1)
        return jnp.take_along_axis(leaf, index, axis=1).T

    return Observations(*(take(leaf) for leaf in grid)), invalid


_shuffle_jit = jax.jit(_shuffle, static_argnames=("dtype",))


@jax.jit
def _run_window(state: SVIState, key: Array, window: _Window, num_steps: Array, prior: Prior,
                num_events: Array, tau0: Array, kappa: Array
                ) -> tuple[SVIState, SVIInfo, Array]:
    """The steps of one window, in a ``lax.scan``; minibatches past ``num_steps`` (empty
    columns, or a cap on the steps) leave the state as it is and report NaN step sizes.
    Also whether the window held an invalid event (then the caller raises)."""
    dtype = state.params.gamma_shape.dtype
    batches, invalid = _shuffle(key, window, dtype)

    def body(state, xs):
        batch, j = xs

        def skip(state, batch):
            nan = jnp.asarray(jnp.nan, dtype)
            return state, SVIInfo(nan, nan, jnp.zeros((), dtype))

        return jax.lax.cond(j < num_steps, partial(_step, prior=prior, num_events=num_events,
                                                   tau0=tau0, kappa=kappa, estimate=False),
                            skip, state, batch)

    state, info = jax.lax.scan(body, state, (batches, jnp.arange(batches.strengths.shape[0])))
    return state, info, invalid


def _raise_invalid(src: _Source, span: tuple[int, int]) -> None:
    """A window flagged invalid on the device: the host's check names the events."""
    loc, s = src.read(*span)
    _check_values("source", loc, s, span[0])
    raise ValueError(f"source (events {span[0]}..{span[1] - 1}) must hold finite locations "
                     "and strengths >= 0")


def _check_batching(batch_size: Any, window_batches: Any) -> tuple[int, int]:
    return (_checks.check_int("batch_size", batch_size, 1),
            _checks.check_int("window_batches", window_batches, 1))


def minibatches(key: Array, source: Any, batch_size: int, *, window_batches: int = 16,
                num_events: int | None = None, pass_index: int = 0) -> Iterator[Observations]:
    """The minibatches of one pass over ``source``, in the order :func:`fit_stochastic`
    steps through them (the shuffle of the module docstring).

    Args:
        key: PRNG key; pass ``p`` uses ``fold_in(key, p)``. :func:`fit_stochastic` passes
            the second key of ``split(its key)``.
        source: a path to a ``.npy`` file of events (:data:`EVENT_DTYPE` records, or an
            ``(N, 3)`` float array of x, y, strength), such an array (``np.memmap``
            included), a ``(locations, strengths)`` pair or :class:`vijax.cavi.Observations`
            of arrays, or a callable returning an iterator of such chunks (then
            ``num_events`` is required).
        batch_size: events per minibatch, ``>= 1``.
        window_batches: minibatches per window, ``>= 1``.
        num_events: ``N``; None for sources that know it.
        pass_index: which pass, ``>= 0``.

    Yields:
        :class:`vijax.cavi.Observations` of NumPy arrays in the working dtype, ``batch_size``
        rows each, ``weights`` 0 on padding.

    Raises:
        ValueError: naming the argument, for bad input, before anything is compiled
            (streamed values: when their window is read).
    """
    _checks.check_key("key", key)
    batch_size, window_batches = _check_batching(batch_size, window_batches)
    pass_index = _checks.check_int("pass_index", pass_index, 0)
    src = _open_source(source, num_events)
    return _minibatches(key, src, batch_size, window_batches, pass_index)


def _minibatches(key, src, batch_size, window_batches, pass_index):
    dtype = _validate.working_dtype()
    for key_w, window, span in _windows(key, src, pass_index, batch_size, window_batches):
        batches, invalid = jax.device_get(_shuffle_jit(key_w, window, dtype))
        if span is not None and invalid:
            _raise_invalid(src, span)
        for j in range(int(window.num_batches)):
            yield Observations(*(leaf[j] for leaf in batches))


# ------------------------------------------------------------------------------ fit


def fit_stochastic(key: Array, source: Any, prior: Prior, num_clusters: int, *,
                   batch_size: int, num_passes: int = 1, num_steps: int | None = None,
                   tau0: float = 1.0, kappa: float = 0.7, window_batches: int = 16,
                   num_events: int | None = None, holdout: Any = None, eval_every: int = 1,
                   init_params: Params | None = None) -> SVIResult:
    """Fit the mixture by SVI, streaming minibatches from ``source`` (module docstring).

    Each window of ``window_batches`` minibatches is read on the host (the next one while
    the current one is computed), then shuffled and stepped through in one compiled
    ``lax.scan``; at most one window is in flight, so memory stays bounded by a few windows
    whatever the size of the source.

    Args:
        key: PRNG key. ``split(key)`` gives the key of the start (:func:`stochastic_init`, on
            the first minibatch) and of the minibatches (:func:`minibatches`).
        source: the events, as :func:`minibatches` takes them.
        prior: :class:`vijax.cavi.Prior`.
        num_clusters: ``K``, at most ``min(batch_size, N)``.
        batch_size: events per minibatch ``|B|``, ``>= 1``.
        num_passes: passes over the source, ``>= 1``.
        num_steps: stop after this many steps (None: after ``num_passes`` passes).
        tau0, kappa: ``rho_t = (t + tau0)^(-kappa)``, ``tau0 >= 0``, ``kappa`` in ``(0.5, 1]``.
        window_batches: minibatches per window, ``>= 1``; windows of ``window_batches *
            batch_size`` events are read at once and shuffled within.
        num_events: ``N``; required for streams, else None or the source's size.
        holdout: held-out events (any form :func:`vijax.cavi.fit` accepts, in memory) for
            :func:`held_out_elbo`, evaluated at the start, every ``eval_every`` windows and
            at the end; None for none.
        eval_every: windows between evaluations, ``>= 1``.
        init_params: global factors to start from (a warm start) instead of
            :func:`stochastic_init`; their step count starts at 0.

    Returns:
        :class:`SVIResult`.

    Raises:
        ValueError: naming the argument, for bad input, before anything is compiled (the
            values of memmaps, files and streams: when their window is read).
    """
    _checks.check_key("key", key)
    batch_size, window_batches = _check_batching(batch_size, window_batches)
    num_passes = _checks.check_int("num_passes", num_passes, 1)
    if num_steps is not None:
        num_steps = _checks.check_int("num_steps", num_steps, 1)
    tau0, kappa = _check_tau0(tau0), _check_kappa(kappa)
    eval_every = _checks.check_int("eval_every", eval_every, 1)
    num_clusters = _checks.check_int("num_clusters", num_clusters, 1)
    _validate.check_prior(prior, num_clusters)
    src = _open_source(source, num_events)
    if src.num_events is not None:
        _checks.check_int("num_clusters", num_clusters, 1, min(batch_size, src.num_events))
    if src.once and num_passes > 1:
        raise ValueError("num_passes must be 1 when source is an iterator (it can be read "
                         "once); pass a callable returning an iterator of chunks")
    held = None
    if holdout is not None:
        held = _validate.to_observations(_named_observations("holdout", holdout))
    if init_params is not None:
        k = _validate.params_structure(init_params, responsibilities=False, name="init_params")
        if k != num_clusters:
            raise ValueError(f"init_params must have num_clusters={num_clusters} clusters; got "
                             f"{k}")
        _validate.learned_factors_agree(prior, init_params)
        _validate.param_values(init_params, "init_params")

    dtype = _validate.working_dtype()
    prior = _validate.to_prior(prior, num_clusters)
    n_total = jnp.asarray(src.num_events, dtype)
    schedule = (jnp.asarray(tau0, dtype), jnp.asarray(kappa, dtype))
    key_init, key_data = jax.random.split(key)
    state = None if init_params is None else SVIState(
        _global_factors(init_params, dtype), jnp.zeros((), jnp.int32))

    rows: list[tuple[int, int, float, float]] = []
    infos: list[SVIInfo] = []
    clock = {"start": time.perf_counter(), "evaluating": 0.0}
    steps = events = 0
    pending_events: list[Any] = []
    flagged: list[tuple[Array, tuple[int, int] | None]] = []

    def check_previous():
        """Wait for the window in flight; raise if it held an invalid event."""
        if flagged:
            invalid, span = flagged.pop()
            if span is not None and bool(invalid):
                _raise_invalid(src, span)

    def evaluate(state):
        nonlocal events
        jax.block_until_ready(state)
        seconds = time.perf_counter() - clock["start"] - clock["evaluating"]
        events += int(sum(float(np.nansum(np.asarray(c))) for c in pending_events))
        pending_events.clear()
        t0 = time.perf_counter()
        value = (float(_held_out_elbo(held, prior, state.params)) if held is not None
                 else float("nan"))
        clock["evaluating"] += time.perf_counter() - t0
        rows.append((steps, events, seconds, value))

    windows_done = 0
    for p in range(num_passes):
        for key_w, window, span in _windows(key_data, src, p, batch_size, window_batches):
            if num_steps is not None and steps >= num_steps:
                break
            budget = int(window.num_batches)
            window = jax.device_put(window)
            if state is None:
                state = _first_state(key_init, key_w, window, prior, n_total, num_clusters,
                                     src, span)
            if not rows:
                evaluate(state)
            if num_steps is not None:
                budget = min(budget, num_steps - steps)
            if infos:  # at most one window in flight
                check_previous()
            state, info, invalid = _run_window(state, key_w, window,
                                               jnp.asarray(budget, jnp.int32), prior, n_total,
                                               *schedule)
            infos.append(info)
            flagged.append((invalid, span))
            pending_events.append(info.batch_events)
            steps += budget
            windows_done += 1
            if windows_done % eval_every == 0:
                evaluate(state)
        if num_steps is not None and steps >= num_steps:
            break
    check_previous()
    if not rows or rows[-1][0] != steps:
        evaluate(state)

    info = jax.device_get(infos)
    step_sizes = np.concatenate([i.step_size for i in info])
    used = ~np.isnan(step_sizes)
    history = SVIHistory(*(np.asarray(column) for column in zip(*rows, strict=True)))
    return SVIResult(state.params, state, history, step_sizes[used],
                     np.concatenate([i.batch_events for i in info])[used])


def _named_observations(name: str, data: Any) -> Observations:
    """:func:`vijax.cavi._validate.check_observations` (which calls its argument ``data``)
    for the argument ``name``."""
    try:
        return _validate.check_observations(data)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e


def _first_state(key_init, key_w, window, prior, n_total, num_clusters, src,
                 span) -> SVIState:
    """:func:`stochastic_init` on the first minibatch of the first window."""
    batches, invalid = _shuffle_jit(key_w, window, prior.nu.dtype)
    if span is not None and bool(invalid):
        _raise_invalid(src, span)
    first = Observations(*(leaf[0] for leaf in batches))
    positive = int(np.sum(np.asarray(first.weights) > 0))
    if positive < num_clusters:
        raise ValueError(f"num_clusters must be at most the {positive} events of the first "
                         f"minibatch; got {num_clusters}")
    return _init_state(key_init, first, prior, n_total, num_clusters=num_clusters)


# ------------------------------------------------------------------------- event files


def write_events(path: Any, chunks: Any, num_events: int) -> Path:
    """Write events to a ``.npy`` file of :data:`EVENT_DTYPE` records (locations float32,
    strengths int32), chunk by chunk, without holding them all in memory.

    Args:
        path: where to write (``str`` or ``os.PathLike``); overwritten.
        chunks: an iterable of chunks, each a ``(locations, strengths)`` pair or
            :class:`vijax.cavi.Observations` (e.g. from :func:`vijax.cavi.sample_events`).
        num_events: the total number of events the chunks hold, ``>= 1``.

    Returns:
        the path, as a ``pathlib.Path``.

    Raises:
        ValueError: naming the argument, for bad input (a chunk's values when it is reached;
            the file is then removed).
    """
    path = _checks.check_path("path", path)
    num_events = _check_num_events(num_events)
    if isinstance(chunks, str | bytes) or not hasattr(chunks, "__iter__"):
        raise ValueError(f"chunks must be an iterable of (locations, strengths) pairs or "
                         f"Observations; got {type(chunks).__name__}")
    header = {"descr": np.lib.format.dtype_to_descr(EVENT_DTYPE), "fortran_order": False,
              "shape": (num_events,)}
    written = 0
    try:
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            for i, chunk in enumerate(chunks):
                loc, s = _chunk_arrays(chunk, f"chunks[{i}]")
                _check_values(f"chunks[{i}]", loc, s, written)
                if s.size and float(np.max(s)) > _INT32_MAX:
                    raise ValueError(f"chunks[{i}] strengths must be at most {_INT32_MAX} "
                                     "(stored as int32)")
                if written + len(s) > num_events:
                    raise ValueError(f"chunks hold more than num_events={num_events} events")
                records = np.empty(len(s), EVENT_DTYPE)
                records["locations"] = loc
                records["strengths"] = s
                records.tofile(f)
                written += len(s)
        if written != num_events:
            raise ValueError(f"chunks held {written} events but num_events={num_events}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
