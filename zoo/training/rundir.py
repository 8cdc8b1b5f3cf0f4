"""The run directory: the one owner of where a run's files are and how they are written.

Layout::

    <run>/
      config.json           the TrainConfig (its presence makes the folder a run)
      data.json             classes, input shape, normalisation, augmentation, precision
      learning_rate.json    with --learning-rate auto: the rate the range test picked, and why
      lr_find/              ... and its curve (lr_find.csv, lr_find.png)
      checks.json           the babysitting checks' warnings (none: an empty list)
      channel_stats.json    the training split's statistics (cached)
      history.csv           one row per finished epoch
      metrics.json          the final metrics (best epoch, validation and test figures)
      curves.png            loss and accuracy per epoch
      checkpoints/epoch-N   the last few epochs (model, optimizers, epoch, dropout RNG)
      best/best-N           the epoch that was best by the monitored metric
      tensorboard/          TensorBoard logs
      .lock                 held (flock) by the process that trains the run

Rules:

- A new run directory is claimed atomically and exclusively: default names get a numbered
  suffix when taken, and ``config.json`` is linked into place only if absent, so two runs never
  share a folder and an existing run is never overwritten.
- One process trains a run at a time (an advisory ``flock``, released by the kernel when its
  holder dies, so a killed run's lock never blocks its resume).
- Every JSON and CSV is written to a temporary file and renamed into place.
- A finished epoch writes its history row, then its checkpoint: every checkpoint has its row, and
  rows after the checkpoint that is restored are dropped on resume.
- Checkpoints are tried newest first; one that fails to restore is skipped with a warning naming
  it, and an error is raised only when none is good.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from pipelines.cli import one_line
from pipelines.stats import STATS_FILE
from zoo.config import TrainConfig, read_json_file
from zoo.files import FileLock, atomic_write_text, link_new_text
from zoo.training.model import build_model

logger = logging.getLogger("zoo.train")

CONFIG, DATA, HISTORY, METRICS, CURVES = (
    "config.json",
    "data.json",
    "history.csv",
    "metrics.json",
    "curves.png",
)
LAST, BEST = "checkpoints", "best"
LEARNING_RATE, LR_FIND, CHECKS = "learning_rate.json", "lr_find", "checks.json"
TENSORBOARD, LOCK = "tensorboard", ".lock"
# What each JSON file holds, for the error that names a damaged one.
_HOLDS = {
    CONFIG: "a run's configuration",
    DATA: "the run's classes, input shape and normalisation",
    METRICS: "the run's results",
    LEARNING_RATE: "the learning rate the range test picked",
    CHECKS: "the babysitting checks' warnings",
}
_PREFIX = {LAST: "epoch", BEST: "best"}
_CHECKPOINT = re.compile(r"^(epoch|best)-(\d+)\.index$")


class RunLockedError(RuntimeError):
    """Another process is training this run."""


class NoCheckpointError(FileNotFoundError):
    """A run directory holds no checkpoint that restores."""


def default_name(config: TrainConfig) -> str:
    """``<time>-<model>-<dataset>``, the dataset made one safe path component."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", config.dataset.replace(":", "-")).strip("_-")
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{config.model}-{safe}"


