"""``python -m zoo.export``: a trained model as a SavedModel for serving and an ONNX file, checked.

Layout (TF Serving's): ``<out>/<name>/<version>/`` holds the SavedModel, ``model.onnx`` and
``metadata.json``. The version is written to a hidden temporary directory and renamed into
place, so a failure or a kill never leaves a partial version (TF Serving ignores names that are
not integers).

Signatures, callable without this project installed:

- ``serving_default``: ``images`` float32 ``[batch, H, W, 3]`` with raw 0-255 pixels; the
  normalisation is inside the graph. Outputs ``probabilities``, ``logits`` (float32) and
  ``classes`` (int64, top-1).
- ``serving_bytes``: ``image_bytes`` string ``[batch]`` of encoded JPEG/PNG/BMP/GIF images,
  decoded, resized and centre-cropped in the graph as the evaluation pipeline does.

A model that ends in softmax (a ``Softmax`` layer, or a layer with ``activation="softmax"``)
serves its own outputs as ``probabilities`` and their logarithm as ``logits``; one that ends in
logits (no activation) serves the softmax of its outputs. Any other output activation is
refused. ``metadata.json`` says which (``model_output``).

The ONNX file is converted with tf2onnx from the same function as ``serving_default`` (dynamic
batch, input ``images``, outputs ``probabilities``, ``logits``, ``classes``), checked with
``onnx.checker`` and run in ONNX Runtime against the saved SavedModel on real images; a largest
difference in probabilities above 1e-4 fails the export.

Concurrent exports of one name: a version is claimed under an exclusive ``flock`` of the name
folder, so two exports never take one version (without ``--version`` the second takes the next
number; with the same ``--version`` the second is refused unless ``--overwrite``). Each export
holds a ``flock`` on its temporary folder while it writes it; the next export of that name
removes temporary folders whose lock is free, which are those of killed exports.
"""

from __future__ import annotations

if __name__ == "__main__":  # quiet TensorFlow's start before the imports below load it
    from zoo.cli import start_tensorflow_for_main

    start_tensorflow_for_main()

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo.cli import add_verbose_flag, os_error_line
from zoo.training.rundir import RunDirectory

PARITY_TOLERANCE = 1e-4
DEFAULT_OPSET = 17
MIN_OPSET = 6  # tf2onnx's README: opsets 14-18 are tested, 6-13 "should work"
CROP_FRACTION = 0.875  # as pipelines.make_eval_dataset, for images not already at the input size
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PARITY_IMAGES = 32
TEMP_PREFIX = ".tmp-"  # a version being written: ``.tmp-<pid>-<random>``
OLD_PREFIX = ".old-"  # a version being replaced (--overwrite): ``.old-<version>-<random>``
LOCK_NAME = ".lock"  # in a name folder (claims) and in a temporary folder (its export lives)
PROBABILITIES, LOGITS = "probabilities", "logits"
# The logits served for a model that outputs probabilities: log(p), with p = 0 clamped to
# float32's smallest normal number so that no -inf reaches a JSON client (log: -87.3).
SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)


class ExportError(RuntimeError):
    """The export failed a check; nothing was written in place."""


@dataclass
class Source:
    """A float32 Keras model and what serving it needs."""

    model: keras.Model
    model_name: str
    class_names: list[str]
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    dataset: str | None = None
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    checkpoint: str | None = None


