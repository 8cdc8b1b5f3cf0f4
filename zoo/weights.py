"""Pretrained ImageNet weights from keras.applications, converted exactly into the zoo's models.

keras.applications' VGG16/19 map one to one. Its ResNet50/101/152 differ from the zoo's in three
ways, each converted without approximation:

- a bias on every convolution before batch norm: folded into the batch norm, since
  ``BN(x + b)`` with moving mean ``m`` is ``BN(x)`` with moving mean ``m - b``;
- batch-norm epsilon 1.001e-5 against the zoo's 1e-5: the difference is added to the moving
  variance, so ``var + eps`` is unchanged;
- the stride of a downsampling bottleneck on its first 1x1 convolution (the original paper's
  placement): the zoo model is built with ``stride_in_1x1=True`` for these weights.

Both families expect Caffe's preprocessing (BGR, the ImageNet mean subtracted from 0-255 pixels).
The zoo keeps RGB inputs: the first convolution's input channels are reversed, and the weights'
`PretrainedWeights.mean` and ``std`` (pixels in [0, 1]) give exactly the numbers Caffe's
preprocessing gives: ``(x - mean) / std == 255 * x - caffe_mean``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import keras
import numpy as np

from zoo.cli import one_line

KERAS_APPLICATIONS_EPSILON = 1.001e-5  # keras.applications' ResNet batch norm
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # keras.applications' "caffe" mode, on 0-255 pixels
KERAS_CACHE = os.path.join("~", ".keras", "models")


@dataclass(frozen=True)
class PretrainedWeights:
    """A set of published weights the zoo converts.

    Attributes:
        model: The zoo model they are for.
        name: What ``create_model(model, weights=name)`` takes, e.g. ``"imagenet"``.
        source: Where they come from, e.g. ``keras.applications.ResNet50``.
        file: The file Keras downloads (and caches in ``~/.keras/models``), with the top.
        file_no_top: The same without the classifier.
        mean: Per-channel mean for pixels in [0, 1], RGB, that these weights expect.
        std: Per-channel standard deviation, same units.
        options: Builder options these weights need (recorded, e.g. ``stride_in_1x1``).
        classes: Classes of the published classifier.
        input_shape: The input they were trained at.
    """

    model: str
    name: str
    source: str
    file: str
    file_no_top: str
    mean: tuple[float, float, float] = tuple(c / 255 for c in CAFFE_MEAN_RGB)  # type: ignore[assignment]
    std: tuple[float, float, float] = (1 / 255, 1 / 255, 1 / 255)
    options: dict[str, Any] = field(default_factory=dict)
    classes: int = 1000
    input_shape: tuple[int, int, int] = (224, 224, 3)

    @property
    def application(self) -> str:
        return self.source.rsplit(".", 1)[1]


def _keras_applications(model: str, application: str, options: dict[str, Any]) -> PretrainedWeights:
    stem = model  # keras.applications names its files after the model: vgg16_weights_...
    return PretrainedWeights(
        model=model,
        name="imagenet",
        source=f"keras.applications.{application}",
        file=f"{stem}_weights_tf_dim_ordering_tf_kernels.h5",
        file_no_top=f"{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5",
        options=options,
    )


WEIGHTS: dict[str, dict[str, PretrainedWeights]] = {
    "vgg16": {"imagenet": _keras_applications("vgg16", "VGG16", {"small_inputs": False})},
    "vgg19": {"imagenet": _keras_applications("vgg19", "VGG19", {"small_inputs": False})},
    **{
        name: {
            "imagenet": _keras_applications(
                name, app, {"small_inputs": False, "stride_in_1x1": True}
            )
        }
        for name, app in (
            ("resnet50", "ResNet50"),
            ("resnet101", "ResNet101"),
            ("resnet152", "ResNet152"),
        )
    },
}


def available_weights(model: str) -> tuple[str, ...]:
    """The names of the pretrained weights ``model`` can be created with (may be empty)."""
    return tuple(WEIGHTS.get(model, {}))


def pretrained(model: str, name: str) -> PretrainedWeights:
    """The description of ``model``'s weights ``name``; a `ValueError` naming the models that
    have such weights when ``model`` has none."""
    found = WEIGHTS.get(model, {}).get(name)
    if found is None:
        raise ValueError(
            f"{model} has no {name!r} weights; models with them: "
            f"{', '.join(having(name)) or 'none'}. "
            "Train it, or start from a file of the zoo's own (weights=PATH, or --init-from)."
        )
    return found


def source_model(
    weights: PretrainedWeights,
    *,
    include_top: bool,
    input_shape: tuple[int, int, int],
    file: str | os.PathLike[str] | None = None,
) -> keras.Model:
    """keras.applications' model for ``weights``: downloaded (and cached) by Keras, or read from
    ``file`` (the ``.h5`` keras.applications downloads). Offline without the file, a
    `FileNotFoundError` says which file Keras looks for and where to put it."""
    build = getattr(keras.applications, weights.application)
    wanted = weights.file if include_top else weights.file_no_top
    if file is not None:
        # The file decides whether it holds the top: try the one asked for, then the other.
        errors = []
        for top in (include_top, not include_top):
            try:
                return build(
                    weights=os.fspath(file),
                    include_top=top,
                    input_shape=input_shape,
                    classifier_activation=None,
                )
            except Exception as err:  # the legacy loader raises ValueError or KeyError
                errors.append(one_line(err, 160))
        raise ValueError(
            f"{file} is not {weights.source}'s weights file ({weights.file} or "
            f"{weights.file_no_top}): {errors[0]}"
        )
    try:
        return build(
            weights="imagenet",
            include_top=include_top,
            input_shape=input_shape,
            classifier_activation=None,
        )
    except Exception as err:  # Keras raises a plain Exception when the download fails
        raise FileNotFoundError(
            f"{weights.model}'s {weights.name!r} weights could not be fetched "
            f"({one_line(err, 160)}). Keras looks for {wanted} in {KERAS_CACHE}: download it on "
            f"a machine with network (keras.applications.{weights.application}(weights="
            f"'imagenet')) and copy it there, or pass weights='path/to/{wanted}'."
        ) from None


def convert(
    source: keras.Model, target: keras.Model, *, first_conv: str, skip: tuple[str, ...] = ()
) -> int:
    """Copy a keras.applications model's weights into the zoo's ``target`` exactly (see the
    module docstring); layers of ``target`` that ``source`` lacks (a new head) keep theirs.
    Layers named in ``skip`` (a new classifier) are left as they are. Returns the number of
    layers converted.

    Raises:
        ValueError: naming the first layer whose weights do not fit, and how.
    """
    by_name = {layer.name: layer for layer in source.layers if layer.weights}
    done = 0
    for layer in target.layers:
        if not layer.weights or layer.name in skip:
            continue
        other = by_name.get(_source_name(layer.name))
        if other is None:
            continue
        values = [np.asarray(w) for w in other.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            values = _batch_norm(values, other, source, layer)
        elif isinstance(layer, keras.layers.Conv2D) and len(values) == 2 and not layer.use_bias:
            values = values[:1]  # its bias goes into the batch norm that follows (above)
        if layer.name == first_conv:
            values[0] = values[0][:, :, ::-1, :]  # BGR inputs to RGB
        set_checked(layer, values, f"{other.name} of {source.name}")
        done += 1
    return done


def set_checked(layer: Any, values: list[np.ndarray], what: str) -> None:
    """``layer.set_weights(values)``, or a `ValueError` saying that ``layer`` does not fit
    ``what`` (the source's layer) and which shapes differ."""
    expected = [tuple(w.shape) for w in layer.weights]
    if [v.shape for v in values] != expected:
        raise ValueError(
            f"layer {layer.name} does not fit {what}: shapes {[v.shape for v in values]}, "
            f"expected {expected}."
        )
    layer.set_weights(values)


def _source_name(name: str) -> str:
    """keras.applications' name for a zoo layer (VGG's ``block1_2_conv`` is ``block1_conv2``)."""
    parts = name.split("_")
    if len(parts) == 3 and parts[0].startswith("block") and parts[2] == "conv":
        return f"{parts[0]}_conv{parts[1]}"
    return name


def _batch_norm(
    values: list[np.ndarray], other: Any, source: keras.Model, layer: Any
) -> list[np.ndarray]:
    """``[gamma, beta, mean, variance]`` with the preceding convolution's bias and the epsilon
    difference folded in."""
    gamma, beta, mean, variance = values
    conv = source.get_layer(other.name[: -len("_bn")] + "_conv")
    if getattr(conv, "use_bias", False):
        mean = mean - np.asarray(conv.bias)
    variance = variance + (other.epsilon - layer.epsilon)
    return [gamma, beta, mean, variance]


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names, in the order of the published classifiers' outputs
    (keras.applications' and torchvision's): each label's first WordNet synonym ("tench",
    "goldfish"), or its whole label where that synonym is shared ("maillot" and "maillot, tank
    suit"). Shipped in ``zoo/data/imagenet_classes.txt`` (the full labels, one per line, from
    TensorFlow Datasets' list), so no download is needed."""
    labels = resources.files("zoo").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    full = [line.strip() for line in labels.splitlines() if line.strip()]
    first = [label.split(",")[0].strip() for label in full]
    shared = {name for name, count in Counter(first).items() if count > 1}
    return [label if name in shared else name for name, label in zip(first, full, strict=True)]


# torchvision ------------------------------------------------------------------------------
#
# torchvision's ResNets (v1.5: the stride in the 3x3, the zoo's default) and VGGs are the zoo's
# architectures exactly; only names and layouts differ: OIHW kernels (HWIO here), Linear
# weights stored (out, in), and VGG's first fully connected layer, whose input torchvision
# flattens channels-first (C, 7, 7) where Keras flattens channels-last (7, 7, C).

TORCHVISION_URL = "https://download.pytorch.org/models/"
TORCHVISION_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-11ad3fa6.pth",  # IMAGENET1K_V2
    "resnet101": "resnet101-cd907fc2.pth",  # IMAGENET1K_V2
    "resnet152": "resnet152-f82ba261.pth",  # IMAGENET1K_V2
    "vgg11": "vgg11-8a719046.pth",
    "vgg11_bn": "vgg11_bn-6002323d.pth",
    "vgg13": "vgg13-19584684.pth",
    "vgg13_bn": "vgg13_bn-abd245e5.pth",
    "vgg16": "vgg16-397923af.pth",
    "vgg16_bn": "vgg16_bn-6c64b313.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
    "vgg19_bn": "vgg19_bn-c79401a0.pth",
}
for _model, _file in TORCHVISION_FILES.items():
    WEIGHTS.setdefault(_model, {})["torchvision"] = PretrainedWeights(
        model=_model,
        name="torchvision",
        source=f"torchvision.models.{_model}",
        file=_file,
        file_no_top=_file,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        # torchvision's bottlenecks stride in the 3x3 (v1.5), the zoo's default: insist on it.
        options={"small_inputs": False}
        | ({"stride_in_1x1": False} if _model in ("resnet50", "resnet101", "resnet152") else {}),
    )


