"""``python -m zoo.predict EXPORT IMAGE...``: classify image files with an export.

``EXPORT`` is a version directory (``saved_models/<name>/<version>``), an export name directory
(its highest version is used) or a ``model.onnx`` file next to its ``metadata.json``. With
``--backend tf`` the SavedModel's ``serving_bytes`` signature does the decoding; with
``--backend onnx`` the images are prepared the same way and run in ONNX Runtime. A file that is
missing or not an image is reported and the others are still classified (exit code 1 then).

Before loading, the files the backend reads are checked against the sha256 sums in
``metadata.json`` (``--no-verify`` skips it); a changed, damaged or missing file, a damaged
``metadata.json`` or an export the backend cannot load is one error line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from zoo.cli import EXIT_BAD_INPUT, add_verbose_flag, one_line, start_tensorflow
from zoo.export.metadata import (
    METADATA_FILE,
    ONNX_FILE,
    DamagedExportError,
    file_sha256,
    read_metadata,
    recorded_sha256,
)
from zoo.export.store import versions


def resolve(export: str) -> tuple[Path, dict]:
    """The version directory and its metadata."""
    path = Path(export)
    if path.suffix == ".onnx" and not path.is_dir():
        metadata = read_metadata(path.parent)
        if not path.is_file():
            folder = path.parent
            if metadata.get("onnx") is None:
                raise FileNotFoundError(
                    f"{path} does not exist ({folder} was exported with --no-onnx); pass "
                    f"{folder} with --backend tf, or export again without --no-onnx."
                )
            raise DamagedExportError(
                f"{path} is missing (metadata.json lists it): the export is incomplete; "
                "export again."
            )
        return path.parent, metadata
    if path.is_dir() and not (path / METADATA_FILE).exists():
        found = versions(path)
        if not found:
            raise FileNotFoundError(f"{export} holds no export version.")
        path = path / str(found[-1])
    if not path.exists():
        raise FileNotFoundError(f"{export} does not exist.")
    return path, read_metadata(path)


def verify(folder: Path, metadata: dict, backend: str) -> None:
    """Check the files ``backend`` reads (``model.onnx``, or the SavedModel's files) against
    the sha256 sums in ``metadata.json``.

    Raises:
        DamagedExportError: naming the first file that is missing or does not match.
    """
    sums = recorded_sha256(folder, metadata)
    if backend == "onnx":
        names = [ONNX_FILE]
    else:
        names = sorted(name for name in sums if name != ONNX_FILE)
        if "saved_model.pb" not in names:
            names.insert(0, "saved_model.pb")
    for name in names:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise DamagedExportError(
                f"{folder / METADATA_FILE} lists {name!r}, outside the export; export again."
            )
        file = folder / relative
        if name not in sums:
            raise DamagedExportError(
                f"{file} has no sha256 in metadata.json: the export was changed; export again or "
                "pass --no-verify."
            )
        if not file.is_file():
            raise DamagedExportError(
                f"{file} is missing (metadata.json lists it): the export is incomplete; export "
                "again or pass --no-verify."
            )
        if file_sha256(file) != sums[name]:
            raise DamagedExportError(
                f"{file} does not match the sha256 in metadata.json: the export was changed or "
                "damaged; export again or pass --no-verify."
            )


def check_backend(folder: Path, metadata: dict, backend: str) -> None:
    """Raise `FileNotFoundError` when ``backend`` is onnx and the export has no ONNX file."""
    if backend == "onnx" and metadata.get("onnx") is None and not (folder / ONNX_FILE).exists():
        raise FileNotFoundError(
            f"{folder} has no model.onnx (it was exported with --no-onnx); use --backend tf, or "
            "export again without --no-onnx."
        )


class Classifier:
    """One backend's probabilities for one encoded image.

    Raises:
        FileNotFoundError: ``backend`` is onnx and the export has no ONNX file.
        DamagedExportError: the backend's files are missing or cannot be loaded.
    """

    def __init__(self, folder: Path, metadata: dict, backend: str) -> None:
        import tensorflow as tf

        self.tf, self.metadata, self.backend = tf, metadata, backend
        size = metadata["input"]["shape"][1:3]
        self.size, self.crop = size, metadata["bytes_input"]["crop_fraction"]
        check_backend(folder, metadata, backend)
        if backend == "tf":
            other = ", or use --backend onnx" if (folder / ONNX_FILE).is_file() else ""
            if not (folder / "saved_model.pb").is_file():
                raise DamagedExportError(
                    f"{folder / 'saved_model.pb'} is missing: the export is incomplete; export "
                    f"again{other}."
                )
            try:
                self.signature = tf.saved_model.load(str(folder)).signatures["serving_bytes"]
            except Exception as err:  # TensorFlow raises many kinds for a damaged SavedModel
                reason = one_line(err, 300, typed=True)
                raise DamagedExportError(
                    f"{folder} holds no loadable SavedModel ({reason}); export again{other}."
                ) from None
        else:
            import onnxruntime

            path = folder / ONNX_FILE
            if not path.is_file():
                raise DamagedExportError(
                    f"{path} is missing: the export is incomplete; export again, or use "
                    "--backend tf."
                )
            try:
                self.session = onnxruntime.InferenceSession(
                    str(path), providers=["CPUExecutionProvider"]
                )
            except Exception as err:  # ONNX Runtime's errors have no common public base
                reason = one_line(err, 300, typed=True)
                raise DamagedExportError(
                    f"{path} cannot be loaded by ONNX Runtime ({reason}); export again, or use "
                    "--backend tf."
                ) from None

    def probabilities(self, data: bytes) -> np.ndarray:
        tf = self.tf
        if self.backend == "tf":
            out = self.signature(image_bytes=tf.constant([data]))
            return out["probabilities"].numpy()[0]
        from zoo.export.serving import decode_and_crop

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
    parser.set_defaults(verify=True)  # before --no-verify, whose help then shows no default
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        default=argparse.SUPPRESS,  # not "(default: True)", which reads as if skipped by default
        help="skip checking the export's files against the sha256 sums in its metadata.json "
        "(checked unless this is given)",
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    start_tensorflow(args.verbose)
    if args.top_k < 1:
        parser.error(f"--top-k must be >= 1, got {args.top_k}")
    try:
        folder, metadata = resolve(args.export)
        check_backend(folder, metadata, args.backend)
        if args.verify:
            verify(folder, metadata, args.backend)
        classifier = Classifier(folder, metadata, args.backend)
    except (FileNotFoundError, DamagedExportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        print(f"error: cannot read {err.filename or args.export}: {err.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
