"""Export: the SavedModel's two signatures without this project, TFSMLayer, ONNX parity,
zoo.predict on both backends, float32 interfaces, atomic writes and name checks."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import build_once, train_for_export
from PIL import Image
from scripts import CHILD_TIMEOUT, run_module

import zoo
from zoo.export import LOCK_NAME, ExportError, check_name, export, export_finished_run, load_source
from zoo.predict import main as predict_main

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A two-epoch resnet20 (1/4 width) on digits, trained under mixed_bfloat16 once per test
    session (read only: exports read their source)."""
    return build_once(tmp_path_factory, "export-run", train_for_export)


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory) -> list[Path]:
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    paths = []
    for i in range(4):
        pixels = (digits.images[i] / 16 * 255).astype("uint8")
        path = folder / f"digit_{i}.png"
        Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports")
    return export(load_source(trained_run), out=out)


def test_layout_metadata_and_parity(exported, trained_run):
    assert exported.name == "1" and exported.parent.name == "resnet20"
    for name in ("saved_model.pb", "model.onnx", "metadata.json"):
        assert (exported / name).is_file()
    metadata = json.loads((exported / "metadata.json").read_text())
    assert metadata["class_names"] == [str(d) for d in range(10)]
    assert metadata["input"] == {
        "name": "images",
        "shape": [None, 32, 32, 3],
        "dtype": "float32",
        "range": [0, 255],
    }
    parity = metadata["parity"]
    assert parity["inputs"] == "digits:validation" and parity["images"] == 32
    assert parity["onnx_vs_savedmodel_max_abs_diff"] <= 1e-4
    assert metadata["training_config"]["precision"] == "mixed_bfloat16"
    assert metadata["metrics"]["model"] == "resnet20"
    assert set(metadata["versions"]) >= {"tensorflow", "keras", "tf2onnx", "onnx"}
    import hashlib

    for rel, digest in metadata["sha256"].items():
        assert hashlib.sha256((exported / rel).read_bytes()).hexdigest() == digest, rel
    assert "saved_model.pb" in metadata["sha256"] and "model.onnx" in metadata["sha256"]
    # The next export takes the next version.
    second = export(load_source(trained_run), out=exported.parent.parent, onnx=False)
    assert second.name == "2" and not (second / "model.onnx").exists()