def torchvision_names(model: keras.Model, family: str) -> list[tuple[str, str]]:
    """``(zoo layer, torchvision module)`` for every layer with weights, e.g.
    ``("conv2_block1_1_conv", "layer1.0.conv1")`` or ``("block1_1_conv", "features.0")``."""
    pairs: list[tuple[str, str]] = []
    if family == "resnet":
        for layer in model.layers:
            if not layer.weights:
                continue
            name = layer.name
            if name.startswith("conv1_"):
                pairs.append((name, "conv1" if name.endswith("_conv") else "bn1"))
            elif name == "predictions":
                pairs.append((name, "fc"))
            else:  # conv{S}_block{B}_{J}_{conv|bn}
                stage, block, index, kind = name.split("_")
                prefix = f"layer{int(stage[4:]) - 1}.{int(block[5:]) - 1}"
                if index == "0":
                    pairs.append((name, f"{prefix}.downsample.{0 if kind == 'conv' else 1}"))
                else:
                    pairs.append((name, f"{prefix}.{kind}{index}"))
        return pairs
    if family == "vgg":
        position, stage = 0, None  # the index in torchvision's ``features``
        for layer in model.layers:
            if not layer.weights:
                continue
            name = layer.name
            if name.endswith("_conv"):
                this_stage = name.split("_")[0]
                if stage is not None and this_stage != stage:
                    position += 1  # the max-pooling that ends a stage
                stage = this_stage
                pairs.append((name, f"features.{position}"))
                position += 1 if _has_bn(model, name) else 2  # with its ReLU unless a BN follows
            elif name.endswith("_bn"):
                pairs.append((name, f"features.{position}"))
                position += 2  # the batch norm and its ReLU
            else:
                head = {"fc1": "classifier.0", "fc2": "classifier.3"}
                pairs.append((name, head.get(name, "classifier.6")))
        return pairs
    raise ValueError(f"torchvision weights exist for ResNets and VGGs, not {family} models.")


