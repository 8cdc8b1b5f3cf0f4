"""Input pipeline: augmented images per second of the engine's training pipeline on its own,
against what the engine's real training step consumes, per augmentation preset.

Per preset, one `Trainer` (``resnet20`` on digits, batch 128) and three figures:

* ``pipeline``: the trainer's own distributed training dataset (``t.train_ds``) read alone;
* ``training, in-memory``: the engine's step (``t.steps.train``) on augmented batches held in
  memory, i.e. what the model can consume;
* ``training, fed by the pipeline``: the same step reading the pipeline (what training gets).

The goal is ``pipeline / fed >= 10``: the pipeline alone delivers at least ten times what
training consumes, so training is never input-bound. A second table times two pipelines built
here that differ only in where the same augmentation runs: per example before ``batch()``, or on
whole batches after it (the order ``pipelines.make_train_dataset`` uses).

A pipeline read flat out keeps its consumer waiting, so tf.data's autotuning grows its prefetch
buffer (past a hundred batches here). Interleaved with other contenders, it would refill that
buffer during their windows, taking their CPU, and hand a burst of ready batches to its own
next window. So each pipeline read alone is timed in consecutive rounds on an iterator of its
own, dropped (its threads with it) before the next measurement; the two training contenders,
which never drain a pipeline, are interleaved with each other.

Run alone: ``python -m benchmarks.pipeline [--smoke]``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from benchmarks import harness
from benchmarks.harness import Goal, Section, Spread, Table

if TYPE_CHECKING:
    import tensorflow as tf

    from zoo.training import Trainer

PRESETS = ("cifar", "imagenet", "strong")
MODEL = "resnet20"
BATCH = 128
PER_CALL = 16  # training steps per call, the engine's default steps_per_execution
GOAL_RATIO = 10.0


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each round does."""

    presets: tuple[str, ...]
    rounds: int  # counted rounds (one warm-up round more is run and dropped)
    steps: int  # training steps per round, per training contender
    batches: int  # pipeline batches timed per round
    order_batches: int  # batches timed per round in the order comparison


def sizes(ctx: harness.Context) -> Sizes:
    gpu = ctx.suite == "gpu"  # a GPU trains far faster: more steps for a window worth timing
    return Sizes(
        presets=ctx.pick(PRESETS, PRESETS[:1]),
        rounds=ctx.pick(5, 1),
        steps=ctx.pick(8 * PER_CALL if gpu else PER_CALL, 2),
        batches=ctx.pick(80, 4),
        order_batches=ctx.pick(32, 3),
    )


# Contenders -------------------------------------------------------------------------------------


def batch_rate(
    iterator: Iterator[Any],
    batches: int,
    local: Callable[[Any], tuple[Any, ...]] = lambda images: (images,),
) -> Callable[[], float]:
    """A contender: images per second of reading ``batches`` batches from ``iterator`` (one
    iterator kept across rounds). ``local`` gives an element's per-replica image tensors."""

    def timed() -> float:
        count = 0
        start = time.perf_counter()
        for _ in range(batches):
            parts = local(next(iterator)[0])
            count += sum(int(part.shape[0]) for part in parts)
        float(parts[-1][0, 0, 0, 0])  # waits for the last batch (a GPU copy may still run)
        return count / (time.perf_counter() - start)

    return timed


def alone(
    make: Callable[[], Iterator[Any]],
    batches: int,
    rounds: int,
    local: Callable[[Any], tuple[Any, ...]] = lambda images: (images,),
) -> Spread:
    """Images per second of a pipeline read alone in consecutive rounds (after a warm-up round),
    on an iterator made here and dropped on return, which stops its threads."""
    contender = {"pipeline": batch_rate(make(), batches, local)}
    return harness.interleave(contender, rounds=rounds)["pipeline"]


def training_rate(t: Trainer, iterator: Iterator[Any], steps: int) -> Callable[[], float]:
    """A contender: images per second of ``steps`` steps of the engine's step on ``iterator``."""
    from benchmarks import engine

    return harness.rate(lambda: engine.train_steps(t, iterator, steps, PER_CALL), steps * BATCH)


# Where the augmentation runs ----------------------------------------------------------------------


