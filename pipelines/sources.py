r"""Image-classification data sources behind one registry: ``pipelines.load(source, **options)``.

Sources:

* ``digits``: scikit-learn's 8x8 handwritten digits (1,797 real images shipped inside
  scikit-learn, no network), scaled to uint8, resized to 32x32 with bilinear interpolation and
  replicated to 3 channels. Stratified, seeded split: 1,257 train / 180 validation / 360 test.
* ``tfds:<name>[:<config>]``: a TensorFlow Datasets image-classification dataset.
* ``folder:<path>``: a folder with one sub-folder per class, optionally inside ``train/``,
  ``val/`` (or ``validation/``) and ``test/``.
* ``files:<path>``: image files anywhere under one folder, labelled by their file names with
  ``label_regex`` (fast.ai's ``from_name_re``), e.g. Oxford-IIIT Pet's ``images/`` with
  ``label_regex=r"^(.+)_\d+\.jpg$"``.

Every split yields ``(image uint8 [H, W, 3], label int64 [])`` in a fixed order. Sources without
a validation split get one carved from train, deterministically from ``split_seed``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import logging
import os
import re
import shlex
import stat
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
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


# ----------------------------------------------------------------------------- helpers


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return value


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}.")


def _seeded_holdout(num: int, fraction: float, seed: int) -> np.ndarray:
    """Returns a boolean mask of ``round(fraction * num)`` positions chosen by ``seed``."""
    mask = np.zeros(num, dtype=bool)
    count = round(fraction * num)
    if count:
        mask[np.random.default_rng(seed).permutation(num)[:count]] = True
    return mask


def _select(ds: tf.data.Dataset, mask: np.ndarray, keep: bool) -> tf.data.Dataset:
    """Keeps the elements of ``ds`` at the positions where ``mask == keep``."""
    table = tf.constant(mask if keep else ~mask)
    count = int(table.numpy().sum())
    ds = ds.enumerate().filter(lambda i, _: tf.gather(table, i)).map(lambda _, e: e)
    return ds.apply(tf.data.experimental.assert_cardinality(count))


# ----------------------------------------------------------------------------- digits

DIGITS_SIZES = {"train": 1257, "validation": 180, "test": 360}


@functools.lru_cache(maxsize=4)
def _digits_arrays(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.float32)  # 0..16 -> 0..255
    resized = tf.image.resize(images[..., None], (image_size, image_size), method="bilinear")
    resized = tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
    rgb = np.repeat(resized.numpy(), 3, axis=-1)
    return rgb, bunch.target.astype(np.int64)


@register_source("digits", "digits")
def load_digits(*, split_seed: int = 0, image_size: int = 32) -> ImageDataset:
    """scikit-learn's handwritten digits as RGB images.

    The 1,797 8x8 images (values 0..16) are scaled to 0..255, resized to
    ``image_size`` x ``image_size`` with bilinear interpolation and replicated to 3 channels.
    The split is stratified by class (``sklearn.model_selection.train_test_split`` with
    ``random_state=split_seed``): 360 test, 180 validation, 1,257 train.

    Args:
        split_seed: Seed of the stratified split.
        image_size: Side of the square output images (8 keeps the originals).

    Returns:
        The dataset; images are bright strokes on a black background.
    """
    from sklearn.model_selection import train_test_split

    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}.")
    images, labels = _digits_arrays(image_size)
    index = np.arange(len(labels))
    rest, test = train_test_split(
        index, test_size=DIGITS_SIZES["test"], stratify=labels, random_state=split_seed
    )
    train, val = train_test_split(
        rest, test_size=DIGITS_SIZES["validation"], stratify=labels[rest], random_state=split_seed
    )
    parts = {"train": np.sort(train), "validation": np.sort(val), "test": np.sort(test)}
    splits = {
        name: tf.data.Dataset.from_tensor_slices((images[idx], labels[idx]))
        for name, idx in parts.items()
    }
    return ImageDataset(
        name="digits",
        class_names=tuple(str(d) for d in range(10)),
        splits=splits,
        num_examples={name: len(idx) for name, idx in parts.items()},
        image_shape=(image_size, image_size, 3),
        mirror_invariant=False,  # a mirrored digit is not a digit
    )


# ----------------------------------------------------------------------------- TFDS

# TFDS datasets of digits or letters, where a mirrored image is not of its class.
TFDS_NOT_MIRROR_INVARIANT = frozenset({"emnist", "kmnist", "mnist", "svhn_cropped"})

_SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}


def _first_line(exc: BaseException) -> str:
    """``"Type: first line of the message"``: TFDS errors run to many lines."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _tfds_build_elsewhere(name: str) -> str:
    return (
        f"without network, run `tfds build {name} --data_dir DIR` on a machine that has it, "
        "copy DIR here and pass --data-dir DIR or set TFDS_DATA_DIR"
    )


