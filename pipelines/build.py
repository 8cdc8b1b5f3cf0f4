"""Training and evaluation ``tf.data`` pipelines.

Training order, per input pipeline::

    shard -> cache -> [per epoch: shuffle(seed(seed, epoch)) -> (variable-size images only:
    per-example crop/resize) -> batch per step -> split into per-replica batches]
    -> vectorised augmentation of whole per-replica batches (parallel, ordered) -> prefetch

What was measured (``python -m benchmarks.pipeline``, in ``benchmarks.run``): applying
``augment_batch`` to whole batches after ``batch()`` against applying the same ops to each image
(as a batch of one) in a map before ``batch()``, in otherwise identical pipelines; batching
first was faster for every preset on a shared 2-core CPU (figures in ``benchmarks/RESULTS.md``).
The placement of shard, cache and shuffle follows the usual ``tf.data`` guidance and was not
timed.

Distribution: with ``input_context`` each global step takes ``R = num_replicas_in_sync //
num_input_pipelines`` consecutive per-replica batches from every input pipeline. An epoch is
therefore batched in steps of ``R`` per-replica batches and cut to the same number of steps on
every pipeline (``steps_per_epoch``), so one epoch is exactly ``steps_per_epoch(...)`` global
steps and a step never mixes two epochs.

Evaluation (``make_eval_dataset``): every example once, in order. With ``pad=True`` every
batch is full (a static batch dimension): the last step is filled with padding examples
labelled ``PAD_LABEL`` (-1), and under a strategy every input pipeline yields the same
``eval_steps(...)`` global steps, so every replica gets a full batch at every step and no
collective waits for a pipeline that ran out. Metrics must leave the padding out, e.g. with
``sample_weight = labels != PAD_LABEL``.

Determinism: all randomness comes from stateless ops and seeded shuffles. Epoch ``e`` of
input pipeline ``p`` is a pure function of ``(seed, p, e)``: its shuffle seed and the seed of
its ``k``-th per-replica batch are derived with ``tf.random.experimental.stateless_fold_in``
from ``[seed, p]``, ``e`` and ``k``. Batches never straddle epochs. To resume at epoch ``e``,
build the dataset with ``initial_epoch=e``: it yields exactly what the original run saw from
epoch ``e`` on (under a strategy too, given the same replica layout).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from collections.abc import Sequence

import tensorflow as tf

from pipelines.augment import (
    AugmentConfig,
    augment_batch,
    fold_seed,
    get_augment_config,
    random_resized_crop_single,
)
from pipelines.resize import CROP_FRACTION, resize_and_center_crop
from pipelines.sources import ImageDataset
from pipelines.stats import ChannelStats, compute_stats

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
PAD_LABEL = -1  # label of the padding examples of make_eval_dataset(pad=True)
DEFAULT_SHUFFLE_BUFFER = 10_000
PCA_EXAMPLES = 4096


def _size(image_size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}.") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}.")
    return h, w


def _channels(name: str, values: Sequence[float], positive: bool = False) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(
            f"{name} must be 3 finite per-channel values (RGB, pixels in [0, 1]), got {values!r}."
        )
    if positive and min(out) <= 0:
        raise ValueError(f"{name} must be > 0 for every channel, got {values!r}.")
    return out


def _is_int(value: object) -> bool:
    """Python or NumPy integer, but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(name: str, value: int) -> int:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def _source(
    ds: ImageDataset | tf.data.Dataset, split: str
) -> tuple[tf.data.Dataset, int | None, bool, int | None]:
    """Returns the split's dataset, its size (if known), whether that size is exact (False: an
    upper bound, e.g. an unverified folder) and the class count (if known)."""
    if isinstance(ds, ImageDataset):
        if split not in ds.splits:
            raise ValueError(f"{ds.name} has no split {split!r}; it has {sorted(ds.splits)}.")
        return ds.splits[split], int(ds.num_examples[split]), ds.exact_sizes, ds.num_classes
    if not isinstance(ds, tf.data.Dataset):
        raise ValueError(
            f"Expected an ImageDataset or a tf.data.Dataset of (image, label), got "
            f"{type(ds).__name__}."
        )
    spec = ds.element_spec
    if not (
        isinstance(spec, tuple)
        and len(spec) == 2
        and spec[0].shape.rank == 3
        and spec[0].shape[-1] == 3
    ):
        raise ValueError(f"Expected elements (image [H, W, 3], label []), got {spec}.")
    cardinality = int(ds.cardinality())
    return ds, (cardinality if cardinality >= 0 else None), True, None


