"""What is exported: a run directory's model (its best or last checkpoint, rebuilt in float32)
or a ``.keras`` file's, with its classes, input shape and normalisation, as a `Source`."""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from zoo.cli import one_line
from zoo.training.rundir import CONFIG, DATA, METRICS, RunDirectory
from zoo.weights import load_keras_file


@dataclass
class Source:
    """A float32 Keras model and what serving it needs."""

    model: keras.Model
    model_name: str
    class_names: list[str]
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    dataset: str | None = None
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    checkpoint: str | None = None


def check_channels(name: str, values: Any, *, positive: bool = False) -> list[float]:
    """Three finite per-channel values (``positive``: each > 0), else a `ValueError` naming
    ``name`` (a flag such as ``--std`` from the command line)."""
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        out = []
    if len(out) != 3 or not all(math.isfinite(v) for v in out) or (positive and min(out) <= 0):
        shown = " ".join(map(str, values)) if isinstance(values, (list, tuple)) else repr(values)
        need = "3 finite values > 0" if positive else "3 finite values"
        raise ValueError(f"{name} must be {need} (per channel, pixels in [0, 1]), got {shown}.")
    return out


def load_source(
    path: str | os.PathLike[str],
    *,
    checkpoint: str = "best",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> Source:
    """Read a run directory (its best or last checkpoint) or a ``.keras`` file.

    A run directory's model is rebuilt in float32, so a model trained under mixed precision
    serves float32. A ``.keras`` file carries no normalisation: pass ``mean`` and ``std``
    (pixels in [0, 1]); class names default to the class indices.

    Raises:
        FileNotFoundError: no such run directory or file, or a run without checkpoints.
        ValueError: bad arguments, or a damaged file (named in the message).
    """
    path = Path(path)
    if path.is_dir():
        return _load_run(path, checkpoint)
    if path.suffix == ".keras" and path.is_file():
        if mean is None or std is None:
            raise ValueError(
                f"{path} carries no normalisation: pass mean and std "
                "(per channel, pixels in [0, 1])."
            )
        mean, std = check_channels("mean", mean), check_channels("std", std, positive=True)
        model = _load_keras(path)
        try:
            shape = tuple(int(d) for d in model.inputs[0].shape[1:])
            classes = int(model.outputs[0].shape[-1])
            if len(model.inputs) != 1 or len(shape) != 3 or shape[2] != 3:
                raise ValueError
        except (AttributeError, IndexError, TypeError, ValueError):
            raise ValueError(
                f"{path}: the model needs one image input of a fixed size (height, width, 3) "
                "and one output of class scores."
            ) from None
        if class_names is not None and list(class_names) == ["imagenet"]:
            from zoo.weights import imagenet_class_names

            class_names = imagenet_class_names()
        names = list(class_names) if class_names else [str(i) for i in range(classes)]
        if len(names) != classes:
            raise ValueError(f"{len(names)} class names for a model with {classes} classes.")
        return Source(
            model=model,
            model_name=model.name,
            class_names=names,
            input_shape=shape,
            mean=mean,
            std=std,
        )
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a run directory or a .keras file.")
    raise FileNotFoundError(f"{path} is neither a run directory nor a .keras file.")


def _load_keras(path: Path) -> keras.Model:
    """A ``.keras`` file's model, or a `ValueError` naming the file."""
    if not zipfile.is_zipfile(path):
        reason = "not a zip archive"
    else:
        try:
            return load_keras_file(path)  # the zoo's layers registered first
        except Exception as err:  # Keras raises many kinds for a bad archive
            reason = one_line(err, 300, typed=True)
    raise ValueError(
        f"{path} is not a readable .keras model ({reason}); pass a file saved with "
        "model.save('name.keras')."
    )


def _load_run(path: Path, checkpoint: str) -> Source:
    """A run directory's model, its data description and results."""
    run = RunDirectory(path)
    if not RunDirectory.is_run(path) or not run.file(DATA).is_file():
        raise FileNotFoundError(f"{path} is not a run directory ({CONFIG}, {DATA}).")
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}.")
    config = run.read_config()  # a damaged config.json is a ValueError naming it
    data = run.read_json(DATA)
    try:
        class_names = [str(name) for name in data["class_names"]]
        input_shape = tuple(int(d) for d in data["input_shape"])
        mean = check_channels("mean", data["mean"])
        std = check_channels("std", data["std"], positive=True)
        if len(input_shape) != 3 or not class_names:
            raise ValueError("input_shape must be (height, width, 3) and class_names non-empty")
    except (KeyError, TypeError, ValueError) as err:
        reason = one_line(err, 300, typed=True)
        raise ValueError(f"{run.file(DATA)} is damaged ({reason}); restore it.") from None
    has_metrics = run.file(METRICS).is_file()
    metrics = run.read_json(METRICS) if has_metrics else None
    model, found = run.load_model(checkpoint)
    return Source(
        model=model,
        model_name=config.model,
        class_names=class_names,
        input_shape=input_shape,
        mean=mean,
        std=std,
        dataset=config.dataset,
        config=run.read_json(CONFIG),
        metrics=metrics,
        checkpoint=found,
    )
