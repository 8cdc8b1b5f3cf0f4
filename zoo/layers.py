"""Building blocks shared by the families.

Blocks are plain functions ``block(x, ..., *, name) -> x``. Every convolution is named
``{prefix}_conv`` with its ``{prefix}_bn`` and ``{prefix}_relu``, so feature extraction, head swaps,
weight conversion and exported graphs all read the same way across families.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import keras
from keras import layers, ops

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
KERNEL_INIT = "he_normal"
CLASSIFIER_INIT_STDDEV = 0.01
SMALL_INPUT_MAX = 64
"""Default: an input whose shorter side is at most this many pixels uses a family's small form."""


def scale_channels(channels: int, width: float, divisor: int = 1) -> int:
    """``channels * width`` rounded to a multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, round(channels * width / divisor) * divisor)


def use_small_form(input_shape: Sequence[int], small_inputs: bool | None) -> bool:
    """Resolve a family's ``small_inputs`` option: explicit, or from the input's shorter side."""
    if small_inputs is None:
        return min(input_shape[0], input_shape[1]) <= SMALL_INPUT_MAX
    return bool(small_inputs)


def conv_bn_act(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: str | int = "same",
    groups: int = 1,
    batch_norm: bool = True,
    use_bias: bool | None = None,
    activation: bool = True,
    gamma_zero: bool = False,
    name: str,
) -> keras.KerasTensor:
    """Convolution, optional batch normalisation, optional ReLU.

    ``padding`` is ``"same"``, ``"valid"`` or a number of pixels of symmetric zero padding
    (``{name}_pad``) before a 'valid' convolution, as the papers' strided stems use.
    ``use_bias`` defaults to ``not batch_norm`` (a bias before BN is redundant).
    ``gamma_zero`` starts the BN scale at zero (the last BN of a residual branch).
    """
    if isinstance(padding, int):
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
        padding = "valid"
    conv = GroupedConv2D if groups > 1 else layers.Conv2D
    x = conv(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        groups=groups,
        use_bias=(not batch_norm) if use_bias is None else use_bias,
        kernel_initializer=KERNEL_INIT,
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(
            epsilon=BN_EPSILON,
            momentum=BN_MOMENTUM,
            gamma_initializer="zeros" if gamma_zero else "ones",
            name=f"{name}_bn",
        )(x)
    if activation:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def dense_act(x: keras.KerasTensor, units: int, *, dropout: float, name: str) -> keras.KerasTensor:
    """Hidden fully connected layer with ReLU and dropout (``{name}``, ``{name}_relu``, ...)."""
    x = layers.Dense(units, kernel_initializer=KERNEL_INIT, name=name)(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def classifier(
    x: keras.KerasTensor, classes: int, activation: str | None, *, name: str = "predictions"
) -> keras.KerasTensor:
    """Final Dense layer, computed in float32 whatever the global dtype policy.

    Its weights start small (N(0, 0.01), as VGG and GoogLeNet initialised theirs) so that an
    untrained model predicts nearly uniformly: the initial loss is about ln(classes).
    """
    return layers.Dense(
        classes,
        activation=activation,
        kernel_initializer=keras.initializers.RandomNormal(stddev=CLASSIFIER_INIT_STDDEV),
        dtype="float32",
        name=name,
    )(x)


def feature_output(x: keras.KerasTensor, pooling: str | None) -> keras.KerasTensor:
    """A feature extractor's output: ``None`` keeps the map, ``"avg"``/``"max"`` pool it
    globally. The result is float32 (``features``) whatever the global dtype policy."""
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return layers.Activation("linear", dtype="float32", name="features")(x)


def check_rate(model: str, option: str, rate: float) -> None:
    """Raise ``ValueError`` unless ``rate`` is a dropout rate in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"{model}: {option} must be a number in [0, 1), got {rate!r}.")


def max_pool(
    x: keras.KerasTensor, pool_size: int, strides: int, *, padding: str | int, name: str
) -> keras.KerasTensor:
    """Max-pooling; an integer ``padding`` zero-pads symmetrically first (``{name}_pad``).

    TensorFlow's 'same' puts the extra row at the bottom for strided ops; explicit symmetric
    padding matches the reference implementations. Zero padding equals -inf padding here because
    pooled inputs follow a ReLU.
    """
    if isinstance(padding, int):
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
        padding = "valid"
    return layers.MaxPooling2D(pool_size, strides=strides, padding=padding, name=name)(x)


