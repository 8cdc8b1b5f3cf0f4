"""``files:<path>``: image files anywhere under one folder, labelled by a regex on their names
(fast.ai's ``from_name_re``)."""

from __future__ import annotations

import os
import re
import shlex

from pipelines.sources.base import MIN_CLASSES, ImageDataset, logger, register_source
from pipelines.sources.image_files import (
    IMAGE_EXTENSIONS,
    carve_validation,
    classes_without_images,
    image_dataset,
    image_root,
    list_images,
    verify_splits,
)

PETS_REGEX = r"^(.+)_\d+\.jpg$"  # Oxford-IIIT Pet: great_pyrenees_173.jpg -> great_pyrenees
UNLABELLED_SHOWN = 5  # unlabelled file names named in the warning


def _quote(text: str) -> str:
    """``text`` as a shell user would type it (``'^(.+)_\\d+\\.jpg$'``); ``repr`` when it has
    characters that would break the one-line message."""
    return shlex.quote(text) if text.isprintable() else repr(text)


def _label_pattern(label_regex: str | None, argument: str) -> tuple[re.Pattern[str], int | str]:
    """The compiled ``label_regex`` and the group holding the class: ``label`` if the regex
    names one, else the first."""
    example = (
        f"e.g. --label-regex {_quote(PETS_REGEX)} for Oxford-IIIT Pet names like "
        "great_pyrenees_173.jpg"
    )
    if label_regex is None:
        raise ValueError(
            f"files:{argument} needs --label-regex REGEX, searched in each file name, whose "
            f"first capture group is the class, {example} (from Python: label_regex=REGEX)."
        )
    if not isinstance(label_regex, str) or not label_regex:
        raise ValueError(f"--label-regex must be a non-empty string, got {label_regex!r}.")
    try:
        pattern = re.compile(label_regex)
    except re.error as exc:
        raise ValueError(
            f"--label-regex {_quote(label_regex)} is not a valid regular expression: {exc}."
        ) from None
    if pattern.groups == 0:
        raise ValueError(
            f"--label-regex {_quote(label_regex)} has no capture group: put the class part of "
            f"the file name in parentheses, {example}."
        )
    return pattern, "label" if "label" in pattern.groupindex else 1


