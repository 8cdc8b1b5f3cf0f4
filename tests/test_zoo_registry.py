"""The registry's public API: names, metadata, validation before building, weights."""

import re

import keras
import numpy as np
import pytest

import zoo
from zoo import registry

EXPECTED = [
    "alexnet",
    "googlenet", "googlenet_bn",
    "resnet18", "resnet20", "resnet32", "resnet34", "resnet44", "resnet50", "resnet56",
    "resnet101", "resnet110", "resnet152",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
]  # fmt: skip


def test_list_models_in_natural_order():
    assert zoo.list_models() == EXPECTED
    assert zoo.list_models("vgg1[16]") == ["vgg11", "vgg16"]
    assert zoo.list_models("*_bn") == [
        "googlenet_bn",
        "vgg11_bn",
        "vgg13_bn",
        "vgg16_bn",
        "vgg19_bn",
    ]
    assert zoo.list_models("nothing*") == []


@pytest.mark.parametrize("name", EXPECTED)
def test_model_info_is_complete(name):
    info = zoo.model_info(name)
    assert info.name == name
    assert info.family in {"alexnet", "vgg", "googlenet", "resnet"}
    assert info.paper and info.description and info.params_source
    assert len(info.mean) == 3 and len(info.std) == 3
    assert all(0 < m < 1 for m in info.mean) and all(0 < s < 1 for s in info.std)
    assert info.input_shape in {(224, 224, 3), (32, 32, 3)}
    assert info.classifier == "predictions"
    assert info.num_params > 0


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("resnet5", "resnet50"), ("vgg16bn", "vgg16_bn"), ("GoogLeNet", "googlenet")],
)
def test_unknown_name_suggests_close_matches_and_lists_all(typo, suggestion):
    for call in (zoo.create_model, zoo.model_info):
        with pytest.raises(ValueError) as err:
            call(typo)
        message = str(err.value)
        assert f"Unknown model {typo!r}" in message
        suggested = re.search(r"Did you mean (.*)\?", message).group(1)
        assert repr(suggestion) in suggested.split(", ")
        assert message.endswith(f"Known models: {', '.join(EXPECTED)}.")


