"""Defaults that depend on the data: the ``auto`` augmentation and the image size.

Training (``zoo.train``), ``python -m pipelines.preview`` and the pipeline benchmark all call
these, so they pick the same augmentation and size for the same dataset and model.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from pipelines.augment import AUTO, get_augment_config
from pipelines.sources import ImageDataset

# ``auto`` gives CIFAR-style augmentation up to this image side, ImageNet-style above it.
AUTO_SMALL_SIDE = 64
DEFAULT_IMAGE_SIDE = 224


def _check_dataset(data: ImageDataset) -> None:
    if not isinstance(data, ImageDataset):
        raise ValueError(
            f"Expected an ImageDataset (from pipelines.load), got {type(data).__name__}."
        )


def _positive_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _longer_side(image_size: int | Sequence[int]) -> int:
    try:
        sides = (image_size,) if isinstance(image_size, numbers.Integral) else tuple(image_size)
    except TypeError:
        sides = ()
    if not (len(sides) in (1, 2) and all(_positive_int(v) for v in sides)):
        raise ValueError(
            f"image_size must be a positive int or (height, width), got {image_size!r}."
        )
    return int(max(sides))


def resolve_augment(spec: str, data: ImageDataset, image_size: int | Sequence[int]) -> str:
    """Turns ``auto`` into a concrete augmentation spec; returns other specs unchanged.

    ``auto`` is ``cifar`` (padded random crop and flip) for images whose longer side is at most
    64 pixels, ``imagenet`` above that; with flips off (``flip=false``) when the dataset is not
    ``mirror_invariant`` (digits, text). Switches after ``auto`` are kept, and a ``flip``
    switch is the caller's choice: on digits at 32x32, ``"auto,mixup=0.2"`` gives
    ``"cifar,flip=false,mixup=0.2"`` and ``"auto,flip=true"`` gives ``"cifar,flip=true"``.

    Args:
        spec: ``auto`` alone or with switches, or any spec ``get_augment_config`` accepts.
        data: The dataset being trained on.
        image_size: The training image side, or ``(height, width)``.

    Returns:
        A spec string ``get_augment_config`` accepts.

    Raises:
        ValueError: A bad spec, dataset or size (the spec errors of ``get_augment_config``).
    """
    if not isinstance(spec, str):
        raise ValueError(f"augment must be a spec string, got {spec!r}.")
    _check_dataset(data)
    side = _longer_side(image_size)
    name, *items = (part.strip() for part in spec.split(","))
    if name == AUTO:
        items = [item for item in items if item]
        chosen = ["cifar" if side <= AUTO_SMALL_SIDE else "imagenet"]
        given = {item.partition("=")[0].strip() for item in items}
        if not data.mirror_invariant and "flip" not in given:
            chosen.append("flip=false")
        spec = ",".join(chosen + items)
    get_augment_config(spec)  # the usual clear errors for bad presets and switches
    return spec


def default_image_size(data: ImageDataset, model_side: int | None = None) -> int:
    """The training image side when none is given.

    Args:
        data: The dataset.
        model_side: The model's native input side (``zoo.model_info(name).input_shape[0]``),
            if a model is known.

    Returns:
        The dataset's own side when its images are square and all of one size; otherwise
        ``model_side``; otherwise 224.

    Raises:
        ValueError: ``data`` is not an ``ImageDataset`` or ``model_side`` not a positive int.
    """
    _check_dataset(data)
    if model_side is not None and not _positive_int(model_side):
        raise ValueError(f"model_side must be a positive int or None, got {model_side!r}.")
    shape = data.image_shape
    if shape is not None and shape[0] == shape[1]:
        return int(shape[0])
    return int(model_side) if model_side is not None else DEFAULT_IMAGE_SIDE
