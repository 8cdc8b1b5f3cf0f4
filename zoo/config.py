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

from zoo.monitor import MODES, MONITORS, Monitor

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "exponential")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
JIT_CHOICES = ("auto", "on", "off")
WEIGHT_DECAY_MODES = ("l2", "decoupled")
# Fields that older config.json files held and that are now options of an invocation
# (`RunOptions`); they are ignored when such a file is read.
MOVED_TO_OPTIONS = frozenset({"runs_dir", "run_dir", "keep_checkpoints", "log_every", "export"})


# Fields whose default (None) is the model's own value, from its registry recipe
# (`zoo.registry.Recipe`); `TrainConfig.resolve` fills them in.
RECIPE_FIELDS = (
    "optimizer", "learning_rate", "momentum", "nesterov", "weight_decay", "weight_decay_mode",
    "schedule", "warmup_epochs", "label_smoothing", "batch_size",
)  # fmt: skip
FINE_TUNE_BACKBONE_LR_MULT = 0.1  # fine-tuning's default (fast.ai's discriminative rates)
RECIPE = "; default: the model's recipe (python -m zoo.summary --recipes)"
AUTO = "auto"


def _opt(default: Any, help: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={"help": help, **kwargs})


def learning_rate_arg(text: str) -> float | str | None:
    """``--learning-rate``: a number, ``auto`` (the range test picks it) or ``none``/``recipe``
    (the model's recipe)."""
    lowered = text.strip().lower()
    if lowered == AUTO:
        return AUTO
    if lowered in ("none", "recipe", ""):
        return None
    return float(text)


learning_rate_arg.__name__ = "learning rate"  # argparse names it in "invalid learning rate value"


