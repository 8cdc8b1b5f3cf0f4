"""``python -m tuning.lr_find``: the learning-rate range test (`zoo.training.lr_range`, the
engine's own, also behind ``--learning-rate auto``) as a command, with its curve and plot.

Flags are `zoo.config.TrainConfig` fields, as for ``python -m zoo.train``, except those the
range test replaces or never uses (`SKIPPED_FIELDS`). Writes ``OUT/lr_find.csv`` and
``OUT/lr_find.png``, nothing else. The last line printed is ``suggested learning rate: X``.
Exit codes: 0 done, 2 bad arguments or data, 130 interrupted.
"""

from __future__ import annotations

if __name__ == "__main__":  # quiet TensorFlow's start before the imports below load it
    from zoo.cli import start_tensorflow_for_main

    start_tensorflow_for_main()

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines import DataUnavailableError
from zoo.cli import EXIT_BAD_INPUT, HelpFormatter, add_dataclass_flags, add_verbose_flag
from zoo.config import TrainConfig
from zoo.training.lr_range import (
    CSV_FIELDS,
    CSV_NAME,
    DEFAULT_END_LR,
    DEFAULT_START_LR,
    DEFAULT_STEPS,
    DIVERGENCE_FACTOR,
    FLAT_DROP,
    MAX_STEPS,
    MIN_STEPS,
    PLOT_NAME,
    SKIP_START,
    SUGGESTION_RULE,
    ExponentialRange,
    LRFindResult,
    check_range,
    is_flat,
    lr_find,
    plot,
    suggest,
    write_csv,
)

__all__ = [
    "CSV_FIELDS",
    "FLAT_DROP",
    "FLAT_WARNING",
    "SKIPPED_FIELDS",
    "SUGGESTION_RULE",
    "ExponentialRange",
    "LRFindResult",
    "build_parser",
    "is_flat",
    "lr_find",
    "main",
    "plot",
    "suggest",
    "write_csv",
]

FLAT_WARNING = (
    f"warning: the smoothed loss never fell {FLAT_DROP:.0%} below its level at step "
    f"{SKIP_START}: the model learned nothing in these steps, so the suggestion (where the flat "
    "loss starts to rise, / 10) is a guess; give more --steps, a larger --end-lr if the loss "
    "never rose, or a lower --start-lr if it only rose.\n"
)

# TrainConfig fields the range test has no use for, and why (they get no flag).
SKIPPED_FIELDS: dict[str, str] = {
    "learning_rate": "the range --start-lr .. --end-lr replaces it",
    "epochs": "the test runs --steps steps",
    "schedule": "the test's exponential ramp replaces the schedule",
    "warmup_epochs": "the test's exponential ramp replaces the schedule",
    "decay_epochs": "the test's exponential ramp replaces the schedule",
    "decay_rate": "the test's exponential ramp replaces the schedule",
    "monitor": "nothing is evaluated",
    "mode": "nothing is evaluated",
    "early_stopping": "nothing is evaluated",
    "bn_recalibration": "nothing is evaluated",
}


# CLI ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The range test's own flags, then one flag per used `TrainConfig` field."""
    skipped = "; ".join(
        f"{', '.join('--' + n.replace('_', '-') for n in names)}: {why}"
        for why, names in _by_reason().items()
    )
    parser = argparse.ArgumentParser(
        prog="python -m tuning.lr_find",
        description="Learning-rate range test: train a throw-away model for up to --steps "
        "steps of the engine's step while the learning rate grows exponentially from "
        "--start-lr to --end-lr; stop when the smoothed loss passes 4x its minimum; suggest "
        f"the {SUGGESTION_RULE}. Writes OUT/{CSV_NAME} and OUT/{PLOT_NAME}, nothing else.",
        epilog=f"Training flags without a meaning here are left out ({skipped}).",
        formatter_class=HelpFormatter,
    )
    test = parser.add_argument_group("range test")
    test.add_argument("--out", default="lr_find", help="folder for the CSV and the plot")
    test.add_argument(
        "--start-lr", type=float, default=DEFAULT_START_LR, help="learning rate of the first step"
    )
    test.add_argument(
        "--end-lr", type=float, default=DEFAULT_END_LR, help="learning rate of the last step"
    )
    test.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"training steps at most ({MIN_STEPS}-{MAX_STEPS}); the test stops earlier when "
        "the loss diverges",
    )
    add_dataclass_flags(
        parser.add_argument_group("training (as python -m zoo.train)"),
        TrainConfig,
        skip=frozenset(SKIPPED_FIELDS),
    )
    return parser


def _by_reason() -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {}
    for name, why in SKIPPED_FIELDS.items():
        reasons.setdefault(why, []).append(name)
    return reasons


def parse(argv: Sequence[str] | None) -> tuple[TrainConfig, argparse.Namespace]:
    """The config and the range test's arguments; a bad value exits 2 with one error line."""
    parser = build_parser()
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name not in SKIPPED_FIELDS
    }
    try:
        check_range(args.start_lr, args.end_lr, args.steps)
        config = TrainConfig(**values)
    except ValueError as err:
        parser.error(str(err))
    return config, args


def main(argv: Sequence[str] | None = None) -> int:
    config, args = parse(argv)
    try:
        result = lr_find(
            config,
            start_lr=args.start_lr,
            end_lr=args.end_lr,
            steps=args.steps,
            out=args.out,
            verbose=True,
        )
    except (ValueError, FileNotFoundError, FileExistsError, DataUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    ended = {
        "end": "every step ran",
        "diverged": f"stopped: the smoothed loss passed {DIVERGENCE_FACTOR:g}x its minimum",
        "not finite": "stopped: the loss was no longer finite",
    }[result.stopped]
    out = Path(args.out)
    print(
        f"{result.steps} steps, learning rate {result.learning_rates[0]:.2g} to "
        f"{result.learning_rates[-1]:.2g}, in {result.seconds:.0f} s ({ended}).\n"
        + (
            f"flat smoothed loss (lowest {min(result.smoothed):.4f}) up to learning rate "
            f"{result.min_loss_lr:.2g}.\n{FLAT_WARNING}"
            if result.flat
            else f"minimum smoothed loss {min(result.smoothed):.4f} at learning rate "
            f"{result.min_loss_lr:.2g}; steepest descent at {result.steepest:.2g}.\n"
        )
        + f"wrote {out / CSV_NAME} and {out / PLOT_NAME}\n"
        f"suggested learning rate: {result.suggestion:.2g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