@keras.saving.register_keras_serializable(package="zoo")
class GroupedConv2D(layers.Conv2D):
    """``Conv2D`` with ``groups > 1`` computed as split, convolve, concatenate.

    The same configuration and kernel shape as ``Conv2D(groups=...)``, so weights are
    interchangeable. Keras runs grouped convolutions on a TensorFlow CPU through a nested
    XLA-compiled function, which SavedModel keeps as an opaque call and ONNX cannot convert;
    explicit groups (AlexNet's two-GPU split, literally) export everywhere.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        group_inputs = ops.split(inputs, self.groups, axis=-1)
        group_kernels = ops.split(kernel, self.groups, axis=-1)
        outputs = [
            ops.conv(
                x,
                k,
                strides=list(self.strides),
                padding=self.padding,
                dilation_rate=self.dilation_rate,
                data_format=self.data_format,
            )
            for x, k in zip(group_inputs, group_kernels, strict=True)
        ]
        return ops.concatenate(outputs, axis=-1)


@keras.saving.register_keras_serializable(package="zoo")
class LocalResponseNormalization(layers.Layer):
    """Cross-channel local response normalisation (Krizhevsky et al. 2012, section 3.3).

    ``b_c = a_c / (k + alpha * sum_{|j - c| <= n // 2} a_j^2) ** beta`` with the paper's
    ``k=2, n=5, alpha=1e-4, beta=0.75``. Note that ``alpha`` multiplies the sum itself, as in the
    paper (Caffe and PyTorch divide it by ``n``). Computed in float32 under mixed precision, since
    squares of activations overflow float16.
    """

    def __init__(
        self,
        size: int = 5,
        bias: float = 2.0,
        alpha: float = 1e-4,
        beta: float = 0.75,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LRN size must be a positive odd integer, got {size}.")
        self.size, self.bias, self.alpha, self.beta = size, bias, alpha, beta

    def call(self, x):
        squares = ops.square(ops.cast(x, "float32"))
        half = self.size // 2
        squares = ops.pad(squares, [[0, 0], [0, 0], [0, 0], [half, half]])
        channels = x.shape[-1]
        total = squares[..., 0:channels]
        for i in range(1, self.size):
            total = total + squares[..., i : i + channels]
        scale = ops.power(self.bias + self.alpha * total, -self.beta)
        return ops.cast(ops.cast(x, "float32") * scale, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "size": self.size,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }


@keras.saving.register_keras_serializable(package="zoo")
class ZeroPadShortcut(layers.Layer):
    """Parameter-free shortcut (He et al. 2016, option A): subsample, then zero-pad channels.

    Takes every ``strides``-th pixel and pads the channel axis with zeros, split evenly on both
    sides, up to ``channels``.
    """

    def __init__(self, channels: int, strides: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.channels, self.strides = channels, strides

    def call(self, x):
        if self.strides > 1:
            x = x[:, :: self.strides, :: self.strides, :]
        extra = self.channels - x.shape[-1]
        if extra:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])
        return x

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        s = self.strides
        if c is not None and c > self.channels:
            raise ValueError(f"ZeroPadShortcut cannot shrink {c} channels to {self.channels}.")
        return (
            n,
            None if h is None else -(-h // s),
            None if w is None else -(-w // s),
            self.channels,
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "strides": self.strides}


class Downsample(NamedTuple):
    """One spatial reduction on a model's main path, for checking input sizes up front."""

    kernel: int
    stride: int
    padding: str  # "same" or "valid" (after any explicit symmetric padding below)
    pad: int = 0


def _feature_size(size: int, plan: Sequence[Downsample]) -> int | None:
    """Spatial size after ``plan``, or None if some step has nothing to reduce."""
    for step in plan:
        size += 2 * step.pad
        if step.padding == "valid":
            if size < step.kernel:
                return None
            size = (size - step.kernel) // step.stride + 1
        else:
            if size < step.stride:
                return None
            size = math.ceil(size / step.stride)
    return size


def check_input_size(
    model: str, input_shape: Sequence[int], *plans: Sequence[Downsample], hint: str = ""
) -> None:
    """Raise ``ValueError`` if the input is too small for the model's downsampling.

    ``plans`` are the paths that must all fit (the main path first, then e.g. auxiliary heads).
    An input is accepted when every pooling window fits and every strided step has at least
    ``stride`` pixels to reduce, so the last feature map is real, not padding.
    """

    def fits(size: int) -> bool:
        return all(_feature_size(size, plan) is not None for plan in plans)

    height, width = input_shape[0], input_shape[1]
    if fits(height) and fits(width):
        return
    smallest = next(n for n in range(1, 4096) if fits(n))
    factor = math.prod(step.stride for step in plans[0])
    raise ValueError(
        f"{model}: input {height}x{width} is too small: the network downsamples by {factor} and "
        f"needs at least {smallest}x{smallest}.{(' ' + hint) if hint else ''}"
    )
