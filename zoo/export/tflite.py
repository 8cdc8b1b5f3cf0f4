"""TFLite files converted from the export's own SavedModel by TensorFlow's standard converter
(``tf.lite.TFLiteConverter.from_saved_model``, its ``serving_default`` signature), as anyone
would convert it:

- ``model.tflite``: float32;
- ``model_fp16.tflite``: float16 weights (half the size; computed in float32 on a CPU);
- ``model_int8.tflite``: full-integer post-training quantization (every op int8,
  ``TFLITE_BUILTINS_INT8`` only: a graph with an op that has no int8 kernel fails rather than
  falling back to float), calibrated on the given images; float32 input and output kept, so a
  client feeds the same raw pixels as to the SavedModel.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import numpy as np

from pipelines.cli import native_stderr_hidden
from zoo.cli import one_line
from zoo.export.errors import ExportError
from zoo.export.formats import Format

SIGNATURE = "serving_default"


def convert(
    saved_model: str | os.PathLike[str], fmt: Format, calibration: np.ndarray | None = None
) -> bytes:
    """The TFLite flatbuffer of format ``fmt`` (``tflite``, ``tflite_fp16``, ``tflite_int8``)
    of the SavedModel in ``saved_model``; ``calibration``: raw-pixel images for int8.

    Raises:
        ExportError: the converter failed (naming the format and its reason).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model), signature_keys=[SIGNATURE]
    )
    if fmt.numbers == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt.numbers == "int8":
        if calibration is None or not len(calibration):
            raise ValueError(f"{fmt.name} needs calibration images.")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: _one_by_one(calibration)
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
    try:
        # The calibration runs TensorFlow's own interpreter (its deprecation warning, and the
        # converter's native "fully_quantize: ..." and XNNPACK lines are not the user's concern).
        with native_stderr_hidden(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return converter.convert()
    except Exception as err:  # the converter raises ConverterError, ValueError, RuntimeError
        raise ExportError(
            f"{fmt.name}: TensorFlow's TFLite converter failed ({one_line(err, 300, typed=True)});"
            f" leave {fmt.name} out of --formats; nothing was exported."
        ) from None


def _one_by_one(images: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    for i in range(len(images)):
        yield {"images": images[i : i + 1].astype(np.float32)}
