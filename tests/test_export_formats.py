"""Export formats beyond the SavedModel: TFLite float32/float16/int8 and ONNX int8, each checked
against the SavedModel on real images of a trained run, read by runtimes no one here wrote,
served by zoo.predict, measured, and refused when calibration breaks them."""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import build_once, train_for_export
from PIL import Image
from scripts import run_python

import zoo
from zoo.export import FORMATS, ExportError, export, load_source, parse_formats, summary
from zoo.export import main as export_main
from zoo.predict import main as predict_main

INT8 = ("onnx_int8", "tflite_int8")


def _export_all(run: Path, out: Path) -> None:
    # The run is two epochs of a narrow resnet20 (about half its digits right): the accuracy
    # gate is tested on its own below, so this export lets any drop through.
    export(load_source(run), out=out, formats="all", max_accuracy_drop=100)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """test_export's two-epoch resnet20 (1/4 width), built once per session."""
    return build_once(tmp_path_factory, "export-run", train_for_export)


@pytest.fixture(scope="module")
def all_formats(trained_run, tmp_path_factory) -> Path:
    """The version directory of ``trained_run`` exported with ``--formats all``."""
    root = build_once(tmp_path_factory, "export-all-formats", lambda f: _export_all(trained_run, f))
    return root / "resnet20" / "1"


@pytest.fixture(scope="module")
def validation(all_formats, tmp_path_factory) -> Path:
    """Validation images of the run (raw pixels, as the export measured them) and the
    SavedModel's probabilities for them, as .npy files for processes without the project."""
    import tensorflow as tf

    import pipelines
    from pipelines.resize import resize_and_center_crop

    folder = tmp_path_factory.mktemp("validation")
    images = np.stack(
        [
            resize_and_center_crop(tf.cast(x, tf.float32), (32, 32)).numpy()
            for x, _ in pipelines.load("digits").splits["validation"].take(64)
        ]
    )
    signature = tf.saved_model.load(str(all_formats)).signatures["serving_default"]
    np.save(folder / "images.npy", images.astype(np.float32))
    np.save(folder / "probabilities.npy", signature(images=tf.constant(images))["probabilities"])
    return folder


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory) -> list[Path]:
    import pipelines

    folder = tmp_path_factory.mktemp("digit-files")
    paths = []
    for i, (x, y) in enumerate(pipelines.load("digits").splits["test"].take(3)):
        paths.append(folder / f"test{i}-label{int(y)}.png")
        Image.fromarray(x.numpy()).save(paths[-1])
    return paths


def test_formats_are_parsed_with_the_savedmodel_always_first():
    assert parse_formats("all") == tuple(FORMATS)
    assert parse_formats("tflite_int8, onnx") == ("savedmodel", "onnx", "tflite_int8")
    assert parse_formats(["savedmodel"]) == ("savedmodel",)
    for bad in ("tflite,bogus", ",", "ALL"):
        with pytest.raises(ValueError, match=r"--formats .*unknown format; choose from savedmodel"):
            parse_formats(bad)


def test_every_format_is_written_summed_and_measured(all_formats, trained_run):
    metadata = json.loads((all_formats / "metadata.json").read_text())
    formats = metadata["formats"]
    assert list(formats) == list(FORMATS)
    for name, figures in formats.items():
        fmt = FORMATS[name]
        assert figures["file"] == fmt.file and (all_formats / fmt.file).is_file()
        assert fmt.file in metadata["sha256"]
        assert figures["bytes"] > 0 and figures["numbers"] == fmt.numbers
        assert 0 <= figures["accuracy"] <= 1
        assert figures["latency_ms_batch1"] > 0 and figures["images_per_s_batch64"] > 0
    assert (all_formats / "model.tflite").stat().st_size == formats["tflite"]["bytes"]
    # The same images and the same answer: the float formats match the SavedModel.
    run_accuracy = json.loads((trained_run / "metrics.json").read_text())["val_accuracy"]
    assert formats["savedmodel"]["accuracy"] == pytest.approx(run_accuracy, abs=0.02)
    for name in ("onnx", "tflite"):
        assert formats[name]["max_probability_diff"] <= 1e-4
        assert formats[name]["agreement"] == 1.0
    assert formats["tflite_fp16"]["max_probability_diff"] <= 0.01
    assert formats["tflite_fp16"]["bytes"] < 0.75 * formats["tflite"]["bytes"]  # small: overhead
    for name in INT8:
        assert formats[name]["agreement"] >= 0.9
        assert formats[name]["max_probability_diff"] < 0.5
    assert formats["tflite_int8"]["bytes"] < 0.6 * formats["tflite"]["bytes"]
    assert metadata["evaluation"] == "digits:validation (180 images)"
    assert metadata["calibration"]["images"] == "digits:train (200 images)"
    assert metadata["measured_on"]["threads"] >= 1 and metadata["measured_on"]["cpu"]


