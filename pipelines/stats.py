"""Per-channel statistics of a training split: mean, std and the RGB PCA used for lighting.

All figures are in units of pixels scaled to ``[0, 1]``, the units ``make_train_dataset``
normalises with. ``load_or_compute_stats`` caches them as JSON in a run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from pipelines.sources import ImageDataset

logger = logging.getLogger(__name__)

STATS_FILE = "channel_stats.json"


@dataclasses.dataclass(frozen=True)
class ChannelStats:
    """RGB statistics over every pixel of a split.

    Attributes:
        mean: Per-channel mean.
        std: Per-channel standard deviation.
        eigval: Eigenvalues of the 3x3 RGB covariance, largest first.
        eigvec: ``[3][3]``; column ``j`` is the eigenvector of ``eigval[j]``.
        num_examples: Images the figures were computed from.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    eigval: tuple[float, float, float]
    eigvec: tuple[tuple[float, float, float], ...]
    num_examples: int

    def to_json(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChannelStats:
        """Builds stats from ``to_json`` output."""
        return cls(
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            eigval=tuple(float(v) for v in data["eigval"]),
            eigvec=tuple(tuple(float(v) for v in row) for row in data["eigvec"]),
            num_examples=int(data["num_examples"]),
        )


def _images_of(ds: ImageDataset | tf.data.Dataset, split: str) -> tf.data.Dataset:
    if isinstance(ds, ImageDataset):
        if split not in ds.splits:
            raise ValueError(f"{ds.name} has no split {split!r}; it has {sorted(ds.splits)}.")
        ds = ds.splits[split]
    if not isinstance(ds, tf.data.Dataset):
        raise ValueError(f"Expected an ImageDataset or tf.data.Dataset, got {type(ds).__name__}.")
    spec = ds.element_spec
    return ds.map(lambda *e: e[0]) if isinstance(spec, tuple) else ds


def _moments(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    pixels = tf.reshape(tf.cast(images, tf.float64) / 255.0, [-1, 3])
    return (
        tf.cast(tf.shape(pixels)[0], tf.float64),
        tf.reduce_sum(pixels, axis=0),
        tf.matmul(pixels, pixels, transpose_a=True),
    )


def compute_stats(
    ds: ImageDataset | tf.data.Dataset,
    *,
    split: str = "train",
    max_examples: int | None = None,
    batch_size: int = 256,
) -> ChannelStats:
    """Computes per-channel mean, std and RGB covariance eigen-decomposition in one pass.

    Args:
        ds: An ``ImageDataset`` (its ``split`` is used) or a dataset of images or
            ``(image, label)`` pairs, images uint8 ``[H, W, 3]``.
        split: Split of an ``ImageDataset`` to use.
        max_examples: Use only the first this many images (None: all).
        batch_size: Images summed per step (fixed-size images only).

    Returns:
        The statistics (float64 sums, so exact for any dataset size).
    """
    images = _images_of(ds, split)
    if max_examples is not None:
        images = images.take(max_examples)
    fixed = images.element_spec.shape.is_fully_defined()
    if fixed:
        steps = images.batch(batch_size).map(
            lambda x: (tf.shape(x, out_type=tf.int64)[0], *_moments(x)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        steps = images.map(
            lambda x: (tf.constant(1, tf.int64), *_moments(x)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    count, n, total, outer = 0, 0.0, np.zeros(3), np.zeros((3, 3))
    for k, pixels, s, o in steps.as_numpy_iterator():
        count += int(k)
        n += float(pixels)
        total += s
        outer += o
    if count == 0:
        raise ValueError("Cannot compute channel statistics of an empty dataset.")
    mean = total / n
    cov = outer / n - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval = np.clip(eigval[order], 0.0, None)
    eigvec = eigvec[:, order]
    std = np.sqrt(np.clip(np.diag(cov), 1e-12, None))
    return ChannelStats(
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        eigval=tuple(float(v) for v in eigval),
        eigvec=tuple(tuple(float(v) for v in row) for row in eigvec),
        num_examples=count,
    )


def load_or_compute_stats(
    ds: ImageDataset | tf.data.Dataset,
    cache_dir: str | Path,
    *,
    key: str | None = None,
    split: str = "train",
    max_examples: int | None = None,
) -> ChannelStats:
    """Returns the stats cached in ``cache_dir/channel_stats.json``, computing them if needed.

    Args:
        ds: As for ``compute_stats``.
        cache_dir: Folder (e.g. the run directory); created if missing.
        key: Identifies the data; a cache with another key is recomputed. Default: the
            dataset name, split, example count and ``max_examples``.
        split: As for ``compute_stats``.
        max_examples: As for ``compute_stats``.

    Returns:
        The statistics.
    """
    if key is None:
        if isinstance(ds, ImageDataset):
            key = f"{ds.name}|{split}|{ds.num_examples.get(split)}|{max_examples}"
        else:
            key = f"dataset|{max_examples}"
    path = Path(cache_dir) / STATS_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key:
                return ChannelStats.from_json(data["stats"])
            logger.info(
                "Channel stats in %s are for %r, not %r: recomputing.", path, data.get("key"), key
            )
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("Ignoring unreadable channel stats cache %s (%s).", path, exc)
    stats = compute_stats(ds, split=split, max_examples=max_examples)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"key": key, "stats": stats.to_json()}, indent=2) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # written whole, then renamed
    tmp.write_text(text)
    os.replace(tmp, path)
    return stats


def compute_mean_std(
    ds: ImageDataset | tf.data.Dataset,
    *,
    split: str = "train",
    max_examples: int | None = None,
    cache_dir: str | Path | None = None,
    key: str | None = None,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of a training split (cached in ``cache_dir`` when given).

    Returns:
        ``(mean, std)``, each three floats in units of pixels scaled to ``[0, 1]``.
    """
    if cache_dir is not None:
        stats = load_or_compute_stats(
            ds, cache_dir, key=key, split=split, max_examples=max_examples
        )
    else:
        stats = compute_stats(ds, split=split, max_examples=max_examples)
    return stats.mean, stats.std