def _has_bn(model: keras.Model, conv_name: str) -> bool:
    try:
        model.get_layer(conv_name[: -len("_conv")] + "_bn")
    except ValueError:
        return False
    return True


def torchvision_state_shapes(model: keras.Model, family: str) -> dict[str, tuple[int, ...]]:
    """The torchvision state dict (names and shapes) that ``model`` takes: what a converted
    file must hold (running statistics' ``num_batches_tracked`` aside)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, prefix in torchvision_names(model, family):
        layer = model.get_layer(name)
        if isinstance(layer, keras.layers.BatchNormalization):
            (channels,) = layer.gamma.shape
            for key in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}.{key}"] = (channels,)
            continue
        kernel = tuple(layer.kernel.shape)
        if isinstance(layer, keras.layers.Conv2D):
            shapes[f"{prefix}.weight"] = (kernel[3], kernel[2], kernel[0], kernel[1])
        else:
            shapes[f"{prefix}.weight"] = (kernel[1], kernel[0])
        if getattr(layer, "use_bias", False):
            shapes[f"{prefix}.bias"] = (kernel[-1],)
    return shapes


def convert_torchvision(
    state: dict[str, np.ndarray], model: keras.Model, family: str, *, skip: tuple[str, ...] = ()
) -> int:
    """Copy a torchvision state dict into the zoo's ``model`` exactly; layers in ``skip`` (a new
    head) keep theirs. Returns the number of layers converted.

    Raises:
        ValueError: naming the first key that is missing or whose shape does not fit.
    """
    done = 0
    for name, prefix in torchvision_names(model, family):
        if name in skip:
            continue
        layer = model.get_layer(name)

        def take(key: str, prefix: str = prefix, name: str = name) -> np.ndarray:
            full = f"{prefix}.{key}"
            if full not in state:
                raise ValueError(f"the state dict has no {full!r} (for layer {name}).")
            return np.asarray(state[full], dtype="float32")

        if isinstance(layer, keras.layers.BatchNormalization):
            values = [take(k) for k in ("weight", "bias", "running_mean", "running_var")]
        elif isinstance(layer, keras.layers.Conv2D):
            values = [take("weight").transpose(2, 3, 1, 0)]
        else:
            weight = take("weight")
            if name == "fc1":
                height, width, channels = flattened(model)
                if weight.shape[1] != height * width * channels:
                    raise ValueError(
                        f"{prefix}.weight takes {weight.shape[1]} inputs; layer {name} gets "
                        f"{height}x{width}x{channels}: torchvision's VGG classifier needs "
                        "224x224 inputs (include_top=False, or other classes for a new head, "
                        "at other sizes)."
                    )
                weight = weight.reshape(-1, channels, height, width).transpose(2, 3, 1, 0)
                values = [weight.reshape(height * width * channels, -1)]
            else:
                values = [weight.T]
        if getattr(layer, "use_bias", False) and not isinstance(
            layer, keras.layers.BatchNormalization
        ):
            values.append(take("bias"))
        set_checked(layer, values, f"{prefix} of the state dict")
        done += 1
    return done


def flattened(model: keras.Model) -> tuple[int, int, int]:
    """The (height, width, channels) feature map that VGG's ``flatten`` layer flattens."""
    height, width, channels = (int(d) for d in model.get_layer("flatten").input.shape[1:])
    return height, width, channels


SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2", "I64": "<i8"}


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file as float32 arrays (integer ones, such as batch
    norm's ``num_batches_tracked``, left out). The format is an 8-byte header length, a JSON
    header of names, dtypes, shapes and byte offsets, and the raw little-endian data; reading it
    needs no pickle and no package beyond NumPy.

    Raises:
        ValueError: the file is not a safetensors file (named), or holds an unknown dtype.
    """
    import json

    data = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        size = int(np.frombuffer(data[:8].tobytes(), "<u8")[0])
        header = json.loads(data[8 : 8 + size].tobytes())
    except (ValueError, IndexError, UnicodeDecodeError):
        raise ValueError(f"{path} is not a safetensors file (its header does not read).") from None
    body = 8 + size
    tensors: dict[str, np.ndarray] = {}
    for key, spec in header.items():
        if key == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(spec.get("dtype"))
        if dtype is None:
            raise ValueError(f"{path}: tensor {key!r} has dtype {spec.get('dtype')!r}, not read.")
        start, end = (body + offset for offset in spec["data_offsets"])
        array = np.frombuffer(data[start:end].tobytes(), dtype).reshape(spec["shape"])
        if spec["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        if spec["dtype"] != "I64":
            tensors[key] = array.astype(np.float32)
    return tensors


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A torchvision state dict from a ``.safetensors`` file (NumPy alone) or a ``.pth``/``.pt``
    file (through ``torch.load(weights_only=True)``, when PyTorch is installed)."""
    name = os.fspath(path)
    if name.endswith(".safetensors"):
        return read_safetensors(name)
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"{name} is a PyTorch file: reading it needs PyTorch (pip install torch), or convert "
            "it to .safetensors where PyTorch is installed and pass that."
        ) from None
    try:
        state = torch.load(name, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and format errors alike
        raise ValueError(
            f"{name} does not load as a PyTorch state dict ({one_line(err)})."
        ) from None
    return {
        key: value.detach().float().numpy()
        for key, value in state.items()
        if hasattr(value, "is_floating_point") and value.is_floating_point()
    }


def fetch_torchvision(weights: PretrainedWeights) -> dict[str, np.ndarray]:
    """torchvision's published weights: downloaded and cached by Keras (``~/.keras/models``),
    read with PyTorch. Offline, a `FileNotFoundError` names the file and where to put it."""
    try:
        path = keras.utils.get_file(
            weights.file, TORCHVISION_URL + weights.file, cache_subdir="models"
        )
    except Exception as err:  # Keras raises a plain Exception when the download fails
        raise FileNotFoundError(
            f"{weights.model}'s torchvision weights could not be fetched ({one_line(err, 160)}). "
            f"Download {TORCHVISION_URL}{weights.file} on a machine with network and copy it into "
            f"{KERAS_CACHE}, or pass weights='path/to/{weights.file}' (or a .safetensors file in "
            "torchvision's names)."
        ) from None
    return read_state_dict(path)


def published(name: str, weights: Any) -> PretrainedWeights | None:
    """The `zoo.weights.PretrainedWeights` that ``weights`` names (``"imagenet"``,
    ``"torchvision"``) or whose published format the file has (keras.applications' ``.h5``, not
    a ``.weights.h5``; torchvision's ``.safetensors``/``.pth``), else None."""
    published_file = (".h5", ".keras", ".safetensors", ".pth", ".pt")
    if isinstance(weights, str) and weights in ("imagenet", "torchvision"):
        return pretrained(name, weights)  # a name, even beside a folder of that name
    if isinstance(weights, str) and not weights.endswith(published_file):
        if os.sep in weights or os.path.exists(weights):
            return None  # a path: _load_weights names what it accepts
        return pretrained(name, weights)
    path = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else ""
    if path.endswith((".safetensors", ".pth", ".pt")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights file not found: {path}")
        models = having("torchvision")
        if name not in models:
            raise ValueError(
                f"{path}: a {os.path.splitext(path)[1]} file is read as torchvision's weights, "
                f"and {name} has no torchvision counterpart; models that have: {', '.join(models)}."
            )
        return WEIGHTS[name]["torchvision"]
    if path.endswith(".h5") and not path.endswith(".weights.h5"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights file not found: {path}")
        sets = {k: v for k, v in WEIGHTS.get(name, {}).items() if k == "imagenet"}
        if not sets:
            raise ValueError(
                f"{path}: a .h5 file is read as keras.applications' weights, and {name} has "
                f"none; models that have: {', '.join(having('imagenet'))}."
            )
        return next(iter(sets.values()))
    return None


def having(weights: str) -> list[str]:
    """The models that have pretrained weights ``weights``."""
    return sorted(model for model, sets in WEIGHTS.items() if weights in sets)


def architecture_options(model: str, weights: str | None) -> dict[str, Any]:
    """The builder options that ``weights`` (a name or a published file, as a run's config
    records it) imply for ``model``, decided from the name or the file's suffix alone: a run
    trained from a file rebuilds after the file is gone."""
    if not weights:
        return {}
    name = str(weights)
    if name.endswith((".safetensors", ".pth", ".pt")):
        kind = "torchvision"
    elif name.endswith(".h5") and not name.endswith(".weights.h5"):
        kind = "imagenet"
    else:
        kind = name
    found = WEIGHTS.get(model, {}).get(kind)
    return dict(found.options) if found is not None else {}