def _tfds_manual_folder(builder: Any, manual_dir: str | None) -> str:
    """Where TFDS looks for a manual dataset's files (default: DATA_DIR/downloads/manual)."""
    return str(manual_dir or Path(str(builder.data_dir_root)) / "downloads" / "manual")


def _tfds_not_prepared(builder: Any, name: str, manual_dir: str | None) -> str:
    """One line: where the data was looked for and the CLI flags (and Python options) to get it."""
    where = f"TFDS dataset {name!r} is not in {str(builder.data_dir)!r}"
    manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    if manual:
        return (
            f"{where} and needs files you download yourself: put them in "
            f"{_tfds_manual_folder(builder, manual_dir)!r} and pass --download, or pass "
            "--data-dir DIR where it is prepared (from Python: manual_dir=FOLDER, download=True, "
            f"data_dir=DIR). TFDS says: {' '.join(manual.split())}"
        )
    return (
        f"{where}: pass --download to fetch and prepare it there (needs network); "
        f"{_tfds_build_elsewhere(name)} (from Python: download=True, data_dir=DIR)."
    )


def _tfds_unreadable(builder: Any, name: str, exc: BaseException) -> str:
    return (
        f"Could not read TFDS dataset {name!r} from {str(builder.data_dir)!r} "
        f"({_first_line(exc)}): the folder is incomplete or damaged; delete it and prepare it "
        "again with --download, or pass --data-dir DIR holding a complete copy."
    )


def _find_features(info: Any, name: str) -> tuple[str, str]:
    import tensorflow_datasets as tfds

    features = info.features
    keys = info.supervised_keys
    if (
        isinstance(keys, tuple)
        and len(keys) == 2
        and all(isinstance(k, str) for k in keys)
        and isinstance(features[keys[0]], tfds.features.Image)
        and isinstance(features[keys[1]], tfds.features.ClassLabel)
    ):
        return keys[0], keys[1]
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if len(images) == 1 and len(labels) == 1:
        return images[0], labels[0]
    raise ValueError(
        f"TFDS dataset {name!r} is not a single-label image-classification dataset: it needs "
        f"exactly one Image and one ClassLabel feature, found Image={images}, "
        f"ClassLabel={labels} among {sorted(features.keys())}."
    )


