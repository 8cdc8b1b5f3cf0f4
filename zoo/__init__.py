"""keras-zoo: classic CNNs as Keras 3 functional models behind one registry.

>>> import zoo
>>> zoo.list_models("resnet1*")
['resnet18', 'resnet101', 'resnet110', 'resnet152']
>>> model = zoo.create_model("resnet20", width=0.25)
>>> zoo.model_info("vgg16").num_params
138357544
"""

from zoo import models as _models  # noqa: F401  (registers every family)
from zoo.registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
__version__ = "0.1.0"
