"""What published weights exist for which model, where Keras caches them, and the checks that
both converters share: which weights a name or a file means, what they need of the model, and
a layer's shapes before its weights are set."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from zoo.registry import ModelInfo

CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # keras.applications' "caffe" mode, on 0-255 pixels
KERAS_CACHE = os.path.join("~", ".keras", "models")
TORCHVISION_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-11ad3fa6.pth",  # IMAGENET1K_V2
    "resnet101": "resnet101-cd907fc2.pth",  # IMAGENET1K_V2
    "resnet152": "resnet152-f82ba261.pth",  # IMAGENET1K_V2
    "vgg11": "vgg11-8a719046.pth",
    "vgg11_bn": "vgg11_bn-6002323d.pth",
    "vgg13": "vgg13-19584684.pth",
    "vgg13_bn": "vgg13_bn-abd245e5.pth",
    "vgg16": "vgg16-397923af.pth",
    "vgg16_bn": "vgg16_bn-6c64b313.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
    "vgg19_bn": "vgg19_bn-c79401a0.pth",
}
TORCHVISION_SUFFIXES = (".safetensors", ".pth", ".pt")


@dataclass(frozen=True)
class PretrainedWeights:
    """A set of published weights the zoo converts.

    Attributes:
        model: The zoo model they are for.
        name: What ``create_model(model, weights=name)`` takes, e.g. ``"imagenet"``.
        source: Where they come from, e.g. ``keras.applications.ResNet50``.
        file: The file Keras downloads (and caches in ``~/.keras/models``), with the top.
        file_no_top: The same without the classifier.
        mean: Per-channel mean for pixels in [0, 1], RGB, that these weights expect.
        std: Per-channel standard deviation, same units.
        options: Builder options these weights need (recorded, e.g. ``stride_in_1x1``).
        classes: Classes of the published classifier.
        input_shape: The input they were trained at.
    """

    model: str
    name: str
    source: str
    file: str
    file_no_top: str
    mean: tuple[float, float, float] = tuple(c / 255 for c in CAFFE_MEAN_RGB)  # type: ignore[assignment]
    std: tuple[float, float, float] = (1 / 255, 1 / 255, 1 / 255)
    options: dict[str, Any] = field(default_factory=dict)
    classes: int = 1000
    input_shape: tuple[int, int, int] = (224, 224, 3)

    @property
    def application(self) -> str:
        return self.source.rsplit(".", 1)[1]


def _keras_applications(model: str, application: str, options: dict[str, Any]) -> PretrainedWeights:
    stem = model  # keras.applications names its files after the model: vgg16_weights_...
    return PretrainedWeights(
        model=model,
        name="imagenet",
        source=f"keras.applications.{application}",
        file=f"{stem}_weights_tf_dim_ordering_tf_kernels.h5",
        file_no_top=f"{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5",
        options=options,
    )


def _torchvision(model: str, file: str) -> PretrainedWeights:
    return PretrainedWeights(
        model=model,
        name="torchvision",
        source=f"torchvision.models.{model}",
        file=file,
        file_no_top=file,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        # torchvision's bottlenecks stride in the 3x3 (v1.5), the zoo's default: insist on it.
        options={"small_inputs": False}
        | ({"stride_in_1x1": False} if model in ("resnet50", "resnet101", "resnet152") else {}),
    )


WEIGHTS: dict[str, dict[str, PretrainedWeights]] = {
    "vgg16": {"imagenet": _keras_applications("vgg16", "VGG16", {"small_inputs": False})},
    "vgg19": {"imagenet": _keras_applications("vgg19", "VGG19", {"small_inputs": False})},
    **{
        name: {
            "imagenet": _keras_applications(
                name, app, {"small_inputs": False, "stride_in_1x1": True}
            )
        }
        for name, app in (
            ("resnet50", "ResNet50"),
            ("resnet101", "ResNet101"),
            ("resnet152", "ResNet152"),
        )
    },
}
for _model, _file in TORCHVISION_FILES.items():
    WEIGHTS.setdefault(_model, {})["torchvision"] = _torchvision(_model, _file)


def available_weights(model: str) -> tuple[str, ...]:
    """The names of the pretrained weights ``model`` can be created with (may be empty)."""
    return tuple(WEIGHTS.get(model, {}))


def having(weights: str) -> list[str]:
    """The models that have pretrained weights ``weights``."""
    return sorted(model for model, sets in WEIGHTS.items() if weights in sets)


def pretrained(model: str, name: str) -> PretrainedWeights:
    """The description of ``model``'s weights ``name``; a `ValueError` naming the models that
    have such weights when ``model`` has none."""
    found = WEIGHTS.get(model, {}).get(name)
    if found is None:
        raise ValueError(
            f"{model} has no {name!r} weights; models with them: "
            f"{', '.join(having(name)) or 'none'}. "
            "Train it, or start from a file of the zoo's own (weights=PATH, or --init-from)."
        )
    return found


def _file_weights(path: str) -> str | None:
    """The weights a published file holds, from its suffix: ``"torchvision"`` for a state dict,
    ``"imagenet"`` for keras.applications' ``.h5`` (not the zoo's own ``.weights.h5``)."""
    if path.endswith(TORCHVISION_SUFFIXES):
        return "torchvision"
    if path.endswith(".h5") and not path.endswith(".weights.h5"):
        return "imagenet"
    return None


def published(name: str, weights: Any) -> PretrainedWeights | None:
    """The `zoo.weights.PretrainedWeights` that ``weights`` names (``"imagenet"``,
    ``"torchvision"``) or whose published format the file has (keras.applications' ``.h5``, not
    a ``.weights.h5``; torchvision's ``.safetensors``/``.pth``), else None."""
    published_file = (".h5", ".keras", *TORCHVISION_SUFFIXES)
    if isinstance(weights, str) and weights in ("imagenet", "torchvision"):
        return pretrained(name, weights)  # a name, even beside a folder of that name
    if isinstance(weights, str) and not weights.endswith(published_file):
        if os.sep in weights or os.path.exists(weights):
            return None  # a path: zoo.weights.loading names what it accepts
        return pretrained(name, weights)
    path = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else ""
    kind = _file_weights(path)
    if kind is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    found = WEIGHTS.get(name, {}).get(kind)
    if found is None:
        lacking = (
            f"a {os.path.splitext(path)[1]} file is read as torchvision's weights, and {name} "
            "has no torchvision counterpart"
            if kind == "torchvision"
            else f"a .h5 file is read as keras.applications' weights, and {name} has none"
        )
        raise ValueError(f"{path}: {lacking}; models that have: {', '.join(having(kind))}.")
    return found


def architecture_options(model: str, weights: str | None) -> dict[str, Any]:
    """The builder options that ``weights`` (a name or a published file, as a run's config
    records it) imply for ``model``, decided from the name or the file's suffix alone: a run
    trained from a file rebuilds after the file is gone."""
    if not weights:
        return {}
    name = str(weights)
    found = WEIGHTS.get(model, {}).get(_file_weights(name) or name)
    return dict(found.options) if found is not None else {}


def check_configuration(
    info: ModelInfo,
    weights: PretrainedWeights,
    *,
    input_shape: tuple[int, int, int],
    classes: int,
    include_top: bool,
    width: float,
) -> None:
    """A `ValueError` unless ``info``'s model, so configured, can take ``weights``: width 1.0,
    RGB inputs, and the published input size where the published classifier flattens."""
    name = info.name
    if width != 1.0:
        raise ValueError(f"{name}: pretrained weights are for width 1.0, got width={width}.")
    if input_shape[2] != 3:
        raise ValueError(f"{name}: pretrained weights take RGB images (3 channels).")
    flattens = info.family in ("vgg", "alexnet")
    same_top = include_top and classes == weights.classes
    if same_top and flattens and input_shape != weights.input_shape:
        raise ValueError(
            f"{name}: its pretrained classifier takes {weights.input_shape[0]}x"
            f"{weights.input_shape[1]} inputs (it flattens the feature map); pass that "
            "input_shape, or include_top=False, or other classes for a new head."
        )


def with_options(weights: PretrainedWeights, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the builder options ``weights`` need added; a `ValueError` naming the
    first that ``options`` sets otherwise."""
    for option, value in weights.options.items():
        if options.get(option, value) != value:
            raise ValueError(
                f"{weights.model}: {weights.source}'s weights need {option}={value!r}; "
                f"got {options[option]!r}."
            )
    return options | weights.options


def set_checked(layer: Any, values: list[np.ndarray], what: str) -> None:
    """``layer.set_weights(values)``, or a `ValueError` saying that ``layer`` does not fit
    ``what`` (the source's layer) and which shapes differ."""
    expected = [tuple(w.shape) for w in layer.weights]
    if [v.shape for v in values] != expected:
        raise ValueError(
            f"layer {layer.name} does not fit {what}: shapes {[v.shape for v in values]}, "
            f"expected {expected}."
        )
    layer.set_weights(values)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, in the order of the published classifiers' outputs
    (keras.applications' and torchvision's): each label's first WordNet synonym ("tench",
    "goldfish"), or its whole label where that synonym is shared ("maillot" and "maillot, tank
    suit"). Shipped in ``zoo/data/imagenet_classes.txt`` (the full labels, one per line, from
    TensorFlow Datasets' list), so no download is needed."""
    labels = resources.files("zoo").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    full = [line.strip() for line in labels.splitlines() if line.strip()]
    first = [label.split(",")[0].strip() for label in full]
    shared = {name for name, count in Counter(first).items() if count > 1}
    return [label if name in shared else name for name, label in zip(first, full, strict=True)]
