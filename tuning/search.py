"""``python -m tuning.search``: random search, coarse then fine, with KerasTuner on the engine.

KerasTuner's oracle (random search, or Bayesian optimisation) chooses each trial's
hyperparameters and keeps the search's state; `ZooTuner.run_trial` trains the trial through
`zoo.training.Trainer`, the engine of ``python -m zoo.train``. We subclass the tuner rather than
write a ``HyperModel`` because the engine builds its own model, optimizer, datasets and run
directory from a `TrainConfig`: a ``HyperModel.build`` would build a model only to throw it away,
and a trial needs its id to own a run directory it can resume after a kill.

Layout of ``<directory>/<project>/``::

    coarse/, fine/             KerasTuner's projects (oracle.json, trial_<id>/trial.json)
    coarse/trial_<id>/run/     the trial's run directory: an ordinary zoo.train run
    trials.csv, trials.png     every trial of both stages, rewritten after each trial
    hparams/                   TensorBoard's HParams configuration
"""

from __future__ import annotations

if __name__ == "__main__":  # quiet TensorFlow's start before the imports below load it
    from zoo.cli import start_tensorflow_for_main

    start_tensorflow_for_main()

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras_tuner

from tuning import space as spaces
from zoo.cli import (
    EXIT_BAD_INPUT,
    HelpFormatter,
    add_dataclass_flags,
    add_verbose_flag,
    one_line,
)
from zoo.config import RunOptions, TrainConfig
from zoo.files import atomic_write_bytes, atomic_write_text
from zoo.monitor import MONITORS, Monitor
from zoo.training.rundir import TENSORBOARD

STAGES = ("coarse", "fine")
ALGORITHMS = ("random", "bayesian")
# Fields a search decides itself (a trial's best epoch is chosen by --objective), or that make
# no sense per trial: no flag, and no entry of a space.
NOT_PASSED_THROUGH = frozenset(spaces.DECIDED_BY_THE_SEARCH)


def role() -> str:
    """``single``, ``chief`` or ``worker`` (KerasTuner's distributed mode, from the environment
    variables KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT)."""
    if not os.environ.get("KERASTUNER_ORACLE_IP"):
        return "single"
    return "chief" if os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief" else "worker"


class ZooTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """A KerasTuner tuner whose trials train through the zoo's engine.

    Args:
        oracle: KerasTuner's oracle, holding the search space.
        base: The fixed part of every trial's `TrainConfig`.
        epochs: Epochs per trial.
        stage: ``coarse`` or ``fine``, for reports.
        runtime: The `zoo.training.Runtime` every trial trains under (resolved once).
        callbacks: Keras callbacks for every trial's engine.
    """

    def __init__(
        self,
        oracle: keras_tuner.Oracle,
        *,
        base: TrainConfig,
        epochs: int,
        stage: str,
        runtime: Any,
        callbacks: Sequence[Any] = (),
        verbose: bool = True,
        **kwargs: Any,
    ) -> None:
        self.base, self.epochs, self.stage, self.runtime = base, epochs, stage, runtime
        # What "best" means for this search: the objective, for the trials' ranking and for
        # each trial's best/ (what --export-best and load_model use) alike.
        self.rule = Monitor(oracle.objective.name)
        self.callbacks, self.verbose = list(callbacks), verbose
        self.report: Any = None  # called after every trial (search() writes trials.csv with it)
        self._started = time.time()
        super().__init__(oracle=oracle, hypermodel=None, **kwargs)

    def trial_run_dir(self, trial_id: str) -> Path:
        return Path(self.get_trial_dir(trial_id)) / "run"

    def trial_config(self, values: dict[str, Any]) -> TrainConfig:
        """The trial's `TrainConfig`: its best epoch is the objective's best."""
        return dataclasses.replace(
            self.base, epochs=self.epochs, monitor=self.rule.name, mode=self.rule.mode, **values
        )

    def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args: Any, **kwargs: Any):
        from zoo.training import RunDirectory, Trainer, TrainingDiverged

        start = time.time()
        run_dir = self.trial_run_dir(trial.trial_id)
        options = RunOptions(run_dir=str(run_dir), verbose=False)
        try:
            config = self.trial_config(trial.hyperparameters.values)
            if RunDirectory.is_run(run_dir) and RunDirectory.open(run_dir).checkpoints():
                # A trial interrupted by a kill: continue it from its last checkpoint.
                trainer = Trainer.resume(
                    run_dir, options=options, runtime=self.runtime, callbacks=self.callbacks
                )
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
                trainer = Trainer(
                    config, options=options, runtime=self.runtime, callbacks=self.callbacks
                )
            trainer.fit()
        except TrainingDiverged as err:
            self._record(trial.trial_id, start, f"diverged: {err}")
            raise keras_tuner.errors.FailedTrialError(f"diverged: {err}") from None
        except Exception as err:
            reason = f"{type(err).__name__}: {err}"
            self._record(trial.trial_id, start, reason)
            raise keras_tuner.errors.FailedTrialError(reason) from None
        # The trial's figures at the engine's best epoch by the objective: what best/ holds.
        epoch = trainer.metrics["best_epoch"]
        best = next(r for r in trainer.rows if int(r["epoch"]) == epoch)
        figures = {k: float(best[k]) for k in MONITORS}
        if not math.isfinite(figures[self.rule.name]):
            reason = f"no epoch has a finite {self.rule.name}"
            self._record(trial.trial_id, start, reason)
            raise keras_tuner.errors.FailedTrialError(reason)
        self._record(trial.trial_id, start, None)
        write_hparams(run_dir, trial.hyperparameters.values, trial.trial_id)
        return figures

    def _record(self, trial_id: str, start: float, reason: str | None) -> None:
        """Seconds, run directory and failure reason, beside KerasTuner's trial.json."""
        path = Path(self.get_trial_dir(trial_id)) / "zoo.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(path.read_text()) if path.is_file() else {}
        record = {
            "seconds": previous.get("seconds", 0.0) + time.time() - start,
            "run_dir": str(self.trial_run_dir(trial_id)),
            "reason": reason,
        }
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")

    def save_model(self, trial_id: str, model: Any, step: int = 0) -> None:
        """The engine checkpoints every trial's run directory itself."""

    def load_model(self, trial: keras_tuner.engine.trial.Trial):
        """The trial's model with its best weights."""
        from zoo.training import load_model

        return load_model(self.trial_run_dir(trial.trial_id), "best")

    def on_trial_begin(self, trial: keras_tuner.engine.trial.Trial) -> None:
        super().on_trial_begin(trial)
        if not self.verbose:
            return
        if role() == "worker":  # the oracle is the chief's: only the trial is known here
            values = ", ".join(f"{k}={_short(v)}" for k, v in trial.hyperparameters.values.items())
            print(f"[{self.stage}] trial id {trial.trial_id}: {values}", flush=True)
            return
        done = [t for t in self.oracle.trials.values() if t.status != "RUNNING"]
        seconds = [trial_seconds(self, t.trial_id) for t in done]
        seconds = [s for s in seconds if s is not None]
        total = self.oracle.max_trials
        left = ""
        if seconds:
            remaining = max(total - len(done), 0) * sum(seconds) / len(seconds)
            left = f"; about {remaining / 60:.1f} min left in this stage"
        values = ", ".join(f"{k}={_short(v)}" for k, v in trial.hyperparameters.values.items())
        print(
            f"[{self.stage}] trial {len(done) + 1} of {total} (id {trial.trial_id}): "
            f"{values}{left}",
            flush=True,
        )

    def on_trial_end(self, trial: keras_tuner.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        if self.report is not None and role() != "worker":
            self.report()
        if self.verbose and role() != "worker":
            record = self.oracle.get_trial(trial.trial_id)
            name = self.oracle.objective.name
            if record.status == "COMPLETED":
                value = record.metrics.get_last_value(name)
                print(f"[{self.stage}] trial {trial.trial_id}: {name} {value:.4f}", flush=True)
            else:
                print(f"[{self.stage}] trial {trial.trial_id}: {record.status}", flush=True)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_seconds(tuner: ZooTuner, trial_id: str) -> float | None:
    path = Path(tuner.get_trial_dir(trial_id)) / "zoo.json"
    return json.loads(path.read_text())["seconds"] if path.is_file() else None


def write_hparams(run_dir: Path, values: dict[str, Any], trial_id: str) -> None:
    """The trial's hyperparameters in its TensorBoard logs, for the HParams dashboard."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp_api

    writer = tf.summary.create_file_writer(str(run_dir / TENSORBOARD))
    with writer.as_default():
        hp_api.hparams(values, trial_id=trial_id)
    writer.close()


def write_hparams_config(folder: Path, space: dict[str, Any], objective: str) -> None:
    """TensorBoard's HParams configuration: the space's hyperparameters and the metrics."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp_api

    hparams = []
    for name, spec in space.items():
        if spec["type"] in ("float", "int"):
            hparams.append(
                hp_api.HParam(name, hp_api.RealInterval(*map(float, (spec["min"], spec["max"]))))
            )
        elif spec["type"] == "choice":
            hparams.append(hp_api.HParam(name, hp_api.Discrete(spec["values"])))
    metrics = [hp_api.Metric(m, display_name=m) for m in (objective, "val_loss") if m]
    writer = tf.summary.create_file_writer(str(folder / "hparams"))
    with writer.as_default():
        hp_api.hparams_config(hparams=hparams, metrics=metrics)
    writer.close()


# The search --------------------------------------------------------------------------------


@dataclasses.dataclass
class SearchArgs:
    """What ``python -m tuning.search`` was asked for (also usable from Python)."""

    base: TrainConfig
    max_trials: int = 10
    epochs_per_trial: int = 2
    fine_trials: int | None = None
    fine_epochs: int | None = None
    stage: str = "both"
    directory: str = "tuning_runs"
    project: str = "search"
    seed: int = 0
    objective: str = "val_accuracy"
    space: dict[str, Any] = dataclasses.field(default_factory=dict)
    algorithm: str = "random"
    top: int = 3
    overwrite: bool = False
    max_failures: int = 3
    export_best: bool = False
    verbose: bool = True


def first_trial_oracle(cls: type, first: dict[str, Any] | None) -> type:
    """``cls`` (a KerasTuner oracle class) whose first trial takes ``first``'s values (the
    recipe) instead of drawing them; later trials, and a resumed stage, draw as ``cls`` does."""

    class FirstTrialOracle(cls):
        def populate_space(self, trial_id: str) -> dict[str, Any]:
            if first is not None and not self.trials:
                return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING, "values": first}
            return super().populate_space(trial_id)

    FirstTrialOracle.__name__ = cls.__name__
    return FirstTrialOracle


