"""Argument checks shared by the public entry points.

Each check runs on concrete values before anything is traced or compiled, and raises a
``ValueError`` that names the argument, says what was wrong and what was expected. Under
``jit`` (traced values) the value checks are skipped; shape checks still run because shapes
are static.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values (not a tracer), so value checks can run."""
    return not isinstance(x, jax.core.Tracer)


def _values(name: str, x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and x.is_deleted():
        raise ValueError(f"{name} was deleted: its buffer was donated to an earlier jitted "
                         "call (vijax.vae.train_step and train_epoch donate the state); pass "
                         "a live array")
    try:
        return np.asarray(x)
    except Exception as e:  # a ragged list, an object that is no array
        raise ValueError(f"{name} must be an array of numbers; got {type(x).__name__}") from e


def shape_of(name: str, x: Any) -> tuple[int, ...]:
    """The shape of ``x``, or a clear error if it is no array."""
    if hasattr(x, "shape"):
        return tuple(x.shape)
    return _values(name, x).shape


def check_shape(name: str, x: Any, shape: Sequence[int | None]) -> tuple[int, ...]:
    """``x`` has ``len(shape)`` axes; each axis whose entry is not None has that size."""
    actual = shape_of(name, x)
    parts = ["any" if s is None else str(s) for s in shape]
    want = "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")
    if len(actual) != len(shape) or any(
            s is not None and a != s for a, s in zip(actual, shape, strict=True)):
        raise ValueError(f"{name} must have shape {want}; got shape {actual}")
    return actual


def check_finite(name: str, x: Any) -> None:
    if is_concrete(x):
        v = _values(name, x)
        if not np.issubdtype(v.dtype, np.number) or np.issubdtype(v.dtype, np.complexfloating):
            raise ValueError(f"{name} must hold real numbers; got dtype {v.dtype}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite; found {np.size(v) - np.isfinite(v).sum()} "
                             "non-finite value(s)")


def check_positive(name: str, x: Any) -> None:
    """Every entry of ``x`` is finite and > 0."""
    check_finite(name, x)
    if is_concrete(x):
        v = _values(name, x)
        if not np.all(v > 0):
            raise ValueError(f"{name} must be > 0; got {_show(v)}")


def check_nonnegative_integers(name: str, x: Any) -> None:
    """Every entry of ``x`` is a finite whole number >= 0 (any dtype)."""
    check_finite(name, x)
    if is_concrete(x):
        v = _values(name, x)
        if np.any(v < 0):
            raise ValueError(f"{name} must be >= 0; found negative value(s) such as "
                             f"{v[v < 0].ravel()[0]}")
        if np.any(v != np.round(v)):
            raise ValueError(f"{name} must hold whole numbers (counts); found "
                             f"{v[v != np.round(v)].ravel()[0]}")


def check_probabilities(name: str, p: Any, length: int | None = None, axis: int = -1,
                        atol: float | None = 1e-4) -> None:
    """``p`` is non-negative and sums to one along ``axis`` within ``atol`` (of ``length``
    when given; ``atol=None`` leaves the sum to the caller)."""
    shape = shape_of(name, p)
    if len(shape) == 0:
        raise ValueError(f"{name} must be a probability vector; got a scalar")
    if length is not None and shape[axis] != length:
        raise ValueError(f"{name} must have {length} entries along axis {axis}; "
                         f"got shape {shape}")
    check_finite(name, p)
    if is_concrete(p):
        v = _values(name, p).astype(np.float64)
        if np.any(v < 0):
            raise ValueError(f"{name} must be non-negative probabilities; got {_show(v)}")
        s = v.sum(axis=axis)
        if atol is not None and not np.allclose(s, 1.0, atol=atol):
            raise ValueError(f"{name} must sum to 1 along axis {axis}; sums are {_show(s)}")


def check_int(name: str, x: Any, minimum: int, maximum: int | None = None) -> int:
    """``x`` is a Python or NumPy integer in ``[minimum, maximum]``; returns it as ``int``."""
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        raise ValueError(f"{name} must be an integer; got {x!r}")
    if x < minimum or (maximum is not None and x > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}; got {x}")
    return int(x)


def check_scalar(name: str, x: Any, minimum: float | None = None, strict: bool = False) -> float:
    """``x`` is a finite real number, ``> minimum`` (strict) or ``>= minimum``."""
    try:
        v = float(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a real number; got {x!r}") from e
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite; got {v}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}; got {v}")
    return v


