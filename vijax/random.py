"""Random numbers for samplers and families: JAX's Threefry stream, the cipher fused on CPU.

``jax.random`` lowers the Threefry-2x32 cipher on CPU as a rolled loop (``lax.fori_loop`` over
its five groups of four rounds): XLA runs it as a while loop that writes both words of every
block to memory after each group, five passes, none fused with the transform that follows.
Here the same cipher (20 rounds, Salmon et al. 2011, rotations
``13, 15, 26, 6 / 17, 29, 16, 24``, key parity ``0x1BD11BDA``) is written out round by round
in ``jax.numpy``, so XLA fuses the 20 rounds into one vectorised loop over the counters that
writes each word once (see :func:`_words`): 4-5x less CPU time per word than the rolled
loop.

The words are JAX's own: word ``i`` of a draw of ``n`` is ``x0 ^ x1`` of the block
``threefry_2x32(key, (i >> 32, i & 0xffffffff))``, as ``jax.random.bits`` computes it under
``jax_threefry_partitionable`` (JAX's default since 0.5). So for Threefry keys
:func:`bits`, :func:`uniform` and :func:`normal` return what ``jax.random.bits``,
``jax.random.uniform`` and ``jax.random.normal`` return for the same key, only faster; what
statisticians know of JAX's stream holds unchanged.

- :func:`bits`: ``uint32`` words.
- :func:`uniform`: ``U[minval, maxval)`` from the top 23 bits of a word (the mantissa trick
  JAX uses: ``bitcast((w >> 9) | 0x3f800000) - 1`` lies in ``{0, 2^-23, ..., 1 - 2^-23}``).
- :func:`normal`: ``sqrt(2) erfinv(u)``, ``u ~ U(-1, 1)``, JAX's inverse-CDF transform.
- :func:`split`: ``jax.random.split`` (child ``i`` is the block ``(0, i)``).

Keys are explicit and the output is a pure function of ``(key, shape, dtype)``. The fused
path applies to Threefry keys (``jax.random.key(seed)``, the default, and raw ``PRNGKey``
arrays), float32 / 32-bit words, draws of at most ``2^31`` words and the partitionable stream;
any other key implementation (``impl="rbg"``, ``"unsafe_rbg"``, user-defined), dtype (float16,
bfloat16, float64 under x64) or setting goes to the same-named ``jax.random`` function, so
every key a user passes works, with the same numbers as ``jax.random``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vijax import _checks

Array = jax.Array

__all__ = ["bits", "uniform", "normal", "split", "is_threefry", "threefry_2x32"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Threefry-2x32 (Salmon et al. 2011, Table 4)
_PARITY = 0x1BD11BDA  # the key schedule's parity constant (Skein)
_MAX_WORDS = 2**31  # counters below 2^31: the high counter word is 0, int32 offsets exact


def is_threefry(key: Array) -> bool:
    """Whether ``key`` (one typed key, or a raw ``uint32`` key of shape ``(2,)``) is a
    Threefry-2x32 key, the ones :func:`bits` computes in one fused loop."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return str(jax.random.key_impl(key)) == "threefry2x32"
    # a raw key is read with JAX's default implementation
    return (key.dtype == jnp.uint32 and key.shape[-1:] == (2,)
            and jax.config.jax_default_prng_impl == "threefry2x32")


