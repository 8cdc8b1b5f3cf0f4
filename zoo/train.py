"""``python -m zoo.train``: train a model of the zoo. With no arguments, ``resnet20`` on the
embedded digits, offline, in a few minutes on a CPU.

Every flag is a field of `zoo.config.TrainConfig` (``--learning-rate`` sets ``learning_rate``).
Exit codes: 0 done, 2 bad arguments or data, 3 the loss diverged (the last good checkpoint is
kept), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Sequence

from zoo.config import TrainConfig

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


def _base_type(annotation: str):
    hint = typing.get_type_hints(TrainConfig)[annotation]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return args[0], True
    return hint, False


def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.train",
        description="Train a model of the zoo with a static-graph (tf.function) step under "
        "tf.distribute and mixed precision. Results go to a run directory: config.json, "
        "history.csv, metrics.json, curves.png, checkpoints and TensorBoard logs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind, optional = _base_type(field.name)
        help_text = field.metadata["help"]
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=field.default, help=help_text
            )
        else:
            parser.add_argument(
                flag,
                type=_optional(kind) if optional else kind,
                default=field.default,
                choices=field.metadata.get("choices"),
                metavar=field.name.upper() if not field.metadata.get("choices") else None,
                help=help_text,
            )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR from its last checkpoint, with its "
        "saved configuration (only --epochs may change it)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    if args.resume:
        changed = [
            f"--{k.replace('_', '-')}"
            for k, v in values.items()
            if v != TrainConfig.__dataclass_fields__[k].default and k != "epochs"
        ]
        if changed:
            parser.error(
                f"--resume continues with the run's saved configuration; drop {', '.join(changed)}"
            )
    try:
        config = TrainConfig(**values)
    except ValueError as err:
        parser.error(str(err))

    from zoo.engine import Trainer, TrainingDiverged  # the data stack loads once args are valid

    try:
        if args.resume:
            epochs = values["epochs"] if "--epochs" in (argv or sys.argv) else None
            trainer = Trainer.resume(args.resume, epochs=epochs)
        else:
            trainer = Trainer(config)
        metrics = trainer.fit()
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(
            "interrupted: the last finished epoch's checkpoint is kept; continue with "
            f"--resume {trainer.run_dir}",
            file=sys.stderr,
        )
        return 130
    if trainer.config.export:  # the saved configuration when resuming
        from zoo.export import ExportError, export, load_source

        try:
            target = export(load_source(metrics["run_dir"], checkpoint="best"))
        except (ValueError, FileExistsError, ExportError) as err:
            print(f"error: the run finished but its export failed: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"exported the best weights to {target}")
    summary = (
        f"best validation accuracy {metrics['val_accuracy']:.4f} (epoch {metrics['best_epoch']})"
    )
    if "test_accuracy" in metrics:
        summary += f"; test accuracy {metrics['test_accuracy']:.4f} with the best weights"
    print(
        f"{summary}; {metrics['train_seconds']:.0f} s of training at "
        f"{metrics['images_per_second']:.0f} images/s.\nResults: {metrics['run_dir']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
