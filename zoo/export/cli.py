"""The command line of ``python -m zoo.export``, and the export at the end of a training run or
a search (`export_finished_run`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from zoo.cli import EXIT_BAD_INPUT, add_verbose_flag, os_error_line
from zoo.export.errors import ExportError
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
        if args.onnx:
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
            onnx=args.onnx,
            opset=args.opset,
            overwrite=args.overwrite,
        )
    except (ValueError, ExportError, OSError) as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    parity = read_metadata(target)["parity"]
    line = f"exported {target}"
    if "onnx_vs_savedmodel_max_abs_diff" in parity:
        line += (
            f" (ONNX Runtime vs SavedModel: max |diff| "
            f"{parity['onnx_vs_savedmodel_max_abs_diff']:.2g} over {parity['images']} "
            f"images of {parity['inputs']})"
        )
    print(line)
    return 0


def _is_os(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno is not None and err.filename is not None
