"""Shared test helpers."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import jax
import numpy as np
import pytest


@contextlib.contextmanager
def no_compilation(*, strict: bool = False):
    """Fail if XLA compiles anything inside the block (bad input must fail before any work).

    Counts the backend-compile events JAX reports through ``jax.monitoring``. ``strict``
    also fails on lowering and on any host-to-device transfer, with the caches cleared first
    (so that an eager operation would have to compile and be seen).
    """
    events = []
    watched = ("backend_compile", "jaxpr_to_mlir_module") if strict else ("backend_compile",)

    def listener(event, duration, **kwargs):
        if any(w in event for w in watched):
            events.append(event)

    if strict:
        jax.clear_caches()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with (jax.transfer_guard_host_to_device("disallow") if strict
              else contextlib.nullcontext()):
            yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not events, f"lowered or compiled {len(events)} computation(s) before failing"


def bad_case_ids(cases) -> list[str]:
    """Test ids ``function-argument-index`` for a table of ``(function, change, argument)``."""
    return [f"{n}-{a}-{i}" for i, (n, _, a) in enumerate(cases)]


def assert_refused(argument: str, call: Callable[[], object], guard=None) -> None:
    """``call()`` raises a ValueError whose message names ``argument``, inside ``guard``
    (default :func:`no_compilation`: before anything is compiled)."""
    with (no_compilation() if guard is None else guard), pytest.raises(ValueError) as info:
        call()
    assert argument in str(info.value), str(info.value)


def gradient_replicates(key, log_joint, family, params, objective, estimator, state, n):
    """``(n, P)`` replicate gradient estimates, by ``vmap`` over keys
    (``diagnostics.gradient_samples``), flattened to float64."""
    from vijax import diagnostics, estimators

    fn = estimators.gradient(log_joint, family, objective=objective, estimator=estimator)
    state = estimator.init_state() if state is None else state
    g = diagnostics.gradient_samples(key, lambda k, p: fn.raw(k, p, state).grad, params, n)
    return np.asarray(diagnostics.flatten_gradients(g), np.float64)


def z_scores(samples, target, floor: float):
    """``|mean - target| / SE`` per coordinate of ``(n, P)`` samples (SE at least ``floor``)."""
    se = samples.std(axis=0, ddof=1) / math.sqrt(samples.shape[0])
    return np.abs(samples.mean(axis=0) - target) / np.maximum(se, floor)
