"""Throughput of the augmented training pipeline beside what a model consumes, in one run.

Measures, in one process on the same machine and data:

1. ``pipeline``: images/s of ``pipelines.make_train_dataset`` iterated on its own;
2. ``model_fixed_batch``: images/s of a minimal ``tf.function`` SGD train step of the model
   (sparse categorical cross-entropy from logits) on one batch held in memory;
3. ``model_fed``: images/s of the same train step fed by the pipeline (what training gets);

and reports ``ratio = pipeline / model_fed``. The goal is ratio >= 10: the pipeline alone
delivers at least ten times what training consumes, so training is never input-bound. The image
size and augmentation default to what training picks (``pipelines.default_image_size`` with the
model's native side, and ``--augment auto`` resolved by ``pipelines.resolve_augment``).

``--compare-orders`` also times two pipelines built here that differ only in where the
augmentation runs (both: cache -> repeat -> seeded shuffle -> ... -> prefetch, same ops, same
parallelism):

* ``order_per_example_then_batch``: ``augment_batch`` on each image as a batch of one in a map,
  then ``batch()``. Mixup/cutmix need partners from a batch, so for presets that use them
  (``strong``) they run on the whole batch after ``batch()`` (with a batch of one, every image
  would be mixed with itself);
* ``order_batch_then_vectorised``: ``batch()`` first, then ``augment_batch`` on whole batches
  (the order ``make_train_dataset`` uses).

Example (the default run takes about a minute on 2 CPU cores)::

    PYTHONPATH=. python benchmarks/pipeline_throughput.py --compare-orders
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import tensorflow as tf

import pipelines
from pipelines.augment import augment_batch, fold_seed, get_augment_config, mix_batch


def _time_batches(ds: tf.data.Dataset, warmup: int, batches: int, repeats: int = 3) -> float:
    """Median images per second of ``repeats`` windows of ``batches`` batches after warm-up."""
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    rates = []
    for _ in range(repeats):
        count = 0
        start = time.perf_counter()
        for _ in range(batches):
            images, _ = next(iterator)
            count += int(images.shape[0])
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def _order_dataset(
    data: pipelines.ImageDataset,
    size: tuple[int, int],
    batch: int,
    augment: str,
    stats: pipelines.ChannelStats,
    per_example: bool,
) -> tf.data.Dataset:
    """The same augmentation per example before ``batch()`` or on whole batches after it."""
    config = get_augment_config(augment)
    base = tf.constant([0, 0], tf.int64)
    common = dict(
        image_size=size,
        mean=stats.mean,
        std=stats.std,
        num_classes=data.num_classes,
        eigval=stats.eigval,
        eigvec=stats.eigvec,
    )
    ds = data.splits["train"].cache().repeat().shuffle(data.num_examples["train"], seed=0)
    ds = ds.enumerate()
    if not per_example:
        ds = ds.batch(batch, drop_remainder=True)
        ds = ds.map(
            lambda i, e: augment_batch(e[0], e[1], fold_seed(base, i[0]), config, **common),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return ds.prefetch(tf.data.AUTOTUNE)

    single = dataclasses.replace(config, mixup=0.0, cutmix=0.0)

    def one(i: tf.Tensor, image: tf.Tensor, label: tf.Tensor):
        x, y = augment_batch(image[None], label[None], fold_seed(base, i), single, **common)
        return x[0], y[0]

    ds = ds.map(lambda i, e: one(i, *e), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=True)
    if config.mixes_labels:

        def mix(k: tf.Tensor, images: tf.Tensor, labels: tf.Tensor):
            onehot = tf.one_hot(labels, data.num_classes, dtype=tf.float32)
            return mix_batch(
                images,
                onehot,
                fold_seed(base, k, 1),
                config.mixup,
                config.cutmix,
                config.mix_probability,
            )

        ds = ds.enumerate().map(lambda k, e: mix(k, *e), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _train_step_fn(model: keras.Model, soft_labels: bool, jit: bool):
    optimizer = keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)
    if soft_labels:
        loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    else:
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(jit_compile=jit)
    def step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return step


def _time_steps(step, batches, warmup: int, steps: int) -> float:
    """Images per second of ``step`` over ``steps`` steps after ``warmup``."""
    iterator = iter(batches)
    for _ in range(warmup):
        images, labels = next(iterator)
        float(step(images, labels))
    count = 0
    start = time.perf_counter()
    for _ in range(steps):
        images, labels = next(iterator)
        loss = step(images, labels)
        count += int(images.shape[0])
    float(loss)  # wait for the last step
    return count / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the measurements and returns the report."""
    import zoo

    data = pipelines.load(args.dataset)
    side = args.image_size or pipelines.default_image_size(
        data, zoo.model_info(args.model).input_shape[0]
    )
    size = (side, side)
    augment = pipelines.resolve_augment(args.augment, data, side)
    stats = pipelines.compute_stats(data, max_examples=4096)
    train = pipelines.make_train_dataset(
        data,
        image_size=size,
        global_batch_size=args.batch_size,
        augment=augment,
        mean=stats.mean,
        std=stats.std,
        seed=args.seed,
        pca=stats,
    )
    soft = get_augment_config(augment).mixes_labels
    report: dict[str, Any] = {
        "dataset": data.name,
        "augment": augment,
        "image_size": side,
        "batch_size": args.batch_size,
        "model": args.model,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{len(tf.config.list_physical_devices('GPU'))} GPU",
        "tensorflow": tf.__version__,
    }
    report["pipeline_images_per_s"] = _time_batches(
        train, args.warmup, args.pipeline_batches, args.repeats
    )

    if not args.pipeline_only:
        model = zoo.create_model(args.model, input_shape=(side, side, 3), classes=data.num_classes)
        step = _train_step_fn(model, soft, args.jit)
        report["model_fed_images_per_s"] = _time_steps(
            step, train, args.train_warmup, args.train_steps
        )
        fixed = next(iter(train))
        report["model_fixed_batch_images_per_s"] = _time_steps(
            step, iter(lambda: fixed, None), 1, args.train_steps
        )
        report["ratio"] = report["pipeline_images_per_s"] / report["model_fed_images_per_s"]
        report["goal_ratio_at_least_10"] = report["ratio"] >= 10

    if args.compare_orders:
        for name, per_example in (
            ("per_example_then_batch", True),
            ("batch_then_vectorised", False),
        ):
            ds = _order_dataset(data, size, args.batch_size, augment, stats, per_example)
            report[f"order_{name}_images_per_s"] = _time_batches(
                ds, args.warmup, args.pipeline_batches, args.repeats
            )
        report["order_speedup"] = (
            report["order_batch_then_vectorised_images_per_s"]
            / report["order_per_example_then_batch_images_per_s"]
        )
    return report


