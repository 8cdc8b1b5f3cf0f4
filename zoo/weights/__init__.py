"""Published pretrained weights, converted exactly into the zoo's functional models.

- `zoo.weights.common`: what published weights exist per model (`WEIGHTS`), where Keras caches
  them, and the checks both converters share (`published`, `architecture_options`).
- `zoo.weights.keras_applications`: keras.applications' VGGs and ResNets (``"imagenet"``).
- `zoo.weights.torchvision`: torchvision's ResNets and VGGs (``"torchvision"``).
- `zoo.weights.loading`: what `zoo.create_model` hands ``weights`` to, before and after building.

Every public name is importable from ``zoo.weights`` itself.
"""

from __future__ import annotations

from zoo.weights.common import (
    CAFFE_MEAN_RGB,
    KERAS_CACHE,
    TORCHVISION_FILES,
    TORCHVISION_SUFFIXES,
    WEIGHTS,
    PretrainedWeights,
    architecture_options,
    available_weights,
    check_configuration,
    having,
    imagenet_class_names,
    pretrained,
    published,
    set_checked,
    with_options,
)
from zoo.weights.keras_applications import (
    KERAS_APPLICATIONS_EPSILON,
    convert,
    load_keras_applications,
    source_model,
)
from zoo.weights.loading import (
    CONVERTERS,
    check_keras_file,
    load_keras_file,
    load_weights,
    resolve_published,
)
from zoo.weights.torchvision import (
    SAFETENSORS_DTYPES,
    TORCHVISION_URL,
    convert_torchvision,
    fetch_torchvision,
    flattened,
    load_torchvision,
    read_safetensors,
    read_state_dict,
    torchvision_names,
    torchvision_state_shapes,
)

__all__ = [
    "CAFFE_MEAN_RGB",
    "CONVERTERS",
    "KERAS_APPLICATIONS_EPSILON",
    "KERAS_CACHE",
    "SAFETENSORS_DTYPES",
    "TORCHVISION_FILES",
    "TORCHVISION_SUFFIXES",
    "TORCHVISION_URL",
    "WEIGHTS",
    "PretrainedWeights",
    "architecture_options",
    "available_weights",
    "check_configuration",
    "check_keras_file",
    "convert",
    "convert_torchvision",
    "fetch_torchvision",
    "flattened",
    "having",
    "imagenet_class_names",
    "load_keras_applications",
    "load_keras_file",
    "load_torchvision",
    "load_weights",
    "pretrained",
    "published",
    "read_safetensors",
    "read_state_dict",
    "resolve_published",
    "set_checked",
    "source_model",
    "torchvision_names",
    "torchvision_state_shapes",
    "with_options",
]
