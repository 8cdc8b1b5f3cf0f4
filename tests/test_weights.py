"""Pretrained weights from keras.applications (`zoo.weights`), offline: keras.applications'
models get random weights and random batch-norm statistics (far from 0 and 1), are saved in the
format keras.applications downloads, and are loaded into the zoo's models through the
converter; the zoo model fed through its own normalisation computes the same logits as
keras.applications' model fed its own ``preprocess_input``, to 1e-4."""

import json
import os
import sys
import types

import h5py
import keras
import numpy as np
import pytest
import torchvision_reference as reference
from keras.src.legacy.saving import legacy_h5_format  # the format keras.applications serves
from scripts import assert_same_layer_weights

import zoo
from zoo import weights as pretrained

PREPROCESS = {
    "vgg16": keras.applications.vgg16.preprocess_input,
    "vgg19": keras.applications.vgg19.preprocess_input,
    "resnet50": keras.applications.resnet.preprocess_input,
    "resnet101": keras.applications.resnet.preprocess_input,
    "resnet152": keras.applications.resnet.preprocess_input,
}


def randomize(model: keras.Model, seed: int = 0) -> None:
    """Random weights at a scale that keeps logits near 1 (float32 rounding of logits in the
    hundreds would exceed 1e-4 by itself), and batch-norm statistics far from 0 and 1."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (v.shape for v in values)
            values = [
                rng.uniform(0.5, 1.5, gamma),
                rng.normal(0, 0.5, beta),
                rng.normal(0, 3, mean),
                rng.uniform(0.5, 4, variance),
            ]
        else:
            values = [
                rng.normal(0, np.sqrt(1 / np.prod(v.shape[:-1])), v.shape)
                if v.ndim > 1
                else rng.normal(0, 0.1, v.shape)  # biases, folded into batch norm for ResNets
                for v in values
            ]
            if layer.name in ("block1_conv1", "conv1_conv"):
                values[0] = values[0] / 128  # Caffe-preprocessed pixels are about +-128
        layer.set_weights([v.astype("float32") for v in values])


def save_as_published(model: keras.Model, path) -> None:
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def logits_difference(name: str, source: keras.Model, model: keras.Model) -> float:
    spec = pretrained.pretrained(name, "imagenet")
    x = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    # Eager calls: tracing a 152-layer graph for predict would take longer than the check.
    expected = source(PREPROCESS[name](x * 255.0), training=False).numpy()
    got = model((x - np.float32(spec.mean)) / np.float32(spec.std), training=False).numpy()
    assert np.abs(expected).max() > 0.1  # the comparison is of real outputs
    return float(np.abs(expected - got).max())


@pytest.mark.parametrize(("name", "application"), [("vgg16", "VGG16"), ("vgg19", "VGG19")])
def test_vgg_weights_with_their_classifier_convert_exactly(name, application):
    source = getattr(keras.applications, application)(
        weights=None, input_shape=(32, 32, 3), classifier_activation=None
    )
    randomize(source)
    spec = pretrained.pretrained(name, "imagenet")
    model = zoo.create_model(name, input_shape=(32, 32, 3), **spec.options)
    assert pretrained.convert(source, model, first_conv="block1_1_conv") == 16 + 3 * (
        name == "vgg19"
    )
    assert logits_difference(name, source, model) < 1e-4


@pytest.mark.parametrize(
    ("name", "application"),
    [("resnet50", "ResNet50"), ("resnet101", "ResNet101"), ("resnet152", "ResNet152")],
)
def test_resnet_weights_from_the_published_file_convert_exactly(tmp_path, name, application):
    """Biases folded into batch norm, the epsilon difference, stride in the 1x1 and BGR to
    RGB; ResNet-50 through ``create_model(weights=<the .h5 keras.applications downloads>)``."""
    source = getattr(keras.applications, application)(
        weights=None, input_shape=(32, 32, 3), classifier_activation=None
    )
    randomize(source)
    if name != "resnet50":  # the deeper ones straight through the converter (saving is slow)
        spec = pretrained.pretrained(name, "imagenet")
        model = zoo.create_model(name, input_shape=(32, 32, 3), **spec.options)
        pretrained.convert(source, model, first_conv="conv1_conv")
        assert logits_difference(name, source, model) < 1e-4
        return
    path = tmp_path / f"{name}_weights_tf_dim_ordering_tf_kernels.h5"
    save_as_published(source, path)
    model = zoo.create_model(name, input_shape=(32, 32, 3), weights=str(path))
    assert logits_difference(name, source, model) < 1e-4
    # The zoo's default (stride in the 3x3, torchvision's v1.5) would not compute the same.
    with pytest.raises(ValueError, match="stride_in_1x1=True"):
        zoo.create_model(name, weights=str(path), stride_in_1x1=False)


def test_a_new_head_on_a_pretrained_backbone(tmp_path):
    source = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    randomize(source)
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    save_as_published(source, path)
    backbone = zoo.create_model(
        "vgg16", input_shape=(32, 32, 3), include_top=False, weights=str(path)
    )
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    spec = pretrained.pretrained("vgg16", "imagenet")
    np.testing.assert_allclose(
        backbone.predict((x / 255 - np.float32(spec.mean)) / np.float32(spec.std), verbose=0),
        source.predict(keras.applications.vgg16.preprocess_input(x.copy()), verbose=0),
        atol=1e-4,
    )
    model = zoo.create_model("vgg16", input_shape=(32, 32, 3), classes=7, weights=str(path))
    kernel = model.get_layer("block5_3_conv").get_weights()[0]
    np.testing.assert_array_equal(kernel, source.get_layer("block5_conv3").get_weights()[0])
    assert model.output.shape[-1] == 7


def test_model_info_lists_the_weights_and_imagenet_elsewhere_names_those_with_them():
    assert zoo.model_info("resnet50").weights == ("imagenet", "torchvision")
    assert zoo.model_info("resnet18").weights == ("torchvision",)
    assert zoo.model_info("alexnet").weights == ()
    with pytest.raises(ValueError, match=r"resnet18 has no 'imagenet' weights.*resnet50"):
        zoo.create_model("resnet18", weights="imagenet")
    with pytest.raises(ValueError, match=r"width 1\.0"):
        zoo.create_model("resnet50", weights="imagenet", width=0.5)


def test_a_published_file_of_another_model_is_refused_naming_it(tmp_path):
    source = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    save_as_published(source, path)
    with pytest.raises(ValueError, match=rf"{path} is not keras.applications.VGG19's weights"):
        zoo.create_model("vgg19", include_top=False, weights=str(path))


def test_offline_imagenet_says_which_file_to_copy_where():
    spec = pretrained.pretrained("vgg16", "imagenet")
    cached = os.path.join(os.path.expanduser("~"), ".keras", "models", spec.file_no_top)
    if os.path.exists(cached):
        pytest.skip(f"{cached} is cached here, so nothing is fetched")
    with pytest.raises(FileNotFoundError, match=spec.file_no_top) as info:
        zoo.create_model("vgg16", include_top=False, weights="imagenet")
    assert "weights='path/to/" in str(info.value)


def test_imagenet_class_names_are_shipped_in_the_classifiers_order():
    names = pretrained.imagenet_class_names()
    assert len(names) == len(set(names)) == 1000
    assert names[:2] == ["tench", "goldfish"] and names[-1] == "toilet tissue"
    assert names[638:640] == ["maillot", "maillot, tank suit"]  # a shared first synonym


@pytest.mark.slow
def test_an_exported_pretrained_model_names_imagenet_classes(tmp_path, capsys):
    """Converted weights, saved, exported with ``--class-names imagenet`` and the weights'
    normalisation: zoo.predict prints the ImageNet name of the model's own top class."""
    import tensorflow as tf
    from PIL import Image

    from zoo.export import decode_and_crop
    from zoo.export import main as export_main
    from zoo.predict import main as predict_main

    source = keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), classifier_activation=None
    )
    randomize(source)
    published = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    save_as_published(source, published)
    model = zoo.create_model("resnet50", input_shape=(64, 64, 3), weights=str(published))
    model.save(tmp_path / "resnet50.keras")
    spec = pretrained.pretrained("resnet50", "imagenet")
    out = tmp_path / "exports"
    normalisation = ["--mean", *map(str, spec.mean), "--std", *map(str, spec.std)]
    keras_file = str(tmp_path / "resnet50.keras")
    code = export_main(
        [keras_file, "--out", str(out), "--no-onnx", "--class-names", "imagenet", *normalisation]
    )
    assert code == 0, capsys.readouterr().err
    image = tmp_path / "image.png"
    pixels = np.random.default_rng(3).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    x = decode_and_crop(tf.constant(image.read_bytes()), (64, 64)).numpy()[None]
    top = int(np.argmax(model.predict((x / 255 - spec.mean) / spec.std, verbose=0)[0]))
    capsys.readouterr()
    assert predict_main([str(out / "resnet50" / "1"), str(image), "--top-k", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()[1].strip()
    assert printed.startswith(pretrained.imagenet_class_names()[top] + " ")


# torchvision ------------------------------------------------------------------------------


def write_safetensors(state: dict[str, np.ndarray], path) -> None:
    """The safetensors layout: header length, JSON header, little-endian float32 data."""
    import json

    header, offset, chunks = {}, 0, []
    for name, value in state.items():
        data = np.ascontiguousarray(value, "<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(value.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        chunks.append(data)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(chunks))


@pytest.mark.parametrize(("name", "side", "top"), reference.CASES, ids=lambda v: str(v))
def test_torchvision_weights_convert_exactly(name, side, top, tmp_path):
    """Against outputs torchvision computed from the same state dict (the fixture; see
    tests/torchvision_reference.py). ResNet-18 and VGG-11-BN go through a .safetensors file."""
    expected = np.load(reference.FIXTURE)[reference.key(name, side, top)]
    family = "resnet" if name.startswith("resnet") else "vgg"
    model = reference.zoo_model(name, side, top)
    state = reference.random_state(model, family)
    if name in ("resnet18", "vgg11_bn") and top:
        path = tmp_path / f"{name}.safetensors"
        write_safetensors(state, path)
        model = zoo.create_model(
            name, input_shape=(side, side, 3), classes=reference.CLASSES, weights=str(path)
        )
    else:
        pretrained.convert_torchvision(state, model, family)
    got = model(reference.inputs(side), training=False).numpy()
    assert got.shape == expected.shape
    assert np.abs(expected).max() > 0.1
    assert np.abs(got - expected).max() < 1e-4


def test_torchvision_files_of_the_wrong_model_or_format_are_named(tmp_path):
    model = reference.zoo_model("resnet18", 64, True)
    state = reference.random_state(model, "resnet")
    path = tmp_path / "resnet18.safetensors"
    write_safetensors(state, path)
    with pytest.raises(
        ValueError, match=r"layer conv2_block1_1_conv does not fit layer1\.0\.conv1"
    ):
        zoo.create_model("resnet50", input_shape=(64, 64, 3), classes=10, weights=str(path))
    with pytest.raises(ValueError, match=r"resnet20 has no torchvision counterpart"):
        zoo.create_model("resnet20", weights=str(path))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="is not a safetensors file"):
        zoo.create_model("resnet18", weights=str(garbage))


def test_offline_torchvision_names_the_file_and_a_pth_without_pytorch_says_so(
    tmp_path, monkeypatch
):
    spec = pretrained.pretrained("resnet18", "torchvision")
    fetched = []
    real_get_file = keras.utils.get_file

    def get_file(*args, **kwargs):
        fetched.append(args[0])
        return real_get_file(*args, **kwargs)

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    # Without PyTorch: said before anything is downloaded (the .pth could not be read).
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ValueError, match=r"needs PyTorch .*nothing was downloaded"):
        zoo.create_model("resnet18", weights="torchvision")
    assert fetched == []
    # With PyTorch (a stand-in: the download fails first here, offline): the file is named.
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    cached = os.path.join(os.path.expanduser("~"), ".keras", "models", spec.file)
    if not os.path.exists(cached):
        with pytest.raises(FileNotFoundError, match=spec.file):
            zoo.create_model("resnet18", weights="torchvision")
        assert fetched == [spec.file]
    monkeypatch.delitem(sys.modules, "torch")
    pth = tmp_path / "resnet18.pth"
    pth.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="PyTorch"):  # needs it, or it cannot load this
        zoo.create_model("resnet18", weights=str(pth))


