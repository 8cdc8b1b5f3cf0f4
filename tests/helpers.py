"""What many test files need: the tiny training run, quiet run options, and readers of a run's
history and checkpoints. (Fixtures live in ``conftest.py``; child processes in ``scripts.py``.)"""

from __future__ import annotations

import csv
import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from zoo.config import RunOptions, TrainConfig

# The tests' precision unless a test asks for another: float32, so that their numbers are the same
# on every CPU (``auto`` is mixed_bfloat16 on a CPU with bfloat16 instructions, float32 on others).
PRECISION = "float32"


def tiny(**overrides) -> TrainConfig:
    """A seconds-long run: resnet20 at 1/8 width on digits (19 steps an epoch at batch 64)."""
    return TrainConfig(
        **{
            "model": "resnet20",
            "width": 0.125,
            "batch_size": 64,
            "epochs": 2,
            "precision": PRECISION,
            **overrides,
        }
    )


def at(path, **options) -> RunOptions:
    """Options of a quiet run in ``path``."""
    return RunOptions(run_dir=str(path), verbose=False, **options)


def history_rows(run) -> list[dict[str, str]]:
    """The rows of a run's ``history.csv``."""
    with open(Path(run) / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def checkpoint_arrays(prefix: str) -> dict[str, np.ndarray]:
    """A checkpoint's numeric values by name (not the object graph, not ``save_counter``)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    names = [n for n in reader.get_variable_to_shape_map() if "save_counter" not in n]
    arrays = {n: np.asarray(reader.get_tensor(n)) for n in names}
    return {n: a for n, a in arrays.items() if a.dtype.kind in "fiu"}


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder every worker of this test session sees: under pytest-xdist the workers' base
    temporary folders share a parent that belongs to this session alone."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    root.mkdir(exist_ok=True)
    return root


def build_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """``root/name``, made by ``build(folder)`` the first time any worker asks for it: the
    others wait on a file lock and reuse it. It is built where it stays (a run records its own
    path), and counts as made once ``build`` returns; what a failed build left is removed by
    the next test that asks, which builds it again (and fails with the real error)."""
    root = _shared_root(tmp_path_factory)
    target, made = root / name, root / f"{name}.made"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            shutil.rmtree(target, ignore_errors=True)
            build(target)
            made.touch()
    return target


def train_for_export(run: Path) -> None:
    """Two epochs of resnet20 at 1/4 width on digits under mixed_bfloat16 (about half of the
    digits right): the run the export tests read."""
    import keras

    from zoo.training import Trainer

    config = TrainConfig(
        model="resnet20", width=0.25, batch_size=64, epochs=2, precision="mixed_bfloat16"
    )
    Trainer(config, options=RunOptions(run_dir=str(run), verbose=False)).fit()
    assert keras.config.dtype_policy().name == "float32"  # the engine restored it