@dataclass(frozen=True)
class TrainConfig:
    """A training run. Defaults train ``resnet20`` on the embedded digits in a few CPU minutes.

    A field of `RECIPE_FIELDS` left at None takes the model's recipe value when the config is
    resolved (`resolve`; the engine, the tuner and ``lr_find`` resolve what they are given), so
    ``TrainConfig(model="vgg16")`` trains with VGG-16's recipe, and a value given wins."""

    # What to train on what.
    model: str = _opt("resnet20", "model name from the registry (python -m zoo.summary lists them)")
    dataset: str = _opt(
        "digits",
        "'digits' (embedded, offline), 'tfds:NAME[:CONFIG]', 'folder:PATH' (a folder per "
        "class) or 'files:PATH' (labelled by --label-regex)",
    )
    data_dir: str | None = _opt(None, "TFDS data directory (tfds datasets only)")
    download: bool = _opt(False, "let TFDS download a missing dataset (needs network)")
    label_regex: str | None = _opt(
        None,
        "files:PATH only: a regular expression searched in each file name whose first group "
        r"is the class, e.g. '^(.+)_\d+\.jpg$' for Oxford-IIIT Pet's images/",
    )
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
    batch_size: int | None = _opt(None, "global batch size (split across replicas)" + RECIPE)
    optimizer: str | None = _opt(None, "optimizer" + RECIPE, choices=OPTIMIZERS)
    learning_rate: float | str | None = _opt(
        None,
        "peak learning rate (after warm-up), or 'auto': a learning-rate range test "
        "(python -m tuning.lr_find) picks it before training and the run records it in "
        "learning_rate.json" + RECIPE,
        parse=learning_rate_arg,
    )
    momentum: float | None = _opt(None, "momentum (sgd, rmsprop)" + RECIPE)
    nesterov: bool | None = _opt(None, "Nesterov momentum (sgd)" + RECIPE)
    weight_decay: float | None = _opt(
        None,
        "weight decay on convolution and dense kernels (not on biases or batch norm)" + RECIPE,
    )
    weight_decay_mode: str | None = _opt(
        None,
        "'l2': add decay/2 * |w|^2 to the loss; 'decoupled': "
        "shrink weights in the optimizer (AdamW-style)" + RECIPE,
        choices=WEIGHT_DECAY_MODES,
    )
    schedule: str | None = _opt(
        None, "learning-rate schedule after warm-up" + RECIPE, choices=SCHEDULES
    )
    warmup_epochs: float | None = _opt(None, "linear warm-up from 0, in epochs" + RECIPE)
    decay_epochs: float = _opt(
        30.0, "'step': epochs between decays; 'exponential': epochs per decay_rate factor"
    )
    decay_rate: float = _opt(
        0.1, "factor of each 'step' decay / per decay_epochs for 'exponential'"
    )
    label_smoothing: float | None = _opt(None, "label smoothing of the cross-entropy" + RECIPE)
    clip_norm: float | None = _opt(None, "clip the global gradient norm to this value")
    # System.
    precision: str = _opt(
        "auto",
        "float32, mixed_float16 (with loss scaling), mixed_bfloat16; "
        "auto: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with bfloat16 instructions "
        "(AVX512-BF16, AMX), float32 otherwise",
        choices=PRECISIONS,
    )
    strategy: str = _opt(
        "auto",
        "tf.distribute strategy; auto: mirrored with more than one GPU, "
        "default otherwise; multiworker reads TF_CONFIG",
        choices=STRATEGIES,
    )
    jit_compile: str = _opt(
        "auto",
        "compile the train and eval steps with XLA: on, off; auto: on a GPU only (on a CPU "
        "XLA measured slower, as Keras's own auto finds: benchmarks/RESULTS.md)",
        choices=JIT_CHOICES,
    )
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
    weights: str | None = _opt(
        None,
        "start from published weights: imagenet or torchvision (python -m zoo.summary lists "
        "which a model has), or their file (.h5, .safetensors, .pth); the data is normalised as "
        "the weights expect, and other classes get a new head",
    )
    init_from: str | None = _opt(
        None,
        "start from the weights of a run directory or a .keras "
        "file; layers whose shapes differ (a new head) stay fresh",
    )
    freeze_backbone: bool = _opt(False, "train only the classifier (batch norm frozen too)")
    backbone_lr_mult: float | None = _opt(
        None,
        "learning-rate multiplier of every layer but the classifier; default: 0.1 with "
        "--fine-tune, 1 otherwise",
    )
    fine_tune: bool = _opt(
        False,
        "the transfer-learning recipe (fast.ai's fine_tune) from --weights or --init-from: "
        "stage 1 trains the new classifier alone for --freeze-epochs (backbone frozen, batch "
        "norm in inference mode), stage 2 trains every layer for --epochs with the backbone at "
        "--backbone-lr-mult, each stage with a fresh optimizer, warm-up and schedule",
    )
    freeze_epochs: int = _opt(
        1, "with --fine-tune: epochs of stage 1 (the classifier alone) before --epochs of all"
    )

    def __post_init__(self) -> None:
        if self.weights is not None and self.init_from is not None:
            raise ValueError(
                "weights (--weights) and init_from (--init-from) both choose the starting "
                "weights; give one of them."
            )
        for name in ("epochs", "batch_size"):
            _check(
                self,
                name,
                (name in RECIPE_FIELDS and getattr(self, name) is None)
                or (isinstance(getattr(self, name), int) and getattr(self, name) >= 1),
                "an integer >= 1",
            )
        if self.fine_tune and self.weights is None and self.init_from is None:
            raise ValueError(
                "fine_tune (--fine-tune) needs starting weights: --weights imagenet (or "
                "torchvision, or a weights file) or --init-from RUN_DIR_OR_.keras."
            )
        if self.fine_tune and self.freeze_backbone:
            raise ValueError(
                "fine_tune (--fine-tune) unfreezes the backbone after --freeze-epochs; "
                "freeze_backbone (--freeze-backbone) keeps it frozen: give one of them."
            )
        for name in ("overfit_batches", "early_stopping", "bn_recalibration", "freeze_epochs"):
            _check(
                self,
                name,
                isinstance(getattr(self, name), int) and getattr(self, name) >= 0,
                "an integer >= 0",
            )
        if isinstance(self.jit_compile, bool):  # True/False from Python or an older config.json
            object.__setattr__(self, "jit_compile", "on" if self.jit_compile else "off")
        _check(self, "jit_compile", self.jit_compile in JIT_CHOICES, "auto, on or off")
        _check(self, "width", _finite(self.width) and self.width > 0, "> 0")
        _check(
            self,
            "learning_rate",
            self.learning_rate in (None, AUTO)
            or (_finite(self.learning_rate) and self.learning_rate > 0),
            "> 0, 'auto' or None (the model's recipe)",
        )
        for name in ("weight_decay", "warmup_epochs", "backbone_lr_mult", "momentum"):
            value = getattr(self, name)
            unset = (name in RECIPE_FIELDS or name == "backbone_lr_mult") and value is None
            _check(self, name, unset or (_finite(value) and value >= 0), ">= 0")
        _check(
            self,
            "label_smoothing",
            self.label_smoothing is None
            or (_finite(self.label_smoothing) and 0 <= self.label_smoothing < 1),
            "in [0, 1)",
        )
        _check(
            self,
            "nesterov",
            self.nesterov is None or isinstance(self.nesterov, bool),
            "True, False or None",
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
            value = getattr(self, f.name)
            if choices and value not in choices and not (f.name in RECIPE_FIELDS and value is None):
                raise ValueError(
                    f"{f.name} must be one of {', '.join(choices)}; got {getattr(self, f.name)!r}."
                )

    @property
    def resolved(self) -> bool:
        """Whether every recipe field holds a value (``learning_rate`` may be ``'auto'``)."""
        return all(getattr(self, name) is not None for name in RECIPE_FIELDS)

    def resolve(self) -> TrainConfig:
        """This config with each unset (None) recipe field taken from ``model``'s recipe.

        Raises:
            ValueError: ``model`` is not in the registry (naming close matches).
        """
        import zoo  # the registry; imported here so that reading a config needs no models

        recipe = zoo.model_info(self.model).recipe.values()
        if self.resolved:
            return self
        unset = {name: recipe[name] for name in RECIPE_FIELDS if getattr(self, name) is None}
        return dataclasses.replace(self, **unset)

    def given(self) -> dict[str, Any]:
        """The fields that differ from their defaults (a recipe field counts as given when it
        differs from the model's recipe): what a command line needs to reproduce this run."""
        recipe = TrainConfig(model=self.model).resolve()
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = getattr(recipe, f.name) if f.name in RECIPE_FIELDS else f.default
            if value is not None and value != default:
                out[f.name] = value
        return out

    @property
    def backbone_multiplier(self) -> float:
        """``backbone_lr_mult`` with its default resolved: 0.1 when fine-tuning, else 1."""
        if self.backbone_lr_mult is not None:
            return float(self.backbone_lr_mult)
        return FINE_TUNE_BACKBONE_LR_MULT if self.fine_tune else 1.0

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole run: ``freeze_epochs + epochs`` when fine-tuning."""
        return self.epochs + (self.freeze_epochs if self.fine_tune else 0)

    def stage_of(self, epoch: int) -> int:
        """The stage of the 0-based ``epoch``: 1 (the classifier alone) for the first
        ``freeze_epochs`` of a fine-tuning run, 2 (every layer) after; 2 for any other run
        (1 with ``freeze_backbone``)."""
        if self.fine_tune:
            return 1 if epoch < self.freeze_epochs else 2
        return 1 if self.freeze_backbone else 2

    @property
    def best_rule(self) -> Monitor:
        """What "best" means for this run (`zoo.monitor`): ``monitor`` under ``mode``."""
        return Monitor(self.monitor, self.mode)

    @property
    def monitor_mode(self) -> str:
        """``max`` or ``min``: ``mode`` with ``auto`` resolved from the monitored name."""
        return self.best_rule.direction

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
        """The configuration saved in ``path``; a damaged file is a `ValueError` naming it."""
        values = read_json_file(path, "a run's configuration")
        if not isinstance(values, dict):
            raise ValueError(f"{path} is damaged (not a JSON object); it is not a run's config.")
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} is damaged or from another program: {err}") from None


def read_json_file(path: str | os.PathLike[str], what: str = "JSON") -> Any:
    """The JSON in ``path``; a file that is not valid JSON (truncated, edited, binary) is a
    `ValueError` saying which file and what it should hold, not a decoder traceback."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path} is damaged (not valid JSON: {err}); it should hold {what}. Restore it or "
            "start again."
        ) from None


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
    strict_checks: bool = _opt(
        False,
        "make the babysitting checks (loss not falling, accuracy at chance, update/weight "
        "ratio, vanishing or exploding gradients) errors: the run stops with exit code 2 "
        "after the epoch that failed one (for scripted sweeps)",
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
