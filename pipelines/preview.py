"""Writes a grid of augmented training samples with their class names.

By default it shows what training uses: ``--augment auto`` is resolved with
``pipelines.resolve_augment`` and the image size comes from ``pipelines.default_image_size``.
The model-aware preview, ``python -m zoo.preview --model NAME``, builds on this module: it takes
the same flags and passes the model's native side (the default size for datasets whose images
are not square and of one size). Example::

    python -m pipelines.preview --dataset digits --out grid.png
"""

from __future__ import annotations

if __name__ == "__main__":  # quiet TensorFlow's start before the imports below load it
    from pipelines.cli import start_tensorflow_for_main

    start_tensorflow_for_main()

import argparse
import dataclasses
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.augment import AUTO, PRESETS, get_augment_config
from pipelines.build import denormalize, make_train_dataset
from pipelines.cli import EXIT_BAD_INPUT, add_verbose_flag
from pipelines.defaults import default_image_size, resolve_augment
from pipelines.sources import available_sources, load
from pipelines.stats import compute_stats

logger = logging.getLogger(__name__)

PROG = "python -m pipelines.preview"
SIZE_FALLBACK = "224 (python -m zoo.preview --model NAME puts the model's input side before 224)"


def _caption(label: np.ndarray, class_names: Sequence[str]) -> str:
    if label.ndim == 0:
        return class_names[int(label)]
    order = np.argsort(label)[::-1]
    parts = [f"{class_names[i]} {label[i]:.2f}" for i in order[:2] if label[i] > 0.005]
    return " / ".join(parts)


@dataclasses.dataclass(frozen=True)
class Preview:
    """What ``render_grid`` drew.

    Attributes:
        captions: The caption of every tile, row by row.
        augment: The augmentation spec used (``auto`` resolved).
        image_size: The image side used.
    """

    captions: list[str]
    augment: str
    image_size: int


def render_grid(
    dataset: str = "digits",
    augment: str = AUTO,
    out: str | Path = "grid.png",
    *,
    rows: int = 4,
    cols: int = 8,
    seed: int = 0,
    epoch: int = 0,
    split: str = "train",
    image_size: int | None = None,
    model_side: int | None = None,
    data_dir: str | None = None,
    download: bool = False,
) -> Preview:
    """Renders ``rows * cols`` augmented samples into a PNG.

    Args:
        dataset: Source string for ``pipelines.load``.
        augment: ``auto`` (what training picks for this dataset and size), a preset, or
            either followed by ``,key=value`` switches.
        out: Output PNG path.
        rows: Grid rows.
        cols: Grid columns.
        seed: Augmentation and shuffle seed.
        epoch: Epoch whose first batch is shown.
        split: Split to sample from.
        image_size: Output side; default ``pipelines.default_image_size`` (the dataset's side
            when its images are square and of one size, else ``model_side``, else 224).
        model_side: The native input side of the model the images are for.
        data_dir: TFDS data directory (``tfds:`` sources only).
        download: Let TFDS download (``tfds:`` sources only).

    Returns:
        The captions, the augmentation spec and the image side used.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if rows <= 0 or cols <= 0:
        raise ValueError(f"rows and cols must be positive, got rows={rows}, cols={cols}.")
    options = {"data_dir": data_dir, "download": download} if dataset.startswith("tfds:") else {}
    data = load(dataset, **options)
    if split not in data.splits:
        raise ValueError(f"{data.name} has no split {split!r}; it has {sorted(data.splits)}.")
    size = image_size or default_image_size(data, model_side)
    augment = resolve_augment(augment, data, size)
    config = get_augment_config(augment)
    stats = compute_stats(data, max_examples=2048)
    samples = make_train_dataset(
        data.splits[split],
        image_size=(size, size),
        global_batch_size=rows * cols,
        augment=config,
        mean=stats.mean,
        std=stats.std,
        seed=seed,
        cache=False,
        drop_remainder=False,
        num_classes=data.num_classes,
        pca=stats,
        initial_epoch=epoch,
        epochs=1,
    )
    images, labels = next(iter(samples))
    pixels = denormalize(images, stats.mean, stats.std).numpy()
    labels = labels.numpy()
    captions = [_caption(label, data.class_names) for label in labels]

    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(pixels):
            ax.imshow(pixels[k], interpolation="nearest")
            ax.set_title(captions[k], fontsize=8)
    fig.suptitle(
        f"{data.name} | augment={augment} | {size}x{size} | seed={seed} epoch={epoch}",
        fontsize=9,
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Preview(captions=captions, augment=augment, image_size=size)


def build_parser(
    prog: str = PROG, *, size_fallback: str = SIZE_FALLBACK
) -> argparse.ArgumentParser:
    """The command-line interface; ``size_fallback`` says what sets ``--image-size`` when the
    dataset does not (``zoo.preview`` adds ``--model``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write a PNG grid of augmented training samples, each captioned with its "
        "class name (with mixup/cutmix: the two largest label weights).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dataset", default="digits", help=f"data source, one of {available_sources()}"
    )
    parser.add_argument(
        "--augment",
        default=AUTO,
        help=f"'{AUTO}' (what training picks: cifar up to 64 pixels, imagenet above, no flips "
        f"for digits) or a preset ({', '.join(PRESETS)}), optionally followed by switches, "
        "e.g. 'auto,mixup=0.2' or 'cifar,hue=0.05' (fields of pipelines.AugmentConfig)",
    )
    parser.add_argument("--out", default="grid.png", help="output PNG path")
    parser.add_argument("--rows", type=int, default=4, help="grid rows")
    parser.add_argument("--cols", type=int, default=8, help="grid columns")
    parser.add_argument("--seed", type=int, default=0, help="shuffle and augmentation seed")
    parser.add_argument("--epoch", type=int, default=0, help="epoch whose first batch is shown")
    parser.add_argument("--split", default="train", help="split to sample from")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="output side in pixels; None means what training uses: the dataset's side when "
        f"its images are square and of one size, else {size_fallback}",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data directory (tfds: sources)")
    parser.add_argument(
        "--download",
        action="store_true",
        help="let TFDS download and prepare missing data (needs network)",
    )
    add_verbose_flag(parser)
    return parser


def run(args: argparse.Namespace, model_side: int | None = None) -> int:
    """Renders the grid that parsed ``args`` ask for and says where it went; returns the exit
    status (a bad dataset, split or augmentation: one line on stderr, 2)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        preview = render_grid(
            args.dataset,
            args.augment,
            args.out,
            rows=args.rows,
            cols=args.cols,
            seed=args.seed,
            epoch=args.epoch,
            split=args.split,
            image_size=args.image_size,
            model_side=model_side,
            data_dir=args.data_dir,
            download=args.download,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    side = preview.image_size
    print(f"wrote {args.out} (augment {preview.augment!r}, {side}x{side})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status. ``--model`` needs the zoo, a floor
    above: it is refused with the ``python -m zoo.preview`` command to run instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.model is not None:
        command = shlex.join(["python", "-m", "zoo.preview", *argv])
        print(f"{PROG}: error: --model needs the model zoo; run: {command}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
