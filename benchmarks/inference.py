"""Inference: batch-1 latency (median, p99) and batch-64 throughput of the exported model,
served four ways, with Keras as the baseline.

One model (``resnet20`` at 32x32 for the CPU suite, ``resnet50`` at 224x224 for the GPU suite,
random weights) is exported with `zoo.export.export` (SavedModel and ``model.onnx``) and timed
side by side in one process:

* ``SavedModel serving_default``: ``tf.saved_model.load(...).signatures["serving_default"]``
  on float 0-255 pixels (normalisation, softmax and top-1 inside the graph);
* ``SavedModel serving_bytes``: the same graph fed JPEG bytes, decoded, resized and
  centre-cropped inside the graph;
* ``ONNX Runtime``: ``model.onnx`` in an ``InferenceSession`` with every graph optimisation on;
* ``Keras predict``: ``model.predict(x, verbose=0)`` on the exported Keras model, the baseline;
* ``Keras model call (tf.function)``: ``tf.function(lambda x: model(x, training=False))``, what
  a careful Keras user writes for small batches.

Every contender takes host (NumPy) inputs and hands back host results. Batch-1 latency is timed
call by call in interleaved rounds (each round a block of calls per contender, the order
rotating, a first round of warm-up not counted); the per-call times are pooled per contender
for the median and p99. Batch-64 throughput is images per second over interleaved rounds.

The goal: ONNX Runtime at least 1.5x the SavedModel (``serving_default``) at batch 1, as the
ratio of their batch-1 medians.

Run alone: ``python -m benchmarks.inference [--smoke] [--suite cpu|gpu]``.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import harness
from benchmarks.harness import Goal, Section, Spread, Table

if TYPE_CHECKING:
    import keras

GOAL_SPEEDUP = 1.5
BATCH = 64
MEAN = (0.485, 0.456, 0.406)  # any normalisation will do: the weights are random
STD = (0.229, 0.224, 0.225)
SAVED, BYTES, ORT = "SavedModel serving_default", "SavedModel serving_bytes", "ONNX Runtime"
PREDICT, CALL = "Keras predict", "Keras model call (tf.function)"


@dataclasses.dataclass(frozen=True)
class Setup:
    """The model and how much is timed."""

    model: str
    width: float
    size: int  # input height and width
    classes: int
    latency_rounds: int  # counted rounds of batch-1 calls (one more of warm-up)
    latency_calls: int  # batch-1 calls per contender per round
    throughput_rounds: int  # counted rounds of batch-64 calls (one more of warm-up)
    throughput_calls: int  # batch-64 calls per contender per round


def _setup(ctx: harness.Context) -> tuple[str, float, int]:
    model, size = ("resnet50", 224) if ctx.suite == "gpu" else ("resnet20", 32)
    return model, ctx.pick(1.0, 0.25), size


# Inputs ----------------------------------------------------------------------------------------


def synthetic_jpegs(count: int, size: int, seed: int = 0) -> list[bytes]:
    """``count`` JPEG images of ``size`` x ``size``: smooth colour blobs with a little noise
    (random low-resolution pixels upscaled), so they compress like photographs, not like noise."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(count, 6, 6, 3)).astype("float32")
    smooth = tf.image.resize(coarse, (size, size), method="bicubic").numpy()
    pixels = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype("uint8")
    return [tf.io.encode_jpeg(p, quality=90).numpy() for p in pixels]


def decoded(jpegs: list[bytes], size: int) -> np.ndarray:
    """The JPEGs as ``serving_bytes`` prepares them: float32 0-255 ``[n, size, size, 3]``."""
    from zoo.export import decode_and_crop

    return np.stack([decode_and_crop(j, (size, size)).numpy() for j in jpegs]).astype("float32")


def normalised(images: np.ndarray) -> np.ndarray:
    """0-255 pixels normalised as the exported graph does it (the Keras model has no
    normalisation layer: the export puts it in the serving graph)."""
    mean, std = np.array(MEAN, "float32"), np.array(STD, "float32")
    return ((images / 255.0 - mean) / std).astype("float32")


# Timing ----------------------------------------------------------------------------------------


