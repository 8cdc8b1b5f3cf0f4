"""The graph that is saved, with two signatures callable without this project installed:

- ``serving_default``: ``images`` float32 ``[batch, H, W, 3]`` with raw 0-255 pixels; the
  normalisation is inside the graph. Outputs ``probabilities``, ``logits`` (float32) and
  ``classes`` (int64, top-1).
- ``serving_bytes``: ``image_bytes`` string ``[batch]`` of encoded JPEG/PNG/BMP/GIF images,
  decoded, resized and centre-cropped in the graph as the evaluation pipeline does.

A model that ends in softmax (a ``Softmax`` layer, or a layer with ``activation="softmax"``)
serves its own outputs as ``probabilities`` and their logarithm as ``logits``; one that ends in
logits (no activation) serves the softmax of its outputs. Any other output activation is
refused. ``metadata.json`` says which (``model_output``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from pipelines.resize import CROP_FRACTION, resize_and_center_crop
from zoo.export.metadata import LOGITS, PROBABILITIES

if TYPE_CHECKING:
    from zoo.export.source import Source

# The logits served for a model that outputs probabilities: log(p), with p = 0 clamped to
# float32's smallest normal number so that no -inf reaches a JSON client (log: -87.3).
SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)


def _output_layer(model: keras.Model) -> Any:
    """The layer that makes a Sequential or functional model's only output (None if unknown)."""
    if isinstance(model, keras.Sequential):
        layer = model.layers[-1] if model.layers else None
    else:
        names = getattr(model, "output_names", None)
        if not names or len(names) != 1:
            return None
        try:
            layer = model.get_layer(names[0])
        except ValueError:
            return None
    if isinstance(layer, keras.Model) and layer is not model:
        return _output_layer(layer) or layer
    return layer


def model_output(model: keras.Model, input_shape: Sequence[int]) -> dict[str, str]:
    """What a classifier outputs: ``{"kind": "probabilities" | "logits", "found": how}``.

    A ``Softmax`` layer or a last layer with ``activation="softmax"`` outputs probabilities; no
    activation (``linear``) or ``log_softmax`` outputs logits (softmax of log-probabilities
    is the probabilities). Other activations (sigmoid, relu, ...) raise `ValueError`: a
    softmax over them would not be the model's probabilities. When the last layer is not
    known (a subclassed model, a ``Lambda``, pooling), the model is run on 8 random inputs:
    rows of non-negative numbers that sum to 1 are probabilities, anything else logits.
    """
    layer = _output_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return {"kind": PROBABILITIES, "found": f"layer {layer.name!r} is a Softmax layer"}
    activation = getattr(layer, "activation", None) if layer is not None else None
    if activation is not None:
        name = activation if isinstance(activation, str) else getattr(activation, "__name__", "")
        found = f"layer {layer.name!r} ({type(layer).__name__}) has activation {name!r}"
        if name == "softmax":
            return {"kind": PROBABILITIES, "found": found}
        if name in ("linear", "log_softmax"):
            return {"kind": LOGITS, "found": found}
        raise ValueError(
            f"model {model.name!r}: its output {found}; the export serves classifiers that end "
            "in logits (no activation) or in softmax: rebuild the last layer without an "
            "activation or with softmax."
        )
    inputs = np.random.default_rng(0).normal(size=(8, *input_shape)).astype("float32")
    outputs = np.asarray(model(inputs, training=False), dtype="float64")
    sums = outputs.sum(axis=-1)
    probabilities = bool(
        np.isfinite(outputs).all() and outputs.min() >= 0 and np.abs(sums - 1).max() < 1e-4
    )
    return {
        "kind": PROBABILITIES if probabilities else LOGITS,
        "found": "the outputs on random inputs "
        + ("are rows of probabilities" if probabilities else "are not probabilities"),
    }


def decode_and_crop(
    image_bytes: tf.Tensor, size: Sequence[int], crop_fraction: float = CROP_FRACTION
) -> tf.Tensor:
    """One encoded image to float32 ``[H, W, 3]`` 0-255 pixels, as the evaluation pipeline
    prepares it (grey and RGBA become RGB; GIF: first frame)."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return resize_and_center_crop(tf.cast(image, tf.float32), size, crop_fraction)


class ServingModule:
    """The graph that is saved: normalisation, the model and the outputs. ``output`` is what
    the model outputs, ``"probabilities"`` or ``"logits"`` (default: `model_output`'s answer).

    `save` writes it with Keras's `keras.export.ExportArchive`, which saves the variables the
    signatures read and nothing of the Keras model object. The SavedModel then converts
    cleanly with TensorFlow's own ``tf.lite.TFLiteConverter.from_saved_model``: its weights
    become constants (``CONV_2D``, ``FULLY_CONNECTED``, batch norm folded). Saved with
    ``tf.saved_model.save`` of a module that holds the Keras model, the same graph converted
    without an error into a TFLite model whose weights stayed ``READ_VARIABLE`` ops that nothing
    initialises: NaN for every input.
    """

    def __init__(
        self, source: Source, crop_fraction: float = CROP_FRACTION, output: str | None = None
    ) -> None:
        self.model = source.model
        self._mean, self._std = list(source.mean), list(source.std)
        height, width, channels = source.input_shape
        self._size = (height, width)
        self._crop_fraction = crop_fraction
        self._output = output or model_output(source.model, source.input_shape)["kind"]
        if self._output not in (PROBABILITIES, LOGITS):
            raise ValueError(f"output must be {PROBABILITIES!r} or {LOGITS!r}, got {output!r}.")
        self.signatures = {
            "serving_default": [
                tf.TensorSpec([None, height, width, channels], tf.float32, name="images")
            ],
            "serving_bytes": [tf.TensorSpec([None], tf.string, name="image_bytes")],
        }
        self.serve = tf.function(self._serve, input_signature=self.signatures["serving_default"])
        self.serve_bytes = tf.function(
            self._serve_bytes, input_signature=self.signatures["serving_bytes"]
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the SavedModel with its two signatures to ``path``."""
        archive = keras.export.ExportArchive()
        archive.track(self.model)
        archive.add_endpoint(
            "serving_default", self._serve, input_signature=self.signatures["serving_default"]
        )
        archive.add_endpoint(
            "serving_bytes", self._serve_bytes, input_signature=self.signatures["serving_bytes"]
        )
        archive.write_out(str(path), verbose=False)

    def _serve(self, images):
        # Constants are made here, not captured, so the ONNX graph has one input.
        mean = tf.constant(self._mean, tf.float32)
        std = tf.constant(self._std, tf.float32)
        x = (images / 255.0 - mean) / std
        outputs = tf.cast(self.model(x, training=False), tf.float32)
        if self._output == PROBABILITIES:
            probabilities = outputs
            logits = tf.math.log(tf.maximum(outputs, SMALLEST_PROBABILITY))
            classes = tf.argmax(probabilities, axis=-1)
        else:
            logits, probabilities = outputs, tf.nn.softmax(outputs, axis=-1)
            classes = tf.argmax(logits, axis=-1)
        return {"probabilities": probabilities, "logits": logits, "classes": classes}

    def _serve_bytes(self, image_bytes):
        images = tf.map_fn(
            lambda b: decode_and_crop(b, self._size, self._crop_fraction),
            image_bytes,
            fn_output_signature=tf.TensorSpec([*self._size, 3], tf.float32),
        )
        return self._serve(images)
