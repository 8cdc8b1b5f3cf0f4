"""The ``files:<path>`` source: one folder of images labelled by a regex on their names."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipelines

PETS = r"^(.+)_\d+\.jpg$"
# Class -> the colour channel that dominates its images, so a label mistake shows.
COLOURS = {"Abyssinian": 0, "beagle": 1, "great_pyrenees": 2}


def _image(channel: int, shade: int = 0) -> np.ndarray:
    """A 16x16 image bright in ``channel``; ``shade`` makes files of one class differ."""
    image = np.full((16, 16, 3), 20, np.uint8)
    image[..., channel] = 180 + shade
    return image


def _pets(root: Path, per_class: int = 6, ext: str = ".jpg") -> None:
    """Pet-style files ``<class>_<k><ext>`` directly in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, channel in COLOURS.items():
        for k in range(per_class):
            Image.fromarray(_image(channel, 10 * k)).save(root / f"{name}_{k + 1}{ext}")


def _examples(data: pipelines.ImageDataset, split: str) -> list[tuple[np.ndarray, int]]:
    return [(x, int(y)) for x, y in data.splits[split].as_numpy_iterator()]


def _check_colours(data: pipelines.ImageDataset) -> None:
    """Every example's label is the class whose colour its image has."""
    for split in data.splits:
        for image, label in _examples(data, split):
            channel = int(image.reshape(-1, 3).mean(0).argmax())
            assert COLOURS[data.class_names[label]] == channel


def test_classes_and_labels_come_from_the_regex(tmp_path):
    _pets(tmp_path)
    data = pipelines.load(f"files:{tmp_path}", label_regex=PETS)
    assert isinstance(data, pipelines.ImageDataset)
    assert data.name == f"files:{tmp_path}"
    assert data.class_names == ("Abyssinian", "beagle", "great_pyrenees")
    assert set(data.splits) == {"train", "validation"}  # no test split
    assert dict(data.num_examples) == {"train": 15, "validation": 3}  # round(0.1 * 6) = 1
    assert data.image_shape == (16, 16, 3)
    assert data.skipped_files == () and data.unlabelled_files == ()
    _check_colours(data)
    labels = [y for split in data.splits for _, y in _examples(data, split)]
    assert sorted(labels) == [0] * 6 + [1] * 6 + [2] * 6


def test_a_group_named_label_is_the_class(tmp_path):
    for k, (name, channel) in enumerate(COLOURS.items()):
        for i in range(3):
            path = tmp_path / f"{9 - k}{i}_{name}.png"
            Image.fromarray(_image(channel, i)).save(path)
    data = pipelines.load(
        f"files:{tmp_path}", label_regex=r"^(\d)\d_(?P<label>.+)\.png$", validation_fraction=0.0
    )
    assert data.class_names == ("Abyssinian", "beagle", "great_pyrenees")  # not 7, 8, 9
    _check_colours(data)


def test_unmatched_files_are_reported_and_recorded(tmp_path, caplog):
    _pets(tmp_path)
    Image.fromarray(_image(0)).save(tmp_path / "README_1.JPG")  # the regex wants .jpg
    Image.fromarray(_image(1)).save(tmp_path / "foo.png")
    (tmp_path / "notes.txt").write_text("not an image: neither loaded nor reported")
    with caplog.at_level(logging.WARNING, logger="pipelines.sources"):
        data = pipelines.load(f"files:{tmp_path}", label_regex=PETS, validation_fraction=0.0)
    assert data.unlabelled_files == (str(tmp_path / "README_1.JPG"), str(tmp_path / "foo.png"))
    assert data.class_names == tuple(COLOURS) and dict(data.num_examples) == {"train": 18}
    assert data.skipped_files == ()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"files:{tmp_path}: 2 of 20 image files do not match --label-regex '{PETS}' and are "
        "left out: README_1.JPG, foo.png"
    ]
    _check_colours(data)


