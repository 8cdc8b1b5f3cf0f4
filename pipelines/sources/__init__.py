r"""Image-classification data sources behind one registry: ``pipelines.load(source, **options)``.

Sources, one module each:

* ``digits``: scikit-learn's 8x8 handwritten digits (1,797 real images shipped inside
  scikit-learn, no network), scaled to uint8, resized to 32x32 with bilinear interpolation and
  replicated to 3 channels. Stratified, seeded split: 1,257 train / 180 validation / 360 test.
* ``tfds:<name>[:<config>]``: a TensorFlow Datasets image-classification dataset.
* ``folder:<path>``: a folder with one sub-folder per class, optionally inside ``train/``,
  ``val/`` (or ``validation/``) and ``test/``.
* ``files:<path>``: image files anywhere under one folder, labelled by their file names with
  ``label_regex`` (fast.ai's ``from_name_re``), e.g. Oxford-IIIT Pet's ``images/`` with
  ``label_regex=r"^(.+)_\d+\.jpg$"``.

Every split yields ``(image uint8 [H, W, 3], label int64 [])`` in a fixed order. Sources without
a validation split get one carved from train, deterministically from ``split_seed``.

Adding a source: a module here whose loader is decorated with ``@register_source(prefix,
usage)`` (see `pipelines.sources.base`), imported below; ``folder:`` and ``files:`` share
`pipelines.sources.image_files`.
"""

from __future__ import annotations

from pipelines.sources.base import (
    MIN_CLASSES,
    SPLITS,
    DataUnavailableError,
    ImageDataset,
    available_sources,
    load,
    logger,
    register_source,
)
from pipelines.sources.image_files import (
    CORRUPT_WARNING,
    IMAGE_EXTENSIONS,
    NOT_REGULAR_WARNING,
)

# The sources: importing a module registers its loader, in the order `available_sources` lists
# (and error messages show). A new source's module is imported here.
# isort: off
from pipelines.sources.digits import DIGITS_SIZES, load_digits
from pipelines.sources.tfds import TFDS_NOT_MIRROR_INVARIANT, load_tfds
from pipelines.sources.folder import load_folder
from pipelines.sources.files import PETS_REGEX, UNLABELLED_SHOWN, load_files

# isort: on

__all__ = [
    "CORRUPT_WARNING",
    "DIGITS_SIZES",
    "IMAGE_EXTENSIONS",
    "MIN_CLASSES",
    "NOT_REGULAR_WARNING",
    "PETS_REGEX",
    "SPLITS",
    "TFDS_NOT_MIRROR_INVARIANT",
    "UNLABELLED_SHOWN",
    "DataUnavailableError",
    "ImageDataset",
    "available_sources",
    "load",
    "load_digits",
    "load_files",
    "load_folder",
    "load_tfds",
    "logger",
    "register_source",
]
