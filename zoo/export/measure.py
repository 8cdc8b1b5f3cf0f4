"""What every format of an export is worth, measured rather than assumed.

- The images: the run's own data through the project's pipeline, prepared as ``serving_bytes``
  prepares an image (the evaluation crop, raw 0-255 pixels). Evaluation images come from a
  split with labels (``validation`` by default); calibration images (int8 ranges) are the
  first un-augmented images of the ``train`` split, whose order the sources fix and shuffle.
- Per format: top-1 accuracy, agreement of its top-1 with the float32 SavedModel's, the
  largest difference in any probability, batch-1 latency (median) and batch-64 throughput,
  every format in one process, one after another, each runtime given the same CPU threads.
- `check_drop`: a format whose accuracy falls more than ``max_drop`` points below the
  SavedModel's fails the export.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.export.errors import ExportError

if TYPE_CHECKING:
    from zoo.export.runners import Runner
    from zoo.export.source import Source

EVAL_SPLIT = "validation"
EVAL_IMAGES = 1000  # at most; all of a smaller split
# Measured (docs/exporting.md): on digits, resnet20 and vgg11_bn int8 were within 1 point
# of float32 from 100 images on; more costs conversion time for no accuracy.
CALIBRATION_IMAGES = 200
MAX_ACCURACY_DROP = 1.0  # points of top-1 accuracy below the float32 SavedModel
BATCH = 64  # evaluation and throughput batch
SECONDS = 1.0  # each timing runs at least this long (after a warm-up call)


@dataclass(frozen=True)
class Images:
    """Raw-pixel images (float32 ``[N, H, W, 3]``, 0-255), their labels, and where from."""

    pixels: np.ndarray
    labels: np.ndarray | None
    origin: str  # e.g. "digits:validation (180 images)"

    def __len__(self) -> int:
        return len(self.pixels)


def run_images(source: Source, split: str, limit: int, flag: str = "--eval-split") -> Images:
    """The first ``limit`` images of ``split`` of the source's dataset, with labels.

    Raises:
        ValueError: the source names no dataset, the dataset cannot be loaded (why), or it
            has no such split (naming ``flag`` and the splits it has).
    """
    import tensorflow as tf

    import pipelines
    from pipelines.resize import CROP_FRACTION, resize_and_center_crop
    from zoo.training.data import load_options

    if not source.dataset:
        raise ValueError(
            "the source names no dataset: pass --data DATASET (e.g. folder:PATH) to measure and "
            "calibrate on labelled images."
        )
    config = source.config or {}
    try:
        options = load_options(source.dataset, config.get("data_dir"), config.get("label_regex"))
        data = pipelines.load(source.dataset, **options)
    except (ValueError, OSError, RuntimeError, tf.errors.OpError) as err:
        raise ValueError(f"cannot load {source.dataset} to measure the export: {err}") from None
    if split not in data.splits:
        raise ValueError(
            f"{flag} {split}: {source.dataset} has no such split; it has {', '.join(data.splits)}."
        )
    height, width, _ = source.input_shape
    batches = (
        data.splits[split]
        .take(limit)
        .map(
            lambda x, y: (
                resize_and_center_crop(tf.cast(x, tf.float32), (height, width), CROP_FRACTION),
                y,
            )
        )
        .batch(BATCH)
    )
    pixels, labels = [], []
    for x, y in batches.as_numpy_iterator():
        pixels.append(x)
        labels.append(y)
    if not pixels:
        raise ValueError(f"{flag} {split}: {source.dataset}'s {split} split is empty.")
    pixels_all = np.concatenate(pixels).astype(np.float32)
    return Images(
        pixels_all,
        np.concatenate(labels).astype(np.int64),
        f"{source.dataset}:{split} ({len(pixels_all)} images)",
    )


def probabilities(runner: Runner, images: np.ndarray) -> np.ndarray:
    """``runner``'s probabilities for ``images``, in batches of `BATCH`."""
    return np.concatenate(
        [runner.probabilities(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]
    )


def accuracy_figures(
    probs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None
) -> dict[str, Any]:
    """Top-1 accuracy against ``labels``; agreement of top-1 and the largest probability
    difference against ``reference`` (the SavedModel's probabilities)."""
    top1 = probs.argmax(axis=-1)
    figures: dict[str, Any] = {
        "accuracy": None if labels is None else float((top1 == labels).mean())
    }
    if reference is not None:
        figures["agreement"] = float((top1 == reference.argmax(axis=-1)).mean())
        figures["max_probability_diff"] = float(np.abs(probs - reference).max())
    return figures


def speed(runner: Runner, images: np.ndarray, seconds: float = SECONDS) -> dict[str, float]:
    """Batch-1 latency (median milliseconds) and batch-64 throughput (images/s): each after a
    warm-up call, for at least ``seconds`` (batch 1: at least 5 calls)."""
    one = images[:1]
    many = np.resize(images, (BATCH, *images.shape[1:])).astype(np.float32)
    runner.probabilities(one)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - started < seconds and len(times) < 1000):
        t = time.perf_counter()
        runner.probabilities(one)
        times.append(time.perf_counter() - t)
    runner.probabilities(many)
    calls = 0
    started = time.perf_counter()
    while calls < 1 or time.perf_counter() - started < seconds:
        runner.probabilities(many)
        calls += 1
    elapsed = time.perf_counter() - started
    return {
        "latency_ms_batch1": 1000 * statistics.median(times),
        "images_per_s_batch64": BATCH * calls / elapsed,
    }


def check_drop(figures: dict[str, dict[str, Any]], max_drop: float, origin: str) -> None:
    """Raise `ExportError` for the first format whose accuracy is more than ``max_drop``
    points below the SavedModel's (``figures`` by format name, ``savedmodel`` among them)."""
    base = figures.get("savedmodel", {}).get("accuracy")
    if base is None:
        return
    for name, measured in figures.items():
        accuracy = measured.get("accuracy")
        if accuracy is None:
            continue
        drop = 100 * (base - accuracy)
        if drop > max_drop:
            raise ExportError(
                f"{name}: top-1 accuracy {accuracy:.3f} on {origin} is {drop:.1f} points below "
                f"the float32 SavedModel's {base:.3f} (--max-accuracy-drop {max_drop:g}); "
                "nothing was exported. Calibrate on more images (--calibration-images), or "
                f"leave {name} out of --formats."
            )


def machine() -> dict[str, Any]:
    """The CPU the figures were measured on: its name, the threads given to each runtime, and
    the features that matter for int8 and float16 (VNNI, AMX, AVX-512, F16C)."""
    from zoo.export.runners import cpu_threads
    from zoo.training.runtime import cpu_flags, cpu_name

    flags = cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "f16c")
    return {
        "cpu": cpu_name(),
        "threads": cpu_threads(),
        "features": [f for f in wanted if f in flags],
    }