def check_name(name: str) -> str:
    """A model name that is one safe path component."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise ValueError(
            f"Invalid export name {name!r}: use letters, digits, '.', '_' and '-', starting with "
            "a letter or digit, no path separators or '..'."
        )
    return name


def check_channels(name: str, values: Any, *, positive: bool = False) -> list[float]:
    """Three finite per-channel values (``positive``: each > 0), else a `ValueError` naming
    ``name`` (a flag such as ``--std`` from the command line)."""
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        out = []
    if len(out) != 3 or not all(math.isfinite(v) for v in out) or (positive and min(out) <= 0):
        shown = " ".join(map(str, values)) if isinstance(values, (list, tuple)) else repr(values)
        need = "3 finite values > 0" if positive else "3 finite values"
        raise ValueError(f"{name} must be {need} (per channel, pixels in [0, 1]), got {shown}.")
    return out


def max_opset() -> int:
    """The newest ONNX opset that the installed tf2onnx converts to."""
    from tf2onnx import constants

    return max(constants.OPSET_TO_IR_VERSION)


def check_opset(opset: Any, name: str = "opset") -> int:
    """An opset tf2onnx can convert to, else a `ValueError` naming ``name`` (``--opset``)."""
    top = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ValueError(
            f"{name} {opset} is not supported: tf2onnx converts opsets {MIN_OPSET} to {top} "
            f"(default {DEFAULT_OPSET}); choose one of those, or skip ONNX with --no-onnx."
        )
    return opset


def _reason(err: BaseException) -> str:
    """An exception as a short one-line reason."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def load_source(
    path: str | os.PathLike[str],
    *,
    checkpoint: str = "best",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> Source:
    """Read a run directory (its best or last checkpoint) or a ``.keras`` file.

    A run directory's model is rebuilt in float32, so a model trained under mixed precision
    serves float32. A ``.keras`` file carries no normalisation: pass ``mean`` and ``std``
    (pixels in [0, 1]); class names default to the class indices.

    Raises:
        FileNotFoundError: no such run directory or file, or a run without checkpoints.
        ValueError: bad arguments, or a damaged file (named in the message).
    """
    path = Path(path)
    if path.is_dir():
        return _load_run(path, checkpoint)
    if path.suffix == ".keras" and path.is_file():
        if mean is None or std is None:
            raise ValueError(
                f"{path} carries no normalisation: pass mean and std "
                "(per channel, pixels in [0, 1])."
            )
        mean, std = check_channels("mean", mean), check_channels("std", std, positive=True)
        model = _load_keras(path)
        try:
            shape = tuple(int(d) for d in model.inputs[0].shape[1:])
            classes = int(model.outputs[0].shape[-1])
            if len(model.inputs) != 1 or len(shape) != 3 or shape[2] != 3:
                raise ValueError
        except (AttributeError, IndexError, TypeError, ValueError):
            raise ValueError(
                f"{path}: the model needs one image input of a fixed size (height, width, 3) "
                "and one output of class scores."
            ) from None
        if class_names is not None and list(class_names) == ["imagenet"]:
            from zoo.weights import imagenet_class_names

            class_names = imagenet_class_names()
        names = list(class_names) if class_names else [str(i) for i in range(classes)]
        if len(names) != classes:
            raise ValueError(f"{len(names)} class names for a model with {classes} classes.")
        return Source(
            model=model,
            model_name=model.name,
            class_names=names,
            input_shape=shape,
            mean=mean,
            std=std,
        )
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a run directory or a .keras file.")
    raise FileNotFoundError(f"{path} is neither a run directory nor a .keras file.")


def _load_keras(path: Path) -> keras.Model:
    """A ``.keras`` file's model, or a `ValueError` naming the file."""
    if not zipfile.is_zipfile(path):
        reason = "not a zip archive"
    else:
        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as err:  # Keras raises many kinds for a bad archive
            reason = _reason(err)
    raise ValueError(
        f"{path} is not a readable .keras model ({reason}); pass a file saved with "
        "model.save('name.keras')."
    )


def _load_run(path: Path, checkpoint: str) -> Source:
    """A run directory's model, its data description and results."""
    from zoo.config import read_json_file

    if not (path / "config.json").is_file() or not (path / "data.json").is_file():
        raise FileNotFoundError(f"{path} is not a run directory (config.json, data.json).")
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}.")
    run = RunDirectory.open(path)
    config = run.read_config()  # a damaged config.json is a ValueError naming it
    data_file = path / "data.json"
    data = read_json_file(data_file, "the run's classes, input shape and normalisation")
    try:
        class_names = [str(name) for name in data["class_names"]]
        input_shape = tuple(int(d) for d in data["input_shape"])
        mean = check_channels("mean", data["mean"])
        std = check_channels("std", data["std"], positive=True)
        if len(input_shape) != 3 or not class_names:
            raise ValueError("input_shape must be (height, width, 3) and class_names non-empty")
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{data_file} is damaged ({_reason(err)}); restore it.") from None
    metrics_file = path / "metrics.json"
    metrics = read_json_file(metrics_file, "the run's results") if metrics_file.is_file() else None
    model, found = run.load_model(checkpoint)
    return Source(
        model=model,
        model_name=config.model,
        class_names=class_names,
        input_shape=input_shape,
        mean=mean,
        std=std,
        dataset=config.dataset,
        config=read_json_file(path / "config.json", "a run's configuration"),
        metrics=metrics,
        checkpoint=found,
    )


