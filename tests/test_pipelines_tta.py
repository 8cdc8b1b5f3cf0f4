"""Test-time augmentation: the views and the averaged probabilities."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import tta


def _images(n: int = 5, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, size, size, 3)).astype(np.float32)


def _dense_model(size: int, classes: int = 4) -> keras.Model:
    """A model that sees pixel positions (so flips and crops change its output)."""
    model = keras.Sequential(
        [keras.Input((size, size, 3)), keras.layers.Flatten(), keras.layers.Dense(classes)]
    )
    model.layers[-1].set_weights(
        [
            np.random.default_rng(1).normal(size=(size * size * 3, classes)).astype(np.float32),
            np.zeros(classes, np.float32),
        ]
    )
    return model


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_ten_crop_views_are_corners_centre_and_mirrors():
    x = _images(2, 8)
    views = [v.numpy() for v in tta.views(x, "10crop", crop_size=6)]
    assert len(views) == 10 and all(v.shape == (2, 6, 6, 3) for v in views)
    expected = [x[:, :6, :6], x[:, :6, 2:], x[:, 2:, :6], x[:, 2:, 2:], x[:, 1:7, 1:7]]
    for k, crop in enumerate(expected):
        assert np.array_equal(views[k], crop)
        assert np.array_equal(views[k + 5], crop[:, :, ::-1])
    resized = tta.views(x, "10crop", crop_size=(6, 6), output_size=(8, 8))
    assert all(v.shape == (2, 8, 8, 3) for v in resized)


def test_flip_views_and_bad_modes():
    x = _images(2)
    a, b = (v.numpy() for v in tta.views(x, "flip"))
    assert np.array_equal(a, x) and np.array_equal(b, x[:, :, ::-1])
    with pytest.raises(ValueError, match=r"Unknown TTA mode '5crop'; accepted: \['none', 'flip'"):
        tta.views(x, "5crop")
    with pytest.raises(ValueError, match=r"crop_size \(9, 9\) must fit"):
        tta.views(x, "10crop", crop_size=9)


def test_flip_predict_averages_softmax_of_logits():
    x = _images(5)
    model = _dense_model(8)
    logits = model(x).numpy()
    mirrored = model(x[:, :, ::-1]).numpy()
    probs = tta.predict(model, x, mode="flip", batch_size=2)
    assert probs.shape == (5, 4)
    assert np.allclose(probs, (_softmax(logits) + _softmax(mirrored)) / 2, atol=1e-5)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(tta.predict(model, x, mode="none"), _softmax(logits), atol=1e-5)


def test_ten_crop_defaults_to_the_model_input_size():
    x = _images(3, 8)
    model = _dense_model(6)
    probs = tta.predict(model, x, mode="10crop")
    manual = np.mean([_softmax(model(v).numpy()) for v in tta.views(x, "10crop", 6)], axis=0)
    assert np.allclose(probs, manual, atol=1e-5)


def test_probabilities_are_averaged_as_given_when_not_logits():
    x = _images(4)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    probs = tta.predict(model, x, mode="flip", from_logits=False)
    manual = (model(x).numpy() + model(x[:, :, ::-1]).numpy()) / 2
    assert np.allclose(probs, manual, atol=1e-6)


def test_evaluate_counts_accuracy():
    x = _images(6)
    model = _dense_model(8)
    predicted = tta.predict(model, x, mode="flip").argmax(axis=1)
    labels = predicted.copy()
    labels[:2] = (labels[:2] + 1) % 4  # two wrong on purpose
    ds = tf.data.Dataset.from_tensor_slices((x, labels.astype(np.int64))).batch(4)
    result = tta.evaluate(model, ds, mode="flip")
    assert result == {"accuracy": pytest.approx(4 / 6), "num_examples": 6.0}