def test_the_files_run_in_runtimes_no_one_here_wrote(all_formats, validation):
    """LiteRT and ONNX Runtime, in a process that imports neither the project nor TensorFlow."""
    done = run_python(
        """
        import json, sys
        import numpy as np
        import onnxruntime
        from ai_edge_litert.interpreter import Interpreter

        folder, data = sys.argv[1], sys.argv[2]
        images = np.load(f"{data}/images.npy")
        expected = np.load(f"{data}/probabilities.npy")
        out = {}
        for name in ("model.tflite", "model_fp16.tflite", "model_int8.tflite"):
            runner = Interpreter(model_path=f"{folder}/{name}").get_signature_runner()
            out[name] = runner(images=images)["probabilities"]
        session = onnxruntime.InferenceSession(f"{folder}/model_int8.onnx")
        out["model_int8.onnx"] = session.run(["probabilities"], {"images": images})[0]
        assert not {"zoo", "tensorflow", "keras"} & set(sys.modules), "not a clean process"
        print(json.dumps({
            name: [float(np.abs(p - expected).max()),
                   float((p.argmax(1) == expected.argmax(1)).mean())]
            for name, p in out.items()
        }))
        """,
        str(all_formats),
        str(validation),
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["model.tflite"][0] <= 1e-4
    assert figures["model_fp16.tflite"][0] <= 0.01
    for name in ("model_int8.tflite", "model_int8.onnx"):
        assert figures[name][1] >= 0.9, (name, figures[name])


STANDARD_CONVERSION = """
    import contextlib, io, json, sys
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    folder, shape = sys.argv[1], [int(s) for s in sys.argv[2].split(",")]
    converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=["serving_default"])
    flatbuffer = converter.convert()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        tf.lite.experimental.Analyzer.analyze(model_content=flatbuffer)
    ops = sorted({line.split()[1].split("(")[0] for line in printed.getvalue().splitlines()
                  if line.lstrip().startswith("Op#")})
    images = np.random.default_rng(0).uniform(0, 255, (4, *shape)).astype(np.float32)
    saved = tf.saved_model.load(folder).signatures["serving_default"]
    expected = saved(images=tf.constant(images))["probabilities"].numpy()
    got = Interpreter(model_content=flatbuffer).get_signature_runner()(images=images)
    diff = float(np.abs(got["probabilities"] - expected).max())
    finite = bool(np.isfinite(got["probabilities"]).all())
    print(json.dumps({"ops": ops, "diff": diff, "finite": finite}))
"""


def _standard_conversion(folder: Path, shape: tuple[int, int, int]) -> dict:
    """TensorFlow's own converter on the export's SavedModel, in a process without the
    project: its ops and its largest difference from the SavedModel."""
    done = run_python(STANDARD_CONVERSION, str(folder), ",".join(map(str, shape)))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_standard_converter_reads_the_savedmodel(all_formats):
    """What a mobile user does with the SavedModel: no resource variables left (they were
    READ_VARIABLE ops that nothing initialised: NaN), weights folded into CONV_2D and
    FULLY_CONNECTED, and the same probabilities."""
    result = _standard_conversion(all_formats, (32, 32, 3))
    assert result["finite"] and result["diff"] <= 1e-4
    assert not {"READ_VARIABLE", "VAR_HANDLE"} & set(result["ops"]), result["ops"]
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(result["ops"])


# One model per construct: grouped convs and LRN, plain and batch-normalised VGG, Inception
# modules, zero-pad and projection shortcuts.
@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["alexnet", "vgg11", "vgg11_bn", "googlenet", "googlenet_bn", "resnet20", "resnet50"]
)
def test_every_familys_savedmodel_converts_with_the_standard_converter(name, tmp_path):
    model = zoo.create_model(name, input_shape=(32, 32, 3), classes=5, width=0.125)
    model.save(tmp_path / "m.keras")
    source = load_source(tmp_path / "m.keras", mean=(0.5,) * 3, std=(0.25,) * 3)
    target = export(source, out=tmp_path / "out", formats="savedmodel", measure_speed=False)
    result = _standard_conversion(target, (32, 32, 3))
    assert result["finite"] and result["diff"] <= 1e-4, result
    assert not {"READ_VARIABLE", "VAR_HANDLE"} & set(result["ops"]), result["ops"]