@pytest.fixture
def no_building(monkeypatch):
    """Fail loudly if any layer is built: validation must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a layer was built before the arguments were validated")

    monkeypatch.setattr(keras, "Input", refuse)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"classes": 0}, "classes must be an integer >= 1, got 0"),
        ({"classes": -3}, "classes must be an integer >= 1"),
        ({"classes": 2.5}, "classes must be an integer >= 1"),
        ({"classes": True}, "classes must be an integer >= 1"),
        ({"width": 0}, "width must be a finite number > 0, got 0"),
        ({"width": -0.5}, "width must be a finite number > 0"),
        ({"width": float("nan")}, "width must be a finite number > 0"),
        ({"input_shape": (32, 32)}, "input_shape must be three positive integers"),
        ({"input_shape": (0, 32, 3)}, "input_shape must be three positive integers"),
        ({"input_shape": (32.0, 32, 3)}, "input_shape must be three positive integers"),
        ({"input_shape": "32x32"}, "input_shape must be three positive integers"),
        ({"pooling": "mean", "include_top": False}, "pooling must be one of None, 'avg', 'max'"),
        ({"pooling": "avg"}, "pass include_top=False"),
        ({"classifier_activation": "softmaxx"}, "unknown classifier_activation 'softmaxx'"),
        ({"stride": 2}, "resnet50 does not take 'stride'. It takes: .*small_inputs"),
        ({"input_shape": (16, 16, 3), "small_inputs": False}, "input 16x16 is too small"),
    ],
)
def test_impossible_arguments_fail_before_building(no_building, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        zoo.create_model("resnet50", **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        ("resnet20", {"width": True}, "width must be a finite number > 0, got True"),
        ("resnet20", {"include_top": "no"}, "include_top must be True or False, got 'no'"),
        ("vgg16", {"dropout": 1.5}, "vgg16: dropout must be a number in \\[0, 1\\), got 1.5"),
        ("alexnet", {"dropout": -0.1}, "alexnet: dropout must be a number in"),
        ("googlenet", {"dropout": 1}, "googlenet: dropout must be a number in"),
        ("resnet18", {"stride_in_1x1": True}, "stride_in_1x1 applies to bottleneck ResNets"),
        ("googlenet", {"include_top": False, "aux_logits": True}, "needs include_top=True"),
    ],
)
def test_family_arguments_fail_before_building(no_building, name, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        zoo.create_model(name, **kwargs)


def test_family_options_listed_without_bound_ones():
    with pytest.raises(ValueError) as err:
        zoo.create_model("vgg16_bn", batch_norm=False)
    assert "It takes: dropout, name, small_inputs." in str(err.value)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("alexnet", {"small_inputs": False}),
        ("vgg11", {}),
        ("googlenet", {"small_inputs": False}),
        ("googlenet", {"small_inputs": False, "aux_logits": True}),
        ("resnet50", {"small_inputs": False}),
        ("resnet20", {"small_inputs": True}),
    ],
)
def test_reported_minimum_input_size_is_exact(name, options):
    with pytest.raises(ValueError, match="too small") as err:
        zoo.create_model(name, input_shape=(2, 2, 3), width=0.0625, **options)
    smallest = int(re.search(r"needs at least (\d+)x\1", str(err.value)).group(1))
    model = zoo.create_model(name, input_shape=(smallest, smallest, 3), width=0.0625, **options)
    outputs = model.outputs
    assert all(o.shape[-1] == zoo.model_info(name).classes for o in outputs)
    with pytest.raises(ValueError, match="too small"):
        zoo.create_model(name, input_shape=(smallest - 1, smallest, 3), width=0.0625, **options)


def test_non_square_and_grayscale_inputs():
    model = zoo.create_model("resnet20", input_shape=(40, 24, 1), classes=3, width=0.25)
    out = model(np.zeros((1, 40, 24, 1), "float32"))
    assert out.shape == (1, 3)


def test_small_form_follows_input_size_unless_given():
    assert "pool1" not in [
        layer.name
        for layer in zoo.create_model("resnet18", width=0.125, input_shape=(64, 64, 3)).layers
    ]
    big = zoo.create_model("resnet18", width=0.125, input_shape=(65, 65, 3))
    assert "pool1" in [layer.name for layer in big.layers]
    forced = zoo.create_model("resnet18", width=0.125, input_shape=(32, 32, 3), small_inputs=False)
    assert "pool1" in [layer.name for layer in forced.layers]


def test_none_overrides_keep_the_models_defaults():
    model = zoo.create_model("vgg11", width=0.125, dropout=None, small_inputs=None)
    assert model.get_layer("fc1_dropout").rate == 0.5


def test_name_override():
    assert zoo.create_model("resnet20", width=0.25, name="my_net").name == "my_net"


def test_duplicate_registration_is_rejected():
    info = zoo.model_info("resnet20")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model(info, lambda **kwargs: None)


def test_weights_round_trip(tmp_path):
    source = zoo.create_model("resnet20", width=0.25, classes=5)
    path = tmp_path / "net.weights.h5"
    source.save_weights(path)
    loaded = zoo.create_model("resnet20", width=0.25, classes=5, weights=path)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(source(x).numpy(), loaded(x).numpy())


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras, before it raises
def test_weights_errors(tmp_path):
    with pytest.raises(ValueError, match=r"resnet20 has no 'imagenet' weights; models with"):
        zoo.create_model("resnet20", weights="imagenet")
    with pytest.raises(FileNotFoundError, match=r"missing\.weights\.h5"):
        zoo.create_model("resnet20", weights=tmp_path / "missing.weights.h5")
    wrong = tmp_path / "other.weights.h5"
    zoo.create_model("resnet20", width=0.25).save_weights(wrong)
    with pytest.raises(ValueError, match=rf"{wrong} does not hold weights for this model"):
        zoo.create_model("resnet20", weights=wrong)  # width 1.0: shapes differ
