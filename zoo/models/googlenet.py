"""GoogLeNet / Inception v1 (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015,
arXiv:1409.4842).

- ``googlenet``: the network of Table 1 and Figure 3. Convolutions have biases and ReLU, with
  no batch normalisation; local response normalisation follows the first max-pool and the
  second convolution (same constants as AlexNet's). Every Inception module has four branches:
  1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 5x5; 3x3 max-pool -> 1x1 projection, concatenated.
  Max-pools are 3x3 stride 2 with TensorFlow's 'same' padding, 224 -> 112 -> 56 -> 28 -> 14 -> 7
  (on these even sizes the same windows as the reference Caffe model's ceil-mode pools), then
  global average pooling, dropout 0.4 and the linear classifier.
  ``aux_logits=True`` adds the two auxiliary classifiers used in training (after 4a and 4d:
  5x5 stride 3 average pool, 1x1 conv 128, FC-1024, dropout 0.7, linear); the model then outputs
  ``[main, aux1, aux2]`` and the paper weights the auxiliary losses by 0.3.
- ``googlenet_bn``: the same widths with conv -> batch norm -> ReLU (no biases) and no LRN.

Small inputs (``small_inputs=True``, default for inputs of at most 64 pixels): conv1 is 3x3
stride 1 and the two stem max-pools are dropped, so a 32x32 image enters Inception 3a at 32x32
and reaches 5b at 8x8 (the usual CIFAR GoogLeNet layout); the auxiliary heads still see 4x4.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import keras
from keras import layers

from zoo.layers import (
    Downsample,
    LocalResponseNormalization,
    check_input_size,
    check_rate,
    classifier,
    conv_bn_act,
    dense_act,
    feature_output,
    max_pool,
    scale_channels,
    use_small_form,
)
from zoo.registry import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, Recipe, register_model

PAPER = "Szegedy et al., Going Deeper with Convolutions, CVPR 2015 (arXiv:1409.4842)"


class Inception(NamedTuple):
    """One row of Table 1: the widths of an Inception module's branches."""

    name: str
    b1x1: int
    b3x3_reduce: int
    b3x3: int
    b5x5_reduce: int
    b5x5: int
    pool_proj: int


POOL = "pool"
# Table 1, in order; POOL is a 3x3 stride-2 max-pool between groups.
# fmt: off
TABLE1: tuple[Inception | str, ...] = (
    Inception("3a", 64, 96, 128, 16, 32, 32),
    Inception("3b", 128, 128, 192, 32, 96, 64),
    POOL,
    Inception("4a", 192, 96, 208, 16, 48, 64),
    Inception("4b", 160, 112, 224, 24, 64, 64),
    Inception("4c", 128, 128, 256, 24, 64, 64),
    Inception("4d", 112, 144, 288, 32, 64, 64),
    Inception("4e", 256, 160, 320, 32, 128, 128),
    POOL,
    Inception("5a", 256, 160, 320, 32, 128, 128),
    Inception("5b", 384, 192, 384, 48, 128, 128),
)
# fmt: on
AUX_AFTER = ("4a", "4d")
DROPOUT = 0.4
AUX_DROPOUT = 0.7


