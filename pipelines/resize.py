"""Evaluation's resize: the one owner of the centre crop that validation, test, TTA and the
exported serving graph's image-bytes input all use.

`CROP_FRACTION` (0.875) is the usual 224-of-256: an image not already at the input size is
resized, keeping its aspect ratio, so that the input size is the centre 87.5% of its short side,
then centre-cropped (torchvision's and Keras's ImageNet evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

CROP_FRACTION = 0.875


def resize_and_center_crop(
    images: tf.Tensor, size: Sequence[int], crop_fraction: float = 1.0
) -> tf.Tensor:
    """Resizes, keeping the aspect ratio, so the centred crop covers ``crop_fraction``.

    The image (``[H, W, C]`` or ``[B, H, W, C]``) is scaled by
    ``max(size_h / H, size_w / W) / crop_fraction`` (bilinear, antialiased), then the centre
    ``size`` is cut out. An image already of size ``size`` is returned unchanged (as float32).

    Returns:
        float32 images in the input's value range.
    """
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}.")
    images = tf.convert_to_tensor(images)
    target_h, target_w = int(size[0]), int(size[1])
    static = images.shape[-3:-1]
    if static[0] == target_h and static[1] == target_w:
        return tf.cast(images, tf.float32)
    shape = tf.shape(images)
    h = tf.cast(shape[-3], tf.float32)
    w = tf.cast(shape[-2], tf.float32)
    factor = tf.maximum(target_h / h, target_w / w) / crop_fraction
    new_h = tf.maximum(tf.cast(tf.round(h * factor), tf.int32), target_h)
    new_w = tf.maximum(tf.cast(tf.round(w * factor), tf.int32), target_w)

    def crop() -> tf.Tensor:
        resized = tf.image.resize(images, tf.stack([new_h, new_w]), antialias=True)
        top = (new_h - target_h) // 2
        left = (new_w - target_w) // 2
        return resized[..., top : top + target_h, left : left + target_w, :]

    same = tf.logical_and(tf.equal(shape[-3], target_h), tf.equal(shape[-2], target_w))
    out = tf.cond(same, lambda: tf.cast(images, tf.float32), crop)
    return tf.ensure_shape(out, [*images.shape[:-3], target_h, target_w, images.shape[-1]])
