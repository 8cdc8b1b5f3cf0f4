"""The learning-rate range test: its files and last line, a suggestion that trains, and nothing
of the process or the working directory changed."""

import csv
import dataclasses
import math
import os
import random
import re

import keras
import numpy as np
import pytest
from helpers import at, tiny

from tuning.lr_find import (
    CSV_FIELDS,
    FLAT_DROP,
    SKIPPED_FIELDS,
    build_parser,
    is_flat,
    lr_find,
    main,
    suggest,
)
from zoo.config import TrainConfig
from zoo.training import Trainer, TrainingDiverged


def test_cli_writes_the_curve_and_plot_and_prints_the_suggestion_last(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    args = ["--width", "0.125", "--batch-size", "64", "--steps", "40", "--out", "out"]
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"suggested learning rate: (\S+)", last)
    assert match and 1e-7 <= float(match[1]) <= 10
    assert match[1] == f"{float(match[1]):.2g}"  # two significant digits
    # Only --out was written: no run directory, no temporary files.
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert sorted(os.listdir(tmp_path / "out")) == ["lr_find.csv", "lr_find.png"]
    with open(tmp_path / "out" / "lr_find.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_FIELDS
    assert 1 <= len(rows) <= 40 and [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    lrs = [float(r["learning_rate"]) for r in rows]
    assert lrs[0] == pytest.approx(1e-7, rel=1e-4) and lrs == sorted(lrs)
    assert (tmp_path / "out" / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_suggestion_trains_and_a_hundred_times_it_does_not(tmp_path):
    config = tiny(seed=0)
    result = lr_find(config)
    assert result.suggestion == pytest.approx(result.min_loss_lr / 10)
    assert 1e-7 < result.suggestion < 10 and 1e-7 <= result.steepest <= 10
    assert len(result.learning_rates) == len(result.losses) == len(result.smoothed) <= 200

    def losses(learning_rate: float) -> list[float] | None:
        """Training loss per epoch of 3 epochs (57 steps) from the same fresh model."""
        run = dataclasses.replace(
            config,
            learning_rate=learning_rate,
            schedule="constant",
            warmup_epochs=0,
            epochs=3,
            bn_recalibration=0,
        )
        options = at(tmp_path / f"lr{learning_rate:g}")
        try:
            return Trainer(run, options=options).fit().history["loss"]
        except TrainingDiverged:
            return None

    good = losses(result.suggestion)
    assert good is not None and good[-1] < good[0] - 0.2  # clearly lower in 57 steps
    high = losses(100 * result.suggestion)
    assert high is None or not math.isfinite(high[-1]) or high[-1] > good[-1] + 0.2


def test_policy_random_state_and_working_directory_are_left_as_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    python_state, numpy_state = random.getstate(), np.random.get_state()[1].copy()
    result = lr_find(tiny(seed=0, precision="mixed_bfloat16"), start_lr=1e-3, end_lr=1.0, steps=20)
    assert keras.config.dtype_policy().name == "float32"
    assert random.getstate() == python_state
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert list(tmp_path.iterdir()) == []
    assert 1 <= len(result.losses) <= 20
    assert result.learning_rates[0] == pytest.approx(1e-3, rel=1e-4)


def test_bad_model_exits_2_with_one_error_line(tmp_path, capsys):
    assert main(["--model", "resnet5", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Unknown model 'resnet5'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "5"], "steps must be an integer in [20, 1000]; got 5"),
        (["--end-lr", "1e-8"], "end_lr must be larger than start_lr"),
        (["--width", "0"], "width must be > 0; got 0"),
        (["--learning-rate", "0.1"], "unrecognized arguments: --learning-rate"),
    ],
)
def test_bad_flags_exit_2_naming_the_value(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_flags_are_the_config_fields_but_the_skipped_ones():
    usage = build_parser().format_usage()
    for field in dataclasses.fields(TrainConfig):
        flag = re.escape("--" + field.name.replace("_", "-")) + r"(?![\w-])"
        assert bool(re.search(flag, usage)) != (field.name in SKIPPED_FIELDS), field.name


# The suggestion's rule, on curves made here: the same verdict on every machine. ------------

LRS = np.geomspace(1e-7, 10, 100)


def test_a_valley_is_read_at_its_minimum_over_ten():
    log = np.log10(LRS)
    curve = 2.3 - 0.5 * np.exp(-((log + 0.5) ** 2))  # lowest at 10**-0.5
    curve[log > -0.5] += 3 * (log[log > -0.5] + 0.5) ** 2  # then it diverges
    suggestion, min_loss_lr, steepest = suggest(LRS, curve)
    assert not is_flat(LRS, curve)
    assert min_loss_lr == LRS[np.argmin(curve)] and suggestion == pytest.approx(min_loss_lr / 10)
    assert LRS[10] <= steepest < min_loss_lr


def test_a_flat_curve_is_read_where_it_starts_to_rise_not_at_its_noise():
    """The curve the in-run test saw at width 1/8 (ln 10 until about 0.05, then rising), with
    noise whose lowest point sits early: the bare argmin read 1e-8 there."""
    rng = np.random.default_rng(0)
    curve = math.log(10) + rng.normal(0, 5e-4, LRS.size)
    curve[20] -= 3e-3  # the noise's lowest point, at 4e-6: the bare argmin's pick / 10
    rising = LRS > 0.05
    curve[rising] += 0.2 * np.log10(LRS[rising] / 0.05)
    assert is_flat(LRS, curve)
    suggestion, min_loss_lr, _ = suggest(LRS, curve)
    assert 0.05 <= min_loss_lr <= 0.2  # the end of the flat part
    assert suggestion == pytest.approx(min_loss_lr / 10)
    # A loss that never rises either: the last learning rate.
    assert suggest(LRS, np.full(LRS.size, math.log(10)))[1] == LRS[-1]
    # A fall of FLAT_DROP from the start is learning, not noise.
    assert not is_flat(LRS, np.linspace(2.3, 2.3 * (1 - 1.5 * FLAT_DROP), LRS.size))
