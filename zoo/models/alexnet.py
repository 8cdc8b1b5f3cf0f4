"""AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NeurIPS 2012).

The network of the paper's Figure 2, with its two-GPU split kept as two-group convolutions where
the halves did not communicate (conv2, conv4, conv5):

======  =====================================================  ==================
layer   operation                                              output at 224x224
======  =====================================================  ==================
conv1   96 11x11 stride 4 (2-pixel zero padding), ReLU, LRN    55x55x96
pool1   3x3 stride 2 max-pool (overlapping)                    27x27x96
conv2   256 5x5, 2 groups, ReLU, LRN                           27x27x256
pool2   3x3 stride 2 max-pool                                  13x13x256
conv3   384 3x3, ReLU                                          13x13x384
conv4   384 3x3, 2 groups, ReLU                                13x13x384
conv5   256 3x3, 2 groups, ReLU                                13x13x256
pool5   3x3 stride 2 max-pool                                  6x6x256
fc6/7   4096, ReLU, dropout 0.5                                4096
======  =====================================================  ==================

The paper's 224x224 input only gives 55x55 after conv1 with padding (or a 227x227 input); the
2-pixel padding is what torchvision uses. Local response normalisation uses the paper's constants
(k=2, n=5, alpha=1e-4, beta=0.75). 60,965,224 parameters, as in the Caffe reference model.

Small inputs (``small_inputs=True``, default for inputs of at most 64 pixels): conv1 becomes
96 5x5 stride 1, the pools pad ('same') so 32x32 goes 16, 8, 4, and the classifier is FC-1024 x2
(instead of FC-4096 x2) on the 4x4x256 map.
"""

from __future__ import annotations

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
    scale_channels,
    use_small_form,
)
from zoo.registry import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, Recipe, register_model

PAPER = (
    "Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep Convolutional Neural "
    "Networks, NeurIPS 2012"
)
GROUPS = 2
# (name, filters, kernel, groups, LRN after, max-pool after)
CONVS = (
    ("conv1", 96, 11, 1, True, True),
    ("conv2", 256, 5, GROUPS, True, True),
    ("conv3", 384, 3, 1, False, False),
    ("conv4", 384, 3, GROUPS, False, False),
    ("conv5", 256, 3, GROUPS, False, True),
)
HIDDEN_UNITS = 4096
SMALL_HIDDEN_UNITS = 1024
SMALL_CONV1_KERNEL = 5
DROPOUT = 0.5


# The paper's rate (section 5: SGD 0.01, momentum 0.9, weight decay 5e-4). Without batch norm
# AlexNet does not take the zoo's default of 0.1: on digits (width 0.5, 15 epochs) it reached
# 0.894 test accuracy at 0.1 and 0.975 at 0.01 (benchmarks/recipes.py).
RECIPE = Recipe(
    learning_rate=0.01,
    note="the paper's learning rate 0.01; no batch norm, so the default 0.1 is too high",
)


def build_alexnet(
    *,
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
    """Build AlexNet (see the module docstring for the options)."""
    check_rate(name, "dropout", dropout)
    small = use_small_form(input_shape, small_inputs)
    pool_padding = "same" if small else "valid"
    n_pools = sum(pool for *_, pool in CONVS)
    stem = [] if small else [Downsample(11, 4, "valid", 2)]
    check_input_size(
        name,
        input_shape,
        stem + [Downsample(3, 2, pool_padding)] * n_pools,
        hint="" if small else "Use a larger input or small_inputs=True.",
    )

    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for conv, filters, kernel, groups, lrn, pool in CONVS:
        strides, padding = 1, "same"
        if conv == "conv1":
            kernel, strides, padding = (SMALL_CONV1_KERNEL, 1, "same") if small else (kernel, 4, 2)
        x = conv_bn_act(
            x,
            # even everywhere: a grouped convolution splits its input channels too
            scale_channels(filters, width, divisor=GROUPS),
            kernel,
            strides=strides,
            padding=padding,
            groups=groups,
            batch_norm=False,
            name=conv,
        )
        if lrn:
            x = LocalResponseNormalization(name=f"{conv}_lrn")(x)
        if pool:
            x = layers.MaxPooling2D(3, strides=2, padding=pool_padding, name=f"{conv}_pool")(x)

    if not include_top:
        return keras.Model(inputs, feature_output(x, pooling), name=name)
    units = scale_channels(SMALL_HIDDEN_UNITS if small else HIDDEN_UNITS, width)
    x = layers.Flatten(name="flatten")(x)
    x = dense_act(x, units, dropout=dropout, name="fc6")
    x = dense_act(x, units, dropout=dropout, name="fc7")
    x = classifier(x, classes, classifier_activation)
    return keras.Model(inputs, x, name=name)


register_model(
    ModelInfo(
        name="alexnet",
        family="alexnet",
        description="AlexNet: 5 convolutions (2-group conv2/4/5), LRN, FC-4096 x2",
        paper=PAPER,
        input_shape=(224, 224, 3),
        classes=1000,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_params=60_965_224,
        params_source="Caffe bvlc_alexnet reference model (the paper's '60 million')",
        macs=0.724e9,
        macs_source="Sze et al., Efficient Processing of Deep Neural Networks, Proc. IEEE 2017, "
        "Table III (724M MACs)",
        recipe=RECIPE,
    ),
    build_alexnet,
)
