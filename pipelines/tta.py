"""Test-time augmentation for any Keras classifier.

Modes:

* ``none``: the images as they are.
* ``flip``: the images and their left-right mirrors (2 views).
* ``10crop``: the four corner crops and the centre crop, each with its mirror (10 views,
  AlexNet/VGG evaluation). Crops default to the model's input size when the images are larger,
  else to 87.5% of the image side; crops are resized to the model's input size when it is fixed
  and differs.

  Standard 10-crop takes its crops from images larger than the model's input: prepare the
  evaluation images at the larger size, e.g. ``make_eval_dataset(..., image_size=(256, 256),
  crop_fraction=1.0)`` for a 224 model (or pass the raw images), then let ``predict`` cut
  224x224 crops. A batch that ``make_eval_dataset`` already centre-cropped to the model's size
  (the default ``crop_fraction=0.875``) gives crops of 87.5% of that, resized back up: the
  views then cover only the central 77% of the short side and are blurred by the resize, which
  is not the standard protocol.

The zoo's models output logits, so ``predict`` applies a softmax to each view before averaging
(``from_logits=False`` averages the outputs as they are, for models that end in a softmax).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipelines.resize import CROP_FRACTION

MODES = ("none", "flip", "10crop")


def _model_size(model: Any) -> tuple[int, int] | None:
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list):
        shape = shape[0]
    if shape is None or len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def views(
    images: tf.Tensor,
    mode: str = "flip",
    crop_size: Sequence[int] | int | None = None,
    output_size: Sequence[int] | None = None,
) -> list[tf.Tensor]:
    """Returns the TTA views of a batch ``[B, H, W, C]``, each ``[B, h, w, C]``.

    Args:
        images: The batch (already normalised); for ``10crop``, larger than the crops (see
            the module docstring).
        mode: ``none``, ``flip`` or ``10crop``.
        crop_size: ``10crop`` crop ``(h, w)`` or side; default ``CROP_FRACTION`` (87.5%) of the
            image side.
        output_size: Resize ``10crop`` views to this ``(h, w)`` when it differs from the crop.

    Returns:
        1, 2 or 10 view batches. For ``10crop``: top-left, top-right, bottom-left,
        bottom-right, centre, then their mirrors in the same order.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown TTA mode {mode!r}; accepted: {list(MODES)}.")
    images = tf.convert_to_tensor(images, tf.float32)
    if images.shape.rank != 4:
        raise ValueError(f"images must be a batch [B, H, W, C], got shape {images.shape}.")
    if mode == "none":
        return [images]
    if mode == "flip":
        return [images, tf.reverse(images, axis=[2])]
    height, width = int(images.shape[1]), int(images.shape[2])
    if crop_size is None:
        crop_h, crop_w = round(CROP_FRACTION * height), round(CROP_FRACTION * width)
    elif isinstance(crop_size, int):
        crop_h = crop_w = crop_size
    else:
        crop_h, crop_w = (int(v) for v in crop_size)
    if not (0 < crop_h <= height and 0 < crop_w <= width):
        raise ValueError(f"crop_size {(crop_h, crop_w)} must fit in the images {(height, width)}.")
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    corners = [
        (0, 0),
        (0, width - crop_w),
        (height - crop_h, 0),
        (height - crop_h, width - crop_w),
        (top, left),
    ]
    crops = [images[:, y : y + crop_h, x : x + crop_w] for y, x in corners]
    crops += [tf.reverse(c, axis=[2]) for c in crops]
    if output_size is not None and tuple(output_size) != (crop_h, crop_w):
        crops = [tf.image.resize(c, tuple(output_size), method="bilinear") for c in crops]
    return crops


def predict(
    model: Any,
    images: Any,
    *,
    mode: str = "flip",
    crop_size: Sequence[int] | int | None = None,
    batch_size: int = 256,
    from_logits: bool = True,
) -> np.ndarray:
    """Class probabilities averaged over TTA views.

    Args:
        model: A Keras model (or any callable ``model(x, training=False)``) mapping
            ``[B, h, w, C]`` to ``[B, classes]``.
        images: Normalised images ``[N, H, W, C]`` (array or tensor). For ``10crop`` they
            should be larger than the model's input (e.g. 256 for 224, prepared with
            ``crop_fraction=1.0``), not already centre-cropped to it; see the module docstring.
        mode: ``none``, ``flip`` or ``10crop``.
        crop_size: ``10crop`` crop size; default the model's fixed input size when smaller
            than the images, else 87.5% of the image side.
        batch_size: Images per model call.
        from_logits: The model outputs logits (the zoo's default): softmax each view first.

    Returns:
        float32 ``[N, classes]`` averaged probabilities.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}.")
    images = tf.convert_to_tensor(images, tf.float32)
    model_size = _model_size(model)
    if (
        mode == "10crop"
        and crop_size is None
        and model_size is not None
        and model_size[0] < images.shape[1]
        and model_size[1] < images.shape[2]
    ):
        crop_size = model_size
    all_views = views(images, mode, crop_size, output_size=model_size)
    total = None
    for view in all_views:
        outputs = []
        for start in range(0, int(view.shape[0]), batch_size):
            out = model(view[start : start + batch_size], training=False)
            out = keras.ops.convert_to_numpy(out).astype(np.float32)
            outputs.append(out)
        scores = np.concatenate(outputs)
        if from_logits:
            scores = tf.nn.softmax(scores, axis=-1).numpy()
        total = scores if total is None else total + scores
    return total / len(all_views)


def evaluate(
    model: Any,
    dataset: tf.data.Dataset,
    *,
    mode: str = "flip",
    crop_size: Sequence[int] | int | None = None,
    from_logits: bool = True,
) -> dict[str, float]:
    """Top-1 accuracy with TTA over a dataset of ``(images, labels)`` batches.

    Labels may be integer ``[B]`` or one-hot ``[B, classes]``.

    Returns:
        ``{"accuracy": ..., "num_examples": ...}``.
    """
    correct = 0
    count = 0
    for images, labels in dataset:
        probs = predict(model, images, mode=mode, crop_size=crop_size, from_logits=from_logits)
        labels = labels.numpy()
        if labels.ndim == 2:
            labels = labels.argmax(axis=-1)
        correct += int((probs.argmax(axis=-1) == labels).sum())
        count += len(labels)
    if count == 0:
        raise ValueError("The dataset is empty.")
    return {"accuracy": correct / count, "num_examples": float(count)}
