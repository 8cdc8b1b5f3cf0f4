"""The training engine, in parts with one job each.

Train from Python with Keras callbacks::

    from zoo.training import TrainConfig, fit
    history = fit(TrainConfig(model="resnet20", epochs=2), callbacks=[my_callback])
    history.history["val_accuracy"], history.metrics["test_accuracy"]

- `runtime`: strategy, precision, determinism and XLA, resolved once per process.
- `data`: the dataset of a config, distributed for a strategy.
- `optim`: schedule, optimizers, parameter groups.
- `step`: the compiled train (N steps per call), eval and batch-norm functions.
- `model`: `build_model`, the one place a run's model is built.
- `rundir`: the run directory's files and lock, its checkpoints (`RunCheckpoints`); `load_model`.
- `lr_range`: the learning-rate range test (``--learning-rate auto``, ``tuning.lr_find``).
- `callbacks`: history, checkpoints, best weights, console, TensorBoard, checks.
- `loop`: `Trainer` and `fit`.
"""

from zoo.config import RunOptions, TrainConfig
from zoo.training.callbacks import TrainingCheckFailed, TrainingDiverged
from zoo.training.loop import FitHistory, Trainer, fit
from zoo.training.optim import WarmupSchedule
from zoo.training.rundir import (
    NoCheckpointError,
    RunDirectory,
    RunLockedError,
    load_model,
)
from zoo.training.runtime import (
    PrecisionChoice,
    Runtime,
    choose_precision,
    cpu_flags,
    dtype_policy,
    resolve_jit_compile,
    resolve_precision,
    resolve_runtime,
    resolve_runtime_for,
)

__all__ = [
    "FitHistory",
    "NoCheckpointError",
    "PrecisionChoice",
    "RunDirectory",
    "RunLockedError",
    "RunOptions",
    "Runtime",
    "TrainConfig",
    "Trainer",
    "TrainingCheckFailed",
    "TrainingDiverged",
    "WarmupSchedule",
    "choose_precision",
    "cpu_flags",
    "dtype_policy",
    "fit",
    "load_model",
    "resolve_jit_compile",
    "resolve_precision",
    "resolve_runtime",
    "resolve_runtime_for",
]
