"""VGG (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", ICLR 2015, arXiv:1409.1556).

- ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``: configurations A, B, D and E of Table 1. Five stages
  of 3x3 stride-1 convolutions (64, 128, 256, 512, 512 filters), each followed by 2x2 stride-2
  max-pooling, then FC-4096, FC-4096 (ReLU, dropout 0.5) and the classifier.
- ``vgg11_bn`` ... ``vgg19_bn``: batch normalisation after every convolution. The convolutions keep
  their biases, as in the published (torchvision) models whose parameter counts these match.

Small inputs (``small_inputs=True``, default for inputs of at most 64 pixels): the convolutions are
unchanged (a 32x32 image reaches 1x1 after the fifth pool) and the classifier is the compact
FC-512, FC-512 head (ReLU, dropout 0.5) used for CIFAR, instead of FC-4096 x2 on a flattened map.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import keras
from keras import layers

from zoo.layers import (
    Downsample,
    check_input_size,
    check_rate,
    classifier,
    conv_bn_act,
    dense_act,
    feature_output,
    scale_channels,
    use_small_form,
)
from zoo.registry import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, Recipe, register_model

PAPER = (
    "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, "
    "ICLR 2015 (arXiv:1409.1556)"
)
TORCHVISION = "torchvision.models weights metadata (num_params, GFLOPS)"
STAGE_WIDTHS = (64, 128, 256, 512, 512)
HIDDEN_UNITS = 4096
SMALL_HIDDEN_UNITS = 512
DROPOUT = 0.5


@dataclass(frozen=True)
class VGGSpec:
    config: str  # the paper's column
    depths: tuple[int, int, int, int, int]  # 3x3 convolutions per stage
    num_params: int
    macs: float
    num_params_bn: int
    macs_bn: float


# fmt: off
SPECS: dict[str, VGGSpec] = {
    "vgg11": VGGSpec("A", (1, 1, 2, 2, 2), 132_863_336, 7.61e9, 132_868_840, 7.61e9),
    "vgg13": VGGSpec("B", (2, 2, 2, 2, 2), 133_047_848, 11.31e9, 133_053_736, 11.31e9),
    "vgg16": VGGSpec("D", (2, 2, 3, 3, 3), 138_357_544, 15.47e9, 138_365_992, 15.47e9),
    "vgg19": VGGSpec("E", (2, 2, 4, 4, 4), 143_667_240, 19.63e9, 143_678_248, 19.63e9),
}
# fmt: on


def build_vgg(
    spec: VGGSpec,
    *,
    batch_norm: bool,
    input_shape: tuple[int, int, int],
    classes: int,
    include_top: bool,
    pooling: str | None,
    classifier_activation: str | None,
    width: float,
    small_inputs: bool | None = None,
    dropout: float = DROPOUT,
    name: str,
) -> keras.Model:
    """Build a VGG network from its spec (see the module docstring for the options)."""
    check_rate(name, "dropout", dropout)
    small = use_small_form(input_shape, small_inputs)
    check_input_size(name, input_shape, [Downsample(2, 2, "valid")] * len(spec.depths))

    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for stage, (depth, filters) in enumerate(zip(spec.depths, STAGE_WIDTHS, strict=True), 1):
        for i in range(1, depth + 1):
            x = conv_bn_act(
                x,
                scale_channels(filters, width),
                3,
                batch_norm=batch_norm,
                use_bias=True,
                name=f"block{stage}_{i}",
            )
        x = layers.MaxPooling2D(2, strides=2, name=f"block{stage}_pool")(x)

    if not include_top:
        return keras.Model(inputs, feature_output(x, pooling), name=name)
    units = scale_channels(SMALL_HIDDEN_UNITS if small else HIDDEN_UNITS, width)
    x = layers.Flatten(name="flatten")(x)
    x = dense_act(x, units, dropout=dropout, name="fc1")
    x = dense_act(x, units, dropout=dropout, name="fc2")
    x = classifier(x, classes, classifier_activation)
    return keras.Model(inputs, x, name=name)


# Without batch norm, VGG trains at the paper's rate (section 3.1: SGD 0.01, momentum 0.9,
# weight decay 5e-4) and needs steps: the loss sits near ln(classes) for the first tens of steps
# while the small classifier grows. On digits (vgg16 at width 0.5, 15 epochs of 10 steps at
# batch 128) it stayed at chance at 0.1 (0.125), reached 0.908 at 0.01 and 0.981 at 0.01 with
# batch 32 (40 steps an epoch); Adam (1e-4, 3e-4) did not shorten the plateau (0.842, 0.908).
PLAIN_RECIPE = Recipe(
    learning_rate=0.01,
    batch_size=32,
    note="the paper's learning rate 0.01 (no batch norm); batch 32 for more steps on small sets",
)
# With batch norm the zoo's default recipe trains (vgg11_bn at width 0.5: 0.992 on digits).
BN_RECIPE = Recipe(note="the zoo's default: batch norm takes a learning rate of 0.1")
# vgg19_bn (16 convolutions) does not at 0.1: on digits at width 0.5 (15 epochs of 9 steps; AMD
# EPYC, 2 cores) it ended at 0.681 and 0.533 test accuracy (seeds 0, 1; training accuracy 0.568,
# 0.469; seed 1 fired slow_training). The range test's loss minimum is at 0.11, its steepest
# descent at 0.051, its suggestion 0.011. At 0.05: 0.978, 0.981; at 0.02: 0.983, 0.992 (training
# accuracy 0.985, 0.991); at 0.01: 0.986 (seed 0). 0.02 is the middle of that range.
VGG19_BN_RECIPE = Recipe(
    learning_rate=0.02,
    note="lr 0.02: at the default 0.1 vgg19_bn's 15 digit epochs ended at 0.68 and 0.53 test "
    "accuracy (seeds 0, 1), at 0.02 at 0.983 and 0.992",
)


def _recipe(base: str, batch_norm: bool) -> Recipe:
    """The training recipe of ``base`` (``"vgg16"``) with or without batch norm."""
    if not batch_norm:
        return PLAIN_RECIPE
    return VGG19_BN_RECIPE if base == "vgg19" else BN_RECIPE


def _register() -> None:
    for base, spec in SPECS.items():
        for batch_norm in (False, True):
            register_model(
                ModelInfo(
                    name=f"{base}_bn" if batch_norm else base,
                    family="vgg",
                    description=(
                        f"VGG-{sum(spec.depths) + 3} (configuration {spec.config}), "
                        f"{'with' if batch_norm else 'no'} batch normalisation"
                    ),
                    paper=PAPER,
                    input_shape=(224, 224, 3),
                    classes=1000,
                    mean=IMAGENET_MEAN,
                    std=IMAGENET_STD,
                    num_params=spec.num_params_bn if batch_norm else spec.num_params,
                    params_source=TORCHVISION,
                    macs=spec.macs_bn if batch_norm else spec.macs,
                    macs_source=TORCHVISION,
                    recipe=_recipe(base, batch_norm),
                ),
                partial(build_vgg, spec, batch_norm=batch_norm),
            )


_register()
