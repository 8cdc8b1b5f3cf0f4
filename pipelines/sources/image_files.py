"""What the ``folder:`` and ``files:`` sources share: listing image files, decoding each once
to leave out the unreadable ones, carving validation per class, and the final dataset."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipelines.sources.base import (
    ImageDataset,
    check_bool,
    check_fraction,
    logger,
    seeded_holdout,
)

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
CORRUPT_WARNING = "Skipping unreadable or corrupt image file: %s"
NOT_REGULAR_WARNING = "Skipping %s: not a regular file (a FIFO, socket or device)."


def image_root(argument: str, validation_fraction: float, mirror_invariant: bool) -> Path:
    """The folder ``argument`` names, after checking the options ``folder:`` and ``files:``
    share.

    Raises:
        FileNotFoundError: The folder does not exist.
        ValueError: A ``validation_fraction`` outside [0, 1) or a non-bool ``mirror_invariant``.
    """
    check_fraction("validation_fraction", validation_fraction)
    check_bool("mirror_invariant", mirror_invariant)
    root = Path(argument).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist or is not a folder.")
    return root


def list_images(class_dir: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files under ``class_dir`` (recursively, in a fixed order), and the image-named
    paths left out, each with its warning: no regular file (a FIFO, socket or device: opening
    a FIFO would block forever) or a dangling link. A link to a regular file is read."""
    found: list[str] = []
    skipped: list[tuple[str, str]] = []
    for root, dirs, files in os.walk(class_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith(".") or not f.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(root, f)
            try:
                mode = os.stat(path).st_mode  # follows links
            except OSError:  # a dangling link, or no access
                skipped.append((path, CORRUPT_WARNING))
                continue
            if stat.S_ISREG(mode):
                found.append(path)
            else:
                skipped.append((path, NOT_REGULAR_WARNING))
    return found, skipped


def decode_file(path: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _verify(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Decodes every file once; returns the readable positions and their ``[H, W]`` shapes."""
    if not paths:
        return np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
    ds = tf.data.Dataset.from_tensor_slices(list(paths)).enumerate()
    ds = ds.map(
        lambda i, p: (i, tf.shape(decode_file(p), out_type=tf.int64)[:2]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).ignore_errors()
    index, shapes = [np.zeros(0, np.int64)], [np.zeros((0, 2), np.int64)]
    for i, s in ds.batch(4096).as_numpy_iterator():
        index.append(i)
        shapes.append(s)
    return np.concatenate(index), np.concatenate(shapes)


def verify_splits(
    files: dict[str, tuple[list[str], list[int]]], skipped: list[tuple[str, str]]
) -> set[tuple[int, int]]:
    """Decodes every file of every split once: drops the unreadable ones from ``files`` (in
    place), adds them to ``skipped`` and returns the ``(H, W)`` shapes seen."""
    shapes_seen: set[tuple[int, int]] = set()
    for ours, (paths, labels) in files.items():
        good, shapes = _verify(paths)
        kept = set(good.tolist())
        for i in range(len(paths)):
            if i not in kept:
                skipped.append((paths[i], CORRUPT_WARNING))
        files[ours] = ([paths[i] for i in good], [labels[i] for i in good])
        shapes_seen.update(map(tuple, shapes.tolist()))
    return shapes_seen


def carve_validation(
    files: dict[str, tuple[list[str], list[int]]],
    class_names: Sequence[str],
    validation_fraction: float,
    split_seed: int,
    *,
    where: str,
    remedy: str,
) -> None:
    """Moves a seeded ``validation_fraction`` of each class of ``files["train"]`` into
    ``files["validation"]`` (class ``c`` is carved with seed ``split_seed + c``).

    Raises:
        ValueError: The carving leaves a class no training image; the message names the
            class(es), ``where`` they are and ends with ``remedy``.
    """
    if validation_fraction <= 0:
        return
    paths, labels = files["train"]
    lab = np.asarray(labels)
    held = np.zeros(len(lab), bool)
    for c in range(len(class_names)):
        members = np.flatnonzero(lab == c)
        held[members[seeded_holdout(len(members), validation_fraction, split_seed + c)]] = True
    left = np.bincount(lab[~held], minlength=len(class_names))
    starved = [class_names[c] for c in np.flatnonzero(left == 0)]
    if starved:
        raise ValueError(
            f"validation_fraction {validation_fraction} carves every image of class(es) "
            f"{starved} in {where!r} into validation, leaving none to train on: {remedy}."
        )
    if held.any():
        names = np.asarray(paths, dtype=object)
        files["validation"] = (names[held].tolist(), lab[held].tolist())
        files["train"] = (names[~held].tolist(), lab[~held].tolist())


def image_dataset(
    name: str,
    root: Path,
    class_names: Sequence[str],
    files: Mapping[str, tuple[list[str], list[int]]],
    skipped: Sequence[tuple[str, str]],
    shapes_seen: set[tuple[int, int]],
    *,
    split_seed: int,
    verify: bool,
    mirror_invariant: bool,
    unlabelled: Sequence[str] = (),
) -> ImageDataset:
    """The ``ImageDataset`` of checked file lists: each split decodes its files in a fixed
    order shuffled by ``split_seed``; the ``skipped`` files are logged here, after every
    check (so an error stays the one line the user sees)."""
    rng = np.random.default_rng(split_seed)
    datasets: dict[str, tf.data.Dataset] = {}
    sizes: dict[str, int] = {}
    for ours, (paths, labels) in files.items():
        order = rng.permutation(len(paths))
        ds = tf.data.Dataset.from_tensor_slices(
            (
                tf.constant([paths[i] for i in order], tf.string),
                tf.constant([labels[i] for i in order], tf.int64),
            )
        )
        ds = ds.map(
            lambda p, y: (decode_file(p), y),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if not verify:
            ds = ds.ignore_errors()
        datasets[ours] = ds
        sizes[ours] = len(paths)
    for path, warning in skipped:
        logger.warning(warning, path)
    if skipped:
        total = sum(sizes.values()) + len(skipped)
        logger.warning(
            "Skipped %d unreadable image file(s) of %d under %s.", len(skipped), total, root
        )

    image_shape = None
    if verify and len(shapes_seen) == 1:
        h, w = next(iter(shapes_seen))
        image_shape = (int(h), int(w), 3)
        datasets = {
            k: ds.map(lambda x, y: (tf.ensure_shape(x, image_shape), y))
            for k, ds in datasets.items()
        }
    return ImageDataset(
        name=name,
        class_names=tuple(class_names),
        splits=datasets,
        num_examples=sizes,
        image_shape=image_shape,
        skipped_files=tuple(path for path, _ in skipped),
        exact_sizes=bool(verify),
        mirror_invariant=mirror_invariant,
        unlabelled_files=tuple(unlabelled),
    )


def classes_without_images(labels: Sequence[int], class_names: Sequence[str]) -> list[str]:
    """The names of the classes no label in ``labels`` points to."""
    per_class = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    return [class_names[c] for c in np.flatnonzero(per_class == 0)]
