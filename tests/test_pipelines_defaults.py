"""Data-dependent defaults: the ``auto`` augmentation and the default image size."""

from __future__ import annotations

import dataclasses

import pytest

import pipelines


@pytest.fixture(scope="module")
def digits() -> pipelines.ImageDataset:
    return pipelines.load("digits")


def test_auto_on_digits_is_cifar_without_flips(digits):
    assert not digits.mirror_invariant
    assert pipelines.resolve_augment("auto", digits, 32) == "cifar,flip=false"
    assert pipelines.resolve_augment("auto", digits, (32, 32)) == "cifar,flip=false"
    assert pipelines.resolve_augment("auto", digits, 96) == "imagenet,flip=false"
    config = pipelines.get_augment_config(pipelines.resolve_augment("auto", digits, 32))
    assert config.crop == "pad" and not config.flip


def test_auto_keeps_switches_and_lets_them_win(digits):
    spec = pipelines.resolve_augment(" auto , mixup=0.2 ,", digits, 32)
    assert spec == "cifar,flip=false,mixup=0.2"
    assert pipelines.get_augment_config(spec).mixup == 0.2
    flipped = pipelines.resolve_augment("auto,flip=true", digits, 32)
    assert flipped == "cifar,flip=true"
    assert pipelines.get_augment_config(flipped).flip


def test_auto_picks_by_size_on_mirror_invariant_data(digits):
    photos = dataclasses.replace(digits, mirror_invariant=True)
    assert pipelines.resolve_augment("auto", photos, 64) == "cifar"
    assert pipelines.resolve_augment("auto", photos, 65) == "imagenet"
    assert pipelines.resolve_augment("auto", photos, (32, 100)) == "imagenet"  # the longer side
    assert pipelines.get_augment_config(pipelines.resolve_augment("auto", photos, 224)).flip


def test_other_specs_pass_through_validated(digits):
    assert pipelines.resolve_augment("strong,hue=0.05", digits, 32) == "strong,hue=0.05"
    assert pipelines.resolve_augment("none", digits, 224) == "none"
    with pytest.raises(ValueError, match="Unknown augmentation preset 'sharpen'"):
        pipelines.resolve_augment("sharpen", digits, 32)
    with pytest.raises(ValueError, match="Bad augmentation switch 'bogus=1'"):
        pipelines.resolve_augment("auto,bogus=1", digits, 32)
    with pytest.raises(ValueError, match="Expected an ImageDataset"):
        pipelines.resolve_augment("auto", digits.splits["train"], 32)
    with pytest.raises(ValueError, match="image_size must be a positive int or"):
        pipelines.resolve_augment("auto", digits, (0, 32))
    with pytest.raises(ValueError, match="augment must be a spec string"):
        pipelines.resolve_augment(pipelines.PRESETS["cifar"], digits, 32)


def test_unresolved_auto_is_refused_with_advice(digits):
    with pytest.raises(ValueError, match=r"'auto'.*pipelines\.resolve_augment"):
        pipelines.get_augment_config("auto,mixup=0.2")
    with pytest.raises(ValueError, match=r"resolve_augment"):
        pipelines.make_train_dataset(
            digits,
            image_size=(32, 32),
            global_batch_size=8,
            augment="auto",
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
        )


def test_default_image_size(digits):
    assert pipelines.default_image_size(digits) == 32
    assert pipelines.default_image_size(digits, 224) == 32  # the data's own size wins
    assert pipelines.default_image_size(pipelines.load("digits", image_size=8), 224) == 8
    for shape in (None, (28, 40, 3)):  # sizes vary, or not square
        other = dataclasses.replace(digits, image_shape=shape)
        assert pipelines.default_image_size(other, 227) == 227
        assert pipelines.default_image_size(other) == 224
    with pytest.raises(ValueError, match="model_side must be a positive int or None"):
        pipelines.default_image_size(digits, 0)
    with pytest.raises(ValueError, match="Expected an ImageDataset"):
        pipelines.default_image_size("digits")
