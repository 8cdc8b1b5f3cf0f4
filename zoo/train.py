"""``python -m zoo.train``: train a model of the zoo. With no arguments, ``resnet20`` on the
embedded digits, offline, in a few minutes on a CPU.

Every experiment flag is a field of `zoo.config.TrainConfig` (``--learning-rate`` sets
``learning_rate``); the flags of this invocation (run directory, reporting, steps per call,
``--export``) are fields of `zoo.config.RunOptions`. ``--resume RUN`` continues a run with its
saved configuration: only ``--epochs`` (not below the epochs done) and invocation flags may be
given with it. Exit codes: 0 done, 2 bad arguments or data (or a babysitting check failed
under ``--strict-checks``; the finished epochs are kept), 3 the loss diverged (the last good
checkpoint is kept), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from zoo.cli import (
    EXIT_BAD_INPUT,
    HelpFormatter,
    add_dataclass_flags,
    add_verbose_flag,
    cli_fields,
    device_line,
    one_line,
    onednn_line,
    os_error_line,
    start_tensorflow,
)
from zoo.config import RunOptions, TrainConfig

EXIT_DIVERGED = 3
RESUMABLE = frozenset({"epochs"})  # experiment fields that --resume may change


def build_parser(*, suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The CLI: one flag per `TrainConfig` and `RunOptions` field, and ``--resume``.

    With ``suppress_defaults`` no flag has a default, so the parsed namespace holds exactly the
    flags given (how ``--resume`` tells what was asked for from what was defaulted)."""
    parser = argparse.ArgumentParser(
        prog="python -m zoo.train",
        description="Train a model of the zoo with a static-graph (tf.function) step under "
        "tf.distribute and mixed precision. Results go to a run directory: config.json, "
        "history.csv, metrics.json, curves.png, checkpoints and TensorBoard logs.",
        formatter_class=HelpFormatter,
        argument_default=argparse.SUPPRESS if suppress_defaults else None,
    )
    add_dataclass_flags(
        parser.add_argument_group("experiment (saved in config.json)"),
        TrainConfig,
        suppress_defaults=suppress_defaults,
    )
    add_dataclass_flags(
        parser.add_argument_group("this invocation (may change on --resume)"),
        RunOptions,
        suppress_defaults=suppress_defaults,
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=argparse.SUPPRESS if suppress_defaults else None,
        help="continue the run in RUN_DIR from its newest good checkpoint, with its saved "
        "configuration (only --epochs and the flags of this invocation may be given)",
    )
    if not suppress_defaults:
        add_verbose_flag(parser)
    return parser


