"""Behaviour of every registered model at small width and small inputs, and architecture facts."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import zoo
from zoo.layers import GroupedConv2D, LocalResponseNormalization, ZeroPadShortcut

MODELS = zoo.list_models()
# The costlier checks (three feature extractors, a .keras round trip) build the first model of
# each family and kind of block in the quick tier, and every model in the slow tier.
FIRST_OF_EACH = {"alexnet", "vgg11", "vgg11_bn", "googlenet", "googlenet_bn", "resnet18",
                 "resnet50", "resnet20"}  # fmt: skip
EVERY_MODEL = [
    name if name in FIRST_OF_EACH else pytest.param(name, marks=pytest.mark.slow) for name in MODELS
]
# Channels of the last feature map at width 1.0, and its side for a 32x32 input in the small form.
FEATURES = {
    "alexnet": (256, 4),
    "googlenet": (1024, 8),
    "googlenet_bn": (1024, 8),
    **{f"vgg{d}{bn}": (512, 1) for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    **{f"resnet{d}": (512, 4) for d in (18, 34)},
    **{f"resnet{d}": (2048, 4) for d in (50, 101, 152)},
    **{f"resnet{d}": (64, 8) for d in (20, 32, 44, 56, 110)},
}


def images(n: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


def test_feature_table_covers_every_model():
    assert sorted(FEATURES) == sorted(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_small_forward_is_finite_with_right_shape(name):
    model = zoo.create_model(name, input_shape=(32, 32, 3), classes=7, width=0.125)
    out = model(images(), training=False)
    assert out.shape == (2, 7)
    assert np.isfinite(out.numpy()).all()
    assert model.get_layer(zoo.model_info(name).classifier).units == 7
    assert model.name == name


@pytest.mark.parametrize("name", MODELS)
def test_imagenet_form_forward(name):
    model = zoo.create_model(
        name, input_shape=(64, 64, 3), classes=5, width=0.125, small_inputs=False
    )
    out = model(images(size=64), training=False)
    assert out.shape == (2, 5)
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("name", EVERY_MODEL)
@pytest.mark.parametrize("pooling", [None, "avg", "max"])
def test_feature_extractor_shapes(name, pooling):
    channels, side = FEATURES[name]
    model = zoo.create_model(
        name, input_shape=(32, 32, 3), include_top=False, pooling=pooling, width=0.25
    )
    expected = (None, side, side, channels // 4) if pooling is None else (None, channels // 4)
    assert model.output_shape == expected
    assert not any(layer.name == "predictions" for layer in model.layers)


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_keras_file_round_trip_gives_identical_outputs(name, tmp_path):
    model = zoo.create_model(name, input_shape=(32, 32, 3), classes=4, width=0.125)
    x = images()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        model(x, training=False).numpy(), loaded(x, training=False).numpy()
    )
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn", "googlenet", "resnet20", "resnet50"])
def test_every_weight_gets_a_finite_nonzero_gradient(name):
    model = zoo.create_model(name, input_shape=(32, 32, 3), classes=3, width=0.125)
    x, y = images(4), tf.constant([0, 1, 2, 0])
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    grads = tape.gradient(loss, model.trainable_variables)
    for var, grad in zip(model.trainable_variables, grads, strict=True):
        assert grad is not None, var.path
        assert np.isfinite(grad.numpy()).all(), var.path
        assert np.abs(grad.numpy()).max() > 0, var.path


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", ["alexnet", "googlenet", "resnet20"])
def test_mixed_precision_computes_in_half_and_outputs_float32(name, policy):
    keras.config.set_dtype_policy(policy)
    model = zoo.create_model(name, input_shape=(32, 32, 3), classes=3, width=0.125)
    half = policy.removeprefix("mixed_")
    assert model.get_layer("conv1_conv").compute_dtype == half
    assert model.get_layer("predictions").compute_dtype == "float32"
    out = model(images(), training=False)
    assert out.dtype == tf.float32
    assert np.isfinite(out.numpy()).all()


def test_softmax_activation_gives_probabilities():
    model = zoo.create_model("resnet20", width=0.25, classifier_activation="softmax")
    out = model(images(), training=False).numpy()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert (out >= 0).all()


def test_default_output_is_logits():
    model = zoo.create_model("resnet20", width=0.25)
    assert model.get_layer("predictions").activation is keras.activations.linear


# Architecture facts ------------------------------------------------------------------------


def convs(model) -> list[layers.Conv2D]:
    return [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]


def test_alexnet_matches_the_paper_layout():
    model = zoo.create_model("alexnet")
    groups = {c.name: c.groups for c in convs(model)}
    assert groups == {
        "conv1_conv": 1,
        "conv2_conv": 2,
        "conv3_conv": 1,
        "conv4_conv": 2,
        "conv5_conv": 2,
    }
    assert [c.filters for c in convs(model)] == [96, 256, 384, 384, 256]
    assert [c.kernel_size[0] for c in convs(model)] == [11, 5, 3, 3, 3]
    conv1 = model.get_layer("conv1_conv")
    assert conv1.strides == (4, 4) and conv1.output.shape[1:] == (55, 55, 96)
    names = [layer.name for layer in model.layers]
    # conv -> ReLU -> LRN -> overlapping 3x3/2 max-pool, after conv1 and conv2 only
    for conv in ("conv1", "conv2"):
        i = names.index(f"{conv}_relu")
        assert names[i + 1 : i + 3] == [f"{conv}_lrn", f"{conv}_pool"]
    lrn = [layer.name for layer in model.layers if isinstance(layer, LocalResponseNormalization)]
    assert lrn == ["conv1_lrn", "conv2_lrn"]
    pools = [layer for layer in model.layers if isinstance(layer, layers.MaxPooling2D)]
    assert [(p.pool_size, p.strides) for p in pools] == [((3, 3), (2, 2))] * 3
    assert model.get_layer("conv5_pool").output.shape[1:] == (6, 6, 256)
    assert [model.get_layer(f"fc{i}").units for i in (6, 7)] == [4096, 4096]
    assert [model.get_layer(f"fc{i}_dropout").rate for i in (6, 7)] == [0.5, 0.5]


@pytest.mark.parametrize(
    ("name", "depth"), [("vgg11", 11), ("vgg13", 13), ("vgg16", 16), ("vgg19", 19)]
)
def test_vgg_weight_layers_and_batch_norm(name, depth):
    for bn in (False, True):
        model = zoo.create_model(name + ("_bn" if bn else ""), width=0.125, small_inputs=False)
        n_conv = len(convs(model))
        n_dense = sum(isinstance(layer, layers.Dense) for layer in model.layers)
        assert (n_conv, n_dense) == (depth - 3, 3)
        assert all(c.kernel_size == (3, 3) and c.strides == (1, 1) for c in convs(model))
        n_bn = sum(isinstance(layer, layers.BatchNormalization) for layer in model.layers)
        assert n_bn == (n_conv if bn else 0)


@pytest.mark.parametrize(
    ("name", "depth"), [("resnet18", 18), ("resnet34", 34), ("resnet50", 50), ("resnet101", 101)]
)
def test_imagenet_resnets_depth_bias_and_projections(name, depth):
    model = zoo.create_model(name, width=0.125)
    main = [c for c in convs(model) if not c.name.endswith("_0_conv")]
    assert len(main) + 1 == depth  # weight layers on the main path, plus the classifier
    assert not any(c.use_bias for c in convs(model))
    projections = [c.name for c in convs(model) if c.name.endswith("_0_conv")]
    expected = ["conv3_block1_0_conv", "conv4_block1_0_conv", "conv5_block1_0_conv"]
    if depth >= 50:  # bottlenecks change the width in the first block too
        expected = ["conv2_block1_0_conv", *expected]
    assert projections == expected


def test_resnet50_stride_placement():
    default = zoo.create_model("resnet50", width=0.125)
    original = zoo.create_model("resnet50", width=0.125, stride_in_1x1=True)
    for stage in (3, 4, 5):
        block = f"conv{stage}_block1"
        assert default.get_layer(f"{block}_1_conv").strides == (1, 1)
        assert default.get_layer(f"{block}_2_conv").strides == (2, 2)
        assert original.get_layer(f"{block}_1_conv").strides == (2, 2)
        assert original.get_layer(f"{block}_2_conv").strides == (1, 1)
    stem = default.get_layer("conv1_conv")
    assert (stem.kernel_size, stem.strides) == ((7, 7), (2, 2))
    assert default.get_layer("conv2_block1_out").output.shape[1:3] == (56, 56)


@pytest.mark.parametrize(
    ("name", "n"),
    [("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9), ("resnet110", 18)],
)
def test_cifar_resnets_are_6n_plus_2_with_parameter_free_shortcuts(name, n):
    model = zoo.create_model(name)
    n_dense = sum(isinstance(layer, layers.Dense) for layer in model.layers)
    assert len(convs(model)) + n_dense == 6 * n + 2
    assert all(c.kernel_size == (3, 3) for c in convs(model))  # no 1x1 projections
    shortcuts = [layer for layer in model.layers if isinstance(layer, ZeroPadShortcut)]
    assert [(s.channels, s.strides) for s in shortcuts] == [(32, 2), (64, 2)]
    assert [model.get_layer(f"conv{s}_block1_1_conv").filters for s in (2, 3, 4)] == [16, 32, 64]
    assert model.get_layer("conv4_block1_out").output.shape[1:] == (8, 8, 64)


def test_zero_init_residual_zeroes_the_last_bn_of_each_branch():
    model = zoo.create_model("resnet20", width=0.25, zero_init_residual=True)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma = layer.gamma.numpy()
            assert (gamma == 0).all() == layer.name.endswith("_2_bn"), layer.name


def test_googlenet_variants():
    plain = zoo.create_model("googlenet", width=0.125, small_inputs=False)
    bn = zoo.create_model("googlenet_bn", width=0.125, small_inputs=False)
    assert all(c.use_bias for c in convs(plain))
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in plain.layers)
    lrn = [layer.name for layer in plain.layers if isinstance(layer, LocalResponseNormalization)]
    assert lrn == ["norm1", "norm2"]
    names = [layer.name for layer in plain.layers]
    assert names.index("pool1") < names.index("norm1") < names.index("conv2_reduce_conv")
    assert names.index("conv2_relu") < names.index("norm2") < names.index("pool2")
    assert not any(c.use_bias for c in convs(bn))
    assert not any(isinstance(layer, LocalResponseNormalization) for layer in bn.layers)
    assert plain.get_layer("dropout").rate == 0.4
    assert [layer.name for layer in plain.layers if layer.name.endswith("_output")][:2] == [
        "inception_3a_output",
        "inception_3b_output",
    ]


def test_googlenet_auxiliary_classifiers():
    model = zoo.create_model(
        "googlenet", input_shape=(96, 96, 3), classes=6, width=0.125, aux_logits=True
    )
    outputs = model(images(size=96), training=True)
    assert [o.shape for o in outputs] == [(2, 6)] * 3
    assert model.output_names == ["predictions", "aux1_predictions", "aux2_predictions"]
    for aux, after in (("aux1", "inception_4a_output"), ("aux2", "inception_4d_output")):
        pool = model.get_layer(f"{aux}_avg_pool")
        assert (pool.pool_size, pool.strides, pool.padding) == ((5, 5), (3, 3), "valid")
        assert pool.input.name == model.get_layer(after).output.name
        conv = model.get_layer(f"{aux}_conv")
        assert (conv.kernel_size, conv.filters) == ((1, 1), 128 // 8)
        assert model.get_layer(f"{aux}_fc").units == 1024 // 8
        assert model.get_layer(f"{aux}_fc_dropout").rate == 0.7
        assert model.get_layer(f"{aux}_predictions").units == 6
    with pytest.raises(ValueError, match="aux_logits=True needs include_top=True"):
        zoo.create_model("googlenet", include_top=False, aux_logits=True)


def test_width_scales_channels_and_hidden_units():
    model = zoo.create_model("vgg11", width=0.5, small_inputs=False)
    assert [c.filters for c in convs(model)] == [32, 64, 128, 128, 256, 256, 256, 256]
    assert model.get_layer("fc1").units == 2048


@pytest.mark.parametrize("width", [0.01, 0.1, 0.3, 0.7, 1.3])
def test_alexnet_groups_divide_inputs_and_outputs_at_any_width(width):
    model = zoo.create_model("alexnet", input_shape=(32, 32, 3), classes=3, width=width)
    for conv in convs(model):
        assert conv.filters % conv.groups == 0 and conv.input.shape[-1] % conv.groups == 0
    assert model(images(1), training=False).shape == (1, 3)


def impulse_response(model, first: str, last: str) -> list[list[int]]:
    """Output pixels reached by an impulse at input pixel (2, 2) of the path from layer
    ``first`` to layer ``last``, with every kernel weight set to one and biases to zero."""
    path = keras.Model(model.get_layer(first).input, model.get_layer(last).output)
    for layer in path.layers:
        if isinstance(layer, layers.Conv2D):
            layer.kernel.assign(np.ones(layer.kernel.shape, "float32"))
            if layer.use_bias:
                layer.bias.assign(np.zeros(layer.bias.shape, "float32"))
    _, side, _, channels = path.inputs[0].shape
    impulse = np.zeros((1, side, side, channels), "float32")
    impulse[0, 2, 2, :] = 1.0
    response = np.abs(path(impulse, training=False).numpy()).sum(axis=-1)[0]
    return np.argwhere(response > 0).tolist()


@pytest.mark.parametrize(
    ("name", "branch", "shortcut"),
    [
        ("resnet20", ("conv3_block1_1_pad", "conv3_block1_1_conv"), "conv3_block1_0_pad"),
        ("resnet18", ("conv3_block1_1_pad", "conv3_block1_1_conv"), "conv3_block1_0_conv"),
        ("resnet50", ("conv3_block1_2_pad", "conv3_block1_2_conv"), "conv3_block1_0_conv"),
    ],
)
def test_strided_branch_and_shortcut_are_centred_on_the_same_pixel(name, branch, shortcut):
    """Input pixel (2, 2) of a downsampling block must land on output pixel (1, 1) in both the
    strided convolution and the shortcut, as in the reference (Caffe, torchvision) models."""
    model = zoo.create_model(name, input_shape=(32, 32, 3), width=0.125)
    assert model.get_layer(branch[1]).strides == (2, 2)
    assert impulse_response(model, *branch) == [[1, 1]]
    assert impulse_response(model, shortcut, shortcut) == [[1, 1]]


def test_stride_in_1x1_needs_bottlenecks():
    with pytest.raises(ValueError, match="stride_in_1x1 applies to bottleneck ResNets"):
        zoo.create_model("resnet18", stride_in_1x1=True)


# Custom layers -----------------------------------------------------------------------------


def test_lrn_matches_tensorflow_with_the_paper_constants():
    x = np.random.default_rng(1).normal(scale=30.0, size=(2, 5, 5, 12)).astype("float32")
    ours = LocalResponseNormalization()(x).numpy()
    reference = tf.nn.local_response_normalization(
        x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75
    ).numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours, x)  # the constants make a visible difference at this scale


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_lrn_is_accurate_in_half_precision(policy):
    x = np.random.default_rng(2).uniform(0, 300, size=(1, 3, 3, 16)).astype("float32")
    exact = LocalResponseNormalization()(x).numpy()
    half = LocalResponseNormalization(dtype=policy)(x)  # 300**2 overflows float16
    assert half.dtype == tf.as_dtype(policy.removeprefix("mixed_"))
    tolerance = 2e-3 if policy == "mixed_float16" else 1e-2
    np.testing.assert_allclose(tf.cast(half, tf.float32).numpy(), exact, rtol=tolerance)


@pytest.mark.parametrize(("groups", "strides", "padding"), [(2, 1, "same"), (4, 2, "valid")])
def test_grouped_conv_equals_keras_grouped_conv(groups, strides, padding):
    x = np.random.default_rng(3).normal(size=(2, 9, 9, 8)).astype("float32")
    ours = GroupedConv2D(12, 3, strides=strides, padding=padding, groups=groups)
    reference = layers.Conv2D(12, 3, strides=strides, padding=padding, groups=groups)
    ours.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(ours.get_weights())
    assert ours.kernel.shape == (3, 3, 8 // groups, 12)
    np.testing.assert_allclose(ours(x).numpy(), reference(x).numpy(), rtol=1e-5, atol=1e-5)


def test_custom_layers_round_trip_their_configuration():
    lrn = LocalResponseNormalization(size=3, bias=1.0, alpha=2e-4, beta=0.5, name="lrn")
    again = LocalResponseNormalization.from_config(lrn.get_config())
    assert (again.size, again.bias, again.alpha, again.beta, again.name) == (
        3,
        1.0,
        2e-4,
        0.5,
        "lrn",
    )
    pad = ZeroPadShortcut(channels=24, strides=3, name="pad")
    again = ZeroPadShortcut.from_config(pad.get_config())
    assert (again.channels, again.strides, again.name) == (24, 3, "pad")
    with pytest.raises(ValueError, match="positive odd integer"):
        LocalResponseNormalization(size=4)


@pytest.mark.parametrize("pooling", [None, "avg"])
def test_feature_extractor_outputs_float32_under_mixed_precision(pooling):
    keras.config.set_dtype_policy("mixed_float16")
    model = zoo.create_model(
        "vgg11_bn", input_shape=(32, 32, 3), include_top=False, pooling=pooling, width=0.125
    )
    assert model.get_layer("block1_1_conv").compute_dtype == "float16"
    assert model(images(), training=False).dtype == tf.float32


def test_zero_pad_shortcut_subsamples_and_pads_evenly():
    x = np.arange(2 * 5 * 5 * 3, dtype="float32").reshape(2, 5, 5, 3)
    out = ZeroPadShortcut(channels=8, strides=2)(x).numpy()
    assert out.shape == (2, 3, 3, 8)
    np.testing.assert_array_equal(out[..., 2:5], x[:, ::2, ::2, :])
    assert not out[..., :2].any() and not out[..., 5:].any()
