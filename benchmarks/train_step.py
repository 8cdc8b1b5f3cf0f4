"""Training step: the engine against Keras ``fit`` and an eager step, each precision with XLA on
and off, the device's matrix-multiply peak, and PyTorch on the same architecture.

Every contender trains the same model from the same weights on the same in-memory batches with
the same update (SGD with momentum, no decay), so the figures time the step and nothing else.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import tempfile
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from benchmarks import engine, harness
from benchmarks.harness import Goal, Section, Table
from zoo.config import RunOptions, TrainConfig
from zoo.summary import profile
from zoo.training import Trainer, fit, resolve_jit_compile, resolve_precision

FIT_STEPS = 16  # Keras fit's steps_per_execution, as the engine's default


def _device_kind() -> str:
    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"


# The device's own limit ------------------------------------------------------------------------


def matmul_peak(ctx: harness.Context, dtype: tf.DType) -> dict[str, Any]:
    """The best multiply rate (FLOP/s) of square matrix products of a few sizes in ``dtype``:
    the physical ceiling a convolutional step is held against."""
    sizes = ctx.pick((1024, 2048, 4096) if _device_kind() == "GPU" else (512, 1024, 2048), (256,))
    best: dict[str, Any] = {}
    for n in sizes:
        a = tf.random.normal((n, n), dtype=tf.float32)
        a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
        repeats = max(1, int(2e10 // (2 * n**3)))  # about 20 GFLOP per call

        @tf.function
        def products(a=a, b=b, repeats=repeats):
            total = tf.constant(0.0, tf.float32)
            for _ in tf.range(repeats):
                total += tf.cast(tf.reduce_sum(tf.matmul(a, b)[:1, :1]), tf.float32)
            return total

        spread = harness.interleave(
            {"matmul": harness.rate(lambda f=products: float(f()), 2.0 * n**3 * repeats)},
            rounds=ctx.pick(5, 1),
        )["matmul"]
        if not best or spread.median > best["flops"].median:
            best = {"size": n, "flops": spread}
    return best


# Contenders ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
    """One model and batch, its in-memory data and its cost."""

    model: str
    width: float
    batch_size: int
    steps: int  # timed steps per round
    macs: int  # multiply-adds per image, forward

    @property
    def train_flop_per_image(self) -> float:
        return 3 * 2 * self.macs  # forward, and backward at twice the forward


def engine_contender(t: Trainer, data: tf.data.Dataset, setup: Setup, per_call: int):
    iterator = engine.stream(t, data)
    return harness.rate(
        lambda: engine.train_steps(t, iterator, setup.steps, per_call),
        setup.steps * setup.batch_size,
    )


def fit_model(t: Trainer, *, jit: bool, per_call: int) -> keras.Model:
    """A copy of ``t``'s model with its weights, compiled for Keras ``fit`` with the engine's
    update and metrics (the loss and top-1 accuracy)."""
    model = keras.models.clone_model(t.model)
    model.set_weights(t.model.get_weights())
    model.compile(
        optimizer=keras.optimizers.SGD(t.config.learning_rate, momentum=t.config.momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit,
        steps_per_execution=per_call,
    )
    return model


def fit_contender(model: keras.Model, data: tf.data.Dataset, setup: Setup):
    """One ``fit`` call per round, as a user trains an epoch: its set-up is counted."""
    return harness.rate(
        lambda: model.fit(data, steps_per_epoch=setup.steps, epochs=1, verbose=0),
        setup.steps * setup.batch_size,
    )


def eager_contender(t: Trainer, data: tf.data.Dataset, setup: Setup):
    """The engine's arithmetic, op by op in Python (no ``tf.function``)."""
    model = keras.models.clone_model(t.model)
    model.set_weights(t.model.get_weights())
    optimizer = keras.optimizers.SGD(t.config.learning_rate, momentum=t.config.momentum)
    optimizer.build(model.trainable_variables)
    iterator = iter(data)

    def steps() -> None:
        for _ in range(setup.steps):
            images, labels = next(iterator)
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                loss = tf.reduce_mean(
                    keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
                )
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
        float(loss)

    return harness.rate(steps, setup.steps * setup.batch_size)


