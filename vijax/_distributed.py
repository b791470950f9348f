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

import hashlib
import inspect
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

    Any exception counts, not only the checks' ``ValueError`` (an object whose attribute
    raises, say). The process whose checks failed raises its own exception, after the
    exchange; the others raise a ``ValueError`` that names it. Returns ``check()``'s value.
    Single-process: just ``check()``.
    """
    if not multiprocess():
        return check()
    error, value = None, None
    try:
        value = check()
    except Exception as e:  # noqa: BLE001 -- re-raised below, after every process knows
        error = e
    flags = allgather(np.int32(error is not None))
    if error is not None:
        raise error
    if flags.any():
        raise ValueError(f"process(es) {np.flatnonzero(flags).tolist()} failed the argument "
                         "checks (their error says why); every process stops")
    return value


def fingerprint(value: Any) -> bytes:
    """A SHA-256 digest of ``value`` that is the same in every process for equal settings.

    What is read: arrays (NumPy, JAX, NumPy scalars) by dtype, shape and bytes; ``None``,
    numbers, strings and other objects whose ``repr`` holds no memory address by ``repr``;
    tuples, lists (NamedTuples included) and dicts element by element; functions (such as
    an Optax optimizer's ``init`` and ``update``) by module and qualified name, default
    arguments and the values captured in their closures, recursively (so
    ``optax.adam(1e-3)`` and ``optax.adam(1e-2)`` differ: the learning rate is captured);
    other objects by type and attributes (``vars``). Cycles are cut; values reached more than
    ``24`` levels down are read by type only.
    """
    digest = hashlib.sha256()
    _feed(digest, value, 0, set())
    return digest.digest()


def _feed(digest: Any, value: Any, depth: int, seen: set) -> None:
    """Add ``value`` to ``digest`` (:func:`fingerprint`)."""
    def put(tag: str, text: str | bytes = b"") -> None:
        digest.update(tag.encode() + b"\0")
        digest.update(text.encode() if isinstance(text, str) else text)
        digest.update(b"\0")

    kind = type(value)
    if isinstance(value, np.ndarray | np.generic | jax.Array):
        array = np.asarray(value)
        put("array", f"{array.dtype.str}{array.shape}")
        put("bytes", np.ascontiguousarray(array).tobytes())
        return
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        put(kind.__name__, repr(value))
        return
    if depth >= 24 or id(value) in seen:
        put("cut", f"{kind.__module__}.{kind.__qualname__}")
        return
    seen = seen | {id(value)}
    if isinstance(value, tuple | list):
        put(f"{kind.__module__}.{kind.__qualname__}", str(len(value)))
        for item in value:
            _feed(digest, item, depth + 1, seen)
        return
    if isinstance(value, dict):
        put("dict", str(len(value)))
        for name in sorted(value, key=repr):
            _feed(digest, name, depth + 1, seen)
            _feed(digest, value[name], depth + 1, seen)
        return
    if inspect.isfunction(value):
        put("function", f"{value.__module__}.{value.__qualname__}")
        _feed(digest, value.__defaults__, depth + 1, seen)
        cells = value.__closure__ or ()
        _feed(digest, [_cell(cell) for cell in cells], depth + 1, seen)
        return
    text = repr(value)
    if " at 0x" not in text:
        put("repr", f"{kind.__module__}.{kind.__qualname__}:{text}")
        return
    put("object", f"{kind.__module__}.{kind.__qualname__}")
    _feed(digest, getattr(value, "__dict__", None), depth + 1, seen)


def _cell(cell: Any) -> Any:
    """A closure cell's value (None for an empty cell)."""
    try:
        return cell.cell_contents
    except ValueError:
        return None


def check_same(settings: dict[str, Any]) -> None:
    """Raise on every process when any of ``settings`` (name: value, read by
    :func:`fingerprint`) differs between processes, naming those that differ.
    Single-process: nothing."""
    if not multiprocess():
        return
    names = list(settings)
    mine = np.stack([np.frombuffer(fingerprint(settings[name]), np.uint8) for name in names])
    every = allgather(mine)
    differ = [name for i, name in enumerate(names)
              if not all(np.array_equal(mine[i], other[i]) for other in every)]
    if differ:
        raise ValueError(f"{', '.join(differ)} must be the same on every process (process "
                         f"{jax.process_index()}'s value differs from another process's)")


def sorted_devices(devices: Any = None) -> list:
    """``devices`` (default ``jax.devices()``) ordered by ``(process_index, id)``, so that each
    process's devices are consecutive in a mesh over them, whatever order the platform lists
    them in."""
    devices = jax.devices() if devices is None else devices
    return sorted(devices, key=lambda d: (d.process_index, d.id))


def global_mesh(axis: str) -> Mesh:
    """A one-axis mesh over every process's devices (:func:`sorted_devices`: each process's
    devices consecutive)."""
    return Mesh(np.asarray(sorted_devices()), (axis,))


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
