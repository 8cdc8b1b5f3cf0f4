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
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from pipelines.cli import one_line
from zoo.weights.common import KERAS_CACHE, PretrainedWeights, set_checked

if TYPE_CHECKING:
    from zoo.registry import ModelInfo

KERAS_APPLICATIONS_EPSILON = 1.001e-5  # keras.applications' ResNet batch norm


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
        set_checked(layer, values, f"{other.name} of {source.name}")
        done += 1
    return done


def load_keras_applications(
    model: keras.Model,
    weights: PretrainedWeights,
    file: str | os.PathLike[str] | None,
    *,
    info: ModelInfo,
    include_top: bool,
    classes: int,
) -> int:
    """Convert ``weights`` (fetched, or read from ``file``) into ``info``'s built ``model``; its
    classifier is left new when ``classes`` are not the published ones. Returns the number of
    layers converted."""
    source = source_model(
        weights,
        include_top=include_top and classes == weights.classes,
        input_shape=weights.input_shape,
        file=file,
    )
    first = next(layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    new_head = (info.classifier,) if classes != weights.classes else ()
    return convert(source, model, first_conv=first, skip=new_head)


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
