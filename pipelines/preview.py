"""Writes a grid of augmented training samples with their class names.

By default it shows what training uses: ``--augment auto`` is resolved with
``pipelines.resolve_augment`` and the image size comes from ``pipelines.default_image_size``
(with ``--model``, the model's native size for datasets whose images are not square and of one
size). Example::

    python -m pipelines.preview --dataset digits --out grid.png
"""

from __future__ import annotations

if __name__ == "__main__":  # quiet TensorFlow's start before the imports below load it
    from pipelines.cli import start_tensorflow_for_main

    start_tensorflow_for_main()

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.augment import AUTO, PRESETS, get_augment_config
from pipelines.build import denormalize, make_train_dataset
from pipelines.defaults import default_image_size, resolve_augment
from pipelines.sources import available_sources, load
from pipelines.stats import compute_stats

logger = logging.getLogger(__name__)


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


def model_side(model: str) -> int:
    """The native input side of a ``zoo`` model (imports ``zoo`` only when called)."""
    import zoo

    return int(zoo.model_info(model).input_shape[0])


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
    model: str | None = None,
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
            when its images are square and of one size, else the model's, else 224).
        model: A ``zoo`` model name whose native input side is the default size.
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
    native = model_side(model) if model is not None else None
    options = {"data_dir": data_dir, "download": download} if dataset.startswith("tfds:") else {}
    data = load(dataset, **options)
    if split not in data.splits:
        raise ValueError(f"{data.name} has no split {split!r}; it has {sorted(data.splits)}.")
    size = image_size or default_image_size(data, native)
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


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.preview",
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
        "its images are square and of one size, else the --model's input side, else 224",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="zoo model name whose native input side is the default --image-size",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data directory (tfds: sources)")
    parser.add_argument(
        "--download",
        action="store_true",
        help="let TFDS download and prepare missing data (needs network)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
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
            model=args.model,
            data_dir=args.data_dir,
            download=args.download,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    side = preview.image_size
    print(f"wrote {args.out} (augment {preview.augment!r}, {side}x{side})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
