"""Loaders: shapes, ranges, class counts, every layout, caching, and clear errors on bad files."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.data import CANONICAL_FINGERPRINTS, load_dataset, read_image_folder
from advlab.data.mnist import embedded_dir
from advlab.errors import AdvlabError

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_splits_have_canonical_shapes_ranges_and_counts(mnist_train, mnist_test):
    for data, counts in ((mnist_train, MNIST_TRAIN_COUNTS), (mnist_test, MNIST_TEST_COUNTS)):
        assert data.shape == (1, 28, 28) and data.classes == [str(i) for i in range(10)]
        assert torch.bincount(data.labels).tolist() == counts
        x, y = data.tensors(256)
        assert x.dtype == torch.float32 and x.shape == (256, 1, 28, 28)
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0


def test_mnist_falls_back_to_the_embedded_copy_only_when_no_folder_was_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path))  # a data folder without MNIST (e.g. CIFAR-10 only)
    data = load_dataset("mnist", "test")
    assert data.meta["source"] == "embedded" and len(data) == 10000
    with pytest.raises(AdvlabError, match="MNIST test files not found in .*fix --data-dir"):
        load_dataset("mnist", "test", data_dir=tmp_path)
    with pytest.raises(AdvlabError, match="--data-dir .*missing.* does not exist"):
        load_dataset("mnist", "test", data_dir=tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(AdvlabError, match="is a file, not a folder"):
        load_dataset("mnist", "test", data_dir=tmp_path / "file")
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path / "missing"))
    with pytest.raises(AdvlabError, match="ADVLAB_DATA .* does not exist"):
        load_dataset("mnist", "test")


def test_mnist_from_user_files_is_cached(tmp_path, isolated_cache):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in embedded_dir().glob("t10k-*"):
        (folder / f.name).write_bytes(f.read_bytes())
    data = load_dataset("mnist", "test", data_dir=tmp_path)
    assert data.meta["source"] == str(folder) and len(data) == 10000
    assert list((isolated_cache / "decoded").glob("mnist-test-*.npz"))
    # the same bytes at another path are the same data: the fingerprint is that of the packaged copy
    assert data.fingerprint == CANONICAL_FINGERPRINTS["mnist-test"] == load_dataset("mnist", "test").fingerprint


def _write_idx(path, magic, array):
    header = struct.pack(">II", magic, len(array)) + (struct.pack(">II", *array.shape[1:]) if magic == 2051 else b"")
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_truncated_gzip_and_wrong_magic_are_refused(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    raw = (embedded_dir() / "t10k-images-idx3-ubyte.gz").read_bytes()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes((embedded_dir() / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(AdvlabError, match="corrupt or truncated"):
        load_dataset("mnist", "test", data_dir=tmp_path)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", 2049, np.zeros((10, 28, 28)))
    with pytest.raises(AdvlabError, match="magic number 2049"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_cifar10_image_folders(data_dir):
    data = load_dataset("cifar10", "test", data_dir=data_dir)
    assert data.shape == (3, 32, 32) and len(data) == 10000
    assert data.classes[4] == "deer"
    assert torch.bincount(data.labels).tolist() == [1000] * 10
    x, y = data.tensors(100)
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert len(set(y.tolist())) == 10, "the first images must sample every class, not only airplanes"


def test_cifar10_pickled_batches_are_read_without_running_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
    labels = list(rng.integers(0, 10, 20))
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": data, b"labels": [int(v) for v in labels]}, f)
    loaded = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert loaded.images.shape == (20, 3, 32, 32)
    assert torch.equal(loaded.images.reshape(20, -1), torch.from_numpy(data))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(AdvlabError, match="not a readable CIFAR-10 batch"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_missing_cifar10_names_the_files_and_the_folder(tmp_path):
    with pytest.raises(AdvlabError, match=r"CIFAR-10 test split not found in .*cifar-10-batches-py"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def _make_folder(root, classes, n, size=(40, 30), bad=False):
    rng = np.random.default_rng(1)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    if bad:
        (root / classes[0] / "broken.jpg").write_bytes(b"not an image")


def test_user_image_folder_is_resized_split_and_labelled(tmp_path):
    _make_folder(tmp_path / "pets", ["cat", "dog"], 10)
    data = read_image_folder(tmp_path / "pets", size=16)
    assert data.classes == ["cat", "dog"] and data.images.shape == (20, 3, 16, 16)
    train = load_dataset(f"folder:{tmp_path / 'pets'}", "train", image_size=16)
    test = load_dataset(f"folder:{tmp_path / 'pets'}", "test", image_size=16)
    assert len(train) == 16 and len(test) == 4
    gray = read_image_folder(tmp_path / "pets", size=8, channels=1)
    assert gray.shape == (1, 8, 8)


def test_undecodable_image_and_empty_folder_are_user_errors(tmp_path):
    _make_folder(tmp_path / "bad", ["a"], 2, bad=True)
    with pytest.raises(AdvlabError, match="cannot decode image .*broken.jpg"):
        read_image_folder(tmp_path / "bad", size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdvlabError, match="no class subfolders"):
        read_image_folder(tmp_path / "empty", size=8)


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(AdvlabError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(AdvlabError, match="unknown split"):
        load_dataset("mnist", "validation")
