"""Steps per second of the engine at N training steps per ``tf.function`` call.

Every call costs one host round-trip (dispatch, the iterator's hand-off, reading four scalars
back); N steps per call pay it once. This measures what that buys on the machine at hand: the
same model, batch and in-memory batches (so the input pipeline is not timed), N = 1, 4, 16, 64,
interleaved rounds after a warm-up, medians with min-max, and the host overhead per step that
remains, estimated as ``1/rate(N) - 1/rate(fastest N)``.

    python benchmarks/steps_per_execution.py            # resnet20 at width 0.25, batch 32
    python benchmarks/steps_per_execution.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from zoo.config import RunOptions, TrainConfig
from zoo.training import Trainer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--per-call", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--steps", type=int, default=128, help="timed steps per round and N")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if any(args.steps % n for n in args.per_call):
        parser.error("--steps must be a multiple of every --per-call value")

    config = TrainConfig(
        model=args.model,
        width=args.width,
        batch_size=args.batch_size,
        schedule="constant",
        warmup_epochs=0,
        bn_recalibration=0,
    )
    options = RunOptions(run_dir=tempfile.mkdtemp(prefix="bench-spe-"), verbose=False)
    trainer = Trainer(config, options=options)
    trainer.setup()
    # The same batches for every N, held in memory: this times the step and the call, not the
    # input pipeline.
    iterator = iter(trainer.train_ds)
    batches = [next(iterator) for _ in range(8)]
    images = tf.concat([b[0] for b in batches], 0)
    labels = tf.concat([b[1] for b in batches], 0)
    data = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(args.batch_size, drop_remainder=True)
        .repeat()
        .prefetch(4)
    )
    stream = iter(trainer.strategy.experimental_distribute_dataset(data))

    def run(n: int, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps // n):
            trainer.steps.train(stream, n)  # returns host floats: the call has finished
        return steps / (time.perf_counter() - start)

    for n in args.per_call:  # trace once, warm up
        run(n, max(n, 8))
    rates: dict[int, list[float]] = {n: [] for n in args.per_call}
    for _ in range(args.rounds):
        for n in args.per_call:
            rates[n].append(run(n, args.steps))
    median = {n: statistics.median(r) for n, r in rates.items()}
    fastest = max(args.per_call, key=lambda n: median[n])
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "tensorflow": tf.__version__,
        },
        "model": args.model,
        "width": args.width,
        "batch_size": args.batch_size,
        "traces": trainer.train_function.experimental_get_tracing_count(),
        "steps_per_second": {
            n: {"median": median[n], "min": min(rates[n]), "max": max(rates[n])}
            for n in args.per_call
        },
        "speedup_vs_1": {n: median[n] / median[min(args.per_call)] for n in args.per_call},
        "host_overhead_ms_per_step": {
            n: 1000 * (1 / median[n] - 1 / median[fastest]) for n in args.per_call
        },
    }
    print(
        f"{args.model} width {args.width}, batch {args.batch_size}, {args.rounds} rounds of "
        f"{args.steps} steps, {result['machine']['cores']} cores, "
        f"GPUs: {result['machine']['gpus'] or 'none'}"
    )
    print("| steps per call | steps/s (median, min-max) | vs N=1 | overhead vs fastest (ms/step) |")
    print("|---|---|---|---|")
    for n in args.per_call:
        s = result["steps_per_second"][n]
        print(
            f"| {n} | {s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f}) | "
            f"{result['speedup_vs_1'][n]:.2f}x | {result['host_overhead_ms_per_step'][n]:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
