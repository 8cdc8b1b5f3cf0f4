"""Fidelity to the papers at full size: parameters to the parameter, multiply-adds within 3%.

The published figures are written here, independently of the registry's metadata, and both the
built models and the metadata are checked against them. Each model is built once, at its default
input shape (224x224x3, 1000 classes; 32x32x3, 10 classes for the CIFAR ResNets).
"""

from functools import cache

import pytest

import zoo
from zoo.models.resnet import SPECS as RESNET_SPECS
from zoo.summary import ModelStats, count_macs, summarize

# Trainable parameters, exact: torchvision's weights metadata (VGG, ResNet) and the Caffe
# reference AlexNet with the paper's two-group convolutions.
PUBLISHED_PARAMS = {
    "alexnet": 60_965_224,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}
# He et al. 2016, Table 6 (CIFAR-10), in millions, as printed.
TABLE6_MILLIONS = {
    "resnet20": "0.27",
    "resnet32": "0.46",
    "resnet44": "0.66",
    "resnet56": "0.85",
    "resnet110": "1.7",
}
# Multiply-adds per image in G at 224x224: torchvision's GFLOPS column (VGG, ResNet v1.5),
# Sze et al. 2017 Table III (AlexNet, 724M).
PUBLISHED_GMACS = {
    "alexnet": 0.724,
    "vgg11": 7.61,
    "vgg11_bn": 7.61,
    "vgg13": 11.31,
    "vgg13_bn": 11.31,
    "vgg16": 15.47,
    "vgg16_bn": 15.47,
    "vgg19": 19.63,
    "vgg19_bn": 19.63,
    "resnet18": 1.81,
    "resnet34": 3.66,
    "resnet50": 4.09,
    "resnet101": 7.80,
    "resnet152": 11.51,
}
# He et al. 2016, Table 1 FLOPs (multiply-adds) of the original networks, whose downsampling
# bottlenecks stride in the first 1x1 convolution.
PAPER_TABLE1_GMACS = {
    "resnet18": 1.8,
    "resnet34": 3.6,
    "resnet50": 3.8,
    "resnet101": 7.6,
    "resnet152": 11.3,
}
# Szegedy et al. 2015, Table 1: each Inception module's widths (#1x1, #3x3 reduce, #3x3,
# #5x5 reduce, #5x5, pool proj), and per row the params (K = 1024 weights, biases excluded) and
# ops (M multiply-adds). Some printed figures disagree with the printed widths, and the widths
# define the network, so those figures are left out of the comparison:
# - conv1 (2.7K, 34M): a 7x7 convolution from 3 to 64 channels has 9,408 weights (9.2K) and
#   118M multiply-adds at 112x112;
# - 4c params (463K): its widths give 509,440 weights (497.5K), while its ops (100M) match them;
# - 5a (1072K, 54M): its widths, the same as 4e's, give 1,042,432 weights (1018K) and 51M ops.
GOOGLENET_WIDTHS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
GOOGLENET_TABLE1 = {
    "conv2": (112, 360),
    "inception_3a": (159, 128),
    "inception_3b": (380, 304),
    "inception_4a": (364, 73),
    "inception_4b": (437, 88),
    "inception_4c": (None, 100),
    "inception_4d": (580, 119),
    "inception_4e": (840, 170),
    "inception_5a": (None, None),
    "inception_5b": (1388, 71),
    "predictions": (1000, 1),
}
BRANCHES = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")


@cache
def stats(name: str, **overrides) -> ModelStats:
    return summarize(name, **overrides)


@pytest.mark.parametrize("name", zoo.list_models())
def test_trainable_params_match_metadata(name):
    assert stats(name).trainable_params == zoo.model_info(name).num_params


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_trainable_params_match_published(name):
    assert stats(name).trainable_params == PUBLISHED_PARAMS[name]
    assert zoo.model_info(name).num_params == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name", sorted(TABLE6_MILLIONS))
def test_cifar_resnets_match_table6(name):
    printed = TABLE6_MILLIONS[name]
    decimals = len(printed.split(".")[1])
    assert f"{stats(name).trainable_params / 1e6:.{decimals}f}" == printed
    assert zoo.model_info(name).input_shape == (32, 32, 3)
    assert zoo.model_info(name).classes == 10


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_macs_within_3_percent_of_published(name):
    measured = stats(name).macs / 1e9
    assert measured == pytest.approx(PUBLISHED_GMACS[name], rel=0.03)
    assert zoo.model_info(name).macs == pytest.approx(PUBLISHED_GMACS[name] * 1e9)


@pytest.mark.parametrize("name", sorted(PAPER_TABLE1_GMACS))
def test_original_stride_placement_matches_paper_table1(name):
    bottleneck = RESNET_SPECS[name].block == "bottleneck"  # basic blocks have one placement
    original = stats(name, stride_in_1x1=True) if bottleneck else stats(name)
    assert original.macs / 1e9 == pytest.approx(PAPER_TABLE1_GMACS[name], rel=0.03)
    assert original.trainable_params == PUBLISHED_PARAMS[name]


@pytest.mark.parametrize("name", ["googlenet", "googlenet_bn"])
def test_googlenet_module_widths_are_table1(name):
    model = zoo.create_model(name, input_shape=(64, 64, 3), small_inputs=False)
    for module, widths in GOOGLENET_WIDTHS.items():
        built = tuple(
            model.get_layer(f"inception_{module}_{branch}_conv").filters for branch in BRANCHES
        )
        assert built == widths, module
        assert model.get_layer(f"inception_{module}_output").output.shape[-1] == (
            widths[0] + widths[2] + widths[4] + widths[5]
        )


def test_googlenet_rows_match_table1_figures():
    model = zoo.create_model("googlenet")
    weights: dict[str, int] = dict.fromkeys(GOOGLENET_TABLE1, 0)
    macs: dict[str, int] = dict.fromkeys(GOOGLENET_TABLE1, 0)
    for layer in model.layers:
        row = next((r for r in GOOGLENET_TABLE1 if layer.name.startswith(r + "_")), None)
        row = row or ("predictions" if layer.name == "predictions" else None)
        row = row or ("conv2" if layer.name.startswith("conv2_") else None)
        if row is None or not hasattr(layer, "kernel"):
            continue
        weights[row] += layer.kernel.numpy().size
        macs[row] += count_macs(layer, layer.input.shape, layer.output.shape)
    for row, (params_k, ops_m) in GOOGLENET_TABLE1.items():
        if params_k is not None:
            assert weights[row] / 1024 == pytest.approx(params_k, rel=0.02), row
        if ops_m is not None:
            assert macs[row] / 1e6 == pytest.approx(ops_m, rel=0.03, abs=0.5), row
    # The table's total of 1.5G multiply-adds (1502M), less its conv1 row, within 3%.
    conv1 = model.get_layer("conv1_conv")
    conv1_macs = count_macs(conv1, conv1.input.shape, conv1.output.shape)
    assert (stats("googlenet").macs - conv1_macs) / 1e6 == pytest.approx(1502 - 34, rel=0.03)
