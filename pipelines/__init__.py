"""Input pipelines for keras-zoo: data sources, augmentation, tf.data builders and TTA.

Quick start::

    import pipelines
    data = pipelines.load("digits")
    side = pipelines.default_image_size(data)                  # 32
    augment = pipelines.resolve_augment("auto", data, side)    # "cifar,flip=false"
    train = pipelines.make_train_dataset(
        data, image_size=(side, side), global_batch_size=128, augment=augment,
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), epochs=1)
    val = pipelines.make_eval_dataset(
        data, image_size=(side, side), batch_size=128, pad=True,
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    # pipelines.eval_steps(180, 128) == 2 full batches; padding has label PAD_LABEL (-1).

The public names load TensorFlow on first use, not on ``import pipelines``: the command
lines (``python -m pipelines.preview``, ``pipelines.write``) quiet its start-up first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines import tta
    from pipelines.augment import (
        PRESETS,
        AugmentConfig,
        augment_batch,
        get_augment_config,
    )
    from pipelines.build import (
        PAD_LABEL,
        denormalize,
        eval_steps,
        largest_batch_size,
        make_eval_dataset,
        make_train_dataset,
        normalize,
        steps_per_epoch,
    )
    from pipelines.defaults import (
        default_image_size,
        resolve_augment,
    )
    from pipelines.sources import (
        DataUnavailableError,
        ImageDataset,
        available_sources,
        load,
        register_source,
    )
    from pipelines.stats import (
        ChannelStats,
        compute_mean_std,
        compute_stats,
        load_or_compute_stats,
    )
    from pipelines.write import (
        write_images,
    )

# Public name -> the module that defines it (imported on first use).
_HOMES = {
    "AugmentConfig": "augment",
    "ChannelStats": "stats",
    "DataUnavailableError": "sources",
    "ImageDataset": "sources",
    "PAD_LABEL": "build",
    "PRESETS": "augment",
    "augment_batch": "augment",
    "available_sources": "sources",
    "compute_mean_std": "stats",
    "compute_stats": "stats",
    "default_image_size": "defaults",
    "denormalize": "build",
    "eval_steps": "build",
    "get_augment_config": "augment",
    "largest_batch_size": "build",
    "load": "sources",
    "load_or_compute_stats": "stats",
    "make_eval_dataset": "build",
    "make_train_dataset": "build",
    "normalize": "build",
    "register_source": "sources",
    "resolve_augment": "defaults",
    "steps_per_epoch": "build",
    "write_images": "write",
}
__all__ = [
    "PAD_LABEL",
    "PRESETS",
    "AugmentConfig",
    "ChannelStats",
    "DataUnavailableError",
    "ImageDataset",
    "augment_batch",
    "available_sources",
    "compute_mean_std",
    "compute_stats",
    "default_image_size",
    "denormalize",
    "eval_steps",
    "get_augment_config",
    "largest_batch_size",
    "load",
    "load_or_compute_stats",
    "make_eval_dataset",
    "make_train_dataset",
    "normalize",
    "register_source",
    "resolve_augment",
    "steps_per_epoch",
    "tta",
    "write_images",
]


def __getattr__(name: str) -> Any:
    if name == "tta":
        return importlib.import_module("pipelines.tta")
    if name in _HOMES:
        return getattr(importlib.import_module(f"pipelines.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
