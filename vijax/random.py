"""Random numbers for the samplers: 32-bit words, uniforms and normals from an explicit key, at
two words per Threefry call.

JAX's default (``jax_threefry_partitionable``, on since JAX 0.5) draws each 32-bit word as the
XOR of the two output words of one Threefry-2x32 call on the word's index, so every float32
sample costs a whole 20-round block. Counter mode keeps both words instead (the construction
of Salmon et al. 2011 and of JAX's older, non-partitionable stream): the ``m``-th block
``threefry_2x32(key, (m, TAG))`` gives words ``m`` and ``m + ceil(n/2)`` of ``n``. Half the
blocks for the same number of words; nothing else changes: the same cipher (20 rounds), the
same key, no state.

- :func:`bits`: ``uint32`` words.
- :func:`uniform`: ``U[minval, maxval)`` from the top 23 bits of a word (the mantissa trick
  JAX uses: ``bitcast((w >> 9) | 0x3f800000) - 1`` lies in ``{0, 2^-23, ..., 1 - 2^-23}``).
- :func:`normal`: ``sqrt(2) erfinv(u)``, ``u ~ U(-1, 1)``, JAX's inverse-CDF transform.

The second counter word is the constant ``TAG = 0x76696a61`` (``"vija"``), so these blocks
never coincide with the blocks ``jax.random.split`` / ``jax.random.bits`` evaluate (second
word = the index's high half, 0 below ``2^32`` draws): words drawn here are not the data of
the key's children.

Keys are explicit and the output is a pure function of ``(key, shape, dtype)``. The fast path
applies to Threefry keys (``jax.random.key(seed)``, the default, and raw ``PRNGKey`` arrays)
and float32 / 32-bit words; any other key implementation (``impl="rbg"``, ``"unsafe_rbg"``,
user-defined) or dtype (float16, bfloat16, float64 under x64) is passed to the same-named
``jax.random`` function, so every key a user passes works and is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p

Array = jax.Array

__all__ = ["TAG", "bits", "uniform", "normal", "is_threefry"]

TAG = 0x76696A61
"""Second counter word of every block (ASCII ``"vija"``); see the module docstring."""

_MAX_BLOCKS = 2**32 - 1  # the first counter word is a uint32 index


def is_threefry(key: Array) -> bool:
    """Whether ``key`` (one typed key, or a raw ``uint32`` key of shape ``(2,)``) is a
    Threefry-2x32 key, the ones :func:`bits` draws two words per block from."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return str(jax.random.key_impl(key)) == "threefry2x32"
    return key.dtype == jnp.uint32 and key.shape[-1:] == (2,)


def _blocks(key: Array, n: int) -> Array:
    """``n`` uint32 words from ``ceil(n/2)`` Threefry-2x32 blocks ``(m, TAG)``, ``m = 0, 1, ...``:
    block ``m`` gives words ``m`` and ``m + ceil(n/2)``."""
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(
        key.dtype, jax.dtypes.prng_key) else key
    m = -(-n // 2)
    counter = jax.lax.iota(jnp.uint32, m)
    x0, x1 = threefry2x32_p.bind(data[0], data[1], counter, jnp.full_like(counter, TAG))
    return jnp.concatenate([x0, x1])[:n]


def _fast(key: Array, shape: tuple[int, ...]) -> bool:
    return is_threefry(key) and -(-int(np.prod(shape, dtype=np.int64)) // 2) <= _MAX_BLOCKS


def bits(key: Array, shape: Sequence[int] = ()) -> Array:
    """``shape`` uniform ``uint32`` words: two per Threefry block for Threefry keys, otherwise
    ``jax.random.bits(key, shape, uint32)``.

    Args:
      key: one PRNG key (any implementation).
      shape: output shape.

    Returns:
      ``uint32`` array of ``shape``.
    """
    shape = tuple(int(d) for d in shape)
    if not _fast(key, shape):
        return jax.random.bits(key, shape, jnp.uint32)
    return _blocks(key, int(np.prod(shape, dtype=np.int64))).reshape(shape)


def _unit(words: Array) -> Array:
    """float32 in ``[0, 1)`` from the top 23 bits: ``bitcast((w >> 9) | 0x3f800000) - 1``
    (a float in ``[1, 2)`` with the word's bits as mantissa, minus 1): resolution ``2^-23``."""
    one = jax.lax.bitcast_convert_type((words >> 9) | jnp.uint32(0x3F800000), jnp.float32)
    return one - 1.0


def uniform(key: Array, shape: Sequence[int] = (), dtype: Any = float,
            minval: float = 0.0, maxval: float = 1.0) -> Array:
    """``U[minval, maxval)`` as ``jax.random.uniform`` computes it (``u (maxval - minval) +
    minval``, clipped below at ``minval``), from :func:`bits` for float32 and Threefry keys.

    Args:
      key: one PRNG key.
      shape: output shape.
      dtype: a float dtype (``float``: JAX's default float).
      minval: lower end (included), a Python or NumPy scalar.
      maxval: upper end (excluded, up to rounding), a Python or NumPy scalar.

    Returns:
      ``dtype`` array of ``shape``.
    """
    shape = tuple(int(d) for d in shape)
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
    if dtype != jnp.float32 or not _fast(key, shape):
        return jax.random.uniform(key, shape, dtype, minval, maxval)
    lo, hi = np.float32(minval), np.float32(maxval)
    u = _unit(bits(key, shape))
    return jnp.maximum(lo, u * (hi - lo) + lo)


def normal(key: Array, shape: Sequence[int] = (), dtype: Any = float) -> Array:
    """Standard normal draws ``sqrt(2) erfinv(u)``, ``u ~ U(-1, 1)`` (JAX's transform, with
    ``u`` from :func:`uniform`: the smallest ``u`` is ``nextafter(-1, 0)`` so ``erfinv`` stays
    finite; the largest draw is ``sqrt(2) erfinv(1 - 2^-22) = 5.17``, ``P(|z| > 5.17) = 2.3e-7``).

    Args:
      key: one PRNG key.
      shape: output shape.
      dtype: a float dtype.

    Returns:
      ``dtype`` array of ``shape``.
    """
    shape = tuple(int(d) for d in shape)
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
    if dtype != jnp.float32 or not _fast(key, shape):
        return jax.random.normal(key, shape, dtype)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = uniform(key, shape, dtype, lo, 1.0)
    return np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(u)