def latency(
    calls: dict[str, Callable[[], Any]], *, rounds: int, per_round: int
) -> dict[str, dict[str, Any]]:
    """Per-call milliseconds of each contender: blocks of ``per_round`` calls in interleaved
    rounds (the first a warm-up), pooled per contender. Returns p50, p99 and the spread of the
    per-round medians."""
    blocks: dict[str, list[list[float]]] = {name: [] for name in calls}

    def block(name: str) -> Callable[[], float]:
        call = calls[name]

        def timed() -> float:
            times = []
            for _ in range(per_round):
                start = time.perf_counter()
                call()
                times.append((time.perf_counter() - start) * 1e3)
            blocks[name].append(times)
            return statistics.median(times)

        return timed

    rounds_ms = harness.interleave({name: block(name) for name in calls}, rounds=rounds)
    out = {}
    for name, recorded in blocks.items():
        pooled = np.array([t for times in recorded[1:] for t in times])  # [0]: the warm-up
        out[name] = {
            "p50_ms": float(np.median(pooled)),
            "p99_ms": float(np.percentile(pooled, 99)),
            "mean_ms": float(pooled.mean()),
            "max_ms": float(pooled.max()),
            "calls": int(pooled.size),
            "round_p50_ms": dataclasses.asdict(rounds_ms[name]),
        }
    return out


def throughput(
    calls: dict[str, Callable[[], Any]], *, rounds: int, per_round: int, batch: int
) -> dict[str, Spread]:
    """Images per second of each contender over ``per_round`` batch calls per round."""

    def repeated(call: Callable[[], Any]) -> Callable[[], None]:
        def work() -> None:
            for _ in range(per_round):
                call()

        return work

    return harness.interleave(
        {name: harness.rate(repeated(call), batch * per_round) for name, call in calls.items()},
        rounds=rounds,
    )


# Contenders ------------------------------------------------------------------------------------


def ort_session(path: Path, gpu: bool) -> Any:
    """An ONNX Runtime session with every graph optimisation on (CUDA first where the suite
    is the GPU one and this ONNX Runtime has it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def contenders(
    export_dir: Path, model: keras.Model, session: Any
) -> dict[str, Callable[[np.ndarray | list[bytes]], np.ndarray]]:
    """Each contender as a function of its batch that returns the model's outputs on the
    host: probabilities for the exported graphs (fed 0-255 pixels, or JPEG bytes for
    ``serving_bytes``), the model's own outputs for Keras (fed `normalised` pixels)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_dir))
    serving = loaded.signatures["serving_default"]
    serving_bytes = loaded.signatures["serving_bytes"]
    names = [o.name for o in session.get_outputs()]
    probabilities = names.index("probabilities")
    call = tf.function(lambda x: model(x, training=False))

    return {
        SAVED: lambda x: serving(images=tf.constant(x))["probabilities"].numpy(),
        BYTES: lambda b: serving_bytes(image_bytes=tf.constant(b))["probabilities"].numpy(),
        # Every output, as the signatures compute every output.
        ORT: lambda x: session.run(None, {"images": x})[probabilities],
        PREDICT: lambda x: model.predict(x, batch_size=len(x), verbose=0),
        CALL: lambda x: call(x).numpy(),
    }


# The section -----------------------------------------------------------------------------------


def export_model(ctx: harness.Context, name: str, width: float, size: int) -> tuple[Any, Path]:
    """A randomly initialised model exported through the public API: ``(source, folder)``."""
    import zoo
    from zoo.export import Source, export

    model = zoo.create_model(name, input_shape=(size, size, 3), width=width)
    classes = int(model.outputs[0].shape[-1])
    source = Source(
        model=model,
        model_name=name,
        class_names=[str(i) for i in range(classes)],
        input_shape=(size, size, 3),
        mean=list(MEAN),
        std=list(STD),
    )
    target = export(source, out=ctx.scratch("inference"), name=f"bench-{name}", overwrite=True)
    return source, target


def thread_settings(session: Any) -> dict[str, Any]:
    import onnxruntime as ort
    import tensorflow as tf

    options = ort.SessionOptions()
    return {
        "logical_cores": harness.machine()["cores"],
        "tensorflow_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tensorflow_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "onnxruntime_intra_op": options.intra_op_num_threads,
        "onnxruntime_inter_op": options.inter_op_num_threads,
        "onnxruntime_providers": session.get_providers(),
    }


