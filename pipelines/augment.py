"""Vectorised, seeded data augmentation on image batches.

Every op takes a batch ``[B, H, W, 3]`` float32 and a ``seed`` (shape ``[2]`` integer tensor,
as for ``tf.random.stateless_*``), draws its randomness per example from that seed alone and
runs inside a graph (``tf.data`` map or ``tf.function``). The same seed gives the same output.

Pixel-space ops (crops, flip, colour jitter, PCA lighting) work on values in ``[0, 1]``;
random erasing works after normalisation (a zero fill then means the dataset mean colour);
mixup and cutmix also mix one-hot labels.

Presets (``PRESETS``):

* ``none``: nothing (resize only when the image size differs).
* ``cifar``: 4-pixel-per-32 zero-padded random crop and horizontal flip (He et al. 2016).
* ``imagenet``: Inception-style random resized crop (scale 0.08-1, aspect 3/4-4/3), flip,
  colour jitter 0.4/0.4/0.4 and AlexNet PCA lighting (std 0.1).
* ``strong``: random resized crop (scale 0.25-1), flip, colour jitter 0.4/0.4/0.4/0.1, PCA
  lighting 0.1, random erasing (p 0.25), and mixup (alpha 0.2) or cutmix (alpha 1.0), one of
  the two per example.

``auto`` is not a preset: ``pipelines.resolve_augment`` turns it into one of the above for a
dataset and image size before a pipeline is built.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal

import tensorflow as tf

from pipelines.resize import resize_and_center_crop

CropMode = Literal["none", "pad", "resized"]
CROP_MODES = ("none", "pad", "resized")
ERASING_FILLS = ("random", "zero")

# Op identifiers folded into the batch seed so that every op draws independent numbers.
_OP_CROP, _OP_FLIP, _OP_JITTER, _OP_LIGHT, _OP_ERASE, _OP_MIX = range(1, 7)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run, and how strongly. All off by default.

    Attributes:
        crop: ``"none"``, ``"pad"`` (zero-pad then random crop back to size, CIFAR-style) or
            ``"resized"`` (random resized crop, Inception-style).
        pad_fraction: Padding per side for ``crop="pad"``, as a fraction of the image side
            (0.125 = 4 pixels at 32).
        scale: Area range of the random resized crop, as a fraction of the image area.
        ratio: Aspect-ratio (width / height) range of the random resized crop.
        flip: Random horizontal flip with probability 0.5.
        brightness: Brightness factor drawn from ``[1 - b, 1 + b]``.
        contrast: Contrast factor drawn from ``[1 - c, 1 + c]`` (blend with the mean grey).
        saturation: Saturation factor drawn from ``[1 - s, 1 + s]`` (blend with grey).
        hue: Hue shift drawn from ``[-h, h]`` turns of the colour wheel (at most 0.5).
        lighting: Standard deviation of AlexNet PCA lighting noise (0 = off).
        erasing: Probability of random erasing per example (0 = off).
        erasing_scale: Area range of the erased rectangle, as a fraction of the image.
        erasing_ratio: Aspect-ratio range of the erased rectangle.
        erasing_fill: ``"random"`` (standard-normal noise after normalisation) or ``"zero"``
            (the mean colour; with a fixed scale and ratio 1 this is Cutout).
        mixup: Beta(alpha, alpha) parameter of mixup (0 = off).
        cutmix: Beta(alpha, alpha) parameter of cutmix (0 = off). With both on, each example
            uses one of the two with probability 0.5.
        mix_probability: Probability that an example is mixed at all (mixup/cutmix).
    """

    crop: CropMode = "none"
    pad_fraction: float = 0.125
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    lighting: float = 0.0
    erasing: float = 0.0
    erasing_scale: tuple[float, float] = (0.02, 1 / 3)
    erasing_ratio: tuple[float, float] = (0.3, 1 / 0.3)
    erasing_fill: Literal["random", "zero"] = "random"
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_probability: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "flip", _to_bool("flip", self.flip))
        for name in _FLOAT_FIELDS:
            object.__setattr__(self, name, _to_float(name, getattr(self, name)))
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop={self.crop!r} is not one of {list(CROP_MODES)}.")
        if self.erasing_fill not in ERASING_FILLS:
            raise ValueError(
                f"erasing_fill={self.erasing_fill!r} is not one of {list(ERASING_FILLS)}."
            )
        for name in ("scale", "ratio", "erasing_scale", "erasing_ratio"):
            lo, hi = _pair(name, getattr(self, name))
            object.__setattr__(self, name, (lo, hi))
            if not 0 < lo <= hi or (name.endswith("scale") and hi > 1):
                limit = "0 < low <= high <= 1" if name.endswith("scale") else "0 < low <= high"
                raise ValueError(f"{name}={(lo, hi)} must satisfy {limit}.")
        bounded = {
            "pad_fraction": (0.0, 1.0),
            "brightness": (0.0, 1.0),
            "contrast": (0.0, 1.0),
            "saturation": (0.0, 1.0),
            "hue": (0.0, 0.5),
            "erasing": (0.0, 1.0),
            "mix_probability": (0.0, 1.0),
        }
        for name, (lo, hi) in bounded.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"{name}={value!r} must be in [{lo}, {hi}].")
        for name in ("lighting", "mixup", "cutmix"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0.")

    @property
    def mixes_labels(self) -> bool:
        """Whether labels become soft one-hot vectors (mixup or cutmix on)."""
        return (self.mixup > 0 or self.cutmix > 0) and self.mix_probability > 0

    @property
    def uses_colour(self) -> bool:
        """Whether any colour op (jitter or lighting) is on."""
        return any((self.brightness, self.contrast, self.saturation, self.hue, self.lighting))


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_FLOAT_FIELDS = (
    "pad_fraction",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "lighting",
    "erasing",
    "mixup",
    "cutmix",
    "mix_probability",
)


def _to_bool(name: str, value: Any) -> bool:
    """A bool, 0/1, or one of the words the spec string accepts (any case)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    elif isinstance(value, (bool, numbers.Integral)) and value in (0, 1):
        return bool(value)
    raise ValueError(
        f"{name}={value!r}: expected true/false (a bool, 0/1, or one of {list(_TRUE + _FALSE)})."
    )


def _to_float(name: str, value: Any) -> float:
    """A finite real number (or its text), not a bool."""
    try:
        if isinstance(value, bool):
            raise TypeError
        out = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: expected a number.") from None
    if not math.isfinite(out):
        raise ValueError(f"{name}={value!r}: expected a finite number.")
    return out


def _pair(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers (low, high), got {value!r}.") from None
    return lo, hi


PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "cifar": AugmentConfig(crop="pad", flip=True),
    "imagenet": AugmentConfig(
        crop="resized", flip=True, brightness=0.4, contrast=0.4, saturation=0.4, lighting=0.1
    ),
    "strong": AugmentConfig(
        crop="resized",
        scale=(0.25, 1.0),
        flip=True,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        lighting=0.1,
        erasing=0.25,
        mixup=0.2,
        cutmix=1.0,
    ),
}


# Not a preset: ``pipelines.resolve_augment`` turns it into one for a given dataset and size.
AUTO = "auto"


def _parse_value(field: dataclasses.Field, text: str) -> Any:
    current = field.default
    if isinstance(current, bool):
        return _to_bool(field.name, text)
    if isinstance(current, tuple):
        parts = text.split(":")
        if len(parts) != 2:
            raise ValueError(f"{field.name}={text!r}: expected LOW:HIGH, e.g. 0.25:1.")
        return tuple(_to_float(field.name, p) for p in parts)
    if isinstance(current, float):
        return _to_float(field.name, text)
    return text.strip()


def get_augment_config(spec: str | AugmentConfig, **overrides: Any) -> AugmentConfig:
    """Resolves a preset name, a ``"preset,key=value,..."`` string or a config.

    Args:
        spec: An ``AugmentConfig``, a preset name (``none``, ``cifar``, ``imagenet``,
            ``strong``), or a preset followed by switches, e.g.
            ``"cifar,mixup=0.2,hue=0.05,scale=0.25:1,flip=false"``. ``auto`` is refused:
            it depends on the data, so ``pipelines.resolve_augment`` resolves it first.
        **overrides: Fields to replace, e.g. ``erasing=0.5``.

    Returns:
        The configuration.

    Raises:
        ValueError: Unknown preset or field, a bad value (lists what is accepted), or an
            unresolved ``auto``.
    """
    fields = {f.name: f for f in dataclasses.fields(AugmentConfig)}
    if isinstance(spec, AugmentConfig):
        config = spec
    elif isinstance(spec, str):
        name, *items = (part.strip() for part in spec.split(","))
        if name == AUTO:
            raise ValueError(
                f"augment {spec!r}: {AUTO!r} picks a preset from the dataset and image size, so "
                "it must be resolved first: pipelines.resolve_augment(spec, data, image_size) "
                "gives the concrete spec."
            )
        if name not in PRESETS:
            raise ValueError(
                f"Unknown augmentation preset {name!r}; accepted: {list(PRESETS)} "
                f"(optionally followed by ,key=value with keys {list(fields)})."
            )
        config = PRESETS[name]
        parsed: dict[str, Any] = {}
        for item in filter(None, items):
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or key not in fields:
                raise ValueError(
                    f"Bad augmentation switch {item!r} in {spec!r}: expected "
                    f"key=value with key one of {list(fields)}."
                )
            try:
                parsed[key] = _parse_value(fields[key], text)
            except ValueError as exc:
                raise ValueError(f"Bad augmentation switch {item!r} in {spec!r}: {exc}") from None
        overrides = {**parsed, **overrides}
    else:
        raise ValueError(
            f"augment must be a preset name or an AugmentConfig, got {spec!r}; "
            f"presets: {list(PRESETS)}."
        )
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"Unknown augmentation option(s) {unknown}; accepted: {list(fields)}.")
    # Text values (e.g. from a command line) are read as in the spec string: flip="false" is
    # False, hue="0.05" is 0.05, scale="0.25:1" is (0.25, 1.0).
    for key, value in overrides.items():
        if isinstance(value, str):
            overrides[key] = _parse_value(fields[key], value)
    return dataclasses.replace(config, **overrides) if overrides else config


# ----------------------------------------------------------------------------- seeds


def fold_seed(seed: tf.Tensor, *data: int | tf.Tensor) -> tf.Tensor:
    """Derives a new ``[2]`` stateless seed from ``seed`` and integers, one after another."""
    seed = tf.convert_to_tensor(seed)
    for d in data:
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(d, tf.int64))
    return seed


def _uniform(seed: tf.Tensor, shape: Any, lo: float = 0.0, hi: float = 1.0) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed=seed, minval=lo, maxval=hi)


def _batch_hw(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    shape = tf.shape(images)
    return shape[0], shape[1], shape[2]


# ----------------------------------------------------------------------------- geometry


def _columns(seed: tf.Tensor, batch: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """``[B, W]`` column indices, reversed for the examples a flip with ``seed`` mirrors."""
    flip = _uniform(seed, [batch]) < 0.5
    cols = tf.range(width)[None, :]
    return tf.where(flip[:, None], width - 1 - cols, cols)


def random_flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Mirrors each image left-right with probability 0.5 (an exact pixel copy)."""
    batch, _, width = _batch_hw(images)
    return tf.gather(images, _columns(seed, batch, width), axis=2, batch_dims=1)


def random_pad_crop(
    images: tf.Tensor, seed: tf.Tensor, pad: int, flip_seed: tf.Tensor | None = None
) -> tf.Tensor:
    """Zero-pads ``pad`` pixels on each side, then crops back to the size at a random offset.

    The crop is an exact pixel copy (integer offsets, no interpolation). With ``flip_seed``
    it also mirrors exactly the images ``random_flip(..., flip_seed)`` would, in the same
    gather (the result equals crop-then-flip, computed faster).
    """
    batch, height, width = _batch_hw(images)
    if pad <= 0:
        return images if flip_seed is None else random_flip(images, flip_seed)
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed=seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = tf.range(width)[None, :] if flip_seed is None else _columns(flip_seed, batch, width)
    cols = offsets[:, 1:] + cols
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    return tf.ensure_shape(out, images.shape)


def sample_crop_boxes(
    seed: tf.Tensor,
    batch: int | tf.Tensor,
    height: int | tf.Tensor,
    width: int | tf.Tensor,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tf.Tensor:
    """Samples Inception-style crop boxes inside a ``height`` x ``width`` image.

    Each example tries ``attempts`` (area, aspect) draws, area uniform in ``scale`` times the
    image area and log-aspect uniform in ``log(ratio)``, and keeps the first that fits; if none
    fits, it falls back to the largest centred box with an aspect ratio inside ``ratio``.

    Returns:
        ``[batch, 4]`` float32 boxes ``(top, left, height, width)`` in pixels, with
        ``0 <= top``, ``top + height <= image height`` (likewise for width) and sides >= 1.
    """
    h_img = tf.cast(height, tf.float32)
    w_img = tf.cast(width, tf.float32)
    area = _uniform(fold_seed(seed, 0), [batch, attempts], scale[0], scale[1]) * h_img * w_img
    log_ratio = _uniform(
        fold_seed(seed, 1), [batch, attempts], math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = tf.exp(log_ratio)
    w = tf.sqrt(area * aspect)
    h = tf.sqrt(area / aspect)
    fits = (w <= w_img) & (h <= h_img)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    any_fit = tf.reduce_any(fits, axis=1)
    w = tf.gather(w, first, batch_dims=1)
    h = tf.gather(h, first, batch_dims=1)
    in_ratio = w_img / h_img
    fallback_w = tf.where(in_ratio > ratio[1], h_img * ratio[1], w_img)
    fallback_h = tf.where(in_ratio < ratio[0], w_img / ratio[0], h_img)
    w = tf.clip_by_value(tf.where(any_fit, w, fallback_w), 1.0, w_img)
    h = tf.clip_by_value(tf.where(any_fit, h, fallback_h), 1.0, h_img)
    fallback = tf.logical_not(any_fit)
    top = tf.where(fallback, (h_img - h) / 2, _uniform(fold_seed(seed, 2), [batch]) * (h_img - h))
    left = tf.where(fallback, (w_img - w) / 2, _uniform(fold_seed(seed, 3), [batch]) * (w_img - w))
    return tf.stack([top, left, h, w], axis=1)


def random_resized_crop(
    images: tf.Tensor,
    seed: tf.Tensor,
    size: Sequence[int],
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """Crops a random box per image (see ``sample_crop_boxes``) and resizes it to ``size``.

    Uses ``tf.image.crop_and_resize`` (bilinear) on the whole batch; a box covering the full
    image at the same size returns the image unchanged.
    """
    batch, height, width = _batch_hw(images)
    boxes = sample_crop_boxes(seed, batch, height, width, scale, ratio)
    top, left, h, w = tf.unstack(boxes, axis=1)
    last_row = tf.maximum(tf.cast(height, tf.float32) - 1.0, 1.0)
    last_col = tf.maximum(tf.cast(width, tf.float32) - 1.0, 1.0)
    normalised = tf.stack(
        [top / last_row, left / last_col, (top + h - 1) / last_row, (left + w - 1) / last_col],
        axis=1,
    )
    out = tf.image.crop_and_resize(images, normalised, tf.range(batch), tuple(size))
    return tf.ensure_shape(out, [images.shape[0], size[0], size[1], images.shape[-1]])


def random_resized_crop_single(
    image: tf.Tensor,
    seed: tf.Tensor,
    size: Sequence[int],
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> tf.Tensor:
    """``random_resized_crop`` for one image of any size, with an antialiased resize.

    Used before batching when images differ in size. Returns uint8 ``[*size, 3]``.
    """
    shape = tf.shape(image)
    box = sample_crop_boxes(seed, 1, shape[0], shape[1], scale, ratio)[0]
    top = tf.cast(tf.floor(box[0]), tf.int32)
    left = tf.cast(tf.floor(box[1]), tf.int32)
    h = tf.clip_by_value(tf.cast(tf.round(box[2]), tf.int32), 1, shape[0] - top)
    w = tf.clip_by_value(tf.cast(tf.round(box[3]), tf.int32), 1, shape[1] - left)
    crop = image[top : top + h, left : left + w]
    out = tf.image.resize(crop, tuple(size), antialias=True)
    out = tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)
    return tf.ensure_shape(out, [size[0], size[1], 3])


# ----------------------------------------------------------------------------- colour

_LUMA = (0.299, 0.587, 0.114)


def _grey(images: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(images * tf.constant(_LUMA, images.dtype), axis=-1, keepdims=True)


def color_jitter(
    images: tf.Tensor,
    seed: tf.Tensor,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    hue: float = 0.0,
) -> tf.Tensor:
    """Random brightness, contrast, saturation and hue, a factor per example, in that order.

    Brightness multiplies; contrast blends with the image's mean grey; saturation blends with
    the per-pixel grey; hue rotates H in HSV. Values are clipped to ``[0, 1]`` after each step.
    """
    batch = tf.shape(images)[0]
    per_image = [batch, 1, 1, 1]

    def factor(k: int, amount: float) -> tf.Tensor:
        return _uniform(fold_seed(seed, k), per_image, max(0.0, 1.0 - amount), 1.0 + amount)

    if brightness > 0:
        images = tf.clip_by_value(images * factor(0, brightness), 0.0, 1.0)
    if contrast > 0:
        mean = tf.reduce_mean(_grey(images), axis=[1, 2, 3], keepdims=True)
        images = tf.clip_by_value((images - mean) * factor(1, contrast) + mean, 0.0, 1.0)
    if saturation > 0:
        grey = _grey(images)
        images = tf.clip_by_value((images - grey) * factor(2, saturation) + grey, 0.0, 1.0)
    if hue > 0:
        shift = _uniform(fold_seed(seed, 3), [batch, 1, 1], -hue, hue)
        hsv = tf.image.rgb_to_hsv(images)
        rotated = tf.math.floormod(hsv[..., 0] + shift, 1.0)
        images = tf.image.hsv_to_rgb(tf.stack([rotated, hsv[..., 1], hsv[..., 2]], axis=-1))
        images = tf.clip_by_value(images, 0.0, 1.0)
    return images


def pca_lighting(
    images: tf.Tensor,
    seed: tf.Tensor,
    std: float,
    eigval: Sequence[float],
    eigvec: Sequence[Sequence[float]],
) -> tf.Tensor:
    """AlexNet lighting noise: adds ``eigvec @ (alpha * eigval)`` to every pixel of an image.

    Args:
        images: ``[B, H, W, 3]`` in ``[0, 1]``.
        seed: Stateless seed.
        std: Standard deviation of ``alpha ~ N(0, std)``, one draw per example and component.
        eigval: Eigenvalues of the training set's RGB covariance (pixels in ``[0, 1]``).
        eigvec: ``[3, 3]`` matrix whose columns are the matching eigenvectors.

    Returns:
        The images with one RGB offset per example (not clipped).
    """
    batch = tf.shape(images)[0]
    alpha = tf.random.stateless_normal([batch, 3], seed=seed, stddev=std)
    weights = alpha * tf.constant(eigval, tf.float32)[None, :]
    offset = tf.matmul(weights, tf.constant(eigvec, tf.float32), transpose_b=True)
    return images + offset[:, None, None, :]


# ----------------------------------------------------------------------------- erasing, mixing


def _box_mask(
    top: tf.Tensor,
    left: tf.Tensor,
    h: tf.Tensor,
    w: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
) -> tf.Tensor:
    """``[B, H, W, 1]`` boolean mask of the pixels whose centres lie inside each box."""
    rows = tf.cast(tf.range(height), tf.float32)[None, :] + 0.5
    cols = tf.cast(tf.range(width), tf.float32)[None, :] + 0.5
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[..., None]


def random_erasing(
    images: tf.Tensor,
    seed: tf.Tensor,
    probability: float,
    scale: Sequence[float] = (0.02, 1 / 3),
    ratio: Sequence[float] = (0.3, 1 / 0.3),
    fill: str = "random",
) -> tf.Tensor:
    """Random erasing (Zhong et al. 2017): blanks one random rectangle per chosen example.

    Apply it after normalisation. ``fill="random"`` writes standard-normal noise, ``"zero"``
    writes 0 (the mean colour).
    """
    if fill not in ERASING_FILLS:
        raise ValueError(f"fill={fill!r} is not one of {list(ERASING_FILLS)}.")
    batch, height, width = _batch_hw(images)
    h_img = tf.cast(height, tf.float32)
    w_img = tf.cast(width, tf.float32)
    chosen = _uniform(fold_seed(seed, 0), [batch]) < probability
    area = _uniform(fold_seed(seed, 1), [batch], scale[0], scale[1]) * h_img * w_img
    aspect = tf.exp(_uniform(fold_seed(seed, 2), [batch], math.log(ratio[0]), math.log(ratio[1])))
    h = tf.minimum(tf.sqrt(area * aspect), h_img)
    w = tf.minimum(tf.sqrt(area / aspect), w_img)
    top = _uniform(fold_seed(seed, 3), [batch]) * (h_img - h)
    left = _uniform(fold_seed(seed, 4), [batch]) * (w_img - w)
    mask = _box_mask(top, left, h, w, height, width) & chosen[:, None, None, None]
    if fill == "random":
        values = tf.random.stateless_normal(tf.shape(images), seed=fold_seed(seed, 5))
    else:
        values = tf.zeros_like(images)
    return tf.where(mask, values, images)


def _beta(seed: tf.Tensor, shape: Any, alpha: float) -> tf.Tensor:
    a = tf.random.stateless_gamma(shape, seed=fold_seed(seed, 0), alpha=alpha)
    b = tf.random.stateless_gamma(shape, seed=fold_seed(seed, 1), alpha=alpha)
    return a / tf.maximum(a + b, 1e-12)


def mix_batch(
    images: tf.Tensor,
    labels: tf.Tensor,
    seed: tf.Tensor,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    probability: float = 1.0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup and/or cutmix against a random partner in the same batch.

    Each example is mixed with probability ``probability``. With both on, it uses cutmix or
    mixup with probability 0.5 each. Mixup weight ``lam ~ Beta(mixup, mixup)``; cutmix pastes
    a box of area ``1 - lam`` (``lam ~ Beta(cutmix, cutmix)``) from the partner, and the label
    weight is the exact share of pixels kept.

    Args:
        images: ``[B, H, W, C]`` float images.
        labels: ``[B, classes]`` float one-hot (or soft) labels.
        seed: Stateless seed.
        mixup: Mixup alpha (0 = off).
        cutmix: Cutmix alpha (0 = off).
        probability: Share of examples that are mixed.

    Returns:
        Mixed images and labels; every label row still sums to 1.
    """
    if mixup <= 0 and cutmix <= 0:
        return images, labels
    batch, height, width = _batch_hw(images)
    labels = tf.cast(labels, tf.float32)
    partner = tf.argsort(_uniform(fold_seed(seed, 0), [batch]))
    other_images = tf.gather(images, partner)
    other_labels = tf.gather(labels, partner)
    mixed = _uniform(fold_seed(seed, 1), [batch]) < probability
    if mixup > 0 and cutmix > 0:
        use_cut = _uniform(fold_seed(seed, 2), [batch]) < 0.5
    else:
        use_cut = tf.fill([batch], cutmix > 0)
    lam = tf.ones([batch])
    out = images
    if mixup > 0:
        lam_mix = _beta(fold_seed(seed, 3), [batch], mixup)
        blend = lam_mix[:, None, None, None] * images + (1 - lam_mix[:, None, None, None]) * (
            other_images
        )
        take = mixed & ~use_cut
        out = tf.where(take[:, None, None, None], blend, out)
        lam = tf.where(take, lam_mix, lam)
    if cutmix > 0:
        lam_cut = _beta(fold_seed(seed, 4), [batch], cutmix)
        h_img = tf.cast(height, tf.float32)
        w_img = tf.cast(width, tf.float32)
        side = tf.sqrt(1.0 - lam_cut)
        centre_y = _uniform(fold_seed(seed, 5), [batch]) * h_img
        centre_x = _uniform(fold_seed(seed, 6), [batch]) * w_img
        top = tf.clip_by_value(centre_y - side * h_img / 2, 0.0, h_img)
        bottom = tf.clip_by_value(centre_y + side * h_img / 2, 0.0, h_img)
        left = tf.clip_by_value(centre_x - side * w_img / 2, 0.0, w_img)
        right = tf.clip_by_value(centre_x + side * w_img / 2, 0.0, w_img)
        box = _box_mask(top, left, bottom - top, right - left, height, width)
        kept = 1.0 - tf.reduce_mean(tf.cast(box, tf.float32), axis=[1, 2, 3])
        take = mixed & use_cut
        out = tf.where(take[:, None, None, None] & box, other_images, out)
        lam = tf.where(take, kept, lam)
    new_labels = lam[:, None] * labels + (1 - lam[:, None]) * other_labels
    return out, new_labels


# ----------------------------------------------------------------------------- the whole batch


def augment_batch(
    images: tf.Tensor,
    labels: tf.Tensor,
    seed: tf.Tensor,
    config: AugmentConfig,
    *,
    image_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int | None = None,
    eigval: Sequence[float] | None = None,
    eigvec: Sequence[Sequence[float]] | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Applies ``config`` to a batch and normalises it.

    Order: crop/resize to ``image_size`` -> flip -> colour jitter -> PCA lighting -> clip to
    ``[0, 1]`` -> ``(x - mean) / std`` -> random erasing -> mixup/cutmix.

    Args:
        images: ``[B, H, W, 3]`` pixels in 0..255 (uint8 or float).
        labels: ``[B]`` integer labels.
        seed: ``[2]`` stateless seed of this batch.
        config: What to apply.
        image_size: Output ``(height, width)``.
        mean: Per-channel mean, pixels scaled to ``[0, 1]``.
        std: Per-channel standard deviation, same units.
        num_classes: Needed when ``config.mixes_labels``.
        eigval: PCA eigenvalues, needed when ``config.lighting > 0``.
        eigvec: PCA eigenvectors as columns, needed when ``config.lighting > 0``.

    Returns:
        float32 ``[B, *image_size, 3]`` images and int64 ``[B]`` labels, or float32
        ``[B, num_classes]`` soft labels when mixup/cutmix is on.
    """
    size = (int(image_size[0]), int(image_size[1]))
    x = tf.cast(images, tf.float32) / 255.0
    if config.crop == "resized":
        x = random_resized_crop(x, fold_seed(seed, _OP_CROP), size, config.scale, config.ratio)
    else:
        x = resize_and_center_crop(x, size, 1.0)
    flip_seed = fold_seed(seed, _OP_FLIP)
    if config.crop == "pad":
        pad = round(config.pad_fraction * min(size))
        x = random_pad_crop(x, fold_seed(seed, _OP_CROP), pad, flip_seed if config.flip else None)
    elif config.flip:
        x = random_flip(x, flip_seed)
    if any((config.brightness, config.contrast, config.saturation, config.hue)):
        x = color_jitter(
            x,
            fold_seed(seed, _OP_JITTER),
            config.brightness,
            config.contrast,
            config.saturation,
            config.hue,
        )
    if config.lighting > 0:
        if eigval is None or eigvec is None:
            raise ValueError("PCA lighting needs eigval and eigvec (see pipelines.compute_stats).")
        x = pca_lighting(x, fold_seed(seed, _OP_LIGHT), config.lighting, eigval, eigvec)
    if config.uses_colour:
        x = tf.clip_by_value(x, 0.0, 1.0)
    x = (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
    if config.erasing > 0:
        x = random_erasing(
            x,
            fold_seed(seed, _OP_ERASE),
            config.erasing,
            config.erasing_scale,
            config.erasing_ratio,
            config.erasing_fill,
        )
    labels = tf.cast(labels, tf.int64)
    if config.mixes_labels:
        if not num_classes:
            raise ValueError("mixup/cutmix needs num_classes to build one-hot labels.")
        onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
        x, onehot = mix_batch(
            x,
            onehot,
            fold_seed(seed, _OP_MIX),
            config.mixup,
            config.cutmix,
            config.mix_probability,
        )
        return x, onehot
    return x, labels
