"""``python -m zoo.export``: a trained model as a SavedModel for serving and an ONNX file, checked.

Layout (TF Serving's): ``<out>/<name>/<version>/`` holds the SavedModel, ``model.onnx`` and
``metadata.json``. The version is written to a hidden temporary directory and renamed into
place, so a failure or a kill never leaves a partial version (TF Serving ignores names that are
not integers).

Signatures, callable without this project installed:

- ``serving_default``: ``images`` float32 ``[batch, H, W, 3]`` with raw 0-255 pixels; the
  normalisation is inside the graph. Outputs ``probabilities``, ``logits`` (float32) and
  ``classes`` (int64, top-1).
- ``serving_bytes``: ``image_bytes`` string ``[batch]`` of encoded JPEG/PNG/BMP/GIF images,
  decoded, resized and centre-cropped in the graph as the evaluation pipeline does.

The ONNX file is converted with tf2onnx from the same function as ``serving_default`` (dynamic
batch, input ``images``, outputs ``probabilities``, ``logits``, ``classes``), checked with
``onnx.checker`` and run in ONNX Runtime against the saved SavedModel on real images; a largest
difference in probabilities above 1e-4 fails the export.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo.training.rundir import RunDirectory

PARITY_TOLERANCE = 1e-4
DEFAULT_OPSET = 17
CROP_FRACTION = 0.875  # as pipelines.make_eval_dataset, for images not already at the input size
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PARITY_IMAGES = 32


class ExportError(RuntimeError):
    """The export failed a check; nothing was written in place."""


@dataclass
class Source:
    """A float32 Keras model and what serving it needs."""

    model: keras.Model
    model_name: str
    class_names: list[str]
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    dataset: str | None = None
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    checkpoint: str | None = None


def check_name(name: str) -> str:
    """A model name that is one safe path component."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise ValueError(
            f"Invalid export name {name!r}: use letters, digits, '.', '_' and '-', starting with "
            "a letter or digit, no path separators or '..'."
        )
    return name


def load_source(
    path: str | os.PathLike[str],
    *,
    checkpoint: str = "best",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> Source:
    """Read a run directory (its best or last checkpoint) or a ``.keras`` file.

    A run directory's model is rebuilt in float32, so a model trained under mixed precision
    serves float32. A ``.keras`` file carries no normalisation: pass ``mean`` and ``std``
    (pixels in [0, 1]); class names default to the class indices.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file() or not (path / "data.json").is_file():
            raise FileNotFoundError(f"{path} is not a run directory (config.json, data.json).")
        if checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}.")
        run = RunDirectory.open(path)
        config = run.read_config()
        data = json.loads((path / "data.json").read_text())
        model, found = run.load_model(checkpoint)
        metrics_file = path / "metrics.json"
        return Source(
            model=model,
            model_name=config.model,
            class_names=list(data["class_names"]),
            input_shape=tuple(data["input_shape"]),
            mean=list(data["mean"]),
            std=list(data["std"]),
            dataset=config.dataset,
            config=json.loads((path / "config.json").read_text()),
            metrics=json.loads(metrics_file.read_text()) if metrics_file.is_file() else None,
            checkpoint=found,
        )
    if path.suffix == ".keras" and path.is_file():
        if mean is None or std is None:
            raise ValueError(
                f"{path} carries no normalisation: pass mean and std "
                "(per channel, pixels in [0, 1])."
            )
        model = keras.saving.load_model(path, compile=False)
        shape = tuple(model.inputs[0].shape[1:])
        classes = model.outputs[0].shape[-1]
        names = list(class_names) if class_names else [str(i) for i in range(classes)]
        if len(names) != classes:
            raise ValueError(f"{len(names)} class names for a model with {classes} classes.")
        return Source(
            model=model,
            model_name=model.name,
            class_names=names,
            input_shape=shape,
            mean=[float(v) for v in mean],
            std=[float(v) for v in std],
        )
    raise FileNotFoundError(f"{path} is neither a run directory nor a .keras file.")


def decode_and_crop(
    image_bytes: tf.Tensor, size: Sequence[int], crop_fraction: float = CROP_FRACTION
) -> tf.Tensor:
    """One encoded image to float32 ``[H, W, 3]`` 0-255 pixels, as the evaluation pipeline
    prepares it (grey and RGBA become RGB; GIF: first frame)."""
    from pipelines.augment import resize_and_center_crop

    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return resize_and_center_crop(tf.cast(image, tf.float32), size, crop_fraction)


class ServingModule(tf.Module):
    """The graph that is saved: normalisation, the model and the outputs."""

    def __init__(self, source: Source, crop_fraction: float = CROP_FRACTION) -> None:
        super().__init__()
        self.model = source.model
        self._mean, self._std = list(source.mean), list(source.std)
        height, width, channels = source.input_shape
        self._size = (height, width)
        self._crop_fraction = crop_fraction
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None, height, width, channels], tf.float32, name="images")
            ],
        )
        self.serve_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        )

    def _serve(self, images):
        # Constants are made here, not captured, so the ONNX graph has one input.
        mean = tf.constant(self._mean, tf.float32)
        std = tf.constant(self._std, tf.float32)
        x = (images / 255.0 - mean) / std
        logits = tf.cast(self.model(x, training=False), tf.float32)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "logits": logits,
            "classes": tf.argmax(logits, axis=-1),
        }

    def _serve_bytes(self, image_bytes):
        images = tf.map_fn(
            lambda b: decode_and_crop(b, self._size, self._crop_fraction),
            image_bytes,
            fn_output_signature=tf.TensorSpec([*self._size, 3], tf.float32),
        )
        return self._serve(images)


def _convert_onnx(module: ServingModule, path: Path, opset: int) -> None:
    import onnx
    import tf2onnx

    proto, _ = tf2onnx.convert.from_function(
        module.serve, input_signature=module.serve.input_signature, opset=opset
    )
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())


def _parity_images(source: Source) -> tuple[np.ndarray, str]:
    """Real images from the run's dataset (validation split), else seeded random pixels."""
    height, width, _ = source.input_shape
    if source.dataset:
        try:
            import pipelines

            data = pipelines.load(source.dataset)
            split = "validation" if "validation" in data.splits else "train"
            from pipelines.augment import resize_and_center_crop

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
        except (ValueError, OSError, tf.errors.OpError):
            pass
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, size=(PARITY_IMAGES, *source.input_shape)).astype("float32")
    return pixels, "uniform random pixels (the dataset was not available)"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions(folder: Path) -> list[int]:
    """The export versions in ``folder``, ascending (TF Serving reads integer names only)."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def next_version(folder: Path) -> int:
    return max(versions(folder), default=0) + 1


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
        ValueError: bad name or version.
        FileExistsError: the version exists and ``overwrite`` is false.
        ExportError: ONNX Runtime and the SavedModel disagree by more than 1e-4.
    """
    name = check_name(name or source.model_name)
    folder = Path(out) / name
    if version is None:
        version = next_version(folder)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be an integer >= 1, got {version!r}.")
    target = folder / str(version)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it.")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        metadata = _write(source, tmp, onnx=onnx, opset=opset)
        metadata.update(name=name, version=version)
        _write_metadata(tmp, metadata)
        if target.exists():
            old = folder / f".old-{version}-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _write(source: Source, tmp: Path, *, onnx: bool, opset: int) -> dict[str, Any]:
    module = ServingModule(source)
    tf.saved_model.save(
        module,
        str(tmp),
        signatures={
            "serving_default": module.serve.get_concrete_function(),
            "serving_bytes": module.serve_bytes.get_concrete_function(),
        },
    )
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
        import onnxruntime

        onnx_path = tmp / "model.onnx"
        _convert_onnx(module, onnx_path, opset)
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        outputs = [o.name for o in session.get_outputs()]
        onnx_probs = session.run(["probabilities"], {"images": images})[0]
        diff = float(np.abs(onnx_probs - saved_probs).max())
        parity.update(onnx_vs_savedmodel_max_abs_diff=diff, onnx_outputs=sorted(outputs))
        if not diff <= PARITY_TOLERANCE:
            raise ExportError(
                f"ONNX Runtime differs from the SavedModel by {diff:.3g} in "
                f"probabilities (tolerance {PARITY_TOLERANCE}); not exported."
            )
    import onnx as onnx_lib
    import tf2onnx

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
        "outputs": ["probabilities", "logits", "classes"],
        "signatures": ["serving_default", "serving_bytes"],
        "onnx": {"file": "model.onnx", "opset": opset} if onnx else None,
        "parity": parity,
        "training_config": source.config,
        "metrics": source.metrics,
        "checkpoint": source.checkpoint,
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx_lib.__version__,
            "keras-zoo": zoo.__version__,
        },
    }


