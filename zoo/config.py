"""`TrainConfig`: the one description of a training run, read by the CLI, the tuner and export.

Every field carries its help text; ``python -m zoo.train`` builds one flag per field from it, and
each run directory holds the config as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "exponential")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
WEIGHT_DECAY_MODES = ("l2", "decoupled")
MONITORS = ("val_accuracy", "val_loss", "val_top5", "accuracy", "loss", "top5")
MODES = ("auto", "max", "min")
# Fields that older config.json files held and that are now options of an invocation
# (`RunOptions`); they are ignored when such a file is read.
MOVED_TO_OPTIONS = frozenset({"runs_dir", "run_dir", "keep_checkpoints", "log_every", "export"})


def _opt(default: Any, help: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass(frozen=True)
class TrainConfig:
    """A training run. Defaults train ``resnet20`` on the embedded digits in a few CPU minutes."""

    # What to train on what.
    model: str = _opt("resnet20", "model name from the registry (python -m zoo.summary lists them)")
    dataset: str = _opt(
        "digits", "'digits' (embedded, offline), 'tfds:NAME[:CONFIG]' or 'folder:PATH'"
    )
    data_dir: str | None = _opt(None, "TFDS data directory (tfds datasets only)")
    download: bool = _opt(False, "let TFDS download a missing dataset (needs network)")
    image_size: int | None = _opt(
        None,
        "square input side; default: the dataset's image size, "
        "or the model's own for datasets of mixed sizes",
    )
    width: float = _opt(1.0, "channel width multiplier of the model")
    dropout: float | None = _opt(
        None,
        "dropout rate of the model's classifier (AlexNet, VGG, "
        "GoogLeNet); default: the model's own",
    )
    augment: str = _opt(
        "auto",
        "augmentation preset and switches (none, cifar, imagenet, strong; "
        "e.g. 'cifar,flip=False'); auto: cifar without flips for digits, cifar "
        "for small images, imagenet otherwise",
    )
    # Optimisation.
    epochs: int = _opt(15, "epochs to train")
    batch_size: int = _opt(128, "global batch size (split across replicas)")
    optimizer: str = _opt("sgd", "optimizer", choices=OPTIMIZERS)
    learning_rate: float = _opt(0.1, "peak learning rate (after warm-up)")
    momentum: float = _opt(0.9, "momentum (sgd, rmsprop)")
    nesterov: bool = _opt(True, "Nesterov momentum (sgd)")
    weight_decay: float = _opt(
        5e-4, "weight decay on convolution and dense kernels (not on biases or batch norm)"
    )
    weight_decay_mode: str = _opt(
        "l2",
        "'l2': add decay/2 * |w|^2 to the loss; 'decoupled': "
        "shrink weights in the optimizer (AdamW-style)",
        choices=WEIGHT_DECAY_MODES,
    )
    schedule: str = _opt("cosine", "learning-rate schedule after warm-up", choices=SCHEDULES)
    warmup_epochs: float = _opt(1.0, "linear warm-up from 0, in epochs")
    decay_epochs: float = _opt(
        30.0, "'step': epochs between decays; 'exponential': epochs per decay_rate factor"
    )
    decay_rate: float = _opt(
        0.1, "factor of each 'step' decay / per decay_epochs for 'exponential'"
    )
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy")
    clip_norm: float | None = _opt(None, "clip the global gradient norm to this value")
    # System.
    precision: str = _opt(
        "auto",
        "float32, mixed_float16 (with loss scaling), mixed_bfloat16; "
        "auto: mixed_float16 on a GPU, float32 otherwise",
        choices=PRECISIONS,
    )
    strategy: str = _opt(
        "auto",
        "tf.distribute strategy; auto: mirrored with more than one GPU, "
        "default otherwise; multiworker reads TF_CONFIG",
        choices=STRATEGIES,
    )
    jit_compile: bool = _opt(False, "compile the train and eval steps with XLA")
    seed: int = _opt(0, "seed of initialisation, data order and augmentation")
    deterministic: bool = _opt(
        False,
        "deterministic ops too (slower): a resumed run then equals an "
        "uninterrupted one bit for bit",
    )
    # Sanity checks, what "best" means, evaluation.
    overfit_batches: int = _opt(
        0,
        "train on this many fixed batches without augmentation, to "
        "check the model can drive the loss to zero",
    )
    monitor: str = _opt(
        "val_accuracy",
        "the epoch metric that picks the best weights (and early stopping)",
        choices=MONITORS,
    )
    mode: str = _opt(
        "auto",
        "whether the monitored metric is better when larger (max) or smaller (min); "
        "auto: min for losses, max otherwise",
        choices=MODES,
    )
    early_stopping: int = _opt(
        0, "stop after this many epochs without improvement of the monitored metric (0: never)"
    )
    bn_recalibration: int = _opt(
        16,
        "before each evaluation, re-estimate batch-norm statistics as the average over this "
        "many un-augmented training batches (0: use the moving averages as they are)",
    )
    # Transfer learning.
    init_from: str | None = _opt(
        None,
        "start from the weights of a run directory or a .keras "
        "file; layers whose shapes differ (a new head) stay fresh",
    )
    freeze_backbone: bool = _opt(False, "train only the classifier (batch norm frozen too)")
    backbone_lr_mult: float = _opt(
        1.0,
        "learning-rate multiplier of every layer but the classifier (e.g. 0.1 when fine-tuning)",
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            _check(
                self,
                name,
                isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
                "an integer >= 1",
            )
        for name in ("overfit_batches", "early_stopping", "bn_recalibration"):
            _check(
                self,
                name,
                isinstance(getattr(self, name), int) and getattr(self, name) >= 0,
                "an integer >= 0",
            )
        for name in ("learning_rate", "width"):
            _check(self, name, _finite(getattr(self, name)) and getattr(self, name) > 0, "> 0")
        for name in ("weight_decay", "warmup_epochs", "backbone_lr_mult", "momentum"):
            _check(self, name, _finite(getattr(self, name)) and getattr(self, name) >= 0, ">= 0")
        _check(
            self,
            "label_smoothing",
            _finite(self.label_smoothing) and 0 <= self.label_smoothing < 1,
            "in [0, 1)",
        )
        _check(
            self, "decay_rate", _finite(self.decay_rate) and 0 < self.decay_rate <= 1, "in (0, 1]"
        )
        _check(self, "decay_epochs", _finite(self.decay_epochs) and self.decay_epochs > 0, "> 0")
        _check(
            self,
            "clip_norm",
            self.clip_norm is None or (_finite(self.clip_norm) and self.clip_norm > 0),
            "None or > 0",
        )
        _check(
            self,
            "image_size",
            self.image_size is None or (isinstance(self.image_size, int) and self.image_size >= 1),
            "an integer >= 1",
        )
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(
                    f"{f.name} must be one of {', '.join(choices)}; got {getattr(self, f.name)!r}."
                )

    @property
    def monitor_mode(self) -> str:
        """``max`` or ``min``: ``mode`` with ``auto`` resolved from the monitored name."""
        if self.mode != "auto":
            return self.mode
        return "min" if self.monitor.endswith("loss") else "max"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k not in MOVED_TO_OPTIONS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown TrainConfig fields: {', '.join(unknown)}.")
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(config: Any, name: str, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}; got {getattr(config, name)!r}.")


@dataclass(frozen=True)
class RunOptions:
    """How one invocation runs a `TrainConfig`: where its files go, how often it reports, how
    many steps one call runs. None of it changes the result, so it may differ on ``--resume``."""

    runs_dir: str = _opt("runs", "parent of new run directories")
    run_dir: str | None = _opt(
        None, "run directory; default: RUNS_DIR/<time>-<model>-<dataset> (never reused)"
    )
    keep_checkpoints: int = _opt(3, "epoch checkpoints kept besides the best")
    log_every: int = _opt(0, "also print a line every N steps (0: progress bar only)")
    steps_per_execution: int = _opt(
        16,
        "training steps run in one tf.function call (one host round-trip); results are "
        "identical, only the host overhead and the granularity of progress and the NaN "
        "check change",
    )
    export: bool = _opt(
        False, "export the best weights to saved_models/ (SavedModel and ONNX) at the end"
    )
    verbose: bool = _opt(True, "print progress and a line per epoch", cli=False)

    def __post_init__(self) -> None:
        for name in ("keep_checkpoints", "steps_per_execution"):
            _check(
                self,
                name,
                isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
                "an integer >= 1",
            )
        _check(
            self,
            "log_every",
            isinstance(self.log_every, int) and self.log_every >= 0,
            "an integer >= 0",
        )
