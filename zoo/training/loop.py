"""The loop: `Trainer.fit` runs epochs of N-step calls and evaluations between callbacks.

Everything else is a part with one job: `TrainData` (datasets), `build_optimisation`
(optimizers and schedule), `Steps` (the compiled functions), `RunDirectory` (files and
checkpoints) and the callbacks (output, checks, saving).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo.config import AUTO, RunOptions, TrainConfig
from zoo.training import callbacks as cb
from zoo.training import lr_range, rundir
from zoo.training.data import TrainData
from zoo.training.model import build_model
from zoo.training.optim import Optimisation, WarmupSchedule, build_optimisation
from zoo.training.rundir import RunCheckpoints, RunDirectory
from zoo.training.runtime import Runtime, dtype_policy, resolve_runtime_for
from zoo.training.step import Steps
from zoo.training.transfer import start_from

# Steps of the range test behind ``learning_rate="auto"`` (1e-7 to 10; it stops early once
# the loss diverges, usually past 1).
AUTO_LR_STEPS = 100


class FitHistory(keras.callbacks.History):
    """Keras's `History` (``history[name]`` per epoch run by this call) plus ``metrics``: the
    final figures, also in ``metrics.json``."""

    metrics: dict[str, Any]


class Trainer:
    """Train one `TrainConfig`; ``Trainer(config).fit()`` returns a `FitHistory`.

    Args:
        config: The experiment.
        options: How this invocation runs it (run directory, reporting, steps per call).
        runtime: Strategy, precision, determinism and XLA, resolved by the caller once per
            process (`resolve_runtime`; XLA may be left to ``config``); by default resolved from
            ``config`` (`resolve_runtime_for`).
        callbacks: Keras callbacks, called after the engine's own with the same logs as Keras's
            ``fit``; ``model.stop_training = True`` ends training after the epoch.

    After `fit`, ``model`` holds the best weights (by ``config.monitor``).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        options: RunOptions | None = None,
        runtime: Runtime | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        _resume: RunDirectory | None = None,
    ) -> None:
        # Unset fields take the model's recipe; an unknown name fails here, naming close ones.
        self.config = config.resolve()
        self.options = options or RunOptions()
        self.runtime = runtime or resolve_runtime_for(
            config, trained_precision=_resume.trained_precision() if _resume else None
        )
        self.runtime.check(config)
        starts = self.config.init_from or self.config.weights
        if self.config.freeze_backbone and not starts and _resume is None:
            cb.logger.warning(
                "warning: --freeze-backbone without --init-from or --weights trains only the "
                "classifier on a randomly initialised backbone; give --weights imagenet (or "
                "torchvision), or --init-from RUN_DIR_OR_.keras"
            )
        self.user_callbacks = list(callbacks)
        self.run: RunDirectory | None = _resume
        self.resuming = _resume is not None
        self.history = FitHistory()
        self.metrics: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []
        self.epoch = 0
        self.start_epoch = 0
        self._set_up = False
        self._fitted = False

    @classmethod
    def resume(
        cls,
        run_dir: str | os.PathLike[str],
        *,
        epochs: int | None = None,
        options: RunOptions | None = None,
        runtime: Runtime | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> Trainer:
        """A trainer that continues the run in ``run_dir`` from its newest good checkpoint,
        with its saved configuration (optionally for a different number of ``epochs``)."""
        run = RunDirectory.open(run_dir)
        config = run.read_config()
        if epochs is not None:
            config = dataclasses.replace(config, epochs=epochs)
        options = dataclasses.replace(options or RunOptions(), run_dir=str(run.path))
        return cls(config, options=options, runtime=runtime, callbacks=callbacks, _resume=run)

    @property
    def chief(self) -> bool:
        return self.runtime.chief

    @property
    def verbose(self) -> bool:
        return self.options.verbose

    @property
    def strategy(self) -> tf.distribute.Strategy:
        return self.runtime.strategy

    @property
    def train_function(self):
        """The compiled N-step training function (see `Steps`)."""
        return self.steps.train_function

    @property
    def eval_function(self):
        return self.steps.eval_function

    def say(self, message: str) -> None:
        if self.verbose and self.chief:
            print(message, flush=True)

    # Setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the data, claim the run directory, build model, optimizers and steps in the
        strategy's scope and restore a checkpoint (resume or ``init_from``). Runs once."""
        if self._set_up:
            return
        cfg, strategy, precision = self.config, self.strategy, self.runtime.precision
        self.data = TrainData(cfg, strategy)  # bad data fails before the run directory exists
        if cfg.image_size is None and self.data.starting_side:
            # The size comes from the starting weights: recorded, so a resume needs no source.
            cfg = self.config = dataclasses.replace(cfg, image_size=self.data.image_size[0])
        if self.data.resized_from:
            side = self.data.image_size[0]
            self.say(
                f"image size {side}: the size the starting weights were trained at; the "
                f"{self.data.resized_from}x{self.data.resized_from} images are resized up "
                f"(--image-size {self.data.resized_from} keeps them: faster, less accurate)"
            )
        self._open_run()
        if self.resuming and self.run.file(rundir.DATA).is_file():
            self.check_same_classes(self.run.read_json(rundir.DATA).get("class_names", []))
        self.data.load_stats(self.run.path if self.chief else None)
        if self.chief:
            self.run.write_json(rundir.DATA, {**self.data.describe(), "precision": precision})
        self.learning_rate = self._pick_learning_rate()
        self.model = build_model(
            cfg,
            input_shape=(*self.data.image_size, 3),
            classes=self.data.classes,
            precision=precision,
            strategy=strategy,
        )
        classifier = self.classifier = zoo.model_info(cfg.model).classifier
        with strategy.scope(), dtype_policy(precision):
            self.optimisation: Optimisation = build_optimisation(
                dataclasses.replace(cfg, learning_rate=self.learning_rate),
                self.model,
                classifier,
                self.data.steps_per_epoch,
                precision,
            )
            self.epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self._describe_to_keras()
        self.rng_variables = [
            v for layer in self.model.layers for v in layer.variables if "seed_generator" in v.path
        ]
        self.checkpoints = RunCheckpoints(
            self.run,
            model=self.model,
            optimizer=self.optimisation.optimizer,
            epoch=self.epoch_var,
            rng=self.rng_variables,
            keep=self.options.keep_checkpoints,
        )
        if self.resuming and self._restore():
            pass
        elif cfg.init_from:  # a new run, or one resumed before its first whole checkpoint
            names = self.data.source.class_names
            copied, fresh = start_from(cfg, self.model, classifier, names)
            self.say(f"initialised {copied} layers from {cfg.init_from}; fresh: {fresh or '-'}")
        self.start_epoch = self.epoch = int(self.epoch_var.numpy())
        # The stage of the next epoch; the restored state is that of the last finished one (a
        # run stopped at fine-tuning's stage boundary starts stage 2 afresh here).
        restored = cfg.stage_of(max(self.start_epoch - 1, 0))
        upcoming = cfg.stage_of(min(self.start_epoch, cfg.total_epochs - 1))
        self.stage = 0
        self.enter_stage(upcoming, restart=upcoming != restored)
        self.train_ds = self.data.train_dataset(self.start_epoch)
        self.eval_ds = {"validation": self.data.eval_dataset("validation")}
        self._set_up = True

    # Stages -----------------------------------------------------------------------------------

    @property
    def stage_name(self) -> str:
        """What the current stage trains: ``head`` (the classifier alone) or ``all``."""
        return "head" if self.stage == 1 else "all"

    def stage_schedule(self, stage: int) -> keras.optimizers.schedules.LearningRateSchedule:
        """The schedule a stage starts afresh: fine-tuning's stage 1 runs the config's warm-up
        and decay over ``freeze_epochs``, stage 2 over ``epochs``."""
        cfg = dataclasses.replace(self.config, learning_rate=self.learning_rate)
        if cfg.fine_tune and stage == 1:
            cfg = dataclasses.replace(
                cfg,
                epochs=cfg.freeze_epochs,
                warmup_epochs=min(cfg.warmup_epochs, cfg.freeze_epochs),
            )
        return WarmupSchedule.from_train_config(cfg, self.data.steps_per_epoch)

    def enter_stage(self, stage: int, *, restart: bool) -> None:
        """Train as ``stage`` from now on: with ``fine_tune``, stage 1 freezes every layer but
        the classifier (batch norm then runs in inference mode) and stage 2 unfreezes them;
        ``restart`` gives the stage a fresh optimizer state and its own schedule (a resumed
        stage keeps what it restored). The step functions are traced again."""
        cfg = self.config
        if cfg.fine_tune:
            for layer in self.model.layers:
                layer.trainable = stage == 2 or layer.name == self.classifier
            with self.strategy.scope():
                self.optimisation.train(self.model.trainable_variables)
                if restart:
                    self.optimisation.restart(self.stage_schedule(stage))
                else:
                    self.optimisation.use_schedule(self.stage_schedule(stage))
        if self.stage and stage != self.stage:
            trained = sum(int(np.prod(v.shape)) for v in self.optimisation.variables)
            self.say(
                f"stage {stage}: every layer trains from now on ({trained:,} parameters), the "
                f"backbone at {cfg.backbone_multiplier:g} x the learning rate; fresh optimizer "
                f"and schedule over {cfg.epochs} epoch(s)"
            )
        self.stage = stage
        self.steps = Steps(
            self.model,
            self.optimisation,
            cfg,
            self.strategy,
            self.data.classes,
            jit_compile=self.runtime.xla(cfg),
        )

    def check_same_classes(self, saved: Sequence[str]) -> None:
        """Refuse to resume on data whose classes differ from those the run started with (the
        classifier's outputs would mean other things), saying which changed."""
        now = [str(name) for name in self.data.source.class_names]
        saved = [str(name) for name in saved]
        if now == saved:
            return
        added = [n for n in now if n not in saved]
        removed = [n for n in saved if n not in now]
        change = "; ".join(
            part
            for part in (
                f"new: {', '.join(added)}" if added else "",
                f"gone: {', '.join(removed)}" if removed else "",
                "the same names in another order" if not added and not removed else "",
            )
            if part
        )
        raise ValueError(
            f"{self.config.dataset}'s classes changed since {self.run.path} started ({change}); "
            "restore the data it was trained on, or start a new run (--init-from "
            f"{self.run.path} keeps its weights)."
        )

    def _pick_learning_rate(self) -> float:
        """The peak learning rate: the config's, or with ``auto`` the range test's suggestion
        (run once per run: a resumed run reads what it picked from ``learning_rate.json``). A
        flat range test (nothing learned: its minimum is noise) gives the recipe's rate (when
        the optimizer is the recipe's) and a warning instead."""
        cfg = self.config
        if cfg.learning_rate != AUTO:
            return float(cfg.learning_rate)
        record = self.run.file(rundir.LEARNING_RATE)
        if record.exists():
            return float(self.run.read_json(rundir.LEARNING_RATE)["learning_rate"])
        self.say(f"learning rate auto: a range test of up to {AUTO_LR_STEPS} steps picks it")
        result = lr_range.lr_find(
            cfg,
            steps=AUTO_LR_STEPS,
            out=self.run.file(rundir.LR_FIND) if self.chief else None,
            runtime=self.runtime,
        )
        picked = {
            "learning_rate": result.suggestion,
            "rule": lr_range.SUGGESTION_RULE,
            "min_loss_lr": result.min_loss_lr,
            "steepest": result.steepest,
            "flat": result.flat,
            "steps": result.steps,
            "stopped": result.stopped,
            "seconds": round(result.seconds, 2),
            "curve": f"{rundir.LR_FIND}/{lr_range.PLOT_NAME}",
        }
        curve = self.run.path / rundir.LR_FIND
        if result.flat:  # nothing was learned in the test: its minimum is noise
            recipe = zoo.model_info(cfg.model).recipe
            if cfg.optimizer == recipe.optimizer:  # the recipe's rate is for its optimizer
                picked |= {
                    "learning_rate": recipe.learning_rate,
                    "rule": f"{cfg.model}'s recipe: the range test's loss was flat",
                    "suggestion": result.suggestion,
                }
                instead = f"training at {cfg.model}'s recipe rate {recipe.learning_rate:.3g}"
            else:
                instead = (
                    f"training at its guess {result.suggestion:.3g} (where the flat loss starts "
                    f"to rise, / 10; the recipe's rate is for {recipe.optimizer}, not "
                    f"{cfg.optimizer})"
                )
            cb.logger.warning(
                "warning: learning rate auto: the range test's loss never fell %.0f%% below its "
                "start in %d steps (curve in %s), so it tells nothing; %s. A longer test "
                "(python -m tuning.lr_find --steps 300) or --learning-rate gives your own.",
                100 * lr_range.FLAT_DROP, result.steps, curve, instead,
            )  # fmt: skip
        else:
            self.say(
                f"learning rate auto: {result.suggestion:.3g} (smoothed loss lowest at "
                f"{result.min_loss_lr:.3g}, / 10; steepest at {result.steepest:.3g}; "
                f"{result.steps} steps, {result.seconds:.0f} s; curve in {curve}); recorded in "
                f"{rundir.LEARNING_RATE}"
            )
        if self.chief:
            self.run.write_json(rundir.LEARNING_RATE, picked)
        return float(picked["learning_rate"])

    def _describe_to_keras(self) -> None:
        """Compile the model (never trained by Keras's ``fit``) so that Keras's callbacks find
        what they read: ``model.optimizer`` (TensorBoard, ReduceLROnPlateau) and metrics named
        ``accuracy`` and ``top5`` with their direction (``mode="auto"`` of EarlyStopping and
        ModelCheckpoint)."""
        self.model.compile(
            optimizer=self.optimisation.optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[
                keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
            ],
        )
        labels = np.zeros((1,), "int64")
        self.model.compute_metrics(None, labels, np.zeros((1, self.data.classes), "float32"))
        self.model.reset_metrics()

    def _open_run(self) -> None:
        if self.run is not None and not self.chief:  # resuming on another worker
            self.run = RunDirectory(self.run.path, scratch=self.runtime.worker_name)
            self.run.checkpoint_dir().parent.mkdir(parents=True, exist_ok=True)
        elif self.run is not None:  # resuming
            pass
        elif self.chief:
            self.run = RunDirectory.create(
                self.config, run_dir=self.options.run_dir, runs_dir=self.options.runs_dir
            )
        elif self.options.run_dir is None:
            raise ValueError("a multi-worker run needs --run-dir, the same on every worker.")
        else:
            self.run = RunDirectory(self.options.run_dir, scratch=self.runtime.worker_name)
            self.run.checkpoint_dir().parent.mkdir(parents=True, exist_ok=True)
        if self.chief:
            self.run.lock()

    def _restore(self) -> bool:
        """Restore the newest good checkpoint; False when the run has none and no finished
        epoch (killed before its first whole checkpoint): it then starts from the beginning."""
        fresh = None
        if not self.run.read_history():  # a failed restore may have assigned some variables
            tracked = [*self.model.variables, self.epoch_var]
            tracked += self.optimisation.optimizer.variables
            fresh = [(v, v.numpy()) for v in tracked]
        try:
            prefix = self.checkpoints.restore_last()
        except rundir.NoCheckpointError:
            if fresh is None:
                raise
            # The run is its configuration alone, and starting it again from its seed (and
            # --init-from) is what it would have done.
            for variable, value in fresh:
                variable.assign(value)
            self._save_new_epochs()
            self.say(f"{self.run.path} has no finished epoch: starting it from the beginning")
            return False
        done = self.checkpoints.done
        if self.config.total_epochs < done:
            least = done - (self.config.total_epochs - self.config.epochs)
            raise ValueError(
                f"--epochs {self.config.epochs} is below the {done} epochs {self.run.path} has "
                f"done{' (stage 1 included)' if self.config.fine_tune else ''}; pass --epochs "
                f"{least} or more."
            )
        history = self.run.read_history()
        self.rows = [r for r in history if int(r["epoch"]) <= done]
        if self.chief and len(self.rows) != len(history):  # epochs after the checkpoint
            self.run.write_history(self.rows, cb.HISTORY_FIELDS)
        self._save_new_epochs()
        self.say(f"resumed {self.run.path} after epoch {done} ({prefix})")
        return True

    def _save_new_epochs(self) -> None:
        if self.chief and self.run.read_config() != self.config:  # a new --epochs
            self.run.write_config(self.config)

    def _callbacks(self) -> keras.callbacks.CallbackList:
        ratios, gradients = cb.UpdateRatios(), cb.GradientNorms()
        self.best = cb.BestCheckpoint(self.config.best_rule)
        self.babysitter = cb.Babysitter(ratios, gradients, strict=self.options.strict_checks)
        engine: list[cb.EngineCallback] = [
            cb.NaNGuard(),
            ratios,
            gradients,
            cb.HistoryWriter(),
            cb.EpochCheckpoint(),
            self.best,
            self.babysitter,  # after the checkpoints: a strict failure keeps the epoch
            cb.TensorBoardLogger(ratios, gradients),
            cb.ConsoleLogger(ratios, self.options.log_every),
        ]
        if self.config.early_stopping:
            engine.append(cb.PatienceStop(self.config.best_rule, self.config.early_stopping))
        for callback in engine:
            callback.trainer = self
        self.update_ratios = ratios
        return keras.callbacks.CallbackList(
            [*engine, self.history, *self.user_callbacks],
            model=self.model,
            epochs=self.config.total_epochs,
            steps=self.data.steps_per_epoch,
            verbose=1 if self.verbose and self.chief else 0,
        )

    # The loop -------------------------------------------------------------------------------

    def fit(self) -> FitHistory:
        """Train to ``config.epochs`` (from the newest good checkpoint when resuming) or until a
        callback stops it; write ``metrics.json`` and return the history.

        Raises:
            TrainingDiverged: the loss became NaN or infinite.
            TrainingCheckFailed: with ``options.strict_checks``, a babysitting check failed;
                training stopped after that epoch (its checkpoint and metrics are written).
        """
        if self._fitted:
            raise RuntimeError(
                "this Trainer has already run; continue the run with "
                f"Trainer.resume({str(self.run.path)!r}, epochs=N)."
            )
        self._fitted = True
        started = False  # whether the first epoch began
        try:
            with self.runtime.active():
                self.setup()
                self.say(self.describe())
                callbacks = self._callbacks()
                if self.start_epoch == 0:
                    self.checkpoints.save_start()  # a good checkpoint from the start
                self.model.stop_training = False
                callbacks.on_train_begin()
                started = True
                iterator = iter(self.train_ds)
                logs: dict[str, Any] = {}
                for epoch in range(self.start_epoch, self.config.total_epochs):
                    self.epoch = epoch
                    if self.config.stage_of(epoch) != self.stage:  # fine-tuning's stage 2
                        self.enter_stage(self.config.stage_of(epoch), restart=True)
                    callbacks.on_epoch_begin(epoch)
                    logs = self.train_epoch(iterator, callbacks)
                    self.recalibrate()
                    callbacks.on_test_begin()
                    validation = self.evaluate("validation")
                    callbacks.on_test_end(validation)
                    logs.update({"val_" + k: v for k, v in validation.items()})
                    callbacks.on_epoch_end(epoch, logs)
                    if self.model.stop_training:
                        break
                callbacks.on_train_end(logs)
                self.metrics = self.history.metrics = self.finish()
                if self.babysitter.failure is not None:  # --strict-checks: after the bookkeeping
                    raise self.babysitter.failure
        except BaseException:
            if self.run is not None and self.chief and not self.resuming and not started:
                # Failed before its first epoch began (setup, the initial checkpoint, a
                # callback's on_train_begin): nothing was trained, leave no half-made run. A run
                # that fails later keeps its checkpoints, to inspect or --resume.
                self.run.unlock()
                try:
                    self.run.discard(unfinished=True)
                except Exception as err:  # never hide the failure that brought us here
                    cb.logger.warning("warning: could not remove %s: %s", self.run.path, err)
                self.run = None
            raise
        finally:
            if self.run is not None:
                self.run.unlock()
                self.run.discard_scratch()
        return self.history

    def train_epoch(self, iterator, callbacks: keras.callbacks.CallbackList) -> dict[str, Any]:
        """One epoch in calls of ``steps_per_execution`` steps; the epoch's mean metrics."""
        total, per_call = self.data.steps_per_epoch, self.options.steps_per_execution
        sums = np.zeros(4)
        done, start = 0, time.perf_counter()
        while done < total:
            n = min(per_call, total - done)
            callbacks.on_train_batch_begin(done)
            values = np.array(self.steps.train(iterator, n))
            sums += values
            done += n
            logs = _means(sums)
            logs.update(
                learning_rate=self.optimisation.learning_rate(),
                batch_loss=values[0] / max(values[3], 1.0),
                steps=n,
            )
            callbacks.on_train_batch_end(done - 1, logs)
        seconds = time.perf_counter() - start
        return {
            **_means(sums),
            "learning_rate": self.optimisation.learning_rate(),
            "images_per_second": total * self.config.batch_size / seconds,
            "seconds": seconds,
        }

    def evaluate(self, split: str = "validation", prefix: str = "") -> dict[str, float]:
        """Loss, top-1 and top-5 accuracy over every example of ``split``."""
        if split not in self.eval_ds:
            self.eval_ds[split] = self.data.eval_dataset(split)
        values = self.steps.evaluate(iter(self.eval_ds[split]), self.data.eval_steps(split))
        return {prefix + k: v for k, v in _means(np.array(values)).items()}

    @contextlib.contextmanager
    def rng_kept(self) -> Iterator[None]:
        """The dropout RNG as it was before the block (a check's extra forward pass must not
        change what training draws next, or a resumed run would differ)."""
        rng = [v.numpy() for v in self.rng_variables]
        try:
            yield
        finally:
            for variable, value in zip(self.rng_variables, rng, strict=True):
                variable.assign(value)

    def recalibrate(self) -> None:
        """Batch-norm statistics as the mean over ``config.bn_recalibration`` un-augmented
        training batches of this epoch (the dropout RNG is left as it was)."""
        batches = min(self.config.bn_recalibration, self.data.steps_per_epoch)
        if not batches or not self.steps.batch_norms:
            return
        dataset = self.data.calibration_dataset(self.epoch)
        with self.rng_kept():
            self.steps.calibrate(iter(dataset), batches)

    def finish(self) -> dict[str, Any]:
        """Load the best weights, evaluate the test split if there is one, write metrics."""
        best_path = self.checkpoints.restore_best_weights()
        rows = self.rows
        best = self.best.best_epoch
        best_row = next((r for r in rows if int(r["epoch"]) == best), rows[-1])
        metrics: dict[str, Any] = {
            "model": self.config.model,
            "dataset": self.config.dataset,
            "epochs": int(rows[-1]["epoch"]),
            "monitor": self.config.monitor,
            "learning_rate": self.learning_rate,
            "best_epoch": int(best_row["epoch"]),
            "val_loss": float(best_row["val_loss"]),
            "val_accuracy": float(best_row["val_accuracy"]),
            "val_top5": float(best_row["val_top5"]),
            "train_seconds": sum(float(r["seconds"]) for r in rows),
            "images_per_second": float(np.median([float(r["images_per_second"]) for r in rows])),
            "best_checkpoint": best_path,
            "check_warnings": [w["check"] for w in self.babysitter.warnings],
            "run_dir": str(self.run.path),
        }
        if "test" in self.data.source.splits:
            test = self.evaluate("test")
            metrics.update(
                test_loss=test["loss"], test_accuracy=test["accuracy"], test_top5=test["top5"]
            )
        if self.chief:
            self.run.write_json(rundir.METRICS, metrics)
        return metrics

    def describe(self) -> str:
        cfg, data = self.config, self.data
        params = sum(int(np.prod(v.shape)) for v in self.model.trainable_variables)
        return (
            f"{cfg.model} ({params:,} trainable parameters) on {cfg.dataset}: "
            f"{data.source.num_examples['train']:,} training images of "
            f"{data.image_size[0]}x{data.image_size[1]}, {data.classes} classes; "
            f"{self.runtime.replicas} replica(s), {self.runtime.precision}"
            f"{f' ({self.runtime.precision_reason})' if self.runtime.precision_reason else ''}"
            f"{', XLA' if self.steps.jit_compile else ''}, "
            f"augment={data.augment!r}; epochs {self.start_epoch + 1}-{cfg.total_epochs} of "
            f"{data.steps_per_epoch} steps, {self.options.steps_per_execution} per call; "
            f"{self.stages_line()}{self.recipe_line()}; run directory {self.run.path}"
        )

    def stages_line(self) -> str:
        """With ``fine_tune``: what each stage trains, e.g. ``fine-tuning: stage 1 (epoch 1)
        the classifier alone, stage 2 (epochs 2-4) every layer, backbone at 0.1 x lr; ``."""
        cfg = self.config
        if not cfg.fine_tune:
            return ""

        def span(first: int, last: int) -> str:
            return f"epoch {first}" if first == last else f"epochs {first}-{last}"

        one = (
            f"stage 1 ({span(1, cfg.freeze_epochs)}) the classifier alone, "
            if cfg.freeze_epochs
            else ""
        )
        return (
            f"fine-tuning: {one}stage 2 ({span(cfg.freeze_epochs + 1, cfg.total_epochs)}) "
            f"every layer, backbone at {cfg.backbone_multiplier:g} x lr; now in stage "
            f"{self.stage}; "
        )

    def recipe_line(self) -> str:
        """The optimisation as run and which of its values differ from the model's recipe, e.g.
        ``sgd lr 0.1, ..., batch 64; from resnet20's recipe except batch_size``."""
        cfg = self.config
        recipe = zoo.model_info(cfg.model).recipe.values()
        lr = f"{self.learning_rate:.3g}" + (" (auto)" if cfg.learning_rate == AUTO else "")
        given = [name for name, value in recipe.items() if getattr(cfg, name) != value]
        return (
            f"{cfg.optimizer} lr {lr}, weight decay {cfg.weight_decay:g} "
            f"({cfg.weight_decay_mode}), {cfg.schedule} after {cfg.warmup_epochs:g} warm-up "
            f"epoch(s), batch {cfg.batch_size}"
            + (f", label smoothing {cfg.label_smoothing:g}" if cfg.label_smoothing else "")
            + f"; from {cfg.model}'s recipe"
            + (f" except {', '.join(given)}" if given else "")
        )


def _means(sums) -> dict[str, float]:
    loss, top1, top5, count = (float(v) for v in sums)
    n = max(count, 1.0)
    return {"loss": loss / n, "accuracy": top1 / n, "top5": top5 / n}


def fit(
    config: TrainConfig,
    *,
    options: RunOptions | None = None,
    runtime: Runtime | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> FitHistory:
    """Train ``config`` and return its `FitHistory` (``.history``, ``.metrics``); see `Trainer`."""
    return Trainer(config, options=options, runtime=runtime, callbacks=callbacks).fit()
