"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks"; fast.ai's ``lr_find``), the engine's own: behind ``--learning-rate auto`` and
``python -m tuning.lr_find``.

A freshly built model trains for up to ``steps`` steps of the engine's own step (the one
``python -m zoo.train`` runs) while the learning rate grows exponentially from ``start_lr`` to
``end_lr``; each step's mean loss is recorded and smoothed (exponential moving average,
beta 0.98, bias-corrected). The test stops early once the smoothed loss exceeds 4x its minimum
or is no longer finite.

The suggestion (`SUGGESTION_RULE`) is the learning rate at the minimum of the smoothed loss
(after the first `SKIP_START` steps, whose smoothed loss rests on few losses) divided by 10: an
order of magnitude below where the loss stops falling. A curve whose smoothed loss never falls
`FLAT_DROP` (1%) below where it started is *flat*: the model learned nothing in the test's steps
(resnet20 at width 1/8 in the 100 steps of ``--learning-rate auto``: ln(10) from 1e-7 to about
0.05), and its minimum is noise (1e-8 on one machine, 0.1 on another, which is how the bare
argmin misread it). For a flat curve the minimum's place is where the flat part ends: the last
learning rate before the smoothed loss rises more than `FLAT_DROP` above its minimum.
``--learning-rate auto`` does not trust a flat curve at all: it trains at the model's recipe
rate and says so. The valleys measured here fell 1.5-3.6% (resnet20 at width 1/8, 200 steps,
seeds 0-4, float32 and bfloat16); the flat curves under 0.5%. The steepest descent of the
smoothed loss against log(lr) (between step `SKIP_START` and the minimum) is reported
beside it. Minimum/10 is the one suggested because it was the safe one on digits: for resnet20
at width 1/8 (batch 64, seeds 0-4), 57 steps at minimum/10 (0.06-0.23) lowered the training
loss by 0.3-0.7 every time and ended far higher at 100x it, while at the steepest descent
(0.27-1.4) the loss barely moved for three seeds of five. For the default resnet20 (batch
128, seeds 0-2) the steepest descent (0.08) trains faster than minimum/10 (0.01), which still
trains. Both read a curve that is smoothed over about 50 steps and that mixes the learning
rate's effect with the training done so far; a learning rate too low costs time, one too high
does not train.

The model is thrown away: no run directory is made, and the global dtype policy, op
determinism and Python's and NumPy's random state are left as found. Only ``out`` gets
``lr_find.csv`` (step, learning_rate, loss, smoothed_loss) and ``lr_find.png``, each written
through a temporary file and a rename.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo.config import TrainConfig
from zoo.files import atomic_write_bytes, atomic_write_text
from zoo.training.data import TrainData
from zoo.training.model import build_model
from zoo.training.optim import Optimisation, build_optimisation
from zoo.training.runtime import Runtime, resolve_runtime_for
from zoo.training.step import Steps
from zoo.training.transfer import start_from

DEFAULT_START_LR, DEFAULT_END_LR, DEFAULT_STEPS = 1e-7, 10.0, 200
MIN_STEPS, MAX_STEPS = 20, 1000  # fewer make no curve; a few hundred are plenty
BETA = 0.98  # smoothing of the loss (fast.ai's)
DIVERGENCE_FACTOR = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum
SKIP_START = 10  # the first steps' smoothed loss rests on few losses: no minimum, no slope there
FLAT_DROP = 0.01  # a curve that never falls 1% below its start is flat (see the docstring)
CSV_NAME, PLOT_NAME = "lr_find.csv", "lr_find.png"
CSV_FIELDS = ("step", "learning_rate", "loss", "smoothed_loss")
SUGGESTION_RULE = "learning rate at the minimum of the smoothed loss / 10"


class ExponentialRange(keras.optimizers.schedules.LearningRateSchedule):
    """``start_lr * (end_lr / start_lr) ** (step / (steps - 1))``: from
    ``start_lr`` at step 0 to ``end_lr`` at step ``steps - 1`` (and on beyond it)."""

    def __init__(self, start_lr: float, end_lr: float, steps: int) -> None:
        self.start_lr, self.end_lr, self.steps = start_lr, end_lr, steps

    def __call__(self, step):
        fraction = tf.cast(step, tf.float32) / float(max(self.steps - 1, 1))
        log_lr = math.log(self.start_lr) + fraction * math.log(self.end_lr / self.start_lr)
        return tf.exp(log_lr)

    def get_config(self) -> dict[str, Any]:
        return {
            "start_lr": self.start_lr,
            "end_lr": self.end_lr,
            "steps": self.steps,
        }


