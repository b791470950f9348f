"""Several processes (``jax.distributed``): what CAVI and VAE training share.

Under JAX's multi-controller runtime every process runs the same program on its own part of
the data; a :class:`jax.sharding.Mesh` over ``jax.devices()`` (all processes' devices) makes
global arrays of which each process holds its rows, and the same jitted code reduces over
them with XLA's collectives. This module holds the host-side steps around that:
exchanging small numbers between processes, making global arrays from each process's rows
and reading a process's rows back, and refusing bad arguments on every process at once
(a process that raised alone would leave the others waiting in a collective).

Everything here is a no-op or the plain single-process path when ``jax.process_count() == 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def multiprocess() -> bool:
    """Whether this program runs as several JAX processes (``jax.distributed.initialize``)."""
    return jax.process_count() > 1


def allgather(values: Any) -> np.ndarray:
    """``(P, ...)`` every process's ``values`` (a small NumPy array), in process order."""
    return np.asarray(multihost_utils.process_allgather(np.asarray(values)))


def agree(check: Callable[[], Any]) -> Any:
    """Run the argument checks ``check()`` on every process and raise on all of them if any
    process's checks failed (a process that raised alone would leave the others waiting in
    a collective).

    The process whose checks failed raises its own ``ValueError``; the others raise one that
    names it. Returns ``check()``'s value. Single-process: just ``check()``.
    """
    if not multiprocess():
        return check()
    error, value = None, None
    try:
        value = check()
    except ValueError as e:
        error = e
    flags = allgather(np.int32(error is not None))
    if error is not None:
        raise error
    if flags.any():
        raise ValueError(f"process(es) {np.flatnonzero(flags).tolist()} refused their "
                         "arguments (their error says why); every process stops")
    return value


def check_same(what: str, values: Any) -> None:
    """Raise on every process when ``values`` (a small array: the key, settings) differ
    between processes. Single-process: nothing."""
    if not multiprocess():
        return
    mine = np.asarray(values)
    if not all(np.array_equal(mine, other) for other in allgather(mine)):
        raise ValueError(f"{what} must be the same on every process; process "
                         f"{jax.process_index()} has {mine.tolist()}, another differs")


def global_mesh(axis: str) -> Mesh:
    """A one-axis mesh over every process's devices (``jax.devices()``)."""
    return Mesh(np.asarray(jax.devices()), (axis,))


def process_rows(mesh: Mesh, rows: int) -> np.ndarray:
    """``(P,)`` the first global row held by each process, for an array of ``rows`` rows
    sharded over ``mesh``'s one axis (each process's rows are contiguous)."""
    axis = mesh.axis_names[0]
    sharding = NamedSharding(mesh, PartitionSpec(axis))
    starts = np.full(jax.process_count(), rows, np.int64)
    for device, index in sharding.devices_indices_map((rows,)).items():
        start = index[0].start or 0
        starts[device.process_index] = min(starts[device.process_index], start)
    return starts


def global_rows(mesh: Mesh, local: np.ndarray) -> jax.Array:
    """A global array sharded along its first axis over ``mesh`` from this process's rows
    ``local`` (every process passes the same number of rows)."""
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    return jax.make_array_from_process_local_data(sharding, np.asarray(local))


def replicated(mesh: Mesh, tree: Any) -> Any:
    """Every leaf of ``tree`` (host values equal on every process) as a global array
    replicated over ``mesh``; None leaves stay None."""
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(leaf):
        value = np.asarray(leaf)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(put, tree)


def local_rows(array: jax.Array, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a global ``array`` sharded (or replicated) along its first axis,
    from this process's shards; they must all be held here."""
    out = np.empty((stop - start, *array.shape[1:]), array.dtype)
    filled = np.zeros(stop - start, bool)
    for shard in array.addressable_shards:
        index = shard.index[0]
        lo, hi = index.start or 0, array.shape[0] if index.stop is None else index.stop
        a, b = max(lo, start), min(hi, stop)
        if a < b:
            out[a - start:b - start] = np.asarray(shard.data)[a - lo:b - lo]
            filled[a - start:b - start] = True
    if not filled.all():
        raise RuntimeError(f"rows {start}:{stop} are not all held by process "
                           f"{jax.process_index()}")
    return out


def to_local(tree: Any) -> Any:
    """Global arrays as whole arrays of this process (on its first local device), so that
    they can be used without the other processes; other leaves unchanged. A replicated
    array is read from this process's copy; a sharded one is gathered from every process
    (a collective: every process converts the same tree)."""
    def local(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return leaf
        if leaf.is_fully_replicated:
            value = leaf.addressable_data(0)
        else:
            value = multihost_utils.process_allgather(leaf, tiled=True)
        return jax.device_put(value, jax.local_devices()[0])

    return jax.tree.map(local, tree)