class _Clock(keras.callbacks.Callback):
    """When ``fit`` reached each point of its loop."""

    def on_train_begin(self, logs=None):
        self.begin, self.batch_ends = time.perf_counter(), []

    def on_train_batch_begin(self, batch, logs=None):
        if not self.batch_ends:
            self.first_batch = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.batch_ends.append(time.perf_counter())

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()


def fit_anatomy(model: keras.Model, data: tf.data.Dataset, steps: int, per_call: int) -> dict:
    """Where one ``fit`` call of ``steps`` steps spends its time, in seconds: before its first
    step (callbacks, the data adapter and a new iterator), in its step calls (the first, which
    fills the new iterator's prefetch buffer, and the rest per step), and after the last."""
    clock = _Clock()
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[clock])
    done = time.perf_counter()
    ends = clock.batch_ends
    rest = (ends[-1] - ends[0]) / (steps - per_call) if len(ends) > 1 else float("nan")
    return {
        "call": done - start,
        "before_first_step": clock.first_batch - start,
        "first_call": ends[0] - clock.first_batch,
        "per_step_after": rest,
        "after_last_step": done - ends[-1],
    }


# Sections --------------------------------------------------------------------------------------


def models(ctx: harness.Context) -> list[tuple[str, int, int, int]]:
    """``(model, image size, batch, timed steps per round)`` of the suite."""
    if ctx.smoke:
        return [("resnet20", 32, 16, 2)]
    if ctx.suite == "gpu":
        return [("resnet50", 224, 256, 20), ("vgg16", 224, 128, 20), ("googlenet", 224, 256, 20)]
    return [("resnet20", 32, 128, 8), ("resnet18", 32, 64, 4)]


def _setup(
    ctx: harness.Context, model: str, batch_size: int, steps: int, size: int = 32, **fields: Any
) -> tuple[Setup, Any]:
    width = ctx.pick(1.0, 0.25)
    scratch = ctx.scratch("train_step")
    t = engine.trainer(
        scratch, model=model, width=width, batch_size=batch_size, image_size=size, **fields
    )
    macs, _ = profile(t.model)
    setup = Setup(model, width, batch_size, ctx.pick(steps, 2), macs)
    images, labels = engine.memory_batches(t, 4)
    return setup, (t, engine.repeat(images, labels, batch_size), scratch)