class RunDirectory:
    """A run's folder. Make one with `create` (new run) or `open` (an existing run)."""

    def __init__(self, path: str | os.PathLike[str], *, scratch: str | None = None) -> None:
        self.path = Path(path)
        # A non-chief worker takes part in every checkpoint save but keeps nothing: its copies
        # go to a throw-away folder, removed by `discard_scratch`.
        self.scratch = self.path / f".worker-{scratch}" if scratch else None
        self._lock = FileLock(self.path / LOCK)
        self.created = False  # whether this process made the folder (see `discard`)
        self.preexisting: frozenset[str] = frozenset()  # what a given folder held before

    # Creation -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        config: TrainConfig,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        runs_dir: str | os.PathLike[str] = "runs",
    ) -> RunDirectory:
        """Claim a new run directory for ``config``: ``run_dir``, or a fresh name under
        ``runs_dir``. Raises `FileExistsError` if ``run_dir`` already holds a run."""
        if run_dir is not None:
            run = cls(run_dir)
            run.created = not run.path.exists()
            run.path.mkdir(parents=True, exist_ok=True)
            if not run.created:  # a folder the user made: `discard` leaves what it held
                run.preexisting = frozenset(os.listdir(run.path))
            if not run._claim(config):
                raise FileExistsError(
                    f"{run.path} already holds a run; continue it with --resume {run.path}, "
                    "or choose another --run-dir."
                )
            return run
        parent = Path(runs_dir)
        parent.mkdir(parents=True, exist_ok=True)
        base = default_name(config)
        for suffix in range(1, 10_000):
            path = parent / (base if suffix == 1 else f"{base}-{suffix}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            run = cls(path)
            run.created = True
            if run._claim(config):
                return run
        raise FileExistsError(f"no free run directory name for {base} under {parent}")

    @staticmethod
    def is_run(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds a run (its ``config.json``)."""
        return (Path(path) / CONFIG).is_file()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDirectory:
        """An existing run (one with a ``config.json``)."""
        run = cls(path)
        if not cls.is_run(run.path):
            raise FileNotFoundError(f"{run.path} is not a run directory (no {CONFIG}).")
        return run

    def _claim(self, config: TrainConfig) -> bool:
        """Link a complete ``config.json`` into place unless one exists (atomic on POSIX)."""
        return link_new_text(self.path / CONFIG, config.to_json() + "\n")

    # Lock -----------------------------------------------------------------------------------

    def lock(self) -> None:
        """Take the run's lock, or raise `RunLockedError` naming the process that holds it."""
        if self._lock.held:
            return
        if not self._lock.acquire(
            blocking=False, note=f"pid {os.getpid()} on {os.uname().nodename}"
        ):
            raise RunLockedError(
                f"{self.path} is being trained by {self._lock.holder()}; wait for it to "
                "finish, or stop it."
            )

    def unlock(self) -> None:
        self._lock.release()

    # Files ----------------------------------------------------------------------------------

    def file(self, name: str) -> Path:
        return self.path / name

    def read_config(self) -> TrainConfig:
        return TrainConfig.load(self.path / CONFIG)

    def trained_precision(self) -> str | None:
        """The precision the run trained under (its ``data.json``); None before its setup."""
        if not self.file(DATA).is_file():
            return None
        return self.read_json(DATA).get("precision")

    def write_config(self, config: TrainConfig) -> None:
        """Replace the run's configuration (``--resume --epochs N`` changes ``epochs``)."""
        atomic_write_text(self.path / CONFIG, config.to_json() + "\n")

    def read_json(self, name: str) -> dict[str, Any]:
        """A JSON file of the run; a damaged one is a `ValueError` naming it and what it
        should hold."""
        return read_json_file(self.path / name, _HOLDS.get(name, f"the run's {name}"))

    def write_json(self, name: str, value: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(value, indent=2) + "\n")

    def read_history(self) -> list[dict[str, str]]:
        path = self.path / HISTORY
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return list(csv.DictReader(f))

    def write_history(self, rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path / HISTORY, buffer.getvalue())

    # Checkpoints ----------------------------------------------------------------------------

    def checkpoint_dir(self, kind: str = LAST) -> Path:
        return (self.scratch or self.path) / kind

    def checkpoint_manager(
        self, checkpoint: tf.train.Checkpoint, kind: str, max_to_keep: int
    ) -> tf.train.CheckpointManager:
        return tf.train.CheckpointManager(
            checkpoint,
            str(self.checkpoint_dir(kind)),
            max_to_keep=max_to_keep,
            checkpoint_name=_PREFIX[kind],
        )

    def checkpoints(self, kind: str = LAST) -> list[str]:
        """Checkpoint prefixes of ``kind`` (``checkpoints`` or ``best``), newest first."""
        folder = self.path / kind
        found = []
        if folder.is_dir():
            for entry in folder.iterdir():
                match = _CHECKPOINT.match(entry.name)
                if match and match.group(1) == _PREFIX[kind]:
                    found.append((int(match.group(2)), str(folder / entry.name[: -len(".index")])))
        return [prefix for _, prefix in sorted(found, reverse=True)]

    def restore(
        self, checkpoint: tf.train.Checkpoint, kind: str = LAST, *, partial: bool = False
    ) -> str:
        """Restore the newest checkpoint of ``kind`` that restores; return its prefix.

        A checkpoint that fails (truncated, corrupt, of another model) is skipped with a warning
        naming it. ``partial`` allows the checkpoint to hold more than ``checkpoint`` tracks
        (an optimizer when only the model is wanted). Raises `NoCheckpointError` when none is
        good.
        """
        skipped = []
        for prefix in self.checkpoints(kind):
            try:
                status = checkpoint.restore(prefix)
                if partial:
                    status.expect_partial()
                status.assert_existing_objects_matched()
            except Exception as err:  # a truncated data file raises IndexError, not OpError
                reason = one_line(err, 200, typed=True)
                skipped.append(prefix)
                logger.warning("skipped checkpoint %s: it does not restore (%s)", prefix, reason)
                continue
            if skipped:
                logger.warning(
                    "restored %s instead of the newer %s, which did not restore",
                    prefix,
                    ", ".join(skipped),
                )
            return prefix
        what = f"none of {', '.join(skipped)} restores" if skipped else "there is none"
        raise NoCheckpointError(f"no usable checkpoint in {self.path / kind}: {what}.")

    @staticmethod
    def checkpoint_number(prefix: str) -> int:
        """The epoch a checkpoint prefix names (``.../best/best-7`` -> 7)."""
        match = _CHECKPOINT.match(Path(prefix).name + ".index")
        if match is None:
            raise ValueError(f"{prefix} is not a checkpoint of a run.")
        return int(match.group(2))

    def restore_weights(self, model: keras.Model, kind: str = BEST) -> str:
        """``model``'s weights alone from the newest good checkpoint of ``kind`` (what else
        the checkpoint holds is left); its prefix. Raises `NoCheckpointError` when none is
        good."""
        return self.restore(tf.train.Checkpoint(model=model), kind, partial=True)

    def discard(self, *, unfinished: bool = False) -> None:
        """Remove a run that has nothing worth keeping: the folder if this process made it,
        else the files the run wrote in it. Without ``unfinished`` only a run that never reached
        a checkpoint (its setup failed); with it, also one that finished no epoch (its only
        checkpoint is the initial one, which a new run recreates)."""
        if self.read_history() or (self.checkpoints(LAST) and not unfinished):
            raise RuntimeError(f"{self.path} has finished epochs; it is not discarded.")
        import shutil

        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name in (LAST, BEST, LR_FIND, TENSORBOARD):
            if name not in self.preexisting:
                shutil.rmtree(self.path / name, ignore_errors=True)
        for name in (CONFIG, DATA, LEARNING_RATE, CHECKS, STATS_FILE, LOCK):
            if name not in self.preexisting:
                (self.path / name).unlink(missing_ok=True)

    def discard_scratch(self) -> None:
        if self.scratch is not None:
            import shutil

            shutil.rmtree(self.scratch, ignore_errors=True)

    # Models ---------------------------------------------------------------------------------

    def build_model(self, precision: str = "float32") -> keras.Model:
        """The run's model, freshly initialised, built under ``precision`` (for a checkpoint)."""
        data = self.read_json(DATA)
        return build_model(
            self.read_config(),
            input_shape=data["input_shape"],
            classes=len(data["class_names"]),
            precision=precision,
            load_weights=False,
        )

    def load_model(self, which: str = "best", precision: str = "float32") -> tuple[Any, str]:
        """The run's model with the weights of its best or last checkpoint, and that
        checkpoint's prefix. ``best`` falls back to the last checkpoint, with a warning, when the
        run has no usable best checkpoint."""
        if which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', got {which!r}.")
        model = self.build_model(precision)
        if which == "best":
            try:
                return model, self.restore_weights(model, BEST)
            except NoCheckpointError as err:
                logger.warning("%s; using the last checkpoint instead", err)
        return model, self.restore_weights(model, LAST)


class RunCheckpoints:
    """A training run's checkpoints: what they hold, when they are saved, and their restore.

    Each holds the model, the optimizer (with its slots and step), the count of finished epochs
    and the dropout RNG's state: all a resume needs to continue bit for bit. ``checkpoints/``
    keeps the last ``keep`` epochs (``epoch-0`` is the untrained start); ``best/`` the one epoch
    that was best (`zoo.monitor`). The epoch's history row is written before its checkpoint."""

    def __init__(
        self,
        run: RunDirectory,
        *,
        model: keras.Model,
        optimizer: Any,
        epoch: tf.Variable,
        rng: Sequence[tf.Variable],
        keep: int,
    ) -> None:
        self.run, self.model, self.epoch = run, model, epoch
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizers=[optimizer], epoch=epoch, rng=list(rng)
        )
        self._last = run.checkpoint_manager(self.checkpoint, LAST, keep)
        self._best = run.checkpoint_manager(self.checkpoint, BEST, 1)

    @property
    def latest(self) -> str | None:
        """The newest epoch checkpoint this process saved or found, or None."""
        return self._last.latest_checkpoint

    @property
    def done(self) -> int:
        """Epochs finished, as the restored (or saved) counter says."""
        return int(self.epoch.numpy())

    def save_start(self) -> None:
        """``epoch-0``: a good checkpoint before the first step."""
        self._last.save(checkpoint_number=0)

    def save_epoch(self, done: int) -> None:
        """After epoch ``done`` (1-based) and its history row."""
        self.epoch.assign(done)
        self._last.save(checkpoint_number=done)

    def save_best(self, done: int) -> None:
        self._best.save(checkpoint_number=done)

    def best_saved(self) -> int | None:
        """The epoch ``best/`` holds, or None."""
        saved = self.run.checkpoints(BEST)
        return RunDirectory.checkpoint_number(saved[0]) if saved else None

    def restore_last(self) -> str:
        """Everything from the newest good epoch checkpoint; its prefix."""
        return self.run.restore(self.checkpoint, LAST)

    def restore_best_weights(self) -> str | None:
        """The model's weights from ``best/`` (the optimizer is left as it is); its prefix, or
        None when there is no best checkpoint."""
        if not self.run.checkpoints(BEST):
            return None
        return self.run.restore_weights(self.model, BEST)


def load_model(
    run: str | os.PathLike[str], which: str = "best", *, precision: str = "float32"
) -> keras.Model:
    """The model of a run directory with its ``best`` or ``last`` weights (float32 unless
    ``precision`` says otherwise); used by ``--init-from``, ``zoo.export`` and predictions."""
    model, _ = RunDirectory.open(run).load_model(which, precision)
    return model