def test_many_unmatched_files_are_counted_and_a_few_named(tmp_path, caplog):
    _pets(tmp_path, per_class=2)
    for k in range(7):
        Image.fromarray(_image(0)).save(tmp_path / f"x{k}.png")
    with caplog.at_level(logging.WARNING, logger="pipelines.sources"):
        data = pipelines.load(f"files:{tmp_path}", label_regex=PETS, validation_fraction=0.0)
    assert len(data.unlabelled_files) == 7
    (message,) = [r.getMessage() for r in caplog.records]
    assert "7 of 13 image files" in message
    assert message.endswith("left out: x0.png, x1.png, x2.png, x3.png, x4.png and 2 more")


def test_no_matching_file_is_an_error(tmp_path):
    _pets(tmp_path, ext=".png")
    with pytest.raises(ValueError) as info:
        pipelines.load(f"files:{tmp_path}", label_regex=PETS)
    message = str(info.value)
    assert f"None of the 18 image files under {str(tmp_path)!r} match" in message
    assert f"--label-regex '{PETS}'" in message and "\n" not in message


def test_a_regex_giving_one_class_is_an_error(tmp_path):
    _pets(tmp_path)
    with pytest.raises(ValueError) as info:
        pipelines.load(f"files:{tmp_path}", label_regex=r"(jpg)$")
    message = str(info.value)
    assert "one class only, 'jpg'" in message
    assert "capture group must pick out the class part of the name" in message


def test_a_regex_giving_each_file_its_own_class_is_an_error(tmp_path):
    _pets(tmp_path, per_class=2)
    with pytest.raises(ValueError, match=r"each of the 6 matching files .* a class of its own"):
        pipelines.load(f"files:{tmp_path}", label_regex=r"^(.+)\.jpg$")


def test_label_regex_errors(tmp_path):
    _pets(tmp_path, per_class=2)
    with pytest.raises(ValueError) as info:
        pipelines.load(f"files:{tmp_path}")
    message = str(info.value)
    assert message.startswith(f"files:{tmp_path} needs --label-regex REGEX")
    assert "'^(.+)_\\d+\\.jpg$'" in message and "great_pyrenees_173.jpg" in message
    with pytest.raises(ValueError, match=r"not a valid regular expression: missing \)"):
        pipelines.load(f"files:{tmp_path}", label_regex=r"^(.+_\d+\.jpg$")
    with pytest.raises(ValueError, match="has no capture group: put the class part"):
        pipelines.load(f"files:{tmp_path}", label_regex=r"^.+_\d+\.jpg$")
    with pytest.raises(ValueError, match="--label-regex must be a non-empty string"):
        pipelines.load(f"files:{tmp_path}", label_regex=3)


def test_folder_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(missing))}.*does not exist"):
        pipelines.load(f"files:{missing}", label_regex=PETS)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        pipelines.load(f"files:{tmp_path / 'a.txt'}", label_regex=PETS)
    where = re.escape(repr(str(tmp_path)))
    with pytest.raises(ValueError, match=f"No image files .* under {where}"):
        pipelines.load(f"files:{tmp_path}", label_regex=PETS)


def test_corrupt_and_dangling_files_are_left_out_and_counted(tmp_path, caplog):
    _pets(tmp_path)
    broken = tmp_path / "beagle_99.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    gone = tmp_path / "beagle_98.jpg"
    gone.symlink_to(tmp_path / "nowhere.jpg")
    with caplog.at_level(logging.WARNING, logger="pipelines.sources"):
        data = pipelines.load(f"files:{tmp_path}", label_regex=PETS, validation_fraction=0.0)
    assert sorted(data.skipped_files) == sorted([str(broken), str(gone)])
    assert data.unlabelled_files == ()
    assert dict(data.num_examples) == {"train": 18}
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(broken) in m and "corrupt" in m for m in messages)
    assert any("Skipped 2 unreadable image file(s) of 20" in m for m in messages)
    _check_colours(data)


