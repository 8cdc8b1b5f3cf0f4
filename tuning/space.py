"""Search spaces as data: what is searched, over which range, on which scale.

A space maps `TrainConfig` field names to specs::

    {"learning_rate": {"type": "float", "min": 1e-4, "max": 1.0, "sampling": "log"},
     "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
     "batch_size": 64}                       # a plain value fixes the field
     "label_smoothing": null                 # null drops it from the search

`--space FILE` (JSON) is merged over the default: an entry replaces the default's spec for its
name. Learning rate and weight decay are searched on a log scale (CS231n: their effect is
multiplicative); `fine_space` narrows each range around the best trials of a coarse stage, and
`edge_warnings` says when a best value sits at the edge of its range.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras_tuner

import zoo
from zoo.config import TrainConfig

SPEC_TYPES = ("float", "int", "choice", "fixed")
NON_NEGATIVE = frozenset({"label_smoothing", "weight_decay", "dropout", "momentum"})
EDGE_FRACTION = 0.1  # a best value within 10% of an edge (in log space where log) is flagged
# Depths a family offers, searched as the model's name when the base model is one of them.
FAMILIES = (
    ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110"),
    ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    ("vgg11", "vgg13", "vgg16", "vgg19"),
    ("vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"),
)

DEFAULT_SPACE: dict[str, Any] = {
    "learning_rate": {"type": "float", "min": 1e-4, "max": 1.0, "sampling": "log"},
    "weight_decay": {"type": "float", "min": 1e-6, "max": 1e-2, "sampling": "log"},
    "optimizer": {"type": "choice", "values": ["sgd", "adam", "adamw"]},
    "batch_size": {"type": "choice", "values": [32, 64, 128]},
    "label_smoothing": {"type": "float", "min": 0.0, "max": 0.2},
    "augment": {"type": "choice", "values": ["auto", "none", "auto,mixup=0.2"]},
    "width": {"type": "choice", "values": [0.5, 1.0]},
}


def default_space(model: str) -> dict[str, Any]:
    """The default space for ``model``: `DEFAULT_SPACE` with the learning-rate range widened,
    where needed, to a decade on either side of the model's recipe rate (the search starts
    from the recipe: every field it does not search keeps the recipe's value), plus the
    family's depths as a choice of ``model`` when it has several (e.g. the CIFAR ResNets)."""
    space = json.loads(json.dumps(DEFAULT_SPACE))  # a deep copy
    rate = zoo.model_info(model).recipe.learning_rate
    lr = space["learning_rate"]
    lr["min"], lr["max"] = min(lr["min"], rate / 10), max(lr["max"], rate * 10)
    for family in FAMILIES:
        if model in family:
            space["model"] = {"type": "choice", "values": list(family[:3])}
    return space


# TrainConfig fields a search sets itself for every trial, and why they cannot be searched.
DECIDED_BY_THE_SEARCH = {
    "epochs": "is set by --epochs-per-trial and --fine-epochs",
    "monitor": "is set by --objective (each trial's best epoch is the objective's best)",
    "mode": "follows --objective (losses are minimised)",
    "init_from": "is not searched: every trial starts from the model's own initialisation",
}