def inception_module(
    x: keras.KerasTensor, spec: Inception, *, width: float, batch_norm: bool, name: str
) -> keras.KerasTensor:
    """Four parallel branches concatenated on channels (Figure 2b)."""
    conv = partial(conv_bn_act, batch_norm=batch_norm)

    def ch(c: int) -> int:
        return scale_channels(c, width)

    b1 = conv(x, ch(spec.b1x1), 1, name=f"{name}_1x1")
    b3 = conv(x, ch(spec.b3x3_reduce), 1, name=f"{name}_3x3_reduce")
    b3 = conv(b3, ch(spec.b3x3), 3, name=f"{name}_3x3")
    b5 = conv(x, ch(spec.b5x5_reduce), 1, name=f"{name}_5x5_reduce")
    b5 = conv(b5, ch(spec.b5x5), 5, name=f"{name}_5x5")
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = conv(bp, ch(spec.pool_proj), 1, name=f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_output")([b1, b3, b5, bp])


def aux_classifier(
    x: keras.KerasTensor,
    classes: int,
    activation: str | None,
    *,
    width: float,
    batch_norm: bool,
    name: str,
) -> keras.KerasTensor:
    """Auxiliary training head: 5x5/3 average pool, 1x1 conv 128, FC-1024, dropout 0.7."""
    x = layers.AveragePooling2D(5, strides=3, name=f"{name}_avg_pool")(x)
    x = conv_bn_act(x, scale_channels(128, width), 1, batch_norm=batch_norm, name=f"{name}")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = dense_act(x, scale_channels(1024, width), dropout=AUX_DROPOUT, name=f"{name}_fc")
    return classifier(x, classes, activation, name=f"{name}_predictions")


def build_googlenet(
    *,
    batch_norm: bool,
    input_shape: tuple[int, int, int],
    classes: int,
    include_top: bool,
    pooling: str | None,
    classifier_activation: str | None,
    width: float,
    small_inputs: bool | None = None,
    aux_logits: bool = False,
    dropout: float = DROPOUT,
    name: str,
) -> keras.Model:
    """Build GoogLeNet (see the module docstring for the options)."""
    if aux_logits and not include_top:
        raise ValueError(f"{name}: aux_logits=True needs include_top=True.")
    check_rate(name, "dropout", dropout)
    small = use_small_form(input_shape, small_inputs)
    stem = [] if small else [Downsample(7, 2, "valid", 3)] + [Downsample(3, 2, "same")] * 2
    pool = Downsample(3, 2, "same")
    hint = "Use a larger input" + ("" if small else " or small_inputs=True") + "."
    plans = [stem + [pool] * TABLE1.count(POOL)]
    if aux_logits:  # the auxiliary heads' 5x5 average pool needs a 5x5 map after 4a and 4d
        plans.append([*stem, pool, Downsample(5, 3, "valid")])
    check_input_size(name, input_shape, *plans, hint=hint)

    conv = partial(conv_bn_act, batch_norm=batch_norm)
    lrn = not batch_norm
    inputs = keras.Input(input_shape, name="images")
    if small:
        x = conv(inputs, scale_channels(64, width), 3, name="conv1")
    else:
        x = conv(inputs, scale_channels(64, width), 7, strides=2, padding=3, name="conv1")
        x = max_pool(x, 3, 2, padding="same", name="pool1")
    if lrn:
        x = LocalResponseNormalization(name="norm1")(x)
    x = conv(x, scale_channels(64, width), 1, name="conv2_reduce")
    x = conv(x, scale_channels(192, width), 3, name="conv2")
    if lrn:
        x = LocalResponseNormalization(name="norm2")(x)
    if not small:
        x = max_pool(x, 3, 2, padding="same", name="pool2")

    aux_outputs = []
    stage = 3
    for row in TABLE1:
        if row == POOL:
            x = max_pool(x, 3, 2, padding="same", name=f"pool{stage}")
            stage += 1
            continue
        x = inception_module(
            x, row, width=width, batch_norm=batch_norm, name=f"inception_{row.name}"
        )
        if aux_logits and row.name in AUX_AFTER:
            aux_outputs.append(
                aux_classifier(
                    x,
                    classes,
                    classifier_activation,
                    width=width,
                    batch_norm=batch_norm,
                    name=f"aux{len(aux_outputs) + 1}",
                )
            )

    if not include_top:
        return keras.Model(inputs, feature_output(x, pooling), name=name)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = classifier(x, classes, classifier_activation)
    return keras.Model(inputs, [x, *aux_outputs] if aux_logits else x, name=name)


# GoogLeNet without batch norm (LRN, 22 layers) sits at a loss of ln(classes) with SGD: on digits
# at width 0.25 it reached 0.208 test accuracy at 0.1, 0.394 at 0.01 and 0.172 at 0.01 with batch
# 32. Adam escapes the plateau: 0.878 at 1e-3 with batch 128, 0.964 with batch 32.
# The plateau is of the initial network: its pooled features barely differ between images (on
# digits their spread is 6-10% of their mean, the logits' 0.001-0.005), so the loss stays at
# ln(classes) until the features separate. The range test is flat at every rate. Adam at 1e-3,
# batch 32 took four epochs (training loss 2.303, 2.282, 2.302, 2.240, seed 0; loss_not_falling
# and chance_accuracy fired). More, smaller steps shorten it; higher rates stall (batch 16 at
# 1e-3, batch 8 at 5e-4: 2.30 for 3-4 epochs). Batch 16 at 4e-4: 2.302, 2.219, 1.864, 1.443
# (seed 0) and 2.305, 2.285, 1.994, 1.576 (seed 1), test accuracy 0.986 and 0.967 (AMD EPYC,
# 2 cores, at about half batch 32's images per second).
PLAIN_RECIPE = Recipe(
    optimizer="adam",
    learning_rate=4e-4,
    weight_decay=0.0,
    batch_size=16,
    note="Adam 4e-4, batch 16: SGD leaves the plain network at ln(classes) on small sets; Adam "
    "1e-3 with batch 32 stayed there for four digit epochs, batch 16 at 4e-4 for two",
)
BN_RECIPE = Recipe(note="the zoo's default: batch norm takes SGD at 0.1")


def _register() -> None:
    for name, batch_norm, params in (
        ("googlenet", False, 6_998_552),
        ("googlenet_bn", True, 7_005_832),
    ):
        register_model(
            ModelInfo(
                name=name,
                family="googlenet",
                description="GoogLeNet (Inception v1): 9 Inception modules, 1x1 bottlenecks, "
                + ("batch norm, no LRN" if batch_norm else "biases and LRN, no batch norm"),
                paper=PAPER,
                input_shape=(224, 224, 3),
                classes=1000,
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
                num_params=params,
                params_source="no exact count is published; this implementation's, with Table 1's "
                "widths (checked in the tests)",
                # The paper's budget for the plain network. This implementation measures 5.5% more:
                # Table 1's conv1 row (34M) cannot be a 7x7 convolution from 3 channels (118M).
                macs=None if batch_norm else 1.5e9,
                macs_source=""
                if batch_norm
                else "Szegedy et al. 2015, section 5 "
                "('1.5 billion multiply-adds'); docs/models.md: Table 1's conv1 row is off",
                recipe=BN_RECIPE if batch_norm else PLAIN_RECIPE,
            ),
            partial(build_googlenet, batch_norm=batch_norm),
        )


_register()
