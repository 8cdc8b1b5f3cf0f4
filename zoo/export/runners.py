"""Each format of an export run by the runtime it is made for, behind one call: a batch of
raw 0-255 pixels ``[N, H, W, 3]`` float32 in, probabilities ``[N, classes]`` out.

- ``tf``: the SavedModel's ``serving_default`` signature;
- ``onnx``: ONNX Runtime, CPU;
- ``tflite``: the LiteRT interpreter (``ai_edge_litert``), TensorFlow's own ``tf.lite``
  interpreter only where LiteRT has no wheel for the platform; the ``serving_default``
  signature, whose batch size follows the input.

Opening one raises whatever its runtime raises for an unreadable file; callers say which file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.cli import native_stderr_hidden
from zoo.export.formats import FORMATS, Format

SIGNATURE = "serving_default"


def cpu_threads() -> int:
    """The CPUs this process may run on (what every runtime is given, so they compare fairly)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def tflite_interpreter_class() -> tuple[type, str]:
    """LiteRT's interpreter and its name, else TensorFlow's (deprecated there)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "LiteRT (ai-edge-litert)"
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation: LiteRT has no wheel here
            return tf.lite.Interpreter, "tf.lite"


class Runner:
    """One format of one export, ready to run."""

    def __init__(self, fmt: Format, path: Path, run: Callable[[np.ndarray], Any], by: str):
        self.format, self.path, self._run, self.runtime = fmt, path, run, by

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of raw pixels (float32 ``[N, H, W, 3]``, 0-255)."""
        return np.asarray(self._run(np.ascontiguousarray(images, dtype=np.float32)))


def open_runner(folder: str | os.PathLike[str], fmt: Format | str) -> Runner:
    """The runner of format ``fmt`` of the export in ``folder``."""
    fmt = FORMATS[fmt] if isinstance(fmt, str) else fmt
    folder = Path(folder)
    path = folder / fmt.file
    if fmt.runtime == "tf":
        import tensorflow as tf

        signature = tf.saved_model.load(str(folder)).signatures[SIGNATURE]
        return Runner(
            fmt,
            path,
            lambda x: signature(images=tf.constant(x))["probabilities"].numpy(),
            f"TensorFlow {tf.__version__}",
        )
    if fmt.runtime == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = cpu_threads()
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        return Runner(
            fmt,
            path,
            lambda x: session.run(["probabilities"], {"images": x})[0],
            f"ONNX Runtime {onnxruntime.__version__}",
        )
    interpreter_class, name = tflite_interpreter_class()
    # LiteRT says "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on the first call.
    with native_stderr_hidden():
        interpreter = interpreter_class(model_path=str(path), num_threads=cpu_threads())
        runner = interpreter.get_signature_runner(SIGNATURE)
        shape = runner.get_input_details()["images"]["shape_signature"]
        runner(images=np.zeros((1, *shape[1:]), np.float32))
    return Runner(fmt, path, lambda x: runner(images=x)["probabilities"], name)
