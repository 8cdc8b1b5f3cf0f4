"""Steps per second of the engine's static-graph step against Keras ``model.fit`` and an eager
(no ``tf.function``) step: same model, batch, data and optimizer, measured in one process in
interleaved rounds, so the machine's noise hits all three alike.

    python benchmarks/train_step_speed.py [--model resnet20] [--batch-size 128] [--steps 20]

Prints JSON and a Markdown row. Ratios are what to compare; absolute figures depend on the
machine (and on a CPU, on everything else it runs). Each ``model.fit`` round is one ``fit`` call,
so its per-call set-up (callbacks, iterator) is included, as it is for users.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from zoo.config import RunOptions, TrainConfig
from zoo.training import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    config = TrainConfig(
        model=args.model,
        width=args.width,
        batch_size=args.batch_size,
        # SGD with momentum for all three, whatever the model's recipe: the same update.
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=0.0,
        schedule="constant",
        warmup_epochs=0,
        nesterov=False,
        bn_recalibration=0,
    )
    options = RunOptions(run_dir=tempfile.mkdtemp(prefix="bench-"), verbose=False)
    trainer = Trainer(config, options=options)
    trainer.setup()
    # The same batches for everyone, held in memory: this times the step, not the pipeline.
    iterator = iter(trainer.train_ds)
    batches = [next(iterator) for _ in range(8)]
    data = (
        tf.data.Dataset.from_tensor_slices(
            (tf.concat([b[0] for b in batches], 0), tf.concat([b[1] for b in batches], 0))
        )
        .batch(args.batch_size, drop_remainder=True)
        .repeat()
        .prefetch(2)
    )

    # Keras fit: a copy of the model with the same weights, compiled like the engine's step.
    fit_model = keras.models.clone_model(trainer.model)
    fit_model.set_weights(trainer.model.get_weights())
    fit_model.compile(
        optimizer=keras.optimizers.SGD(config.learning_rate, momentum=config.momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )

    # Eager: the same computation as the engine's replica step, without tf.function.
    eager_model = keras.models.clone_model(trainer.model)
    eager_model.set_weights(trainer.model.get_weights())
    eager_opt = keras.optimizers.SGD(config.learning_rate, momentum=config.momentum)
    eager_opt.build(eager_model.trainable_variables)
    eager_iter = iter(data)

    def eager_step(images, labels):
        with tf.GradientTape() as tape:
            logits = eager_model(images, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            )
        grads = tape.gradient(loss, eager_model.trainable_variables)
        eager_opt.apply(grads, eager_model.trainable_variables)
        return loss

    engine_iter = iter(data)

    def engine(n: int) -> None:
        for _ in range(n):  # one step per call, as fit and eager below
            trainer.steps.train(engine_iter, 1)

    def fit(n: int) -> None:
        fit_model.fit(data, steps_per_epoch=n, epochs=1, verbose=0)

    def eager(n: int) -> None:
        for _ in range(n):
            loss = eager_step(*next(eager_iter))
        float(loss)

    runners = {"engine (tf.function)": engine, "keras model.fit": fit, "eager": eager}
    for run in runners.values():  # trace / warm up
        run(3)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run(args.steps)
            rates[name].append(args.steps / (time.perf_counter() - start))
    median = {name: statistics.median(values) for name, values in rates.items()}
    engine_rate = median["engine (tf.function)"]
    result = {
        "model": args.model,
        "width": args.width,
        "batch_size": args.batch_size,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{len(tf.config.list_physical_devices('GPU'))} GPU",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "steps_per_second": median,
        "engine_vs_fit": engine_rate / median["keras model.fit"],
        "engine_vs_eager": engine_rate / median["eager"],
    }
    print(json.dumps(result, indent=2))
    print(
        f"| {args.model} | {args.batch_size} | {engine_rate:.2f} | "
        f"{median['keras model.fit']:.2f} | {median['eager']:.2f} | "
        f"{result['engine_vs_fit']:.2f}x | {result['engine_vs_eager']:.2f}x |"
    )


if __name__ == "__main__":
    main()
