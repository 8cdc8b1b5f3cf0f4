"""The fine-tuning recipe (``--fine-tune``): stages, a new head, resume in either stage, one loss
scale with per-variable learning rates, and a transfer that beats training from scratch."""

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import PRECISION, at
from helpers import history_rows as history

import pipelines
from zoo.config import TrainConfig
from zoo.train import main
from zoo.training import Trainer, load_model

BASE = {"model": "resnet20", "width": 0.125, "batch_size": 32, "seed": 0, "precision": PRECISION}


def write_digits(folder: Path, classes: str, per_class: int | None = None) -> str:
    """The embedded digits of ``classes`` as an image folder; its ``folder:`` source."""
    pipelines.write_images(pipelines.load("digits"), folder, classes=classes, per_class=per_class)
    return f"folder:{folder}"


@pytest.fixture
def source_run(tiny_run_source) -> Path:
    """The session's tiny run (resnet20 at 1/8 width, two epochs on the digits): a backbone to
    start from."""
    return tiny_run_source


def test_config_needs_starting_weights_and_not_a_frozen_backbone():
    with pytest.raises(ValueError, match="needs starting weights"):
        TrainConfig(fine_tune=True)
    with pytest.raises(ValueError, match="give one of them"):
        TrainConfig(fine_tune=True, init_from="x", freeze_backbone=True)
    with pytest.raises(ValueError, match="freeze_epochs"):
        TrainConfig(fine_tune=True, init_from="x", freeze_epochs=-1)
    config = TrainConfig(fine_tune=True, init_from="x", freeze_epochs=2, epochs=3)
    assert config.total_epochs == 5 and config.backbone_multiplier == 0.1
    assert [config.stage_of(e) for e in range(5)] == [1, 1, 2, 2, 2]
    assert TrainConfig().backbone_multiplier == 1.0
    assert TrainConfig(fine_tune=True, init_from="x", backbone_lr_mult=1.0).backbone_multiplier == 1


def test_cli_fine_tune_without_weights_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--fine-tune", "--runs-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "python -m zoo.train: error: fine_tune (--fine-tune) needs starting weights: --weights "
        "imagenet (or torchvision, or a weights file) or --init-from RUN_DIR_OR_.keras."
    )
    assert not any(tmp_path.iterdir())


def test_stages_freeze_then_unfreeze_with_a_new_head(source_run, tmp_path):
    """Stage 1 trains the classifier alone with batch norm frozen (its statistics too); stage 2
    trains every layer; history.csv says which stage each epoch was; the backbone is the
    source's and other classes get a new head."""
    data = write_digits(tmp_path / "five", "56789", per_class=10)
    config = TrainConfig(
        **BASE, dataset=data, init_from=str(source_run), fine_tune=True, epochs=1, warmup_epochs=0
    )
    trainer = Trainer(config, options=at(tmp_path / "run"))
    trainer.setup()
    assert trainer.stage == 1
    assert [v.path for v in trainer.model.trainable_variables] == [
        "predictions/kernel",
        "predictions/bias",
    ]
    reference = load_model(source_run)
    copied = trainer.model.get_layer("conv1_conv").kernel.numpy()
    np.testing.assert_array_equal(copied, reference.get_layer("conv1_conv").kernel.numpy())
    assert trainer.model.get_layer("predictions").units == 5
    bn = trainer.model.get_layer("conv1_bn")
    frozen = [bn.moving_mean.numpy(), copied]
    stage_one: dict[str, np.ndarray] = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                stage_one["mean"] = bn.moving_mean.numpy()
                stage_one["kernel"] = trainer.model.get_layer("conv1_conv").kernel.numpy()
                stage_one["iterations"] = int(trainer.optimisation.iterations.numpy())

    trainer.user_callbacks.append(Probe())
    trainer.fit()
    np.testing.assert_array_equal(stage_one["mean"], frozen[0])  # inference-mode batch norm
    np.testing.assert_array_equal(stage_one["kernel"], frozen[1])
    assert stage_one["iterations"] == trainer.data.steps_per_epoch
    # Stage 2 started a fresh optimizer: its iterations count stage 2's steps alone.
    assert int(trainer.optimisation.iterations.numpy()) == trainer.data.steps_per_epoch
    assert not np.array_equal(trainer.model.get_layer("conv1_conv").kernel.numpy(), frozen[1])
    assert [r["stage"] for r in history(tmp_path / "run")] == ["head", "all"]
    assert len(trainer.optimisation.variables) == len(trainer.model.trainable_variables) > 2


