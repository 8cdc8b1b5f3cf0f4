"""What every source shares: the dataset type, the registry behind ``load``, the split names and
the seeded choice of validation examples."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import types
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

# The one logger of every source module: the name users see and filter.
logger = logging.getLogger("pipelines.sources")

SPLITS = ("train", "validation", "test")
MIN_CLASSES = 2  # a classifier of one class is always right


class DataUnavailableError(RuntimeError):
    """The data behind a source is not on this machine and could not be fetched."""


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """A loaded image-classification dataset.

    Attributes:
        name: Canonical source string, e.g. ``"digits"`` or ``"tfds:cifar10"``.
        class_names: Class names; label ``i`` is ``class_names[i]``.
        splits: ``"train"``, ``"validation"`` and/or ``"test"`` to a ``tf.data.Dataset`` of
            ``(image uint8 [H, W, 3], label int64 [])`` in a fixed order.
        num_examples: Examples per split. Exact unless ``exact_sizes`` is False: for a folder
            loaded with ``verify=False`` it counts files, an upper bound, as unreadable files
            are dropped only while reading (so ``steps_per_epoch`` computed from it may exceed
            the steps an epoch really has).
        image_shape: ``(H, W, 3)`` when every image has that shape, else ``None``.
        skipped_files: Paths left out (folder and files sources): files that could not be
            decoded, and image-named paths that are no regular file (FIFOs, sockets, devices,
            dangling links).
        exact_sizes: Whether ``num_examples`` are exact counts (False: upper bounds).
        mirror_invariant: Whether a horizontally mirrored image is still an example of its
            class. False for digits and text (a mirrored 2 is not a 2): the ``auto``
            augmentation then leaves flips off (see ``pipelines.resolve_augment``).
        unlabelled_files: Paths left out because their names give no label (files source:
            image files whose base name ``label_regex`` does not match); empty otherwise.
    """

    name: str
    class_names: tuple[str, ...]
    splits: Mapping[str, tf.data.Dataset]
    num_examples: Mapping[str, int]
    image_shape: tuple[int, int, int] | None
    skipped_files: tuple[str, ...] = ()
    exact_sizes: bool = True
    mirror_invariant: bool = True
    unlabelled_files: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.splits) - set(SPLITS))
        if unknown:
            raise ValueError(f"Unknown split name(s) {unknown}; accepted: {list(SPLITS)}.")
        object.__setattr__(self, "splits", types.MappingProxyType(dict(self.splits)))
        object.__setattr__(self, "num_examples", types.MappingProxyType(dict(self.num_examples)))


# ----------------------------------------------------------------------------- registry

_LOADERS: dict[str, Callable[..., ImageDataset]] = {}
_USAGE: dict[str, str] = {}


def register_source(prefix: str, usage: str) -> Callable[[Callable[..., ImageDataset]], Any]:
    """Registers a loader for sources named ``prefix`` or ``prefix:<argument>``.

    The loader's parameter ``argument``, if it has one, receives the text after ``prefix:``
    (then required); its keyword-only parameters are the options ``load`` accepts for it.

    Args:
        prefix: Source name before the first ``:``.
        usage: How the source string is written, shown in error messages.

    Returns:
        A decorator that registers the loader and returns it unchanged.
    """

    def decorator(fn: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        _LOADERS[prefix] = fn
        _USAGE[prefix] = usage
        return fn

    return decorator


def available_sources() -> list[str]:
    """Returns how each registered source is written, e.g. ``"tfds:<name>[:<config>]"``."""
    return list(_USAGE.values())


def load(source: str, **options: Any) -> ImageDataset:
    r"""Loads an image-classification dataset.

    Args:
        source: ``"digits"``, ``"tfds:<name>[:<config>]"``, ``"folder:<path>"`` or
            ``"files:<path>"`` (which needs ``label_regex``, e.g.
            ``load("files:/data/pets/images", label_regex=r"^(.+)_\d+\.jpg$")``).
        **options: Loader options; see ``load_digits``, ``load_tfds``, ``load_folder`` and
            ``load_files``. An option a source does not take (e.g. ``label_regex`` for
            ``folder:``) is an error.

    Returns:
        The dataset with its splits, class names and sizes.

    Raises:
        ValueError: Unknown source or option, naming the accepted ones, or a dataset of fewer
            than two classes.
        DataUnavailableError: The data is not on this machine (see the loaders).
    """
    if not isinstance(source, str) or not source:
        raise ValueError(
            f"source must be a non-empty string, got {source!r}; accepted: {available_sources()}."
        )
    prefix, _, argument = source.partition(":")
    if prefix not in _LOADERS:
        raise ValueError(f"Unknown source {source!r}; accepted: {available_sources()}.")
    loader = _LOADERS[prefix]
    params = inspect.signature(loader).parameters
    takes_argument = "argument" in params
    if takes_argument and not argument:
        raise ValueError(f"Source {source!r} needs an argument: write it as {_USAGE[prefix]!r}.")
    if not takes_argument and argument:
        raise ValueError(
            f"Source {prefix!r} takes no argument, got {source!r}; write it as {_USAGE[prefix]!r}."
        )
    accepted = sorted(n for n in params if n != "argument")
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for source {prefix!r}; accepted: {accepted}."
        )
    data = loader(argument, **options) if takes_argument else loader(**options)
    if data.num_classes < MIN_CLASSES:
        raise ValueError(
            f"{source} has {data.num_classes} class(es) {list(data.class_names)}: a classifier "
            f"needs at least {MIN_CLASSES} classes."
        )
    return data


# ----------------------------------------------------------------------------- option checks


def check_bool(name: str, value: object) -> bool:
    """``value`` when it is a bool; a ValueError naming the option otherwise."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return value


def check_fraction(name: str, value: float) -> None:
    """A ValueError naming the option unless ``0 <= value < 1``."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}.")


def seeded_holdout(num: int, fraction: float, seed: int) -> np.ndarray:
    """Returns a boolean mask of ``round(fraction * num)`` positions chosen by ``seed``."""
    mask = np.zeros(num, dtype=bool)
    count = round(fraction * num)
    if count:
        mask[np.random.default_rng(seed).permutation(num)[:count]] = True
    return mask