def order_dataset(t: Trainer, per_example: bool) -> tf.data.Dataset:
    """The trainer's data and augmentation, applied per example before ``batch()`` or on whole
    batches after it; otherwise the same pipeline (cache, repeat, seeded shuffle, prefetch).
    Mixup and cutmix need partners from a batch, so they run on whole batches in both."""
    import tensorflow as tf

    from pipelines.augment import augment_batch, fold_seed, get_augment_config, mix_batch

    data, stats = t.data, t.data.stats
    assert stats is not None
    config = get_augment_config(data.augment)
    base = tf.constant([0, 0], tf.int64)
    common: dict[str, Any] = {
        "image_size": data.image_size,
        "mean": stats.mean,
        "std": stats.std,
        "num_classes": data.classes,
        "eigval": stats.eigval,
        "eigvec": stats.eigvec,
    }
    train = data.source.splits["train"]
    ds = train.cache().repeat().shuffle(data.source.num_examples["train"], seed=0).enumerate()
    if not per_example:
        ds = ds.batch(BATCH, drop_remainder=True).map(
            lambda i, e: augment_batch(e[0], e[1], fold_seed(base, i[0]), config, **common),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return ds.prefetch(tf.data.AUTOTUNE)

    alone = dataclasses.replace(config, mixup=0.0, cutmix=0.0)

    def one(i: tf.Tensor, image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = augment_batch(image[None], label[None], fold_seed(base, i), alone, **common)
        return x[0], y[0]

    ds = ds.map(lambda i, e: one(i, *e), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(BATCH, drop_remainder=True)
    if config.mixes_labels:

        def mix(k: tf.Tensor, images: tf.Tensor, labels: tf.Tensor):
            onehot = tf.one_hot(labels, data.classes, dtype=tf.float32)
            seed = fold_seed(base, k, 1)
            return mix_batch(
                images, onehot, seed, config.mixup, config.cutmix, config.mix_probability
            )

        ds = ds.enumerate().map(lambda k, e: mix(k, *e), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# One preset -------------------------------------------------------------------------------------


def measure(scratch: str, preset: str, size: Sizes) -> dict[str, Any]:
    """Every figure of one preset, from one trainer."""
    from benchmarks import engine

    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    t = engine.trainer(scratch, model=MODEL, batch_size=BATCH, augment=preset)
    local = t.strategy.experimental_local_results
    lap("setup")
    rates = {"pipeline": alone(lambda: iter(t.train_ds), size.batches, size.rounds, local)}
    lap("pipeline")
    orders = {
        name: alone(
            lambda p=per_example: iter(order_dataset(t, p)), size.order_batches, size.rounds
        )
        for name, per_example in (
            ("per_example_then_batch", True),
            ("batch_then_vectorised", False),
        )
    }
    lap("orders")
    images, labels = engine.memory_batches(t)
    feed = iter(t.train_ds)  # one iterator across rounds, as the engine keeps one across epochs
    memory = engine.stream(t, engine.repeat(images, labels, BATCH))
    rates |= harness.interleave(
        {
            "training_in_memory": training_rate(t, memory, size.steps),
            "training_fed": training_rate(t, feed, size.steps),
        },
        rounds=size.rounds,
    )
    lap("training")
    pipeline, memory_rate, fed = (
        rates["pipeline"],
        rates["training_in_memory"],
        rates["training_fed"],
    )
    return {
        "augment": t.data.augment,
        "dataset": t.config.dataset,
        "image_size": list(t.data.image_size),
        "rates": {name: dataclasses.asdict(s) for name, s in rates.items()},
        "ratio_fed": harness.ratio(pipeline, fed),
        "ratio_fed_lowest": pipeline.min / fed.max,
        "ratio_in_memory": harness.ratio(pipeline, memory_rate),
        "fed_over_in_memory": harness.ratio(fed, memory_rate),
        "orders": {name: dataclasses.asdict(s) for name, s in orders.items()},
        "order_speedup": harness.ratio(
            orders["batch_then_vectorised"], orders["per_example_then_batch"]
        ),
        "seconds": seconds,
    }


# The section ------------------------------------------------------------------------------------


def run(ctx: harness.Context) -> Section:
    size = sizes(ctx)
    scratch = ctx.scratch("pipeline")
    results = {preset: measure(scratch, preset, size) for preset in size.presets}
    first = next(iter(results.values()))
    side = "x".join(map(str, first["image_size"]))
    rounds = f"{size.rounds} round" + "s" * (size.rounds != 1)
    section = Section(
        "pipeline",
        "Input pipeline",
        data={
            "model": MODEL,
            "batch_size": BATCH,
            "dataset": first["dataset"],
            "image_size": first["image_size"],
            "steps_per_call": PER_CALL,
            "sizes": dataclasses.asdict(size),
            "presets": results,
        },
    )

    def cell(r: dict[str, Any], name: str, group: str = "rates") -> str:
        return Spread(**r[group][name]).text(0)

    section.tables.append(
        Table(
            f"Augmented images/s, pipeline alone against the engine's training step: {MODEL}, "
            f"batch {BATCH}, {first['dataset']} at {side}; {rounds} after one "
            f"warm-up round: the pipeline alone, {size.batches} batches a round, then the two "
            f"training contenders interleaved, {size.steps} steps each a round ({PER_CALL} per "
            "call). Median (min-max).",
            [
                "augment",
                "pipeline alone",
                "training, in-memory",
                "training, fed by the pipeline",
                "fed / in-memory",
                "pipeline / fed",
                "pipeline / in-memory",
            ],
            [
                [
                    r["augment"],
                    cell(r, "pipeline"),
                    cell(r, "training_in_memory"),
                    cell(r, "training_fed"),
                    f"{r['fed_over_in_memory']:.2f}",
                    f"{r['ratio_fed']:.0f}x",
                    f"{r['ratio_in_memory']:.0f}x",
                ]
                for r in results.values()
            ],
        )
    )
    section.tables.append(
        Table(
            f"Where the augmentation runs, images/s of two pipelines built here: {first['dataset']}"
            f" at {side}, batch {BATCH}; {rounds} after one warm-up "
            f"round, {size.order_batches} batches a round, one pipeline after the other. "
            "Median (min-max).",
            ["augment", "per example, then batch", "batch, then vectorised", "speed-up"],
            [
                [
                    r["augment"],
                    cell(r, "per_example_then_batch", "orders"),
                    cell(r, "batch_then_vectorised", "orders"),
                    f"{r['order_speedup']:.1f}x",
                ]
                for r in results.values()
            ],
        )
    )
    section.notes += [
        "*Pipeline alone*: the trainer's own distributed training dataset (`Trainer.train_ds`, "
        "built by `pipelines.make_train_dataset` with the preset) read batch after batch with "
        "nothing else running. *Training, in-memory*: the engine's compiled step "
        "(`Trainer.steps.train`) on eight augmented batches held in memory, what the model can "
        "consume. *Training, fed by the pipeline*: the same step reading the pipeline, what "
        "training gets (one iterator across rounds, as the engine keeps one across epochs).",
        "The two training contenders are interleaved; each pipeline read alone is timed in "
        "consecutive rounds on an iterator of its own, dropped before the next measurement. "
        "Read flat out, a pipeline keeps its reader waiting, so tf.data's autotuning grows its "
        "prefetch buffer; interleaved, it would refill that buffer during the other "
        "contenders' windows (taking their CPU) and hand its own next window a burst of "
        "batches made earlier.",
        "*Fed / in-memory* is the share of its in-memory speed that training keeps when the "
        "pipeline feeds it: 1.0 means the pipeline costs training nothing. On a CPU the pipeline "
        "and the model share the cores, so even a fast pipeline takes a little. *Pipeline / fed* "
        f"is the goal's ratio (at least {GOAL_RATIO:.0f}x: training is never input-bound); "
        "*pipeline / in-memory* holds the pipeline against what the model could consume.",
        "The second table builds both pipelines from the trainer's data, statistics and preset "
        "(cache, repeat, seeded shuffle, prefetch): *per example, then batch* maps the "
        "augmentation over single images (a batch of one) before `batch()`; *batch, then "
        "vectorised* batches first and augments whole batches, the order "
        "`pipelines.make_train_dataset` uses. Mixup and cutmix need partners from a batch, so "
        "they run on whole batches in both.",
    ]
    for r in results.values():
        section.goals.append(
            Goal(
                f"Input pipeline at least {GOAL_RATIO:.0f}x what training consumes "
                f"({r['augment']})",
                f"{r['ratio_fed']:.0f}x (slowest pipeline round / fastest fed round: "
                f"{r['ratio_fed_lowest']:.0f}x); "
                f"{Spread(**r['rates']['pipeline']).median:,.0f} against "
                f"{Spread(**r['rates']['training_fed']).median:,.0f} images/s",
                r["ratio_fed"] >= GOAL_RATIO,
            )
        )
    return section


def main(argv: list[str] | None = None) -> int:
    """Runs this section alone and prints its tables, notes and goals."""
    section = harness.run_alone("python -m benchmarks.pipeline", __doc__, run, argv)
    for preset, figures in section.data["presets"].items():
        laps = ", ".join(f"{name} {value:.0f} s" for name, value in figures["seconds"].items())
        print(f"- {preset}: {laps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
