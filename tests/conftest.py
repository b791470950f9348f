"""Shared test helpers."""

from __future__ import annotations

import contextlib

import jax


@contextlib.contextmanager
def no_compilation():
    """Fail if XLA compiles anything inside the block (bad input must fail before any work).

    Counts the backend-compile events JAX reports through ``jax.monitoring``.
    """
    events = []

    def listener(event, duration, **kwargs):
        if "backend_compile" in event:
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not events, f"compiled {len(events)} computation(s) before failing"
