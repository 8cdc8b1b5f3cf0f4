"""The training engine end to end: one-step equivalence across replicas, tracing, resume after
SIGKILL, the NaN guard, precisions, transfer learning and the CLI. The engine's parts (callbacks,
run directory, steps per execution, evaluation under replicas) have their own test files."""

import csv
import json
import socket
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import at, checkpoint_arrays, tiny
from scripts import child_env, finish, run_python, start_module

import zoo
from zoo.config import RunOptions, TrainConfig
from zoo.train import build_parser, main
from zoo.training import Trainer, TrainingDiverged, WarmupSchedule, resolve_jit_compile

# Engine -------------------------------------------------------------------------------------


def test_fit_writes_a_complete_run_directory_and_traces_each_step_once(tmp_path):
    trainer = Trainer(tiny(epochs=3), options=at(tmp_path / "run"))
    metrics = trainer.fit().metrics
    run = tmp_path / "run"
    for name in (
        "config.json",
        "data.json",
        "history.csv",
        "metrics.json",
        "curves.png",
        "channel_stats.json",
    ):
        assert (run / name).is_file(), name
    assert TrainConfig.load(run / "config.json") == trainer.config
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert json.loads((run / "metrics.json").read_text()) == metrics
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["best_epoch"] in (1, 2, 3)
    assert json.loads((run / "data.json").read_text())["class_names"] == [str(d) for d in range(10)]
    assert tf.train.latest_checkpoint(run / "checkpoints").endswith("epoch-3")
    assert tf.train.latest_checkpoint(run / "best") is not None
    assert list((run / "tensorboard").iterdir())
    # Static graph: each step function was traced once over three epochs.
    assert trainer.train_function.experimental_get_tracing_count() == 1
    assert trainer.eval_function.experimental_get_tracing_count() == 1


def test_default_dataset_trains_without_flips():
    from zoo.training.data import TrainData

    assert TrainData(tiny(), tf.distribute.get_strategy()).augment == "cifar,flip=false"
    with_mixup = TrainData(tiny(augment="auto,mixup=0.2"), tf.distribute.get_strategy())
    assert with_mixup.augment == "cifar,flip=false,mixup=0.2"


def test_mixed_bfloat16_trains_on_cpu(tmp_path):
    trainer = Trainer(tiny(precision="mixed_bfloat16"), options=at(tmp_path / "run"))
    metrics = trainer.fit().metrics
    assert trainer.model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    assert trainer.model.get_layer("predictions").compute_dtype == "float32"
    with open(tmp_path / "run" / "history.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert metrics["val_accuracy"] > 0.1  # better than chance after two epochs


def test_trained_model_saves_loads_and_clones_with_its_optimizer(tmp_path):
    # The engine compiles its model with its own optimizer classes: Keras must find them when
    # it loads or clones the model (it raised "Could not locate class 'SGD'" before).
    trainer = Trainer(tiny(epochs=1), options=at(tmp_path / "run"))
    trainer.fit()
    trainer.model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer) is type(trainer.optimisation.optimizer)
    images = np.random.default_rng(0).uniform(-1, 1, (4, *trainer.model.input_shape[1:]))
    np.testing.assert_allclose(loaded(images), trainer.model(images), atol=1e-6)
    clone = keras.models.clone_model(trainer.model)
    assert type(clone.optimizer) is type(trainer.optimisation.optimizer)


def test_jit_compile_is_auto_on_off_and_auto_is_off_on_a_cpu(tmp_path):
    assert TrainConfig().jit_compile == "auto" and not resolve_jit_compile("auto")  # no GPU here
    # Python's booleans, and older config.json files, still mean on and off.
    assert (
        TrainConfig(jit_compile=True).jit_compile,
        TrainConfig(jit_compile=False).jit_compile,
    ) == (
        "on",
        "off",
    )
    with pytest.raises(ValueError, match="jit_compile must be auto, on or off"):
        TrainConfig(jit_compile="fast")
    assert build_parser().parse_args(["--jit-compile", "on"]).jit_compile == "on"
    trainer = Trainer(tiny(epochs=1, jit_compile="on"), options=at(tmp_path / "run"))
    trainer.setup()
    assert trainer.steps.jit_compile and ", XLA," in trainer.describe()
    assert trainer.steps.train(iter(trainer.train_ds), 2)[3] > 0  # it runs