def versus_fit(ctx: harness.Context, section: Section) -> None:
    """The engine against Keras ``fit`` configured every fair way, and an eager step."""
    setup, (t, data, scratch) = _setup(ctx, "resnet20", 64, 16)
    t1 = engine.trainer(
        scratch,
        model=setup.model,
        width=setup.width,
        batch_size=setup.batch_size,
        steps_per_execution=1,
    )
    tx = engine.trainer(
        scratch, model=setup.model, width=setup.width, batch_size=setup.batch_size, jit_compile=True
    )
    for other in (t1, tx):
        other.model.set_weights(t.model.get_weights())
    variants = ctx.pick(
        [(j, n) for j in (False, True) for n in (1, FIT_STEPS)], [(False, 1), (False, FIT_STEPS)]
    )
    fits = {(jit, n): fit_model(t, jit=jit, per_call=n) for jit, n in variants}
    contenders = {
        "engine, 1 step per call": engine_contender(t1, data, setup, 1),
        f"engine, {FIT_STEPS} steps per call (default)": engine_contender(
            t, data, setup, FIT_STEPS
        ),
        f"engine, {FIT_STEPS} per call, XLA": engine_contender(tx, data, setup, FIT_STEPS),
    }
    for (jit, n), model in fits.items():
        name = f"Keras fit, steps_per_execution={n}" + (", XLA" if jit else "")
        contenders[name] = fit_contender(model, data, setup)
    contenders["eager step (no tf.function)"] = eager_contender(t, data, setup)
    rates = harness.interleave(contenders, rounds=ctx.pick(4, 1))
    # Where a fit call's time goes, against the engine's steady step (one call each).
    anatomy = {n: fit_anatomy(fits[(False, n)], data, ctx.pick(64, 16), n) for n in (1, 16)}

    engine_rate = rates[f"engine, {FIT_STEPS} steps per call (default)"]
    fit_names = [name for name in rates if name.startswith("Keras fit")]
    best_fit = max(fit_names, key=lambda name: rates[name].median)
    eager = rates["eager step (no tf.function)"]
    section.data["versus_fit"] = {
        "setup": dataclasses.asdict(setup),
        "images_per_second": {k: dataclasses.asdict(v) for k, v in rates.items()},
        "best_fit": best_fit,
    }
    section.tables.append(
        Table(
            f"**Engine, Keras `fit`, eager** (`{setup.model}` width {setup.width}, batch "
            f"{setup.batch_size}, float32, in-memory batches, {setup.steps} steps per round, "
            "interleaved rounds; images/s, median (min-max); one `fit` call per round)",
            ["contender", "images/s", "engine (default) / this"],
            [
                [name, spread.text(), f"{harness.ratio(engine_rate, spread):.2f}x"]
                for name, spread in rates.items()
            ],
        )
    )
    step_ms = 1000 * setup.batch_size / engine_rate.median
    section.data["versus_fit"]["fit_anatomy_seconds"] = anatomy
    section.tables.append(
        Table(
            f"**Where one Keras `fit` call goes** ({ctx.pick(64, 16)} "
            "steps, float32, no XLA; ms; the engine's step at 16 per call for reference: "
            f"{step_ms:.1f} ms)",
            [
                "steps_per_execution",
                "before the first call",
                "first call, per step (a new iterator fills)",
                "per step after it",
                "after the last step",
            ],
            [
                [
                    str(n),
                    f"{a['before_first_step'] * 1000:.0f}",
                    f"{a['first_call'] / n * 1000:.1f}",
                    f"{a['per_step_after'] * 1000:.1f}",
                    f"{a['after_last_step'] * 1000:.0f}",
                ]
                for n, a in anatomy.items()
            ],
        )
    )
    section.goals += [
        Goal(
            "CPU: engine >= 1.0x the best-configured Keras `fit`",
            f"{harness.ratio(engine_rate, rates[best_fit]):.2f}x ({best_fit})",
            harness.ratio(engine_rate, rates[best_fit]) >= 1.0,
        ),
        Goal(
            "CPU: engine >= 1.3x the eager step",
            f"{harness.ratio(engine_rate, eager):.2f}x",
            harness.ratio(engine_rate, eager) >= 1.3,
        ),
    ]


def precisions(ctx: harness.Context) -> list[str]:
    """The precisions the device runs: float16 only on a GPU (a CPU emulates it)."""
    found = ["float32", "mixed_bfloat16"]
    if _device_kind() == "GPU":
        found.append("mixed_float16")
    return found


def choices(ctx: harness.Context) -> list[tuple[str, bool]]:
    """Each precision with XLA off and on (in smoke mode, two of them: every code path)."""
    every = [(p, jit) for p in precisions(ctx) for jit in (False, True)]
    return ctx.pick(every, [("float32", False), ("mixed_bfloat16", True)])