@register_source("tfds", "tfds:<name>[:<config>]")
def load_tfds(
    argument: str,
    *,
    data_dir: str | None = None,
    download: bool = False,
    manual_dir: str | None = None,
    splits: Mapping[str, str] | None = None,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    mirror_invariant: bool | None = None,
) -> ImageDataset:
    """A TensorFlow Datasets image-classification dataset.

    Args:
        argument: ``<name>`` or ``<name>:<config>`` (``<name>/<config>`` works too), e.g.
            ``cifar10``, ``imagenette:160px``, ``imagenet2012``.
        data_dir: TFDS data directory (default: ``TFDS_DATA_DIR`` or
            ``~/tensorflow_datasets``).
        download: Download and prepare the data when it is not in ``data_dir`` (needs
            network, or ``manual_dir`` for manual datasets). Off by default: a missing dataset
            raises ``DataUnavailableError`` saying how to get it.
        manual_dir: Folder with manually downloaded files (e.g. ImageNet's tar files).
        splits: Our split names to TFDS split specs, e.g. ``{"train": "train[:50%]",
            "test": "test"}``. Default: ``train``, ``validation`` (or ``valid``/``val``/``dev``)
            and ``test`` as the dataset has them.
        validation_fraction: Share of train carved out as validation when there is none.
        split_seed: Seed choosing which train examples become validation.
        mirror_invariant: Whether a mirrored image keeps its class (``ImageDataset``'s
            attribute). None: False for the digit and letter datasets in
            ``TFDS_NOT_MIRROR_INVARIANT``, True for others.

    Returns:
        The dataset (images converted to RGB, labels int64).

    Raises:
        ValueError: Unknown dataset, not an image-classification dataset, or a
            ``validation_fraction`` that leaves no training examples.
        DataUnavailableError: The data is not prepared and could not be fetched, or its folder
            cannot be read (incomplete). The one-line message says where the data was looked
            for and names the ``zoo.train`` flags (``--data-dir``, ``--download``) beside the
            options of this function.
    """
    import tensorflow_datasets as tfds

    _check_fraction("validation_fraction", validation_fraction)
    if mirror_invariant is not None:
        _check_bool("mirror_invariant", mirror_invariant)
    name = argument.replace(":", "/", 1)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # TFDS raises several types for unknown names.
        base, _, config_name = name.partition("/")
        known = tfds.list_builders()
        if base in known and (not config_name or _has_config(base, config_name)):
            # A dataset TFDS knows that it could not open: its data folder is the trouble.
            place = repr(data_dir) if data_dir else "TFDS_DATA_DIR (else ~/tensorflow_datasets)"
            raise DataUnavailableError(
                f"Could not open TFDS dataset {name!r} in {place} ({_first_line(exc)}): check "
                "--data-dir, or delete the dataset's folder there and prepare it again with "
                "--download."
            ) from None
        close = difflib.get_close_matches(base, known, n=5)
        raise ValueError(
            f"Unknown TFDS dataset {argument!r} ({_first_line(exc)}). Close matches: {close}; "
            "image classification examples: cifar10, cifar100, mnist, fashion_mnist, "
            "imagenette, oxford_iiit_pet, imagenet2012. See tfds.list_builders()."
        ) from None
    image_key, label_key = _find_features(builder.info, name)

    try:
        prepared = builder.is_prepared()
    except Exception as exc:  # e.g. a data folder that cannot be listed
        raise DataUnavailableError(_tfds_unreadable(builder, name, exc)) from None
    if not prepared:
        if not download:
            raise DataUnavailableError(_tfds_not_prepared(builder, name, manual_dir))
        config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
        try:
            builder.download_and_prepare(download_config=config)
        except Exception as exc:
            if isinstance(exc, ImportError):  # TFDS imports what a download needs late
                check = f"install the Python package {exc.name or 'it names'}"
            else:
                check = "check the network"
                if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
                    check += f" and the files in {_tfds_manual_folder(builder, manual_dir)!r}"
            raise DataUnavailableError(
                f"Could not download and prepare TFDS dataset {name!r} into "
                f"{str(builder.data_dir)!r} ({_first_line(exc)}): {check}; "
                f"{_tfds_build_elsewhere(name)}."
            ) from None

    if splits is None:
        # Split names are unknown before preparation (e.g. under tfds.testing.mock_data):
        # assume the usual train/test pair then.
        present = set(builder.info.splits.keys()) or {"train", "test"}
        wanted: dict[str, str] = {}
        for ours, aliases in _SPLIT_ALIASES.items():
            for alias in aliases:
                if alias in present:
                    wanted[ours] = alias
                    break
        if "train" not in wanted:
            raise ValueError(
                f"TFDS dataset {name!r} has no 'train' split (it has {sorted(present)}); "
                "pass splits={'train': ..., ...} naming the ones to use."
            )
    else:
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown or "train" not in splits:
            raise ValueError(
                f"splits must map some of {list(SPLITS)} (train included) to TFDS split specs, "
                f"got keys {sorted(splits)}."
            )
        wanted = dict(splits)

    label_feature = builder.info.features[label_key]
    channels = builder.info.features[image_key].shape[-1]

    def to_pair(example: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image = example[image_key]
        if channels == 1:
            image = tf.image.grayscale_to_rgb(image)
        elif channels == 4:
            image = image[..., :3]
        return image, tf.cast(example[label_key], tf.int64)

    datasets: dict[str, tf.data.Dataset] = {}
    sizes: dict[str, int] = {}
    for ours, spec in wanted.items():
        try:
            _check_files(builder, spec)
            ds = builder.as_dataset(split=spec, shuffle_files=False)
            ds = ds.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            sizes[ours] = _count(ds, builder, spec)
        except ValueError:  # a bad split spec: the caller's
            raise
        except Exception as exc:  # e.g. metadata without its data files (an interrupted copy)
            raise DataUnavailableError(_tfds_unreadable(builder, name, exc)) from None
        datasets[ours] = ds

    if "validation" not in datasets and validation_fraction > 0:
        mask = _seeded_holdout(sizes["train"], validation_fraction, split_seed)
        if mask.all():
            raise ValueError(
                f"validation_fraction {validation_fraction} carves all {sizes['train']} "
                f"training examples of {name!r} into validation, leaving no training examples: "
                "lower it."
            )
        if mask.any():
            train = datasets["train"]
            datasets["train"] = _select(train, mask, keep=False)
            datasets["validation"] = _select(train, mask, keep=True)
            sizes["validation"] = int(mask.sum())
            sizes["train"] -= sizes["validation"]

    shape = builder.info.features[image_key].shape
    image_shape = (
        (int(shape[0]), int(shape[1]), 3) if shape[0] is not None and shape[1] is not None else None
    )
    source = f"tfds:{argument}"
    if mirror_invariant is None:
        mirror_invariant = name.split("/")[0] not in TFDS_NOT_MIRROR_INVARIANT
    return ImageDataset(
        name=source,
        class_names=tuple(label_feature.names),
        splits=datasets,
        num_examples=sizes,
        image_shape=image_shape,
        mirror_invariant=mirror_invariant,
    )


def _has_config(name: str, config: str) -> bool:
    """Whether TFDS dataset ``name`` has the builder config ``config``."""
    import tensorflow_datasets as tfds

    try:
        return config.split(":")[0] in tfds.builder_cls(name).builder_configs
    except Exception:
        return False


def _check_files(builder: Any, spec: str) -> None:
    """Raises FileNotFoundError when data files of a prepared split are missing (TFDS finds
    out only while reading, mid-training)."""
    try:
        paths = builder.info.splits[spec].filepaths
    except Exception:  # a spec TFDS resolves later, or no split metadata (mock data)
        return
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(paths)} data files of split {spec!r} are missing, "
            f"e.g. {missing[0]}"
        )


