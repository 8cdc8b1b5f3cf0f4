"""The formats an export can hold: one name, file, runtime and number format each.

``savedmodel`` is always written: every other format is converted from it (TFLite) or from the
same serving function (ONNX), and measured against it. ``--formats`` takes names separated by
commas, or ``all``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SAVEDMODEL_FILE = "saved_model.pb"


@dataclass(frozen=True)
class Format:
    """One way of shipping the model."""

    name: str  # as --formats and metadata.json name it
    file: str  # in the version directory
    runtime: str  # what runs it: "tf", "onnx" (ONNX Runtime) or "tflite" (LiteRT)
    numbers: str  # "float32", "float16" (weights) or "int8"
    what: str  # for --help and the docs

    @property
    def calibrated(self) -> bool:
        """Whether it needs calibration images (int8 activations)."""
        return self.numbers == "int8"


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("savedmodel", SAVEDMODEL_FILE, "tf", "float32", "TensorFlow SavedModel"),
        Format("onnx", "model.onnx", "onnx", "float32", "ONNX, float32"),
        Format(
            "onnx_int8",
            "model_int8.onnx",
            "onnx",
            "int8",
            "ONNX, static int8 (QDQ, per-channel weights), calibrated",
        ),
        Format("tflite", "model.tflite", "tflite", "float32", "TFLite (LiteRT), float32"),
        Format("tflite_fp16", "model_fp16.tflite", "tflite", "float16", "TFLite, float16 weights"),
        Format(
            "tflite_int8",
            "model_int8.tflite",
            "tflite",
            "int8",
            "TFLite, full integer (float input and output), calibrated",
        ),
    )
}
DEFAULT_FORMATS = ("savedmodel", "onnx")
BACKENDS = ("tf", "onnx", "tflite")  # zoo.predict --backend


def parse_formats(text: str | Iterable[str], flag: str = "--formats") -> tuple[str, ...]:
    """The formats named by ``text`` (``"all"``, ``"tflite,onnx_int8"`` or a list), in the
    registry's order and always with ``savedmodel``; a `ValueError` naming ``flag`` for an
    unknown name."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return tuple(FORMATS)
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ValueError(
            f"{flag} {','.join(unknown) or repr(text)}: unknown format; choose from "
            f"{', '.join(FORMATS)}, separated by commas, or 'all'."
        )
    wanted = {"savedmodel", *names}
    return tuple(n for n in FORMATS if n in wanted)


def format_for(backend: str, numbers: str) -> Format:
    """The format that ``zoo.predict --backend B --precision P`` serves; a `ValueError` when
    there is none (e.g. ``--backend tf --precision int8``)."""
    for f in FORMATS.values():
        if f.runtime == backend and f.numbers == numbers:
            return f
    offered = ", ".join(f"{f.runtime}/{f.numbers}" for f in FORMATS.values())
    raise ValueError(
        f"--backend {backend} --precision {numbers}: no such format; the exports hold {offered}."
    )


def format_of_file(file_name: str) -> Format | None:
    """The format whose file is named ``file_name`` (``model_int8.tflite``), or None."""
    for f in FORMATS.values():
        if f.file == file_name:
            return f
    return None