def precision_and_xla(ctx: harness.Context, section: Section, peaks: dict[str, Any]) -> None:
    """Each precision with XLA on and off, and the fraction of the matrix-multiply peak."""
    rows, data = [], {}
    for model, size, batch, steps in models(ctx):
        setup, (t, _, scratch) = _setup(ctx, model, batch, steps, size)
        images, labels = engine.memory_batches(t, 4)
        contenders = {}
        for precision, jit in choices(ctx):
            other = engine.trainer(
                scratch,
                model=model,
                width=setup.width,
                batch_size=batch,
                precision=precision,
                jit_compile=jit,
                image_size=size,
            )
            other.model.set_weights(t.model.get_weights())
            data_ = engine.repeat(images, labels, batch)
            contenders[(precision, jit)] = engine_contender(other, data_, setup, FIT_STEPS)
        rates = harness.interleave(
            {f"{p}{', XLA' if j else ''}": c for (p, j), c in contenders.items()},
            rounds=ctx.pick(3, 1),
        )
        base = rates["float32"]
        for (precision, jit), _ in contenders.items():
            name = f"{precision}{', XLA' if jit else ''}"
            spread = rates[name]
            peak_key = (
                "bfloat16"
                if "bfloat16" in precision
                else "float16"
                if "16" in precision
                else "float32"
            )
            peak = peaks.get(peak_key)
            achieved = spread.median * setup.train_flop_per_image
            fraction = achieved / peak["flops"].median if peak else None
            rows.append(
                [
                    f"{model} {size}x{size} (batch {batch})",
                    name,
                    spread.text(),
                    f"{harness.ratio(spread, base):.2f}x",
                    f"{achieved / 1e9:.1f}",
                    f"{fraction:.0%} of {peak_key}" if fraction is not None else "n/a",
                ]
            )
            data[f"{model}/{name}"] = {
                "images_per_second": dataclasses.asdict(spread),
                "gflop_per_second": achieved / 1e9,
                "fraction_of_peak": fraction,
                "peak": peak_key,
            }
        if model == "resnet18":
            f32 = data[f"{model}/float32"]["fraction_of_peak"]
            section.goals.append(
                Goal(
                    "CPU: float32 step >= 80% of the fp32 matrix-multiply rate (resnet18, 32x32)",
                    f"{f32:.0%}",
                    f32 >= 0.8,
                )
            )
        if model == "resnet50" and f"{model}/mixed_float16, XLA" in data:
            rate = data[f"{model}/mixed_float16, XLA"]["images_per_second"]["median"]
            section.goals.append(
                Goal(
                    "GPU: resnet50 224x224, mixed_float16 and XLA, above 2,375 images/s "
                    "(NVIDIA's TensorFlow figure for one A100)",
                    f"{rate:,.0f} images/s",
                    rate > 2375,
                )
            )
    section.data["precision_and_xla"] = data
    section.tables.append(
        Table(
            "**Precision and XLA** (the engine, in-memory batches, width "
            f"{ctx.pick(1.0, 0.25)}, interleaved rounds; images/s median (min-max); "
            "achieved rate = images/s x 6 x the model's multiply-adds (`zoo.summary`))",
            ["model", "precision, compiler", "images/s", "vs float32", "GFLOP/s", "of peak"],
            rows,
        )
    )


def choices_on_digits(ctx: harness.Context, section: Section) -> None:
    """``python -m zoo.train``'s default run under each precision and compiler: the accuracy
    each choice of ``--precision`` and ``--jit-compile`` reaches, and its training time."""
    rows, data = [], {}
    auto = (resolve_precision("auto"), resolve_jit_compile("auto"))
    for precision, jit in choices(ctx):
        config = TrainConfig(
            precision=precision,
            jit_compile=jit,
            **ctx.pick({}, {"epochs": 1, "width": 0.25}),
        )
        options = RunOptions(
            run_dir=tempfile.mkdtemp(prefix="run-", dir=ctx.scratch("digits")), verbose=False
        )
        metrics = fit(config, options=options).metrics
        name = f"{precision}{', XLA' if jit else ''}"
        data[name] = {k: metrics[k] for k in ("val_accuracy", "test_accuracy", "train_seconds")}
        rows.append(
            [
                name + (" (auto here)" if (precision, jit) == auto else ""),
                f"{metrics['val_accuracy']:.4f}",
                f"{metrics['test_accuracy']:.4f}",
                f"{metrics['train_seconds']:.0f}",
            ]
        )
    section.data["digits"] = data
    section.tables.append(
        Table(
            "**Each choice on digits** (`python -m zoo.train --precision P --jit-compile on|off`: "
            f"the default run, {TrainConfig().epochs if not ctx.smoke else 1} epochs, seed 0; "
            "one run each, so the seconds are indicative only)",
            ["precision, compiler", "validation accuracy", "test accuracy", "training seconds"],
            rows,
        )
    )


def peaks_table(ctx: harness.Context, section: Section) -> dict[str, Any]:
    peaks = {"float32": matmul_peak(ctx, tf.float32), "bfloat16": matmul_peak(ctx, tf.bfloat16)}
    if _device_kind() == "GPU":
        peaks["float16"] = matmul_peak(ctx, tf.float16)
    section.data["matmul_peak"] = {
        k: {"size": v["size"], "flops": dataclasses.asdict(v["flops"])} for k, v in peaks.items()
    }
    section.tables.append(
        Table(
            "**Matrix-multiply peak** (square `tf.matmul` in a `tf.function`, best size, "
            "interleaved rounds; GFLOP/s median (min-max))",
            ["dtype", "size", "GFLOP/s"],
            [[k, str(v["size"]), v["flops"].scaled(1e-9).text()] for k, v in peaks.items()],
        )
    )
    return peaks