def test_the_summary_shows_which_weights_a_model_has():
    from zoo.summary import render, summarize

    rows = json.loads(render([summarize("resnet50"), summarize("resnet20")], "json"))
    assert [row["pretrained"] for row in rows] == ["imagenet, torchvision", ""]


def test_zoo_train_starts_from_published_weights_with_their_normalisation(tmp_path):
    """``--weights FILE``: the model starts from the converted weights with a new head for the
    data's classes, the data is normalised as the weights expect (recorded in data.json, which
    exports read), and the run's own checkpoint rebuilds the same architecture."""
    from zoo.config import RunOptions, TrainConfig
    from zoo.training import Trainer, load_model

    model = reference.zoo_model("resnet18", 64, True)
    path = tmp_path / "resnet18.safetensors"
    write_safetensors(reference.random_state(model, "resnet"), path)
    config = TrainConfig(
        model="resnet18",
        weights=str(path),
        epochs=1,
        batch_size=32,
        overfit_batches=2,
        image_size=32,  # the digits' own size, not the weights' 224
        precision="float32",  # compared with the float32 model load_model rebuilds
    )
    trainer = Trainer(config, options=RunOptions(run_dir=str(tmp_path / "run"), verbose=False))
    trainer.setup()
    expected = zoo.create_model("resnet18", input_shape=(32, 32, 3), weights=str(path))
    assert_same_layer_weights(trainer.model, expected, ("conv1_conv", "conv5_block2_2_bn"))
    spec = pretrained.pretrained("resnet18", "torchvision")
    assert trainer.model.output.shape[-1] == 10  # digits: a new head
    trainer.fit()
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    np.testing.assert_allclose(data["mean"], spec.mean)
    np.testing.assert_allclose(data["std"], spec.std)
    path.unlink()  # the run rebuilds its architecture without the file it started from
    loaded = load_model(tmp_path / "run", "last")
    x = np.random.default_rng(4).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x).numpy(), trainer.model(x).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="give one of them"):
        TrainConfig(model="resnet18", weights="torchvision", init_from=str(tmp_path / "run"))


