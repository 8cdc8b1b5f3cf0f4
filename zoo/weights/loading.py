"""What `zoo.create_model` hands its ``weights`` to: `resolve_published` before the model is built
(which published weights, what they need of it) and `load_weights` after (the converter, or the
zoo's own file)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras

from pipelines.cli import one_line
from zoo.weights.common import PretrainedWeights, check_configuration, published, with_options
from zoo.weights.keras_applications import load_keras_applications
from zoo.weights.torchvision import load_torchvision

if TYPE_CHECKING:
    from zoo.registry import ModelInfo

CONVERTERS: dict[str, Callable[..., int]] = {
    "imagenet": load_keras_applications,
    "torchvision": load_torchvision,
}


def resolve_published(
    info: ModelInfo,
    weights: Any,
    options: dict[str, Any],
    *,
    input_shape: tuple[int, int, int],
    classes: int,
    include_top: bool,
    width: float,
) -> tuple[PretrainedWeights | None, dict[str, Any]]:
    """The published weights ``weights`` names or whose file it is (None for none, or for a file
    of the zoo's own), checked against the configuration before anything is built, and the
    builder ``options`` with the ones they need added.

    Raises:
        ValueError: the model has no such weights, cannot take them so configured, or
            ``options`` contradict them (named); `FileNotFoundError` for a missing file.
    """
    found = published(info.name, weights)
    if found is None:
        return None, options
    check_configuration(
        info,
        found,
        input_shape=input_shape,
        classes=classes,
        include_top=include_top,
        width=width,
    )
    return found, with_options(found, options)


def load_weights(
    model: keras.Model,
    info: ModelInfo,
    weights: str | os.PathLike[str],
    found: PretrainedWeights | None,
    *,
    include_top: bool,
    classes: int,
) -> None:
    """Load ``weights`` into ``info``'s built ``model``: the published weights ``found`` (see
    `resolve_published`) through their converter, else a ``.weights.h5`` or ``.keras`` file of
    the zoo's own for exactly this configuration."""
    if found is None:
        _load_own(model, weights)
        return
    file = None if weights == found.name else weights
    convert = CONVERTERS[found.name]
    convert(model, found, file, info=info, include_top=include_top, classes=classes)


def _load_own(model: keras.Model, weights: str | os.PathLike[str]) -> None:
    path = os.fspath(weights)
    if not path.endswith((".weights.h5", ".keras")):
        raise ValueError(
            f"weights must be None, the name of pretrained weights (zoo.model_info(name)."
            f"weights), or a path to a '.weights.h5' or '.keras' file; got {path!r}."
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    check_keras_file(path)
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError) as err:
        raise ValueError(
            f"{path} does not hold weights for this model ({model.name}, the same name, width "
            f"and classes are needed): {one_line(err)}"
        ) from None


def check_keras_file(path: str | os.PathLike[str]) -> None:
    """Raise a one-line `ValueError` naming ``path`` unless it is what its name says: a
    ``.keras`` file is a zip archive, a ``.h5`` file is HDF5 (Keras's loaders answer a damaged
    file with "File not found" or a zip/HDF5 traceback)."""
    name = os.fspath(path)
    if name.endswith(".keras") and not zipfile.is_zipfile(name):
        raise ValueError(
            f"{name} is not a Keras model file (a .keras file is a zip archive); it is damaged "
            "or another format: save it again with model.save(...)."
        )
    if name.endswith(".h5"):
        with open(name, "rb") as f:
            if f.read(8) != b"\x89HDF\r\n\x1a\n":
                raise ValueError(
                    f"{name} is not an HDF5 weights file; it is damaged or another format: "
                    "save it again with model.save_weights(...)."
                )


def load_keras_file(path: str | os.PathLike[str]) -> keras.Model:
    """A ``.keras`` model file (checked by `check_keras_file`), uncompiled, with the zoo's own
    layers registered first: Keras finds a saved layer's class only once its module has run,
    and CIFAR ResNets (``ZeroPadShortcut``), AlexNet and GoogLeNet
    (``LocalResponseNormalization``) use the zoo's. Keras's own errors pass through."""
    import zoo.layers  # noqa: F401  (registers the zoo's layers with Keras)

    check_keras_file(path)
    return keras.saving.load_model(path, compile=False)
