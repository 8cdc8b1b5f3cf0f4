"""``digits``: scikit-learn's 8x8 handwritten digits, shipped with it (no network)."""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from pipelines.sources.base import ImageDataset, register_source

DIGITS_SIZES = {"train": 1257, "validation": 180, "test": 360}


@functools.lru_cache(maxsize=4)
def _digits_arrays(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.float32)  # 0..16 -> 0..255
    resized = tf.image.resize(images[..., None], (image_size, image_size), method="bilinear")
    resized = tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
    rgb = np.repeat(resized.numpy(), 3, axis=-1)
    return rgb, bunch.target.astype(np.int64)


@register_source("digits", "digits")
def load_digits(*, split_seed: int = 0, image_size: int = 32) -> ImageDataset:
    """scikit-learn's handwritten digits as RGB images.

    The 1,797 8x8 images (values 0..16) are scaled to 0..255, resized to
    ``image_size`` x ``image_size`` with bilinear interpolation and replicated to 3 channels.
    The split is stratified by class (``sklearn.model_selection.train_test_split`` with
    ``random_state=split_seed``): 360 test, 180 validation, 1,257 train.

    Args:
        split_seed: Seed of the stratified split.
        image_size: Side of the square output images (8 keeps the originals).

    Returns:
        The dataset; images are bright strokes on a black background.
    """
    from sklearn.model_selection import train_test_split

    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}.")
    images, labels = _digits_arrays(image_size)
    index = np.arange(len(labels))
    rest, test = train_test_split(
        index, test_size=DIGITS_SIZES["test"], stratify=labels, random_state=split_seed
    )
    train, val = train_test_split(
        rest, test_size=DIGITS_SIZES["validation"], stratify=labels[rest], random_state=split_seed
    )
    parts = {"train": np.sort(train), "validation": np.sort(val), "test": np.sort(test)}
    splits = {
        name: tf.data.Dataset.from_tensor_slices((images[idx], labels[idx]))
        for name, idx in parts.items()
    }
    return ImageDataset(
        name="digits",
        class_names=tuple(str(d) for d in range(10)),
        splits=splits,
        num_examples={name: len(idx) for name, idx in parts.items()},
        image_shape=(image_size, image_size, 3),
        mirror_invariant=False,  # a mirrored digit is not a digit
    )
