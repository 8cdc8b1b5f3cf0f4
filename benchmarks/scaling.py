"""Scaling: images/s of the engine's training step against batch size, and of
``MirroredStrategy`` over 1, 2 and 4 logical CPU devices (GPUs when the suite has them).

Batch size: one trainer per batch size in one process, each fed in-memory batches, timed in
interleaved rounds of about the same number of images each. Replicas: logical devices must be
configured before TensorFlow starts, so each replica count runs in its own child process
(``python -m benchmarks.scaling --child --replicas N ...``, which prints one JSON line); the
children run one after another, and the whole sequence twice, pooling rounds, so that the
machine's drift falls on every count.

    python -m benchmarks.scaling [--smoke] [--suite cpu|gpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import harness
from benchmarks.harness import Section, Spread, Table

if TYPE_CHECKING:  # TensorFlow is imported late: a child configures its devices first
    from collections.abc import Callable

    import tensorflow as tf

    from zoo.training import Trainer

MODEL = "resnet20"
IMAGE_SIZE = 32
BATCH_SIZES = (8, 16, 32, 64, 128, 256, 512)
REFERENCE_BATCH = 128
PER_CALL = 16  # the engine's default steps per call (fewer when a round has fewer steps)
MARKER = "scaling-child-result "  # the child's result line starts with this
ROOT = Path(__file__).resolve().parent.parent  # where ``python -m benchmarks.scaling`` runs


def _tensorflow() -> Any:
    """TensorFlow, imported through the project's quiet start-up."""
    from zoo.cli import start_tensorflow

    start_tensorflow()
    import tensorflow as tf

    return tf