def versus_torch(ctx: harness.Context, section: Section) -> None:
    """The engine against PyTorch on the same architecture (when torch is installed)."""
    if importlib.util.find_spec("torch") is None:
        section.notes.append("PyTorch is not installed: `pip install -e .[bench]` adds it.")
        section.goals.append(
            Goal(
                "CPU: engine >= 1.0x PyTorch eager (channels-last), resnet18 32x32", "not run", None
            )
        )
        return
    from benchmarks import torch_models

    rows, data = [], {}
    gpu = _device_kind() == "GPU"
    # On a GPU both sides at their fastest: mixed precision (AMP for PyTorch), XLA for the engine.
    fields = {"precision": "mixed_float16", "jit_compile": "on"} if gpu else {}
    mine_name = "engine (mixed_float16, XLA)" if gpu else "engine (float32)"
    for model, size, batch, steps in models(ctx):
        setup, (t, stream_data, _) = _setup(ctx, model, batch, steps, size, **fields)
        torch_models.assert_same_size(model, setup.width)
        contenders: dict[str, Callable[[], float]] = {
            mine_name: engine_contender(t, stream_data, setup, FIT_STEPS)
        }
        failures = {}
        for compiled in ctx.pick((False, True), (False,)):
            name = "PyTorch, channels-last" + (", AMP" if gpu else "")
            name += ", torch.compile" if compiled else ", eager"
            try:
                steps_fn = torch_models.train_step_runner(
                    model,
                    batch_size=batch,
                    image_size=size,
                    width=setup.width,
                    compile=compiled,
                    amp=gpu,
                    device="cuda" if gpu else "cpu",
                )
            except Exception as err:  # compile needs a working C++ toolchain
                failures[name] = str(err).splitlines()[0] if str(err) else type(err).__name__
                continue
            contenders[name] = harness.rate(
                lambda f=steps_fn, n=setup.steps: f(n), setup.steps * batch
            )
        rates = harness.interleave(contenders, rounds=ctx.pick(3, 1))
        mine = rates[mine_name]
        for name, spread in rates.items():
            rows.append(
                [
                    f"{model} {size}x{size} (batch {batch})",
                    name,
                    spread.text(),
                    f"{harness.ratio(mine, spread):.2f}x",
                ]
            )
        for name, reason in failures.items():
            rows.append([f"{model} (batch {batch})", name, f"not available: {reason}", ""])
        data[model] = {
            "images_per_second": {k: dataclasses.asdict(v) for k, v in rates.items()},
            "failures": failures,
        }
        if model in ("resnet18", "resnet50"):
            eager = rates.get("PyTorch, channels-last" + (", AMP" if gpu else "") + ", eager")
            section.goals.append(
                Goal(
                    f"{'GPU' if gpu else 'CPU'}: engine >= 1.0x PyTorch eager"
                    f"{' AMP' if gpu else ''} (channels-last), {model} {size}x{size}",
                    f"{harness.ratio(mine, eager):.2f}x" if eager else "not run",
                    harness.ratio(mine, eager) >= 1.0 if eager else None,
                )
            )
    section.data["versus_torch"] = {"torch": torch_models.torch_info(), "models": data}
    section.tables.append(
        Table(
            "**PyTorch on the same architecture** (parameter counts checked equal; SGD with "
            "momentum, float32, in-memory batches, interleaved rounds; images/s median (min-max))",
            ["model", "contender", "images/s", "engine / this"],
            rows,
        )
    )


def gpu_goals(ctx: harness.Context, section: Section) -> None:
    """The GPU goals, reported as not measured where no GPU runs TensorFlow."""
    if _device_kind() == "GPU":
        return  # measured by the GPU suite's own tables
    for goal in (
        "GPU: resnet50 224x224, mixed_float16 and XLA, above 2,375 images/s on one H100",
        "GPU: engine >= 1.0x PyTorch AMP channels-last, same run",
    ):
        section.goals.append(Goal(goal, "not measured: TensorFlow finds no GPU here", None))


def run(ctx: harness.Context) -> Section:
    section = Section("train_step", "Training step")
    gpu_goals(ctx, section)
    peaks = peaks_table(ctx, section)
    versus_fit(ctx, section)
    precision_and_xla(ctx, section, peaks)
    versus_torch(ctx, section)
    choices_on_digits(ctx, section)
    return section
