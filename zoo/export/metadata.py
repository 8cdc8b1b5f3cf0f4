"""``metadata.json``: the one owner of its format. It is built and written by the export and read
and validated by whoever serves the version (`zoo.predict`).

It records the model, ``class_names``, the ``input`` spec, the ``normalization`` (inside the
graph), ``bytes_input`` (the crop of ``serving_bytes``), the ``outputs`` and ``model_output``
(whether the model ends in probabilities or logits), the ``signatures``, ``onnx`` (file and
opset, or null with ``--no-onnx``), the ``parity`` figures, ``formats`` (each format's file,
runtime, number format, size in bytes and measured figures), ``evaluation`` (the images they were
measured on), ``calibration`` (the int8 formats' images), ``measured_on`` (the CPU and threads),
the run's configuration, metrics and checkpoint, the library ``versions``, the export's ``name``
and ``version``, and a ``sha256`` of every file. Serving needs ``class_names``, the input shape
and the crop fraction (`problem` checks them) and the sums (`recorded_sha256`).

Light to import: TensorFlow is loaded only when a version is built.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.export.source import Source

METADATA_FILE = "metadata.json"
ONNX_FILE = "model.onnx"
PROBABILITIES, LOGITS = "probabilities", "logits"  # what a model outputs (``model_output.kind``)


class DamagedExportError(ValueError):
    """An export that cannot be served as it is: a file changed, damaged or missing."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_sums(folder: Path, skip: str) -> dict[str, str]:
    """The sha256 of every file under ``folder`` but ``folder/skip``, by relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / skip)
    return {str(p.relative_to(folder)): file_sha256(p) for p in files}


def build_metadata(
    source: Source,
    *,
    output: dict[str, str],
    onnx: bool,
    opset: int,
    parity: dict[str, Any],
    formats: dict[str, dict[str, Any]] | None = None,
    evaluation: str | None = None,
    calibration: dict[str, Any] | None = None,
    measured_on: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A version's metadata, less ``name``, ``sha256`` and ``version`` (the export adds them)."""
    import importlib.metadata

    import keras
    import onnx as onnx_lib
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    import zoo
    from pipelines.resize import CROP_FRACTION

    served = (
        "probabilities: the model's outputs; logits: their logarithm"
        if output["kind"] == PROBABILITIES
        else "logits: the model's outputs; probabilities: their softmax"
    )
    return {
        "model": source.model_name,
        "class_names": source.class_names,
        "input": {
            "name": "images",
            "shape": [None, *source.input_shape],
            "dtype": "float32",
            "range": [0, 255],
        },
        "normalization": {
            "mean": source.mean,
            "std": source.std,
            "units": "pixels scaled to [0, 1]",
            "inside_graph": True,
        },
        "bytes_input": {
            "name": "image_bytes",
            "resize": "keep aspect, centre crop",
            "crop_fraction": CROP_FRACTION,
        },
        "outputs": [PROBABILITIES, LOGITS, "classes"],
        "model_output": {**output, "served": served},
        "signatures": ["serving_default", "serving_bytes"],
        "onnx": {"file": ONNX_FILE, "opset": opset} if onnx else None,
        "parity": parity,
        "formats": formats or {},
        "evaluation": evaluation,
        "calibration": calibration,
        "measured_on": measured_on,
        "training_config": source.config,
        "metrics": source.metrics,
        "checkpoint": source.checkpoint,
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx_lib.__version__,
            "onnxruntime": onnxruntime.__version__,
            "ai-edge-litert": _version(importlib.metadata, "ai-edge-litert"),
            "keras-zoo": zoo.__version__,
        },
    }


def _version(metadata: Any, package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_metadata(folder: Path, metadata: dict[str, Any]) -> None:
    """Write ``folder/metadata.json`` (a version being written: its folder is renamed into
    place whole, so the file needs no rename of its own)."""
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def problem(metadata: Any) -> str | None:
    """What is wrong with the fields of ``metadata.json`` that serving reads, or None."""
    if not isinstance(metadata, dict):
        return "is not a JSON object"
    names = metadata.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return "has no valid 'class_names'"
    spec = metadata.get("input")
    shape = spec.get("shape") if isinstance(spec, dict) else None
    if not isinstance(shape, list) or len(shape) != 4 or not all(_positive(d) for d in shape[1:3]):
        return "has no valid 'input' shape"
    spec = metadata.get("bytes_input")
    fraction = spec.get("crop_fraction") if isinstance(spec, dict) else None
    if not _number(fraction) or not 0 < fraction <= 1:
        return "has no valid 'bytes_input' crop_fraction"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def read_metadata(folder: Path) -> dict[str, Any]:
    """A version directory's ``metadata.json``, checked for the fields serving reads.

    Raises:
        FileNotFoundError: there is none.
        DamagedExportError: it is not JSON or lacks a field.
    """
    file = folder / METADATA_FILE
    try:
        metadata = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} is not an export (no {METADATA_FILE}).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedExportError(f"{file} is not valid JSON ({err}); export again.") from None
    found = problem(metadata)
    if found:
        raise DamagedExportError(f"{file} {found}; export again.")
    return metadata


def recorded_sha256(folder: Path, metadata: dict[str, Any]) -> dict[str, str]:
    """The sha256 sums ``metadata.json`` records, by path relative to ``folder``.

    Raises:
        DamagedExportError: there are none, or they are not strings by strings.
    """
    sums = metadata.get("sha256")
    if not isinstance(sums, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in sums.items()
    ):
        raise DamagedExportError(
            f"{folder / METADATA_FILE} has no valid 'sha256'; export again or pass --no-verify."
        )
    return sums
