"""Steps per call: what a host round-trip per step costs, and how much N steps per call keep.

Every ``tf.function`` call costs one host round-trip (dispatch, the iterator's hand-off, reading
four scalars back); ``--steps-per-execution N`` pays it once per N steps. A small model where
that overhead is largest (``resnet20`` at width 0.25, batch 32) runs the same in-memory batches
at N = 1, 4, 16, 64; the host overhead per step that remains is estimated as
``1/rate(N) - 1/rate(fastest N)``. On a GPU the batches are also read through
``tf.distribute``'s own prefetching to the device (``experimental_fetch_to_device``), on and off.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from benchmarks import engine, harness
from benchmarks.harness import Goal, Section, Table

PER_CALL = (1, 4, 16, 64)


def run(ctx: harness.Context) -> Section:
    section = Section("overhead", "Steps per call: the host overhead per step")
    batch, width = 32, 0.25
    steps = ctx.pick(128, 64)  # a multiple of every N
    t = engine.trainer(ctx.scratch("overhead"), model="resnet20", width=width, batch_size=batch)
    images, labels = engine.memory_batches(t, 8)
    data = engine.repeat(images, labels, batch)
    gpu = bool(tf.config.list_logical_devices("GPU"))
    contenders = {}
    for fetch in (True, False) if gpu else (True,):
        options = tf.distribute.InputOptions(experimental_fetch_to_device=fetch)
        for n in PER_CALL:
            iterator = iter(t.strategy.experimental_distribute_dataset(data, options))
            name = f"{n}" + ("" if fetch or not gpu else ", no prefetch to device")
            contenders[name] = harness.rate(
                lambda it=iterator, n=n: engine.train_steps(t, it, steps, n), steps
            )
    rates = harness.interleave(contenders, rounds=ctx.pick(5, 1))
    fastest = max(rates.values(), key=lambda s: s.median)
    first = rates["1"]
    overhead = {name: 1000 * (1 / s.median - 1 / fastest.median) for name, s in rates.items()}
    step_ms = 1000 / fastest.median
    section.data = {
        "model": "resnet20",
        "width": width,
        "batch_size": batch,
        "steps_per_round": steps,
        "traces": t.train_function.experimental_get_tracing_count(),
        "steps_per_second": {k: dataclasses.asdict(v) for k, v in rates.items()},
        "host_overhead_ms_per_step": overhead,
        "fastest_step_ms": step_ms,
    }
    section.tables.append(
        Table(
            f"**Steps per call** (`resnet20` width {width}, batch {batch}, the same in-memory "
            f"batches, {steps} steps per round, interleaved rounds; steps/s median (min-max); "
            "overhead left = 1/rate(N) - 1/rate(fastest))",
            ["steps per call", "steps/s", "vs 1", "host overhead per step left (ms)"],
            [
                [
                    name,
                    s.text(),
                    f"{harness.ratio(s, first):.2f}x",
                    f"{overhead[name]:.2f}" if s is not fastest else "0 (the fastest)",
                ]
                for name, s in rates.items()
            ],
        )
    )
    one_call = 1000 * (1 / first.median) - step_ms
    section.notes.append(
        f"At one step per call, {max(one_call, 0):.2f} ms of a {1000 / first.median:.1f} ms step "
        f"is host work; at 16 per call, {max(overhead['16'], 0):.2f} ms is left. The step "
        f"function was traced {section.data['traces']} time(s) for all N (N is a tensor)."
    )
    share = max(overhead["16"], 0) / step_ms
    section.goals.append(
        Goal(
            "Host overhead per step at --steps-per-execution 16 <= 10% of a resnet20-width-0.25 "
            "batch-32 step",
            f"{share:.1%} ({max(overhead['16'], 0):.2f} ms of {step_ms:.1f} ms); "
            f"at N=1: {max(one_call, 0) / step_ms:.1%}",
            share <= 0.10,
        )
    )
    return section
