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
                        atol: float = 1e-4) -> None:
    """``p`` is non-negative and sums to one along ``axis`` (of ``length`` when given)."""
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
        if not np.allclose(s, 1.0, atol=atol):
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
    dtype = np.dtype(getattr(images, "dtype", np.asarray(images).dtype))
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


def check_pixels(name: str, x: Any, input_dim: int, values: bool = True) -> None:
    """``x`` is a floating ``(B, input_dim)`` batch with ``B >= 1``; values in ``[0, 1]`` when
    concrete and ``values`` (under ``jit`` only the shape and dtype are checked; a training
    loop's step passes ``values=False`` so as not to copy every batch to the host)."""
    check_shape(name, x, (None, input_dim))
    dtype = np.dtype(getattr(x, "dtype", np.asarray(x).dtype))
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