def _shard(
    ds: tf.data.Dataset, size: int | None, input_context: tf.distribute.InputContext | None
) -> tuple[tf.data.Dataset, int | None]:
    if input_context is None or input_context.num_input_pipelines == 1:
        return ds, size
    count, index = input_context.num_input_pipelines, input_context.input_pipeline_id
    ds = ds.shard(count, index)
    return ds, (None if size is None else (size - index + count - 1) // count)


def _layout(
    input_context: tf.distribute.InputContext | None, global_batch_size: int, name: str
) -> tuple[int, int, int, int]:
    """``(num_pipelines, pipeline_id, replicas per pipeline, per-replica batch)``."""
    if input_context is None:
        return 1, 0, 1, global_batch_size
    num_pipelines = input_context.num_input_pipelines
    in_sync = input_context.num_replicas_in_sync
    if in_sync % num_pipelines:
        raise ValueError(
            f"num_replicas_in_sync {in_sync} must be a multiple of num_input_pipelines "
            f"{num_pipelines}."
        )
    if global_batch_size % in_sync:
        raise ValueError(
            f"{name} {global_batch_size} is the global batch size: it must be a multiple of "
            f"num_replicas_in_sync {in_sync}, so that every replica gets an equal batch."
        )
    return (
        num_pipelines,
        input_context.input_pipeline_id,
        in_sync // num_pipelines,
        input_context.get_per_replica_batch_size(global_batch_size),
    )


def _seeded_shuffle(ds: tf.data.Dataset, buffer: int, seed: tf.Tensor) -> tf.data.Dataset:
    """``ds.shuffle`` whose order depends on ``seed`` alone, not on ``tf.random.set_seed``.

    ``Dataset.shuffle`` pairs an explicit seed with the graph-level seed when one is set (and
    a tensor seed then fails with a global seed of 0). Clearing the graph-level seed of the
    function graph being traced (a ``flat_map`` function here) for this one op avoids both.
    """
    graph = tf.compat.v1.get_default_graph()
    saved = graph.seed
    graph.seed = None
    try:
        return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
    finally:
        graph.seed = saved


def normalize(images: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """Maps pixels in 0..255 (uint8 or float) to ``(x / 255 - mean) / std``, float32."""
    mean = _channels("mean", mean)
    std = _channels("std", std, positive=True)
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def denormalize(images: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """Inverse of ``normalize``, giving float32 pixels in ``[0, 1]`` (clipped)."""
    x = tf.cast(images, tf.float32) * tf.constant(std, tf.float32) + tf.constant(mean, tf.float32)
    return tf.clip_by_value(x, 0.0, 1.0)


def _per_pipeline_batch(global_batch_size: int, num_input_pipelines: int) -> int:
    batch = _positive_int("global_batch_size", global_batch_size)
    if batch % num_input_pipelines:
        raise ValueError(
            f"global_batch_size {batch} must be a multiple of num_input_pipelines "
            f"{num_input_pipelines}: every input pipeline feeds an equal share of each step."
        )
    return batch // num_input_pipelines


def largest_batch_size(num_examples: int, num_input_pipelines: int = 1, replicas: int = 1) -> int:
    """The largest global batch size that gives an epoch of ``make_train_dataset`` (with
    ``drop_remainder``) at least one step: a multiple of the ``num_input_pipelines * replicas``
    replicas in sync (``replicas`` per input pipeline) whose share per input pipeline fits in
    the smallest shard, ``num_examples // num_input_pipelines``. 0 when there are fewer
    examples per input pipeline than replicas."""
    in_sync = num_input_pipelines * replicas
    return (num_examples // num_input_pipelines) * num_input_pipelines // in_sync * in_sync


def _batch_too_large(batch: int, total: int, exact: bool, num_pipelines: int, replicas: int) -> str:
    """One line for a batch size that leaves an epoch no full step, naming ``--batch-size``."""
    examples = f"{'' if exact else 'at most '}{total} training examples"
    if num_pipelines > 1:
        examples += f" ({total // num_pipelines} per input pipeline of {num_pipelines})"
    largest = largest_batch_size(total, num_pipelines, replicas)
    in_sync = num_pipelines * replicas
    if largest == 0:
        advice = f"use more training images than the {in_sync} replicas"
    else:
        advice = f"use --batch-size {largest} or less"
        if in_sync > 1:
            advice += f" (a multiple of the {in_sync} replicas)"
    return (
        f"Batch size {batch} (--batch-size) is larger than the {examples}: an epoch would have "
        f"no full batch; {advice}."
    )


def steps_per_epoch(
    num_examples: int,
    global_batch_size: int,
    *,
    num_input_pipelines: int = 1,
    drop_remainder: bool = True,
) -> int:
    """Global (optimizer) steps in one epoch of ``make_train_dataset``.

    Each of the ``P = num_input_pipelines`` pipelines (workers) holds a shard of ``n // P`` or
    ``n // P + 1`` examples and feeds ``global_batch_size // P`` of them to every global step,
    as ``R = num_replicas_in_sync // P`` per-replica batches. The count does not depend on
    ``R``, and every pipeline yields exactly this many steps (``R`` times as many per-replica
    batches) per epoch:

    * ``drop_remainder=True``: ``(n // P) // (global_batch_size // P)``, the full steps of the
      smallest shard. A larger shard leaves its last few examples of the epoch out (different
      ones each epoch, as the order is reshuffled).
    * ``drop_remainder=False``: ``ceil(ceil(n / P) / (global_batch_size // P))``. The last step
      is partial, its examples split as evenly as possible over the replicas (a replica may get
      an empty batch); a pipeline with fewer examples fills its steps with empty batches.

    Args:
        num_examples: Examples in the training split, before sharding.
        global_batch_size: Batch size summed over all replicas.
        num_input_pipelines: ``input_context.num_input_pipelines`` (1 without a strategy, or
            with one worker).
        drop_remainder: As passed to ``make_train_dataset``.

    Returns:
        Steps per epoch; 0 when ``drop_remainder`` and no full step fits.

    Raises:
        ValueError: A value that is not a positive int, or a ``global_batch_size`` that is not
            a multiple of ``num_input_pipelines``.
    """
    n = _positive_int("num_examples", num_examples)
    count = _positive_int("num_input_pipelines", num_input_pipelines)
    per_pipeline = _per_pipeline_batch(global_batch_size, count)
    if drop_remainder:
        return (n // count) // per_pipeline
    largest = -(-n // count)  # ceil(n / P)
    return -(-largest // per_pipeline)


def eval_steps(num_examples: int, global_batch_size: int, *, num_input_pipelines: int = 1) -> int:
    """Global steps of ``make_eval_dataset(..., pad=True)``: every example once, padded.

    Each of the ``P = num_input_pipelines`` pipelines holds a shard of ``ceil(n / P)`` or
    ``floor(n / P)`` examples and feeds ``global_batch_size // P`` of them to every step, so the
    largest shard needs ``ceil(ceil(n / P) / (global_batch_size // P))`` steps; every pipeline
    yields that many, padding the rest. As ``global_batch_size`` is a multiple of ``P``, this
    equals ``ceil(n / global_batch_size)`` for every ``P``.

    Args:
        num_examples: Examples in the split, before sharding (0 gives 0 steps).
        global_batch_size: Batch size summed over all replicas.
        num_input_pipelines: ``input_context.num_input_pipelines`` (1 without a strategy, or
            with one worker).

    Returns:
        The number of global steps.

    Raises:
        ValueError: A count that is not an int (``num_examples`` >= 0, the others > 0), or a
            ``global_batch_size`` that is not a multiple of ``num_input_pipelines``.
    """
    if not _is_int(num_examples) or num_examples < 0:
        raise ValueError(f"num_examples must be an int >= 0, got {num_examples!r}.")
    count = _positive_int("num_input_pipelines", num_input_pipelines)
    per_pipeline = _per_pipeline_batch(global_batch_size, count)
    largest = -(-int(num_examples) // count)  # ceil(n / P)
    return -(-largest // per_pipeline)


def make_train_dataset(
    ds: ImageDataset | tf.data.Dataset,
    *,
    image_size: Sequence[int],
    global_batch_size: int,
    augment: str | AugmentConfig = "cifar",
    mean: Sequence[float],
    std: Sequence[float],
    seed: int = 0,
    shuffle_buffer: int | None = None,
    cache: bool | str = True,
    input_context: tf.distribute.InputContext | None = None,
    drop_remainder: bool = True,
    num_classes: int | None = None,
    pca: ChannelStats | None = None,
    initial_epoch: int = 0,
    epochs: int | None = None,
    num_parallel_calls: int = AUTOTUNE,
) -> tf.data.Dataset:
    """The shuffled, augmented, normalised training pipeline.

    Args:
        ds: An ``ImageDataset`` (its ``"train"`` split is used) or a dataset of
            ``(image uint8 [H, W, 3], label int [])``.
        image_size: Output ``(height, width)``.
        global_batch_size: Batch size summed over all replicas.
        augment: Preset (``none``, ``cifar``, ``imagenet``, ``strong``), a
            ``"preset,key=value"`` string or an ``AugmentConfig``.
        mean: Per-channel mean, pixels scaled to ``[0, 1]``.
        std: Per-channel std, same units.
        seed: Seed of shuffling and augmentation.
        shuffle_buffer: Shuffle buffer; default the split size capped at 10,000.
        cache: ``True`` caches decoded images in memory, a string caches to that file path,
            ``False`` does not cache (large datasets).
        input_context: From ``strategy.distribute_datasets_from_function``: shards by input
            pipeline and yields per-replica batches of
            ``input_context.get_per_replica_batch_size(global_batch_size)``, grouped so that
            each epoch is exactly ``steps_per_epoch(n, global_batch_size,
            num_input_pipelines=input_context.num_input_pipelines)`` global steps on every
            pipeline (``n`` must then be known: an ``ImageDataset`` or a dataset of known
            cardinality; otherwise a warning says pipelines may differ by a step).
        drop_remainder: Drop each epoch's last partial step (static batch shape). With
            ``False`` the last step of an epoch is partial, split as evenly as possible over
            the replicas (see ``steps_per_epoch``).
        num_classes: Needed for mixup/cutmix (one-hot labels); taken from an ``ImageDataset``.
        pca: Statistics with ``eigval``/``eigvec`` for PCA lighting; computed from the first
            4,096 training images when lighting is on and this is None.
        initial_epoch: First epoch to produce (to resume a run).
        epochs: Number of epochs to produce; None repeats forever (pass ``steps_per_epoch``
            to Keras and take that many steps per epoch from one iterator; see
            ``pipelines.steps_per_epoch``).
        num_parallel_calls: Parallelism of the maps.

    Returns:
        A dataset of ``(images float32 [B, H, W, 3], labels int64 [B])``; with mixup/cutmix
        the labels are float32 ``[B, num_classes]`` soft one-hot vectors. ``B`` is the global
        batch, or the per-replica batch with ``input_context``. Its cardinality is set when
        ``epochs`` and an exact split size are known (not for an unverified folder, whose
        ``num_examples`` is only an upper bound).

    Raises:
        ValueError: A bad argument, naming the value and what is accepted, or a batch that
            does not fit in the data.
    """
    size = _size(image_size)
    global_batch_size = _positive_int("global_batch_size", global_batch_size)
    mean = _channels("mean", mean)
    std = _channels("std", std, positive=True)
    config = get_augment_config(augment)
    if not _is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}.")
    seed = int(seed)
    if not _is_int(initial_epoch) or initial_epoch < 0:
        raise ValueError(f"initial_epoch must be an int >= 0, got {initial_epoch!r}.")
    initial_epoch = int(initial_epoch)
    if epochs is not None:
        epochs = _positive_int("epochs", epochs)
    if shuffle_buffer is not None:
        shuffle_buffer = _positive_int("shuffle_buffer", shuffle_buffer)

    source, total, exact, inferred_classes = _source(ds, "train")
    if total == 0:
        raise ValueError("The training split is empty.")
    num_classes = num_classes or inferred_classes
    if config.mixes_labels and not num_classes:
        raise ValueError("mixup/cutmix make one-hot labels: pass num_classes (or an ImageDataset).")
    if config.lighting > 0 and pca is None:
        logger.info("Computing RGB PCA for lighting from up to %d training images.", PCA_EXAMPLES)
        pca = compute_stats(source, max_examples=PCA_EXAMPLES)

    # Layout: this pipeline feeds `replicas` per-replica batches of `per_replica` examples to
    # every global step.
    num_pipelines, pipeline_id, replicas, per_replica = _layout(
        input_context, global_batch_size, "global_batch_size"
    )
    step_batch = per_replica * replicas

    steps = None  # global steps per epoch, the same on every input pipeline
    if total is not None:
        steps = steps_per_epoch(
            total,
            global_batch_size,
            num_input_pipelines=num_pipelines,
            drop_remainder=drop_remainder,
        )
        if steps == 0:  # an upper bound too small means the real size is as well
            raise ValueError(
                _batch_too_large(global_batch_size, total, exact, num_pipelines, replicas)
            )
    if num_pipelines > 1 and not (exact and total is not None):
        logger.warning(
            "The training split size is %s, so the %d input pipelines cannot be cut to the "
            "same number of steps per epoch; their epochs may differ by a step.",
            "unknown" if total is None else f"only an upper bound ({total})",
            num_pipelines,
        )
    # Cut (drop_remainder) or pad (otherwise) every pipeline's epoch to `steps` steps.
    cap = steps if num_pipelines > 1 else None

    source, shard_size = _shard(source, total, input_context)
    if cache:
        source = source.cache(cache if isinstance(cache, str) else "")
    buffer = shuffle_buffer or min(shard_size or DEFAULT_SHUFFLE_BUFFER, DEFAULT_SHUFFLE_BUFFER)

    image_spec = source.element_spec[0]
    label_spec = source.element_spec[1]
    fixed_size = image_spec.shape.is_fully_defined()
    batch_config = config
    if not fixed_size and config.crop == "resized":
        batch_config = dataclasses.replace(config, crop="none")

        def per_example(image: tf.Tensor, seed_: tf.Tensor) -> tf.Tensor:
            return random_resized_crop_single(image, seed_, size, config.scale, config.ratio)
    else:

        def per_example(image: tf.Tensor, seed_: tf.Tensor) -> tf.Tensor:
            del seed_
            out = resize_and_center_crop(image, size, 1.0)
            return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)

    def split_step(images: tf.Tensor, labels: tf.Tensor) -> tf.data.Dataset:
        """One step's examples as `replicas` consecutive per-replica batches."""
        if drop_remainder:
            return tf.data.Dataset.from_tensor_slices(
                (
                    tf.reshape(images, [replicas, per_replica, *images.shape[1:]]),
                    tf.reshape(labels, [replicas, per_replica]),
                )
            )
        # A partial last step: sizes as even as possible (a full step gives per_replica each).
        bounds = (tf.shape(images)[0] * tf.range(replicas + 1)) // replicas
        return tf.data.Dataset.range(replicas).map(
            lambda k: (
                images[bounds[k] : bounds[k + 1]],
                labels[bounds[k] : bounds[k + 1]],
            )
        )

    base_seed = tf.constant([seed, pipeline_id], tf.int64)

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        epoch_seed = fold_seed(base_seed, epoch)
        shuffle_seed = tf.random.stateless_uniform(
            [], seed=fold_seed(epoch_seed, 0), minval=None, maxval=None, dtype=tf.int64
        )
        d = _seeded_shuffle(source, buffer, shuffle_seed)
        if not fixed_size:
            example_seed = fold_seed(epoch_seed, 1)
            d = d.enumerate().map(
                lambda i, e: (per_example(e[0], fold_seed(example_seed, i)), e[1]),
                num_parallel_calls=num_parallel_calls,
                deterministic=True,
            )
        d = d.batch(step_batch, drop_remainder=drop_remainder)
        if cap is not None:
            d = d.take(cap)
        if replicas > 1:
            d = d.flat_map(split_step)
        if cap is not None and not drop_remainder:
            empty = tf.data.Dataset.from_tensors(
                (
                    tf.zeros([0, *d.element_spec[0].shape[1:]], d.element_spec[0].dtype),
                    tf.zeros([0], label_spec.dtype),
                )
            )
            d = d.concatenate(empty.repeat()).take(cap * replicas)
        batch_seed = fold_seed(epoch_seed, 2)
        return d.enumerate().map(lambda i, e: (fold_seed(batch_seed, i), e[0], e[1]))

    eigval = pca.eigval if pca is not None else None
    eigvec = pca.eigvec if pca is not None else None

    def augment_fn(seed_: tf.Tensor, images: tf.Tensor, labels: tf.Tensor):
        return augment_batch(
            images,
            labels,
            seed_,
            batch_config,
            image_size=size,
            mean=mean,
            std=std,
            num_classes=num_classes,
            eigval=eigval,
            eigvec=eigvec,
        )

    epochs_ds = tf.data.Dataset.counter(initial_epoch)
    if epochs is not None:
        epochs_ds = epochs_ds.take(epochs)
    out = epochs_ds.flat_map(one_epoch)
    out = out.map(augment_fn, num_parallel_calls=num_parallel_calls, deterministic=True)
    if epochs is not None and exact and steps is not None:
        out = out.apply(tf.data.experimental.assert_cardinality(epochs * steps * replicas))
    elif epochs is None:
        out = out.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    return out.prefetch(AUTOTUNE)


def make_eval_dataset(
    ds: ImageDataset | tf.data.Dataset,
    *,
    image_size: Sequence[int],
    batch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_fraction: float = CROP_FRACTION,
    input_context: tf.distribute.InputContext | None = None,
    split: str = "validation",
    cache: bool | str = False,
    pad: bool = False,
    num_parallel_calls: int = AUTOTUNE,
) -> tf.data.Dataset:
    """The evaluation pipeline: every example exactly once, in order, normalised.

    Images already of size ``image_size`` are used as they are. Others are resized, keeping
    their aspect ratio, so that ``image_size`` is the centre ``crop_fraction`` of the short side
    (0.875: the usual 224-of-256), then centre-cropped. Use ``crop_fraction=1.0`` to keep the
    whole short side.

    With ``pad=True`` every batch is full, with a static batch dimension (for XLA, and so that
    no replica gets an empty batch): the examples missing from the last step are padding,
    labelled ``PAD_LABEL`` (-1), with zero pixels before normalisation (images of any size
    are resized first, then padded). With ``input_context`` every input pipeline then yields
    exactly ``eval_steps(n, batch_size, num_input_pipelines=P) * R`` per-replica batches
    (``R = num_replicas_in_sync // P``; whole padding batches where a shard runs out first),
    so all workers take the same number of steps. That needs the split size ``n``: from an
    ``ImageDataset`` (an upper bound for an unverified folder is enough: the extra steps are
    padding), or a dataset of known cardinality. When it is unknown, only each pipeline's last
    step is padded to ``batch_size // P`` examples; with one input pipeline that is still
    exact, with several a warning says pipelines may differ by a step.

    Args:
        ds: An ``ImageDataset`` (its ``split`` is used) or a dataset of ``(image, label)``.
        image_size: Output ``(height, width)``.
        batch_size: The GLOBAL batch size, summed over replicas. With ``input_context`` it
            must be a multiple of ``num_replicas_in_sync``, and each yielded (per-replica)
            batch holds ``input_context.get_per_replica_batch_size(batch_size)`` examples.
        mean: Per-channel mean, pixels scaled to ``[0, 1]``.
        std: Per-channel std, same units.
        crop_fraction: Share of the resized short side kept by the centre crop.
        input_context: From ``strategy.distribute_datasets_from_function``: shards by input
            pipeline and yields per-replica batches.
        split: Split of an ``ImageDataset``.
        cache: As for ``make_train_dataset`` (off by default here).
        pad: Fill the last step with padding examples (see above). Off: the last batch may
            be smaller, and under a strategy a replica may get an empty batch.
        num_parallel_calls: Parallelism of the maps.

    Returns:
        A dataset of ``(images float32 [B, H, W, 3], labels int64 [B])``, ``B`` the global
        batch, or the per-replica batch with ``input_context``. Without ``pad`` the last
        batch may be smaller; with it ``B`` is static and padding has label -1 (leave it out
        of metrics, e.g. ``sample_weight = labels != PAD_LABEL``).

    Raises:
        ValueError: A bad argument, naming the value and what is accepted.
    """
    size = _size(image_size)
    batch_size = _positive_int("batch_size", batch_size)
    mean = _channels("mean", mean)
    std = _channels("std", std, positive=True)
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}.")
    if not isinstance(pad, bool):
        raise ValueError(f"pad must be True or False, got {pad!r}.")
    source, total, _, _ = _source(ds, split)
    num_pipelines, _, replicas, per_replica = _layout(input_context, batch_size, "batch_size")
    # With padding, batch whole steps of this pipeline, then split them into per-replica
    # batches; without, batch per replica.
    step_batch = per_replica * replicas if pad else per_replica
    steps = None  # global steps, the same on every input pipeline
    if pad and total is not None:
        steps = eval_steps(total, batch_size, num_input_pipelines=num_pipelines)
    elif pad and num_pipelines > 1:
        logger.warning(
            "The %s split size is unknown, so the %d input pipelines cannot be padded to the "
            "same number of steps; they may differ by a step (a multi-worker evaluation may "
            "then wait forever). Pass an ImageDataset or a dataset of known cardinality.",
            split,
            num_pipelines,
        )

    source, _ = _shard(source, total, input_context)
    if cache:
        source = source.cache(cache if isinstance(cache, str) else "")
    shape = source.element_spec[0].shape
    labels_int64 = source.map(lambda x, y: (x, tf.cast(y, tf.int64)))
    if shape.is_fully_defined():
        out = labels_int64.batch(step_batch)
        if tuple(shape[:2]) != size:
            out = out.map(
                lambda x, y: (resize_and_center_crop(x, size, crop_fraction), y),
                num_parallel_calls=num_parallel_calls,
                deterministic=True,
            )
    else:
        out = labels_int64.map(
            lambda x, y: (resize_and_center_crop(x, size, crop_fraction), y),
            num_parallel_calls=num_parallel_calls,
            deterministic=True,
        ).batch(step_batch)

    if pad:
        image_spec = out.element_spec[0]
        pixel_shape = image_spec.shape[1:]

        def padding(count: tf.Tensor | int) -> tuple[tf.Tensor, tf.Tensor]:
            return (
                tf.zeros([count, *pixel_shape], image_spec.dtype),
                tf.fill([count], tf.constant(PAD_LABEL, tf.int64)),
            )

        def fill(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            extra_images, extra_labels = padding(step_batch - tf.shape(labels)[0])
            return (
                tf.ensure_shape(tf.concat([images, extra_images], 0), [step_batch, *pixel_shape]),
                tf.ensure_shape(tf.concat([labels, extra_labels], 0), [step_batch]),
            )

        out = out.map(fill)
        if steps is not None:  # whole padding steps where this shard runs out first
            blank = tf.data.Dataset.from_tensors(padding(step_batch)).repeat()
            out = out.concatenate(blank).take(steps)
    out = out.map(
        lambda x, y: (normalize(x, mean, std), y),
        num_parallel_calls=num_parallel_calls,
        deterministic=True,
    )
    if pad and replicas > 1:
        out = out.flat_map(
            lambda x, y: tf.data.Dataset.from_tensor_slices(
                (
                    tf.reshape(x, [replicas, per_replica, *x.shape[1:]]),
                    tf.reshape(y, [replicas, per_replica]),
                )
            )
        )
    if steps is not None:
        out = out.apply(tf.data.experimental.assert_cardinality(steps * replicas))
    return out.prefetch(AUTOTUNE)
