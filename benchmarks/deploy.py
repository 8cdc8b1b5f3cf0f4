"""Deployment: every export format of one model per family, trained on digits, side by side.

For each family (AlexNet, VGG plain and batch-normalised, GoogLeNet, ResNet for ImageNet and for
CIFAR) a model trained with ``python -m zoo.train --model NAME [--width W]`` (its recipe, the
recipes table's width, 15 epochs on the embedded digits) is exported with
``python -m zoo.export RUN --formats all``: SavedModel, ONNX, ONNX int8, TFLite, TFLite float16
and TFLite int8. The export measures each format in one process, one after another, on the
run's validation split (180 images): top-1 accuracy, agreement with the float32 SavedModel's
top-1, size on disk, batch-1 latency (median) and batch-64 throughput, every runtime given the
same CPU threads. int8 is calibrated on 200 un-augmented training images.

The accuracy gate is off here (``--max-accuracy-drop 100``) so that a format that loses accuracy
shows its figure instead of stopping the table; the goal below says whether int8 stayed within
1 point on every family.

    python -m benchmarks.deploy                      # trains each model (about 20 min, 2 cores)
    python -m benchmarks.deploy --runs DIR           # DIR/<model>: runs already trained, e.g.
                                                     # by python benchmarks/recipes.py --keep DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.harness import Goal, Section, Table

MODELS = ("alexnet", "vgg11", "vgg11_bn", "googlenet", "resnet18", "resnet20")
SMOKE_MODELS = ("resnet20",)
MAX_INT8_DROP = 1.0  # points


def train(model: str, run_dir: Path, smoke: bool) -> None:
    """``python -m zoo.train`` of the recipes table's row for ``model`` (smoke: 1 epoch at
    1/8 width)."""
    from benchmarks.recipes import command

    argv = command(model, run_dir)
    if smoke:
        argv = [sys.executable, "-m", "zoo.train", "--model", model, "--width", "0.125",
                "--epochs", "1", "--run-dir", str(run_dir)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:])}: {done.stderr.strip().splitlines()[-1:]}")


def export_all(run_dir: Path, out: Path) -> dict[str, Any]:
    """``python -m zoo.export RUN --formats all`` (gate off); the version's metadata."""
    argv = [sys.executable, "-m", "zoo.export", str(run_dir), "--out", str(out),
            "--formats", "all", "--max-accuracy-drop", "100"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:])}: {done.stderr.strip()[-500:]}")
    [metadata] = sorted(out.glob("*/*/metadata.json"))[-1:]
    return json.loads(metadata.read_text())


def rows(model: str, width: float, metadata: dict[str, Any]) -> list[list[str]]:
    """The table's rows of one model: one per format."""
    formats = metadata["formats"]
    base = formats["savedmodel"]
    out = []
    for name, f in formats.items():
        change = 100 * (f["accuracy"] - base["accuracy"]) + 0.0  # + 0.0: no "-0.0"
        out.append(
            [
                f"{model} ({width:g})",
                name,
                f"{f['bytes'] / 1e6:.2f}",
                f"{f['accuracy']:.4f}" + (f" ({change:+.1f})" if name != "savedmodel" else ""),
                "-" if name == "savedmodel" else f"{f['agreement']:.4f}",
                f"{f['latency_ms_batch1']:.2f}",
                f"{f['images_per_s_batch64']:.0f}",
            ]
        )
    return out


def run(
    ctx: harness.Context, runs: Path | None = None, models: tuple[str, ...] | None = None
) -> Section:
    from benchmarks.recipes import WIDTHS

    models = models or ctx.pick(MODELS, SMOKE_MODELS)
    scratch = Path(ctx.scratch("deploy"))
    table_rows: list[list[str]] = []
    data: dict[str, Any] = {}
    missed: list[str] = []
    machine = None
    for model in models:
        run_dir = runs / model if runs is not None else scratch / "runs" / model
        if runs is None:
            train(model, run_dir, ctx.smoke)
        metadata = export_all(run_dir, scratch / "exports" / model)
        width = 0.125 if ctx.smoke and runs is None else WIDTHS.get(model, 1.0)
        table_rows += rows(model, width, metadata)
        data[model] = {"width": width, "formats": metadata["formats"]}
        machine = metadata["measured_on"]
        base = metadata["formats"]["savedmodel"]["accuracy"]
        for name in ("onnx_int8", "tflite_int8"):
            drop = 100 * (base - metadata["formats"][name]["accuracy"])
            if drop > MAX_INT8_DROP:
                missed.append(f"{model} {name} ({drop:.1f} points)")
    features = ", ".join(machine["features"]) if machine else "?"
    caption = (
        f"Digits validation split (180 images); {machine['threads'] if machine else '?'} "
        f"threads of {machine['cpu'] if machine else '?'} ({features}). Size in MB on disk; "
        "accuracy with its change in points against the SavedModel; agreement: share of "
        "images whose top-1 equals the SavedModel's."
    )
    table = Table(
        caption,
        ["model (width)", "format", "MB", "top-1", "agreement", "batch-1 ms", "img/s @64"],
        table_rows,
    )
    goal = Goal(
        f"int8 (ONNX and TFLite) within {MAX_INT8_DROP:g} point of float32 top-1 on every family",
        "; ".join(missed) or f"all {len(models)} models within {MAX_INT8_DROP:g} point",
        None if ctx.smoke else not missed,
    )
    return Section("deploy", "Deployment formats", data=data, tables=[table], goals=[goal])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deploy", description=__doc__)
    parser.add_argument("--runs", type=Path, help="trained runs, DIR/<model> (default: train)")
    parser.add_argument("--smoke", action="store_true", help="1 epoch of resnet20 at 1/8 width")
    parser.add_argument(
        "--models", default=",".join(MODELS), help="registry names, separated by commas"
    )
    args = parser.parse_args(argv)
    import tempfile
    import time

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        models = None if args.smoke else tuple(args.models.split(","))
        section = run(harness.Context("cpu", args.smoke, out), args.runs, models)
    harness.print_section(section)
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
