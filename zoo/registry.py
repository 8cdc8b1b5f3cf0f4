"""Model registry: one entry per architecture, with the metadata that pipelines and exporters read.

Families register their variants from their spec tables (`register_model(info, builder)`), so a
model's name is written once. `create_model` validates every argument before a layer is built,
builds the model and hands its ``weights`` to `zoo.weights` (which checks published weights
before the build and loads them after it).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import keras

from zoo import weights as zoo_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

POOLINGS = (None, "avg", "max")
_STANDARD_ARGS = frozenset(
    {"input_shape", "classes", "include_top", "pooling", "classifier_activation", "width"}
)


@dataclass(frozen=True)
class Recipe:
    """A model's training defaults: what ``python -m zoo.train --model NAME`` and a search
    start from unless a flag sets the field (each is a `zoo.config.TrainConfig` field).

    The defaults are the CIFAR ResNets' (He et al. 2016, section 4.2: SGD with momentum 0.9,
    learning rate 0.1, weight decay 1e-4, here 5e-4 for the short schedules) with a cosine
    decay after one epoch of linear warm-up. A family whose network cannot train at that rate
    states what it needs and why in ``note``; each recipe is measured on the embedded digits
    by ``benchmarks/recipes.py``.
    """

    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    weight_decay_mode: str = "l2"
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    batch_size: int = 128
    note: str = ""

    def values(self) -> dict[str, Any]:
        """The `TrainConfig` fields this recipe sets, by name (``note`` is not one)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "note"}

    def describe(self) -> str:
        """One line: optimizer, learning rate, weight decay, schedule, batch size."""
        opt = self.optimizer
        if opt == "sgd":
            opt += f" {'nesterov ' if self.nesterov else ''}momentum {self.momentum:g}"
        elif opt == "rmsprop":
            opt += f" momentum {self.momentum:g}"
        parts = [
            f"{opt}, lr {self.learning_rate:g}",
            f"wd {self.weight_decay:g}"
            + (" decoupled" if self.weight_decay_mode == "decoupled" else ""),
            f"{self.schedule}, warm-up {self.warmup_epochs:g} ep",
            f"batch {self.batch_size}",
        ]
        if self.label_smoothing:
            parts.append(f"label smoothing {self.label_smoothing:g}")
        return "; ".join(parts)


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a registered model without building it.

    Attributes:
        name: Registry name, e.g. ``"resnet50"``.
        family: ``"alexnet"``, ``"vgg"``, ``"googlenet"`` or ``"resnet"``.
        description: One line: depth, blocks, what distinguishes the variant.
        paper: Citation of the paper that defines the architecture.
        input_shape: Default ``(height, width, channels)``.
        classes: Default number of classes.
        mean: Per-channel normalisation mean, for pixels scaled to [0, 1].
        std: Per-channel normalisation standard deviation, same units.
        num_params: Trainable parameters at ``input_shape`` and ``classes`` with the top
            (pinned by the tests against the built model).
        params_source: Where the published parameter count comes from.
        macs: Published multiply-adds per image at ``input_shape`` (None where no reliable
            figure is published).
        macs_source: Where ``macs`` comes from.
        classifier: Name of the final Dense layer (replace it for a new head).
        recipe: The model's training defaults (see `Recipe`).
    """

    name: str
    family: str
    description: str
    paper: str
    input_shape: tuple[int, int, int]
    classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_params: int
    params_source: str
    macs: float | None = None
    macs_source: str = ""
    classifier: str = "predictions"
    recipe: Recipe = Recipe()

    @property
    def weights(self) -> tuple[str, ...]:
        """The pretrained weights ``create_model(name, weights=...)`` takes, e.g.
        ``("imagenet",)`` (see `zoo.weights`)."""
        return zoo_weights.available_weights(self.name)


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    builder: Callable[..., keras.Model]


_REGISTRY: dict[str, _Entry] = {}


def register_model(info: ModelInfo, builder: Callable[..., keras.Model]) -> None:
    """Register ``builder`` under ``info.name``; a name can be registered only once."""
    _register_families()  # the zoo's own names first, so a clash is the caller's error
    if info.name in _REGISTRY:
        raise ValueError(f"Model {info.name!r} is already registered.")
    _REGISTRY[info.name] = _Entry(info, builder)


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _register_families() -> None:
    """Import every family module (each registers its models when imported)."""
    import zoo.models  # noqa: F401


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names in natural order (resnet18 before resnet101), optionally
    filtered by a glob such as ``"resnet*"``."""
    _register_families()
    names = sorted(_REGISTRY, key=_natural_key)
    if pattern is None:
        return names
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def _entry(name: str) -> _Entry:
    _register_families()
    if not isinstance(name, str) or name not in _REGISTRY:
        known = list_models()
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown model {name!r}.{hint} Known models: {', '.join(known)}.")
    return _REGISTRY[name]


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model (raises ``ValueError`` naming close matches)."""
    return _entry(name).info


def _check_input_shape(name: str, input_shape: Any) -> tuple[int, int, int]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape
    ):
        raise ValueError(
            f"{name}: input_shape must be three positive integers (height, width, channels), "
            f"got {input_shape!r}."
        )
    return shape  # type: ignore[return-value]


def create_model(
    name: str,
    /,
    *,
    input_shape: tuple[int, int, int] | None = None,
    classes: int | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    classifier_activation: str | None = None,
    width: float = 1.0,
    weights: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> keras.Model:
    """Build a registered model as a Keras functional model.

    Args:
        name: Registry name (see `list_models`).
        input_shape: ``(height, width, channels)``; default: the model's own.
        classes: Output classes; default: the model's own.
        include_top: Keep the classifier. Without it the model is a feature extractor.
        pooling: With ``include_top=False``: ``None`` (4-D feature map), ``"avg"`` or ``"max"``.
        classifier_activation: Activation of the final layer; ``None`` outputs logits.
        width: Multiplier for every layer's channels and hidden units.
        weights: ``None`` (random initialisation); the name of published weights the model
            has (`zoo.weights.available_weights`: keras.applications' ``"imagenet"``,
            torchvision's ``"torchvision"``), converted exactly (downloaded and cached by
            Keras; offline, the error names the file to copy in); a path to such a published
            file (keras.applications' ``.h5``, torchvision's ``.safetensors`` or ``.pth``); or
            a path to a ``.weights.h5`` or ``.keras`` file of the zoo's own for exactly this
            configuration. With pretrained weights and ``classes`` other than theirs, the
            backbone is pretrained and the classifier new.
        **overrides: Family options, e.g. ``small_inputs``, ``stride_in_1x1``, ``aux_logits``,
            ``dropout``, ``name``. Unset (``None``) values keep the model's own defaults.

    Returns:
        An uncompiled ``keras.Model`` whose classifier computes in float32 under any policy.

    Raises:
        ValueError: unknown name or option, or an impossible configuration (named, with the
            accepted values), raised before any layer is built.
    """
    entry = _entry(name)
    info = entry.info
    shape = _check_input_shape(name, info.input_shape if input_shape is None else input_shape)
    classes = info.classes if classes is None else classes
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ValueError(f"{name}: classes must be an integer >= 1, got {classes!r}.")
    if pooling not in POOLINGS:
        raise ValueError(f"{name}: pooling must be one of None, 'avg', 'max'; got {pooling!r}.")
    if include_top and pooling is not None:
        raise ValueError(
            f"{name}: pooling={pooling!r} applies to feature extractors; "
            "pass include_top=False with it, or drop it (the classifier has its own pooling)."
        )
    if not isinstance(include_top, bool):
        raise ValueError(f"{name}: include_top must be True or False, got {include_top!r}.")
    if (
        isinstance(width, bool)
        or not isinstance(width, (int, float))
        or not math.isfinite(width)
        or width <= 0
    ):
        raise ValueError(f"{name}: width must be a finite number > 0, got {width!r}.")
    if classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except ValueError as err:
            raise ValueError(
                f"{name}: unknown classifier_activation {classifier_activation!r}."
            ) from err

    options = {k: v for k, v in overrides.items() if v is not None}
    published, options = zoo_weights.resolve_published(
        info,
        weights,
        options,
        input_shape=shape,
        classes=classes,
        include_top=include_top,
        width=width,
    )
    params = inspect.signature(entry.builder).parameters
    bound = set(getattr(entry.builder, "keywords", {}))  # fixed by a functools.partial
    accepted = sorted(
        p
        for p, spec in params.items()
        if spec.kind is inspect.Parameter.KEYWORD_ONLY and p not in _STANDARD_ARGS | bound
    )
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"{name} does not take {', '.join(map(repr, unknown))}. "
            f"It takes: {', '.join(accepted)}."
        )
    options.setdefault("name", name)
    model = entry.builder(
        input_shape=shape,
        classes=classes,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
        width=float(width),
        **options,
    )
    if weights is not None:
        zoo_weights.load_weights(
            model, info, weights, published, include_top=include_top, classes=classes
        )
    return model
