"""Data for the engine: the source, its statistics, and datasets distributed for a strategy.

Policy (the default image size, what ``augment="auto"`` means) is the pipeline's; this module
only applies it to a `TrainConfig` and hands the results to the strategy.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import tensorflow as tf

import pipelines
import zoo
from zoo import weights as zoo_weights
from zoo.config import TrainConfig
from zoo.training import rundir

logger = logging.getLogger("zoo.train")
STATS_EXAMPLES = 20_000  # images used for the normalisation and PCA statistics


def load_options(
    dataset: str, data_dir: str | None, label_regex: str | None, *, download: bool = False
) -> dict[str, Any]:
    """The options of ``pipelines.load(dataset, ...)`` for a run's dataset fields (the training
    and the export of its run load the same data); a `ValueError` for a field the dataset kind
    does not take."""
    options: dict[str, Any] = {}
    if dataset.startswith("tfds:"):
        options = {"data_dir": data_dir, "download": download}
    elif data_dir is not None:
        raise ValueError("data_dir applies to tfds:NAME datasets only.")
    if dataset.startswith("files:"):
        options["label_regex"] = label_regex
    elif label_regex is not None:
        raise ValueError(
            "--label-regex applies to files:PATH datasets only (one folder of images "
            "labelled by their names); a folder:PATH dataset is labelled by its folders."
        )
    return options


class TrainData:
    """A `TrainConfig`'s dataset, resolved: image size, augmentation, classes and statistics.

    Loading fails with a `ValueError` naming the dataset before anything is written.
    """

    def __init__(self, config: TrainConfig, strategy: tf.distribute.Strategy) -> None:
        self.config, self.strategy = config, strategy
        options = load_options(
            config.dataset, config.data_dir, config.label_regex, download=config.download
        )
        self.source = pipelines.load(config.dataset, **options)
        if not getattr(self.source, "exact_sizes", True):
            raise ValueError(
                f"{config.dataset}: split sizes are only upper bounds (files were not "
                "verified), so epochs cannot be counted; load it with verify=True."
            )
        missing = {"train", "validation"} - set(self.source.splits)
        if missing:
            raise ValueError(f"{config.dataset} has no {', '.join(sorted(missing))} split.")
        self.check_source()
        # Published weights bring their own normalisation (and architecture options).
        self.published = (
            zoo_weights.published(config.model, config.weights) if config.weights else None
        )
        model_side = zoo.model_info(config.model).input_shape[0]
        data_side = pipelines.default_image_size(self.source, model_side)
        # Starting weights are used at the size they were trained at: small images are
        # resized up to it (measured better than keeping them small: docs/training.md, fine-tuning).
        self.starting_side = None if config.image_size else self._starting_side()
        side = config.image_size or self.starting_side or data_side
        self.resized_from = data_side if self.starting_side and side != data_side else None
        self.image_size = (side, side)
        self.classes = self.source.num_classes
        self.augment = (
            "none"
            if config.overfit_batches
            else pipelines.resolve_augment(config.augment, self.source, self.image_size)
        )
        self.num_train = self.source.num_examples["train"]
        if config.overfit_batches:
            available = self.num_train // config.batch_size
            if config.overfit_batches > available:
                logger.warning(
                    "warning: --overfit-batches %d is more than the %d full batches of %s's "
                    "training split: each epoch trains on all of them (without augmentation)",
                    config.overfit_batches,
                    available,
                    config.dataset,
                )
            self.num_train = min(config.overfit_batches * config.batch_size, self.num_train)
        self.num_input_pipelines = _input_pipelines(strategy)
        self.steps_per_epoch = pipelines.steps_per_epoch(
            self.num_train, config.batch_size, num_input_pipelines=self.num_input_pipelines
        )
        if self.steps_per_epoch < 1:
            largest = pipelines.largest_batch_size(
                self.num_train,
                self.num_input_pipelines,
                max(strategy.num_replicas_in_sync // self.num_input_pipelines, 1),
            )
            raise ValueError(
                f"--batch-size {config.batch_size} is larger than the {self.num_train} training "
                f"images of {config.dataset}; "
                + (
                    f"pass --batch-size {largest} or less"
                    + (
                        f" (a multiple of the {strategy.num_replicas_in_sync} replicas)."
                        if strategy.num_replicas_in_sync > 1
                        else "."
                    )
                    if largest
                    else f"use more training images than the {strategy.num_replicas_in_sync} "
                    "replicas."
                )
            )
        self.stats: pipelines.ChannelStats | None = None

    def _starting_side(self) -> int | None:
        """The side the starting weights were trained at: the published weights' input, or
        the ``init_from`` run's (None for a ``.keras`` file or no starting weights)."""
        if self.published is not None:
            return int(self.published.input_shape[0])
        source = self.config.init_from
        if source and Path(source).is_dir() and (Path(source) / rundir.DATA).is_file():
            shape = rundir.RunDirectory.open(source).read_json(rundir.DATA).get("input_shape")
            if isinstance(shape, list) and shape and isinstance(shape[0], int):
                return shape[0]
        return None

    def check_source(self) -> None:
        """Refuse data a run cannot learn from or judge: fewer than two classes, or an empty
        training or validation split (validation picks the best weights that get exported)."""
        name = self.config.dataset
        if self.source.num_classes < 2:
            raise ValueError(
                f"{name} has {self.source.num_classes} class(es) "
                f"({', '.join(map(str, self.source.class_names)) or 'none'}); a classifier "
                "needs at least two."
            )
        for split in ("train", "validation"):
            if self.source.num_examples[split] == 0:
                raise ValueError(
                    f"{name}'s {split} split is empty; "
                    + (
                        "add images to it, or remove it to carve validation from train."
                        if split == "validation"
                        else "add training images."
                    )
                )

    def load_stats(self, cache_dir: str | Path | None) -> pipelines.ChannelStats:
        """Normalisation and PCA statistics of the training split (cached in ``cache_dir``).
        With published ``weights`` the normalisation is theirs (what they were trained with);
        the PCA lighting statistics stay the data's."""
        if cache_dir is None:
            self.stats = pipelines.compute_stats(self.source, max_examples=STATS_EXAMPLES)
        else:
            self.stats = pipelines.load_or_compute_stats(
                self.source, cache_dir, max_examples=STATS_EXAMPLES
            )
        if self.published is not None:
            self.stats = dataclasses.replace(
                self.stats, mean=tuple(self.published.mean), std=tuple(self.published.std)
            )
        return self.stats

    def describe(self) -> dict[str, Any]:
        """What ``data.json`` records: what serving and later runs need to know."""
        assert self.stats is not None, "load_stats first"
        return {
            "dataset": self.config.dataset,
            "class_names": list(self.source.class_names),
            "input_shape": [*self.image_size, 3],
            "mean": list(self.stats.mean),
            "std": list(self.stats.std),
            "num_examples": dict(self.source.num_examples),
            "augment": self.augment,
        }

    def eval_steps(self, split: str) -> int:
        return pipelines.eval_steps(
            self.source.num_examples[split],
            self.config.batch_size,
            num_input_pipelines=self.num_input_pipelines,
        )

    # Distributed datasets -------------------------------------------------------------------

    def train_dataset(self, initial_epoch: int = 0):
        """Augmented training batches from ``initial_epoch`` on, forever (one iterator serves
        every epoch; an epoch is `steps_per_epoch` steps)."""
        return self._training_batches(self.augment, self.config.seed, initial_epoch)

    def eval_dataset(self, split: str):
        """Every example of ``split`` once, in full (padded) global batches."""
        stats = self.stats

        def fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return pipelines.make_eval_dataset(
                self.source,
                image_size=self.image_size,
                batch_size=self.config.batch_size,  # global; the pipeline splits it
                mean=stats.mean,
                std=stats.std,
                input_context=context,
                split=split,
                cache=True,
                pad=True,
            )

        return self.strategy.distribute_datasets_from_function(fn)

    def calibration_dataset(self, epoch: int = 0):
        """Shuffled, un-augmented training batches for re-estimating batch-norm statistics:
        a function of ``(seed, epoch)``, so a resumed run sees the same ones."""
        # Uncached (the training pipeline holds the cache) and a small shuffle buffer: it reads
        # only a few batches, built anew each epoch.
        buffer = max(4 * self.config.bn_recalibration * self.config.batch_size, 1024)
        return self._training_batches(
            "none", self.config.seed + 1, epoch, cache=False, shuffle_buffer=buffer
        )

    def _training_batches(
        self,
        augment: str,
        seed: int,
        initial_epoch: int,
        cache: bool = True,
        shuffle_buffer: int | None = None,
    ):
        cfg, stats = self.config, self.stats
        source: Any = self.source
        if cfg.overfit_batches:
            source = self.source.splits["train"].take(cfg.overfit_batches * cfg.batch_size)

        def fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return pipelines.make_train_dataset(
                source,
                image_size=self.image_size,
                global_batch_size=cfg.batch_size,
                augment=augment,
                mean=stats.mean,
                std=stats.std,
                seed=seed,
                input_context=context,
                num_classes=self.classes,
                pca=stats,
                initial_epoch=initial_epoch,
                cache=cache,
                shuffle_buffer=shuffle_buffer,
            )

        return self.strategy.distribute_datasets_from_function(fn)


def _input_pipelines(strategy: tf.distribute.Strategy) -> int:
    """How many input pipelines (workers) the strategy feeds from."""
    seen: list[int] = []

    def fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        seen.append(context.num_input_pipelines)
        return tf.data.Dataset.range(1)

    strategy.distribute_datasets_from_function(fn)
    return seen[0] if seen else 1
