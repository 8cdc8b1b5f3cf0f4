"""Per-model recipes: the registry's training defaults, how a config takes them, the CLI's
``--learning-rate auto``, and that each family's recipe trains."""

import json
import logging
import math

import numpy as np
import pytest
from helpers import at

import zoo
from zoo.config import RECIPE_FIELDS, TrainConfig
from zoo.registry import Recipe
from zoo.summary import main as summary_main
from zoo.train import main as train_main
from zoo.train import parse
from zoo.training import Trainer
from zoo.training.callbacks import LOSS_FRACTION


def test_every_model_has_a_complete_valid_recipe():
    assert set(Recipe().values()) == set(RECIPE_FIELDS)
    for name in zoo.list_models():
        recipe = zoo.model_info(name).recipe
        config = TrainConfig(model=name).resolve()  # validates every value
        assert config.resolved
        assert {k: getattr(config, k) for k in RECIPE_FIELDS} == recipe.values()


def test_unset_fields_take_the_models_recipe_and_given_ones_win():
    vgg = zoo.model_info("vgg16").recipe
    assert vgg != zoo.model_info("resnet20").recipe  # the families differ
    config = TrainConfig(model="vgg16", batch_size=64).resolve()
    assert config.batch_size == 64
    assert config.learning_rate == vgg.learning_rate
    assert config.optimizer == vgg.optimizer
    assert config.resolve() is config
    # A resolved config survives JSON unchanged; an unresolved one keeps its None fields.
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    assert TrainConfig(model="vgg16").learning_rate is None
    assert config.given() == {"model": "vgg16", "batch_size": 64}


