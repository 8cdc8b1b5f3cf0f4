"""`export`: one version written in a temporary folder, checked, and claimed atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pipelines.resize import CROP_FRACTION, resize_and_center_crop
from zoo.cli import one_line
from zoo.export.errors import ExportError
from zoo.export.metadata import ONNX_FILE, build_metadata, sha256_sums
from zoo.export.onnx import DEFAULT_OPSET, check_opset, write_and_check
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
    onnx: bool = True,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> Path:
    """Write ``<out>/<name>/<version>/`` atomically and return its path.

    Raises:
        ValueError: bad name, version, opset, normalisation, or an output activation that is
            neither softmax nor none.
        FileExistsError: the version exists and ``overwrite`` is false.
        ExportError: the version was taken while this export ran, the ONNX conversion failed,
            or ONNX Runtime and the SavedModel disagree by more than 1e-4.
        OSError: ``out`` cannot be written (read-only, full, a file, a name too long); nothing
            is left behind, not even the folders this export made.
    """
    name = check_name(name or source.model_name)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise ValueError(f"version must be an integer >= 1, got {version!r}.")
    if onnx:
        check_opset(opset)
    check_channels("mean", source.mean)
    check_channels("std", source.std, positive=True)
    output = model_output(source.model, source.input_shape)
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
        metadata = _write(source, tmp, onnx=onnx, opset=opset, output=output)
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


def _write(
    source: Source, tmp: Path, *, onnx: bool, opset: int, output: dict[str, str]
) -> dict[str, Any]:
    """The SavedModel and ``model.onnx`` in ``tmp``, checked: their metadata."""
    module = ServingModule(source, output=output["kind"])
    try:
        tf.saved_model.save(
            module,
            str(tmp),
            signatures={
                "serving_default": module.serve.get_concrete_function(),
                "serving_bytes": module.serve_bytes.get_concrete_function(),
            },
        )
    except tf.errors.OpError as err:
        raise ExportError(
            f"cannot write the SavedModel in {tmp.parent} ({one_line(err, 300, typed=True)}); "
            "check the space and permissions there, or choose another --out."
        ) from None
    images, parity_source = _parity_images(source)
    saved = tf.saved_model.load(str(tmp)).signatures["serving_default"]
    saved_probs = saved(images=tf.constant(images))["probabilities"].numpy()
    keras_probs = module.serve(images)["probabilities"].numpy()
    parity: dict[str, Any] = {
        "inputs": parity_source,
        "images": len(images),
        "savedmodel_vs_keras_max_abs_diff": float(np.abs(saved_probs - keras_probs).max()),
    }
    if onnx:
        parity.update(write_and_check(module, tmp / ONNX_FILE, opset, images, saved_probs))
    return build_metadata(source, output=output, onnx=onnx, opset=opset, parity=parity)


def _parity_images(source: Source) -> tuple[np.ndarray, str]:
    """Real images from the run's dataset (validation split), else seeded random pixels."""
    height, width, _ = source.input_shape
    if source.dataset:
        try:
            import pipelines

            options: dict[str, Any] = {}
            data_dir = (source.config or {}).get("data_dir")
            if source.dataset.startswith("tfds:") and data_dir:
                options["data_dir"] = data_dir  # where the run found it
            data = pipelines.load(source.dataset, **options)
            split = "validation" if "validation" in data.splits else "train"
            # Prepared as serving_bytes prepares an image: the evaluation pipeline's crop.
            batches = (
                data.splits[split]
                .take(PARITY_IMAGES)
                .map(
                    lambda x, _: resize_and_center_crop(
                        tf.cast(x, tf.float32), (height, width), CROP_FRACTION
                    )
                )
            )
            images = list(batches.as_numpy_iterator())
            return np.stack(images).astype("float32"), f"{source.dataset}:{split}"
        except (ValueError, OSError, RuntimeError, tf.errors.OpError):
            pass  # DataUnavailableError is a RuntimeError: the data moved or is gone
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, size=(PARITY_IMAGES, *source.input_shape)).astype("float32")
    return pixels, "uniform random pixels (the dataset was not available)"
