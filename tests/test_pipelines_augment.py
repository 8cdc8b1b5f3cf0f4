"""Properties of each augmentation op, the presets and their configuration."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipelines import augment as A

SEED = tf.constant([3, 7], tf.int64)
OTHER_SEED = tf.constant([4, 7], tf.int64)


def _images(batch: int = 16, height: int = 12, width: int = 12, seed: int = 0) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(0.05, 0.95, (batch, height, width, 3)), tf.float32)


def test_flip_is_an_exact_mirror_or_identity():
    x = _images(64)
    y = A.random_flip(x, SEED).numpy()
    mirrored = [np.array_equal(yi, xi[:, ::-1]) for xi, yi in zip(x.numpy(), y, strict=True)]
    same = [np.array_equal(yi, xi) for xi, yi in zip(x.numpy(), y, strict=True)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True))
    assert 16 < sum(mirrored) < 48  # about half flipped
    assert np.array_equal(y, A.random_flip(x, SEED).numpy())
    assert not np.array_equal(y, A.random_flip(x, OTHER_SEED).numpy())


def test_pad_crop_is_a_window_of_the_zero_padded_image():
    x = _images(32, 8, 10)
    pad = 2
    y = A.random_pad_crop(x, SEED, pad).numpy()
    assert y.shape == x.shape and y.dtype == np.float32
    padded = np.pad(x.numpy(), [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    offsets = set()
    for k in range(len(y)):
        hits = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if np.array_equal(y[k], padded[k, dy : dy + 8, dx : dx + 10])
        ]
        assert len(hits) == 1, k
        offsets.add(hits[0])
    assert len(offsets) > 5  # offsets vary across the batch


def test_fused_pad_crop_and_flip_equals_crop_then_flip():
    x = _images(32, 8, 10)
    fused = A.random_pad_crop(x, SEED, 2, flip_seed=OTHER_SEED)
    sequential = A.random_flip(A.random_pad_crop(x, SEED, 2), OTHER_SEED)
    assert np.array_equal(fused.numpy(), sequential.numpy())


@pytest.mark.parametrize("height,width", [(32, 32), (20, 60), (60, 20)])
def test_resized_crop_boxes_lie_within_the_image(height, width):
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = A.sample_crop_boxes(SEED, 512, height, width, scale, ratio).numpy()
    top, left, h, w = boxes.T
    assert np.all(top >= 0) and np.all(left >= 0)
    assert np.all(top + h <= height + 1e-4) and np.all(left + w <= width + 1e-4)
    assert np.all(h >= 1) and np.all(w >= 1)
    area = h * w / (height * width)
    aspect = w / h
    sampled = (area >= scale[0] - 1e-4) & (aspect >= ratio[0] - 1e-4) & (aspect <= ratio[1] + 1e-4)
    fallback = ~sampled
    # Boxes either meet the scale and ratio ranges or are the centred fallback.
    assert sampled.mean() > 0.9
    assert np.allclose(top[fallback], (height - h[fallback]) / 2, atol=1e-3)
    assert area.max() <= 1 + 1e-6 and area.max() - area.min() > 0.3  # areas vary widely


def test_resized_crop_aspect_ratios_are_log_uniform():
    ratio = (3 / 4, 4 / 3)
    # Areas up to half the square image: every first draw fits, so nothing is rejected and
    # log(aspect) is exactly uniform on log(ratio).
    boxes = A.sample_crop_boxes(SEED, 20_000, 224, 224, (0.08, 0.5), ratio).numpy()
    log_aspect = np.sort(np.log(boxes[:, 3] / boxes[:, 2]))
    lo, hi = np.log(ratio)
    assert log_aspect.min() >= lo - 1e-3 and log_aspect.max() <= hi + 1e-3
    uniform = lo + (hi - lo) * (np.arange(1, 20_001) - 0.5) / 20_000
    assert np.abs(log_aspect - uniform).max() < 0.01 * (hi - lo) + 2e-3  # close to its CDF
    # Default scale (some large draws rejected): still median 1 and symmetric in log space.
    boxes = A.sample_crop_boxes(OTHER_SEED, 20_000, 224, 224, (0.08, 1.0), ratio).numpy()
    log_aspect = np.log(boxes[:, 3] / boxes[:, 2])
    assert abs(np.median(log_aspect)) < 0.01
    quantiles = np.quantile(log_aspect, [0.05, 0.25, 0.75, 0.95])
    assert np.allclose(quantiles[:2], -quantiles[:1:-1], atol=0.01)
    assert quantiles[3] > 0.8 * hi  # spread over the whole range, not piled up at 1


def test_resized_crop_of_the_full_box_is_the_identity_and_shapes_follow_size():
    x = _images(4, 16, 16)
    same = A.random_resized_crop(x, SEED, (16, 16), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert np.allclose(same.numpy(), x.numpy(), atol=1e-5)
    y = A.random_resized_crop(x, SEED, (24, 20))
    assert y.shape == (4, 24, 20, 3) and y.dtype == tf.float32
    assert float(tf.reduce_min(y)) >= 0.0 and float(tf.reduce_max(y)) <= 1.0


def test_resized_crop_single_handles_any_size():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (37, 53, 3)), tf.uint8)
    out = A.random_resized_crop_single(image, SEED, (16, 16))
    assert out.shape == (16, 16, 3) and out.dtype == tf.uint8


def test_resize_and_center_crop():
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (2, 40, 40, 3)), tf.float32)
    assert np.array_equal(A.resize_and_center_crop(x, (40, 40), 0.5).numpy(), x.numpy())
    # crop_fraction 0.5 at the same scale: an exact centre crop.
    centre = A.resize_and_center_crop(x, (20, 20), 0.5).numpy()
    assert np.allclose(centre, x.numpy()[:, 10:30, 10:30], atol=1e-3)
    wide = tf.zeros([30, 90, 3], tf.uint8)
    assert A.resize_and_center_crop(wide, (24, 24), 0.875).shape == (24, 24, 3)
    with pytest.raises(ValueError, match="crop_fraction must be in"):
        A.resize_and_center_crop(x, (20, 20), 0.0)


def test_color_jitter_ranges_and_factors():
    x = _images(32)
    y = A.color_jitter(x, SEED, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    assert y.shape == x.shape and y.dtype == tf.float32
    assert float(tf.reduce_min(y)) >= 0.0 and float(tf.reduce_max(y)) <= 1.0
    assert not np.allclose(y.numpy(), x.numpy())
    # Brightness alone multiplies each image by one factor in [0.6, 1.4].
    dim = x * 0.5
    b = A.color_jitter(dim, SEED, brightness=0.4).numpy()
    factors = b / dim.numpy()
    per_image = factors.reshape(32, -1)
    assert np.allclose(per_image, per_image[:, :1], atol=1e-4)
    assert per_image.min() >= 0.6 - 1e-5 and per_image.max() <= 1.4 + 1e-5
    # Hue and saturation leave grey images grey.
    grey = tf.repeat(_images(8)[..., :1], 3, axis=-1)
    g = A.color_jitter(grey, SEED, saturation=0.4, hue=0.5).numpy()
    assert np.allclose(g, grey.numpy(), atol=1e-5)


def _luma(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114])


def test_hue_alone_rotates_hue_within_the_range_and_keeps_saturation_and_value():
    rng = np.random.default_rng(2)
    hsv = np.stack(
        [
            rng.uniform(0, 1, (64, 6, 6)),
            rng.uniform(0.6, 1.0, (64, 6, 6)),  # saturated: hue is well defined
            rng.uniform(0.5, 1.0, (64, 6, 6)),
        ],
        axis=-1,
    )
    x = tf.image.hsv_to_rgb(tf.constant(hsv, tf.float32))
    out = tf.image.rgb_to_hsv(A.color_jitter(x, SEED, hue=0.1)).numpy()
    before = tf.image.rgb_to_hsv(x).numpy()
    assert np.allclose(out[..., 1:], before[..., 1:], atol=1e-4)  # S and V unchanged
    shift = (out[..., 0] - before[..., 0] + 0.5) % 1.0 - 0.5  # on the colour wheel
    per_image = shift.reshape(64, -1)
    assert np.allclose(per_image, per_image[:, :1], atol=1e-4)  # one shift per image
    assert np.abs(per_image).max() <= 0.1 + 1e-4
    assert per_image[:, 0].min() < -0.05 and per_image[:, 0].max() > 0.05  # both ways


def test_contrast_alone_keeps_each_images_mean_grey():
    x = tf.constant(np.random.default_rng(3).uniform(0.35, 0.65, (32, 8, 8, 3)), tf.float32)
    y = A.color_jitter(x, SEED, contrast=0.4).numpy()
    x = x.numpy()
    mean_before = _luma(x).mean(axis=(1, 2))
    assert np.allclose(_luma(y).mean(axis=(1, 2)), mean_before, atol=1e-5)
    # Every pixel moves away from (or towards) that mean grey by one factor per image.
    factor = (y - mean_before[:, None, None, None]) / (x - mean_before[:, None, None, None])
    per_image = factor.reshape(32, -1)
    assert np.allclose(per_image, np.median(per_image, axis=1, keepdims=True), atol=1e-2)
    assert per_image.min() >= 0.6 - 1e-2 and per_image.max() <= 1.4 + 1e-2
    assert np.ptp(np.median(per_image, axis=1)) > 0.3  # factors differ between images


def test_saturation_alone_keeps_every_pixels_grey_value():
    x = tf.constant(np.random.default_rng(4).uniform(0.3, 0.7, (32, 8, 8, 3)), tf.float32)
    y = A.color_jitter(x, SEED, saturation=0.4).numpy()
    x = x.numpy()
    grey = _luma(x)[..., None]
    assert np.allclose(_luma(y)[..., None], grey, atol=1e-5)
    factor = ((y - grey) / (x - grey)).reshape(32, -1)
    assert np.allclose(factor, np.median(factor, axis=1, keepdims=True), atol=1e-2)
    assert factor.min() >= 0.6 - 1e-2 and factor.max() <= 1.4 + 1e-2
    assert np.ptp(np.median(factor, axis=1)) > 0.3


def test_pca_lighting_offsets_follow_eigenvectors_and_keep_the_mean():
    eigval = (0.2175, 0.0188, 0.0045)
    eigvec = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    x = tf.fill([4096, 4, 4, 3], 0.5)
    y = A.pca_lighting(x, SEED, 0.1, eigval, eigvec).numpy()
    offsets = y - 0.5
    assert np.allclose(offsets, offsets[:, :1, :1, :], atol=1e-6)  # one offset per image
    per_channel_mean = y.mean(axis=(0, 1, 2))
    assert np.allclose(per_channel_mean, 0.5, atol=0.002)
    coefficients = offsets[:, 0, 0, :] @ eigvec  # project onto the eigenvectors
    assert np.allclose(coefficients.std(axis=0), 0.1 * np.asarray(eigval), rtol=0.1)


def test_random_erasing_blanks_one_rectangle():
    x = _images(64, 20, 20)
    y = A.random_erasing(x, SEED, 1.0, fill="zero").numpy()
    changed = np.any(y != x.numpy(), axis=-1)
    for k in range(len(y)):
        rows = np.flatnonzero(changed[k].any(axis=1))
        cols = np.flatnonzero(changed[k].any(axis=0))
        if rows.size == 0:
            continue  # a box smaller than a pixel centre spacing can miss every centre
        box = changed[k, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all()  # the erased pixels form a full rectangle
        assert np.all(y[k, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] == 0)
        assert box.size / 400 <= 1 / 3 + 0.15
    assert np.mean(changed.any(axis=(1, 2))) > 0.9
    assert np.array_equal(A.random_erasing(x, SEED, 0.0).numpy(), x.numpy())
    with pytest.raises(ValueError, match="fill='blue' is not one of"):
        A.random_erasing(x, SEED, 1.0, fill="blue")


@pytest.mark.parametrize("mixup,cutmix", [(0.4, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_mix_batch_labels_match_the_mixed_pixels(mixup, cutmix):
    classes = 32
    values = np.linspace(0.0, 1.0, classes, dtype=np.float32)
    x = tf.constant(np.broadcast_to(values[:, None, None, None], (classes, 8, 8, 3)))
    onehot = tf.one_hot(tf.range(classes), classes)
    y_img, y_lab = A.mix_batch(x, onehot, SEED, mixup=mixup, cutmix=cutmix)
    y_lab = y_lab.numpy()
    assert y_lab.shape == (classes, classes) and y_lab.dtype == np.float32
    assert np.allclose(y_lab.sum(axis=1), 1.0, atol=1e-5)
    # Each image's mean pixel equals the label-weighted mean of the source values.
    assert np.allclose(y_img.numpy().mean(axis=(1, 2, 3)), y_lab @ values, atol=1e-4)
    assert (y_lab.max(axis=1) < 0.999).sum() > classes // 4  # many examples were mixed


def test_augment_batch_presets_shapes_and_dtypes():
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)), tf.uint8)
    labels = tf.constant(np.arange(8) % 4, tf.int64)
    eigval, eigvec = (0.2, 0.02, 0.005), np.eye(3)
    for name in A.PRESETS:
        x, y = A.augment_batch(
            images,
            labels,
            SEED,
            A.PRESETS[name],
            image_size=(24, 24),
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            num_classes=4,
            eigval=eigval,
            eigvec=eigvec,
        )
        assert x.shape == (8, 24, 24, 3) and x.dtype == tf.float32, name
        assert np.isfinite(x.numpy()).all()
        if A.PRESETS[name].mixes_labels:
            assert y.shape == (8, 4) and y.dtype == tf.float32
        else:
            assert y.dtype == tf.int64 and np.array_equal(y.numpy(), labels.numpy())
    none, _ = A.augment_batch(
        images,
        labels,
        SEED,
        A.PRESETS["none"],
        image_size=(32, 32),
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
    )
    expected = (images.numpy() / 255.0 - 0.5) / 0.25
    assert np.allclose(none.numpy(), expected, atol=1e-5)


def test_augment_batch_needs_num_classes_and_pca():
    images = tf.zeros([2, 8, 8, 3], tf.uint8)
    labels = tf.zeros([2], tf.int64)
    with pytest.raises(ValueError, match="num_classes"):
        A.augment_batch(
            images,
            labels,
            SEED,
            A.AugmentConfig(mixup=0.2),
            image_size=(8, 8),
            mean=(0,) * 3,
            std=(1,) * 3,
        )
    with pytest.raises(ValueError, match="eigval and eigvec"):
        A.augment_batch(
            images,
            labels,
            SEED,
            A.AugmentConfig(lighting=0.1),
            image_size=(8, 8),
            mean=(0,) * 3,
            std=(1,) * 3,
        )


def test_get_augment_config_parses_switches():
    config = A.get_augment_config("cifar,mixup=0.2,scale=0.25:1,flip=false", hue=0.05)
    assert config.crop == "pad" and config.mixup == 0.2 and config.scale == (0.25, 1.0)
    assert config.flip is False and config.hue == 0.05
    assert A.get_augment_config(config) is config
    assert A.get_augment_config("strong").mixes_labels


@pytest.mark.parametrize(
    "value,expected",
    [("false", False), ("Off", False), ("0", False), ("yes", True), (" TRUE ", True), (0, False)],
)
def test_keyword_overrides_read_text_like_the_spec_string(value, expected):
    assert A.get_augment_config("cifar", flip=value).flip is expected
    assert A.AugmentConfig(flip=value).flip is expected
    assert A.get_augment_config("cifar", flip=f"{value}".strip()) == A.get_augment_config(
        f"cifar,flip={value}"
    )


def test_keyword_overrides_parse_numbers_and_ranges():
    config = A.get_augment_config("none", hue="0.05", scale="0.25:1", mixup=np.float32(0.5))
    assert config.hue == 0.05 and config.scale == (0.25, 1.0) and config.mixup == 0.5
    assert type(config.mixup) is float


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"flip": "maybe"}, r"flip='maybe': expected true/false .*'yes', 'on', '0', 'false'"),
        ({"flip": 2}, r"flip=2: expected true/false"),
        ({"flip": None}, r"flip=None: expected true/false"),
        ({"hue": "a lot"}, r"hue='a lot': expected a number"),
        ({"mixup": True}, r"mixup=True: expected a number"),
        ({"brightness": float("nan")}, r"brightness=nan: expected a finite number"),
    ],
)
def test_keyword_overrides_reject_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        A.get_augment_config("cifar", **overrides)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("autoaugment", r"Unknown augmentation preset 'autoaugment'; accepted: \['none', 'cifar'"),
        ("cifar,blur=1", r"Bad augmentation switch 'blur=1'.*key one of \['crop'"),
        ("cifar,flip=maybe", r"flip='maybe': expected true/false"),
        ("cifar,scale=0.5", r"expected LOW:HIGH"),
        ("cifar,crop=rotate", r"crop='rotate' is not one of \['none', 'pad', 'resized'\]"),
        ("cifar,hue=0.7", r"hue=0.7 must be in \[0.0, 0.5\]"),
        ("cifar,scale=0.5:2", r"scale=\(0.5, 2.0\) must satisfy 0 < low <= high <= 1"),
    ],
)
def test_get_augment_config_rejects_bad_values(spec, message):
    with pytest.raises(ValueError, match=message):
        A.get_augment_config(spec)


def test_ops_run_inside_a_graph_with_a_tensor_seed():
    @tf.function
    def run(x, seed):
        x = A.random_flip(x, seed)
        x = A.random_pad_crop(x, seed, 2)
        x = A.color_jitter(x, seed, 0.2, 0.2, 0.2, 0.05)
        return A.random_erasing(x, seed, 0.5)

    x = _images(4)
    a = run(x, SEED).numpy()
    assert np.array_equal(a, run(x, SEED).numpy())
    assert not np.array_equal(a, run(x, OTHER_SEED).numpy())
