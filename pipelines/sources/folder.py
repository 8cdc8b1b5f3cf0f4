"""``folder:<path>``: one sub-folder per class, optionally under ``train/``, ``val/`` and
``test/``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipelines.sources.base import MIN_CLASSES, ImageDataset, register_source
from pipelines.sources.image_files import (
    IMAGE_EXTENSIONS,
    carve_validation,
    classes_without_images,
    image_dataset,
    image_root,
    list_images,
    verify_splits,
)

_FOLDER_SPLITS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}


def _scan_split(
    split_dir: Path, class_names: Sequence[str] | None
) -> tuple[list[str], list[int], list[str], list[tuple[str, str]]]:
    """``(paths, labels, class names, skipped (path, warning))`` of one split folder."""
    classes = sorted(
        d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    if class_names is None:
        class_names = classes
    extra = sorted(set(classes) - set(class_names))
    if extra:
        raise ValueError(
            f"{split_dir} has class folder(s) {extra} that the training split lacks; "
            f"training classes: {list(class_names)}."
        )
    paths: list[str] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    for label, name in enumerate(class_names):
        if (split_dir / name).is_dir():
            files, left_out = list_images(split_dir / name)
            paths.extend(files)
            labels.extend([label] * len(files))
            skipped.extend(left_out)
    return paths, labels, list(class_names), skipped


@register_source("folder", "folder:<path>")
def load_folder(
    argument: str,
    *,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    verify: bool = True,
    mirror_invariant: bool = True,
) -> ImageDataset:
    """An image folder with one sub-folder per class.

    Layouts: ``<path>/<class>/...`` (all of it is train), or ``<path>/train/<class>/...`` with
    optional ``val/`` (or ``validation/``) and ``test/`` beside it. Files ending in .jpg, .jpeg,
    .png, .bmp or .gif (any case) are read, recursively inside each class folder; grayscale,
    palette and RGBA images become RGB (alpha is dropped); a GIF gives its first frame. Class
    names are the sorted class-folder names of train. Without a validation folder, a stratified
    ``validation_fraction`` of each class is carved from train, chosen by ``split_seed``.

    Args:
        argument: The folder path.
        validation_fraction: Share of each training class carved out as validation when there
            is no validation folder.
        split_seed: Seed of that carving and of the fixed shuffled file order.
        verify: Decode every file once now: unreadable files are logged by path, counted and
            left out, and ``image_shape`` is found. Without it, unreadable files are dropped
            silently while reading, ``num_examples`` counts files (an upper bound on what the
            splits yield) and ``exact_sizes`` is False, so ``make_train_dataset`` does not
            assert a cardinality.
        mirror_invariant: Whether a mirrored image keeps its class (``ImageDataset``'s
            attribute); pass False for digits or text.

    Returns:
        The dataset. Each split lists its files in a fixed order shuffled by ``split_seed``
        (so a small shuffle buffer still mixes the classes).

    Raises:
        FileNotFoundError: The folder does not exist.
        ValueError: Fewer than two class folders, no readable images, a training class
            folder without readable images, a split with classes train lacks, or a
            ``validation_fraction`` that leaves a class no training images.
    """
    root = image_root(argument, validation_fraction, mirror_invariant)
    layout: dict[str, Path] = {}
    for ours, names in _FOLDER_SPLITS.items():
        for n in names:
            if (root / n).is_dir():
                layout[ours] = root / n
                break
    if layout and "train" not in layout:
        raise ValueError(
            f"{root} has {sorted(p.name for p in layout.values())} but no train/ "
            "folder; add train/<class>/... or use a flat <class>/... layout."
        )
    if not layout:
        layout = {"train": root}

    train_dir = str(layout["train"])
    paths, labels, class_names, skipped = _scan_split(layout["train"], None)
    if not class_names:
        raise ValueError(
            f"No class folders in {train_dir!r}: expected "
            "<class>/<image files> (optionally under train/, val/, test/)."
        )
    if len(class_names) < MIN_CLASSES:
        raise ValueError(
            f"{train_dir!r} holds only {len(class_names)} class folder, {class_names}: a "
            "classifier needs at least two class folders (<class>/<image files>), one per "
            "class; add the other classes."
        )
    listed_train = len(paths) + len(skipped)  # image-named paths in train's class folders
    files: dict[str, tuple[list[str], list[int]]] = {"train": (paths, labels)}
    for ours in ("validation", "test"):
        if ours in layout:
            p, lab, _, left_out = _scan_split(layout[ours], class_names)
            files[ours] = (p, lab)
            skipped.extend(left_out)

    # Before carving, so validation_fraction shares out readable images only.
    shapes_seen = verify_splits(files, skipped) if verify else set()

    paths, labels = files["train"]
    if not paths:
        if listed_train:
            example = next(p for p, _ in skipped if p.startswith(os.path.join(train_dir, "")))
            raise ValueError(
                f"None of the {listed_train} image files under {train_dir!r} could be read "
                f"(corrupt, unreadable or not regular files, e.g. {example!r}): replace them "
                f"with readable {'/'.join(IMAGE_EXTENSIONS)} images."
            )
        raise ValueError(
            f"No image files ({'/'.join(IMAGE_EXTENSIONS)}) in the class folders of "
            f"{train_dir!r}: put each class's images in its <class>/ folder."
        )
    empty = classes_without_images(labels, class_names)
    if empty:
        raise ValueError(
            f"Class folder(s) {empty} in {train_dir!r} hold no readable images: remove them or "
            "add images (every class folder becomes a class the model must predict)."
        )

    if "validation" not in files:
        carve_validation(
            files,
            class_names,
            validation_fraction,
            split_seed,
            where=train_dir,
            remedy="lower it, add images, or add a val/ folder beside train/",
        )
    return image_dataset(
        f"folder:{argument}",
        root,
        class_names,
        files,
        skipped,
        shapes_seen,
        split_seed=split_seed,
        verify=verify,
        mirror_invariant=mirror_invariant,
    )
