"""Bad input and broken output places for ``python -m zoo.train`` and the engine: one
``error:`` line naming the file or flag, exit code 2, nothing half-made left behind, nothing
finished lost; warnings for settings that do nothing useful; a quiet TensorFlow start."""

import errno
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scripts import assert_same_layer_weights, child_env, run_python, run_script

import zoo
from zoo.config import RunOptions, TrainConfig
from zoo.train import main
from zoo.training import RunDirectory, Trainer

TINY = ["--model", "resnet20", "--width", "0.125", "--epochs", "1", "--batch-size", "8"]


def folder(root: Path, classes: tuple[str, ...] = ("a", "b"), per_class: int = 12) -> Path:
    """A folder dataset of 16x16 PNGs, one brightness per class."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(16, 16, 3)) + 60 * c
            Image.fromarray(pixels.astype("uint8")).save(root / name / f"{i}.png")
    return root


def one_error(capsys) -> str:
    """The single line on stderr, which must be an ``error:`` line (no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_an_empty_validation_split_is_refused_and_leaves_no_run(tmp_path, capsys):
    """It used to train with val_accuracy 0.0 every epoch, so best/ kept epoch 1's weights and
    that is what zoo.export shipped."""
    data = tmp_path / "data"
    folder(data / "train")
    for name in ("a", "b"):
        (data / "val" / name).mkdir(parents=True)
    runs = tmp_path / "runs"
    assert main([*TINY, "--dataset", f"folder:{data}", "--runs-dir", str(runs)]) == 2
    line = one_error(capsys)
    assert "validation split is empty" in line and str(data) in line
    assert not runs.exists() or not any(runs.iterdir())


def test_batch_size_larger_than_the_data_names_the_flag_and_a_value_that_works(tmp_path, capsys):
    data = folder(tmp_path / "data")
    argv = [*TINY, "--dataset", f"folder:{data}", "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--batch-size", "512"]) == 2
    line = one_error(capsys)
    assert "--batch-size 512" in line and "or less" in line and "drop_remainder" not in line


def test_garbage_keras_file_for_init_from_is_one_line_naming_it(tmp_path, capsys):
    garbage = tmp_path / "model.keras"
    garbage.write_bytes(b"not a zip archive at all")
    runs = tmp_path / "runs"
    code = main([*TINY, "--init-from", str(garbage), "--runs-dir", str(runs)])
    assert code == 2
    line = one_error(capsys)
    assert str(garbage) in line and "not a Keras model file" in line
    assert not runs.exists() or not any(runs.iterdir())  # nothing half-made


@pytest.mark.parametrize("name", ["model.keras", "model.weights.h5"])
def test_create_model_with_a_damaged_weights_file_names_it(tmp_path, name):
    damaged = tmp_path / name
    damaged.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match=str(damaged)):
        zoo.create_model("resnet20", width=0.125, weights=damaged)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras's, one per layer it cannot load
def test_create_model_with_weights_of_another_width_names_the_file(tmp_path):
    path = tmp_path / "narrow.keras"
    zoo.create_model("resnet20", width=0.125).save(path)
    keras.backend.clear_session()
    with pytest.raises(ValueError, match="does not hold weights for this model"):
        zoo.create_model("resnet20", width=0.25, weights=path)