def check_floating(name: str, x: Any) -> None:
    """``x`` holds floating-point numbers (parameters that are differentiated must)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = _values(name, x).dtype
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise ValueError(f"{name} must hold floating-point numbers (gradients need them; "
                         f"cast with .astype(float)); got dtype {dtype}")


def check_key(name: str, key: Any) -> None:
    """``key`` is one JAX PRNG key: a scalar typed key or a raw uint32 key of shape (2,).

    A batch of keys (``jax.random.split(key, n)``) is refused: pass one of them.
    """
    if hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name} must be a single PRNG key; got a batch of keys of shape "
                             f"{key.shape} (pass one of them, e.g. {name}[0])")
        return
    shape = shape_of(name, key)
    dtype = getattr(key, "dtype", None)
    if dtype == np.uint32 and len(shape) > 1 and shape[-1] == 2:
        raise ValueError(f"{name} must be a single PRNG key; got a batch of raw keys of shape "
                         f"{shape} (pass one of them, e.g. {name}[0])")
    if shape != (2,) or dtype != np.uint32:
        raise ValueError(f"{name} must be a PRNG key from jax.random.key(seed) or "
                         f"jax.random.PRNGKey(seed); got shape {shape} and dtype {dtype}")


def check_images(name: str, images: Any, input_dim: int = 784) -> np.ndarray:
    """``images`` is a floating ``(N, input_dim)`` array with values in ``[0, 1]``."""
    check_shape(name, images, (None, input_dim))
    dtype = np.dtype(images.dtype if hasattr(images, "dtype") else _values(name, images).dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"{name} must hold floating-point pixels in [0, 1] (divide uint8 "
                         f"images by 255); got dtype {dtype}")
    values = np.asarray(images)
    if values.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image; got shape {values.shape}")
    lo, hi = float(np.min(values)), float(np.max(values))
    if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
        raise ValueError(f"{name} must have pixel values in [0, 1]; got values in "
                         f"[{lo}, {hi}]")
    return values


def check_optimizer(name: str, optimizer: Any) -> None:
    """``optimizer`` is an Optax ``GradientTransformation`` (has ``init`` and ``update``)."""
    if not (callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))):
        raise ValueError(f"{name} must be an optax.GradientTransformation (e.g. "
                         f"optax.adam(1e-3)); got {type(optimizer).__name__}")


def check_pixels(name: str, x: Any, input_dim: int, values: bool = True) -> None:
    """``x`` is a floating ``(B, input_dim)`` batch with ``B >= 1``; values in ``[0, 1]`` when
    concrete and ``values`` (under ``jit`` only the shape and dtype are checked; a training
    loop's step passes ``values=False`` so as not to copy every batch to the host)."""
    check_shape(name, x, (None, input_dim))
    dtype = np.dtype(x.dtype if hasattr(x, "dtype") else _values(name, x).dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"{name} must hold floating-point pixels in [0, 1]; got dtype {dtype}")
    if shape_of(name, x)[0] < 1:
        raise ValueError(f"{name} must hold at least one image; got shape {shape_of(name, x)}")
    if values and is_concrete(x):
        v = np.asarray(x)
        if not (v.min() >= 0 and v.max() <= 1):  # NaN fails too
            raise ValueError(f"{name} must hold pixels in [0, 1] (divide uint8 images by "
                             f"255); got values in [{v.min()}, {v.max()}]")


def _show(v: np.ndarray, limit: int = 6) -> str:
    flat = np.ravel(v)
    text = np.array2string(flat[:limit], precision=4, separator=", ")
    return text if flat.size <= limit else text[:-1] + ", ...]"


# --- sampler and data checks
# (imports are local to keep this block self-contained.)
# Values checked as JAX will compute with them (after the cast to its float dtype), output
# sizes checked before anything is allocated, and file-system arguments checked for type.


def float_dtype(name: str, x: Any) -> np.dtype:
    """The floating dtype JAX computes ``x`` in: its own float dtype, canonicalised (float64
    becomes float32 unless x64 is on); the default float for integers and booleans.

    Raises a ``ValueError`` naming ``name`` for anything that holds no real numbers (strings,
    complex numbers, PRNG keys, ragged lists).
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = _values(name, x).dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        raise ValueError(f"{name} must hold real numbers; got a PRNG key")
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or np.issubdtype(dtype, np.integer):
        return np.dtype(jax.dtypes.canonicalize_dtype(float))
    if jax.dtypes.issubdtype(dtype, np.floating):
        return np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    raise ValueError(f"{name} must hold real numbers; got dtype {dtype}")


def check_real(name: str, x: Any, *, positive: bool = False, finite: bool = True,
               divisor: bool = False) -> np.dtype:
    """``x`` holds real numbers that keep their meaning in the dtype JAX computes them in.

    The values are checked after the cast to :func:`float_dtype` (when concrete): NaN is
    refused; with ``finite`` so are infinities and finite values that the cast makes infinite
    (``1e39`` in float32); with ``positive`` so are values ``<= 0`` and values below the
    smallest normal number of the dtype (``1e-40`` in float32), which the cast or the flushing
    of subnormals to zero on CPUs and GPUs turn into 0; with ``divisor`` so are values above
    ``1 / smallest normal`` (``8.5e37`` in float32): XLA divides by multiplying with the
    reciprocal, which is then flushed to 0 (``-inf / 1e38`` gives NaN).

    Returns:
      The dtype (:func:`float_dtype`).
    """
    dtype = float_dtype(name, x)
    if not is_concrete(x):
        return dtype
    v = _values(name, x)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        cast = v.astype(dtype).astype(np.float64)
    info = jax.numpy.finfo(dtype)
    if np.any(np.isnan(cast)):
        raise ValueError(f"{name} must not be NaN; found {int(np.isnan(cast).sum())} NaN "
                         "value(s)")
    if finite:
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite; found "
                             f"{int(np.size(v) - np.isfinite(v).sum())} non-finite value(s)")
        if not np.all(np.isfinite(cast)):
            bad = v[~np.isfinite(cast)].ravel()[0]
            raise ValueError(f"{name} must be finite in {dtype}, the dtype JAX computes it in "
                             f"(|value| <= {float(info.max):.4g}); got {bad}, which becomes "
                             "inf (enable jax_enable_x64 for float64)")
    if positive:
        if np.any(v <= 0):
            raise ValueError(f"{name} must be > 0; got {_show(v)}")
        if np.any(cast < float(info.tiny)):
            bad = v[cast < float(info.tiny)].ravel()[0]
            raise ValueError(f"{name} must be at least {float(info.tiny):.4g}, the smallest "
                             f"normal {dtype} (JAX computes it in {dtype}; smaller values "
                             f"become 0 there); got {bad} (enable jax_enable_x64 for "
                             "float64)")
    if divisor and np.any(cast > 1.0 / float(info.tiny)):
        bad = v[cast > 1.0 / float(info.tiny)].ravel()[0]
        raise ValueError(f"{name} must be at most {1.0 / float(info.tiny):.4g} (1 / the "
                         f"smallest normal {dtype}): XLA divides by {name} through its "
                         f"reciprocal, which would become 0; got {bad}")
    return dtype


_MEMORY_OF_DEVICE: dict[Any, int | None] = {}


def memory_bytes() -> int | None:
    """Memory of JAX's default device in bytes (the host's RAM for a CPU); None if unknown."""
    device = jax.config.jax_default_device
    if not isinstance(device, jax.Device):
        device = jax.devices()[0]
    if device not in _MEMORY_OF_DEVICE:
        _MEMORY_OF_DEVICE[device] = _memory_of(device)
    return _MEMORY_OF_DEVICE[device]


def _memory_of(device: Any) -> int | None:
    try:
        stats = device.memory_stats()
    except Exception:  # backends without memory statistics
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return host_memory_bytes() if device.platform == "cpu" else None


def host_memory_bytes() -> int | None:
    """The host's physical memory in bytes, or None where the OS does not say."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def check_output_size(name: str, shape: Sequence[int], dtype: Any,
                      what: str = "samples") -> None:
    """An array of ``shape`` and ``dtype`` fits in the default device's memory.

    Exact integer arithmetic: a shape whose element count overflows int64 (which XLA cannot
    represent) is refused too. ``name`` is the argument that sets the size.
    """
    import math

    count = math.prod(int(n) for n in shape)
    nbytes = count * np.dtype(dtype).itemsize
    limit = memory_bytes()
    if count >= 2**63 or (limit is not None and nbytes > limit):
        room = f"the {format_bytes(limit)} of memory of JAX's default device" if limit else \
            "what XLA can address (2**63 elements)"
        raise ValueError(f"{name} asks for an array of shape {tuple(shape)}, {count:.4g} "
                         f"{what} ({format_bytes(nbytes)} of {np.dtype(dtype)}), more than {room}; "
                         f"draw fewer at a time")