def load_space(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``--space`` JSON file (a mapping of field names to specs)."""
    try:
        with open(path) as f:
            value = json.load(f)
    except OSError as err:
        raise ValueError(f"--space {path}: cannot read it ({err.strerror}).") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"--space {path}: not valid JSON ({err.msg}, line {err.lineno})."
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"--space {path}: expected a JSON object of field names to specs.")
    return value


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base``: a spec replaces, a plain value fixes, ``None`` drops."""
    space = dict(base)
    for name, spec in overrides.items():
        if spec is None:
            space.pop(name, None)
        elif isinstance(spec, dict):
            space[name] = dict(spec)
        else:
            space[name] = {"type": "fixed", "value": spec}
    return validate(space)


def validate(space: Mapping[str, Any]) -> dict[str, Any]:
    """Check every entry: a `TrainConfig` field, a known type, a sane range; normalise plain
    values to ``fixed`` specs. Errors name the entry and what would be accepted."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for name, spec in space.items():
        if name not in fields:
            raise ValueError(f"search space: {name!r} is not a TrainConfig field.")
        if name in DECIDED_BY_THE_SEARCH:
            raise ValueError(f"search space: {name!r} {DECIDED_BY_THE_SEARCH[name]}.")
        if not isinstance(spec, dict):
            spec = {"type": "fixed", "value": spec}
        kind = spec.get("type")
        if kind not in SPEC_TYPES:
            raise ValueError(
                f"search space: {name}: type must be one of {', '.join(SPEC_TYPES)}; got {kind!r}."
            )
        if kind in ("float", "int"):
            lo, hi = spec.get("min"), spec.get("max")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi)):
                raise ValueError(f"search space: {name}: min and max must be finite numbers.")
            if not lo < hi:
                raise ValueError(f"search space: {name}: min {lo} must be below max {hi}.")
            sampling = spec.get("sampling", "linear")
            if sampling not in ("linear", "log"):
                raise ValueError(f"search space: {name}: sampling must be 'linear' or 'log'.")
            if sampling == "log" and lo <= 0:
                raise ValueError(f"search space: {name}: a log range needs min > 0, got {lo}.")
        if kind == "choice":
            values = spec.get("values")
            if not isinstance(values, list) or not values:
                raise ValueError(f"search space: {name}: 'values' must be a non-empty list.")
        if kind == "fixed" and "value" not in spec:
            raise ValueError(f"search space: {name}: a fixed entry needs a 'value'.")
        out[name] = dict(spec)
    if "model" in out:
        models = out["model"].get("values", [out["model"].get("value")])
        for model in models:
            zoo.model_info(model)  # an unknown name fails here, naming close ones
    return out


def define(hp: keras_tuner.HyperParameters, space: Mapping[str, Any]) -> None:
    """Declare ``space`` on ``hp`` (KerasTuner's own hyperparameter types)."""
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "float":
            hp.Float(name, spec["min"], spec["max"], sampling=spec.get("sampling", "linear"))
        elif kind == "int":
            hp.Int(name, spec["min"], spec["max"], sampling=spec.get("sampling", "linear"))
        elif kind == "choice":
            hp.Choice(name, spec["values"])
        else:
            hp.Fixed(name, spec["value"])


def recipe_trial(space: Mapping[str, Any], base: TrainConfig) -> dict[str, Any] | None:
    """The searched values of ``base`` with its model's recipe filled in: the coarse stage's
    first trial, so that every search measures the recipe it starts from. None when a value
    lies outside its searched range (that search does not contain the recipe)."""
    resolved = base.resolve()
    values: dict[str, Any] = {}
    for name, spec in space.items():
        value, kind = getattr(resolved, name), spec["type"]
        if kind == "fixed":
            continue
        if kind in ("float", "int"):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and spec["min"] <= value <= spec["max"]):
                return None
        elif value not in spec["values"]:
            return None
        values[name] = value
    return values


def _position(value: float, spec: Mapping[str, Any]) -> float:
    """Where ``value`` lies in ``spec``'s range, 0 to 1 (in log space for a log range)."""
    lo, hi = spec["min"], spec["max"]
    if spec.get("sampling") == "log":
        return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (value - lo) / (hi - lo)


def _from_position(position: float, spec: Mapping[str, Any]) -> float:
    lo, hi = spec["min"], spec["max"]
    if spec.get("sampling") == "log":
        return math.exp(math.log(lo) + position * (math.log(hi) - math.log(lo)))
    return lo + position * (hi - lo)


def fine_space(
    space: Mapping[str, Any], best: Sequence[Mapping[str, Any]], margin: float = 0.1
) -> dict[str, Any]:
    """The fine stage's space: each numeric range narrowed to the span of the ``best`` trials'
    values widened by ``margin`` of the old range on each side (in log space for log ranges),
    clipped to the old range; choices cut to the values the best trials used."""
    if not best:
        raise ValueError("fine_space needs at least one best trial.")
    fine: dict[str, Any] = {}
    for name, spec in space.items():
        values = [trial[name] for trial in best if name in trial]
        if spec["type"] in ("float", "int") and values:
            positions = [_position(v, spec) for v in values]
            lo = max(0.0, min(positions) - margin)
            hi = min(1.0, max(positions) + margin)
            new = {**spec, "min": _from_position(lo, spec), "max": _from_position(hi, spec)}
            if spec["type"] == "int":
                new["min"], new["max"] = math.floor(new["min"]), math.ceil(new["max"])
            if not new["min"] < new["max"]:
                new = {"type": "fixed", "value": values[0]}
            fine[name] = new
        elif spec["type"] == "choice" and values:
            kept = [v for v in spec["values"] if v in values]
            fine[name] = (
                {"type": "choice", "values": kept}
                if len(kept) > 1
                else {"type": "fixed", "value": kept[0]}
            )
        else:
            fine[name] = dict(spec)
    return fine


def edge_warnings(space: Mapping[str, Any], best: Mapping[str, Any]) -> list[str]:
    """One line per numeric hyperparameter whose best value lies within 10% of its range's edge
    (in log space where log-sampled), with a suggested widened range."""
    warnings = []
    for name, spec in space.items():
        if spec["type"] not in ("float", "int") or name not in best:
            continue
        position = _position(best[name], spec)
        log = spec.get("sampling") == "log"
        lo, hi = spec["min"], spec["max"]
        if position <= EDGE_FRACTION:
            edge, lo = "lower", (lo / 10 if log else lo - (hi - lo))
        elif position >= 1 - EDGE_FRACTION:
            edge, hi = "upper", (hi * 10 if log else hi + (hi - lo))
        else:
            continue
        if not log and name in NON_NEGATIVE and lo < 0:
            lo = 0.0
        if (lo, hi) == (spec["min"], spec["max"]):
            continue  # at a bound the value cannot pass (no label smoothing is best): no warning
        suggestion = {"type": spec["type"], "min": float(f"{lo:.3g}"), "max": float(f"{hi:.3g}")}
        if log:
            suggestion["sampling"] = "log"
        warnings.append(
            f"{name}: the best value {best[name]:.3g} is at the {edge} edge of "
            f"[{spec['min']:.3g}, {spec['max']:.3g}], so the range may be wrong; try --space "
            f"with {json.dumps({name: suggestion})}"
        )
    return warnings
