"""The command line of ``python -m zoo.export``, and the export at the end of a training run or
a search (`export_finished_run`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from zoo.cli import EXIT_BAD_INPUT, add_verbose_flag, os_error_line
from zoo.export.errors import ExportError
from zoo.export.formats import DEFAULT_FORMATS, FORMATS, parse_formats
from zoo.export.measure import CALIBRATION_IMAGES, EVAL_IMAGES, EVAL_SPLIT, MAX_ACCURACY_DROP
from zoo.export.metadata import read_metadata
from zoo.export.onnx import DEFAULT_OPSET, check_opset
from zoo.export.source import check_channels, load_source
from zoo.export.store import check_name
from zoo.export.writer import export


def error_line(err: BaseException, flags: str = "--out") -> str:
    """One line for an export's failure: the message, or for a failed write the path, the
    reason and what to do, naming ``flags`` (the options that choose where the export goes)."""
    if isinstance(err, OSError) and err.errno is not None:
        return os_error_line(err, flags)
    return str(err)


def export_finished_run(run_dir: str | os.PathLike[str], what: str = "run") -> bool:
    """Export a run's best weights at the end of ``zoo.train --export`` or
    ``tuning.search --export-best``: print where, or one error line saying the ``what``
    finished but its export failed. Returns whether it succeeded."""
    try:
        target = export(load_source(run_dir, checkpoint="best"))
    except (ValueError, ExportError, OSError) as err:
        line = error_line(err, f"python -m zoo.export {run_dir} --out DIR")
        print(f"error: the {what} finished but its export failed: {line}", file=sys.stderr)
        return False
    print(f"exported the best weights to {target}")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.export",
        description="Export a run directory or a .keras file as a SavedModel (TF Serving layout) "
        "and, with --formats, ONNX, TFLite, float16 and int8 files: each converted by its own "
        "tool, checked against the SavedModel, and measured (accuracy, agreement, size, "
        "latency, throughput) on the run's own images.",
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
        "--formats",
        default=",".join(DEFAULT_FORMATS),
        help="formats to write, separated by commas, or 'all': "
        + "; ".join(f"{f.name} ({f.file}: {f.what})" for f in FORMATS.values())
        + ". The SavedModel is always written",
    )
    parser.add_argument(
        "--onnx",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--no-onnx leaves both ONNX formats out",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="DATASET",
        help="labelled images to measure and calibrate on (e.g. folder:PATH, tfds:NAME); "
        "default: a run's own dataset (a .keras file has none)",
    )
    parser.add_argument(
        "--eval-split", default=EVAL_SPLIT, help="the split every format is measured on"
    )
    parser.add_argument(
        "--eval-images", type=int, default=EVAL_IMAGES, help="at most this many of its images"
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=CALIBRATION_IMAGES,
        help="training images (un-augmented) that calibrate the int8 formats",
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=MAX_ACCURACY_DROP,
        help="points of top-1 accuracy a format may lose against the float32 SavedModel "
        "before the export fails",
    )
    parser.add_argument(
        "--no-speed",
        dest="measure_speed",
        action="store_false",
        help="skip timing batch-1 latency and batch-64 throughput",
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
        help="per-channel standard deviation (> 0) for a .keras file",
    )
    parser.add_argument(
        "--class-names",
        nargs="+",
        default=None,
        help="class names for a .keras file; 'imagenet' for the 1000 ImageNet classes shipped "
        "with the package (pretrained models)",
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    try:
        if args.name is not None:
            check_name(args.name)
        formats = parse_formats(args.formats)
        if args.onnx and any(FORMATS[f].runtime == "onnx" for f in formats):
            check_opset(args.opset, "--opset")
        if args.mean is not None:
            check_channels("--mean", args.mean)
        if args.std is not None:
            check_channels("--std", args.std, positive=True)
        source = load_source(
            args.source,
            checkpoint=args.checkpoint,
            mean=args.mean,
            std=args.std,
            class_names=args.class_names,
        )
        if args.data is not None:
            source.dataset = args.data
    except (ValueError, OSError) as err:
        reading = f"cannot read {err.filename}: {err.strerror}" if _is_os(err) else str(err)
        print(f"error: {reading}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        target = export(
            source,
            out=args.out,
            name=args.name,
            version=args.version,
            formats=formats,
            onnx=args.onnx,
            opset=args.opset,
            overwrite=args.overwrite,
            eval_split=args.eval_split,
            eval_images=args.eval_images,
            calibration=args.calibration_images,
            max_accuracy_drop=args.max_accuracy_drop,
            measure_speed=args.measure_speed,
        )
    except (ValueError, ExportError, OSError) as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(summary(target, read_metadata(target)))
    return 0


def summary(target: os.PathLike[str] | str, metadata: dict) -> str:
    """What ``python -m zoo.export`` prints: where, on which images and CPU, and a table of the
    formats (file, size, accuracy, agreement, largest probability difference, speed)."""
    parity = metadata.get("parity", {})
    lines = [f"exported {target}"]
    if "onnx_vs_savedmodel_max_abs_diff" in parity:
        lines[0] += (
            f" (ONNX Runtime vs SavedModel: max |diff| "
            f"{parity['onnx_vs_savedmodel_max_abs_diff']:.2g} over {parity['images']} "
            f"images of {parity['inputs']})"
        )
    machine = metadata.get("measured_on") or {}
    where = metadata.get("evaluation") or "random pixels (no labelled images: pass --data)"
    features = ", ".join(machine.get("features", [])) or "no listed features"
    lines.append(
        f"measured on {where}; {machine.get('threads', '?')} threads of "
        f"{machine.get('cpu', '?')} ({features})"
    )
    rows = [("format", "file", "size", "top-1", "agree", "max |dp|", "batch-1 ms", "img/s @64")]
    for name, f in (metadata.get("formats") or {}).items():
        rows.append(
            (
                name,
                f["file"],
                f"{f['bytes'] / 1e6:.2f} MB",
                _figure(f.get("accuracy"), ".4f"),
                _figure(f.get("agreement"), ".4f"),
                _figure(f.get("max_probability_diff"), ".2g"),
                _figure(f.get("latency_ms_batch1"), ".2f"),
                _figure(f.get("images_per_s_batch64"), ".0f"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def _figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _is_os(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno is not None and err.filename is not None
