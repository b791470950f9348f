"""Tests of vijax.data.mnist: the three sources, IDX header checks, binarisation."""

from __future__ import annotations

import gzip
import struct

import jax
import numpy as np
import pytest

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
