"""The engine's parts: Keras callbacks, best weights by any metric, steps per execution, several
trainings in one process, batch-norm re-estimation, and the ``--resume`` command line."""

import csv
import dataclasses
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import at, checkpoint_arrays, history_rows, tiny
from scripts import run_python

from zoo.config import TrainConfig
from zoo.train import main
from zoo.training import Trainer, fit, load_model, resolve_runtime
from zoo.training.runtime import dtype_policy


class Recorder(keras.callbacks.Callback):
    """A plain Keras callback: what the engine calls, and with which logs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.epoch_logs: list[dict] = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(f"batch_end {batch}")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch}")
        self.epoch_logs.append(dict(logs))

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


# Callbacks ----------------------------------------------------------------------------------


def test_a_keras_callback_sees_the_logs_keras_fit_gives(tmp_path):
    recorder = Recorder()
    trainer = Trainer(
        tiny(), options=at(tmp_path / "run", steps_per_execution=1), callbacks=[recorder]
    )
    history = trainer.fit()
    assert recorder.calls[0] == "train_begin" and recorder.calls[-1] == "train_end"
    assert recorder.calls.count("epoch_end 0") == recorder.calls.count("epoch_end 1") == 1
    assert recorder.calls.count("batch_end 18") == 2  # 19 steps an epoch, one step per call
    assert recorder.model is not None and recorder.model.name.startswith("resnet20")
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert all(math.isfinite(logs[key]) for logs in recorder.epoch_logs), key
    # The History returned is Keras's, and matches history.csv.
    assert isinstance(history, keras.callbacks.History)
    rows = history_rows(tmp_path / "run")
    assert history.history["val_accuracy"] == pytest.approx(
        [float(r["val_accuracy"]) for r in rows]
    )
    assert history.metrics["run_dir"] == str(tmp_path / "run")
    # The update/weight check saw every kernel move, at a sane scale for SGD at 0.1.
    ratios = trainer.update_ratios.ratios
    assert len(ratios) == len(trainer.optimisation.kernels)
    assert all(0 < r < 1 for r in ratios.values()) and 1e-5 < trainer.update_ratios.median < 0.1


def test_keras_early_stopping_stops_the_engine(tmp_path):
    """EarlyStopping with a threshold no epoch can pass stops after ``patience + 1`` epochs."""
    # The default monitor with mode "auto": Keras must find that accuracy is maximised.
    stopper = keras.callbacks.EarlyStopping(monitor="val_accuracy", min_delta=100.0, patience=1)
    history = fit(tiny(epochs=6), options=at(tmp_path / "run"), callbacks=[stopper])
    assert len(history.history["loss"]) == 2 and stopper.stopped_epoch == 1
    assert [int(r["epoch"]) for r in history_rows(tmp_path / "run")] == [1, 2]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 2


def test_a_callback_may_stop_training_and_keras_csv_logger_and_tensorboard_work(tmp_path):
    class StopAfterFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    log = tmp_path / "keras.csv"
    fit(
        tiny(epochs=4),
        options=at(tmp_path / "run"),
        callbacks=[
            keras.callbacks.CSVLogger(str(log)),
            keras.callbacks.TensorBoard(str(tmp_path / "tb")),
            StopAfterFirst(),
        ],
    )
    assert list((tmp_path / "tb" / "train").iterdir())  # Keras's TensorBoard wrote its logs
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0"] and "val_accuracy" in rows[0]


def test_best_weights_follow_the_monitored_metric(tmp_path):
    """``monitor=val_loss`` keeps the epoch of the lowest validation loss in best/."""
    config = tiny(epochs=4, monitor="val_loss", learning_rate=0.4, bn_recalibration=0)
    history = fit(config, options=at(tmp_path / "run"))
    losses = history.history["val_loss"]
    best = int(np.argmin(losses)) + 1
    assert history.metrics["best_epoch"] == best and history.metrics["monitor"] == "val_loss"
    assert tf.train.latest_checkpoint(tmp_path / "run" / "best").endswith(f"best-{best}")
    assert config.monitor_mode == "min" and tiny().monitor_mode == "max"


def test_early_stopping_flag(tmp_path):
    config = tiny(epochs=5, monitor="loss", mode="max", early_stopping=1)
    history = fit(config, options=at(tmp_path / "run"))  # the loss falls: never "better"
    assert len(history.history["loss"]) == 2


def test_a_trainer_runs_once_and_a_failed_setup_leaves_no_run(tmp_path):
    trainer = Trainer(tiny(epochs=1), options=at(tmp_path / "run"))
    trainer.fit()
    with pytest.raises(RuntimeError, match=r"Trainer\.resume"):
        trainer.fit()
    # A source no layer of which fits: nothing trained, so no half-made run is left behind.
    bad = tiny(model="vgg11", init_from=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="no layer of"):
        Trainer(bad, options=at(tmp_path / "bad")).fit()
    assert not (tmp_path / "bad").exists()


# Steps per execution ------------------------------------------------------------------------


def test_steps_per_execution_is_bit_identical_and_traced_once(tmp_path):
    """Four steps per call over 19-step epochs (calls of 4, 4, 4, 4, 3) end with exactly the
    weights of one step per call, under deterministic ops; each function is traced once."""
    config = tiny(epochs=2, deterministic=True, model="vgg11_bn")
    arrays, trainers = {}, {}
    for n in (1, 4):
        recorder = Recorder()
        trainer = Trainer(
            config, options=at(tmp_path / f"n{n}", steps_per_execution=n), callbacks=[recorder]
        )
        trainer.fit()
        trainers[n] = (trainer, recorder)
        arrays[n] = checkpoint_arrays(tf.train.latest_checkpoint(tmp_path / f"n{n}/checkpoints"))
    assert arrays[1].keys() == arrays[4].keys()
    for name in arrays[1]:
        np.testing.assert_array_equal(arrays[1][name], arrays[4][name], err_msg=name)
    trainer, recorder = trainers[4]
    ends = [c for c in recorder.calls if c.startswith("batch_end")][:5]
    assert ends == ["batch_end 3", "batch_end 7", "batch_end 11", "batch_end 15", "batch_end 18"]
    assert trainer.train_function.experimental_get_tracing_count() == 1
    assert trainer.eval_function.experimental_get_tracing_count() == 1
    rows = {n: history_rows(tmp_path / f"n{n}") for n in (1, 4)}
    for a, b in zip(rows[1], rows[4], strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5), key


# Process-wide state -------------------------------------------------------------------------


@pytest.mark.slow
def test_trainings_with_different_precisions_run_one_after_another(tmp_path):
    """As a tuner runs trials: each run builds under its own precision and leaves Keras's
    global policy and op determinism as it found them."""
    from tensorflow.python.framework import config as tf_config

    assert keras.config.dtype_policy().name == "float32"
    assert not tf_config.is_op_determinism_enabled()
    for i, precision in enumerate(("mixed_bfloat16", "float32", "mixed_float16", "float32")):
        trainer = Trainer(
            tiny(epochs=1, precision=precision, deterministic=precision == "float32"),
            options=at(tmp_path / f"run{i}"),
        )
        history = trainer.fit()
        compute = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(
            precision, "float32"
        )
        assert trainer.model.get_layer("conv1_conv").compute_dtype == compute
        assert math.isfinite(history.history["loss"][0])
        assert keras.config.dtype_policy().name == "float32"
        assert not tf_config.is_op_determinism_enabled()


def test_runtime_and_config_must_agree(tmp_path):
    runtime = resolve_runtime(precision="mixed_bfloat16")
    with pytest.raises(ValueError, match="asks for float32"):
        Trainer(tiny(precision="float32"), options=at(tmp_path / "r"), runtime=runtime)
    with dtype_policy("mixed_float16"):
        assert keras.config.dtype_policy().name == "mixed_float16"
    assert keras.config.dtype_policy().name == "float32"


# --precision auto ---------------------------------------------------------------------------

AVX2_ONLY = ["fpu", "sse2", "avx", "avx2", "fma"]  # an AMD EPYC family 23, say
AVX512_BF16 = [*AVX2_ONLY, "avx512f", "avx512_vnni", "avx512_bf16"]  # AMD EPYC family 25


@pytest.mark.parametrize(
    ("gpu", "flags", "onednn", "precision", "because"),
    [
        (False, AVX2_ONLY, True, "float32", "no bfloat16 instructions"),
        (False, AVX512_BF16, True, "mixed_bfloat16", "AVX512-BF16"),
        (False, [*AVX2_ONLY, "amx_tile", "amx_bf16"], True, "mixed_bfloat16", "AMX-BF16"),
        (False, AVX512_BF16, False, "float32", "oneDNN kernels are off"),
        (False, [], True, "float32", "no bfloat16 instructions"),  # flags unknown (not Linux)
        (True, AVX2_ONLY, True, "mixed_float16", "a GPU"),
        (True, AVX512_BF16, True, "mixed_float16", "a GPU"),
    ],
)
def test_precision_auto_follows_the_hardware(gpu, flags, onednn, precision, because):
    from zoo.training import choose_precision

    choice = choose_precision("auto", gpu=gpu, flags=flags, onednn=onednn)
    assert choice.precision == precision
    assert because in choice.reason and choice.reason.startswith("auto: ")
    asked = choose_precision("float32", gpu=gpu, flags=flags, onednn=onednn)
    assert (asked.precision, asked.reason) == ("float32", "asked for")


def test_precision_auto_reads_this_cpu_and_the_onednn_variable(monkeypatch):
    from zoo.training import choose_precision, cpu_flags, resolve_precision

    flags = cpu_flags()
    with open("/proc/cpuinfo") as f:
        listed = next(line for line in f if line.startswith(("flags", "Features")))
    assert flags == frozenset(listed.partition(":")[2].split())
    has_bf16 = bool(flags & {"avx512_bf16", "amx_bf16"}) and not tf.config.list_logical_devices(
        "GPU"
    )
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    assert resolve_precision("auto") == (
        "mixed_bfloat16" if has_bf16 else choose_precision("auto", onednn=True).precision
    )
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    if not tf.config.list_logical_devices("GPU"):
        assert resolve_precision("auto") == "float32"


def test_the_start_line_says_which_precision_and_why(tmp_path):
    trainer = Trainer(tiny(epochs=1, precision="auto"), options=at(tmp_path / "run"))
    trainer.setup()
    reason = trainer.runtime.precision_reason
    assert reason.startswith("auto: ")
    assert f"{trainer.runtime.precision} ({reason})" in trainer.describe()


def test_a_resumed_run_keeps_the_precision_it_started_with(tiny_run):
    """``auto`` resolves once, when a run starts: on another machine (or after ``auto`` changed)
    a resumed run goes on in the precision its checkpoints were trained in."""
    from zoo.training import RunDirectory, resolve_precision, resolve_runtime_for

    here = resolve_precision("auto")
    other = "float32" if here != "float32" else "mixed_bfloat16"
    run = RunDirectory.open(tiny_run)
    run.write_config(dataclasses.replace(run.read_config(), precision="auto"))
    data = json.loads((tiny_run / "data.json").read_text())
    (tiny_run / "data.json").write_text(json.dumps({**data, "precision": other}))
    assert RunDirectory.open(tiny_run).trained_precision() == other
    trainer = Trainer.resume(tiny_run, epochs=3, options=at(tiny_run))
    assert trainer.runtime.precision == other
    assert "started with" in trainer.runtime.precision_reason
    asked = resolve_runtime_for(tiny(precision=here), trained_precision=other)
    assert asked.precision == here  # a precision asked for by name is what runs


# Batch-norm re-estimation -------------------------------------------------------------------


def test_recalibration_sets_moving_statistics_to_the_batch_average(tmp_path):
    """After `recalibrate`, the first batch norm's moving mean and variance are the plain
    average of the per-batch statistics of its input over the calibration batches."""
    trainer = Trainer(tiny(bn_recalibration=3), options=at(tmp_path / "run"))
    trainer.setup()
    conv = keras.Model(trainer.model.inputs, trainer.model.get_layer("conv1_conv").output)
    batches = list(trainer.data.calibration_dataset(0).take(3))
    means, variances = [], []
    for images, _ in batches:
        out = conv(images, training=True).numpy().reshape(-1, conv.output.shape[-1])
        means.append(out.mean(0))
        variances.append(out.var(0))
    trainer.recalibrate()
    bn = trainer.model.get_layer("conv1_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean(means, 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), np.mean(variances, 0), rtol=1e-4, atol=1e-5
    )


# The command line and --resume --------------------------------------------------------------


def test_resume_flags_are_read_as_given(tiny_run, capsys, monkeypatch):
    run = tiny_run  # two epochs done
    assert main(["--resume", str(run), "--epochs=3"]) == 0  # `=` form
    assert [int(r["epoch"]) for r in history_rows(run)] == [1, 2, 3]
    assert main(["--resume", str(run), "--epoch", "4"]) == 0  # an abbreviation of --epochs
    assert [int(r["epoch"]) for r in history_rows(run)] == [1, 2, 3, 4]
    capsys.readouterr()
    assert main(["--resume", str(run), "--epochs", "3"]) == 2
    assert "--epochs 3 is below the 4 epochs" in capsys.readouterr().err
    monkeypatch.chdir(run.parent)
    assert main(["--resume", str(run), "--export", "--steps-per-execution", "4"]) == 0
    assert "exported the best weights to saved_models/resnet20/1" in capsys.readouterr().out
    assert TrainConfig.load(run / "config.json").epochs == 4


def test_resume_refuses_experiment_flags_and_a_new_place(capsys):
    for argv, flag in (
        (["--resume", "r", "--learning-rate", "0.5"], "--learning-rate"),
        (["--resume", "r", "--run-dir", "elsewhere"], "--run-dir"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert f"drop {flag}" in capsys.readouterr().err


def test_load_model_gives_the_best_or_last_weights(tmp_path):
    class LastWeights(keras.callbacks.Callback):
        def on_train_end(self, logs=None):  # before the engine loads the best weights back
            self.weights = self.model.get_weights()

    run, last = tmp_path / "run", LastWeights()
    trainer = Trainer(tiny(epochs=3, monitor="loss", mode="max"), options=at(run), callbacks=[last])
    trainer.fit()  # the loss falls, so "best" by a maximised loss is epoch 1
    assert tf.train.latest_checkpoint(run / "best").endswith("best-1")
    for which, expected in (("best", trainer.model.get_weights()), ("last", last.weights)):
        model = load_model(run, which)
        assert model.get_layer("conv1_conv").compute_dtype == "float32"
        for got, want in zip(model.get_weights(), expected, strict=True):
            np.testing.assert_array_equal(got, want)
    assert not all(
        np.array_equal(a, b) for a, b in zip(trainer.model.get_weights(), last.weights, strict=True)
    )


def test_loss_scaling_skips_a_step_that_overflowed_on_any_replica():
    """mixed_float16 over 2 replicas, the second replica's images infinite: the step is skipped
    on both (weights unchanged, finite) and the loss scale falls, instead of applying inf."""
    result = run_python("""
            import tempfile, numpy as np, tensorflow as tf
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            from zoo.config import RunOptions, TrainConfig
            from zoo.training import Trainer
            cfg = TrainConfig(model="vgg11", width=0.125, dropout=0.0, batch_size=8,
                              strategy="mirrored", precision="mixed_float16")
            t = Trainer(cfg, options=RunOptions(run_dir=tempfile.mkdtemp(), verbose=False))
            t.setup()
            before = [v.numpy() for v in t.model.trainable_variables]
            optimizer = t.optimisation.optimizer
            scale = float(optimizer.dynamic_scale.numpy())
            x = np.ones((8, 32, 32, 3), "float32")
            x[4:] = np.inf
            y = np.zeros(8, "int64")
            def part(ctx):
                i = ctx.replica_id_in_sync_group
                return x[i * 4:(i + 1) * 4], y[i * 4:(i + 1) * 4]
            batch = t.strategy.experimental_distribute_values_from_function(part)
            tf.function(lambda b: t.strategy.run(t.steps.replica_train_step, args=b))(batch)
            after = [v.numpy() for v in t.model.trainable_variables]
            print("FINITE", all(np.isfinite(a).all() for a in after))
            print("SAME", all(np.array_equal(a, b) for a, b in zip(after, before)))
            print("SCALE", scale, float(optimizer.dynamic_scale.numpy()))
        """)
    assert result.returncode == 0, result.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert out["FINITE"] == "True" and out["SAME"] == "True"
    before, after = (float(v) for v in out["SCALE"].split())
    assert after == before / 2


# Replicas -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_and_evaluation_on_one_to_four_replicas():
    """MirroredStrategy over 1-4 logical CPUs with batches that leave partial last batches:
    every validation example is counted once, and the figures of the same weights agree."""
    code = """
        import sys, tempfile, tensorflow as tf
        replicas, batch = int(sys.argv[1]), int(sys.argv[2])
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
        from zoo.config import RunOptions, TrainConfig
        from zoo.training import Runtime, Trainer
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        # Three training steps: evaluation, the subject, still covers every example.
        config = TrainConfig(model="resnet20", width=0.125, epochs=1, batch_size=batch,
                             overfit_batches=3)
        trainer = Trainer(config, runtime=Runtime(strategy),
                          options=RunOptions(run_dir=tempfile.mkdtemp(), verbose=False))
        trainer.setup()
        sums = trainer.steps.evaluate(iter(trainer.eval_ds["validation"]),
                                      trainer.data.eval_steps("validation"))
        print("EVAL", sums[0] / sums[3], sums[3])
        history = trainer.fit()
        print("FIT", history.history["val_accuracy"][0], history.metrics["test_accuracy"])
        import numpy as np
        copies = strategy.experimental_local_results(
            trainer.model.get_layer("conv1_bn").moving_variance)
        print("BN", max(float(np.abs(c.numpy() - copies[0].numpy()).max()) for c in copies))
    """
    evals, fits, spreads = [], [], []
    # One process per replica count: TensorFlow's collectives keep their groups per process.
    for replicas, batch in ((1, 7), (2, 50), (3, 96), (4, 100)):
        result = run_python(code, str(replicas), str(batch))
        assert result.returncode == 0, result.stderr[-3000:]
        lines = result.stdout.splitlines()
        evals += [line.split()[1:] for line in lines if line.startswith("EVAL")]
        fits += [line.split()[1:] for line in lines if line.startswith("FIT")]
        spreads += [float(line.split()[1]) for line in lines if line.startswith("BN")]
    assert len(evals) == len(fits) == 4
    assert {float(count) for _, count in evals} == {180.0}  # the validation split, once
    losses = [float(loss) for loss, _ in evals]
    assert max(losses) - min(losses) < 1e-4  # same seed, same initial weights, same figures
    assert all(0.0 <= float(v) <= 1.0 for fit_values in fits for v in fit_values)
    # Re-estimated batch-norm statistics are pooled: every replica's copy is the same.
    assert len(spreads) == 4 and max(spreads) < 1e-6


def test_patience_counts_strict_improvements_over_the_whole_history():
    """``--early-stopping``'s rule (`zoo.monitor.Monitor`), fed values: a tie is no improvement
    (as Keras's ``EarlyStopping``) though it is the later best epoch for best/; NaN never
    improves; and the engine's callback counts over the kept history (a resumed run)."""
    from types import SimpleNamespace

    from zoo.monitor import Monitor
    from zoo.training.callbacks import PatienceStop

    rule = Monitor("val_accuracy")
    flat = [0.90, 0.95, 0.95, 0.95]
    assert rule.last_improvement(flat) == 2
    assert rule.best([{"val_accuracy": v, "epoch": i} for i, v in enumerate(flat, 1)])["epoch"] == 4
    assert Monitor("val_loss").last_improvement([1.0, float("nan"), 0.5, 0.5]) == 3
    assert rule.last_improvement([float("nan")] * 3) == 1
    stopper = PatienceStop(rule, patience=2)
    said: list[str] = []
    trainer = SimpleNamespace(
        rows=[{"val_accuracy": v} for v in flat], model=SimpleNamespace(stop_training=False),
        say=said.append,
    )  # fmt: skip
    stopper.trainer = trainer
    stopper.on_epoch_end(3)  # the fourth epoch, two after the last improvement
    assert trainer.model.stop_training and said == ["Epoch 4: early stopping"]
    trainer.rows, trainer.model.stop_training = trainer.rows[:3], False
    stopper.on_epoch_end(2)
    assert not trainer.model.stop_training