def threefry_2x32(k0: Array, k1: Array, x0: Array, x1: Array) -> tuple[Array, Array]:
    """The Threefry-2x32 block cipher, 20 rounds, unrolled (``uint32`` arrays broadcasting
    together): ``(x0, x1)`` encrypted under the key ``(k0, k1)``.

    Each round ``x0 += x1; x1 = rotl(x1, r) ^ x0`` with the rotation ``r`` of
    ``_ROTATIONS``; after every fourth round the key schedule
    ``(k0, k1, k2 = k0 ^ k1 ^ 0x1BD11BDA)`` is injected with the group number ``s``:
    ``x0 += k_{s mod 3}``, ``x1 += k_{(s+1) mod 3} + s``. Equal to
    ``jax.extend.random.threefry_2x32`` (tested), which lowers as a rolled loop on CPU.
    """
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(_PARITY))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for group in range(5):
        for r in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
        x0 = x0 + ks[(group + 1) % 3]
        x1 = x1 + ks[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


def _checked(key: Any, shape: Any, name: str = "shape") -> tuple[int, ...]:
    """The checks of every function here: one PRNG key (a batch of keys is refused, as
    ``jax.random`` refuses it) and a shape of non-negative Python or NumPy ints."""
    _checks.check_key("key", key)
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of integers; got {shape!r:.80}") from None
    return tuple(_checks.check_int(f"{name} entries", d, 0) for d in dims)


def _fast(key: Array, shape: tuple[int, ...]) -> bool:
    return (is_threefry(key) and bool(jax.config.jax_threefry_partitionable)
            and int(np.prod(shape, dtype=np.int64)) <= _MAX_WORDS)


def bits(key: Array, shape: Sequence[int] = ()) -> Array:
    """``shape`` uniform ``uint32`` words, equal to ``jax.random.bits(key, shape)``.

    For Threefry keys: word ``i`` (flat index) is ``x0 ^ x1`` of
    :func:`threefry_2x32` ``(key, (0, i))``, computed in one fused loop per trip of
    :func:`_words`.

    Args:
      key: one PRNG key (any implementation).
      shape: output shape.

    Returns:
      ``uint32`` array of ``shape``.
    """
    shape = _checked(key, shape)
    if not _fast(key, shape):
        return jax.random.bits(key, shape, jnp.uint32)
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(
        key.dtype, jax.dtypes.prng_key) else key
    return _words(data[0], data[1], int(np.prod(shape, dtype=np.int64))).reshape(shape)


def _words(k0: Array, k1: Array, n: int) -> Array:
    """Words ``0..n-1`` of the key ``(k0, k1)``, written to memory once.

    XLA duplicates cheap integer producers into every fusion that reads them: when the noise
    feeds several consumers (a sample, its log-density and their gradients), each would run
    the whole cipher again (1.6x the time of ``jax.random`` in the per-sample gradients). A
    loop of two trips (XLA removes loops of one) is a boundary fusion cannot cross: each trip
    runs the fused cipher on ``ceil(n / 2)`` counters and writes their words in place.
    """
    trips = 2
    size = -(-n // trips)

    def trip(t, out):
        counter = jax.lax.iota(jnp.uint32, size) + (t * size).astype(jnp.uint32)
        x0, x1 = threefry_2x32(k0, k1, jnp.zeros_like(counter), counter)
        return jax.lax.dynamic_update_slice(out, x0 ^ x1, (t * size,))

    out = jax.lax.fori_loop(0, trips, trip, jnp.zeros(trips * size, jnp.uint32))
    return out[:n]


def _unit(words: Array) -> Array:
    """float32 in ``[0, 1)`` from the top 23 bits: ``bitcast((w >> 9) | 0x3f800000) - 1``
    (a float in ``[1, 2)`` with the word's bits as mantissa, minus 1): resolution ``2^-23``."""
    one = jax.lax.bitcast_convert_type((words >> 9) | jnp.uint32(0x3F800000), jnp.float32)
    return one - 1.0


def uniform(key: Array, shape: Sequence[int] = (), dtype: Any = float,
            minval: float = 0.0, maxval: float = 1.0) -> Array:
    """``U[minval, maxval)``, equal to ``jax.random.uniform`` (``u (maxval - minval) + minval``,
    clipped below at ``minval``, ``u`` from the top 23 bits of a word of :func:`bits`).

    Args:
      key: one PRNG key.
      shape: output shape.
      dtype: a float dtype (``float``: JAX's default float).
      minval: lower end (included), a scalar (traced or not).
      maxval: upper end (excluded, up to rounding), a scalar.

    Returns:
      ``dtype`` array of ``shape``.
    """
    shape = _checked(key, shape)
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
    if dtype != jnp.float32 or not _fast(key, shape):
        return jax.random.uniform(key, shape, dtype, minval, maxval)
    lo, hi = jnp.asarray(minval, dtype), jnp.asarray(maxval, dtype)
    u = _unit(bits(key, shape))
    return jnp.maximum(lo, u * (hi - lo) + lo)


def normal(key: Array, shape: Sequence[int] = (), dtype: Any = float) -> Array:
    """Standard normal draws ``sqrt(2) erfinv(u)``, ``u ~ U(-1, 1)``, equal to
    ``jax.random.normal`` (its transform, with ``u`` from :func:`uniform`: the smallest ``u`` is
    ``nextafter(-1, 0)`` so ``erfinv`` stays finite; the largest draw is
    ``sqrt(2) erfinv(1 - 2^-22) = 5.17``, ``P(|z| > 5.17) = 2.4e-7``).

    Args:
      key: one PRNG key.
      shape: output shape.
      dtype: a float dtype.

    Returns:
      ``dtype`` array of ``shape``.
    """
    shape = _checked(key, shape)
    dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
    if dtype != jnp.float32 or not _fast(key, shape):
        return jax.random.normal(key, shape, dtype)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = uniform(key, shape, dtype, lo, 1.0)
    return np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(u)


def split(key: Array, num: int = 2) -> Array:
    """``num`` keys, equal to ``jax.random.split(key, num)``: for Threefry keys child ``i`` is
    the block :func:`threefry_2x32` ``(key, (0, i))`` (both words), computed fused.

    Args:
      key: one PRNG key (any implementation; typed or raw).
      num: number of children, ``>= 0``.

    Returns:
      ``(num,)`` keys of the same kind as ``key`` (typed, or raw ``(num, 2)`` ``uint32``).
    """
    _checked(key, ())
    num = _checks.check_int("num", num, 0)
    if not _fast(key, (num,)):
        return jax.random.split(key, num)
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    data = jax.random.key_data(key) if typed else key
    counter = jax.lax.iota(jnp.uint32, num)
    x0, x1 = threefry_2x32(data[0], data[1], jnp.zeros_like(counter), counter)
    children = jnp.stack([x0, x1], axis=-1)
    return jax.random.wrap_key_data(children, impl="threefry2x32") if typed else children