@dataclass(frozen=True)
class LRFindResult:
    """One range test: per step the learning rate, the loss and the smoothed loss.

    Attributes:
        learning_rates: The (head's) learning rate of each step.
        losses: Each step's mean training loss (cross-entropy, without the L2 term).
        smoothed: The bias-corrected moving average of ``losses``.
        suggestion: The suggested learning rate: `min_loss_lr` / 10 (`SUGGESTION_RULE`).
        min_loss_lr: The learning rate at the minimum of the smoothed loss; on a `flat` curve,
            where the flat part ends.
        steepest: Where the smoothed loss falls fastest against log(lr), between step
            `SKIP_START` and its minimum (the other common rule).
        stopped: Why the test ended: ``"diverged"``, ``"not finite"`` or ``"end"``.
        seconds: Wall time of the steps.
        flat: The smoothed loss never fell `FLAT_DROP` below its start: nothing was learned,
            and the suggestion is a guess (`is_flat`).
    """

    learning_rates: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestion: float
    min_loss_lr: float
    steepest: float
    stopped: str
    seconds: float
    flat: bool = False

    @property
    def steps(self) -> int:
        return len(self.losses)

    def rows(self) -> list[dict[str, float | int]]:
        """The rows of ``lr_find.csv``."""
        values = zip(self.learning_rates, self.losses, self.smoothed, strict=True)
        return [
            {"step": i, "learning_rate": lr, "loss": loss, "smoothed_loss": smooth}
            for i, (lr, loss, smooth) in enumerate(values, start=1)
        ]


def check_range(start_lr: float, end_lr: float, steps: int) -> None:
    """Raise a `ValueError` naming the bad value unless ``0 < start_lr < end_lr`` (finite) and
    ``MIN_STEPS <= steps <= MAX_STEPS``."""
    if not (_finite(start_lr) and start_lr > 0):
        raise ValueError(f"start_lr must be > 0; got {start_lr!r}.")
    if not (_finite(end_lr) and end_lr > start_lr):
        raise ValueError(f"end_lr must be larger than start_lr ({start_lr:g}); got {end_lr!r}.")
    if not (isinstance(steps, int) and MIN_STEPS <= steps <= MAX_STEPS):
        raise ValueError(f"steps must be an integer in [{MIN_STEPS}, {MAX_STEPS}]; got {steps!r}.")


def _finite_curve(
    learning_rates: Sequence[float], smoothed: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, int]:
    """The finite part of a curve, and where its minimum is looked for (after `SKIP_START`)."""
    lrs, loss = np.asarray(learning_rates, float), np.asarray(smoothed, float)
    finite = np.isfinite(loss) & np.isfinite(lrs) & (lrs > 0)
    lrs, loss = lrs[finite], loss[finite]
    if lrs.size == 0:
        raise ValueError(
            "the loss was not finite from the first step: lower --start-lr or check the data."
        )
    return lrs, loss, SKIP_START if lrs.size > SKIP_START else 0


def is_flat(learning_rates: Sequence[float], smoothed: Sequence[float]) -> bool:
    """Whether the smoothed loss never fell `FLAT_DROP` below where it started (its value at
    step `SKIP_START`): the model learned nothing, and the curve's minimum is noise."""
    _, loss, skip = _finite_curve(learning_rates, smoothed)
    start = loss[skip]
    return bool(start - loss[skip:].min() < FLAT_DROP * abs(start))


