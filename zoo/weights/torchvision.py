"""Pretrained ImageNet weights from torchvision, converted exactly into the zoo's models.

torchvision's ResNets (v1.5: the stride in the 3x3, the zoo's default) and VGGs are the zoo's
architectures exactly; only names and layouts differ: OIHW kernels (HWIO here), Linear weights
stored (out, in), and VGG's first fully connected layer, whose input torchvision flattens
channels-first (C, 7, 7) where Keras flattens channels-last (7, 7, C).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import keras
import numpy as np

from pipelines.cli import one_line
from zoo.weights.common import KERAS_CACHE, PretrainedWeights, set_checked

if TYPE_CHECKING:
    from zoo.registry import ModelInfo

TORCHVISION_URL = "https://download.pytorch.org/models/"
SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2", "I64": "<i8"}


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


def load_torchvision(
    model: keras.Model,
    weights: PretrainedWeights,
    file: str | os.PathLike[str] | None,
    *,
    info: ModelInfo,
    include_top: bool,
    classes: int,
) -> int:
    """Convert ``weights`` (fetched, or read from ``file``) into ``info``'s built ``model``. The
    classifier is new where the state dict's has other classes; a VGG's whole classifier is new
    where its first layer does not fit (not 224x224 inputs, or a file without it). Returns the
    number of layers converted."""
    state = fetch_torchvision(weights) if file is None else read_state_dict(file)
    head = "fc.weight" if info.family == "resnet" else "classifier.6.weight"
    same_head = head in state and state[head].shape[0] == classes
    new_head: tuple[str, ...] = () if same_head else (info.classifier,)  # a fresh head
    if include_top and info.family == "vgg" and not same_head:
        height, width, channels = flattened(model)
        fc1 = state.get("classifier.0.weight")
        if fc1 is None or fc1.shape[1] != height * width * channels:
            # Not 224x224 inputs (or a file without the classifier): the whole classifier
            # is new, as keras.applications' weights without the top give it.
            new_head = ("fc1", "fc2", info.classifier)
    return convert_torchvision(state, model, info.family, skip=new_head)


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file as float32 arrays (integer ones, such as batch
    norm's ``num_batches_tracked``, left out). The format is an 8-byte header length, a JSON
    header of names, dtypes, shapes and byte offsets, and the raw little-endian data; reading it
    needs no pickle and no package beyond NumPy.

    Raises:
        ValueError: the file is not a safetensors file (named), or holds an unknown dtype.
    """
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
    read with PyTorch. Without PyTorch a `ValueError` says so before anything is downloaded;
    offline, a `FileNotFoundError` names the file and where to put it."""
    try:
        import torch  # noqa: F401  (checked first: a .pth is read with it)
    except ImportError:
        raise ValueError(
            f"{weights.model}'s torchvision weights are a PyTorch file ({weights.file}): "
            "reading it needs PyTorch (pip install torch); nothing was downloaded. Or convert it "
            "to .safetensors where PyTorch is installed and pass "
            "weights='path/to/file.safetensors'."
        ) from None
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
