"""Tests of vijax.data.mnist: the three sources, IDX header checks, binarisation."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import no_compilation

from vijax.data.mnist import binarize, load_mnist, read_idx


def _idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                      *array.shape)
    big_endian = {0x08: ">u1", 0x0C: ">i4"}[code]
    return header + array.astype(big_endian).tobytes()


def _write_folder(folder, n_train=6, n_test=4, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        raw = _idx_bytes(a)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_roundtrip(tmp_path, gz):
    arrays = _write_folder(tmp_path / "d", gz=gz)
    for source in (f"idx:{tmp_path / 'd'}", tmp_path / "d"):
        data = load_mnist(source)
        assert data.train_images.shape == (6, 784) and data.test_images.shape == (4, 784)
        assert data.train_images.dtype == np.float32
        np.testing.assert_array_equal(
            data.train_images, arrays["train-images-idx3-ubyte"].reshape(6, 784) / np.float32(255))
        np.testing.assert_array_equal(data.test_labels, arrays["t10k-labels-idx1-ubyte"])


def test_read_idx_other_types(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    (tmp_path / "x").write_bytes(_idx_bytes(a, code=0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), a)


def test_idx_rejects_corrupt_magic(tmp_path):
    _write_folder(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[0:4] = b"\x1f\x8b\x08\x03"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"magic number 0x1f8b0803"):
        load_mnist(tmp_path)


def test_idx_rejects_truncated_and_padded_files(tmp_path):
    _write_folder(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(ValueError, match=r"truncated.*dimensions \(4, 28, 28\)"):
        load_mnist(tmp_path)
    path.write_bytes(raw + b"\0")
    with pytest.raises(ValueError, match="longer than its header"):
        load_mnist(tmp_path)
    path.write_bytes(raw[:9])
    with pytest.raises(ValueError, match="inside its header"):
        load_mnist(tmp_path)


def test_idx_rejects_truncated_gzip(tmp_path):
    _write_folder(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="could not read IDX file .*train-images"):
        load_mnist(tmp_path)


def test_idx_rejects_wrong_image_size_and_label_count(tmp_path):
    _write_folder(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((6, 27, 27))))
    with pytest.raises(ValueError, match=r"shape \(6, 27, 27\).*\(N, 28, 28\)"):
        load_mnist(tmp_path)
    _write_folder(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5)))
    with pytest.raises(ValueError, match=r"labels of shape \(5,\); expected \(6,\)"):
        load_mnist(tmp_path)


def test_idx_missing_folder_and_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no train-images-idx3-ubyte.*readme.txt"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="source must be"):
        load_mnist("fashion")


def test_mnist5k_split_rule():
    data = load_mnist("mnist5k")
    assert data.train_images.shape == (4000, 784) and data.test_images.shape == (1000, 784)
    np.testing.assert_array_equal(np.bincount(data.train_labels), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(data.test_labels), np.full(10, 100))
    assert data.train_images.min() == 0.0 and data.train_images.max() == 1.0
    # The rule is "row i is a test image iff i % 5 == 4": no image is in both sets.
    train = {r.tobytes() for r in data.train_images}
    assert sum(r.tobytes() in train for r in data.test_images) == 0


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=5):
        data = load_mnist("mnist")
    assert data.train_images.shape == (5, 784) and data.test_images.shape == (5, 784)
    assert 0.0 <= data.train_images.min() and data.train_images.max() <= 1.0
    assert data.train_labels.dtype == np.int32


def test_tfds_source_missing_says_what_to_do(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match=r"could not load MNIST.*source='mnist5k'"):
        load_mnist("mnist", data_dir=tmp_path, download=False)


def test_binarize():
    x = np.array([[0.0, 0.2, 0.5, 0.51, 1.0]], np.float32)
    np.testing.assert_array_equal(binarize(x, "round"), [[0, 0, 0, 1, 1]])
    np.testing.assert_array_equal(binarize(x, "none"), x)
    with pytest.raises(ValueError, match="key must be a PRNG key"):
        binarize(x, "dynamic")
    with pytest.raises(ValueError, match="method must be one of"):
        binarize(x, "threshold")
    # Dynamic: a Bernoulli(p) draw; mean within 5 sigma of p over n draws, and keys differ.
    n, p = 20_000, 0.3
    draws = np.asarray(binarize(np.full((n,), p), "dynamic", key=jax.random.PRNGKey(0)))
    assert set(np.unique(draws)) <= {0.0, 1.0}
    assert abs(draws.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    other = np.asarray(binarize(np.full((n,), p), "dynamic", key=jax.random.PRNGKey(1)))
    assert np.any(draws != other)


# --------------------------------------------------------------------------- bounded reads


def _idx_header(dims, code=0x08) -> bytes:
    return struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def _peak_bytes(fn) -> tuple[int, Exception | None]:
    """Peak Python allocation (tracemalloc) while ``fn`` runs, and what it raised."""
    tracemalloc.start()
    try:
        fn()
        raised = None
    except Exception as e:  # noqa: BLE001 - returned to the caller, which checks it
        raised = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


def test_gzip_bomb_is_rejected_reading_no_more_than_its_header_says(tmp_path):
    """A header that says 10 images (7,856 bytes) on a stream that inflates to 64 MiB: read the
    header, then at most the announced size plus one byte (the old reader held it all, twice)."""
    inflated = 64 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    parts = [c.compress(_idx_header((10, 28, 28)))]
    parts += [c.compress(bytes(1 << 20)) for _ in range(inflated >> 20)] + [c.flush()]
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(b"".join(parts))
    peak, raised = _peak_bytes(lambda: read_idx(bomb))
    assert isinstance(raised, ValueError)
    assert "longer than its header says" in str(raised) and "(10, 28, 28)" in str(raised)
    assert peak < inflated / 64, f"peak {peak / 2**20:.1f} MiB reading a 10-image header"


def test_plain_file_longer_than_its_header_is_rejected_before_reading(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(_idx_header((10, 28, 28)) + bytes(16 << 20))
    peak, raised = _peak_bytes(lambda: read_idx(path))
    assert isinstance(raised, ValueError) and "longer than its header says" in str(raised)
    assert peak < 1 << 20


@pytest.mark.parametrize("gz", [False, True])
def test_header_sizes_are_exact_integers(tmp_path, gz):
    """65536**4 bytes is 2**64: int64 arithmetic wraps it to 0, so a header-only file passed the
    size check (then failed in reshape). Headers asking for 2**32 images of 28x28, or more, on a
    file of 10 are refused as more than the machine holds or as truncated, without reading for
    them."""
    for dims, data in (((65536,) * 4, 0), ((65536,) * 4, 7840), ((2**32 - 1, 28, 28), 7840),
                       ((2**32 - 1,) * 3, 7840)):
        raw = _idx_header(dims) + bytes(data)
        path = tmp_path / ("x.gz" if gz else "x")
        path.write_bytes(gzip.compress(raw) if gz else raw)
        peak, raised = _peak_bytes(lambda path=path: read_idx(path))
        assert isinstance(raised, ValueError), raised
        assert f"dimensions {dims}" in str(raised)
        assert peak < 1 << 20


# --------------------------------------------------------------------------- bad arguments


def before_any_work():
    """Fail if JAX lowers or compiles anything, or moves host data to the device."""
    return no_compilation(strict=True)


KEY = jax.random.key(0)
GREY = np.full((2, 784), 0.5, np.float32)


def _bad_data_inputs():
    rows = []

    def add(ident, fn, args, kwargs, word):
        rows.append(pytest.param(fn, args, kwargs, word, id=ident))

    for what, key in [("int", 42), ("batch", jax.random.split(KEY, 3)),
                      ("raw batch", jax.random.split(jax.random.PRNGKey(0))),
                      ("float pair", np.zeros(2, np.float32)), ("string", "key"),
                      ("list", [0, 1])]:
        for method in ("round", "dynamic", "none"):
            add(f"binarize-key-{what}-{method}", binarize, (GREY, method), {"key": key}, "key")
    add("binarize-key-None-dynamic", binarize, (GREY, "dynamic"), {}, "key")
    for what, images in [("above 1", np.full((2, 784), 255.0)), ("negative", -GREY),
                         ("nan", np.full(3, np.nan)), ("string", np.array(["a"])),
                         ("complex", np.array([0.5 + 1j])), ("None", None),
                         ("ragged", [[0.0], [0.0, 1.0]]), ("object", np.array([{}])),
                         ("key", KEY)]:
        add(f"binarize-images-{what}", binarize, (images,), {}, "images")
    for what, method in [("unknown", "threshold"), ("None", None), ("list", ["round"]),
                         ("int", 1), ("bool", True)]:
        add(f"binarize-method-{what}", binarize, (GREY, method), {}, "method")
    for what, path in [("int", 42), ("None", None), ("float", 2.5), ("bytes", b"/tmp/x"),
                       ("list", ["a"]), ("bool", True)]:
        add(f"read_idx-path-{what}", read_idx, (path,), {}, "path")
    for what, source in [("int", 42), ("None", None), ("unknown", "fashion"),
                         ("empty idx", "idx:"), ("list", ["mnist5k"]), ("bytes", b"mnist")]:
        add(f"load_mnist-source-{what}", load_mnist, (source,), {}, "source")
    for what, data_dir in [("int", 42), ("list", ["x"]), ("bytes", b"/tmp"), ("bool", False)]:
        add(f"load_mnist-data_dir-{what}", load_mnist, ("mnist5k",), {"data_dir": data_dir},
            "data_dir")
    for what, download in [("string", "yes"), ("int", 1), ("None", None), ("path", Path("."))]:
        add(f"load_mnist-download-{what}", load_mnist, ("mnist5k",), {"download": download},
            "download")
    jitted = jax.jit(binarize, static_argnames="method")
    add("jit-binarize-key batch", jitted, (GREY, "dynamic"), {"key": jax.random.split(KEY)},
        "key")
    add("jit-binarize-method unknown", jitted, (GREY, "threshold"), {}, "method")
    add("jit-binarize-images complex", jitted, (np.array([0.5 + 1j]),), {}, "images")
    return rows


BAD_DATA_INPUTS = _bad_data_inputs()


def test_bad_data_input_table_covers_every_public_function():
    import vijax.data

    covered = {p.values[0].__name__ for p in BAD_DATA_INPUTS}
    taking_arguments = {"load_mnist", "binarize", "read_idx"}  # load_quakes takes none
    assert taking_arguments <= set(vijax.data.__all__) and covered == taking_arguments


@pytest.mark.parametrize("fn, args, kwargs, word", BAD_DATA_INPUTS)
def test_bad_data_input_raises_value_error_naming_the_argument_before_any_work(fn, args, kwargs,
                                                                               word):
    with before_any_work(), pytest.raises(ValueError, match=word):
        fn(*args, **kwargs)