@register_source("files", "files:<path>")
def load_files(
    argument: str,
    *,
    label_regex: str | None = None,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    verify: bool = True,
    mirror_invariant: bool = True,
) -> ImageDataset:
    """Image files under one folder, labelled by their names (fast.ai's ``from_name_re``).

    Files ending in .jpg, .jpeg, .png, .bmp or .gif (any case) are found recursively under the
    folder (hidden files and folders are ignored; FIFOs, sockets, devices and dangling links
    are skipped with a warning, as for ``folder:``). ``re.search(label_regex, base_name)``
    labels each file: the class is the group named ``label`` if the regex has one, else its
    first group. Class names are the sorted distinct classes. Files whose name does not
    match (or whose group is empty or takes no part in the match) are left out, logged in one
    warning and listed in ``unlabelled_files``. A stratified ``validation_fraction`` of each
    class is carved out as validation exactly as ``folder:`` does; there is no test split.

    Args:
        argument: The folder path.
        label_regex: Required. E.g. ``r"^(.+)_\\d+\\.jpg$"`` for Oxford-IIIT Pet's
            ``images/`` (``great_pyrenees_173.jpg`` is ``great_pyrenees``).
        validation_fraction: Share of each class carved out as validation.
        split_seed: Seed of that carving and of the fixed shuffled file order.
        verify: As for ``load_folder``: decode every file once now, leaving out (logged and
            counted in ``skipped_files``) the unreadable ones.
        mirror_invariant: Whether a mirrored image keeps its class.

    Returns:
        The dataset, with ``train`` and (unless too small to carve) ``validation`` splits.

    Raises:
        FileNotFoundError: The folder does not exist.
        ValueError: No ``label_regex``, an invalid one, one without a capture group, no
            image file that it matches, fewer than two classes, a class per file, a class
            without readable images, or a ``validation_fraction`` that leaves a class no
            training images.
    """
    pattern, group = _label_pattern(label_regex, argument)
    regex = _quote(pattern.pattern)
    root = image_root(argument, validation_fraction, mirror_invariant)
    found, skipped = list_images(root)
    if not found:
        if skipped:
            raise ValueError(
                f"None of the {len(skipped)} image files under {str(root)!r} could be read "
                f"(not regular files or dangling links, e.g. {skipped[0][0]!r}): replace them "
                f"with readable {'/'.join(IMAGE_EXTENSIONS)} images."
            )
        raise ValueError(
            f"No image files ({'/'.join(IMAGE_EXTENSIONS)}) under {str(root)!r}: files:PATH "
            "reads the images anywhere under PATH."
        )

    named: list[tuple[str, str]] = []  # (path, class)
    unlabelled: list[str] = []
    for path in found:
        match = pattern.search(os.path.basename(path))
        label = match.group(group) if match else None
        if label:
            named.append((path, label))
        else:
            unlabelled.append(path)
    shown = [os.path.relpath(p, root) for p in unlabelled[:UNLABELLED_SHOWN]]
    if not named:
        raise ValueError(
            f"None of the {len(found)} image files under {str(root)!r} match --label-regex "
            f"{regex} (e.g. {', '.join(shown[:3])}): it is searched in each file's base name "
            "and its capture group must pick out the class."
        )
    class_names = sorted({label for _, label in named})
    if len(class_names) < MIN_CLASSES:
        raise ValueError(
            f"--label-regex {regex} gives the {len(named)} matching file(s) under "
            f"{str(root)!r} one class only, {class_names[0]!r}: a classifier needs at least two "
            "classes; the capture group must pick out the class part of the name (e.g. "
            f"{_quote(PETS_REGEX)} gives 'great_pyrenees' for great_pyrenees_173.jpg)."
        )
    if len(class_names) == len(named):
        raise ValueError(
            f"--label-regex {regex} gives each of the {len(named)} matching files under "
            f"{str(root)!r} a class of its own (e.g. {named[0][1]!r}): the capture group "
            "must pick out the class part of the name, not its unique part (e.g. "
            f"{_quote(PETS_REGEX)} gives 'great_pyrenees' for great_pyrenees_173.jpg)."
        )
    index = {name: i for i, name in enumerate(class_names)}
    files: dict[str, tuple[list[str], list[int]]] = {
        "train": ([p for p, _ in named], [index[label] for _, label in named])
    }
    shapes_seen = verify_splits(files, skipped) if verify else set()

    paths, labels = files["train"]
    if not paths:
        raise ValueError(
            f"None of the {len(named)} image files under {str(root)!r} that match "
            f"--label-regex {regex} could be read (corrupt or unreadable, e.g. "
            f"{named[0][0]!r}): replace them with readable {'/'.join(IMAGE_EXTENSIONS)} images."
        )
    empty = classes_without_images(labels, class_names)
    if empty:
        raise ValueError(
            f"Class(es) {empty} under {str(root)!r} (from --label-regex {regex}) have no "
            "readable images: replace or remove their files (every class becomes one the "
            "model must predict)."
        )
    carve_validation(
        files,
        class_names,
        validation_fraction,
        split_seed,
        where=str(root),
        remedy="lower it or add images",
    )
    if unlabelled:  # after the checks: an error stays one line
        more = len(unlabelled) - len(shown)
        logger.warning(
            "files:%s: %d of %d image files do not match --label-regex %s and are left out: %s",
            argument,
            len(unlabelled),
            len(found),
            regex,
            ", ".join(shown) + (f" and {more} more" if more else ""),
        )
    return image_dataset(
        f"files:{argument}",
        root,
        class_names,
        files,
        skipped,
        shapes_seen,
        split_seed=split_seed,
        verify=verify,
        mirror_invariant=mirror_invariant,
        unlabelled=unlabelled,
    )
