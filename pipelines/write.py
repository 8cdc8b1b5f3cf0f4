"""Write a dataset out as image files: to try the ``folder:`` and ``files:`` sources (and
fine-tuning from one class set to another) offline, on the embedded digits.

    python -m pipelines.write digits /tmp/digits                 # train/ val/ test/<class>/*.png
    python -m pipelines.write digits /tmp/flat --flat            # <class>_<n>.png in one folder
    python -m pipelines.write digits /tmp/late --classes 5,6,7,8,9 --per-class 40

A flat folder is labelled back with ``--dataset files:/tmp/flat --label-regex '^(.+)_\\d+\\.png$'``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipelines.cli import EXIT_BAD_INPUT, add_verbose_flag, start_tensorflow

# The layout `pipelines.load("folder:...")` reads: our split name -> folder name.
FOLDERS = {"train": "train", "validation": "val", "test": "test"}


def write_images(
    data,
    folder: str | Path,
    *,
    classes: Iterable[str] | None = None,
    per_class: int | None = None,
    flat: bool = False,
) -> dict[str, int]:
    """Write ``data`` (an `ImageDataset`) as PNG files under ``folder``.

    Args:
        data: The dataset.
        folder: Where to write; created if missing. Existing files of the same names are
            replaced, others are left alone.
        classes: Names of the classes to write (default: all).
        per_class: At most this many training images per class (validation and test are
            written whole).
        flat: One folder of ``<class>_<n>.png`` files from every split (``files:`` with a label
            regex); otherwise ``train/``, ``val/`` and ``test/`` with a folder per class.

    Returns:
        The number of files written per split.

    Raises:
        ValueError: A class in ``classes`` that ``data`` does not have, or ``per_class`` < 1.
    """
    import tensorflow as tf

    names = [str(n) for n in data.class_names]
    wanted = set(names) if classes is None else {str(c) for c in classes}
    unknown = sorted(wanted - set(names))
    if unknown:
        raise ValueError(f"--classes {','.join(unknown)}: {data.name} has classes {names}.")
    if per_class is not None and per_class < 1:
        raise ValueError(f"--per-class must be >= 1, got {per_class}.")
    root = Path(folder)
    written: dict[str, int] = {}
    numbers: dict[str, int] = {}  # a flat folder numbers each class's files across splits
    for split, dataset in data.splits.items():
        counts: dict[str, int] = {}
        for image, label in dataset.as_numpy_iterator():
            name = names[int(label)]
            if name not in wanted:
                continue
            if split == "train" and per_class and counts.get(name, 0) >= per_class:
                continue
            counts[name] = counts.get(name, 0) + 1
            if flat:
                numbers[name] = numbers.get(name, 0) + 1
                path = root / f"{name}_{numbers[name]}.png"
            else:
                path = root / FOLDERS[split] / name / f"{counts[name]}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tf.io.encode_png(image).numpy())
        written[split] = sum(counts.values())
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.write", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("source", help="a dataset pipelines.load reads, e.g. digits")
    parser.add_argument("folder", help="where to write the images")
    parser.add_argument("--classes", help="comma-separated class names to write (default: all)")
    parser.add_argument("--per-class", type=int, help="at most this many training images each")
    parser.add_argument("--flat", action="store_true", help="one folder of <class>_<n>.png")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    start_tensorflow(verbose=args.verbose)
    import pipelines

    try:
        data = pipelines.load(args.source)
        classes = args.classes.split(",") if args.classes else None
        written = write_images(
            data, args.folder, classes=classes, per_class=args.per_class, flat=args.flat
        )
    except (ValueError, OSError, pipelines.DataUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"wrote {sum(written.values())} images to {args.folder} "
        f"({', '.join(f'{k} {v}' for k, v in written.items())})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