@pytest.mark.slow
def test_mixed_float16_uses_loss_scaling_and_tracks_float32(tmp_path):
    losses = {}
    for precision in ("float32", "mixed_float16"):
        run = tmp_path / precision
        trainer = Trainer(tiny(epochs=1, precision=precision, clip_norm=1.0), options=at(run))
        trainer.fit()
        with open(run / "history.csv") as f:
            losses[precision] = float(next(csv.DictReader(f))["loss"])
    assert isinstance(trainer.optimisation.optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.model.get_layer("conv1_conv").compute_dtype == "float16"
    assert losses["mixed_float16"] == pytest.approx(losses["float32"], abs=0.02)


@pytest.mark.slow
def test_overfit_batches_drives_the_loss_down(tmp_path):
    """CS231n's check: one fixed batch, no augmentation, no decay, and the model memorises it."""
    config = tiny(
        width=0.25,
        batch_size=32,
        epochs=50,
        overfit_batches=1,
        learning_rate=0.1,
        warmup_epochs=0,
        weight_decay=0.0,
        schedule="constant",
    )
    trainer = Trainer(config, options=at(tmp_path / "run"))
    trainer.fit()
    assert trainer.data.augment == "none" and trainer.data.steps_per_epoch == 1
    with open(tmp_path / "run" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["loss"]) == pytest.approx(np.log(10), abs=0.1)  # chance at the start
    assert float(rows[-1]["loss"]) < 0.35 and float(rows[-1]["accuracy"]) == 1.0


def test_nan_guard_stops_with_the_reason_and_keeps_a_loadable_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["--width", "0.125", "--epochs", "2", "--learning-rate", "1e12", "--warmup-epochs", "0"]
    assert main([*argv, "--run-dir", str(run)]) == 3
    err = capsys.readouterr().err
    assert "error: loss became" in err and "Last good checkpoint" in err, err[-2000:]
    last = tf.train.latest_checkpoint(run / "checkpoints")
    assert last is not None
    arrays = checkpoint_arrays(last)
    assert arrays and all(
        np.isfinite(a).all() for a in arrays.values() if np.issubdtype(a.dtype, np.floating)
    )


def test_resume_continues_the_schedule_and_history(tiny_run):
    trainer = Trainer.resume(tiny_run, epochs=3, options=at(tiny_run))
    trainer.fit()
    assert trainer.start_epoch == 2
    latest = checkpoint_arrays(tf.train.latest_checkpoint(tiny_run / "checkpoints"))
    iterations = [
        v for k, v in latest.items() if k.endswith("/_iterations/.ATTRIBUTES/VARIABLE_VALUE")
    ]
    assert iterations == [3 * trainer.data.steps_per_epoch]
    assert latest["epoch/.ATTRIBUTES/VARIABLE_VALUE"] == 3
    with open(tiny_run / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


def image_folder(root: Path, classes: int = 3, per_class: int = 24) -> Path:
    """A folder dataset of 32x32 PNGs whose classes differ in brightness."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, size=(32, 32, 3)) + 80 * c
            Image.fromarray(pixels.astype("uint8")).save(root / f"class_{c}" / f"{i}.png")
    return root


def test_transfer_learning_keeps_the_backbone_and_makes_a_new_head(tiny_run_source, tmp_path):
    source = tiny_run_source
    folder = image_folder(tmp_path / "images")
    config = tiny(
        epochs=6,
        batch_size=16,
        dataset=f"folder:{folder}",
        init_from=str(source),
        freeze_backbone=True,
        warmup_epochs=0,
    )
    trainer = Trainer(config, options=at(tmp_path / "target"))
    trainer.setup()
    assert trainer.data.classes == 3 and trainer.model.get_layer("predictions").units == 3
    reference = zoo.create_model("resnet20", width=0.125, classes=10)
    tf.train.Checkpoint(model=reference).restore(
        tf.train.latest_checkpoint(source / "best")
    ).expect_partial()
    np.testing.assert_array_equal(
        trainer.model.get_layer("conv4_block3_2_conv").kernel.numpy(),
        reference.get_layer("conv4_block3_2_conv").kernel.numpy(),
    )
    assert [v.path for v in trainer.optimisation.variables] == [
        "predictions/kernel",
        "predictions/bias",
    ]
    frozen = trainer.model.get_layer("conv1_conv").kernel.numpy()
    head = trainer.model.get_layer("predictions").kernel.numpy()
    metrics = trainer.fit().metrics
    np.testing.assert_array_equal(trainer.model.get_layer("conv1_conv").kernel.numpy(), frozen)
    assert not np.array_equal(trainer.model.get_layer("predictions").kernel.numpy(), head)
    history = (tmp_path / "target" / "history.csv").read_text()
    assert metrics["val_accuracy"] > 1 / 3, history  # brightness separates the classes


def test_backbone_learning_rate_multiplier_is_per_variable_in_one_optimizer(tmp_path):
    trainer = Trainer(tiny(backbone_lr_mult=0.1), options=at(tmp_path / "r"))
    trainer.setup()
    optimisation = trainer.optimisation
    head = [v for v in optimisation.variables if optimisation.multiplier(v) == 1.0]
    body = [v for v in optimisation.variables if optimisation.multiplier(v) == 0.1]
    assert [v.path for v in head] == ["predictions/kernel", "predictions/bias"]
    assert len(body) == len(trainer.model.trainable_variables) - 2
    assert len(trainer.model.optimizer.variables) == 1 + len(optimisation.variables)  # momenta


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("constant", [0.0, 0.5, 1.0, 1.0, 1.0]),
        ("cosine", [0.0, 0.5, 1.0, 0.5, 0.0]),
        ("step", [0.0, 0.5, 1.0, 1.0, 0.1]),
        ("exponential", [0.0, 0.5, 1.0, 0.1**0.5, 0.1]),
    ],
)
def test_schedules_warm_up_then_decay(kind, expected):
    schedule = WarmupSchedule(
        peak=1.0, warmup_steps=2, total_steps=6, kind=kind, decay_steps=4, decay_rate=0.1
    )
    got = [float(schedule(step)) for step in (0, 1, 2, 4, 6)]
    np.testing.assert_allclose(got, expected, atol=1e-6)


# Distribution -------------------------------------------------------------------------------


def test_two_replica_step_equals_one_device_step():
    """One MirroredStrategy step over 2 logical CPUs and one default-strategy step on the same
    global batch give the same weights (a model without batch norm or dropout, whose
    statistics would legitimately differ per replica)."""
    result = run_python("""
        import tempfile, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        two = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, two)
        from zoo.config import RunOptions, TrainConfig
        from zoo.training import Trainer
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 32, 32, 3)).astype("float32")
        y = rng.integers(0, 10, size=32).astype("int64")
        weights, initial = {}, None
        for name in ("default", "mirrored"):
            cfg = TrainConfig(model="vgg11", width=0.125, dropout=0.0, batch_size=32,
                              strategy=name, schedule="constant", warmup_epochs=0,
                              learning_rate=0.05, weight_decay=5e-4, clip_norm=1.0)
            t = Trainer(cfg, options=RunOptions(run_dir=tempfile.mkdtemp(), verbose=False))
            t.setup()
            assert t.strategy.num_replicas_in_sync == (2 if name == "mirrored" else 1)
            if initial is None:
                initial = [v.numpy() for v in t.model.trainable_variables]
            else:
                for v, value in zip(t.model.trainable_variables, initial):
                    v.assign(value)
            per = 32 // t.strategy.num_replicas_in_sync
            def part(ctx):
                i = ctx.replica_id_in_sync_group
                return x[i * per:(i + 1) * per], y[i * per:(i + 1) * per]
            batch = t.strategy.experimental_distribute_values_from_function(part)
            tf.function(lambda b: t.strategy.run(t.steps.replica_train_step, args=b))(batch)
            weights[name] = [v.numpy() for v in t.model.trainable_variables]
        moved = max(np.abs(a - b).max() for a, b in zip(weights["default"], initial))
        diff = max(np.abs(a - b).max() for a, b in zip(weights["default"], weights["mirrored"]))
        print("MOVED", moved, "DIFF", diff)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    moved, diff = (float(v) for v in result.stdout.split("MOVED")[1].split("DIFF"))
    assert moved > 1e-4  # the step did change the weights
    assert diff < 1e-5


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multiworker_training_with_two_local_workers(tmp_path):
    """MultiWorkerMirroredStrategy, two worker processes on loopback, one short epoch."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run = tmp_path / "run"
    args = ["--strategy", "multiworker", "--width", "0.125", "--batch-size", "64"]
    procs = []
    for index in range(2):
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        argv = [*args, "--epochs", "1", "--run-dir", str(run)]
        procs.append(start_module("zoo.train", *argv, env=child_env(TF_CONFIG=json.dumps(task))))
    outputs = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert "2 replica(s)" in outputs[0][0]
    assert tf.train.latest_checkpoint(run / "checkpoints").endswith("epoch-1")
    assert not list(run.glob(".worker-*"))  # the other worker's throw-away copies are gone
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1


# CLI ----------------------------------------------------------------------------------------


def test_cli_flags_map_one_to_one_onto_the_config():
    parser = build_parser()
    # --verbose shows TensorFlow's own log lines: a flag of the command, not of a run.
    dests = set(vars(parser.parse_args([]))) - {"resume", "verbose"}
    options = {name for name in RunOptions.__dataclass_fields__ if name != "verbose"}
    assert dests == set(TrainConfig.__dataclass_fields__) | options
    help_text = parser.format_help()
    assert "--learning-rate LEARNING_RATE" in help_text and "(default: 15)" in help_text
    flat = " ".join(help_text.split())
    assert "default: the model's recipe (python -m zoo.summary --recipes)" in flat
    assert "(default: None)" not in flat.split("--learning-rate")[2].split("--momentum")[0]
    args = parser.parse_args(["--no-nesterov", "--clip-norm", "none", "--image-size", "48"])
    assert (args.nesterov, args.clip_norm, args.image_size) == (False, None, 48)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "epochs must be an integer >= 1; got 0"),
        (["--optimizer", "adagrad"], "invalid choice: 'adagrad'"),
        (["--label-smoothing", "1.5"], "label_smoothing must be in [0, 1)"),
        (["--resume", "somewhere", "--model", "vgg11"], "drop --model"),
    ],
)
def test_cli_rejects_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "resnet5"], "Unknown model 'resnet5'. Did you mean"),
        (["--dataset", "mnist"], "Unknown source 'mnist'"),
    ],
)
def test_cli_reports_bad_names_before_creating_anything(tmp_path, capsys, argv, message):
    assert main([*argv, "--run-dir", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_resume_of_a_missing_run(capsys, tmp_path):
    assert main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_export_flag_exports_the_best_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(
        ["--width", "0.125", "--epochs", "1", "--batch-size", "64", "--run-dir", "run", "--export"]
    )
    assert code == 0
    assert "exported the best weights to saved_models/resnet20/1" in capsys.readouterr().out
    metadata = json.loads((tmp_path / "saved_models/resnet20/1/metadata.json").read_text())
    assert metadata["checkpoint"].endswith("best-1")


def test_divergence_raises_in_python(tmp_path):
    config = tiny(learning_rate=1e12, warmup_epochs=0)
    with pytest.raises(TrainingDiverged, match=r"Last good checkpoint: .*epoch-0"):
        Trainer(config, options=at(tmp_path / "run")).fit()
    assert Path(tf.train.latest_checkpoint(tmp_path / "run" / "checkpoints")).name == "epoch-0"
