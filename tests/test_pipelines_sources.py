"""Data sources: embedded digits, TFDS (through tfds.testing.mock_data) and image folders."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import pipelines
from pipelines.sources import DIGITS_SIZES, DataUnavailableError


def _arrays(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.stack(images), np.asarray(labels)


# ----------------------------------------------------------------------------- registry


def test_unknown_source_lists_accepted_ones():
    with pytest.raises(ValueError, match=r"Unknown source 'mnist'.*digits.*tfds:<name>.*folder:"):
        pipelines.load("mnist")


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['size'\].*image_size.*split_seed"):
        pipelines.load("digits", size=64)


def test_source_argument_checks():
    with pytest.raises(ValueError, match=r"needs an argument.*tfds:<name>"):
        pipelines.load("tfds:")
    with pytest.raises(ValueError, match="takes no argument"):
        pipelines.load("digits:extra")


# ----------------------------------------------------------------------------- digits


def test_digits_split_sizes_balance_and_format():
    data = pipelines.load("digits")
    assert data.name == "digits"
    assert data.class_names == tuple("0123456789")
    assert (
        dict(data.num_examples) == DIGITS_SIZES == {"train": 1257, "validation": 180, "test": 360}
    )
    assert data.image_shape == (32, 32, 3)
    from sklearn.datasets import load_digits

    overall = np.bincount(load_digits().target, minlength=10)
    share = overall / overall.sum()  # 174 to 183 of the 1,797 images per class
    seen: set[bytes] = set()
    for split, size in DIGITS_SIZES.items():
        images, labels = _arrays(data.splits[split])
        assert images.shape == (size, 32, 32, 3) and images.dtype == np.uint8
        assert labels.dtype == np.int64
        assert np.array_equal(images[..., 0], images[..., 2])  # grey replicated to RGB
        assert images.max() == 255 and images.min() == 0
        counts = np.bincount(labels, minlength=10)
        # Stratified: every class holds its overall share of the split to within one example.
        assert np.all(np.abs(counts - size * share) <= 1), (split, counts, size * share)
        seen.update(im.tobytes() + bytes([lab]) for im, lab in zip(images, labels, strict=True))
    assert len(seen) >= 1790  # the splits do not share examples (1797 images, a few duplicates)


def test_digits_split_is_seeded():
    a = _arrays(pipelines.load("digits").splits["validation"])
    b = _arrays(pipelines.load("digits").splits["validation"])
    c = _arrays(pipelines.load("digits", split_seed=1).splits["validation"])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_digits_image_size_option():
    data = pipelines.load("digits", image_size=8)
    images, _ = _arrays(data.splits["test"].take(4))
    assert images.shape == (4, 8, 8, 3)
    with pytest.raises(ValueError, match="image_size must be an int >= 8, got 4"):
        pipelines.load("digits", image_size=4)


# ----------------------------------------------------------------------------- TFDS


def test_tfds_cifar10_carves_seeded_validation():
    with tfds.testing.mock_data(num_examples=40):
        data = pipelines.load(
            "tfds:cifar10", download=True, splits={"train": "train", "test": "test"}
        )
        train = _arrays(data.splits["train"])
        val = _arrays(data.splits["validation"])
        again = _arrays(
            pipelines.load("tfds:cifar10", download=True, splits={"train": "train"}).splits[
                "validation"
            ]
        )
    assert data.name == "tfds:cifar10"
    assert data.num_classes == 10  # names come from TFDS metadata, absent under mocking
    assert data.image_shape == (32, 32, 3)
    assert dict(data.num_examples) == {"train": 36, "validation": 4, "test": 40}
    assert train[0].shape == (36, 32, 32, 3) and train[0].dtype == np.uint8
    assert train[1].dtype == np.int64 and val[0].shape == (4, 32, 32, 3)
    assert np.array_equal(val[0], again[0])  # same split_seed, same validation examples
    rows = {im.tobytes() for im in train[0]}
    assert not any(im.tobytes() in rows for im in val[0])  # disjoint from train


def test_tfds_default_splits_grayscale_to_rgb():
    with tfds.testing.mock_data(num_examples=6):
        data = pipelines.load("tfds:mnist", download=True)
        images, labels = _arrays(data.splits["test"])
    assert set(data.splits) >= {"train", "test"}
    assert data.image_shape == (28, 28, 3)
    assert images.shape == (6, 28, 28, 3)
    assert np.array_equal(images[..., 0], images[..., 1])
    assert labels.min() >= 0 and labels.max() < 10


def test_tfds_variable_size_and_config_syntax():
    with tfds.testing.mock_data(num_examples=3):
        data = pipelines.load(
            "tfds:imagenette:160px",
            download=True,
            splits={"train": "train", "validation": "validation"},
        )
        images = [x for x, _ in data.splits["validation"].as_numpy_iterator()]
    assert data.image_shape is None
    assert data.num_classes == 10
    assert all(im.ndim == 3 and im.shape[-1] == 3 for im in images)


def test_tfds_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataUnavailableError) as info:
        pipelines.load("tfds:mnist", data_dir=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "mnist") in message and "\n" not in message  # where it looked
    assert "--download" in message and "--data-dir DIR" in message  # the CLI's flags
    assert "tfds build mnist --data_dir DIR" in message and "download=True" in message


def test_tfds_manual_dataset_says_where_its_files_go(tmp_path):
    with pytest.raises(DataUnavailableError) as info:
        pipelines.load("tfds:imagenet2012", data_dir=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "downloads" / "manual") in message and "--download" in message
    assert "ILSVRC2012_img_train.tar" in message and "\n" not in message


def test_tfds_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    def offline(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve host\n(retry 1)\n(retry 2)")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(DataUnavailableError) as info:
        pipelines.load("tfds:mnist", data_dir=str(tmp_path), download=True)
    message = str(info.value)
    assert "ConnectionError: Failed to resolve host" in message and "\n" not in message
    assert "retry" not in message and "pass --download" not in message  # it was passed
    assert info.value.__cause__ is None and info.value.__suppress_context__

    def missing_package(self, *args, **kwargs):
        raise ModuleNotFoundError(
            "No module named 'importlib_resources'", name="importlib_resources"
        )

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", missing_package)
    with pytest.raises(DataUnavailableError, match="install the Python package importlib_res"):
        pipelines.load("tfds:mnist", data_dir=str(tmp_path), download=True)


def test_tfds_unknown_and_unsuitable_datasets():
    with pytest.raises(ValueError, match=r"Unknown TFDS dataset 'cifar11'.*cifar10"):
        pipelines.load("tfds:cifar11")
    with pytest.raises(ValueError, match=r"not a single-label image-classification dataset"):
        pipelines.load("tfds:celeb_a")


# ----------------------------------------------------------------------------- folder


def _write(path: Path, array: np.ndarray, mode: str | None = None, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(path, **kwargs)


@pytest.fixture
def image_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    root = tmp_path / "pets"
    _write(root / "cat" / "a.png", rgb)
    _write(root / "cat" / "b.jpg", rgb, quality=95)
    _write(root / "cat" / "nested" / "c.BMP", rgb)
    _write(root / "dog" / "grey.png", grey, "L")
    _write(root / "dog" / "alpha.png", rgba, "RGBA")
    Image.fromarray(rgb).convert("P").save(root / "dog" / "d.gif")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root, {"rgb": rgb, "rgba": rgba, "grey": grey}


def test_folder_reads_formats_and_skips_corrupt_file(image_folder, caplog):
    root, arrays = image_folder
    with caplog.at_level(logging.WARNING, logger="pipelines.sources"):
        data = pipelines.load(f"folder:{root}", validation_fraction=0.0)
    broken = str(root / "dog" / "broken.png")
    assert data.skipped_files == (broken,)
    assert any(broken in r.getMessage() for r in caplog.records)
    assert any("Skipped 1 unreadable image file(s) of 7" in r.getMessage() for r in caplog.records)
    assert data.class_names == ("cat", "dog")
    assert dict(data.num_examples) == {"train": 6}
    assert data.image_shape == (16, 16, 3)
    images, labels = _arrays(data.splits["train"])
    assert images.shape == (6, 16, 16, 3) and images.dtype == np.uint8
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    rgb, rgba, grey = arrays["rgb"], arrays["rgba"], arrays["grey"]
    exact = [im for im in images if np.array_equal(im, rgb)]
    assert len(exact) == 2  # PNG and BMP are lossless
    assert any(np.array_equal(im, rgba[..., :3]) for im in images)  # RGBA: alpha dropped
    assert any(np.array_equal(im, np.repeat(grey[..., None], 3, -1)) for im in images)
    jpeg = [im for im in images if 0 < np.abs(im.astype(int) - rgb).mean() < 20]
    assert jpeg  # the JPEG decodes close to its source
    gif = np.asarray(Image.open(root / "dog" / "d.gif").convert("RGB"))
    assert any(np.array_equal(im, gif) for im in images)


def test_folder_without_verify_counts_files_as_an_upper_bound(image_folder):
    root, _ = image_folder
    data = pipelines.load(f"folder:{root}", validation_fraction=0.0, verify=False)
    assert pipelines.load(f"folder:{root}", validation_fraction=0.0).exact_sizes is True
    assert data.exact_sizes is False and data.skipped_files == ()
    assert dict(data.num_examples) == {"train": 7}  # every image file, the corrupt one too
    assert data.image_shape is None  # not decoded, so unknown
    _, labels = _arrays(data.splits["train"])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]  # the corrupt file is dropped
    # The training pipeline must not assert 7 examples per epoch: 2 epochs of 6 batches of 1.
    train = pipelines.make_train_dataset(
        data,
        image_size=(16, 16),
        global_batch_size=1,
        augment="cifar",
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        epochs=2,
    )
    assert int(train.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    seen = [int(y[0]) for _, y in train]
    assert len(seen) == 12 and sorted(seen) == [0] * 6 + [1] * 6
    assert pipelines.steps_per_epoch(data.num_examples["train"], 1) == 7  # an upper bound


def test_folder_split_layout_and_carved_validation(tmp_path):
    rng = np.random.default_rng(1)
    for split, per_class in (("train", 10), ("test", 2)):
        for cls in ("a", "b", "c"):
            for k in range(per_class):
                size = (12 + k, 10) if split == "train" else (8, 8)
                _write(
                    tmp_path / split / cls / f"{k}.png",
                    rng.integers(0, 256, (*size, 3), dtype=np.uint8),
                )
    data = pipelines.load(f"folder:{tmp_path}", validation_fraction=0.2, split_seed=3)
    assert dict(data.num_examples) == {"train": 24, "validation": 6, "test": 6}
    assert data.image_shape is None  # sizes vary
    _, val_labels = zip(*data.splits["validation"].as_numpy_iterator(), strict=True)
    assert sorted(val_labels) == [0, 0, 1, 1, 2, 2]  # stratified per class
    first = [x.tobytes() for x, _ in data.splits["validation"].as_numpy_iterator()]
    again = pipelines.load(f"folder:{tmp_path}", validation_fraction=0.2, split_seed=3)
    assert first == [x.tobytes() for x, _ in again.splits["validation"].as_numpy_iterator()]


def test_folder_too_small_to_carve_keeps_everything_in_train(tmp_path):
    for cls in ("a", "b"):
        for k in range(2):
            _write(tmp_path / cls / f"{k}.png", np.full((4, 4, 3), k * 50, np.uint8))
    data = pipelines.load(f"folder:{tmp_path}", validation_fraction=0.1)
    assert dict(data.num_examples) == {"train": 4} and set(data.splits) == {"train"}


def test_sources_say_whether_a_mirrored_image_keeps_its_class(image_folder):
    root, _ = image_folder
    assert pipelines.load("digits").mirror_invariant is False
    with tfds.testing.mock_data(num_examples=2):
        assert pipelines.load("tfds:mnist", download=True).mirror_invariant is False
        assert pipelines.load("tfds:cifar10", download=True).mirror_invariant is True
        declared = pipelines.load("tfds:cifar10", download=True, mirror_invariant=False)
    assert declared.mirror_invariant is False
    assert pipelines.load(f"folder:{root}").mirror_invariant is True
    assert pipelines.load(f"folder:{root}", mirror_invariant=False).mirror_invariant is False
    with pytest.raises(ValueError, match="mirror_invariant must be True or False, got 'no'"):
        pipelines.load(f"folder:{root}", mirror_invariant="no")


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipelines.load(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="No class folders"):
        pipelines.load(f"folder:{tmp_path}")
    (tmp_path / "test" / "zebra").mkdir(parents=True)
    _write(tmp_path / "train" / "a" / "x.png", np.zeros((4, 4, 3), np.uint8))
    _write(tmp_path / "train" / "b" / "x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"class folder\(s\) \['zebra'\].*\['a', 'b'\]"):
        pipelines.load(f"folder:{tmp_path}")
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\), got 1.5"):
        pipelines.load(f"folder:{tmp_path}", validation_fraction=1.5)


def _two_classes(root: Path, per_class: int = 2) -> None:
    for cls in ("cat", "dog"):
        for k in range(per_class):
            _write(root / cls / f"{k}.png", np.full((4, 4, 3), 40 * k + 7, np.uint8))


def test_folder_reads_only_regular_files(tmp_path, caplog, monkeypatch):
    """A FIFO named like an image would block reading forever; a socket, a directory named
    like an image or a dangling link is no image either. A link to an image is one."""
    root = tmp_path / "pets"
    _two_classes(root)
    cat = root / "cat"
    os.mkfifo(cat / "fifo.jpg")
    (cat / "folder.jpg").mkdir()
    (cat / "gone.png").symlink_to(tmp_path / "missing.png")
    (cat / "link.png").symlink_to(cat / "0.png")
    monkeypatch.chdir(cat)  # a short relative path: socket paths are limited to ~100 bytes
    server = socket.socket(socket.AF_UNIX)
    server.bind("sock.png")
    result: dict[str, object] = {}

    def load() -> None:
        try:
            result["data"] = pipelines.load(f"folder:{root}", validation_fraction=0.0)
        except Exception as exc:  # reported below
            result["error"] = exc

    with caplog.at_level(logging.WARNING, logger="pipelines.sources"):
        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        worker.join(timeout=120)  # a safety net, not a timing: the fix never opens the FIFO
        hung = worker.is_alive()
        if hung:  # blocked opening the FIFO: give it a writer, then EOF, so the thread ends
            os.close(os.open(cat / "fifo.jpg", os.O_WRONLY | os.O_NONBLOCK))
            worker.join()
    server.close()
    assert not hung, "pipelines.load blocked opening the FIFO"
    assert "error" not in result, result.get("error")
    data = result["data"]
    assert dict(data.num_examples) == {"train": 5}  # 4 images and the link to one
    assert sorted(Path(p).name for p in data.skipped_files) == ["fifo.jpg", "gone.png", "sock.png"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("corrupt image file" in m and "gone.png" in m for m in messages)
    assert any("not a regular file" in m and "fifo.jpg" in m for m in messages)
    unverified = pipelines.load(f"folder:{root}", validation_fraction=0.0, verify=False)
    assert dict(unverified.num_examples) == {"train": 5}


def test_folder_with_one_class_is_an_error(tmp_path):
    for k in range(3):
        _write(tmp_path / "train" / "cat" / f"{k}.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(
        ValueError, match=r"only 1 class folder, \['cat'\].*at least two class folders"
    ):
        pipelines.load(f"folder:{tmp_path}")


def test_folder_class_without_readable_images_is_an_error(tmp_path):
    _two_classes(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError) as info:
        pipelines.load(f"folder:{tmp_path}")
    message = str(info.value)
    assert "['broken', 'empty']" in message and str(tmp_path) in message
    assert "remove" in message and "\n" not in message


def test_folder_of_only_corrupt_images_names_the_folder(tmp_path, caplog):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(b"not a png")
    with (
        caplog.at_level(logging.WARNING, logger="pipelines.sources"),
        pytest.raises(ValueError) as info,
    ):
        pipelines.load(f"folder:{tmp_path}")
    message = str(info.value)
    assert f"None of the 2 image files under {str(tmp_path)!r} could be read" in message
    assert str(tmp_path / "cat" / "x.png") in message and "\n" not in message
    assert not caplog.records  # the error is the one line the user sees


def test_validation_fraction_must_leave_every_class_training_images(tmp_path):
    _write(tmp_path / "cat" / "0.png", np.zeros((4, 4, 3), np.uint8))
    for k in range(10):
        _write(tmp_path / "dog" / f"{k}.png", np.full((4, 4, 3), k, np.uint8))
    with pytest.raises(ValueError, match=r"validation_fraction 0\.6 .*\['cat'\]"):
        pipelines.load(f"folder:{tmp_path}", validation_fraction=0.6)
    assert pipelines.load(f"folder:{tmp_path}", validation_fraction=0.4).num_examples == {
        "train": 7,
        "validation": 4,
    }
    no_train = r"validation_fraction 0\.9 .*no training examples"
    with tfds.testing.mock_data(num_examples=1), pytest.raises(ValueError, match=no_train):
        pipelines.load("tfds:mnist", download=True, validation_fraction=0.9)


def test_tfds_incomplete_data_folder_is_data_unavailable(tmp_path):
    """Only the metadata of a dataset (an interrupted copy): TFDS takes it as prepared."""
    builder = tfds.builder("mnist", data_dir=str(tmp_path))
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    with pytest.raises(DataUnavailableError) as info:
        pipelines.load("tfds:mnist", data_dir=str(tmp_path))
    message = str(info.value)
    assert str(builder.data_path) in message and "incomplete" in message
    assert "--download" in message and "\n" not in message
    (builder.data_path / "dataset_info.json").write_text("{ not json")
    with pytest.raises(DataUnavailableError, match=r"Could not open TFDS dataset 'mnist'"):
        pipelines.load("tfds:mnist", data_dir=str(tmp_path))