def make_oracle(
    args: SearchArgs,
    space: dict[str, Any],
    max_trials: int,
    seed: int,
    first: dict[str, Any] | None = None,
):
    """The stage's oracle; ``first`` (`tuning.space.recipe_trial`) fixes its first trial."""
    hp = keras_tuner.HyperParameters()
    spaces.define(hp, space)
    common = dict(
        objective=keras_tuner.Objective(args.objective, Monitor(args.objective).direction),
        max_trials=max_trials,
        hyperparameters=hp,
        allow_new_entries=False,
        tune_new_entries=False,
        seed=seed,
        max_consecutive_failed_trials=args.max_failures,
    )
    if args.algorithm == "bayesian":
        return first_trial_oracle(keras_tuner.oracles.BayesianOptimizationOracle, first)(**common)
    return first_trial_oracle(keras_tuner.oracles.RandomSearchOracle, first)(**common)


def make_tuner(args: SearchArgs, stage: str, space: dict[str, Any], runtime: Any) -> ZooTuner:
    fine = stage == "fine"
    trials = (args.fine_trials or args.max_trials) if fine else args.max_trials
    epochs = (args.fine_epochs or 2 * args.epochs_per_trial) if fine else args.epochs_per_trial
    first = None if fine else spaces.recipe_trial(space, args.base)
    return ZooTuner(
        make_oracle(args, space, trials, args.seed + (1 if fine else 0), first),
        base=args.base,
        epochs=epochs,
        stage=stage,
        runtime=runtime,
        verbose=args.verbose,
        directory=str(Path(args.directory) / args.project),
        project_name=stage,
        overwrite=args.overwrite,
    )


def completed(tuner: ZooTuner) -> list:
    """The stage's completed trials, best first."""
    trials = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    return tuner.rule.rank(trials, lambda t: t.metrics.get_last_value(tuner.rule.name))


