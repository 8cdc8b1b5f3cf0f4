"""The training engine, in parts with one job each.

Train from Python with Keras callbacks::

    from zoo.training import TrainConfig, fit
    history = fit(TrainConfig(model="resnet20", epochs=2), callbacks=[my_callback])
    history.history["val_accuracy"], history.metrics["test_accuracy"]

- `runtime`: strategy, precision and determinism, resolved once per process.
- `data`: the dataset of a config, distributed for a strategy.
- `optim`: schedule, optimizers, parameter groups.
- `step`: the compiled train (N steps per call), eval and batch-norm functions.
- `rundir`: the run directory's files, lock and checkpoints; `load_model`.
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
    Runtime,
    dtype_policy,
    resolve_jit_compile,
    resolve_precision,
    resolve_runtime,
)

__all__ = [
    "FitHistory",
    "NoCheckpointError",
    "RunDirectory",
    "RunLockedError",
    "RunOptions",
    "Runtime",
    "TrainConfig",
    "Trainer",
    "TrainingCheckFailed",
    "TrainingDiverged",
    "WarmupSchedule",
    "dtype_policy",
    "fit",
    "load_model",
    "resolve_jit_compile",
    "resolve_precision",
    "resolve_runtime",
]
