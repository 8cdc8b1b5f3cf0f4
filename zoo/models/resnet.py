"""ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385).

- ``resnet18``, ``resnet34``: basic blocks (two 3x3 convolutions), Table 1.
- ``resnet50``, ``resnet101``, ``resnet152``: bottleneck blocks (1x1, 3x3, 1x1 with 4x expansion).
  The stride of a downsampling bottleneck sits on its 3x3 convolution (the "v1.5" placement that
  torchvision and MLPerf use, about 0.5% more accurate); ``stride_in_1x1=True`` puts it on the
  first 1x1 as in the original Caffe release. Parameter counts are identical.
- ``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``, ``resnet110``: the CIFAR networks of
  section 4.2, 6n+2 layers with 16/32/64 filters and parameter-free zero-padded identity
  shortcuts (option A).

Convolutions have no bias and are followed by batch normalisation; projection shortcuts
(1x1 convolution + BN, option B) are used where the shape changes in the ImageNet networks.

Small inputs (``small_inputs=True``, default for inputs of at most 64 pixels): the stem is a single
3x3 stride-1 convolution without the max-pool, so a 32x32 image reaches the last stage at 4x4.
The CIFAR networks are defined that way; the ImageNet ones then match the common CIFAR ResNet-18.
Large inputs use the 7x7 stride-2 convolution and 3x3 stride-2 max-pool stem (with 16 filters for
the CIFAR networks). Strided 3x3 convolutions pad one pixel on every side, as the reference models
do, so each output pixel is centred on the same input pixel as its shortcut.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import keras
from keras import layers

from zoo.layers import (
    Downsample,
    ZeroPadShortcut,
    check_input_size,
    classifier,
    conv_bn_act,
    feature_output,
    max_pool,
    scale_channels,
    use_small_form,
)
from zoo.registry import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelInfo,
    Recipe,
    register_model,
)

PAPER = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016 (arXiv:1512.03385)"
TORCHVISION = "torchvision.models weights metadata (num_params, GFLOPS)"


@dataclass(frozen=True)
class ResNetSpec:
    block: str  # "basic" or "bottleneck"
    depths: tuple[int, ...]  # blocks per stage
    widths: tuple[int, ...]  # filters per stage (bottleneck outputs 4x)
    stem_width: int
    shortcut: str  # "projection" (option B) or "zero_pad" (option A)
    num_params: int
    params_source: str
    macs: float | None = None
    macs_source: str = ""


IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)

# fmt: off
SPECS: dict[str, ResNetSpec] = {
    "resnet18":  ResNetSpec("basic", (2, 2, 2, 2), IMAGENET_WIDTHS, 64, "projection",
                            11_689_512, TORCHVISION, 1.81e9, TORCHVISION),
    "resnet34":  ResNetSpec("basic", (3, 4, 6, 3), IMAGENET_WIDTHS, 64, "projection",
                            21_797_672, TORCHVISION, 3.66e9, TORCHVISION),
    "resnet50":  ResNetSpec("bottleneck", (3, 4, 6, 3), IMAGENET_WIDTHS, 64, "projection",
                            25_557_032, TORCHVISION, 4.09e9, TORCHVISION),
    "resnet101": ResNetSpec("bottleneck", (3, 4, 23, 3), IMAGENET_WIDTHS, 64, "projection",
                            44_549_160, TORCHVISION, 7.80e9, TORCHVISION),
    "resnet152": ResNetSpec("bottleneck", (3, 8, 36, 3), IMAGENET_WIDTHS, 64, "projection",
                            60_192_808, TORCHVISION, 11.51e9, TORCHVISION),
    # CIFAR networks, n = 3, 5, 7, 9, 18 blocks per stage. Table 6 gives 0.27M, 0.46M, 0.66M,
    # 0.85M, 1.7M parameters; exactly 97216 * n - 21926 with option-A shortcuts and 10 classes.
    "resnet20":  ResNetSpec("basic", (3, 3, 3), CIFAR_WIDTHS, 16, "zero_pad",
                            269_722, "Table 6 (0.27M)"),
    "resnet32":  ResNetSpec("basic", (5, 5, 5), CIFAR_WIDTHS, 16, "zero_pad",
                            464_154, "Table 6 (0.46M)"),
    "resnet44":  ResNetSpec("basic", (7, 7, 7), CIFAR_WIDTHS, 16, "zero_pad",
                            658_586, "Table 6 (0.66M)"),
    "resnet56":  ResNetSpec("basic", (9, 9, 9), CIFAR_WIDTHS, 16, "zero_pad",
                            853_018, "Table 6 (0.85M)"),
    "resnet110": ResNetSpec("basic", (18, 18, 18), CIFAR_WIDTHS, 16, "zero_pad",
                            1_727_962, "Table 6 (1.7M)"),
}
# fmt: on

EXPANSION = {"basic": 1, "bottleneck": 4}


def basic_block(
    x: keras.KerasTensor,
    filters: int,
    *,
    strides: int,
    shortcut: str,
    zero_init_residual: bool,
    name: str,
) -> keras.KerasTensor:
    """Two 3x3 convolutions and a shortcut: ``relu(x + bn(conv(relu(bn(conv(x))))))``."""
    skip = _shortcut(x, filters, strides=strides, kind=shortcut, name=name)
    y = conv_bn_act(x, filters, 3, strides=strides, padding=_padding(strides), name=f"{name}_1")
    y = conv_bn_act(
        y, filters, 3, activation=False, gamma_zero=zero_init_residual, name=f"{name}_2"
    )
    y = layers.Add(name=f"{name}_add")([skip, y])
    return layers.ReLU(name=f"{name}_out")(y)


def bottleneck_block(
    x: keras.KerasTensor,
    filters: int,
    *,
    strides: int,
    shortcut: str,
    zero_init_residual: bool,
    stride_in_1x1: bool = False,
    name: str,
) -> keras.KerasTensor:
    """1x1 reduce, 3x3, 1x1 expand (x4) and a shortcut."""
    out = filters * EXPANSION["bottleneck"]
    skip = _shortcut(x, out, strides=strides, kind=shortcut, name=name)
    s1, s3 = (strides, 1) if stride_in_1x1 else (1, strides)
    y = conv_bn_act(x, filters, 1, strides=s1, name=f"{name}_1")
    y = conv_bn_act(y, filters, 3, strides=s3, padding=_padding(s3), name=f"{name}_2")
    y = conv_bn_act(y, out, 1, activation=False, gamma_zero=zero_init_residual, name=f"{name}_3")
    y = layers.Add(name=f"{name}_add")([skip, y])
    return layers.ReLU(name=f"{name}_out")(y)


def _padding(strides: int) -> str | int:
    """A strided 3x3 convolution pads one pixel on every side, as the reference models do.

    TensorFlow's 'same' would pad only the bottom and right of an even-sized input, centring
    output pixel i on input pixel 2i + 1 while the shortcut samples pixel 2i.
    """
    return 1 if strides > 1 else "same"


def _shortcut(
    x: keras.KerasTensor, channels: int, *, strides: int, kind: str, name: str
) -> keras.KerasTensor:
    if strides == 1 and x.shape[-1] == channels:
        return x
    if kind == "zero_pad":
        return ZeroPadShortcut(channels, strides, name=f"{name}_0_pad")(x)
    return conv_bn_act(x, channels, 1, strides=strides, activation=False, name=f"{name}_0")


def build_resnet(
    spec: ResNetSpec,
    *,
    input_shape: tuple[int, int, int],
    classes: int,
    include_top: bool,
    pooling: str | None,
    classifier_activation: str | None,
    width: float,
    small_inputs: bool | None = None,
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    name: str,
) -> keras.Model:
    """Build a ResNet from its spec (see the module docstring for the options)."""
    if stride_in_1x1 and spec.block != "bottleneck":
        raise ValueError(
            f"{name}: stride_in_1x1 applies to bottleneck ResNets (resnet50, resnet101, "
            "resnet152); basic blocks have no 1x1 convolution."
        )
    small = use_small_form(input_shape, small_inputs)
    strides = [1] + [2] * (len(spec.depths) - 1)
    stem_plan = [] if small else [Downsample(7, 2, "valid", 3), Downsample(3, 2, "valid", 1)]
    check_input_size(
        name,
        input_shape,
        stem_plan + [Downsample(1, s, "same") for s in strides if s > 1],
        hint="" if small else "Use a larger input or small_inputs=True.",
    )

    inputs = keras.Input(input_shape, name="images")
    stem = scale_channels(spec.stem_width, width)
    if small:
        x = conv_bn_act(inputs, stem, 3, name="conv1")
    else:
        x = conv_bn_act(inputs, stem, 7, strides=2, padding=3, name="conv1")
        x = max_pool(x, 3, 2, padding=1, name="pool1")

    if spec.block == "basic":
        block = basic_block
    else:
        block = partial(bottleneck_block, stride_in_1x1=stride_in_1x1)
    for stage, (depth, filters, stage_stride) in enumerate(
        zip(spec.depths, spec.widths, strides, strict=True), start=2
    ):
        for i in range(1, depth + 1):
            x = block(
                x,
                scale_channels(filters, width),
                strides=stage_stride if i == 1 else 1,
                shortcut=spec.shortcut,
                zero_init_residual=zero_init_residual,
                name=f"conv{stage}_block{i}",
            )

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = classifier(x, classes, classifier_activation)
    else:
        x = feature_output(x, pooling)
    return keras.Model(inputs, x, name=name)


# resnet20 trains with the zoo's default recipe, which was chosen for it (section 4.2's SGD at
# 0.1). Deeper networks are not stable at that rate with few steps: on digits (15 epochs of 10
# steps, batch 128) resnet32 spiked to a loss of 4.1 in epoch 2 (0.947 test accuracy; the paper
# warms ResNet-110 up at 0.01 for the same reason), resnet18 to 2.98 (0.661) and resnet50 at
# width 0.25 to 4.1 (0.253; 0.311 at 0.05). At 0.05 with batch 32 (four times the steps)
# resnet32 reached 0.989 and resnet50 0.994; a three-epoch warm-up at 0.1 gave resnet32 0.950.
DEFAULT_RECIPE = Recipe(note="the zoo's default, chosen for resnet20 (section 4.2's SGD at 0.1)")
DEEP_RECIPE = Recipe(
    learning_rate=0.05,
    batch_size=32,
    note="half the default rate and batch 32 (more, smaller steps): at 0.1 deeper ResNets "
    "spike in the first epochs on small sets",
)


def _register() -> None:
    for model_name, spec in SPECS.items():
        cifar = spec.shortcut == "zero_pad"
        depth = 2 * sum(spec.depths) * (1 if spec.block == "basic" else 1.5) + 2
        register_model(
            ModelInfo(
                name=model_name,
                family="resnet",
                description=(
                    f"ResNet-{int(depth)}: {spec.block} blocks {spec.depths}, "
                    + (
                        "16/32/64 filters, zero-padded identity shortcuts (CIFAR, section 4.2)"
                        if cifar
                        else "projection shortcuts (ImageNet, Table 1)"
                    )
                ),
                paper=PAPER,
                input_shape=(32, 32, 3) if cifar else (224, 224, 3),
                classes=10 if cifar else 1000,
                mean=CIFAR10_MEAN if cifar else IMAGENET_MEAN,
                std=CIFAR10_STD if cifar else IMAGENET_STD,
                num_params=spec.num_params,
                params_source=spec.params_source,
                macs=spec.macs,
                macs_source=spec.macs_source,
                recipe=DEFAULT_RECIPE if model_name == "resnet20" else DEEP_RECIPE,
            ),
            partial(build_resnet, spec),
        )


_register()