def test_a_class_of_only_corrupt_files_is_an_error(tmp_path):
    _pets(tmp_path, per_class=2)
    (tmp_path / "corgi_1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"Class\(es\) \['corgi'\] .* have no readable images"):
        pipelines.load(f"files:{tmp_path}", label_regex=PETS)


def _validation_images(data: pipelines.ImageDataset) -> list[bytes]:
    return sorted(x.tobytes() for x, _ in _examples(data, "validation"))


def test_validation_is_a_seeded_stratified_holdout(tmp_path):
    _pets(tmp_path, ext=".png")  # lossless: every file's image is distinct
    regex = r"^(.+)_\d+\.png$"
    data = pipelines.load(
        f"files:{tmp_path}", label_regex=regex, validation_fraction=1 / 3, split_seed=3
    )
    assert dict(data.num_examples) == {"train": 12, "validation": 6}
    assert sorted(y for _, y in _examples(data, "validation")) == [0, 0, 1, 1, 2, 2]
    _check_colours(data)
    train = {x.tobytes() for x, _ in _examples(data, "train")}
    assert train.isdisjoint(_validation_images(data)) and len(train) == 12
    again = pipelines.load(
        f"files:{tmp_path}", label_regex=regex, validation_fraction=1 / 3, split_seed=3
    )
    assert _validation_images(again) == _validation_images(data)
    other = pipelines.load(
        f"files:{tmp_path}", label_regex=regex, validation_fraction=1 / 3, split_seed=4
    )
    assert _validation_images(other) != _validation_images(data)


def test_validation_fraction_must_leave_every_class_training_images(tmp_path):
    _pets(tmp_path, per_class=6)
    Image.fromarray(_image(0)).save(tmp_path / "corgi_1.jpg")
    with pytest.raises(ValueError) as info:
        pipelines.load(f"files:{tmp_path}", label_regex=PETS, validation_fraction=0.6)
    message = str(info.value)
    assert "carves every image of class(es) ['corgi']" in message
    assert str(tmp_path) in message and "lower it" in message


def test_files_are_found_recursively(tmp_path):
    for k, (name, channel) in enumerate(COLOURS.items()):
        for i in range(3):
            folder = tmp_path / f"batch{i}" / ("deep" if k else "")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(channel, i)).save(folder / f"{name}_{i}.jpg")
    hidden = tmp_path / ".cache"
    hidden.mkdir()
    Image.fromarray(_image(0)).save(hidden / "beagle_7.jpg")  # hidden folders are ignored
    data = pipelines.load(f"files:{tmp_path}", label_regex=PETS, validation_fraction=0.0)
    assert data.class_names == tuple(COLOURS)
    assert dict(data.num_examples) == {"train": 9}
    _check_colours(data)


def test_other_sources_reject_label_regex(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        Image.fromarray(_image(0)).save(tmp_path / cls / "cat_1.jpg")
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['label_regex'\].*'folder'"):
        pipelines.load(f"folder:{tmp_path}", label_regex=PETS)
    with pytest.raises(ValueError, match=r"Unknown option\(s\) \['label_regex'\].*'digits'"):
        pipelines.load("digits", label_regex=PETS)
    assert "files:<path>" in pipelines.available_sources()


def _pixels_by_label(data) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for split in data.splits.values():
        for image, label in split.as_numpy_iterator():
            out.setdefault(int(label), []).append(image.tobytes())
    return out


@pytest.mark.parametrize("flat", [False, True], ids=["folder", "flat"])
def test_written_digits_read_back_with_the_same_images_and_labels(tmp_path, flat):
    """`pipelines.write_images` writes what `folder:` (a folder per class) or `files:` (one
    folder, labelled by name) reads back: the same pixels under the same class names."""
    digits = pipelines.load("digits")
    written = pipelines.write_images(digits, tmp_path, classes="27", per_class=5, flat=flat)
    assert written["train"] == 10
    if flat:
        back = pipelines.load(f"files:{tmp_path}", label_regex=r"^(\d)_\d+\.png$")
    else:
        back = pipelines.load(f"folder:{tmp_path}")
        assert back.num_examples["train"] == 10
    assert back.class_names == ("2", "7")
    original = _pixels_by_label(digits)
    for label, images in _pixels_by_label(back).items():
        digit = int(back.class_names[label])
        assert set(images) <= set(original[digit])
    assert sum(map(len, _pixels_by_label(back).values())) == sum(written.values())


def test_write_images_refuses_a_class_the_data_lacks(tmp_path):
    with pytest.raises(ValueError, match="--classes x"):
        pipelines.write_images(pipelines.load("digits"), tmp_path, classes=["x"])