def test_resolving_an_unknown_model_names_close_ones():
    with pytest.raises(ValueError, match=r"Unknown model 'vgg161'\. Did you mean"):
        TrainConfig(model="vgg161").resolve()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", "auto"), ("AUTO", "auto"), ("0.05", 0.05), ("recipe", None), ("none", None)],
)
def test_learning_rate_flag(value, expected):
    config, *_ = parse(["--learning-rate", value])
    assert config.learning_rate == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--learning-rate", "fast"], "invalid learning rate value: 'fast'"),
        (["--learning-rate", "0"], "learning_rate must be > 0, 'auto' or None"),
        (["--batch-size", "0"], "batch_size must be an integer >= 1; got 0"),
    ],
)
def test_bad_recipe_flags_exit_2_naming_the_flag(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_summary_prints_each_models_recipe(capsys):
    assert summary_main(["--recipes", "--model", "vgg1*", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == zoo.list_models("vgg1*")
    for row in rows:
        assert {k: row[k] for k in RECIPE_FIELDS} == zoo.model_info(row["model"]).recipe.values()
    assert summary_main(["--recipes"]) == 0
    text = capsys.readouterr().out
    for name in zoo.list_models():
        assert name in text


def test_the_run_records_the_recipe_it_trained_with(tmp_path, capsys):
    code = train_main(
        ["--model", "resnet20", "--width", "0.125", "--epochs", "1", "--batch-size", "64",
         "--run-dir", str(tmp_path / "run")]
    )  # fmt: skip
    assert code == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    recipe = zoo.model_info("resnet20").recipe.values()
    assert saved["batch_size"] == 64  # given
    assert {k: saved[k] for k in RECIPE_FIELDS if k != "batch_size"} == {
        k: v for k, v in recipe.items() if k != "batch_size"
    }
    out = capsys.readouterr().out
    assert "from resnet20's recipe except batch_size" in out


def test_learning_rate_auto_runs_the_range_test_once_and_records_it(tmp_path, caplog):
    config = TrainConfig(
        model="resnet20", width=0.125, batch_size=64, epochs=1, learning_rate="auto"
    )
    with caplog.at_level(logging.WARNING):
        first = Trainer(config, options=at(tmp_path / "run")).fit()
    record = json.loads((tmp_path / "run" / "learning_rate.json").read_text())
    # At this width nothing is learned in the 100 steps of the in-run test: a flat curve,
    # whose minimum is noise (it read 1e-8 on one CPU), so the recipe's rate is used, said.
    flat = "range test's loss never fell 1% below its start" in caplog.text
    assert record["flat"] == flat
    if flat:
        assert record["learning_rate"] == zoo.model_info("resnet20").recipe.learning_rate
        assert record["rule"] == "resnet20's recipe: the range test's loss was flat"
    else:
        assert record["learning_rate"] == pytest.approx(record["min_loss_lr"] / 10)
    assert first.metrics["learning_rate"] == record["learning_rate"]
    assert 1e-5 < record["learning_rate"] < 1.0
    curve = tmp_path / "run" / "lr_find" / "lr_find.csv"
    assert curve.is_file() and (tmp_path / "run" / "lr_find" / "lr_find.png").is_file()
    # The peak of the schedule is the picked rate (reached at the end of the warm-up).
    trainer = Trainer.resume(tmp_path / "run", epochs=2, options=at(tmp_path / "run"))
    stamp = curve.stat().st_mtime_ns
    second = trainer.fit()
    assert second.metrics["learning_rate"] == record["learning_rate"]
    assert curve.stat().st_mtime_ns == stamp  # resuming reads the pick, no second range test
    assert float(trainer.optimisation.schedule.peak) == record["learning_rate"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["learning_rate"] == "auto"
    # The range test leaves no trace on training: the picked rate given explicitly trains the
    # same first epoch.
    explicit = TrainConfig(
        model="resnet20",
        width=0.125,
        batch_size=64,
        epochs=1,
        learning_rate=record["learning_rate"],
    )
    again = Trainer(explicit, options=at(tmp_path / "explicit")).fit()
    assert again.history["loss"] == pytest.approx(first.history["loss"], rel=1e-5)


def range_test_result(flat: bool):
    """What the range test (`zoo.training.lr_range.lr_find`) returns for a flat curve or one
    with a valley."""
    from zoo.training.lr_range import LRFindResult

    lrs = tuple(float(x) for x in np.geomspace(1e-7, 10, 100))
    losses = (math.log(10),) * 100 if flat else tuple(2.3 - 0.01 * i for i in range(100))
    return LRFindResult(
        learning_rates=lrs, losses=losses, smoothed=losses, suggestion=0.5, min_loss_lr=5.0,
        steepest=1.0, stopped="end", seconds=1.0, flat=flat,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flat", "optimizer", "expected"),
    [(False, None, 0.5), (True, None, "recipe"), (True, "adam", 0.5)],
    ids=["valley", "flat-recipe", "flat-other-optimizer"],
)
def test_learning_rate_auto_trusts_a_valley_and_not_a_flat_curve(
    tmp_path, caplog, monkeypatch, flat, optimizer, expected
):
    """The engine's reading of a range test, fed the curve (no machine decides which): a valley
    gives its suggestion; a flat curve the recipe's rate when the optimizer is the recipe's,
    else the suggestion, with a warning either way."""
    from zoo.training import lr_range

    monkeypatch.setattr(lr_range, "lr_find", lambda *args, **kwargs: range_test_result(flat))
    config = TrainConfig(model="resnet20", width=0.125, learning_rate="auto", optimizer=optimizer)
    trainer = Trainer(config, options=at(tmp_path / "run"))
    with caplog.at_level(logging.WARNING):
        trainer.setup()
    recipe = zoo.model_info("resnet20").recipe
    want = recipe.learning_rate if expected == "recipe" else expected
    record = json.loads((tmp_path / "run" / "learning_rate.json").read_text())
    assert trainer.learning_rate == record["learning_rate"] == want
    assert record["flat"] is flat
    assert ("range test's loss never fell 1% below its start" in caplog.text) is flat
    if expected == "recipe":
        assert record["rule"] == "resnet20's recipe: the range test's loss was flat"
    else:
        assert record["rule"] == lr_range.SUGGESTION_RULE


# Each family's recipe trains: six epochs at a small width bring the training loss below what
# the loss_not_falling check demands, 0.9 x ln(10) (a uniform guess scores ln(10)), on digits.
FAMILY_MODELS = [
    ("alexnet", 0.25),
    ("vgg11", 0.25),
    ("vgg11_bn", 0.25),
    ("googlenet", 0.125),
    ("resnet20", 0.25),
    ("resnet18", 0.25),
]


@pytest.mark.slow
@pytest.mark.parametrize(("model", "width"), FAMILY_MODELS)
def test_each_familys_recipe_lowers_the_loss_clearly_below_ln_classes(tmp_path, model, width):
    history = Trainer(
        TrainConfig(model=model, width=width, epochs=6), options=at(tmp_path / "run")
    ).fit()
    losses = history.history["loss"]
    assert losses[-1] < LOSS_FRACTION * math.log(10), losses