def _output_layer(model: keras.Model) -> Any:
    """The layer that makes a Sequential or functional model's only output (None if unknown)."""
    if isinstance(model, keras.Sequential):
        layer = model.layers[-1] if model.layers else None
    else:
        names = getattr(model, "output_names", None)
        if not names or len(names) != 1:
            return None
        try:
            layer = model.get_layer(names[0])
        except ValueError:
            return None
    if isinstance(layer, keras.Model) and layer is not model:
        return _output_layer(layer) or layer
    return layer


def model_output(model: keras.Model, input_shape: Sequence[int]) -> dict[str, str]:
    """What a classifier outputs: ``{"kind": "probabilities" | "logits", "found": how}``.

    A ``Softmax`` layer or a last layer with ``activation="softmax"`` outputs probabilities; no
    activation (``linear``) or ``log_softmax`` outputs logits (softmax of log-probabilities
    is the probabilities). Other activations (sigmoid, relu, ...) raise `ValueError`: a
    softmax over them would not be the model's probabilities. When the last layer is not
    known (a subclassed model, a ``Lambda``, pooling), the model is run on 8 random inputs:
    rows of non-negative numbers that sum to 1 are probabilities, anything else logits.
    """
    layer = _output_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return {"kind": PROBABILITIES, "found": f"layer {layer.name!r} is a Softmax layer"}
    activation = getattr(layer, "activation", None) if layer is not None else None
    if activation is not None:
        name = activation if isinstance(activation, str) else getattr(activation, "__name__", "")
        found = f"layer {layer.name!r} ({type(layer).__name__}) has activation {name!r}"
        if name == "softmax":
            return {"kind": PROBABILITIES, "found": found}
        if name in ("linear", "log_softmax"):
            return {"kind": LOGITS, "found": found}
        raise ValueError(
            f"model {model.name!r}: its output {found}; the export serves classifiers that end "
            "in logits (no activation) or in softmax: rebuild the last layer without an "
            "activation or with softmax."
        )
    inputs = np.random.default_rng(0).normal(size=(8, *input_shape)).astype("float32")
    outputs = np.asarray(model(inputs, training=False), dtype="float64")
    sums = outputs.sum(axis=-1)
    probabilities = bool(
        np.isfinite(outputs).all() and outputs.min() >= 0 and np.abs(sums - 1).max() < 1e-4
    )
    return {
        "kind": PROBABILITIES if probabilities else LOGITS,
        "found": "the outputs on random inputs "
        + ("are rows of probabilities" if probabilities else "are not probabilities"),
    }


def decode_and_crop(
    image_bytes: tf.Tensor, size: Sequence[int], crop_fraction: float = CROP_FRACTION
) -> tf.Tensor:
    """One encoded image to float32 ``[H, W, 3]`` 0-255 pixels, as the evaluation pipeline
    prepares it (grey and RGBA become RGB; GIF: first frame)."""
    from pipelines.augment import resize_and_center_crop

    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return resize_and_center_crop(tf.cast(image, tf.float32), size, crop_fraction)