def markdown(report: dict[str, Any]) -> str:
    """One Markdown table row of the report (the order columns when they were measured)."""
    row = (
        f"| {report['dataset']} | {report['augment']} | {report['batch_size']} | "
        f"{report['pipeline_images_per_s']:,.0f} | {report['model']} "
        f"{report['model_fed_images_per_s']:,.0f} (fixed batch "
        f"{report['model_fixed_batch_images_per_s']:,.0f}) | {report['ratio']:.1f}x | "
    )
    if "order_speedup" in report:
        row += (
            f"{report['order_per_example_then_batch_images_per_s']:,.0f} | "
            f"{report['order_batch_then_vectorised_images_per_s']:,.0f} | "
            f"{report['order_speedup']:.1f}x | "
        )
    return row + f"{report['machine']} |"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", default="digits", help="source for pipelines.load")
    parser.add_argument(
        "--augment",
        default="auto",
        help="augmentation: 'auto' (what training picks for the dataset and size), or a preset "
        "optionally followed by switches, e.g. 'cifar,mixup=0.2'",
    )
    parser.add_argument("--model", default="resnet20", help="zoo model name")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="image side; None means what training uses: the dataset's side when its images "
        "are square and of one size, else the model's input side",
    )
    parser.add_argument("--seed", type=int, default=0, help="pipeline seed")
    parser.add_argument("--warmup", type=int, default=50, help="pipeline batches not timed")
    parser.add_argument("--pipeline-batches", type=int, default=100, help="pipeline batches timed")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed pipeline windows; the median is reported"
    )
    parser.add_argument("--train-warmup", type=int, default=3, help="train steps not timed")
    parser.add_argument("--train-steps", type=int, default=15, help="train steps timed")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the train step")
    parser.add_argument(
        "--pipeline-only",
        action="store_true",
        help="skip the model (no ratio); with --compare-orders to time orders",
    )
    parser.add_argument(
        "--compare-orders",
        action="store_true",
        help="also time per-example augmentation before batching against whole batches after",
    )
    parser.add_argument("--json-out", default=None, help="also write the JSON report here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints JSON, then a Markdown row."""
    args = build_parser().parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    if "ratio" in report:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
