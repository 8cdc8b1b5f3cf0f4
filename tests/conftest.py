"""Shared test setup: quiet TensorFlow, fixed seeds, a fresh Keras session per test, and trained
runs built once per test session (across pytest-xdist workers) and copied into each test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gc
import shutil
from pathlib import Path

import keras
import pytest
from helpers import build_once


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts from seed 0 and float32, and frees the graphs it built.

    Python's full garbage collection (what ``clear_session`` runs) walks every object of the
    process, a second a test in a worker that has imported TensorFlow and run a few trainings.
    Objects alive at the end of a test are frozen out of later collections instead
    (`gc.freeze`), so each test's collection walks what that test made; each module's end
    collects everything once (`_collect_module_garbage`)."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session(free_memory=False)
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True, scope="module")
def _collect_module_garbage():
    yield
    gc.unfreeze()
    gc.collect()


def _train_tiny(folder: Path) -> None:
    from helpers import at, tiny

    from zoo.training import Trainer

    Trainer(tiny(), options=at(folder)).fit()


@pytest.fixture(scope="session")
def tiny_run_source(tmp_path_factory) -> Path:
    """The finished run of `helpers.tiny()` (resnet20 at 1/8 width, 2 epochs on digits), made
    once per session. Read it; to change it, use `tiny_run`."""
    return build_once(tmp_path_factory, "tiny-run", _train_tiny)


@pytest.fixture
def tiny_run(tiny_run_source, tmp_path) -> Path:
    """A private copy of the session's tiny run, at ``tmp_path/run``."""
    return Path(shutil.copytree(tiny_run_source, tmp_path / "run"))