def test_a_broken_calibration_is_refused_and_leaves_nothing(trained_run, tmp_path):
    """One black image calibrates every activation range to a single value: the accuracy gate
    refuses the result, names the format and both figures, and writes nothing."""
    black = np.zeros((1, 32, 32, 3), np.float32)
    out = tmp_path / "exports"
    for name in INT8:
        with pytest.raises(ExportError, match=rf"^{name}: top-1 accuracy .* points below"):
            export(load_source(trained_run), out=out, formats=name, calibration=black)
        assert not out.exists()  # not even the folders the export made
    target = export(load_source(trained_run), out=out, formats="tflite_int8", measure_speed=False)
    figures = json.loads((target / "metadata.json").read_text())["formats"]
    assert 100 * (figures["savedmodel"]["accuracy"] - figures["tflite_int8"]["accuracy"]) <= 1


def test_predict_serves_every_format(all_formats, digit_files, capsys):
    def top(argv: list[str]) -> list[str]:
        assert predict_main([str(all_formats), *map(str, digit_files), "--top-k", "1", *argv]) == 0
        return [line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:1] == " "]

    expected = top([])
    for argv in (
        ["--backend", "onnx"],
        ["--backend", "tflite"],
        ["--backend", "tflite", "--precision", "float16"],
    ):
        assert top(argv) == expected, argv
    for argv in (
        ["--backend", "onnx", "--precision", "int8"],
        ["--backend", "tflite", "--precision", "int8"],
    ):
        assert len(top(argv)) == len(digit_files), argv
    # A file given by its path decides the backend.
    assert predict_main([str(all_formats / "model_int8.tflite"), str(digit_files[0])]) == 0
    capsys.readouterr()
    assert predict_main([str(all_formats), str(digit_files[0]), "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--backend tf --precision int8: no such format" in err


def test_a_tampered_int8_file_is_refused(all_formats, digit_files, tmp_path, capsys):
    version = Path(shutil.copytree(all_formats, tmp_path / "v"))
    data = bytearray((version / "model_int8.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (version / "model_int8.tflite").write_bytes(bytes(data))
    for argv in (
        [str(version), "--backend", "tflite", "--precision", "int8"],
        [str(version / "model_int8.tflite")],
    ):
        assert predict_main([*argv, str(digit_files[0])]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "model_int8.tflite does not match the sha256 in metadata.json" in err
    # The other formats of the version are still served.
    assert predict_main([str(version), str(digit_files[0]), "--backend", "tflite"]) == 0


def test_the_command_line_refuses_bad_formats_and_int8_without_images(tmp_path, capsys):
    model = zoo.create_model("resnet20", input_shape=(32, 32, 3), classes=10, width=0.125)
    model.save(tmp_path / "m.keras")
    keras_file = [
        str(tmp_path / "m.keras"),
        "--mean",
        "0.5",
        "0.5",
        "0.5",
        "--std",
        "0.2",
        "0.2",
        "0.2",
    ]
    out = ["--out", str(tmp_path / "out")]
    assert export_main([*keras_file, *out, "--formats", "tflite,tflit_int8"]) == 2
    assert "--formats tflit_int8: unknown format" in capsys.readouterr().err
    assert export_main([*keras_file, *out, "--formats", "tflite_int8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --data DATASET" in err
    assert not (tmp_path / "out").exists()
    # With labelled images (an untrained model: any accuracy goes), it exports.
    argv = [*keras_file, *out, "--formats", "tflite_int8", "--data", "digits", "--no-speed"]
    assert export_main([*argv, "--max-accuracy-drop", "100"]) == 0
    printed = capsys.readouterr().out
    assert "measured on digits:validation (180 images)" in printed and "tflite_int8" in printed


def test_the_summary_names_the_machine(all_formats, capsys):
    metadata = json.loads((all_formats / "metadata.json").read_text())
    text = summary(all_formats, metadata)
    assert metadata["measured_on"]["cpu"] in text
    assert [line.split()[0] for line in text.splitlines()[3:]] == list(FORMATS)
    assert sys.platform != "linux" or metadata["measured_on"]["cpu"] != "unknown"
