"""Input pipelines for keras-zoo: data sources, augmentation, tf.data builders and TTA.

Quick start::

    import pipelines
    data = pipelines.load("digits")
    train = pipelines.make_train_dataset(
        data, image_size=(32, 32), global_batch_size=128, augment="cifar",
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), epochs=1)
"""

from pipelines import tta
from pipelines.augment import PRESETS, AugmentConfig, augment_batch, get_augment_config
from pipelines.build import (
    denormalize,
    make_eval_dataset,
    make_train_dataset,
    normalize,
    steps_per_epoch,
)
from pipelines.sources import (
    DataUnavailableError,
    ImageDataset,
    available_sources,
    load,
    register_source,
)
from pipelines.stats import ChannelStats, compute_mean_std, compute_stats, load_or_compute_stats

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "ChannelStats",
    "DataUnavailableError",
    "ImageDataset",
    "augment_batch",
    "available_sources",
    "compute_mean_std",
    "compute_stats",
    "denormalize",
    "get_augment_config",
    "load",
    "load_or_compute_stats",
    "make_eval_dataset",
    "make_train_dataset",
    "normalize",
    "register_source",
    "steps_per_epoch",
    "tta",
]