def test_savedmodel_serves_in_a_process_without_this_project(exported, digit_files):
    code = f"""
        import sys, numpy as np, tensorflow as tf
        sys.path = [p for p in sys.path if "work/main" not in p and p not in ("", ".")]
        model = tf.saved_model.load({str(exported)!r})
        assert set(model.signatures) == {{"serving_default", "serving_bytes"}}
        images = np.stack([tf.io.decode_png(open(p, "rb").read(), channels=3).numpy()
                           for p in {[str(p) for p in digit_files]!r}]).astype("float32")
        a = model.signatures["serving_default"](images=tf.constant(images))
        b = model.signatures["serving_bytes"](image_bytes=tf.constant(
            [open(p, "rb").read() for p in {[str(p) for p in digit_files]!r}]))
        assert a["probabilities"].dtype == tf.float32 and a["probabilities"].shape == (4, 10)
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-6)
        assert "zoo" not in sys.modules and "pipelines" not in sys.modules
        print("CLASSES", a["classes"].numpy().tolist())
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        env=ENV,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CLASSES" in result.stdout


def test_tfsmlayer_loads_the_export(exported):
    layer = keras.layers.TFSMLayer(str(exported), call_endpoint="serving_default")
    out = layer(np.full((2, 32, 32, 3), 128.0, "float32"))
    assert out["probabilities"].shape == (2, 10)
    np.testing.assert_allclose(np.asarray(out["probabilities"]).sum(axis=1), 1.0, rtol=1e-5)


def test_predict_backends_agree_and_bad_files_are_reported(exported, digit_files, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    files = [str(p) for p in digit_files] + [str(broken), str(tmp_path / "missing.png")]
    tops = {}
    for backend in ("tf", "onnx"):
        code = predict_main([str(exported), *files, "--top-k", "1", "--backend", backend])
        out, err = capsys.readouterr()
        assert code == 1
        assert "broken.png: error: not a JPEG, PNG, BMP or GIF image" in err
        assert "missing.png: error: cannot read it" in err
        lines = out.splitlines()
        tops[backend] = [
            lines[i + 1].split()[0] for i, line in enumerate(lines) if line.endswith(".png")
        ]
        assert len(tops[backend]) == len(digit_files)
    assert tops["tf"] == tops["onnx"]


def test_mixed_precision_run_exports_float32_io(exported):
    import tensorflow as tf

    signature = tf.saved_model.load(str(exported)).signatures["serving_default"]
    assert signature.structured_input_signature[1]["images"].dtype == tf.float32
    assert signature.structured_outputs["probabilities"].dtype == tf.float32
    assert signature.structured_outputs["logits"].dtype == tf.float32


def test_failed_export_leaves_no_version(trained_run, tmp_path, monkeypatch):
    import zoo.export.onnx as export_module

    def broken(*args, **kwargs):
        raise ExportError("simulated failure during the ONNX conversion")

    monkeypatch.setattr(export_module, "_convert_onnx", broken)
    with pytest.raises(ExportError, match="simulated"):
        export(load_source(trained_run), out=tmp_path)
    assert not (tmp_path / "resnet20").exists()  # no version, no temporary or empty folder


def test_overwrite_is_refused_then_allowed(trained_run, tmp_path):
    source = load_source(trained_run)
    first = export(source, out=tmp_path, version=3, onnx=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export(source, out=tmp_path, version=3, onnx=False)
    again = export(source, out=tmp_path, version=3, onnx=False, overwrite=True)
    names = sorted(p.name for p in (tmp_path / "resnet20").iterdir())
    assert again == first and names == [LOCK_NAME, "3"]


def test_export_after_training_reports_an_unwritable_folder(
    trained_run, tmp_path, monkeypatch, capsys
):
    """``zoo.train --export`` when ``saved_models`` cannot be written: one line, no traceback."""
    monkeypatch.chdir(tmp_path)
    Path("saved_models").write_text("a file where the exports would go")
    assert export_finished_run(trained_run) is False
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(
        "error: the run finished but its export failed: cannot write saved_models/resnet20: "
        "Not a directory;"
    )
    assert f"python -m zoo.export {trained_run} --out DIR" in lines[0]


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x..y", "a b"])
def test_bad_names_are_rejected(name):
    with pytest.raises(ValueError, match="Invalid export name"):
        check_name(name)


# One model per construct: grouped convs and LRN, batch norm, Inception modules, zero-pad and
# projection shortcuts.
@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn", "googlenet", "resnet20", "resnet50"])
def test_every_family_exports_to_onnx_with_parity(name, tmp_path):
    model = zoo.create_model(name, input_shape=(32, 32, 3), classes=5, width=0.125)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    source = load_source(path, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    target = export(source, out=tmp_path / "exports")
    parity = json.loads((target / "metadata.json").read_text())["parity"]
    assert parity["onnx_vs_savedmodel_max_abs_diff"] <= 1e-4
    assert parity["savedmodel_vs_keras_max_abs_diff"] <= 1e-5
    assert parity["onnx_outputs"] == ["classes", "logits", "probabilities"]


def test_keras_file_needs_normalisation(tmp_path):
    model = zoo.create_model("resnet20", width=0.125)
    model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match="carries no normalisation"):
        load_source(tmp_path / "m.keras")


# A .keras file of every family exports in a process that has not imported zoo's models -------

NORMALISATION = ["--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25"]


def _export_keras_file_in_a_fresh_process(model: str, tmp_path) -> None:
    """``zoo.create_model(model).save("m.keras")`` here, ``python -m zoo.export m.keras`` in a
    new process (which imports no model module before it reads the file)."""
    path = tmp_path / f"{model}.keras"
    zoo.create_model(model, input_shape=(32, 32, 3), classes=10, width=0.125).save(path)
    done = run_module("zoo.export", str(path), *NORMALISATION, "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    [metadata] = (tmp_path / "out").glob("*/1/metadata.json")
    assert json.loads(metadata.read_text())["class_names"] == [str(i) for i in range(10)]


def test_a_cifar_resnets_keras_file_exports_in_a_fresh_process(tmp_path):
    """resnet20's ``ZeroPadShortcut`` is the zoo's own layer: the export registers it."""
    _export_keras_file_in_a_fresh_process("resnet20", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("model", zoo.list_models())
def test_every_models_keras_file_exports_in_a_fresh_process(model, tmp_path):
    _export_keras_file_in_a_fresh_process(model, tmp_path)