class ServingModule(tf.Module):
    """The graph that is saved: normalisation, the model and the outputs. ``output`` is what
    the model outputs, ``"probabilities"`` or ``"logits"`` (default: `model_output`'s answer)."""

    def __init__(
        self, source: Source, crop_fraction: float = CROP_FRACTION, output: str | None = None
    ) -> None:
        super().__init__()
        self.model = source.model
        self._mean, self._std = list(source.mean), list(source.std)
        height, width, channels = source.input_shape
        self._size = (height, width)
        self._crop_fraction = crop_fraction
        self._output = output or model_output(source.model, source.input_shape)["kind"]
        if self._output not in (PROBABILITIES, LOGITS):
            raise ValueError(f"output must be {PROBABILITIES!r} or {LOGITS!r}, got {output!r}.")
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None, height, width, channels], tf.float32, name="images")
            ],
        )
        self.serve_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        )

    def _serve(self, images):
        # Constants are made here, not captured, so the ONNX graph has one input.
        mean = tf.constant(self._mean, tf.float32)
        std = tf.constant(self._std, tf.float32)
        x = (images / 255.0 - mean) / std
        outputs = tf.cast(self.model(x, training=False), tf.float32)
        if self._output == PROBABILITIES:
            probabilities = outputs
            logits = tf.math.log(tf.maximum(outputs, SMALLEST_PROBABILITY))
            classes = tf.argmax(probabilities, axis=-1)
        else:
            logits, probabilities = outputs, tf.nn.softmax(outputs, axis=-1)
            classes = tf.argmax(logits, axis=-1)
        return {"probabilities": probabilities, "logits": logits, "classes": classes}

    def _serve_bytes(self, image_bytes):
        images = tf.map_fn(
            lambda b: decode_and_crop(b, self._size, self._crop_fraction),
            image_bytes,
            fn_output_signature=tf.TensorSpec([*self._size, 3], tf.float32),
        )
        return self._serve(images)


def _convert_onnx(module: ServingModule, path: Path, opset: int) -> None:
    import onnx
    import tf2onnx

    proto, _ = tf2onnx.convert.from_function(
        module.serve, input_signature=module.serve.input_signature, opset=opset
    )
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())


