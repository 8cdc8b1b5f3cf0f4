"""Pretrained ImageNet weights from keras.applications, converted exactly into the zoo's models.

keras.applications' VGG16/19 map one to one. Its ResNet50/101/152 differ from the zoo's in three
ways, each converted without approximation:

- a bias on every convolution before batch norm: folded into the batch norm, since
  ``BN(x + b)`` with moving mean ``m`` is ``BN(x)`` with moving mean ``m - b``;
- batch-norm epsilon 1.001e-5 against the zoo's 1e-5: the difference is added to the moving
  variance, so ``var + eps`` is unchanged;
- the stride of a downsampling bottleneck on its first 1x1 convolution (the original paper's
  placement): the zoo model is built with ``stride_in_1x1=True`` for these weights.

Both families expect Caffe's preprocessing (BGR, the ImageNet mean subtracted from 0-255 pixels).
The zoo keeps RGB inputs: the first convolution's input channels are reversed, and the weights'
`PretrainedWeights.mean` and ``std`` (pixels in [0, 1]) give exactly the numbers Caffe's
preprocessing gives: ``(x - mean) / std == 255 * x - caffe_mean``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import keras
import numpy as np

from zoo.cli import one_line

KERAS_APPLICATIONS_EPSILON = 1.001e-5  # keras.applications' ResNet batch norm
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # keras.applications' "caffe" mode, on 0-255 pixels
KERAS_CACHE = os.path.join("~", ".keras", "models")


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


def available_weights(model: str) -> tuple[str, ...]:
    """The names of the pretrained weights ``model`` can be created with (may be empty)."""
    return tuple(WEIGHTS.get(model, {}))


def pretrained(model: str, name: str) -> PretrainedWeights:
    """The description of ``model``'s weights ``name``; a `ValueError` naming the models that
    have such weights when ``model`` has none."""
    found = WEIGHTS.get(model, {}).get(name)
    if found is None:
        having = sorted(m for m, sets in WEIGHTS.items() if name in sets)
        raise ValueError(
            f"{model} has no {name!r} weights; models with them: {', '.join(having) or 'none'}. "
            "Train it, or pass weights=PATH to a file of the zoo's own."
        )
    return found


def source_model(
    weights: PretrainedWeights,
    *,
    include_top: bool,
    input_shape: tuple[int, int, int],
    file: str | os.PathLike[str] | None = None,
) -> keras.Model:
    """keras.applications' model for ``weights``: downloaded (and cached) by Keras, or read from
    ``file`` (the ``.h5`` keras.applications downloads). Offline without the file, a
    `FileNotFoundError` says which file Keras looks for and where to put it."""
    build = getattr(keras.applications, weights.application)
    wanted = weights.file if include_top else weights.file_no_top
    if file is not None:
        # The file decides whether it holds the top: try the one asked for, then the other.
        errors = []
        for top in (include_top, not include_top):
            try:
                return build(
                    weights=os.fspath(file),
                    include_top=top,
                    input_shape=input_shape,
                    classifier_activation=None,
                )
            except Exception as err:  # the legacy loader raises ValueError or KeyError
                errors.append(one_line(err, 160))
        raise ValueError(
            f"{file} is not {weights.source}'s weights file ({weights.file} or "
            f"{weights.file_no_top}): {errors[0]}"
        )
    try:
        return build(
            weights="imagenet",
            include_top=include_top,
            input_shape=input_shape,
            classifier_activation=None,
        )
    except Exception as err:  # Keras raises a plain Exception when the download fails
        raise FileNotFoundError(
            f"{weights.model}'s {weights.name!r} weights could not be fetched "
            f"({one_line(err, 160)}). Keras looks for {wanted} in {KERAS_CACHE}: download it on "
            f"a machine with network (keras.applications.{weights.application}(weights="
            f"'imagenet')) and copy it there, or pass weights='path/to/{wanted}'."
        ) from None


def convert(
    source: keras.Model, target: keras.Model, *, first_conv: str, skip: tuple[str, ...] = ()
) -> int:
    """Copy a keras.applications model's weights into the zoo's ``target`` exactly (see the
    module docstring); layers of ``target`` that ``source`` lacks (a new head) keep theirs.
    Layers named in ``skip`` (a new classifier) are left as they are. Returns the number of
    layers converted.

    Raises:
        ValueError: naming the first layer whose weights do not fit, and how.
    """
    by_name = {layer.name: layer for layer in source.layers if layer.weights}
    done = 0
    for layer in target.layers:
        if not layer.weights or layer.name in skip:
            continue
        other = by_name.get(_source_name(layer.name))
        if other is None:
            continue
        values = [np.asarray(w) for w in other.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            values = _batch_norm(values, other, source, layer)
        elif isinstance(layer, keras.layers.Conv2D) and len(values) == 2 and not layer.use_bias:
            values = values[:1]  # its bias goes into the batch norm that follows (above)
        if layer.name == first_conv:
            values[0] = values[0][:, :, ::-1, :]  # BGR inputs to RGB
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(
                f"layer {layer.name} does not fit {other.name} of {source.name}: weights of "
                f"shapes {[v.shape for v in values]}, expected {expected}."
            )
        layer.set_weights(values)
        done += 1
    return done


def _source_name(name: str) -> str:
    """keras.applications' name for a zoo layer (VGG's ``block1_2_conv`` is ``block1_conv2``)."""
    parts = name.split("_")
    if len(parts) == 3 and parts[0].startswith("block") and parts[2] == "conv":
        return f"{parts[0]}_conv{parts[1]}"
    return name


def _batch_norm(
    values: list[np.ndarray], other: Any, source: keras.Model, layer: Any
) -> list[np.ndarray]:
    """``[gamma, beta, mean, variance]`` with the preceding convolution's bias and the epsilon
    difference folded in."""
    gamma, beta, mean, variance = values
    conv = source.get_layer(other.name[: -len("_bn")] + "_conv")
    if getattr(conv, "use_bias", False):
        mean = mean - np.asarray(conv.bias)
    variance = variance + (other.epsilon - layer.epsilon)
    return [gamma, beta, mean, variance]


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