class KillAt(keras.callbacks.Callback):
    """Fails in the middle of the 0-based ``epoch`` (after its first call), as a kill would:
    that epoch is lost and the run resumes from the checkpoint before it."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch, self.current = epoch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch:
            raise KeyboardInterrupt


RESUME_CONFIG = {
    **BASE,
    "batch_size": 16,
    "fine_tune": True,
    "freeze_epochs": 2,
    "epochs": 2,
    "overfit_batches": 2,
    "deterministic": True,
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_run_source) -> tuple[TrainConfig, Trainer, Path]:
    """The fine-tuning run the resumed ones must equal: two frozen epochs then two of all
    layers, never interrupted (deterministic ops)."""
    config = TrainConfig(**RESUME_CONFIG, init_from=str(tiny_run_source))
    whole = tmp_path_factory.mktemp("whole") / "run"
    reference = Trainer(config, options=at(whole, steps_per_execution=1))
    reference.fit()
    return config, reference, whole


@pytest.mark.parametrize(
    ("killed_in", "stage", "trained"),
    [
        pytest.param(1, 1, 2, id="stage-1", marks=pytest.mark.slow),
        pytest.param(2, 2, None, id="at-the-boundary"),
        pytest.param(3, 2, None, id="stage-2", marks=pytest.mark.slow),
    ],
)
def test_resume_continues_in_the_right_stage_and_equals_an_uninterrupted_run(
    uninterrupted, tmp_path, killed_in, stage, trained
):
    """Killed during epoch ``killed_in`` (0-based): the resumed run is in the stage of its
    checkpoint with that stage's trainable set, and finishes bit-identical to the
    uninterrupted run."""
    config, reference, whole = uninterrupted
    run = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, options=at(run, steps_per_execution=1), callbacks=[KillAt(killed_in)]).fit()
    resumed = Trainer.resume(run, options=at(run, steps_per_execution=1))
    resumed.setup()
    assert resumed.start_epoch == killed_in
    assert resumed.stage == stage
    expected = trained or len(resumed.model.trainable_variables)
    assert len(resumed.optimisation.variables) == expected
    assert len(resumed.model.trainable_variables) == expected
    resumed.fit()
    rows, ref_rows = history(run), history(whole)
    assert [r["stage"] for r in rows] == ["head", "head", "all", "all"]
    for row, ref in zip(rows, ref_rows, strict=True):
        assert {k: row[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")} == {
            k: ref[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")
        }
    for a, b in zip(resumed.model.weights, reference.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize(
    ("precision", "optimizer"),
    [
        ("mixed_float16", "sgd"),
        ("mixed_float16", "adam"),
        ("mixed_bfloat16", "sgd"),
        ("float32", "adamw"),
    ],
)
def test_backbone_step_is_the_multiplier_times_the_head_step(tmp_path, precision, optimizer):
    """One step from the same weights and batch with the backbone at 1 and at 0.25 times the
    rate: the backbone moves 0.25 times as far, the classifier the same; under mixed_float16
    one optimizer holds the one loss scale."""
    moves = {}
    for multiplier in (1.0, 0.25):
        config = TrainConfig(
            **{**BASE, "precision": precision},
            optimizer=optimizer,
            momentum=0.0,
            learning_rate=0.5,
            warmup_epochs=0.0,
            schedule="constant",
            weight_decay=1e-2 if optimizer == "adamw" else 0.0,
            weight_decay_mode="decoupled" if optimizer == "adamw" else "l2",
            backbone_lr_mult=multiplier,
            deterministic=True,
        )
        trainer = Trainer(config, options=at(tmp_path / str(multiplier)))
        trainer.setup()
        optimizer_used = trainer.optimisation.optimizer
        assert isinstance(optimizer_used, keras.optimizers.LossScaleOptimizer) == (
            precision == "mixed_float16"
        )
        before = [v.numpy() for v in trainer.optimisation.variables]
        with trainer.runtime.active():
            trainer.steps.train(iter(trainer.train_ds), 1)
        moves[multiplier] = {
            v.path: v.numpy() - b
            for v, b in zip(trainer.optimisation.variables, before, strict=True)
        }
    for path, full in moves[1.0].items():
        scaled = moves[0.25][path]
        factor = 1.0 if path.startswith("predictions/") else 0.25
        assert np.abs(full).max() > 0, path
        np.testing.assert_allclose(scaled, factor * full, rtol=2e-3, atol=1e-6, err_msg=path)


@pytest.mark.slow
def test_fine_tuned_backbone_beats_training_from_scratch(tmp_path):
    """A backbone trained on digits 0-4, fine-tuned with the recipe on 40 images each of 5-9,
    against the same model trained from scratch for as many epochs, same seed and data."""
    base = {**BASE, "width": 0.25, "batch_size": 16}
    source = tmp_path / "runs" / "zero-to-four"
    config = TrainConfig(**base, dataset=write_digits(tmp_path / "a", "01234"), epochs=6)
    Trainer(config, options=at(source)).fit()
    target = write_digits(tmp_path / "b", "56789", per_class=40)
    scratch = Trainer(
        TrainConfig(**base, dataset=target, epochs=5), options=at(tmp_path / "runs" / "scratch")
    ).fit()
    tuner = Trainer(
        TrainConfig(
            **base, dataset=target, init_from=str(source), fine_tune=True, freeze_epochs=1, epochs=4
        ),
        options=at(tmp_path / "runs" / "tuned"),
    )
    tuner.setup()
    # Five classes again, but other ones: the classifier is new, not the source's.
    old_head = load_model(source).get_layer("predictions").kernel.numpy()
    assert not np.array_equal(tuner.model.get_layer("predictions").kernel.numpy(), old_head)
    tuned = tuner.fit()
    from_scratch, fine_tuned = scratch.metrics["val_accuracy"], tuned.metrics["val_accuracy"]
    assert fine_tuned >= from_scratch + 0.15, (fine_tuned, from_scratch)


@pytest.mark.slow
def test_init_from_sets_the_image_size_and_a_resume_needs_no_source(tmp_path):
    """A backbone trained at 40x40 fine-tunes at 40x40 on the 32x32 digits; config.json records
    it, so the run resumes after the source is gone."""
    source = tmp_path / "source"
    quick = {**BASE, "overfit_batches": 1, "warmup_epochs": 0.0}
    Trainer(TrainConfig(**quick, image_size=40, epochs=1), options=at(source)).fit()
    run = tmp_path / "tuned"
    config = TrainConfig(**quick, init_from=str(source), fine_tune=True, epochs=1)
    trainer = Trainer(config, options=at(run))
    trainer.fit()
    assert trainer.model.input_shape[1:3] == (40, 40)
    shutil.rmtree(source)
    resumed = Trainer.resume(run, epochs=2, options=at(run))
    resumed.fit()
    assert resumed.config.image_size == 40
    assert [r["stage"] for r in history(run)] == ["head", "all", "all"]
