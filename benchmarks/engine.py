"""The engine as the suite times it: a `Trainer` set up through the public API, fed in-memory
batches (so a section times the step, not the input pipeline, unless it means to)."""

from __future__ import annotations

import tempfile
from typing import Any

import tensorflow as tf

from zoo.config import RunOptions, TrainConfig
from zoo.training import Runtime, Trainer, resolve_runtime_for

# One update for every contender, whatever the model's recipe and the machine: SGD with
# momentum, no decay, a constant rate, no warm-up, no batch-norm re-estimation between epochs.
PLAIN_SGD: dict[str, Any] = {
    "optimizer": "sgd",
    "learning_rate": 0.05,
    "momentum": 0.9,
    "nesterov": False,
    "weight_decay": 0.0,
    "schedule": "constant",
    "warmup_epochs": 0,
    "bn_recalibration": 0,
    "label_smoothing": 0.0,
    # Explicit, not auto: the same arithmetic on every machine unless a section asks otherwise.
    "precision": "float32",
    "jit_compile": "off",
}


def trainer(
    scratch: str,
    *,
    runtime: Runtime | None = None,
    steps_per_execution: int = 16,
    **fields: Any,
) -> Trainer:
    """A set-up `Trainer` for ``TrainConfig(**PLAIN_SGD | fields)`` (digits by default), its
    run directory under ``scratch``."""
    config = TrainConfig(**{**PLAIN_SGD, **fields})
    options = RunOptions(
        run_dir=tempfile.mkdtemp(prefix="run-", dir=scratch),
        steps_per_execution=steps_per_execution,
        verbose=False,
    )
    if runtime is None:
        runtime = resolve_runtime_for(config)
    t = Trainer(config, options=options, runtime=runtime)
    t.setup()
    return t


def memory_batches(t: Trainer, count: int = 8) -> tuple[tf.Tensor, tf.Tensor]:
    """``count`` augmented training batches of ``t``'s own pipeline, as two tensors."""
    iterator = iter(t.train_ds)
    images, labels = [], []
    for _ in range(count):
        batch = next(iterator)
        # Under several replicas each part is split: join the replicas' shares again.
        batch = tuple(tf.concat(t.strategy.experimental_local_results(p), 0) for p in batch)
        images.append(batch[0])
        labels.append(batch[1])
    return tf.concat(images, 0), tf.concat(labels, 0)


def repeat(images: tf.Tensor, labels: tf.Tensor, batch_size: int) -> tf.data.Dataset:
    """The tensors as an endless dataset of full batches, prefetched."""
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(batch_size, drop_remainder=True)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )


def stream(t: Trainer, data: tf.data.Dataset):
    """An iterator over ``data`` distributed for ``t``'s strategy, as the engine reads it."""
    return iter(t.strategy.experimental_distribute_dataset(data))


def train_steps(t: Trainer, iterator, steps: int, per_call: int) -> None:
    """``steps`` training steps in calls of ``per_call`` (each call returns host floats, so
    the work has finished when this returns)."""
    done = 0
    while done < steps:
        n = min(per_call, steps - done)
        t.steps.train(iterator, n)
        done += n