def _count(ds: tf.data.Dataset, builder: Any, spec: str) -> int:
    cardinality = int(ds.cardinality())
    if cardinality >= 0:
        return cardinality
    try:
        return int(builder.info.splits[spec].num_examples)
    except Exception:  # Unknown split size: count it (one pass).
        return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


# ----------------------------------------------------------------------------- folder

_FOLDER_SPLITS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}


CORRUPT_WARNING = "Skipping unreadable or corrupt image file: %s"
NOT_REGULAR_WARNING = "Skipping %s: not a regular file (a FIFO, socket or device)."


def _list_images(class_dir: Path) -> tuple[list[str], list[tuple[str, str]]]:
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
            files, left_out = _list_images(split_dir / name)
            paths.extend(files)
            labels.extend([label] * len(files))
            skipped.extend(left_out)
    return paths, labels, list(class_names), skipped


def _decode_file(path: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _verify(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Decodes every file once; returns the readable positions and their ``[H, W]`` shapes."""
    if not paths:
        return np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
    ds = tf.data.Dataset.from_tensor_slices(list(paths)).enumerate()
    ds = ds.map(
        lambda i, p: (i, tf.shape(_decode_file(p), out_type=tf.int64)[:2]),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).ignore_errors()
    index, shapes = [np.zeros(0, np.int64)], [np.zeros((0, 2), np.int64)]
    for i, s in ds.batch(4096).as_numpy_iterator():
        index.append(i)
        shapes.append(s)
    return np.concatenate(index), np.concatenate(shapes)


def _verify_splits(
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


def _carve_validation(
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
        held[members[_seeded_holdout(len(members), validation_fraction, split_seed + c)]] = True
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


def _image_dataset(
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
            lambda p, y: (_decode_file(p), y),
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


def _classes_without_images(labels: Sequence[int], class_names: Sequence[str]) -> list[str]:
    """The names of the classes no label in ``labels`` points to."""
    per_class = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    return [class_names[c] for c in np.flatnonzero(per_class == 0)]


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
    _check_fraction("validation_fraction", validation_fraction)
    _check_bool("mirror_invariant", mirror_invariant)
    root = Path(argument).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist or is not a folder.")
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
    shapes_seen = _verify_splits(files, skipped) if verify else set()

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
    empty = _classes_without_images(labels, class_names)
    if empty:
        raise ValueError(
            f"Class folder(s) {empty} in {train_dir!r} hold no readable images: remove them or "
            "add images (every class folder becomes a class the model must predict)."
        )

    if "validation" not in files:
        _carve_validation(
            files,
            class_names,
            validation_fraction,
            split_seed,
            where=train_dir,
            remedy="lower it, add images, or add a val/ folder beside train/",
        )
    return _image_dataset(
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


# ----------------------------------------------------------------------------- files

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
    _check_fraction("validation_fraction", validation_fraction)
    _check_bool("mirror_invariant", mirror_invariant)
    root = Path(argument).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist or is not a folder.")
    found, skipped = _list_images(root)
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
    shapes_seen = _verify_splits(files, skipped) if verify else set()

    paths, labels = files["train"]
    if not paths:
        raise ValueError(
            f"None of the {len(named)} image files under {str(root)!r} that match "
            f"--label-regex {regex} could be read (corrupt or unreadable, e.g. "
            f"{named[0][0]!r}): replace them with readable {'/'.join(IMAGE_EXTENSIONS)} images."
        )
    empty = _classes_without_images(labels, class_names)
    if empty:
        raise ValueError(
            f"Class(es) {empty} under {str(root)!r} (from --label-regex {regex}) have no "
            "readable images: replace or remove their files (every class becomes one the "
            "model must predict)."
        )
    _carve_validation(
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
    return _image_dataset(
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