@pytest.mark.parametrize("content", ["{not json", '["a", "list"]', '{"model": 3, "x": 1}'])
def test_resume_of_a_run_with_a_damaged_config_names_the_file(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(content)
    assert main(["--resume", str(run)]) == 2
    assert str(run / "config.json") in one_error(capsys)


def test_runs_dir_that_is_a_file_or_too_long_is_one_line_naming_the_flag(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for runs in (a_file, a_file / "below", tmp_path / ("x" * 300)):
        assert main([*TINY, "--runs-dir", str(runs)]) == 2
        line = one_error(capsys)
        assert "--runs-dir" in line and str(runs)[:50] in line


def test_unwritable_runs_dir_says_to_choose_a_writable_one(tmp_path, capsys, monkeypatch):
    # As root a read-only folder is still writable, so the refusal is injected where the run
    # directory is made.
    def refuse(cls, config, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr(RunDirectory, "create", classmethod(refuse))
    assert main([*TINY, "--runs-dir", str(tmp_path / "ro")]) == 2
    line = one_error(capsys)
    assert "Permission denied" in line and "can write to" in line


@pytest.mark.parametrize("where", ["history", pytest.param("checkpoint", marks=pytest.mark.slow)])
def test_full_disk_after_an_epoch_keeps_it_and_says_how_to_resume(
    tmp_path, capsys, monkeypatch, where
):
    """The disk fills in epoch 2: writing its history row (Python raises OSError) or its
    checkpoint (TensorFlow raises its own error)."""
    calls = []
    if where == "history":
        original = RunDirectory.write_history

        def full(self, rows, fields):
            calls.append(1)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "x"))
            original(self, rows, fields)

        monkeypatch.setattr(RunDirectory, "write_history", full)
    else:
        original = tf.train.CheckpointManager.save

        def full(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 3:  # the initial checkpoint, epoch 1's, then epoch 2's
                raise tf.errors.UnknownError(None, None, "epoch-2.index: No space left on device")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(tf.train.CheckpointManager, "save", full)
    run = tmp_path / "run"
    assert main([*TINY, "--batch-size", "128", "--epochs", "2", "--run-dir", str(run)]) == 2
    line = one_error(capsys)
    assert "No space left" in line and f"--resume {run}" in line
    monkeypatch.undo()
    assert main(["--resume", str(run)]) == 0  # epoch 1 was kept; epoch 2 runs again
    assert [int(r["epoch"]) for r in RunDirectory.open(run).read_history()] == [1, 2]


def test_resume_after_the_classes_changed_names_them(tmp_path, capsys):
    data = folder(tmp_path / "data")
    run = tmp_path / "run"
    argv = [*TINY, "--dataset", f"folder:{data}", "--run-dir", str(run)]
    assert main(argv) == 0
    folder(data, classes=("c",))
    capsys.readouterr()
    assert main(["--resume", str(run), "--epochs", "2"]) == 2
    line = one_error(capsys)
    assert "classes changed" in line and "new: c" in line
    assert json.loads((run / "data.json").read_text())["class_names"] == ["a", "b"]


class FailAtStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise RuntimeError("a failure before epoch 1")


def test_a_run_that_fails_before_its_first_epoch_leaves_nothing_of_its_own(tmp_path):
    config = TrainConfig(model="resnet20", width=0.125, batch_size=128, epochs=1)
    runs = tmp_path / "runs"
    trainer = Trainer(
        config, options=RunOptions(runs_dir=str(runs), verbose=False), callbacks=[FailAtStart()]
    )
    with pytest.raises(RuntimeError, match="before epoch 1"):
        trainer.fit()
    assert list(runs.iterdir()) == []
    # A --run-dir the user made keeps what it held (here a tensorboard/ folder of their own).
    mine = tmp_path / "mine"
    (mine / "tensorboard").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    trainer = Trainer(
        config, options=RunOptions(run_dir=str(mine), verbose=False), callbacks=[FailAtStart()]
    )
    with pytest.raises(RuntimeError, match="before epoch 1"):
        trainer.fit()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "tensorboard"]


def test_a_run_killed_before_its_first_checkpoint_resumes_from_init_from(tmp_path):
    """With no whole checkpoint (removed here, as a kill while writing the first leaves it),
    --resume starts the run afresh: from --init-from's weights, with the new --epochs."""
    source = tmp_path / "source.keras"
    zoo.create_model("resnet20", width=0.125, classes=10).save(source)
    keras.backend.clear_session()
    run = tmp_path / "run"
    config = TrainConfig(
        model="resnet20", width=0.125, batch_size=128, epochs=1, init_from=str(source)
    )

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(
            config, options=RunOptions(run_dir=str(run), verbose=False), callbacks=[Stop()]
        ).fit()
    shutil.rmtree(run / "checkpoints")
    trainer = Trainer.resume(run, epochs=2, options=RunOptions(verbose=False))
    trainer.setup()
    assert trainer.start_epoch == 0
    reference = keras.saving.load_model(source, compile=False)
    assert_same_layer_weights(trainer.model, reference, ("conv1_conv", "conv2_block1_1_conv"))
    assert TrainConfig.load(run / "config.json").epochs == 2


def test_settings_that_do_nothing_useful_are_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="zoo.train"):
        Trainer(TrainConfig(model="resnet20", width=0.125, freeze_backbone=True))
    assert "--freeze-backbone without --init-from" in caplog.text
    data = folder(tmp_path / "data")  # 24 images, some carved off for validation
    runs = str(tmp_path / "runs")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zoo.train"):
        code = main(
            [*TINY, "--dataset", f"folder:{data}", "--overfit-batches", "50", "--runs-dir", runs]
        )
    assert code == 0
    assert re.search(r"--overfit-batches 50 is more than the \d full batches", caplog.text)


