"""Export and predict under stress: concurrent exports of one name, models that end in softmax,
bad normalisation, tampered or damaged exports, bad output folders and killed exports' leftovers.

The models are tiny (one 4-filter convolution, 32x32 inputs); most exports skip ONNX."""

import errno
import fcntl
import json
import os
import shutil
import threading
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from zoo.config import TrainConfig
from zoo.export import LOCK_NAME, ExportError, export, load_source
from zoo.export import main as export_main
from zoo.predict import main as predict_main

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
NORM = ["--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25"]


def tiny_model(head: str) -> keras.Model:
    """3 classes; the bias spreads the classes apart, so applying softmax twice shows."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=4)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    bias = keras.initializers.Constant([2.0, 0.0, -2.0])
    activation = {"dense_softmax": "softmax", "sigmoid": "sigmoid"}.get(head)
    x = keras.layers.Dense(3, activation=activation, bias_initializer=bias)(x)
    if head == "softmax_layer":
        x = keras.layers.Softmax()(x)
    elif head == "activation_softmax":
        x = keras.layers.Activation("softmax")(x)
    return keras.Model(inputs, x, name=f"tiny_{head}")


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for head in ("logits", "dense_softmax", "softmax_layer", "activation_softmax", "sigmoid"):
        paths[head] = folder / f"{head}.keras"
        tiny_model(head).save(paths[head])
    return paths


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "image.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def exported(keras_files, tmp_path_factory) -> Path:
    """A tiny export with model.onnx; tests damage copies of it."""
    source = load_source(keras_files["logits"], mean=MEAN, std=STD)
    return export(source, out=tmp_path_factory.mktemp("exports"), name="tiny")


@pytest.fixture
def copy(exported, tmp_path) -> Path:
    target = tmp_path / "tiny" / "1"
    shutil.copytree(exported, target)
    return target


def error_line(capsys) -> str:
    """The one ``error:`` line on stderr (TensorFlow may log other lines), no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """What ``folder`` holds besides an export name folder's lock file."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)


# 1. Concurrent exports of one name ---------------------------------------------------------


@pytest.mark.parametrize("version", [None, 1])
def test_concurrent_exports_never_replace_each_other(keras_files, tmp_path, monkeypatch, version):
    """Both exports finish writing before either claims a version (a barrier after the
    SavedModel is saved). Auto-numbered ones get different versions; for one explicit version
    exactly one succeeds and the other is refused."""
    barrier = threading.Barrier(2, timeout=120)
    save = tf.saved_model.save

    def save_then_wait(*args, **kwargs):
        save(*args, **kwargs)
        barrier.wait()

    monkeypatch.setattr(tf.saved_model, "save", save_then_wait)
    sources = [load_source(keras_files["logits"], mean=MEAN, std=STD) for _ in range(2)]
    results: list = [None, None]

    def run(i: int) -> None:
        try:
            results[i] = export(sources[i], out=tmp_path, name="m", version=version, onnx=False)
        except Exception as err:  # recorded and checked below
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if version is None:
        assert sorted(str(r.name) for r in results) == ["1", "2"], results
        for result in results:
            assert json.loads((result / "metadata.json").read_text())["version"] == int(result.name)
    else:
        errors = [r for r in results if isinstance(r, Exception)]
        assert len(errors) == 1 and isinstance(errors[0], ExportError), results
        message = str(errors[0])
        assert "version 1" in message and "--overwrite" in message and "--version" in message
    assert leftovers(tmp_path / "m") == (["1", "2"] if version is None else ["1"])


@pytest.mark.parametrize("content", [True, False], ids=["full", "empty"])
def test_a_version_that_appears_meanwhile_is_never_replaced(
    keras_files, tmp_path, monkeypatch, content
):
    """Another export (or anyone) creates version 2 while this one writes: an explicit
    ``version=2`` is refused, even when the newcomer is an empty folder."""
    save = tf.saved_model.save

    def save_and_plant(*args, **kwargs):
        save(*args, **kwargs)
        (tmp_path / "m" / "2").mkdir()
        if content:
            (tmp_path / "m" / "2" / "theirs.txt").write_text("kept")

    monkeypatch.setattr(tf.saved_model, "save", save_and_plant)
    source = load_source(keras_files["logits"], mean=MEAN, std=STD)
    with pytest.raises(ExportError, match=r"version 2 .*--overwrite.*--version"):
        export(source, out=tmp_path, name="m", version=2, onnx=False)
    assert leftovers(tmp_path / "m") == ["2"]
    assert leftovers(tmp_path / "m" / "2") == (["theirs.txt"] if content else [])


def test_auto_version_skips_a_version_that_appears_meanwhile(keras_files, tmp_path, monkeypatch):
    save = tf.saved_model.save

    def save_and_plant(*args, **kwargs):
        save(*args, **kwargs)
        (tmp_path / "m" / "1").mkdir()
        (tmp_path / "m" / "1" / "theirs.txt").write_text("kept")

    monkeypatch.setattr(tf.saved_model, "save", save_and_plant)
    source = load_source(keras_files["logits"], mean=MEAN, std=STD)
    target = export(source, out=tmp_path, name="m", onnx=False)
    assert target.name == "2" and (tmp_path / "m" / "1" / "theirs.txt").read_text() == "kept"
    assert json.loads((target / "metadata.json").read_text())["version"] == 2


# 2. Models that already end in softmax -----------------------------------------------------


@pytest.mark.parametrize(
    "head, onnx",
    [
        ("logits", True),
        ("dense_softmax", True),
        ("softmax_layer", False),
        ("activation_softmax", False),
    ],
)
def test_served_probabilities_are_the_models_own(keras_files, tmp_path, head, onnx):
    source = load_source(keras_files[head], mean=MEAN, std=STD)
    target = export(source, out=tmp_path, onnx=onnx)
    pixels = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    outputs = np.asarray(source.model((pixels / 255 - 0.5) / 0.25))
    expected = outputs if head != "logits" else np.asarray(keras.ops.softmax(outputs))
    assert expected[:, 0].mean() > 0.6  # the classes are well apart: a second softmax shows
    served = tf.saved_model.load(str(target)).signatures["serving_default"](
        images=tf.constant(pixels)
    )
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(served["classes"].numpy(), expected.argmax(axis=1))
    metadata = json.loads((target / "metadata.json").read_text())
    assert metadata["model_output"]["kind"] == ("logits" if head == "logits" else "probabilities")
    if onnx:
        import onnxruntime

        session = onnxruntime.InferenceSession(
            str(target / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        probabilities = session.run(["probabilities"], {"images": pixels})[0]
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_an_output_activation_that_is_not_softmax_is_refused(keras_files, tmp_path, capsys):
    argv = [str(keras_files["sigmoid"]), "--out", str(tmp_path / "out"), "--no-onnx", *NORM]
    assert export_main(argv) == 2
    line = error_line(capsys)
    assert "sigmoid" in line and "softmax" in line
    assert not (tmp_path / "out").exists()


# 3. Normalisation flags --------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, values",
    [("--std", "0 0 0"), ("--std", "0.2 -0.2 0.2"), ("--std", "nan 1 1"), ("--mean", "inf 0 0")],
)
def test_bad_mean_or_std_is_refused(keras_files, tmp_path, capsys, flag, values):
    norm = {"--mean": ["0.5"] * 3, "--std": ["0.25"] * 3, flag: values.split()}
    argv = [str(keras_files["logits"]), "--out", str(tmp_path / "out"), "--no-onnx"]
    argv += ["--mean", *norm["--mean"], "--std", *norm["--std"]]
    assert export_main(argv) == 2
    assert error_line(capsys).startswith(f"error: {flag} must be")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=flag.lstrip("-")):
        load_source(keras_files["logits"], mean=norm["--mean"], std=norm["--std"])


# 4. Integrity ------------------------------------------------------------------------------


def test_a_changed_onnx_file_is_not_served(copy, image_file, capsys):
    import onnx

    model = onnx.load(copy / "model.onnx")
    model.doc_string = "changed after the export"
    onnx.save(model, copy / "model.onnx")
    argv = [str(copy), str(image_file), "--backend", "onnx"]
    assert predict_main(argv) == 2
    assert error_line(capsys) == (
        f"error: {copy}/model.onnx does not match the sha256 in metadata.json: the export was "
        "changed or damaged; export again or pass --no-verify."
    )
    assert predict_main([*argv, "--no-verify"]) == 0  # still a valid model: served if asked


def test_changed_weights_are_not_served(copy, image_file, capsys):
    data = next((copy / "variables").glob("variables.data-*"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert predict_main([str(copy), str(image_file)]) == 2
    assert f"{data} does not match the sha256" in error_line(capsys)


# 5. Clear errors ---------------------------------------------------------------------------


def test_a_garbage_keras_file_is_reported(tmp_path, capsys):
    path = tmp_path / "garbage.keras"
    path.write_text("not a zip file")
    assert export_main([str(path), "--out", str(tmp_path / "out"), *NORM]) == 2
    line = error_line(capsys)
    assert str(path) in line and "not a readable .keras model" in line


@pytest.mark.parametrize("broken", ["config.json", "data.json"])
def test_a_corrupt_run_directory_is_reported(tmp_path, capsys, broken):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(TrainConfig().to_json())
    data = {"class_names": ["a", "b"], "input_shape": [32, 32, 3], "mean": MEAN, "std": STD}
    (run / "data.json").write_text(json.dumps(data))
    (run / broken).write_text("{truncated")
    assert export_main([str(run), "--out", str(tmp_path / "out")]) == 2
    line = error_line(capsys)
    assert str(run / broken) in line and "not valid JSON" in line


@pytest.mark.parametrize("opset", ["0", "5", "99", "-1"])
def test_an_opset_tf2onnx_cannot_use_is_refused_up_front(keras_files, tmp_path, capsys, opset):
    out = tmp_path / "out"
    assert (
        export_main([str(keras_files["logits"]), "--out", str(out), "--opset", opset, *NORM]) == 2
    )
    assert error_line(capsys).startswith(f"error: --opset {opset} is not supported")
    assert not out.exists()


def test_a_failed_onnx_conversion_is_reported_and_cleaned_up(
    keras_files, tmp_path, capsys, monkeypatch
):
    import tf2onnx

    def fail(*args, **kwargs):
        raise RuntimeError("simulated tf2onnx failure\nwith a second line")

    monkeypatch.setattr(tf2onnx.convert, "from_function", fail)
    out = tmp_path / "out"
    assert export_main([str(keras_files["logits"]), "--out", str(out), *NORM]) == 2
    line = error_line(capsys)
    assert "ONNX conversion" in line and "simulated tf2onnx failure" in line
    assert "--no-onnx" in line
    assert not out.exists()  # nothing half-made: no version, no temporary or empty folder


def _raise_for(path_part: str, code: int, real):
    def patched(path, *args, **kwargs):
        if path_part in str(path):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    return patched


@pytest.mark.parametrize("problem", ["file", "too_long", "read_only", "disk_full"])
def test_unwritable_output_folders_are_reported(
    keras_files, tmp_path, capsys, monkeypatch, problem
):
    out = tmp_path / "out"
    if problem == "file":
        out.write_text("a file, not a folder")
    elif problem == "too_long":
        out = tmp_path / ("x" * 300)
    elif problem == "read_only":  # root ignores permissions: the mount is read-only instead
        monkeypatch.setattr(os, "mkdir", _raise_for(str(out), errno.EROFS, os.mkdir))
    else:
        monkeypatch.setattr(
            Path, "write_text", _raise_for("metadata.json", errno.ENOSPC, Path.write_text)
        )
    argv = [str(keras_files["logits"]), "--out", str(out), "--no-onnx", *NORM]
    assert export_main(argv) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: cannot write {out}") and "--out" in line
    reason = {"file": "Not a directory", "too_long": "File name too long"}
    reason.update(read_only="Read-only file system", disk_full="No space left on device")
    assert reason[problem] in line
    # Nothing half-made: no version, temporary folder or folder this export made.
    assert leftovers(tmp_path) == (["out"] if problem == "file" else [])


@pytest.mark.parametrize("content", ["not json", "{}", '{"class_names": "abc"}'])
def test_a_corrupt_metadata_file_is_reported(copy, image_file, capsys, content):
    (copy / "metadata.json").write_text(content)
    assert predict_main([str(copy), str(image_file)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {copy}/metadata.json ") and "export again" in line


@pytest.mark.parametrize(
    "damage, backend, named",
    [
        ("remove saved_model.pb", "tf", "saved_model.pb"),
        ("garble saved_model.pb", "tf", ""),
        ("remove variables", "tf", ""),
        ("garble model.onnx", "onnx", "model.onnx"),
        ("remove model.onnx", "onnx", "model.onnx"),
    ],
)
def test_a_damaged_export_is_reported_even_without_verification(
    copy, image_file, capsys, damage, backend, named
):
    action, name = damage.split()
    if action == "remove":
        (shutil.rmtree if (copy / name).is_dir() else os.remove)(copy / name)
    else:
        (copy / name).write_bytes(b"garbage")
    for verify in ([], ["--no-verify"]):
        assert predict_main([str(copy), str(image_file), "--backend", backend, *verify]) == 2
        line = error_line(capsys)
        assert str(copy) in line and "export again" in line
        assert f"{copy}/{named}" in line if named else True


def test_an_onnx_path_of_an_export_without_onnx(keras_files, image_file, tmp_path, capsys):
    source = load_source(keras_files["logits"], mean=MEAN, std=STD)
    target = export(source, out=tmp_path, onnx=False)
    assert predict_main([str(target), str(image_file), "--backend", "onnx"]) == 2
    assert error_line(capsys) == (
        f"error: {target} has no model.onnx (it was exported without onnx); export again "
        "with --formats onnx, or choose another --backend/--precision."
    )
    assert predict_main([str(target / "model.onnx"), str(image_file)]) == 2
    assert error_line(capsys) == (
        f"error: {target}/model.onnx does not exist ({target} was exported without onnx); "
        f"pass {target} with --backend tf, or export again with --formats onnx."
    )


# 6. Killed exports' temporary folders ------------------------------------------------------


def test_a_killed_exports_temporary_folder_is_removed_but_not_a_live_one(keras_files, tmp_path):
    folder = tmp_path / "m"
    stale, live = folder / ".tmp-1-999999", folder / ".tmp-live"
    for path in (stale, live):
        path.mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"partial")
        (path / LOCK_NAME).touch()
    fd = os.open(live / LOCK_NAME, os.O_RDWR)  # a live export holds the lock of its folder
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        source = load_source(keras_files["logits"], mean=MEAN, std=STD)
        export(source, out=tmp_path, name="m", onnx=False)
        assert leftovers(folder) == [".tmp-live", "1"]
    finally:
        os.close(fd)


def test_predict_help_says_files_are_checked_unless_no_verify_is_given(capsys):
    """``--no-verify``'s help shows no "(default: True)" (the default of ``dest=verify``, which
    reads as if checking were skipped by default) and says checking is the default."""
    with pytest.raises(SystemExit) as exit_info:
        predict_main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    entry = text[text.index("--no-verify skip") :][:200]
    assert "checked unless this is given" in entry and "default: True" not in entry
