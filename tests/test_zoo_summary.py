"""Multiply-adds and memory counting, checked against hand computations, and the CLI."""

import csv
import io
import json

import keras
import pytest
from keras import layers

from zoo.summary import count_macs, main, profile, summarize


def test_count_macs_on_hand_computed_layers():
    inputs = keras.Input((10, 10, 4))
    grouped = layers.Conv2D(8, 3, padding="same", groups=2, name="grouped")(inputs)
    strided = layers.Conv2D(6, 5, strides=2, padding="valid", name="strided")(grouped)
    depthwise = layers.DepthwiseConv2D(3, padding="same", name="depthwise")(strided)
    pooled = layers.GlobalAveragePooling2D(name="pool")(depthwise)
    dense = layers.Dense(3, name="dense")(pooled)
    model = keras.Model(inputs, dense)
    expected = {
        "grouped": 10 * 10 * 8 * 3 * 3 * 4 // 2,
        "strided": 3 * 3 * 6 * 5 * 5 * 8,
        "depthwise": 3 * 3 * 6 * 3 * 3,
        "pool": 0,
        "dense": 6 * 3,
    }
    for name, macs in expected.items():
        layer = model.get_layer(name)
        assert count_macs(layer, layer.input.shape, layer.output.shape) == macs, name
    total, activations = profile(model)
    assert total == sum(expected.values())
    assert activations == 10 * 10 * 4 + 10 * 10 * 8 + 3 * 3 * 6 * 2 + 6 + 3


def vgg16_small_by_hand(classes: int = 10) -> tuple[int, int]:
    """Multiply-adds and kept activations of VGG-16's small form at 32x32, from the paper's
    configuration D (an independent count of what the builder should produce)."""
    stages = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
    side, channels, macs, activations = 32, 3, 0, 32 * 32 * 3
    for filters, depth in stages:
        for _ in range(depth):
            macs += side * side * filters * 9 * channels
            activations += side * side * filters
            channels = filters
        side //= 2
        activations += side * side * channels  # the pool's output
    macs += 512 * 512 + 512 * 512 + 512 * classes
    activations += 512 + 512 + classes
    return macs, activations


def test_vgg16_counts_equal_a_hand_count():
    stats = summarize("vgg16", input_shape=(32, 32, 3), classes=10)
    assert (stats.macs, stats.activations) == vgg16_small_by_hand()
    assert stats.trainable_params == stats.total_params  # no batch norm statistics
    assert stats.reference_macs is None  # not the published configuration
    assert stats.weight_mib == pytest.approx(stats.total_params * 4 / 2**20)


def test_reference_figure_only_at_the_default_configuration():
    assert summarize("resnet20").reference_macs is None  # none is published
    assert summarize("alexnet").reference_macs == pytest.approx(0.724e9)
    assert summarize("alexnet", classes=10).reference_macs is None


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_json(capsys):
    code, out, _ = run(capsys, "--model", "resnet20", "--format", "json")
    assert code == 0
    [row] = json.loads(out)
    assert row["model"] == "resnet20"
    assert row["trainable_params"] == 269_722
    assert row["input_shape"] == [32, 32, 3]
    assert row["macs"] == pytest.approx(40.8e6, rel=0.01)


def test_cli_csv_and_pattern(capsys):
    code, out, _ = run(
        capsys,
        "--model",
        "resnet[23]?",
        "--format",
        "csv",
        "--input-shape",
        "32x32",
        "--classes",
        "100",
        "--width",
        "0.5",
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["model"] for r in rows] == ["resnet20", "resnet32", "resnet34"]
    assert all(r["classes"] == "100" and r["input"] == "32x32x3" for r in rows)


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_cli_text_formats(capsys, fmt):
    code, out, _ = run(capsys, "--model", "resnet20", "--format", fmt)
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert "trainable params" in lines[0] and "269,722" in lines[2]
    if fmt == "markdown":
        assert all(line.startswith("|") for line in lines)


def test_cli_unknown_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "resnet5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Unknown model 'resnet5'. Did you mean" in err and "'resnet50'" in err


def test_cli_bad_input_shape(capsys):
    with pytest.raises(SystemExit):
        main(["--input-shape", "32,abc"])
    assert "expected HEIGHT,WIDTH[,CHANNELS]" in capsys.readouterr().err


def test_cli_reports_models_that_cannot_take_the_input(capsys):
    code, out, err = run(capsys, "--model", "vgg11*", "--input-shape", "16,16", "--width", "0.125")
    assert code == 2
    assert "skipped vgg11: vgg11: input 16x16 is too small" in err
    assert "skipped vgg11_bn" in err
    assert out == ""
