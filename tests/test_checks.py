"""The babysitting checks: each fires on a run made to fail its way, is recorded in
``checks.json``, is an error (exit code 2) under ``--strict-checks``, and stays silent on the
default recipe."""

import json

import pytest
from helpers import at, tiny

from zoo.config import TrainConfig
from zoo.train import main
from zoo.training import Trainer, TrainingCheckFailed
from zoo.training.callbacks import CHECK_EPOCH, RATIO_HIGH, RATIO_LOW


def checked(**overrides) -> TrainConfig:
    """The tiny run at a constant learning rate, no warm-up: checks judge epoch 3."""
    return tiny(
        **{"epochs": CHECK_EPOCH, "warmup_epochs": 0.0, "schedule": "constant", **overrides}
    )


def checks(run) -> dict:
    return json.loads((run / "checks.json").read_text())


def fired(run) -> dict[str, dict]:
    return {w["check"]: w for w in checks(run)["warnings"]}


def test_a_learning_rate_far_too_low_fires_the_loss_accuracy_and_ratio_checks(tmp_path, caplog):
    run = tmp_path / "run"
    history = Trainer(checked(learning_rate=1e-7), options=at(run)).fit()
    warnings = fired(run)
    assert {"loss_not_falling", "chance_accuracy", "update_ratio"} <= set(warnings)
    assert "vanishing_gradients" not in warnings  # the gradients are fine; the rate is not
    assert warnings["update_ratio"]["value"] < RATIO_LOW
    assert "likely too low" in warnings["update_ratio"]["message"]
    assert warnings["loss_not_falling"]["epoch"] == CHECK_EPOCH
    assert "--learning-rate auto" in warnings["loss_not_falling"]["message"]
    assert history.metrics["check_warnings"] == list(warnings)
    # One line each on the log, naming the check.
    lines = [r.getMessage() for r in caplog.records if r.name == "zoo.train"]
    for name in warnings:
        assert sum(line.startswith(f"check {name}:") for line in lines) == 1
    # Every epoch's measurements are kept beside the warnings.
    epochs = checks(run)["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(e["update_ratio_median"] < RATIO_LOW for e in epochs)


def test_updates_too_small_to_move_a_weight_are_reported_not_a_crash(tmp_path):
    # At 1e-30 every update underflows: no kernel moves, the ratio is exactly 0 (it raised
    # ZeroDivisionError while suggesting a rate scaled by 1/ratio).
    run = tmp_path / "run"
    Trainer(checked(learning_rate=1e-30), options=at(run)).fit()
    warning = fired(run)["update_ratio"]
    assert warning["value"] == 0
    assert "likely too low; try --learning-rate auto." in warning["message"]


def test_a_learning_rate_far_too_high_fires_the_ratio_check(tmp_path):
    run = tmp_path / "run"
    Trainer(checked(learning_rate=10.0), options=at(run)).fit()
    warnings = fired(run)
    assert warnings["update_ratio"]["value"] > RATIO_HIGH
    assert "likely too high" in warnings["update_ratio"]["message"]
    assert {"loss_not_falling", "chance_accuracy"} <= set(warnings)
    # The weights blew up: the probe saw the gradients grow, then die.
    assert {"exploding_gradients", "vanishing_gradients"} & set(warnings)


@pytest.mark.slow
def test_the_default_recipe_passes_every_check(tmp_path):
    """The default run (resnet20, its recipe, digits) but 6 of its 15 epochs: every check
    is judged by then (loss and accuracy after epoch 4; ratios near the peak rate)."""
    run = tmp_path / "run"
    history = Trainer(TrainConfig(epochs=6), options=at(run)).fit()
    assert checks(run)["warnings"] == []
    assert history.metrics["check_warnings"] == []
    epochs = checks(run)["epochs"]
    judged = [
        e["update_ratio_near_peak"] for e in epochs if e["update_ratio_near_peak"] is not None
    ]
    assert judged and all(RATIO_LOW <= r <= RATIO_HIGH for r in judged)


def test_strict_checks_stop_the_run_with_exit_code_2_keeping_its_epochs(tmp_path, capsys):
    run = tmp_path / "run"
    argv = [
        "--width", "0.125", "--batch-size", "64", "--epochs", "3", "--warmup-epochs", "0",
        "--schedule", "constant", "--learning-rate", "1e-7", "--strict-checks",
        "--run-dir", str(run),
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "check update_ratio failed at epoch 1 (--strict-checks)" in line
    assert "Traceback" not in err
    assert (run / "checkpoints" / "epoch-1.index").is_file()  # the epoch that failed is kept
    assert fired(run)["update_ratio"]["epoch"] == 1


def test_strict_checks_raise_from_the_python_api(tmp_path):
    with pytest.raises(TrainingCheckFailed, match="check update_ratio failed"):
        Trainer(
            checked(learning_rate=1e-7),
            options=at(tmp_path / "run", strict_checks=True),
        ).fit()


def test_slow_training_judges_two_thirds_into_a_long_enough_run():
    """The ``slow_training`` rule, fed numbers: the old vgg19_bn run (training loss 1.277 at
    epoch 10 of 15 on 10 classes; it ended at 0.681 test accuracy) fires it, a run that learns
    does not, and a run too short to be past the loss_not_falling epoch is not judged."""
    from zoo.training.callbacks import slow_check_epoch, training_too_slowly

    assert slow_check_epoch(15, 1.0) == 10 and slow_check_epoch(6, 0.0) == 4
    assert slow_check_epoch(6, 1.0) is None and slow_check_epoch(3, 0.0) is None
    assert training_too_slowly(1.277, 10) and training_too_slowly(float("nan"), 10)
    assert not training_too_slowly(0.4, 10) and not training_too_slowly(3.0, 1000)
