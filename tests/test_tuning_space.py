"""Search spaces: validation, ``--space`` merging, the fine stage's ranges and edge warnings."""

import json
import math

import keras_tuner
import pytest

import zoo
from tuning import space as spaces
from zoo.config import TrainConfig


def test_default_space_is_log_scale_for_rates_and_decay_and_offers_depths():
    space = spaces.validate(spaces.default_space("resnet20"))
    assert space["learning_rate"] == {"type": "float", "min": 1e-4, "max": 1.0, "sampling": "log"}
    assert space["weight_decay"]["sampling"] == "log"
    assert space["model"]["values"] == ["resnet20", "resnet32", "resnet44"]
    assert "model" not in spaces.default_space("alexnet")  # a family of one
    hp = keras_tuner.HyperParameters()
    spaces.define(hp, space)
    assert set(hp.values) == set(space)


def test_merge_replaces_fixes_and_drops():
    merged = spaces.merge(
        spaces.default_space("resnet20"),
        {"learning_rate": {"type": "float", "min": 0.01, "max": 0.1}, "batch_size": 64,
         "augment": None},
    )  # fmt: skip
    assert merged["learning_rate"] == {"type": "float", "min": 0.01, "max": 0.1}
    assert merged["batch_size"] == {"type": "fixed", "value": 64}
    assert "augment" not in merged


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"learnin_rate": 0.1}, "'learnin_rate' is not a TrainConfig field"),
        ({"learning_rate": {"type": "floaty"}}, "type must be one of"),
        ({"learning_rate": {"type": "float", "min": 1, "max": 0.1}}, "min 1 must be below max"),
        ({"optimizer": {"type": "choice", "values": []}}, "non-empty list"),
        ({"model": {"type": "choice", "values": ["resnet5"]}}, "Unknown model 'resnet5'"),
        ({"monitor": "val_loss"}, "'monitor' is set by --objective"),
        ({"mode": {"type": "choice", "values": ["min"]}}, "'mode' follows --objective"),
        ({"epochs": 5}, "'epochs' is set by --epochs-per-trial"),
    ],
)
def test_bad_spaces_name_the_entry(entry, message):
    with pytest.raises(ValueError, match=message):
        spaces.merge({}, entry)


def test_load_space_reports_bad_json(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        spaces.load_space(path)
    with pytest.raises(ValueError, match="cannot read it"):
        spaces.load_space(tmp_path / "missing.json")


def test_fine_ranges_narrow_around_the_best_in_log_space():
    space = {
        "learning_rate": {"type": "float", "min": 1e-4, "max": 1.0, "sampling": "log"},
        "label_smoothing": {"type": "float", "min": 0.0, "max": 0.2},
        "optimizer": {"type": "choice", "values": ["sgd", "adam", "adamw"]},
    }
    best = [
        {"learning_rate": 1e-2, "label_smoothing": 0.1, "optimizer": "sgd"},
        {"learning_rate": 1e-1, "label_smoothing": 0.05, "optimizer": "adam"},
    ]
    fine = spaces.fine_space(space, best)
    # log10 span of 4 decades: 10% is 0.4 decades either side of [1e-2, 1e-1].
    assert math.log10(fine["learning_rate"]["min"]) == pytest.approx(-2.4)
    assert math.log10(fine["learning_rate"]["max"]) == pytest.approx(-0.6)
    assert fine["learning_rate"]["sampling"] == "log"
    assert fine["label_smoothing"]["min"] == pytest.approx(0.03)
    assert fine["label_smoothing"]["max"] == pytest.approx(0.12)
    assert fine["optimizer"] == {"type": "choice", "values": ["sgd", "adam"]}
    # Clipped to the old range at the edge; one value left of a choice is fixed.
    edge = spaces.fine_space(space, [{"learning_rate": 0.9, "optimizer": "adamw"}])
    assert edge["learning_rate"]["max"] == pytest.approx(1.0)
    assert edge["optimizer"] == {"type": "fixed", "value": "adamw"}


def test_edge_warnings_suggest_a_widened_range():
    space = {
        "learning_rate": {"type": "float", "min": 1e-4, "max": 1.0, "sampling": "log"},
        "weight_decay": {"type": "float", "min": 1e-6, "max": 1e-2, "sampling": "log"},
        "label_smoothing": {"type": "float", "min": 0.0, "max": 0.2},
    }
    # 0.5 is 92% of the way up 4 decades: the edge. 1e-4 is in the middle of weight decay's.
    warnings = spaces.edge_warnings(
        space, {"learning_rate": 0.5, "weight_decay": 1e-4, "label_smoothing": 0.01}
    )
    assert len(warnings) == 1  # label smoothing at 0 cannot go lower: not a wrong range
    lr = warnings[0]
    assert "upper edge" in lr
    suggested = json.loads(lr.split("--space with ", 1)[1])["learning_rate"]
    assert suggested == {"type": "float", "min": 0.0001, "max": 10.0, "sampling": "log"}
    high = spaces.edge_warnings(space, {"label_smoothing": 0.195})[0]
    assert '"min": 0.0, "max": 0.4' in high
    assert spaces.edge_warnings(space, {"learning_rate": 0.01}) == []  # 50%: not an edge


def test_default_space_covers_each_models_recipe_rate_with_a_decade_to_spare():
    for name in zoo.list_models():
        rate = zoo.model_info(name).recipe.learning_rate
        spec = spaces.default_space(name)["learning_rate"]
        assert spec["min"] <= rate / 10 and rate * 10 <= spec["max"], name


def test_the_coarse_stages_first_trial_is_the_models_recipe(tmp_path):
    from tuning.search import SearchArgs, make_tuner
    from zoo.training import resolve_runtime

    base = TrainConfig(model="resnet20", epochs=1)
    space = spaces.validate(spaces.default_space("resnet20"))
    first = spaces.recipe_trial(space, base)
    recipe = zoo.model_info("resnet20").recipe
    assert first == {
        "learning_rate": recipe.learning_rate,
        "weight_decay": recipe.weight_decay,
        "optimizer": recipe.optimizer,
        "batch_size": recipe.batch_size,
        "label_smoothing": recipe.label_smoothing,
        "augment": "auto",
        "width": 1.0,
        "model": "resnet20",
    }
    args = SearchArgs(base=base, max_trials=3, directory=str(tmp_path))
    oracle = make_tuner(args, "coarse", space, resolve_runtime()).oracle
    trials = [oracle.create_trial(f"tuner{i}") for i in range(2)]
    assert trials[0].hyperparameters.values == first
    assert trials[1].hyperparameters.values != first  # later trials are drawn
    # A recipe outside the searched range gives no such trial.
    narrow = {**space, "learning_rate": {"type": "float", "min": 1e-3, "max": 1e-2}}
    assert spaces.recipe_trial(narrow, base) is None