def run(ctx: harness.Context) -> Section:
    import tensorflow as tf

    from pipelines.resize import CROP_FRACTION
    from zoo.export import model_output, read_metadata

    section = Section("inference", "Inference: latency and throughput of the exported model")
    name, width, size = _setup(ctx)
    started = time.perf_counter()
    source, target = export_model(ctx, name, width, size)
    export_seconds = time.perf_counter() - started
    gpu = ctx.suite == "gpu"
    session = ort_session(target / "model.onnx", gpu)
    setup = Setup(
        model=name,
        width=width,
        size=size,
        classes=len(source.class_names),
        latency_rounds=ctx.pick(4, 2),
        latency_calls=ctx.pick(50, 5),
        throughput_rounds=ctx.pick(5, 2),
        throughput_calls=ctx.pick(10 if gpu else 3, 1),
    )

    # The same images for every contender: JPEGs a little larger than the input (as the
    # evaluation crop expects), and their decoded, cropped pixels for the float contenders.
    encoded_size = round(size / CROP_FRACTION)
    jpegs = synthetic_jpegs(BATCH, encoded_size)
    images = decoded(jpegs, size)
    one, one_jpeg = images[:1].copy(), jpegs[:1]
    fns = contenders(target, source.model, session)
    keras_images = normalised(images)
    keras_one = keras_images[:1].copy()
    inputs_1 = {SAVED: one, BYTES: one_jpeg, ORT: one, PREDICT: keras_one, CALL: keras_one}
    inputs_64 = {
        SAVED: images,
        BYTES: jpegs,
        ORT: images,
        PREDICT: keras_images,
        CALL: keras_images,
    }

    # Do the outputs agree on the same batch?
    saved = fns[SAVED](images)
    keras_out = fns[PREDICT](keras_images)
    if model_output(source.model, source.input_shape)["kind"] == "logits":
        keras_out = tf.nn.softmax(keras_out, axis=-1).numpy()
    agreement = {
        "onnx_vs_savedmodel": float(np.abs(fns[ORT](images) - saved).max()),
        "serving_bytes_vs_serving_default": float(np.abs(fns[BYTES](jpegs) - saved).max()),
        "keras_vs_savedmodel": float(np.abs(keras_out - saved).max()),
    }

    lat = latency(
        {n: (lambda f=f, x=inputs_1[n]: f(x)) for n, f in fns.items()},
        rounds=setup.latency_rounds,
        per_round=setup.latency_calls,
    )
    rates = throughput(
        {n: (lambda f=f, x=inputs_64[n]: f(x)) for n, f in fns.items()},
        rounds=setup.throughput_rounds,
        per_round=setup.throughput_calls,
        batch=BATCH,
    )

    metadata = read_metadata(target)
    threads = thread_settings(session)
    speedup = lat[SAVED]["p50_ms"] / lat[ORT]["p50_ms"]
    section.data = {
        "setup": dataclasses.asdict(setup),
        "device": "GPU" if tf.config.list_logical_devices("GPU") else "CPU",
        "export_seconds": export_seconds,
        "export_parity": metadata["parity"],
        "jpeg": {
            "size": encoded_size,
            "mean_bytes": float(np.mean([len(j) for j in jpegs])),
            "quality": 90,
        },
        "threads": threads,
        "latency_batch1": lat,
        "throughput_batch64_images_per_second": {
            n: dataclasses.asdict(s) for n, s in rates.items()
        },
        "max_abs_diff_probabilities": agreement,
        "onnx_vs_savedmodel_batch1_p50_speedup": speedup,
    }

    rows = []
    for n in fns:
        r = lat[n]["round_p50_ms"]
        rows.append(
            [
                n,
                f"{lat[n]['p50_ms']:.2f} ({r['min']:.2f}-{r['max']:.2f})",
                f"{lat[n]['p99_ms']:.2f}",
                rates[n].text(0),
                f"{lat[SAVED]['p50_ms'] / lat[n]['p50_ms']:.2f}x",
                f"{harness.ratio(rates[n], rates[SAVED]):.2f}x",
            ]
        )
    calls = setup.latency_rounds * setup.latency_calls
    section.tables.append(
        Table(
            f"**Inference** (`{name}` width {width}, {size}x{size}, {setup.classes} classes, "
            f"random weights, float32, {section.data['device']}): batch-1 latency over {calls} "
            f"calls per contender ({setup.latency_rounds} interleaved rounds of "
            f"{setup.latency_calls}, pooled; in brackets the min-max of the round medians); "
            f"batch-{BATCH} images/s, median (min-max) over {setup.throughput_rounds} rounds of "
            f"{setup.throughput_calls} calls; one warm-up round of each not counted",
            [
                "contender",
                "batch-1 p50 ms (rounds)",
                "batch-1 p99 ms",
                f"batch-{BATCH} images/s",
                "batch-1 p50 speed-up vs SavedModel",
                f"batch-{BATCH} throughput vs SavedModel",
            ],
            rows,
        )
    )
    ort_threads = threads["onnxruntime_intra_op"] or "default (one per physical core)"
    tf_threads = threads["tensorflow_intra_op"] or "default (one per logical core)"
    section.notes += [
        f"*{SAVED}*: the exported SavedModel loaded with `tf.saved_model.load` and called "
        "through its signature with float32 0-255 pixels (`images=`); normalisation, softmax "
        f"and top-1 run in the graph. *{BYTES}*: the same graph fed `image_bytes=` JPEGs "
        f"({encoded_size}x{encoded_size}, quality 90, "
        f"{section.data['jpeg']['mean_bytes']:,.0f} bytes on average), so its times include "
        "JPEG decoding, the antialiased resize and the centre crop (one image at a time, "
        f"`tf.map_fn`). *{ORT}*: `model.onnx` (converted by tf2onnx from the same function as "
        "`serving_default`) in an `InferenceSession` with `ORT_ENABLE_ALL` on "
        f"{', '.join(threads['onnxruntime_providers'])}, all outputs fetched. *{PREDICT}*: "
        f"`model.predict(x, batch_size=len(x), verbose=0)` on the Keras model that was exported "
        f"(batch size given so that batch {BATCH} is one batch; Keras' default is 32). "
        f"*{CALL}*: `tf.function(lambda x: model(x, training=False))`. The Keras contenders "
        "get already normalised pixels and output the model's logits (no softmax, no top-1).",
        "Every contender takes NumPy inputs and returns NumPy outputs, so each time includes "
        "the copies in and out. The float images are the JPEGs decoded and cropped as "
        "`serving_bytes` does it (smooth synthetic colour images: the weights are random, so "
        "content does not matter, but JPEG size and decoding time do).",
        f"Threads: TensorFlow intra-op {tf_threads}, inter-op "
        f"{threads['tensorflow_inter_op'] or 'default'}; ONNX Runtime intra-op {ort_threads}, "
        f"inter-op {threads['onnxruntime_inter_op'] or 'default'} (both libraries' defaults, "
        f"not tuned; {threads['logical_cores']} logical cores). Both keep their thread pools "
        "in one process; the interleaving shares any interference between them alike.",
        f"Outputs agree: largest |difference| in probabilities on the batch of {BATCH}: ONNX "
        f"Runtime vs SavedModel {agreement['onnx_vs_savedmodel']:.2g}, serving_bytes vs "
        f"serving_default {agreement['serving_bytes_vs_serving_default']:.2g}, Keras vs "
        f"SavedModel {agreement['keras_vs_savedmodel']:.2g}. The export itself (SavedModel and "
        f"ONNX conversion with its checks) took {export_seconds:.0f} s.",
    ]
    if gpu and "CUDAExecutionProvider" not in threads["onnxruntime_providers"]:
        section.notes.append(
            "ONNX Runtime ran on the CPU while TensorFlow had the GPU: this ONNX Runtime has no "
            "CUDA provider (`pip install onnxruntime-gpu` adds it), so its figures and the goal "
            "compare a CPU against a GPU."
        )
    section.goals.append(
        Goal(
            f"ONNX Runtime >= {GOAL_SPEEDUP}x the SavedModel at batch 1 (`{name}` width {width})",
            f"{speedup:.2f}x (batch-1 median {lat[ORT]['p50_ms']:.2f} ms against "
            f"{lat[SAVED]['p50_ms']:.2f} ms for serving_default)",
            speedup >= GOAL_SPEEDUP,
        )
    )
    return section


def main(argv: list[str] | None = None) -> int:
    """Runs this section alone and prints its tables, notes and goals."""
    harness.run_alone("python -m benchmarks.inference", __doc__, run, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
