"""``python -m zoo.export``: a trained model as a SavedModel for serving, an ONNX file and, on
request, TFLite (float32, float16, int8) and int8 ONNX files; each checked and measured.

Layout (TF Serving's): ``<out>/<name>/<version>/`` holds the SavedModel, ``model.onnx``, the other
formats' files and ``metadata.json``. One module per job:

- `zoo.export.source`: a run directory or a ``.keras`` file as a `Source`.
- `zoo.export.serving`: the saved graph (`ServingModule`), its two signatures and outputs.
- `zoo.export.formats`: the formats (`FORMATS`): name, file, runtime, number format.
- `zoo.export.onnx`: the ONNX conversion, its parity check, and ONNX Runtime's int8 quantization.
- `zoo.export.tflite`: the TFLite conversions, by TensorFlow's converter from the SavedModel.
- `zoo.export.runners`: each format run by its own runtime (`open_runner`).
- `zoo.export.measure`: the images, each format's accuracy and speed, the accuracy gate.
- `zoo.export.store`: versions, their atomic claim, locks and killed exports' leftovers.
- `zoo.export.metadata`: the ``metadata.json`` format, its sha256 sums, writing and reading it.
- `zoo.export.writer`: `export`, which writes one checked version.
- `zoo.export.cli`: the command line (`main`) and `export_finished_run`.

The public names load their module (and TensorFlow) on first use, not on ``import zoo.export``:
``python -m zoo.export`` imports this package before its ``__main__``, which quiets TensorFlow's
start first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zoo.export.errors import ExportError

if TYPE_CHECKING:
    from zoo.export.cli import error_line, export_finished_run, main, summary
    from zoo.export.formats import DEFAULT_FORMATS, FORMATS, Format, parse_formats
    from zoo.export.metadata import DamagedExportError, file_sha256, read_metadata
    from zoo.export.onnx import DEFAULT_OPSET, PARITY_TOLERANCE, check_opset, max_opset
    from zoo.export.runners import Runner, open_runner
    from zoo.export.serving import CROP_FRACTION, ServingModule, decode_and_crop, model_output
    from zoo.export.source import Source, check_channels, load_source
    from zoo.export.store import LOCK_NAME, check_name, claim_version, next_version, versions
    from zoo.export.writer import export


# Public name -> the module that defines it (imported on first use).
_HOMES = {
    "CROP_FRACTION": "serving",
    "DEFAULT_FORMATS": "formats",
    "DEFAULT_OPSET": "onnx",
    "FORMATS": "formats",
    "Format": "formats",
    "Runner": "runners",
    "open_runner": "runners",
    "parse_formats": "formats",
    "DamagedExportError": "metadata",
    "LOCK_NAME": "store",
    "PARITY_TOLERANCE": "onnx",
    "ServingModule": "serving",
    "Source": "source",
    "check_channels": "source",
    "check_name": "store",
    "check_opset": "onnx",
    "claim_version": "store",
    "decode_and_crop": "serving",
    "error_line": "cli",
    "export": "writer",
    "export_finished_run": "cli",
    "file_sha256": "metadata",
    "load_source": "source",
    "main": "cli",
    "max_opset": "onnx",
    "model_output": "serving",
    "next_version": "store",
    "read_metadata": "metadata",
    "summary": "cli",
    "versions": "store",
}
__all__ = [
    "CROP_FRACTION",
    "DEFAULT_FORMATS",
    "DEFAULT_OPSET",
    "FORMATS",
    "LOCK_NAME",
    "PARITY_TOLERANCE",
    "DamagedExportError",
    "ExportError",
    "Format",
    "Runner",
    "ServingModule",
    "Source",
    "check_channels",
    "check_name",
    "check_opset",
    "claim_version",
    "decode_and_crop",
    "error_line",
    "export",
    "export_finished_run",
    "file_sha256",
    "load_source",
    "main",
    "max_opset",
    "model_output",
    "next_version",
    "open_runner",
    "parse_formats",
    "read_metadata",
    "summary",
    "versions",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"zoo.export.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'zoo.export' has no attribute {name!r}")
