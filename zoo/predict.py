"""``python -m zoo.predict EXPORT IMAGE...``: classify image files with an export.

``EXPORT`` is a version directory (``saved_models/<name>/<version>``), an export name directory
(its highest version is used) or a ``model.onnx`` file next to its ``metadata.json``. With
``--backend tf`` the SavedModel's ``serving_bytes`` signature does the decoding; with
``--backend onnx`` the images are prepared the same way and run in ONNX Runtime. A file that is
missing or not an image is reported and the others are still classified (exit code 1 then).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def resolve(export: str) -> tuple[Path, dict]:
    """The version directory and its metadata."""
    path = Path(export)
    if path.is_file() and path.suffix == ".onnx":
        path = path.parent
    elif path.is_dir() and not (path / "metadata.json").is_file():
        from zoo.export import versions

        found = versions(path)
        if not found:
            raise FileNotFoundError(f"{export} holds no export version.")
        path = path / str(found[-1])
    if not (path / "metadata.json").is_file():
        raise FileNotFoundError(f"{export} is not an export (no metadata.json).")
    return path, json.loads((path / "metadata.json").read_text())


class Classifier:
    """One backend's probabilities for one encoded image."""

    def __init__(self, folder: Path, metadata: dict, backend: str) -> None:
        import tensorflow as tf

        self.tf, self.metadata, self.backend = tf, metadata, backend
        size = metadata["input"]["shape"][1:3]
        self.size, self.crop = size, metadata["bytes_input"]["crop_fraction"]
        if backend == "tf":
            self.signature = tf.saved_model.load(str(folder)).signatures["serving_bytes"]
        else:
            import onnxruntime

            if not (folder / "model.onnx").is_file():
                raise FileNotFoundError(f"{folder} has no model.onnx (exported with --no-onnx).")
            self.session = onnxruntime.InferenceSession(
                str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
            )

    def probabilities(self, data: bytes) -> np.ndarray:
        tf = self.tf
        if self.backend == "tf":
            out = self.signature(image_bytes=tf.constant([data]))
            return out["probabilities"].numpy()[0]
        from zoo.export import decode_and_crop

        image = decode_and_crop(tf.constant(data), self.size, self.crop).numpy()[None]
        return self.session.run(["probabilities"], {"images": image.astype("float32")})[0][0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.predict",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("export", help="export version or name directory, or a model.onnx file")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP, GIF)")
    parser.add_argument("--top-k", type=int, default=5, help="classes to print per image")
    parser.add_argument(
        "--backend",
        choices=("tf", "onnx"),
        default="tf",
        help="run the SavedModel (tf) or model.onnx in ONNX Runtime (onnx)",
    )
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k must be >= 1, got {args.top_k}")
    try:
        folder, metadata = resolve(args.export)
        classifier = Classifier(folder, metadata, args.backend)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = metadata["class_names"]
    failed = 0
    for image in args.images:
        try:
            data = Path(image).read_bytes()
            probs = classifier.probabilities(data)
        except OSError as err:
            print(f"{image}: error: cannot read it ({err.strerror or err})", file=sys.stderr)
            failed += 1
            continue
        except classifier.tf.errors.InvalidArgumentError:
            print(f"{image}: error: not a JPEG, PNG, BMP or GIF image", file=sys.stderr)
            failed += 1
            continue
        top = np.argsort(probs)[::-1][: args.top_k]
        print(image)
        for index in top:
            print(f"  {names[index]:<20} {probs[index]:.4f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