def _parity_images(source: Source) -> tuple[np.ndarray, str]:
    """Real images from the run's dataset (validation split), else seeded random pixels."""
    height, width, _ = source.input_shape
    if source.dataset:
        try:
            import pipelines

            options: dict[str, Any] = {}
            data_dir = (source.config or {}).get("data_dir")
            if source.dataset.startswith("tfds:") and data_dir:
                options["data_dir"] = data_dir  # where the run found it
            data = pipelines.load(source.dataset, **options)
            split = "validation" if "validation" in data.splits else "train"
            from pipelines.augment import resize_and_center_crop

            # Prepared as serving_bytes prepares an image: the evaluation pipeline's crop.
            batches = (
                data.splits[split]
                .take(PARITY_IMAGES)
                .map(
                    lambda x, _: resize_and_center_crop(
                        tf.cast(x, tf.float32), (height, width), CROP_FRACTION
                    )
                )
            )
            images = list(batches.as_numpy_iterator())
            return np.stack(images).astype("float32"), f"{source.dataset}:{split}"
        except (ValueError, OSError, RuntimeError, tf.errors.OpError):
            pass  # DataUnavailableError is a RuntimeError: the data moved or is gone
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, size=(PARITY_IMAGES, *source.input_shape)).astype("float32")
    return pixels, "uniform random pixels (the dataset was not available)"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions(folder: Path) -> list[int]:
    """The export versions in ``folder``, ascending (TF Serving reads integer names only)."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isascii() and p.name.isdigit())


def next_version(folder: Path) -> int:
    """One more than the highest version in ``folder`` (1 for none)."""
    return max(versions(folder), default=0) + 1


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the exclusive ``flock`` of ``folder/.lock`` (the folder is made if missing): claims
    of versions and the removal of leftovers run under it. The kernel releases the lock of a
    killed process. A failed export may remove the folder it made (under this lock), so the
    lock held must be that of the file the path names now; otherwise it is taken again."""
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.stat(folder / LOCK_NAME)):
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock_temp(tmp: Path) -> int:
    """Make ``tmp`` and take the ``flock`` of its lock file, held while the export writes."""
    tmp.mkdir()
    fd = os.open(tmp / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_abandoned(tmp: Path) -> bool:
    """Whether no live export holds the lock of the temporary folder ``tmp``."""
    try:
        fd = os.open(tmp / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True  # killed between making the folder and its lock file
    except OSError:
        return False  # cannot tell: keep it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # (a lock just taken is dropped: the caller holds the folder's lock)
    return True


def _remove_leftovers(folder: Path) -> None:
    """Remove what killed exports of this name left (called under the folder's lock).

    A temporary folder is removed only when the ``flock`` of its lock file is free. Its
    export makes the folder and takes that lock under the folder's lock, holds it while it
    writes, and deletes the lock file under the folder's lock just before the folder is renamed
    into place; the kernel drops the lock when the export dies. A lock rather than a pid in
    the name or an age: a pid may be reused or belong to another machine sharing the disk, an
    age would remove a slow export, and a lock also tells the threads of one process apart.

    A ``.old-`` folder (a version being replaced by ``--overwrite``) exists outside the
    folder's lock only when its export was killed between its two renames: it is put back if
    no version took its place, else removed."""
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        if entry.name.startswith(TEMP_PREFIX) and _is_abandoned(entry):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(OLD_PREFIX):
            version = entry.name[len(OLD_PREFIX) :].split("-")[0]
            if version.isascii() and version.isdigit() and not (folder / version).exists():
                os.rename(entry, folder / version)
            else:
                shutil.rmtree(entry, ignore_errors=True)


def _taken(target: Path, version: int) -> str:
    return (
        f"{target} exists: another export took version {version} while this one ran; pass "
        "--overwrite to replace it, or --version to choose another; nothing was exported."
    )


def claim_version(
    tmp: Path,
    folder: Path,
    version: int | None = None,
    *,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Rename the finished export ``tmp`` to ``folder/<version>`` and return that path.

    Runs under the folder's lock, so two exports of one name never claim one version: with
    ``version`` None the next free integer is taken. ``metadata``, if given, gets the version
    and is written to ``tmp/metadata.json`` first.

    The existence check and the rename are one step for every export (both under the lock);
    the rename would also fail onto a non-empty folder made meanwhile by anything else, and
    the check also catches an empty one (which a plain rename would silently replace).

    Raises:
        ExportError: ``version`` exists (another export took it) and ``overwrite`` is false.
    """
    with _locked(folder):
        auto = version is None
        number = next_version(folder) if version is None else version
        for _ in range(1000):
            target = folder / str(number)
            taken = os.path.lexists(target)
            if taken and auto:  # (``overwrite`` concerns a version asked for)
                number += 1
                continue
            if taken and not overwrite:
                raise ExportError(_taken(target, number))
            if metadata is not None:
                metadata["version"] = number
                (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
            (tmp / LOCK_NAME).unlink(missing_ok=True)  # leftovers are only removed under our lock
            try:
                if taken:
                    _replace(tmp, target, folder / f"{OLD_PREFIX}{number}-{secrets.token_hex(4)}")
                else:
                    os.rename(tmp, target)
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                if not auto:
                    raise ExportError(_taken(target, number)) from None
                number += 1
                continue
            return target
    raise ExportError(f"no free version found in {folder}; pass --version.")


def _replace(tmp: Path, target: Path, old: Path) -> None:
    """Put ``tmp`` in place of the existing ``target`` (``old`` holds it meanwhile)."""
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export(
    source: Source,
    *,
    out: str | os.PathLike[str] = "saved_models",
    name: str | None = None,
    version: int | None = None,
    onnx: bool = True,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> Path:
    """Write ``<out>/<name>/<version>/`` atomically and return its path.

    Raises:
        ValueError: bad name, version, opset, normalisation, or an output activation that is
            neither softmax nor none.
        FileExistsError: the version exists and ``overwrite`` is false.
        ExportError: the version was taken while this export ran, the ONNX conversion failed,
            or ONNX Runtime and the SavedModel disagree by more than 1e-4.
        OSError: ``out`` cannot be written (read-only, full, a file, a name too long); nothing
            is left behind, not even the folders this export made.
    """
    name = check_name(name or source.model_name)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise ValueError(f"version must be an integer >= 1, got {version!r}.")
    if onnx:
        check_opset(opset)
    check_channels("mean", source.mean)
    check_channels("std", source.std, positive=True)
    output = model_output(source.model, source.input_shape)
    folder = Path(out) / name
    if version is not None and os.path.lexists(folder / str(version)) and not overwrite:
        raise FileExistsError(
            f"{folder / str(version)} exists; pass --overwrite to replace it, or --version to "
            "choose another."
        )
    made = []  # the folders this export makes, deepest first: removed again if it fails
    for parent in (folder, *folder.parents):
        if os.path.lexists(parent):
            break
        made.append(parent)
    tmp, tmp_fd = None, None
    try:
        with _locked(folder):
            _remove_leftovers(folder)
            tmp = folder / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            tmp_fd = _lock_temp(tmp)
        metadata = _write(source, tmp, onnx=onnx, opset=opset, output=output)
        metadata["name"] = name
        files = sorted(p for p in tmp.rglob("*") if p.is_file() and p != tmp / LOCK_NAME)
        metadata["sha256"] = {str(p.relative_to(tmp)): file_sha256(p) for p in files}
        return claim_version(tmp, folder, version, overwrite=overwrite, metadata=metadata)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_made(made)
        raise
    finally:
        if tmp_fd is not None:
            os.close(tmp_fd)


def _remove_made(made: list[Path]) -> None:
    """Remove the folders a failed export made, if still empty (the name folder under its
    lock, so that a concurrent export of that name does not lose the folder it works in)."""
    for i, path in enumerate(made):
        try:
            if i == 0:
                with _locked(path):
                    if os.listdir(path) != [LOCK_NAME]:
                        return
                    os.unlink(path / LOCK_NAME)
                    os.rmdir(path)
            else:
                os.rmdir(path)
        except OSError:
            return


def _write(
    source: Source, tmp: Path, *, onnx: bool, opset: int, output: dict[str, str]
) -> dict[str, Any]:
    module = ServingModule(source, output=output["kind"])
    try:
        tf.saved_model.save(
            module,
            str(tmp),
            signatures={
                "serving_default": module.serve.get_concrete_function(),
                "serving_bytes": module.serve_bytes.get_concrete_function(),
            },
        )
    except tf.errors.OpError as err:
        raise ExportError(
            f"cannot write the SavedModel in {tmp.parent} ({_reason(err)}); check the space and "
            "permissions there, or choose another --out."
        ) from None
    images, parity_source = _parity_images(source)
    saved = tf.saved_model.load(str(tmp)).signatures["serving_default"]
    saved_probs = saved(images=tf.constant(images))["probabilities"].numpy()
    keras_probs = module.serve(images)["probabilities"].numpy()
    parity: dict[str, Any] = {
        "inputs": parity_source,
        "images": len(images),
        "savedmodel_vs_keras_max_abs_diff": float(np.abs(saved_probs - keras_probs).max()),
    }
    if onnx:
        onnx_path = tmp / "model.onnx"
        try:
            import onnxruntime

            _convert_onnx(module, onnx_path, opset)
            session = onnxruntime.InferenceSession(
                str(onnx_path), providers=["CPUExecutionProvider"]
            )
            outputs = [o.name for o in session.get_outputs()]
            onnx_probs = session.run(["probabilities"], {"images": images})[0]
        except (ExportError, OSError):
            raise
        except Exception as err:  # tf2onnx, onnx.checker and ONNX Runtime raise many kinds
            raise ExportError(
                f"the ONNX conversion at opset {opset} failed ({_reason(err)}); try another "
                "--opset, or --no-onnx to export the SavedModel alone; nothing was exported."
            ) from None
        diff = float(np.abs(onnx_probs - saved_probs).max())
        parity.update(onnx_vs_savedmodel_max_abs_diff=diff, onnx_outputs=sorted(outputs))
        if not diff <= PARITY_TOLERANCE:
            raise ExportError(
                f"ONNX Runtime differs from the SavedModel by {diff:.3g} in "
                f"probabilities (tolerance {PARITY_TOLERANCE}); not exported."
            )
    import onnx as onnx_lib
    import tf2onnx

    served = (
        "probabilities: the model's outputs; logits: their logarithm"
        if output["kind"] == PROBABILITIES
        else "logits: the model's outputs; probabilities: their softmax"
    )
    return {
        "model": source.model_name,
        "class_names": source.class_names,
        "input": {
            "name": "images",
            "shape": [None, *source.input_shape],
            "dtype": "float32",
            "range": [0, 255],
        },
        "normalization": {
            "mean": source.mean,
            "std": source.std,
            "units": "pixels scaled to [0, 1]",
            "inside_graph": True,
        },
        "bytes_input": {
            "name": "image_bytes",
            "resize": "keep aspect, centre crop",
            "crop_fraction": CROP_FRACTION,
        },
        "outputs": ["probabilities", "logits", "classes"],
        "model_output": {**output, "served": served},
        "signatures": ["serving_default", "serving_bytes"],
        "onnx": {"file": "model.onnx", "opset": opset} if onnx else None,
        "parity": parity,
        "training_config": source.config,
        "metrics": source.metrics,
        "checkpoint": source.checkpoint,
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx_lib.__version__,
            "keras-zoo": zoo.__version__,
        },
    }


def error_line(err: BaseException, flags: str = "--out") -> str:
    """One line for an export's failure: the message, or for a failed write the path, the
    reason and what to do, naming ``flags`` (the options that choose where the export goes)."""
    if isinstance(err, OSError) and err.errno is not None:
        return os_error_line(err, flags)
    return str(err)


def export_finished_run(run_dir: str | os.PathLike[str], what: str = "run") -> bool:
    """Export a run's best weights at the end of ``zoo.train --export`` or
    ``tuning.search --export-best``: print where, or one error line saying the ``what``
    finished but its export failed. Returns whether it succeeded."""
    try:
        target = export(load_source(run_dir, checkpoint="best"))
    except (ValueError, ExportError, OSError) as err:
        line = error_line(err, f"python -m zoo.export {run_dir} --out DIR")
        print(f"error: the {what} finished but its export failed: {line}", file=sys.stderr)
        return False
    print(f"exported the best weights to {target}")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.export",
        description="Export a run directory or a .keras file as a SavedModel (TF Serving layout) "
        "and an ONNX file, checked against each other.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("source", help="a run directory (runs/...) or a .keras file")
    parser.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="which checkpoint of a run directory",
    )
    parser.add_argument("--out", default="saved_models", help="parent folder of exports")
    parser.add_argument("--name", default=None, help="export name; default: the model's name")
    parser.add_argument(
        "--version", type=int, default=None, help="version number; default: the next free integer"
    )
    parser.add_argument(
        "--onnx",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write and check model.onnx",
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument(
        "--mean",
        type=float,
        nargs=3,
        default=None,
        help="per-channel mean (pixels in [0, 1]) for a .keras file",
    )
    parser.add_argument(
        "--std",
        type=float,
        nargs=3,
        default=None,
        help="per-channel standard deviation (> 0) for a .keras file",
    )
    parser.add_argument(
        "--class-names",
        nargs="+",
        default=None,
        help="class names for a .keras file; 'imagenet' for the 1000 ImageNet classes shipped "
        "with the package (pretrained models)",
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    try:
        if args.name is not None:
            check_name(args.name)
        if args.onnx:
            check_opset(args.opset, "--opset")
        if args.mean is not None:
            check_channels("--mean", args.mean)
        if args.std is not None:
            check_channels("--std", args.std, positive=True)
        source = load_source(
            args.source,
            checkpoint=args.checkpoint,
            mean=args.mean,
            std=args.std,
            class_names=args.class_names,
        )
    except (ValueError, OSError) as err:
        reading = f"cannot read {err.filename}: {err.strerror}" if _is_os(err) else str(err)
        print(f"error: {reading}", file=sys.stderr)
        return 2
    try:
        target = export(
            source,
            out=args.out,
            name=args.name,
            version=args.version,
            onnx=args.onnx,
            opset=args.opset,
            overwrite=args.overwrite,
        )
    except (ValueError, ExportError, OSError) as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2
    metadata = json.loads((target / "metadata.json").read_text())
    parity = metadata["parity"]
    line = f"exported {target}"
    if "onnx_vs_savedmodel_max_abs_diff" in parity:
        line += (
            f" (ONNX Runtime vs SavedModel: max |diff| "
            f"{parity['onnx_vs_savedmodel_max_abs_diff']:.2g} over {parity['images']} "
            f"images of {parity['inputs']})"
        )
    print(line)
    return 0


def _is_os(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno is not None and err.filename is not None


if __name__ == "__main__":
    sys.exit(main())