def suggest(
    learning_rates: Sequence[float], smoothed: Sequence[float]
) -> tuple[float, float, float]:
    """``(suggestion, min_loss_lr, steepest)`` of a range test's curve (its finite part).

    ``suggestion``: ``min_loss_lr / 10`` (`SUGGESTION_RULE`).
    ``min_loss_lr``: the learning rate at the minimum of the smoothed loss after the first
    `SKIP_START` steps (when the curve is longer). On a flat curve (`is_flat`) the minimum is
    noise: there, the last learning rate before the smoothed loss first rises more than
    `FLAT_DROP` above it, where the flat part ends (the last one when it never rises).

    ``steepest``: the learning rate of the most negative slope (central differences) of the
    smoothed loss against log(lr) from step `SKIP_START` up to, not including, the minimum; the
    minimum's own slope is about zero and past it the loss rises (the diverging tail). When no
    step lies there (the loss only rose), the suggestion.
    """
    lrs, loss, skip = _finite_curve(learning_rates, smoothed)
    lowest = skip + int(np.argmin(loss[skip:]))
    edge = lowest
    if is_flat(lrs, loss):
        rises = np.flatnonzero(loss[lowest:] > loss[lowest] + FLAT_DROP * abs(loss[lowest]))
        edge = lowest + int(rises[0]) - 1 if rises.size else loss.size - 1
    min_loss_lr = float(lrs[edge])
    if lowest <= SKIP_START:
        return min_loss_lr / 10, min_loss_lr, min_loss_lr / 10
    slope = np.gradient(loss, np.log10(lrs))
    steepest = float(lrs[SKIP_START + int(np.argmin(slope[SKIP_START:lowest]))])
    return min_loss_lr / 10, min_loss_lr, steepest


def lr_find(
    config: TrainConfig,
    *,
    start_lr: float = DEFAULT_START_LR,
    end_lr: float = DEFAULT_END_LR,
    steps: int = DEFAULT_STEPS,
    out: str | os.PathLike[str] | None = None,
    runtime: Runtime | None = None,
    verbose: bool = False,
) -> LRFindResult:
    """Run the learning-rate range test of ``config`` (its schedule fields are not used, see
    `SKIPPED_FIELDS`) on a model that is thrown away afterwards.

    Args:
        config: Model, data and optimizer; ``backbone_lr_mult`` scales the backbone's range.
        start_lr, end_lr, steps: The exponential ramp; see `check_range`.
        out: A folder for ``lr_find.csv`` and ``lr_find.png``, made at the end if missing;
            None: nothing is written.
        runtime: Strategy, precision and determinism; by default resolved from ``config``.
        verbose: Print what runs, and a progress bar on a terminal.

    Raises:
        ValueError: A bad range, model or dataset (before anything is trained or written).
    """
    check_range(start_lr, end_lr, steps)
    config = config.resolve()  # the model's recipe for the fields left unset
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"out must be a folder; {out} is a file.")
    zoo.model_info(config.model)  # an unknown name fails here, naming the close ones
    runtime = runtime or resolve_runtime_for(config)
    runtime.check(config)
    strategy, precision = runtime.strategy, runtime.precision
    with runtime.active():
        data = TrainData(config, strategy)
        data.load_stats(None)
        model, optimisation = _build(config, data, runtime, start_lr, end_lr, steps)
        engine = Steps(
            model, optimisation, config, strategy, data.classes, jit_compile=runtime.xla(config)
        )
        if verbose:
            params = sum(int(np.prod(v.shape)) for v in optimisation.variables)
            print(
                f"range test of {config.model} ({params:,} trainable parameters) on "
                f"{config.dataset} ({data.image_size[0]}x{data.image_size[1]}, batch "
                f"{config.batch_size}, {precision}): up to {steps} steps, learning rate "
                f"{start_lr:g} to {end_lr:g}",
                flush=True,
            )
        iterator = iter(data.train_dataset(0))
        curve = _run(engine, iterator, steps, verbose)
    suggestion, min_loss_lr, steepest = suggest(curve["learning_rates"], curve["smoothed"])
    result = LRFindResult(
        learning_rates=tuple(curve["learning_rates"]),
        losses=tuple(curve["losses"]),
        smoothed=tuple(curve["smoothed"]),
        suggestion=suggestion,
        min_loss_lr=min_loss_lr,
        steepest=steepest,
        stopped=curve["stopped"],
        seconds=curve["seconds"],
        flat=is_flat(curve["learning_rates"], curve["smoothed"]),
    )
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_csv(result, Path(out) / CSV_NAME)
        plot(result, Path(out) / PLOT_NAME, title=f"{config.model} on {config.dataset}")
    return result


