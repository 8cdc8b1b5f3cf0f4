"""``python -m zoo.predict EXPORT IMAGE...``: classify image files with an export.

``EXPORT`` is a version directory (``saved_models/<name>/<version>``), an export name directory
(its highest version is used) or one of its files (``model.onnx``, ``model_int8.tflite``, ...)
next to its ``metadata.json``. With ``--backend tf`` the SavedModel's ``serving_bytes`` signature
does the decoding; with ``--backend onnx`` or ``tflite`` (``--precision float16|int8`` for those
files) the images are prepared the same way and run in ONNX Runtime or LiteRT. A file that is
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
from zoo.export.formats import (
    BACKENDS,
    FORMATS,
    SAVEDMODEL_FILE,
    Format,
    format_for,
    format_of_file,
)
from zoo.export.metadata import (
    METADATA_FILE,
    DamagedExportError,
    file_sha256,
    read_metadata,
    recorded_sha256,
)
from zoo.export.runners import open_runner
from zoo.export.store import versions


def resolve(export: str) -> tuple[Path, dict, Format | None]:
    """The version directory, its metadata, and the format of a file given by path (a
    ``model.onnx`` or ``.tflite`` file next to its ``metadata.json``; None for a directory)."""
    path = Path(export)
    fmt = format_of_file(path.name) if not path.is_dir() else None
    if fmt is not None and fmt.name != "savedmodel":
        folder = path.parent
        metadata = read_metadata(folder)
        if not path.is_file():
            if not listed(metadata, fmt):
                raise FileNotFoundError(
                    f"{path} does not exist ({folder} was exported without {fmt.name}); pass "
                    f"{folder} with --backend tf, or export again with --formats {fmt.name}."
                )
            raise DamagedExportError(
                f"{path} is missing (metadata.json lists it): the export is incomplete; "
                "export again."
            )
        return folder, metadata, fmt
    if path.is_dir() and not (path / METADATA_FILE).exists():
        found = versions(path)
        if not found:
            raise FileNotFoundError(f"{export} holds no export version.")
        path = path / str(found[-1])
    if not path.exists():
        raise FileNotFoundError(f"{export} does not exist.")
    return path, read_metadata(path), None


def listed(metadata: dict, fmt: Format) -> bool:
    """Whether the export was written with ``fmt`` (``formats`` in its metadata; an export
    from before formats lists ONNX under ``onnx``)."""
    formats = metadata.get("formats")
    if isinstance(formats, dict) and formats:
        return fmt.name in formats
    return fmt.name == "savedmodel" or (fmt.name == "onnx" and metadata.get("onnx") is not None)


def verify(folder: Path, metadata: dict, backend: str | Format) -> None:
    """Check the files a format reads (its one file, or the SavedModel's files) against the
    sha256 sums in ``metadata.json``; ``backend``: a format, or ``tf``/``onnx`` for the
    float32 SavedModel or ONNX file.

    Raises:
        DamagedExportError: naming the first file that is missing or does not match.
    """
    fmt = backend if isinstance(backend, Format) else format_for(backend, "float32")
    sums = recorded_sha256(folder, metadata)
    if fmt.name != "savedmodel":
        names = [fmt.file]
    else:
        others = {f.file for f in FORMATS.values() if f.name != "savedmodel"}
        names = sorted(name for name in sums if name not in others)
        if SAVEDMODEL_FILE not in names:
            names.insert(0, SAVEDMODEL_FILE)
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


def check_backend(folder: Path, metadata: dict, backend: str | Format) -> None:
    """Raise `FileNotFoundError` when the export was written without the format."""
    fmt = backend if isinstance(backend, Format) else format_for(backend, "float32")
    if not listed(metadata, fmt) and not (folder / fmt.file).exists():
        raise FileNotFoundError(
            f"{folder} has no {fmt.file} (it was exported without {fmt.name}); export again "
            f"with --formats {fmt.name}, or choose another --backend/--precision."
        )


class Classifier:
    """One format's probabilities for one encoded image.

    Raises:
        FileNotFoundError: the export has no such format.
        DamagedExportError: the format's files are missing or cannot be loaded.
    """

    def __init__(self, folder: Path, metadata: dict, backend: str | Format) -> None:
        import tensorflow as tf

        fmt = backend if isinstance(backend, Format) else format_for(backend, "float32")
        self.tf, self.metadata, self.format = tf, metadata, fmt
        size = metadata["input"]["shape"][1:3]
        self.size, self.crop = size, metadata["bytes_input"]["crop_fraction"]
        check_backend(folder, metadata, fmt)
        path = folder / fmt.file
        if fmt.name == "savedmodel":
            other = ", or use --backend onnx" if (folder / FORMATS["onnx"].file).is_file() else ""
            if not path.is_file():
                raise DamagedExportError(
                    f"{path} is missing: the export is incomplete; export again{other}."
                )
            try:
                self.signature = tf.saved_model.load(str(folder)).signatures["serving_bytes"]
            except Exception as err:  # TensorFlow raises many kinds for a damaged SavedModel
                reason = one_line(err, 300, typed=True)
                raise DamagedExportError(
                    f"{folder} holds no loadable SavedModel ({reason}); export again{other}."
                ) from None
            return
        if not path.is_file():
            raise DamagedExportError(
                f"{path} is missing: the export is incomplete; export again, or use --backend tf."
            )
        try:
            self.runner = open_runner(folder, fmt)
        except Exception as err:  # ONNX Runtime's and LiteRT's errors have no common base
            reason = one_line(err, 300, typed=True)
            raise DamagedExportError(
                f"{path} cannot be loaded by {RUNTIME_NAMES[fmt.runtime]} ({reason}); export "
                "again, or use --backend tf."
            ) from None

    def probabilities(self, data: bytes) -> np.ndarray:
        tf = self.tf
        if self.format.name == "savedmodel":
            out = self.signature(image_bytes=tf.constant([data]))
            return out["probabilities"].numpy()[0]
        from zoo.export.serving import decode_and_crop

        image = decode_and_crop(tf.constant(data), self.size, self.crop).numpy()[None]
        return self.runner.probabilities(image)[0]


RUNTIME_NAMES = {"onnx": "ONNX Runtime", "tflite": "the TFLite interpreter", "tf": "TensorFlow"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.predict",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "export",
        help="export version or name directory, or one of its files (model.onnx, "
        "model_int8.tflite, ...)",
    )
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP, GIF)")
    parser.add_argument("--top-k", type=int, default=5, help="classes to print per image")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="run the SavedModel (tf, the default), the ONNX file in ONNX Runtime (onnx) or the "
        "TFLite file in LiteRT (tflite); a file given as EXPORT decides itself",
    )
    parser.add_argument(
        "--precision",
        choices=("float32", "float16", "int8"),
        default=None,
        help="which file of the backend: float32 (default), float16 (tflite) or int8 (onnx, "
        "tflite)",
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
        folder, metadata, fmt = resolve(args.export)
        fmt = chosen_format(fmt, args.backend, args.precision)
        check_backend(folder, metadata, fmt)
        if args.verify:
            verify(folder, metadata, fmt)
        classifier = Classifier(folder, metadata, fmt)
    except (FileNotFoundError, DamagedExportError, ValueError) as err:
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


def chosen_format(given: Format | None, backend: str | None, precision: str | None) -> Format:
    """The format to serve: a file's own (``--backend``/``--precision`` must agree with it), or
    the one ``--backend`` and ``--precision`` name (defaults: tf, float32)."""
    if given is None:
        return format_for(backend or "tf", precision or "float32")
    if (backend or given.runtime) != given.runtime or (precision or given.numbers) != given.numbers:
        raise ValueError(
            f"{given.file} is {given.runtime}/{given.numbers}; drop --backend/--precision or "
            "pass the export's directory."
        )
    return given


if __name__ == "__main__":
    sys.exit(main())