def _write_metadata(tmp: Path, metadata: dict[str, Any]) -> None:
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    metadata["sha256"] = {str(p.relative_to(tmp)): _sha256(p) for p in files}
    (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")


def export_finished_run(run_dir: str | os.PathLike[str], what: str = "run") -> bool:
    """Export a run's best weights at the end of ``zoo.train --export`` or
    ``tuning.search --export-best``: print where, or one error line saying the ``what``
    finished but its export failed. Returns whether it succeeded."""
    try:
        target = export(load_source(run_dir, checkpoint="best"))
    except (ValueError, FileExistsError, ExportError) as err:
        print(f"error: the {what} finished but its export failed: {err}", file=sys.stderr)
        return False
    print(f"exported the best weights to {target}")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.export",
        description="Export a run directory or a .keras file as a SavedModel (TF Serving layout) "
        "and an ONNX file, checked against each other.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("source", help="a run directory (runs/...) or a .keras file")
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="which checkpoint of a run directory",
    )
    parser.add_argument("--out", default="saved_models", help="parent folder of exports")
    parser.add_argument("--name", default=None, help="export name; default: the model's name")
    parser.add_argument(
        "--version", type=int, default=None, help="version number; default: the next free integer"
    )
    parser.add_argument(
        "--onnx",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write and check model.onnx",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument(
        "--mean",
        type=float,
        nargs=3,
        default=None,
        help="per-channel mean (pixels in [0, 1]) for a .keras file",
    )
    parser.add_argument(
        "--std",
        type=float,
        nargs=3,
        default=None,
        help="per-channel standard deviation for a .keras file",
    )
    parser.add_argument(
        "--class-names", nargs="+", default=None, help="class names for a .keras file"
    )
    args = parser.parse_args(argv)
    try:
        if args.name is not None:
            check_name(args.name)
        source = load_source(
            args.source,
            checkpoint=args.checkpoint,
            mean=args.mean,
            std=args.std,
            class_names=args.class_names,
        )
        target = export(
            source,
            out=args.out,
            name=args.name,
            version=args.version,
            onnx=args.onnx,
            opset=args.opset,
            overwrite=args.overwrite,
        )
    except (ValueError, FileNotFoundError, FileExistsError, ExportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metadata = json.loads((target / "metadata.json").read_text())
    parity = metadata["parity"]
    line = f"exported {target}"
    if "onnx_vs_savedmodel_max_abs_diff" in parity:
        line += (
            f" (ONNX Runtime vs SavedModel: max |diff| "
            f"{parity['onnx_vs_savedmodel_max_abs_diff']:.2g} over {parity['images']} "
            f"images of {parity['inputs']})"
        )
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