def check_path(name: str, path: Any, *, none_ok: bool = False) -> Any:
    """``path`` is a ``str`` or ``os.PathLike`` (or None when ``none_ok``); returns it as a
    ``pathlib.Path`` (or None)."""
    import os
    from pathlib import Path

    if path is None and none_ok:
        return None
    if isinstance(path, bool) or not isinstance(path, str | os.PathLike):
        expected = "a str or os.PathLike" + (" or None" if none_ok else "")
        raise ValueError(f"{name} must be {expected}; got {type(path).__name__} {path!r:.80}")
    try:
        return Path(path)
    except TypeError as e:  # an os.PathLike that gives bytes
        raise ValueError(f"{name} must be a str or os.PathLike giving a str; got {path!r:.80}"
                         ) from e


def format_bytes(n: int) -> str:
    """``n`` bytes in words: ``4 TiB``, ``7856 bytes``."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.4g} {unit}" if unit != "bytes" else f"{n} bytes"
        n /= 1024
    return f"{n} bytes"


# --- CAVI checks
# Generic helpers added for vijax.cavi (vijax/cavi/_validate.py builds its checks on them).


def check_instance(name: str, x: Any, cls: type, hint: str = "") -> None:
    """``x`` is an instance of ``cls`` (a pytree class such as a ``NamedTuple``); ``hint``
    says how to make one."""
    if not isinstance(x, cls):
        where = f"{cls.__module__.split('._')[0]}.{cls.__name__}"
        got = "None" if x is None else type(x).__name__
        raise ValueError(f"{name} must be a {where}" + (f" ({hint})" if hint else "")
                         + f"; got {got}")
