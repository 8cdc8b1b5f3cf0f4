"""Transfer learning: start a model from another run's or file's weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras

from pipelines.cli import one_line
from zoo.config import TrainConfig
from zoo.training.rundir import DATA, RunDirectory
from zoo.weights import load_keras_file


def source_model(source: str) -> keras.Model:
    """The model of a run directory (best weights) or of a ``.keras`` file."""
    path = Path(source)
    if path.is_dir():
        model, _ = RunDirectory.open(path).load_model("best")
        return model
    if path.suffix == ".keras" and path.is_file():
        try:
            return load_keras_file(path)
        except (ValueError, TypeError, KeyError, OSError) as err:
            raise ValueError(
                f"--init-from {source}: Keras cannot load it ({one_line(err)})."
            ) from None
    if not path.exists():
        raise FileNotFoundError(f"--init-from {source}: no such run directory or .keras file.")
    raise ValueError(f"--init-from must be a run directory or a .keras file, got {source!r}.")


def source_class_names(source: str) -> list[str] | None:
    """The class names a run directory was trained on (None for a ``.keras`` file, which
    does not record them)."""
    path = Path(source)
    if not path.is_dir():
        return None
    try:
        names = RunDirectory.open(path).read_json(DATA).get("class_names")
    except (OSError, ValueError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def copy_matching_weights(
    model: keras.Model, source: keras.Model, skip: tuple[str, ...] = ()
) -> tuple[int, list[str]]:
    """Copy weights layer by layer, by name, where every shape matches and the layer is not
    named in ``skip``; returns the number of layers copied and the names of those left fresh
    (typically a new classifier)."""
    copied, fresh = 0, []
    source_layers = {layer.name: layer for layer in source.layers}
    for layer in model.layers:
        other = source_layers.get(layer.name)
        if other is None or not layer.weights:
            continue
        if layer.name not in skip and [w.shape for w in layer.weights] == [
            w.shape for w in other.weights
        ]:
            layer.set_weights(other.get_weights())
            copied += 1
        else:
            fresh.append(layer.name)
    return copied, fresh


def start_from(
    config: TrainConfig, model: keras.Model, classifier: str, class_names: Sequence[str]
) -> tuple[int, list[str]]:
    """Copy ``config.init_from``'s matching layers into ``model``, as a run starts: with
    ``fine_tune`` the classifier (named ``classifier``) stays new unless the source was trained
    on these very ``class_names``. Returns `copy_matching_weights`'s counts.

    Raises:
        ValueError: no layer of the source matches the model.
    """
    names = [str(n) for n in class_names]
    new_head = config.fine_tune and source_class_names(config.init_from) != names
    source = source_model(config.init_from)
    copied, fresh = copy_matching_weights(model, source, (classifier,) if new_head else ())
    if copied == 0:
        raise ValueError(f"no layer of {config.init_from} matches {config.model}.")
    return copied, fresh
