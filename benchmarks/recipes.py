"""Does every model of the zoo learn with its recipe? Trains each with ``python -m zoo.train``.

For each registry model this runs exactly ``python -m zoo.train --model NAME [--width W]`` (the
model's recipe, the embedded digits, 15 epochs: what a new user runs) in a fresh process, reads
the run's ``metrics.json`` and ``checks.json``, and prints one Markdown row per model: width,
recipe, best validation and test accuracy, the checks that warned, seconds of wall time. Widths
are reduced (`WIDTHS`) where a model at full width would take more than a few minutes on two
CPU cores; the width changes channels only, never the depth or the layer types.

    python benchmarks/recipes.py                       # every model, about an hour on 2 cores
    python benchmarks/recipes.py --models 'vgg*' --json vgg.json

The recipes table (docs/training.md) is this script's output. Exit code 1 when a model scores below
``--target`` (0.95) test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import zoo
from zoo.training.rundir import CHECKS, DATA, METRICS, RunDirectory

# Width multipliers that keep a model's 15 digit epochs within a few minutes on 2 CPU cores.
WIDTHS = {
    "alexnet": 0.5,
    "vgg11": 0.5, "vgg13": 0.5, "vgg16": 0.5, "vgg19": 0.5,
    "vgg11_bn": 0.5, "vgg13_bn": 0.5, "vgg16_bn": 0.5, "vgg19_bn": 0.5,
    "googlenet": 0.25, "googlenet_bn": 0.25,
    "resnet34": 0.5, "resnet50": 0.25, "resnet101": 0.25, "resnet152": 0.25,
}  # fmt: skip


def command(model: str, run_dir: Path) -> list[str]:
    """The ``python -m zoo.train`` command line of one row (``--run-dir`` only places it)."""
    width = WIDTHS.get(model)
    cmd = [sys.executable, "-m", "zoo.train", "--model", model]
    if width is not None:
        cmd += ["--width", f"{width:g}"]
    return [*cmd, "--run-dir", str(run_dir)]


def train(model: str, root: Path) -> dict:
    """Train one model in a fresh process; its row (or its error)."""
    run_dir = root / model
    started = time.perf_counter()
    done = subprocess.run(command(model, run_dir), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    row = {
        "model": model,
        "width": WIDTHS.get(model, 1.0),
        "recipe": zoo.model_info(model).recipe.describe(),
        "command": " ".join(["python", *command(model, run_dir)[1:-2]]),
        "seconds": round(seconds),
        "exit_code": done.returncode,
    }
    if done.returncode != 0:
        row["error"] = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return row
    run = RunDirectory.open(run_dir)
    metrics, checks = run.read_json(METRICS), run.read_json(CHECKS)
    last = run.read_history()[-1]
    row.update(
        val_accuracy=round(metrics["val_accuracy"], 4),
        test_accuracy=round(metrics["test_accuracy"], 4),
        train_accuracy_last_epoch=round(float(last["accuracy"]), 4),
        learning_rate=metrics["learning_rate"],
        precision=run.read_json(DATA).get("precision"),
        warnings=[w["check"] for w in checks["warnings"]],
    )
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | width | recipe | precision | test accuracy | training accuracy, last epoch "
        "| checks that warned | seconds |",
        "|---|---:|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['model']} | {r['width']:g} | {r['recipe']} | | failed: {r['error']} | | | "
                f"{r['seconds']} |"
            )
            continue
        lines.append(
            f"| {r['model']} | {r['width']:g} | {r['recipe']} | {r.get('precision') or '?'} | "
            f"{r['test_accuracy']:.3f} | "
            f"{r['train_accuracy_last_epoch']:.3f} | {', '.join(r['warnings']) or '-'} | "
            f"{r['seconds']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="*", help="a glob of registry names (default: all)")
    parser.add_argument("--target", type=float, default=0.95, help="test accuracy to reach")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--keep", help="keep the run directories under this folder")
    args = parser.parse_args(argv)
    names = zoo.list_models(args.models)
    if not names:
        parser.error(f"--models {args.models!r} matches no model")
    root = Path(args.keep or tempfile.mkdtemp(prefix="recipes-"))
    rows = []
    for name in names:
        row = train(name, root)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    print(markdown(rows))
    missed = [r["model"] for r in rows if r.get("test_accuracy", 0.0) < args.target]
    if missed:
        print(f"below {args.target:g} test accuracy: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