def parse(
    argv: Sequence[str] | None,
) -> tuple[TrainConfig | None, RunOptions, str | None, int | None]:
    """``(config, options, resume, epochs)`` from the command line; config is None with
    ``--resume`` (the run's own is used) and ``epochs`` is set only when given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = vars(build_parser(suppress_defaults=True).parse_known_args(argv)[0])
    option_names = {f.name for f in cli_fields(RunOptions)}
    try:
        options = RunOptions(**{name: getattr(args, name) for name in option_names})
    except ValueError as err:
        parser.error(str(err))
    if args.resume is not None:
        if not args.resume:
            parser.error("--resume needs a run directory")
        fixed = sorted(set(given) - option_names - RESUMABLE - {"resume"})
        placed = sorted({"run_dir", "runs_dir"} & set(given))
        if fixed or placed:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in fixed + placed)
            parser.error(
                f"--resume continues with the run's saved configuration in its own directory; "
                f"drop {flags}"
            )
        return None, options, args.resume, given.get("epochs")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        config = TrainConfig(**values)
    except ValueError as err:
        parser.error(str(err))
    return config, options, None, None


def main(argv: Sequence[str] | None = None) -> int:
    config, options, resume, epochs = parse(argv)
    verbose = build_parser().parse_args(argv).verbose
    start_tensorflow(verbose)
    print(f"{device_line()}; {onednn_line()}", flush=True)

    # The data stack loads once the arguments are valid.
    from pipelines import DataUnavailableError
    from zoo.training import (
        NoCheckpointError,
        RunLockedError,
        Trainer,
        TrainingCheckFailed,
        TrainingDiverged,
        resolve_runtime_for,
    )

    trainer = None
    try:
        if resume:
            from zoo.training import RunDirectory

            run = RunDirectory.open(resume)
            runtime = resolve_runtime_for(
                run.read_config(), trained_precision=run.trained_precision()
            )
            trainer = Trainer.resume(resume, epochs=epochs, options=options, runtime=runtime)
        else:
            runtime = resolve_runtime_for(config)
            trainer = Trainer(config, options=options, runtime=runtime)
        metrics = trainer.fit().metrics
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except (
        ValueError,
        RunLockedError,
        NoCheckpointError,
        DataUnavailableError,
        TrainingCheckFailed,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        run = trainer.run if trainer is not None else None
        if err.errno is None:  # raised by the project with its own message
            line = str(err)
        elif _is_output(err.filename, options, run):
            line = os_error_line(err, "--runs-dir/--run-dir")
        else:  # something the run reads: data, --init-from
            line = f"cannot read {err.filename}: {err.strerror}; check that path."
        print(f"error: {line}{_kept(run)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except tf_errors() as err:  # TensorFlow's own file and memory failures (checkpoints, logs)
        if verbose:  # the whole story, for a bug report
            traceback.print_exc()
        advice = (
            " It ran out of memory: lower --batch-size (or --width)."
            if "ResourceExhausted" in type(err).__name__
            else ""
        )
        run = trainer.run if trainer is not None else None
        print(f"error: {one_line(err)}.{advice}{_kept(run)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        where = f"--resume {trainer.run.path}" if trainer and trainer.run else "a new run"
        print(
            f"interrupted: the last finished epoch's checkpoint is kept; continue with {where}",
            file=sys.stderr,
        )
        return 130
    summary = (
        f"best {metrics['monitor']} at epoch {metrics['best_epoch']}: validation accuracy "
        f"{metrics['val_accuracy']:.4f} (error rate {1 - metrics['val_accuracy']:.4f})"
    )
    if "test_accuracy" in metrics:
        summary += f"; test accuracy {metrics['test_accuracy']:.4f} with the best weights"
    if metrics.get("check_warnings"):
        summary += f"; the checks warned: {', '.join(metrics['check_warnings'])} (see checks.json)"
    print(
        f"{summary}; {metrics['train_seconds']:.0f} s of training at "
        f"{metrics['images_per_second']:.0f} images/s.\nResults: {metrics['run_dir']}",
        flush=True,
    )
    if options.export:  # after the summary: a failed export must not hide what was trained
        from zoo.export import export_finished_run

        if not export_finished_run(metrics["run_dir"], "run"):
            return EXIT_BAD_INPUT
    return 0


def tf_errors() -> type[Exception]:
    """TensorFlow's error base class (imported only once TensorFlow has started)."""
    import tensorflow as tf

    return tf.errors.OpError


def _is_output(filename: Any, options: RunOptions, run: Any) -> bool:
    """Whether ``filename`` lies where this run writes (its run directory or runs dir)."""
    if not filename:
        return True
    path = os.path.abspath(os.fsdecode(filename))
    roots = [options.run_dir, options.runs_dir, run.path if run is not None else None]
    for root in roots:
        if root is not None:
            top = os.path.abspath(os.fspath(root))
            if path == top or path.startswith(top + os.sep) or top.startswith(path + os.sep):
                return True
    return False


def _kept(run: Any) -> str:
    """What a failed run keeps and how to go on, when it has a directory left."""
    if run is not None and run.path.is_dir() and run.read_history():
        return f" The finished epochs are kept: continue with --resume {run.path}"
    return ""


if __name__ == "__main__":
    sys.exit(main())
