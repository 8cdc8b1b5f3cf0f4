"""`build_model`: the one place a run's model is built from its `TrainConfig`."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo import weights as zoo_weights
from zoo.config import TrainConfig
from zoo.training.runtime import dtype_policy


def build_model(
    config: TrainConfig,
    *,
    input_shape: Sequence[int],
    classes: int,
    precision: str = "float32",
    strategy: tf.distribute.Strategy | None = None,
    load_weights: bool = True,
) -> keras.Model:
    """``config``'s model for ``input_shape`` and ``classes`` under ``precision`` (in
    ``strategy``'s scope when given).

    ``load_weights`` (a new run): initialised from ``config.seed`` and loaded with
    ``config.weights``; Python's and NumPy's random generators are put back afterwards. Without
    it the model only takes the architecture those weights imply (keras.applications' ResNets:
    ``stride_in_1x1``) for a checkpoint of the run to fill, which also works once the weights
    file is gone; no seed is set."""
    if load_weights:
        options: dict = {"weights": config.weights}
        saved = random.getstate(), np.random.get_state()
        keras.utils.set_random_seed(config.seed)
    else:  # a checkpoint's weights follow: the caller's seeds are left alone
        options = zoo_weights.architecture_options(config.model, config.weights)
        saved = None
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    try:
        with scope, dtype_policy(precision):
            return zoo.create_model(
                config.model,
                input_shape=tuple(input_shape),
                classes=classes,
                width=config.width,
                dropout=config.dropout,
                **options,
            )
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