def test_starting_weights_set_the_default_image_size_and_the_run_records_it(tmp_path):
    """Small images are resized up to the size the weights were trained at (224 for published
    weights, the source run's for --init-from) unless --image-size says otherwise; config.json
    records the size, so a resume does not depend on the source."""
    from zoo.config import RunOptions, TrainConfig
    from zoo.training import Trainer

    model = reference.zoo_model("resnet18", 64, True)
    path = tmp_path / "resnet18.safetensors"
    write_safetensors(reference.random_state(model, "resnet"), path)
    sides = {}
    for name, extra in {"published": {"weights": str(path)}, "given": {"image_size": 48}}.items():
        config = TrainConfig(model="resnet18", batch_size=32, **extra)
        trainer = Trainer(config, options=RunOptions(run_dir=str(tmp_path / name), verbose=False))
        trainer.setup()
        saved = json.loads((tmp_path / name / "config.json").read_text())["image_size"]
        sides[name] = (trainer.data.image_size[0], trainer.model.input_shape[1], saved)
    assert sides == {"published": (224, 224, 224), "given": (48, 48, 48)}


def test_weights_names_win_over_folders_and_torchvision_bottlenecks_keep_their_stride(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imagenet").mkdir()  # a data folder of that name does not hide the weights
    with pytest.raises(ValueError, match="alexnet has no 'imagenet' weights"):
        zoo.create_model("alexnet", weights="imagenet")
    file = tmp_path / "resnet50.safetensors"
    file.write_bytes(b"")  # refused before it is read
    with pytest.raises(ValueError, match="stride_in_1x1=False"):
        zoo.create_model("resnet50", weights=str(file), stride_in_1x1=True)


def test_torchvision_vgg_at_another_size_with_new_classes_gets_a_whole_new_classifier(tmp_path):
    """torchvision's VGG classifier needs 224x224 inputs: at 32x32 with other classes, the
    convolutions are converted and fc1, fc2 and the classifier are new."""
    features = reference.zoo_model("vgg11", 32, False)
    state = reference.random_state(features, "vgg")
    path = tmp_path / "vgg11.safetensors"
    write_safetensors(state, path)
    model = zoo.create_model("vgg11", input_shape=(32, 32, 3), classes=7, weights=str(path))
    np.testing.assert_array_equal(
        model.get_layer("block5_2_conv").get_weights()[0],
        state["features.18.weight"].transpose(2, 3, 1, 0),
    )
    assert model.output.shape[-1] == 7
