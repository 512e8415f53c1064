"""Shared fixtures: an isolated cache, the shared data folder, and small trained models.

Every test session gets its own ADVLAB_CACHE (nothing leaks between runs) and ADVLAB_NO_DOWNLOAD
(nothing downloads during tests). The data folder comes from ADVLAB_DATA (default ../shared/data).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config):
    os.environ.setdefault("ADVLAB_DATA", str(DEFAULT_DATA))
    os.environ["ADVLAB_NO_DOWNLOAD"] = "1"
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("advlab-cache")
    os.environ["ADVLAB_CACHE"] = str(cache)
    yield cache


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["ADVLAB_DATA"])
    if not (path / "mnist").is_dir():
        pytest.fail(f"shared data not found at {path}; set ADVLAB_DATA to the folder holding mnist/ and cifar10/")
    return path


@pytest.fixture(scope="session")
def mnist_test():
    from advlab.data import load_dataset

    return load_dataset("mnist", "test")


@pytest.fixture(scope="session")
def mnist_train():
    from advlab.data import load_dataset

    return load_dataset("mnist", "train")


@pytest.fixture(scope="session")
def lenet_mnist(isolated_cache):
    """A LeNet trained for 2 epochs on 6,000 MNIST images: about 93% test accuracy in seconds."""
    from advlab.training import default_config, train_model

    config = default_config("mnist", model="lenet", epochs=2, train_subset=6000, lr=3e-3)
    model, meta, path, _ = train_model(config, torch.device("cpu"), progress=False)
    return model.eval(), meta, path


@pytest.fixture(scope="session")
def mnist_batch(mnist_test):
    """The first 64 MNIST test images and labels as one float batch."""
    return mnist_test.tensors(64)
