"""``tfds:<name>[:<config>]``: a TensorFlow Datasets image-classification dataset."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pipelines.cli import one_line
from pipelines.sources.base import (
    SPLITS,
    DataUnavailableError,
    ImageDataset,
    check_bool,
    check_fraction,
    register_source,
    seeded_holdout,
)

# TFDS datasets of digits or letters, where a mirrored image is not of its class.
TFDS_NOT_MIRROR_INVARIANT = frozenset({"emnist", "kmnist", "mnist", "svhn_cropped"})

_SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}

# TFDS's errors run to many lines: ours quote the first, "Type: line", whole (a path can be long).
QUOTED_ERROR_LIMIT = 1000


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
        f"({one_line(exc, QUOTED_ERROR_LIMIT, typed=True)}): the folder is incomplete or "
        "damaged; delete it and prepare it again with --download, or pass --data-dir DIR "
        "holding a complete copy."
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

    check_fraction("validation_fraction", validation_fraction)
    if mirror_invariant is not None:
        check_bool("mirror_invariant", mirror_invariant)
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
                f"Could not open TFDS dataset {name!r} in {place} "
                f"({one_line(exc, QUOTED_ERROR_LIMIT, typed=True)}): check --data-dir, or delete "
                "the dataset's folder there and prepare it again with --download."
            ) from None
        close = difflib.get_close_matches(base, known, n=5)
        raise ValueError(
            f"Unknown TFDS dataset {argument!r} ({one_line(exc, QUOTED_ERROR_LIMIT, typed=True)}). "
            f"Close matches: {close}; image classification examples: cifar10, cifar100, mnist, "
            "fashion_mnist, imagenette, oxford_iiit_pet, imagenet2012. See tfds.list_builders()."
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
                f"{str(builder.data_dir)!r} ({one_line(exc, QUOTED_ERROR_LIMIT, typed=True)}): "
                f"{check}; {_tfds_build_elsewhere(name)}."
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
        mask = seeded_holdout(sizes["train"], validation_fraction, split_seed)
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


def _select(ds: tf.data.Dataset, mask: np.ndarray, keep: bool) -> tf.data.Dataset:
    """Keeps the elements of ``ds`` at the positions where ``mask == keep``."""
    table = tf.constant(mask if keep else ~mask)
    count = int(table.numpy().sum())
    ds = ds.enumerate().filter(lambda i, _: tf.gather(table, i)).map(lambda _, e: e)
    return ds.apply(tf.data.experimental.assert_cardinality(count))
