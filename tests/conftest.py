"""Shared test helpers."""

from __future__ import annotations

import contextlib

import jax


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