def run_loud(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with TensorFlow's log level as a user has it (unset)."""
    return run_python(code, env=child_env(drop=("TF_CPP_MIN_LOG_LEVEL",)))


# Every ``python -m`` command of the project (the README's reference).
COMMANDS = (
    "zoo.train",
    "zoo.export",
    "zoo.predict",
    "zoo.summary",
    "tuning.search",
    "tuning.lr_find",
    "pipelines.preview",
    "zoo.preview",
    "pipelines.write",
    "benchmarks.run",
)

ENTRY_POINTS = """
    import contextlib, io, json, runpy, sys, warnings
    warnings.simplefilter("ignore", RuntimeWarning)  # runpy: module already imported
    results = {}
    for module in sys.argv[1:]:
        sys.argv, out, code = [module, "--help"], io.StringIO(), None
        try:
            with contextlib.redirect_stdout(out):
                runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            code = exit.code
        results[module] = [code, out.getvalue()]
    print("RESULT" + json.dumps(results))
"""


def test_every_command_runs_as_a_module_and_prints_its_usage():
    """Each ``python -m`` entry (its ``__main__`` block, which starts TensorFlow quietly)
    runs: one interpreter, each command's ``--help``."""
    results = run_script(ENTRY_POINTS, *COMMANDS)
    for module in COMMANDS:
        code, out = results[module]
        assert code == 0, (module, out[-2000:])
        assert out.startswith(f"usage: python -m {module}"), (module, out[:300])


def test_multiworker_without_tf_config_is_warned_about():
    result = run_loud(
        "import logging; logging.basicConfig()\n"
        "from zoo.training.runtime import resolve_strategy\n"
        "print(resolve_strategy('multiworker').num_replicas_in_sync)"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--strategy multiworker without TF_CONFIG" in result.stderr


ONEDNN_CHILD = """
    import os
    from pipelines.cli import onednn_line, start_tensorflow
    start_tensorflow(verbose=True)  # TensorFlow's own start-up lines on stderr
    print(os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
    print(onednn_line())
"""


@pytest.mark.parametrize(
    ("given", "value", "line"),
    [
        (None, "1", "oneDNN kernels on (TF_ENABLE_ONEDNN_OPTS=1, set by the zoo)"),
        ("0", "0", "oneDNN kernels off (TF_ENABLE_ONEDNN_OPTS=0, set by you)"),
    ],
    ids=["unset", "user-off"],
)
def test_the_commands_turn_onednn_on_unless_the_user_chose(given, value, line):
    """A command's TensorFlow starts with its oneDNN kernels on where the user left
    TF_ENABLE_ONEDNN_OPTS unset (TensorFlow leaves them off on some CPUs, e.g. AVX2-only AMD
    EPYCs), and TensorFlow really runs with them; a user's own setting wins."""
    env = child_env(drop=("TF_ENABLE_ONEDNN_OPTS",), TF_CPP_MIN_LOG_LEVEL="0")
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    result = run_python(ONEDNN_CHILD, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-2:] == [value, line]
    # TensorFlow's own start-up line says whether it runs them.
    assert ("oneDNN custom operations are on" in result.stderr) is (value == "1")


def test_first_screen_has_no_tensorflow_lines_and_names_the_devices(tmp_path):
    """Without TF_CPP_MIN_LOG_LEVEL set: stdout opens with the device line, and stderr holds
    the project's one error line and nothing of TensorFlow's (on a machine without a GPU it
    printed ``E0000 ... failed call to cuInit``) or of TFDS's (an absl warning about the empty
    dataset folder)."""
    (tmp_path / "cifar10" / "3.0.2").mkdir(parents=True)
    result = run_loud(
        "import sys; from zoo.train import main\n"
        f"sys.exit(main(['--dataset', 'tfds:cifar10', '--data-dir', '{tmp_path}']))"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout.splitlines()[0].startswith("devices: ")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(tmp_path) in lines[0], lines


def test_summary_of_a_huge_input_does_not_allocate_the_weights():
    """VGG-16 at 1024x1024 has 2.1 billion weights (8.6 GB of float32); counting them must not
    make them."""
    result = run_loud(
        "import re, sys; from zoo.summary import main\n"
        "code = main(['--model', 'vgg16', '--input-shape', '1024,1024', '--format', 'json'])\n"
        # VmHWM is this process image's own peak: getrusage's ru_maxrss keeps the peak of the
        # parent that forked it (a test worker holding gigabytes), across exec.
        "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
        "print('PEAK', hwm); sys.exit(code)"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout.split("PEAK")[0])
    # 14,714,688 convolution weights + fc6 32*32*512*4096 + 4096 + fc7 + fc8
    assert rows[0]["total_params"] == 2_183_080_744
    peak_kib = int(result.stdout.split("PEAK")[1])  # the child's own peak resident size
    assert peak_kib < 3 * 1024**2, f"{peak_kib / 1024**2:.1f} GiB"


def test_a_failed_export_after_training_comes_after_the_training_summary(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    Path("saved_models").write_text("a file where the exports would go")
    run = tmp_path / "run"
    assert main([*TINY, "--batch-size", "64", "--run-dir", str(run), "--export"]) == 2
    out = capsys.readouterr()
    assert "best val_accuracy at epoch 1" in out.out and f"Results: {run}" in out.out
    errors = [line for line in out.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "export failed" in errors[0], out.err
    assert (run / "metrics.json").is_file()
