"""`export`: one version written in a temporary folder, checked, and claimed atomically."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from zoo.cli import one_line
from zoo.export import tflite
from zoo.export.errors import ExportError
from zoo.export.formats import DEFAULT_FORMATS, FORMATS, SAVEDMODEL_FILE, parse_formats
from zoo.export.measure import (
    CALIBRATION_IMAGES,
    EVAL_IMAGES,
    EVAL_SPLIT,
    MAX_ACCURACY_DROP,
    Images,
    accuracy_figures,
    check_drop,
    machine,
    probabilities,
    run_images,
    speed,
)
from zoo.export.metadata import build_metadata, sha256_sums
from zoo.export.onnx import DEFAULT_OPSET, PARITY_TOLERANCE, check_opset, quantize, write_and_check
from zoo.export.runners import open_runner
from zoo.export.serving import ServingModule, model_output
from zoo.export.source import Source, check_channels
from zoo.export.store import LOCK_NAME, check_name, claim_version, remove_made, start_version

PARITY_IMAGES = 32


def export(
    source: Source,
    *,
    out: str | os.PathLike[str] = "saved_models",
    name: str | None = None,
    version: int | None = None,
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    onnx: bool = True,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    eval_split: str = EVAL_SPLIT,
    eval_images: int = EVAL_IMAGES,
    calibration: int | np.ndarray = CALIBRATION_IMAGES,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    measure_speed: bool = True,
) -> Path:
    """Write ``<out>/<name>/<version>/`` atomically and return its path.

    Args:
        formats: names of `FORMATS` (``"all"``, or separated by commas); the SavedModel is
            always written. ``onnx_int8`` is quantized from ``model.onnx``, which it adds.
        onnx: False leaves both ONNX formats out (``--no-onnx``).
        eval_split, eval_images: the labelled images every format is measured on.
        calibration: how many training images calibrate the int8 formats, or the images
            themselves (raw 0-255 pixels, ``[N, H, W, 3]``).
        max_accuracy_drop: points of top-1 accuracy a format may lose against the float32
            SavedModel before the export fails.
        measure_speed: time batch-1 latency and batch-64 throughput of every format.

    Raises:
        ValueError: bad name, version, opset, formats, normalisation, or an output activation
            that is neither softmax nor none; a float16 or int8 format without labelled images.
        FileExistsError: the version exists and ``overwrite`` is false.
        ExportError: the version was taken while this export ran, a conversion failed, a float
            format differs from the SavedModel by more than `PARITY_TOLERANCE`, or a format's
            accuracy fell more than ``max_accuracy_drop`` points.
        OSError: ``out`` cannot be written (read-only, full, a file, a name too long); nothing
            is left behind, not even the folders this export made.
    """
    name = check_name(name or source.model_name)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise ValueError(f"version must be an integer >= 1, got {version!r}.")
    chosen = parse_formats(formats)
    if not onnx:
        chosen = tuple(f for f in chosen if FORMATS[f].runtime != "onnx")
    elif "onnx_int8" in chosen and "onnx" not in chosen:
        chosen = parse_formats([*chosen, "onnx"])
    if any(FORMATS[f].runtime == "onnx" for f in chosen):
        check_opset(opset)
    if not (isinstance(eval_images, int) and eval_images >= 1):
        raise ValueError(f"--eval-images must be an integer >= 1, got {eval_images!r}.")
    if isinstance(calibration, int) and calibration < 1:
        raise ValueError(f"--calibration-images must be >= 1, got {calibration}.")
    if not (isinstance(max_accuracy_drop, (int, float)) and max_accuracy_drop >= 0):
        raise ValueError(f"--max-accuracy-drop must be >= 0 points, got {max_accuracy_drop!r}.")
    check_channels("mean", source.mean)
    check_channels("std", source.std, positive=True)
    output = model_output(source.model, source.input_shape)
    plan = _Plan(
        chosen, opset, eval_split, eval_images, calibration, max_accuracy_drop, measure_speed
    )
    plan.load_images(source)  # bad data fails before anything is written
    folder = Path(out) / name
    if version is not None and os.path.lexists(folder / str(version)) and not overwrite:
        raise FileExistsError(
            f"{folder / str(version)} exists; pass --overwrite to replace it, or --version to "
            "choose another."
        )
    made = []  # the folders this export makes, deepest first: removed again if it fails
    for parent in (folder, *folder.parents):
        if os.path.lexists(parent):
            break
        made.append(parent)
    tmp, tmp_lock = None, None
    try:
        tmp, tmp_lock = start_version(folder)
        metadata = plan.write(source, tmp, output)
        metadata["name"] = name
        metadata["sha256"] = sha256_sums(tmp, skip=LOCK_NAME)
        return claim_version(tmp, folder, version, overwrite=overwrite, metadata=metadata)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        remove_made(made)
        raise
    finally:
        if tmp_lock is not None:
            tmp_lock.release()


class _Plan:
    """One export's formats, images and checks."""

    def __init__(
        self,
        formats: tuple[str, ...],
        opset: int,
        eval_split: str,
        eval_images: int,
        calibration: int | np.ndarray,
        max_drop: float,
        measure_speed: bool,
    ) -> None:
        self.formats, self.opset, self.max_drop = formats, opset, max_drop
        self.eval_split, self.eval_images, self.calibration = eval_split, eval_images, calibration
        self.measure_speed = measure_speed
        self.eval: Images | None = None
        self.calibration_images: Images | None = None

    @property
    def needs_data(self) -> list[str]:
        """The formats that need labelled images (float16 and int8: an accuracy to check)."""
        return [f for f in self.formats if FORMATS[f].numbers != "float32"]

    def load_images(self, source: Source) -> None:
        """The evaluation images and, for int8, the calibration images; without a dataset only
        float32 formats can be exported (checked against the SavedModel on random pixels)."""
        try:
            self.eval = run_images(source, self.eval_split, self.eval_images)
        except ValueError as err:
            if self.needs_data or self.eval_split != EVAL_SPLIT:
                raise ValueError(f"{', '.join(self.needs_data) or '--eval-split'}: {err}") from None
        if any(FORMATS[f].calibrated for f in self.formats):
            if isinstance(self.calibration, np.ndarray):
                pixels = np.asarray(self.calibration, np.float32)
                if pixels.ndim != 4 or pixels.shape[1:] != tuple(source.input_shape):
                    raise ValueError(
                        f"calibration images must be [N, {', '.join(map(str, source.input_shape))}]"
                        f" raw pixels, got shape {list(pixels.shape)}."
                    )
                self.calibration_images = Images(pixels, None, f"{len(pixels)} given images")
            else:
                self.calibration_images = run_images(
                    source, "train", self.calibration, "calibration:"
                )

    def write(self, source: Source, tmp: Path, output: dict[str, str]) -> dict[str, Any]:
        """Every format in ``tmp``, checked and measured: the version's metadata."""
        module = ServingModule(source, output=output["kind"])
        try:
            module.save(tmp)
        except tf.errors.OpError as err:
            raise ExportError(
                f"cannot write the SavedModel in {tmp.parent} ({one_line(err, 300, typed=True)}); "
                "check the space and permissions there, or choose another --out."
            ) from None
        if self.eval is not None:
            images = self.eval.pixels[:PARITY_IMAGES]
            parity_source = self.eval.origin.split(" (")[0]
        else:
            rng = np.random.default_rng(0)
            images = rng.uniform(0, 255, size=(PARITY_IMAGES, *source.input_shape)).astype(
                "float32"
            )
            parity_source = "uniform random pixels (the dataset was not available)"
        saved = open_runner(tmp, "savedmodel")
        saved_probs = saved.probabilities(images)
        keras_probs = module.serve(images)["probabilities"].numpy()
        parity: dict[str, Any] = {
            "inputs": parity_source,
            "images": len(images),
            "savedmodel_vs_keras_max_abs_diff": float(np.abs(saved_probs - keras_probs).max()),
        }
        if "onnx" in self.formats:
            parity.update(
                write_and_check(module, tmp / FORMATS["onnx"].file, self.opset, images, saved_probs)
            )
        calibration = None if self.calibration_images is None else self.calibration_images.pixels
        if "onnx_int8" in self.formats:
            quantize(tmp / FORMATS["onnx"].file, tmp / FORMATS["onnx_int8"].file, calibration)
        for name in ("tflite", "tflite_fp16", "tflite_int8"):
            if name in self.formats:
                fmt = FORMATS[name]
                (tmp / fmt.file).write_bytes(tflite.convert(tmp, fmt, calibration))
        if "tflite" in self.formats:
            probs = open_runner(tmp, "tflite").probabilities(images)
            diff = float(np.abs(probs - saved_probs).max())
            if not diff <= PARITY_TOLERANCE:
                raise ExportError(
                    f"tflite: the TFLite model differs from the SavedModel by {diff:.3g} in "
                    f"probabilities (tolerance {PARITY_TOLERANCE}); not exported."
                )
            parity["tflite_vs_savedmodel_max_abs_diff"] = diff
        figures = self.measure(tmp, images)
        if self.eval is not None:
            check_drop(figures, self.max_drop, self.eval.origin)
        formats = {
            name: {
                "file": FORMATS[name].file,
                "runtime": FORMATS[name].runtime,
                "numbers": FORMATS[name].numbers,
                "bytes": _size(tmp, name),
                **figures[name],
            }
            for name in self.formats
        }
        return build_metadata(
            source,
            output=output,
            onnx="onnx" in self.formats,
            opset=self.opset,
            parity=parity,
            formats=formats,
            evaluation=None if self.eval is None else self.eval.origin,
            calibration=None
            if self.calibration_images is None
            else {"images": self.calibration_images.origin, "method": "min-max"},
            measured_on=machine(),
        )

    def measure(self, tmp: Path, parity_images: np.ndarray) -> dict[str, dict[str, Any]]:
        """Each format's figures on the evaluation images (or, without them, its agreement
        with the SavedModel on the parity images), and its speed."""
        pixels = self.eval.pixels if self.eval is not None else parity_images
        labels = self.eval.labels if self.eval is not None else None
        figures: dict[str, dict[str, Any]] = {}
        reference = None
        for name in self.formats:
            runner = open_runner(tmp, name)
            probs = probabilities(runner, pixels)
            if name == "savedmodel":
                reference = probs
                figures[name] = accuracy_figures(probs, labels, None)
            else:
                figures[name] = accuracy_figures(probs, labels, reference)
            figures[name]["runtime_used"] = runner.runtime
            if self.measure_speed:
                figures[name].update(speed(runner, pixels))
        return figures


def _size(tmp: Path, name: str) -> int:
    """Bytes on disk of a format: the SavedModel's graph and variables, or the one file."""
    if name == "savedmodel":
        files = [tmp / SAVEDMODEL_FILE, *(tmp / "variables").glob("*")]
        return sum(f.stat().st_size for f in files if f.is_file())
    return (tmp / FORMATS[name].file).stat().st_size
