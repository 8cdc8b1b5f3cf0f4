"""keras-zoo: classic CNNs as Keras 3 functional models behind one registry.

>>> import zoo
>>> zoo.list_models("resnet1*")
['resnet18', 'resnet101', 'resnet110', 'resnet152']
>>> model = zoo.create_model("resnet20", width=0.25)
>>> zoo.model_info("vgg16").num_params
138357544

The public names load Keras (and TensorFlow) on first use, not on ``import zoo``: the command
lines parse their flags and quiet TensorFlow's start-up first (see `zoo.cli`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from zoo import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