def _build(
    config: TrainConfig,
    data: TrainData,
    runtime: Runtime,
    start_lr: float,
    end_lr: float,
    steps: int,
) -> tuple[keras.Model, Optimisation]:
    """The model (as `zoo.training.Trainer` builds it) and its ramped optimisation."""
    model = build_model(
        config,
        input_shape=(*data.image_size, 3),
        classes=data.classes,
        precision=runtime.precision,
        strategy=runtime.strategy,
    )
    classifier = zoo.model_info(config.model).classifier
    if config.init_from:  # as the engine starts it
        start_from(config, model, classifier, data.source.class_names)
    if config.fine_tune and config.freeze_epochs:
        # The learning rate of fine-tuning is the first stage's: the classifier alone.
        config = dataclasses.replace(config, fine_tune=False, freeze_backbone=True)
    with runtime.strategy.scope():
        optimisation = range_optimisation(
            config, model, classifier, runtime.precision, start_lr, end_lr, steps
        )
    return model, optimisation


def range_optimisation(
    config: TrainConfig,
    model: keras.Model,
    classifier: str,
    precision: str,
    start_lr: float,
    end_lr: float,
    steps: int,
) -> Optimisation:
    """The optimizer as the engine makes it (``freeze_backbone``; the backbone at
    ``backbone_lr_mult`` times the rate) on an `ExponentialRange`. Builds slots: call inside
    the strategy's scope."""
    return build_optimisation(
        config,
        model,
        classifier,
        steps,
        precision,
        schedule=ExponentialRange(start_lr, end_lr, steps),
    )


def _run(engine: Steps, iterator, steps: int, verbose: bool) -> dict[str, Any]:
    """One engine call per step until ``steps`` or divergence: the curve and why it ended."""
    curve: dict[str, Any] = {"learning_rates": [], "losses": [], "smoothed": [], "stopped": "end"}
    bar = None
    if verbose and sys.stdout.isatty():  # as the engine's console logger
        bar = keras.utils.Progbar(steps, stateful_metrics=["lr", "loss"])
    average, lowest, started = 0.0, math.inf, time.perf_counter()
    for step in range(1, steps + 1):
        total, _, _, count = engine.train(iterator, 1)
        loss = total / max(count, 1.0)
        average = BETA * average + (1 - BETA) * loss
        smoothed = average / (1 - BETA**step)
        curve["learning_rates"].append(engine.optimisation.learning_rate())
        curve["losses"].append(loss)
        curve["smoothed"].append(smoothed)
        lowest = min(lowest, smoothed)
        if bar is not None:
            bar.update(step, [("lr", curve["learning_rates"][-1]), ("loss", smoothed)])
        if not math.isfinite(smoothed):
            curve["stopped"] = "not finite"
        elif smoothed > DIVERGENCE_FACTOR * lowest:
            curve["stopped"] = "diverged"
        if curve["stopped"] != "end":
            if bar is not None:
                bar.update(step, finalize=True)
            break
    curve["seconds"] = time.perf_counter() - started
    return curve


# Files --------------------------------------------------------------------------------------


def write_csv(result: LRFindResult, path: Path) -> None:
    """``step, learning_rate, loss, smoothed_loss``, one row per step, written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in result.rows():
        writer.writerow({k: v if k == "step" else f"{v:.8g}" for k, v in row.items()})
    atomic_write_text(path, text.getvalue())


def plot(result: LRFindResult, path: Path, title: str = "") -> None:
    """Smoothed (and raw) loss against the learning rate on a log axis, the suggestion marked
    on the curve and the steepest descent beside it; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lrs, loss, smoothed = (
        np.asarray(v, float) for v in (result.learning_rates, result.losses, result.smoothed)
    )
    shown = np.isfinite(smoothed)
    lrs, loss, smoothed = lrs[shown], loss[shown], smoothed[shown]
    # A Figure of its own with the Agg canvas: pyplot and the user's backend are left alone.
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(lrs, loss, color="0.75", linewidth=0.8, label="loss")
    ax.plot(lrs, smoothed, color="C0", label="smoothed loss")
    at = int(np.argmin(np.abs(np.log(lrs / result.suggestion))))
    ax.axvline(result.suggestion, color="C3", linewidth=1)
    ax.plot(
        [result.suggestion],
        [smoothed[at]],
        "o",
        color="C3",
        label=f"suggestion {result.suggestion:.2g} (minimum / 10)",
    )
    ax.axvline(
        result.steepest,
        color="C2",
        linestyle="--",
        linewidth=1,
        label=f"steepest descent {result.steepest:.2g}",
    )
    # The smoothed curve's range; the raw loss and the diverging tail may leave it.
    top, low = float(smoothed[: SKIP_START + 1].max()), float(smoothed.min())
    span = max(top - low, 1e-3)
    ax.set_ylim(low - 0.2 * span, top + 0.8 * span)
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