def search(args: SearchArgs) -> dict[str, Any]:
    """Run the stages asked for; return the summary (also printed and written)."""
    from zoo.training import resolve_runtime

    base = args.base
    # XLA left to each trial (a space may search jit_compile); the rest fixed for all trials
    runtime = resolve_runtime(base.strategy, base.precision, base.deterministic)
    space = spaces.merge(spaces.default_space(base.model), args.space)
    root = Path(args.directory) / args.project
    if args.overwrite and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    tuners: dict[str, ZooTuner] = {}
    if role() != "single" and args.stage == "both":
        raise ValueError(
            "distributed tuning runs one stage at a time: start the chief and the workers "
            "with --stage coarse, then all of them again with --stage fine."
        )
    with runtime.active():
        coarse_done = (root / "coarse" / "oracle.json").is_file()
        if args.stage == "fine" and role() != "worker" and not coarse_done:
            raise ValueError(
                f"--stage fine needs a finished coarse stage in {root}; run --stage coarse first."
            )
        resumable = dataclasses.replace(args, overwrite=False)
        tuners["coarse"] = make_tuner(resumable, "coarse", space, runtime)
        tuners["coarse"].report = lambda: write_results(root, tuners)
        write_hparams_config(root, space, args.objective)
        if args.stage in ("coarse", "both"):
            tuners["coarse"].search(verbose=0)
            if role() == "worker":
                return {}
            write_results(root, tuners)
        if args.stage in ("fine", "both"):
            if role() == "worker":  # the chief's oracle holds the fine space; any will do here
                fine = space
            else:
                best = completed(tuners["coarse"])[: args.top]
                if not best:
                    raise ValueError("no coarse trial completed, so there is nothing to refine.")
                fine = spaces.fine_space(space, [t.hyperparameters.values for t in best])
            tuners["fine"] = make_tuner(resumable, "fine", fine, runtime)
            tuners["fine"].report = lambda: write_results(root, tuners)
            tuners["fine"].search(verbose=0)
            if role() == "worker":
                return {}
            write_results(root, tuners)
    return summarise(args, root, space, tuners)


def write_results(root: Path, tuners: dict[str, ZooTuner]) -> list[dict[str, Any]]:
    """``trials.csv`` and ``trials.png`` for every trial of every stage so far."""
    rows = []
    names: list[str] = []
    for stage, tuner in tuners.items():
        for trial_id in sorted(tuner.oracle.trials):
            trial = tuner.oracle.trials[trial_id]
            record_path = Path(tuner.get_trial_dir(trial_id)) / "zoo.json"
            record = json.loads(record_path.read_text()) if record_path.is_file() else {}
            values = trial.hyperparameters.values
            names += [n for n in values if n not in names]
            reason = record.get("reason") or ""
            if not reason and trial.message:
                reason = trial.message.strip().splitlines()[-1]
            rows.append(
                {
                    "stage": stage,
                    "trial": trial_id,
                    **values,
                    **{
                        m: (trial.metrics.get_last_value(m) if trial.metrics.exists(m) else "")
                        for m in MONITORS
                    },
                    "status": trial.status.lower(),
                    "reason": reason,
                    "seconds": round(record.get("seconds", 0.0), 2) if record else "",
                    "run_dir": record.get("run_dir", str(tuner.trial_run_dir(trial_id))),
                }
            )
    fields = ["stage", "trial", *names, *MONITORS, "status", "reason", "seconds", "run_dir"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / "trials.csv", buffer.getvalue())
    objective = next(iter(tuners.values())).oracle.objective.name
    plot_trials(rows, objective, root / "trials.png")
    return rows


