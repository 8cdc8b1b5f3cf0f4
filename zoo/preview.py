"""The model-aware preview: ``python -m pipelines.preview`` plus ``--model``, whose native input
side is the default image size for datasets whose images are not square and of one size (as
``python -m zoo.train --model`` picks). Example::

    python -m zoo.preview --dataset folder:/data/pets --model resnet50 --out grid.png
"""

from __future__ import annotations

if __name__ == "__main__":  # quiet TensorFlow's start before the imports below load it
    from zoo.cli import start_tensorflow_for_main

    start_tensorflow_for_main()

import argparse
import sys
from collections.abc import Sequence

import zoo
from pipelines import preview
from zoo.cli import EXIT_BAD_INPUT

PROG = "python -m zoo.preview"


def model_side(model: str) -> int:
    """The native input side of a registered model (a ValueError naming close matches)."""
    return int(zoo.model_info(model).input_shape[0])


def build_parser() -> argparse.ArgumentParser:
    """`pipelines.preview`'s flags and ``--model``."""
    parser = preview.build_parser(PROG, size_fallback="the --model's input side, else 224")
    parser.add_argument(
        "--model",
        default=None,
        help="zoo model name whose native input side is the default --image-size",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        side = None if args.model is None else model_side(args.model)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return preview.run(args, model_side=side)


if __name__ == "__main__":
    sys.exit(main())
