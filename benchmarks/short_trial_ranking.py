"""Do short tuner trials rank learning rates the way full training does?

Trains the default recipe (``resnet20`` on the embedded digits) at several learning rates, each
for ``--short`` epochs and for ``--long`` epochs (the schedule spans the run's own length, as a
tuner trial's does), and prints both rankings by validation accuracy with their Spearman
correlation. The engine re-estimates batch-norm statistics before each evaluation; pass
``--bn-recalibration 0`` to see the ranking without that.

    python benchmarks/short_trial_ranking.py --json ranking.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zoo.config import RunOptions, TrainConfig
from zoo.training import fit


def ranks(values: list[float]) -> list[float]:
    """Ranks (1 = best, the largest value), ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else float("nan")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learning-rates", type=float, nargs="+",
                        default=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0])  # fmt: skip
    parser.add_argument("--short", type=int, default=1, help="epochs of a short trial")
    parser.add_argument("--long", type=int, default=15, help="epochs of full training")
    parser.add_argument("--bn-recalibration", type=int, default=16)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results: dict[str, dict[float, float]] = {"short": {}, "long": {}}
    for kind, epochs in (("short", args.short), ("long", args.long)):
        for lr in args.learning_rates:
            config = TrainConfig(
                learning_rate=lr,
                epochs=epochs,
                bn_recalibration=args.bn_recalibration,
                deterministic=True,
            )
            options = RunOptions(run_dir=tempfile.mkdtemp(prefix="rank-"), verbose=False)
            history = fit(config, options=options)
            results[kind][lr] = max(history.history["val_accuracy"])
            print(f"{kind} ({epochs} epochs) lr {lr:g}: best val_accuracy "
                  f"{results[kind][lr]:.4f}", flush=True)  # fmt: skip
    lrs = args.learning_rates
    short = [results["short"][lr] for lr in lrs]
    long = [results["long"][lr] for lr in lrs]
    report = {
        "command": " ".join([sys.executable, *sys.argv]),
        "learning_rates": lrs,
        "short_epochs": args.short,
        "long_epochs": args.long,
        "bn_recalibration": args.bn_recalibration,
        "short_val_accuracy": short,
        "long_val_accuracy": long,
        "short_ranks": ranks(short),
        "long_ranks": ranks(long),
        "spearman": spearman(short, long),
    }
    print("| learning rate | " + " | ".join(f"{lr:g}" for lr in lrs) + " |")
    print("|---|" + "---|" * len(lrs))
    for kind, values in (("short", short), ("long", long)):
        epochs = args.short if kind == "short" else args.long
        cells = " | ".join(f"{v:.3f} (#{r:g})" for v, r in zip(values, ranks(values), strict=True))
        print(f"| {epochs} epoch(s) | {cells} |")
    print(f"Spearman rank correlation: {report['spearman']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
