"""Fine-tuning on images smaller than the backbone was trained at: resize them up, or keep them?

ImageNet weights meet 32x32 images in CIFAR-style transfer. ImageNet weights cannot be downloaded
here, so this measures the same question on a backbone we train: an ImageNet-form model (7x7
stride-2 stem and max pool) is trained on the digits 0-4 at ``--pretrain-size`` (64), then
fine-tuned with ``--fine-tune`` on few images of the digits 5-9, stored at 32x32, either at 32
(the stem's filters see strokes half the size they learned) or resized up to 64 (the size the
weights were trained at: ``zoo.train``'s default with starting weights). From-scratch runs at
both sizes, for the same epochs, show how much of the difference is transfer. Same seeds,
data and budget for every arm; the table reports the median and range over ``--seeds`` of the
best validation accuracy (90 images) and of the test accuracy of those weights (180 images).

    python benchmarks/fine_tune_input_size.py            # about 7 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pipelines
from zoo.config import RunOptions, TrainConfig
from zoo.training import Trainer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--pretrain-size", type=int, default=64)
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=4, help="stage 2 (stage 1 is one more)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    base = {"model": args.model, "width": args.width, "batch_size": 16}
    work = Path(tempfile.mkdtemp(prefix="fine-tune-size-"))
    digits = pipelines.load("digits")
    pipelines.write_images(digits, work / "early", classes="01234")
    pipelines.write_images(digits, work / "late", classes="56789", per_class=args.per_class)

    def train(name: str, **fields) -> tuple[float, float]:
        """The best validation accuracy and the test accuracy of its weights."""
        started = time.perf_counter()
        config = TrainConfig(**{**base, **fields})
        trainer = Trainer(config, options=RunOptions(run_dir=str(work / name), verbose=False))
        metrics = trainer.fit().metrics
        result = metrics["val_accuracy"], metrics["test_accuracy"]
        print(f"{name}: val/test accuracy {result} ({time.perf_counter() - started:.0f} s)")
        return result

    source = "source"
    train(
        source,
        dataset=f"folder:{work / 'early'}",
        image_size=args.pretrain_size,
        epochs=args.pretrain_epochs,
    )
    late = f"folder:{work / 'late'}"
    total = args.epochs + 1
    arms = {
        "fine-tune, kept at 32": dict(
            init_from=str(work / source), fine_tune=True, epochs=args.epochs, image_size=32
        ),
        f"fine-tune, resized up to {args.pretrain_size} (default)": dict(
            init_from=str(work / source), fine_tune=True, epochs=args.epochs
        ),
        "from scratch at 32": dict(epochs=total, image_size=32),
        f"from scratch at {args.pretrain_size}": dict(epochs=total, image_size=args.pretrain_size),
    }
    results: dict[str, list[tuple[float, float]]] = {arm: [] for arm in arms}
    for seed in args.seeds:
        for i, (arm, fields) in enumerate(arms.items()):
            results[arm].append(train(f"arm{i}-seed{seed}", dataset=late, seed=seed, **fields))

    print(
        f"\n{args.model} at width {args.width:g}; backbone trained on digits 0-4 at "
        f"{args.pretrain_size}x{args.pretrain_size} for {args.pretrain_epochs} epochs; target "
        f"digits 5-9 stored at 32x32, {args.per_class} training images per class, 1 + "
        f"{args.epochs} epochs (fine-tuning) or {total} (from scratch), seeds {args.seeds}\n"
    )
    print("| arm | best validation accuracy | test accuracy of those weights |\n|---|---|---|")
    for arm, pairs in results.items():
        cells = []
        for values in zip(*pairs, strict=True):
            cells.append(f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
        print(f"| {arm} | {' | '.join(cells)} |")
    print("\nmedian (min-max) over the seeds")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
