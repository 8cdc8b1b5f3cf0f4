"""Architecture families. Importing this package registers every model."""

from zoo.models import alexnet, googlenet, resnet, vgg

__all__ = ["alexnet", "googlenet", "resnet", "vgg"]