def _pool(images: tf.Tensor, labels: tf.Tensor, at_least: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The tensors repeated end to end until there are ``at_least`` examples."""
    tf = _tensorflow()
    times = max(1, math.ceil(at_least / int(images.shape[0])))
    return tf.concat([images] * times, 0), tf.concat([labels] * times, 0)


def _contender(t: Trainer, images: tf.Tensor, labels: tf.Tensor, steps: int) -> Callable[[], float]:
    """A `harness.rate` contender: ``steps`` training steps of ``t`` on in-memory batches."""
    from benchmarks import engine

    batch = int(t.config.batch_size)
    iterator = engine.stream(t, engine.repeat(images, labels, batch))
    per_call = min(PER_CALL, steps)
    return harness.rate(lambda: engine.train_steps(t, iterator, steps, per_call), steps * batch)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _traces(t: Trainer) -> int:
    """How many times ``t``'s training function was traced (1 when nothing retraced)."""
    return int(t.steps.train_function.experimental_get_tracing_count())


# Batch size ----------------------------------------------------------------------------------


def batch_sizes(ctx: harness.Context, section: Section) -> None:
    """Images/s at every batch size, each trainer in this process, interleaved."""
    from benchmarks import engine

    sizes = ctx.pick(BATCH_SIZES, (8, 32))
    width = ctx.pick(1.0, 0.25)
    images_per_round = ctx.pick(1024, 64)
    rounds = ctx.pick(3, 1)
    scratch = ctx.scratch("scaling")
    start = time.perf_counter()
    trainers = {
        b: engine.trainer(
            scratch,
            model=MODEL,
            width=width,
            batch_size=b,
            image_size=IMAGE_SIZE,
            strategy="default",  # one device: the replicas table is for more
        )
        for b in sizes
    }
    # One pool of augmented images for every batch size (the same preprocessing for all),
    # taken from the largest batch size's pipeline and repeated to fill its batches.
    largest = trainers[max(sizes)]
    images, labels = engine.memory_batches(
        largest, max(1, math.ceil(images_per_round / max(sizes)))
    )
    images, labels = _pool(images, labels, max(images_per_round, max(sizes)))
    steps = {b: max(1, images_per_round // b) for b in sizes}
    contenders = {str(b): _contender(trainers[b], images, labels, steps[b]) for b in sizes}
    set_up = time.perf_counter()
    rates = {int(b): s for b, s in harness.interleave(contenders, rounds=rounds).items()}
    timed = time.perf_counter()
    best = max(sizes, key=lambda b: rates[b].median)
    reference = REFERENCE_BATCH if REFERENCE_BATCH in sizes else best
    section.data["batch_size"] = {
        "model": MODEL,
        "width": width,
        "image_size": IMAGE_SIZE,
        "precision": largest.runtime.precision,
        "images_per_round": images_per_round,
        "rounds": rounds,
        "steps_per_round": {str(b): steps[b] for b in sizes},
        "steps_per_call": {str(b): min(PER_CALL, steps[b]) for b in sizes},
        "images_per_second": {str(b): dataclasses.asdict(rates[b]) for b in sizes},
        "reference_batch": reference,
        "best_batch": best,
        "relative_to_reference": {str(b): harness.ratio(rates[b], rates[reference]) for b in sizes},
        "traces": {str(b): _traces(trainers[b]) for b in sizes},
        "setup_seconds": set_up - start,
        "timing_seconds": timed - set_up,
    }
    section.tables.append(
        Table(
            f"**Images/s against batch size** (`{MODEL}` width {width}, {IMAGE_SIZE}x{IMAGE_SIZE}, "
            f"{largest.runtime.precision}, one device, in-memory batches, about "
            f"{images_per_round} images per round and batch size, up to {PER_CALL} steps per "
            f"call, {_count(rounds, 'interleaved round')} after a warm-up; median (min-max))",
            [
                "batch",
                "steps per round",
                "images/s",
                f"vs batch {reference}",
                f"vs best (batch {best})",
            ],
            [
                [
                    str(b),
                    str(steps[b]),
                    rates[b].text(),
                    f"{harness.ratio(rates[b], rates[reference]):.2f}x",
                    f"{harness.ratio(rates[b], rates[best]):.2f}x",
                ]
                for b in sizes
            ],
        )
    )


# Replicas: the child -------------------------------------------------------------------------


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One replica count in this process: ``args.replicas`` logical CPU devices (or the first
    GPUs), the mirrored strategy over all of them, timed rounds; the default strategy beside it
    when asked for. Returns the raw rate of every round."""
    tf = _tensorflow()
    if args.device == "gpu":
        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) < args.replicas:
            raise SystemExit(f"{args.replicas} replicas asked for, {len(gpus)} GPUs found")
        tf.config.set_visible_devices(gpus[: args.replicas], "GPU")
    else:
        tf.config.set_visible_devices([], "GPU")
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas
        )
    from benchmarks import engine

    start = time.perf_counter()
    strategies = ["mirrored"] + (["default"] if args.with_default else [])
    trainers = {
        name: engine.trainer(
            args.scratch,
            model=MODEL,
            width=args.width,
            batch_size=args.batch_size,
            image_size=IMAGE_SIZE,
            strategy=name,
        )
        for name in strategies
    }
    mirrored = trainers["mirrored"]
    replicas = int(mirrored.strategy.num_replicas_in_sync)
    if replicas != args.replicas:
        raise SystemExit(f"the mirrored strategy has {replicas} replicas, not {args.replicas}")
    # memory_batches keeps the first replica's share of each batch: repeat it to fill batches.
    images, labels = engine.memory_batches(mirrored, 4)
    images, labels = _pool(images, labels, 4 * args.batch_size)
    recorded: dict[str, list[float]] = {name: [] for name in trainers}

    def recording(name: str) -> Callable[[], float]:
        timed = _contender(trainers[name], images, labels, args.steps)

        def call() -> float:
            rate = timed()
            recorded[name].append(rate)
            return rate

        return call

    warmup = 1
    harness.interleave(
        {name: recording(name) for name in trainers}, rounds=args.rounds, warmup=warmup
    )
    return {
        "replicas": replicas,
        "device": args.device,
        "devices": list(mirrored.strategy.extended.worker_devices),
        "batch_size": args.batch_size,
        "width": args.width,
        "steps": args.steps,
        "precision": mirrored.runtime.precision,
        "images_per_second": {name: rates[warmup:] for name, rates in recorded.items()},
        "traces": {name: _traces(t) for name, t in trainers.items()},
        "seconds": time.perf_counter() - start,
    }


# Replicas: the parent ------------------------------------------------------------------------


def _run_child(options: dict[str, Any], with_default: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.scaling", "--child"]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    if with_default:
        command.append("--with-default")
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(
            f"{' '.join(command[1:])} failed (exit {done.returncode}): " + " | ".join(tail)
        )
    result = json.loads(lines[-1][len(MARKER) :])
    result["process_seconds"] = time.perf_counter() - start
    return result


def replica_counts(device: str, gpu_count: int, smoke: bool) -> list[int]:
    """1, 2, 4 logical CPU devices; on GPUs the powers of two up to their count."""
    limit = gpu_count if device == "gpu" else 4
    counts = [n for n in (1, 2, 4, 8, 16) if n <= limit]
    return counts[:2] if smoke else counts


def replicas(ctx: harness.Context, section: Section) -> None:
    """Strong scaling under ``MirroredStrategy``: a fixed global batch split over N replicas."""
    tf = _tensorflow()
    gpu_count = len(tf.config.list_physical_devices("GPU"))
    device = "gpu" if ctx.suite == "gpu" and gpu_count else "cpu"
    counts = replica_counts(device, gpu_count, ctx.smoke)
    width = ctx.pick(1.0, 0.25)
    # 128 images on CPU; on GPUs 128 per replica at the most replicas, within digits' 1,257.
    batch = ctx.pick(128 if device == "cpu" else min(128 * max(counts), 1024), 32)
    steps = ctx.pick(8, 2)
    rounds = ctx.pick(2, 1)
    passes = ctx.pick(2, 1)
    options = {
        "batch_size": batch,
        "width": width,
        "steps": steps,
        "rounds": rounds,
        "device": device,
        "scratch": ctx.scratch("scaling"),
    }
    pooled: dict[int, list[float]] = {n: [] for n in counts}
    default: list[float] = []
    children: list[dict[str, Any]] = []
    for p in range(passes):
        for n in counts:
            result = _run_child({**options, "replicas": n}, with_default=n == 1)
            pooled[n] += result["images_per_second"]["mirrored"]
            default += result["images_per_second"].get("default", [])
            children.append(
                {
                    "pass": p,
                    "replicas": n,
                    "devices": result["devices"],
                    "precision": result["precision"],
                    "seconds": result["process_seconds"],
                    "traces": result["traces"],
                    "images_per_second": result["images_per_second"],
                }
            )
    rates = {n: Spread.of(pooled[n]) for n in counts}
    speedup = {n: harness.ratio(rates[n], rates[1]) for n in counts}
    efficiency = {n: speedup[n] / n for n in counts}
    default_rate = Spread.of(default)
    cores = os.cpu_count()
    section.data["replicas"] = {
        "device": device,
        "cores": cores,
        "gpus": gpu_count,
        "model": MODEL,
        "width": width,
        "image_size": IMAGE_SIZE,
        "global_batch": batch,
        "steps_per_round": steps,
        "rounds_per_child": rounds,
        "passes": passes,
        "counts": counts,
        "images_per_second": {str(n): dataclasses.asdict(rates[n]) for n in counts},
        "speedup": {str(n): speedup[n] for n in counts},
        "efficiency": {str(n): efficiency[n] for n in counts},
        "default_strategy_1": dataclasses.asdict(default_rate),
        "children": children,
    }
    kind = "logical CPU devices" if device == "cpu" else "GPUs"
    rows = [
        [
            str(n),
            str(batch // n),
            rates[n].text(),
            f"{speedup[n]:.2f}x",
            f"{efficiency[n]:.0%}",
        ]
        for n in counts
    ]
    rows.append(
        [
            "1 (default strategy)",
            str(batch),
            default_rate.text(),
            f"{harness.ratio(default_rate, rates[1]):.2f}x",
            "",
        ]
    )
    section.tables.append(
        Table(
            f"**MirroredStrategy over {', '.join(map(str, counts))} {kind}** (`{MODEL}` width "
            f"{width}, {IMAGE_SIZE}x{IMAGE_SIZE}, global batch {batch} split over the replicas, "
            f"in-memory batches, {steps} steps per round; one child process per count, run in "
            f"turn, the sequence {_count(passes, 'time')}, {_count(rounds, 'round')} each after a "
            f"warm-up: {_count(rounds * passes, 'round')} pooled; median (min-max); {cores} CPU "
            "cores)",
            ["replicas", "per-replica batch", "images/s", "speed-up", "efficiency"],
            rows,
        )
    )
    if device == "cpu":
        section.notes.append(
            f"Logical CPU devices split one process's {cores} cores; they add no compute. "
            "The replicas table therefore measures what the mirrored strategy costs (per-replica "
            "batches, gradient all-reduce, synchronisation), not added speed: a strategy without "
            "overhead would hold 1.00x (efficiency 1/N), below it is the cost, above it means the "
            "smaller per-replica batches happen to use the cores better. On GPUs each replica is "
            "a real device (`python -m benchmarks.run --suite gpu`)."
        )
    section.notes.append(
        "The replica counts run in separate processes (logical devices must be configured before "
        "TensorFlow starts), so they are not interleaved round by round like the other tables: "
        "the children run in turn"
        + (
            f" and the whole sequence runs {passes} times, pooling rounds, so drift falls on "
            "every count"
            if passes > 1
            else ""
        )
        + ". The `default strategy` row is interleaved with one replica in the same child: the "
        "cost of the mirrored code path itself."
    )


# The section ---------------------------------------------------------------------------------


def run(ctx: harness.Context) -> Section:
    section = Section("scaling", "Scaling")
    batch_sizes(ctx, section)
    replicas(ctx, section)
    section.notes.insert(
        0,
        "Batch sizes: every trainer lives in one process and sees the same in-memory images; "
        "rounds hold about the same number of images at every batch size, so the large batches "
        "run few steps per round (their calls hold fewer steps too, at most "
        f"{PER_CALL}).",
    )
    return section


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="a few steps of everything")
    parser.add_argument("--suite", choices=("cpu", "gpu"), help="default: gpu when one is found")
    parser.add_argument("--out", help="output folder for scratch files (default: a temporary one)")
    parser.add_argument("--json", help="also write the section's data to this file")
    child_options = parser.add_argument_group("child process (used by the section itself)")
    child_options.add_argument("--child", action="store_true")
    child_options.add_argument("--replicas", type=int, default=1)
    child_options.add_argument("--batch-size", type=int, default=128)
    child_options.add_argument("--width", type=float, default=1.0)
    child_options.add_argument("--steps", type=int, default=8)
    child_options.add_argument("--rounds", type=int, default=2)
    child_options.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    child_options.add_argument("--scratch")
    child_options.add_argument("--with-default", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        args.scratch = args.scratch or tempfile.mkdtemp(prefix="scaling-")
        print(MARKER + json.dumps(child(args)), flush=True)
        return
    suite = args.suite or ("gpu" if harness.gpus() else "cpu")
    out = args.out or tempfile.mkdtemp(prefix="scaling-")
    start = time.perf_counter()
    section = run(harness.Context(suite, args.smoke, out))
    section.seconds = time.perf_counter() - start
    harness.print_section(section)
    print(f"{section.seconds:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(dataclasses.asdict(section), indent=2) + "\n")


if __name__ == "__main__":
    main()