def plot_trials(rows: list[dict[str, Any]], objective: str, path: Path) -> None:
    """The objective against the learning rate (log axis), coloured by weight decay; failed
    trials marked along the bottom; one panel per stage."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    stages = [s for s in STAGES if any(r["stage"] == s for r in rows)] or ["coarse"]
    fig = Figure(figsize=(6 * len(stages), 4.5))
    FigureCanvasAgg(fig)  # its own canvas: pyplot and the user's backend are left alone
    axes = fig.subplots(1, len(stages), squeeze=False)
    decays = [r["weight_decay"] for r in rows if isinstance(r.get("weight_decay"), float)]
    norm = LogNorm(min(decays), max(decays)) if decays and min(decays) > 0 else None
    for ax, stage in zip(axes[0], stages, strict=True):
        done = [r for r in rows if r["stage"] == stage and r["status"] == "completed"]
        failed = [r for r in rows if r["stage"] == stage and r["status"] != "completed"]
        lr_done = [r.get("learning_rate") for r in done]
        if done and all(isinstance(v, float) for v in lr_done):
            colour: dict[str, Any] = (
                {"c": [r.get("weight_decay", 1.0) for r in done], "norm": norm, "cmap": "viridis"}
                if norm
                else {"color": "tab:blue"}
            )
            points = ax.scatter(lr_done, [r[objective] for r in done], edgecolors="black", **colour)
            if norm:
                fig.colorbar(points, ax=ax, label="weight decay")
        if failed and all(isinstance(r.get("learning_rate"), float) for r in failed):
            bottom = min([r[objective] for r in done], default=0.0)
            ax.scatter(
                [r["learning_rate"] for r in failed],
                [bottom] * len(failed),
                marker="x",
                color="red",
                label="failed",
            )
            ax.legend()
        ax.set_xscale("log")
        ax.set(xlabel="learning rate", ylabel=objective, title=f"{stage} stage")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    atomic_write_bytes(path, png.getvalue())


def train_command(config: TrainConfig) -> str:
    """The ``python -m zoo.train`` command line that trains ``config``."""
    parts = ["python", "-m", "zoo.train"]
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if value == field.default:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts += [
                flag,
                "none"
                if value is None
                else repr(value)
                if isinstance(value, float)
                else str(value),
            ]
    return shlex.join(parts)


def summarise(
    args: SearchArgs, root: Path, space: dict[str, Any], tuners: dict[str, ZooTuner]
) -> dict[str, Any]:
    """The best trial over the stages run, its reproducing command and the edge warnings."""
    candidates = [(stage, t) for stage, tuner in tuners.items() for t in completed(tuner)[:1]]
    if not candidates:
        raise ValueError(f"no trial completed; see {root / 'trials.csv'} for the reasons.")
    rule = Monitor(args.objective)
    stage, best = rule.rank(candidates, lambda c: c[1].metrics.get_last_value(rule.name))[0]
    tuner = tuners[stage]
    config = tuner.trial_config(best.hyperparameters.values)
    warnings = spaces.edge_warnings(space, best.hyperparameters.values)
    summary = {
        "stage": stage,
        "trial": best.trial_id,
        "objective": args.objective,
        "value": best.metrics.get_last_value(args.objective),
        "hyperparameters": best.hyperparameters.values,
        "command": train_command(config) + " --run-dir runs/tuned",
        "run_dir": str(tuner.trial_run_dir(best.trial_id)),
        "edge_warnings": warnings,
    }
    atomic_write_text(root / "best.json", json.dumps(summary, indent=2) + "\n")
    return summary


# The command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tuning.search",
        description="Random search over a TrainConfig with KerasTuner, coarse then fine, every "
        "trial trained by the engine of python -m zoo.train. Results: trials.csv, trials.png "
        "and best.json in DIRECTORY/PROJECT; re-run the same command to resume.",
        formatter_class=HelpFormatter,
    )
    search = parser.add_argument_group("the search")
    search.add_argument("--max-trials", type=int, default=10, help="trials of the coarse stage")
    search.add_argument("--epochs-per-trial", type=int, default=2, help="epochs of a coarse trial")
    search.add_argument(
        "--fine-trials",
        type=int,
        default=None,
        help="trials of the fine stage (default: --max-trials)",
    )
    search.add_argument(
        "--fine-epochs",
        type=int,
        default=None,
        help="epochs of a fine trial (default: twice --epochs-per-trial)",
    )
    search.add_argument(
        "--stage",
        choices=("coarse", "fine", "both"),
        default="both",
        help="stages to run; fine narrows the ranges around the best coarse trials",
    )
    search.add_argument(
        "--top", type=int, default=3, help="best coarse trials the fine ranges are drawn around"
    )
    search.add_argument("--directory", default="tuning_runs", help="parent of search projects")
    search.add_argument("--project", default="search", help="name of this search (a folder)")
    search.add_argument(
        "--objective",
        choices=MONITORS,
        default="val_accuracy",
        help="metric to optimise (losses are minimised)",
    )
    search.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default="random",
        help="KerasTuner oracle: random search or Bayesian optimisation",
    )
    search.add_argument(
        "--space",
        metavar="FILE",
        default=None,
        help="JSON object merged over the default space: a spec replaces a field's range, "
        "a plain value fixes it, null removes it (see tuning/space.py)",
    )
    search.add_argument(
        "--max-failures", type=int, default=3, help="stop after this many consecutive failed trials"
    )
    search.add_argument(
        "--overwrite", action="store_true", help="start afresh instead of resuming the project"
    )
    search.add_argument(
        "--export-best", action="store_true", help="export the best trial's run with zoo.export"
    )
    search.add_argument("--quiet", action="store_true", help="print only the summary")
    fixed = parser.add_argument_group(
        "fixed for every trial (any TrainConfig field; a field given here is not searched)"
    )
    add_dataclass_flags(fixed, TrainConfig, skip=NOT_PASSED_THROUGH)
    return parser


def parse(argv: Sequence[str] | None) -> SearchArgs:
    parser = build_parser()
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    given = vars(_given_parser().parse_known_args(argv)[0])
    for name in (
        "max_trials",
        "epochs_per_trial",
        "fine_trials",
        "fine_epochs",
        "top",
        "max_failures",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {value}.")
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - NOT_PASSED_THROUGH
    try:
        base = TrainConfig(**{name: getattr(args, name) for name in fields})
        overrides = spaces.load_space(args.space) if args.space else {}
        # A TrainConfig flag given on the command line is fixed, not searched.
        for name in fields & set(given):
            overrides[name] = None
        spaces.merge(spaces.default_space(base.model), overrides)  # fails early on a bad space
    except ValueError as err:
        parser.error(str(err))
    return SearchArgs(
        base=base,
        max_trials=args.max_trials,
        epochs_per_trial=args.epochs_per_trial,
        fine_trials=args.fine_trials,
        fine_epochs=args.fine_epochs,
        stage=args.stage,
        directory=args.directory,
        project=args.project,
        seed=args.seed,
        objective=args.objective,
        space=overrides,
        algorithm=args.algorithm,
        top=args.top,
        overwrite=args.overwrite,
        max_failures=args.max_failures,
        export_best=args.export_best,
        verbose=not args.quiet,
    )


def _given_parser() -> argparse.ArgumentParser:
    """The TrainConfig flags alone, without defaults: parsed, it holds the ones given."""
    parser = argparse.ArgumentParser(add_help=False)
    add_dataclass_flags(parser, TrainConfig, suppress_defaults=True, skip=NOT_PASSED_THROUGH)
    return parser


def _quiet_failed_trials() -> None:
    """KerasTuner prints a traceback for every failed trial while its DEBUG flag is on (the
    default, and not public API); a failed trial's reason goes to trials.csv instead."""
    try:
        from keras_tuner.src import config as kt_config
    except ImportError:  # another layout of KerasTuner: keep its default
        return
    kt_config.DEBUG = False


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _quiet_failed_trials()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # every trial traces its own steps: no retracing warning
    try:
        summary = search(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {one_line(err, 1000)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    root = Path(args.directory) / args.project
    if not summary:  # a worker of a distributed search: the chief reports
        print("worker finished: the chief writes the results.")
        return 0
    print(
        f"best: {summary['stage']} trial {summary['trial']}, {summary['objective']} "
        f"{summary['value']:.4f}: "
        + ", ".join(f"{k}={_short(v)}" for k, v in summary["hyperparameters"].items())
    )
    for warning in summary["edge_warnings"]:
        print(f"warning: {warning}")
    print(f"trials: {root / 'trials.csv'}, {root / 'trials.png'}; run: {summary['run_dir']}")
    if args.export_best:
        from zoo.export import export_finished_run

        if not export_finished_run(summary["run_dir"], "search"):
            return EXIT_BAD_INPUT
    print(f"reproduce: {summary['command']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
