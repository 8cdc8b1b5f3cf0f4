"""Training/evaluation pipelines: shapes, determinism, resumption, sharding, statistics."""

from __future__ import annotations

import json
import logging
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from scripts import run_script

import pipelines

IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def indexed(n: int, size: int = 8, seed: int = 0) -> tf.data.Dataset:
    """``n`` random images whose label is their index, so every example can be traced."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return tf.data.Dataset.from_tensor_slices((images, np.arange(n, dtype=np.int64)))


def varying(n: int) -> tf.data.Dataset:
    """``n`` images of different sizes (label = index)."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (10 + i % 5, 14 + i % 3, 3), dtype=np.uint8) for i in range(n)]
    return tf.data.Dataset.from_generator(
        lambda: iter(zip(images, range(n), strict=True)),
        output_signature=(tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int64)),
    ).apply(tf.data.experimental.assert_cardinality(n))


def batches(ds: tf.data.Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_train_shapes_dtypes_and_cardinality():
    ds = pipelines.make_train_dataset(
        indexed(100), image_size=(8, 8), global_batch_size=16, augment="cifar", epochs=2, **IDENTITY
    )
    assert int(ds.cardinality()) == 12  # 2 epochs of 100 // 16
    out = batches(ds)
    assert len(out) == 12
    for x, y in out:
        assert x.shape == (16, 8, 8, 3) and x.dtype == np.float32
        assert y.shape == (16,) and y.dtype == np.int64


def test_train_epochs_visit_every_example_once_in_new_orders():
    ds = pipelines.make_train_dataset(
        indexed(50),
        image_size=(8, 8),
        global_batch_size=16,
        augment="none",
        epochs=2,
        drop_remainder=False,
        **IDENTITY,
    )
    out = batches(ds)
    assert [len(y) for _, y in out] == [16, 16, 16, 2] * 2  # batches never straddle epochs
    epoch0 = np.concatenate([y for _, y in out[:4]])
    epoch1 = np.concatenate([y for _, y in out[4:]])
    assert sorted(epoch0) == sorted(epoch1) == list(range(50))
    assert not np.array_equal(epoch0, epoch1)
    # augment="none" with identity normalisation returns the pixels unchanged.
    images = np.stack([x for x, _ in indexed(50).as_numpy_iterator()])
    x, y = out[0]
    assert np.allclose(x * 255.0, images[y], atol=1e-3)


def test_infinite_by_default_and_usable_by_keras_fit():
    data = pipelines.load("digits")
    ds = pipelines.make_train_dataset(
        data,
        image_size=(32, 32),
        global_batch_size=32,
        augment="cifar",
        mean=(0.3,) * 3,
        std=(0.3,) * 3,
    )
    assert int(ds.cardinality()) == tf.data.INFINITE_CARDINALITY
    import keras

    model = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = pipelines.steps_per_epoch(data.num_examples["train"], 32)
    assert steps == 1257 // 32
    history = model.fit(ds, epochs=2, steps_per_epoch=3, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("augment", ["cifar", "imagenet", "strong"])
def test_same_seed_same_batches_different_seed_differs(augment):
    data = pipelines.load("digits")

    def run(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        ds = pipelines.make_train_dataset(
            data,
            image_size=(32, 32),
            global_batch_size=64,
            augment=augment,
            seed=seed,
            epochs=1,
            **IDENTITY,
        )
        return batches(ds.take(3))

    a, b, c = run(0), run(0), run(1)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])


def test_order_does_not_depend_on_the_global_seed():
    def run() -> np.ndarray:
        ds = pipelines.make_train_dataset(
            indexed(40),
            image_size=(8, 8),
            global_batch_size=40,
            augment="cifar",
            seed=3,
            epochs=1,
            **IDENTITY,
        )
        return next(iter(ds))[1].numpy()

    tf.random.set_seed(0)
    a = run()
    tf.random.set_seed(1234)
    b = run()
    assert np.array_equal(a, b) and not np.array_equal(a, np.arange(40))


def test_resuming_at_an_epoch_reproduces_that_epoch():
    data = pipelines.load("digits")
    common = dict(image_size=(32, 32), global_batch_size=256, augment="strong", seed=7, **IDENTITY)
    full = batches(pipelines.make_train_dataset(data, epochs=3, **common))
    per_epoch = 1257 // 256
    resumed = batches(pipelines.make_train_dataset(data, initial_epoch=2, epochs=1, **common))
    assert len(full) == 3 * per_epoch and len(resumed) == per_epoch
    for (xa, ya), (xb, yb) in zip(full[2 * per_epoch :], resumed, strict=True):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert not np.array_equal(full[0][0], full[per_epoch][0])  # epochs differ


def test_input_context_shards_and_uses_the_per_replica_batch():
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=4
        )
        ds = pipelines.make_train_dataset(
            indexed(37),
            image_size=(8, 8),
            global_batch_size=16,
            augment="cifar",
            epochs=1,
            drop_remainder=False,
            input_context=context,
            **IDENTITY,
        )
        out = batches(ds)
        assert max(len(y) for _, y in out) == 4  # 16 over 4 replicas
        seen.extend(np.concatenate([y for _, y in out]).tolist())
    assert sorted(seen) == list(range(37))


def test_variable_size_images_are_cropped_per_example():
    for augment in ("imagenet", "cifar", "none"):
        ds = pipelines.make_train_dataset(
            varying(20),
            image_size=(12, 12),
            global_batch_size=8,
            augment=augment,
            epochs=1,
            pca=None,
            **IDENTITY,
        )
        out = batches(ds)
        assert [x.shape for x, _ in out] == [(8, 12, 12, 3)] * 2
        again = batches(
            pipelines.make_train_dataset(
                varying(20),
                image_size=(12, 12),
                global_batch_size=8,
                augment=augment,
                epochs=1,
                **IDENTITY,
            )
        )
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(out, again, strict=True))


def test_mixup_needs_num_classes_and_yields_soft_labels():
    with pytest.raises(ValueError, match="pass num_classes"):
        pipelines.make_train_dataset(
            indexed(32),
            image_size=(8, 8),
            global_batch_size=8,
            augment="cifar,mixup=0.2",
            **IDENTITY,
        )
    ds = pipelines.make_train_dataset(
        indexed(32),
        image_size=(8, 8),
        global_batch_size=8,
        augment="cifar,cutmix=1.0",
        num_classes=32,
        epochs=1,
        **IDENTITY,
    )
    x, y = next(iter(ds))
    assert x.shape == (8, 8, 8, 3)
    assert y.shape == (8, 32) and y.dtype == tf.float32
    assert np.allclose(y.numpy().sum(axis=1), 1.0, atol=1e-5)


def test_eval_same_size_is_plain_normalisation_in_order():
    ds = pipelines.make_eval_dataset(
        indexed(21), image_size=(8, 8), batch_size=8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5)
    )
    out = batches(ds)
    assert [len(y) for _, y in out] == [8, 8, 5]
    labels = np.concatenate([y for _, y in out])
    assert labels.tolist() == list(range(21))
    images = np.stack([x for x, _ in indexed(21).as_numpy_iterator()])
    expected = (images / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
    assert np.allclose(np.concatenate([x for x, _ in out]), expected, atol=1e-5)


def test_eval_resizes_and_centre_crops():
    big = indexed(4, size=16)
    images = np.stack([x for x, _ in big.as_numpy_iterator()])
    # crop_fraction 0.5 to 8x8 means no resize and an exact centre crop.
    out = batches(
        pipelines.make_eval_dataset(
            big, image_size=(8, 8), batch_size=4, crop_fraction=0.5, **IDENTITY
        )
    )
    assert np.allclose(out[0][0] * 255.0, images[:, 4:12, 4:12], atol=1e-3)
    out = batches(
        pipelines.make_eval_dataset(varying(7), image_size=(9, 9), batch_size=4, **IDENTITY)
    )
    assert [x.shape for x, _ in out] == [(4, 9, 9, 3), (3, 9, 9, 3)]


def test_normalize_round_trip():
    x = tf.constant([[[[0, 128, 255]]]], tf.uint8)
    y = pipelines.normalize(x, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert np.allclose(y.numpy().ravel(), [-2.0, (128 / 255 - 0.5) / 0.5, 0.5], atol=1e-6)
    back = pipelines.denormalize(y, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0)).numpy().ravel() * 255
    assert np.allclose(back, [0, 128, 255], atol=1e-3)


def test_compute_stats_matches_numpy_and_caches(tmp_path):
    ds = indexed(30, size=6, seed=3)
    pixels = np.stack([x for x, _ in ds.as_numpy_iterator()]).reshape(-1, 3) / 255.0
    stats = pipelines.compute_stats(ds, batch_size=7)
    assert stats.num_examples == 30
    assert np.allclose(stats.mean, pixels.mean(axis=0), atol=1e-9)
    assert np.allclose(stats.std, pixels.std(axis=0), atol=1e-9)
    cov = np.cov(pixels.T, bias=True)
    vec, val = np.asarray(stats.eigvec), np.asarray(stats.eigval)
    assert len(stats.eigval) == 3 and len(stats.eigvec) == 3
    assert all(len(row) == 3 for row in stats.eigvec)
    assert np.allclose(vec.T @ vec, np.eye(3), atol=1e-9)  # orthonormal columns
    assert np.allclose(vec @ vec.T, np.eye(3), atol=1e-9)
    assert np.allclose(vec @ np.diag(val) @ vec.T, cov, atol=1e-9)
    assert np.all(np.diff(val) <= 0)  # largest first

    mean, std = pipelines.compute_mean_std(ds, cache_dir=tmp_path, key="toy")
    saved = json.loads((tmp_path / "channel_stats.json").read_text())
    assert saved["key"] == "toy" and np.allclose(saved["stats"]["mean"], mean)
    assert np.allclose(saved["stats"]["std"], std) and np.allclose(std, stats.std)
    # The cache is read back, not recomputed: a different dataset under the same key.
    cached, _ = pipelines.compute_mean_std(indexed(5, seed=9), cache_dir=tmp_path, key="toy")
    assert cached == mean
    fresh, _ = pipelines.compute_mean_std(indexed(5, seed=9), cache_dir=tmp_path, key="other")
    assert fresh != mean


def test_compute_stats_variable_size_and_image_dataset():
    stats = pipelines.compute_stats(varying(6))
    assert stats.num_examples == 6
    grey = pipelines.compute_stats(pipelines.load("digits"), max_examples=100)
    vec = np.asarray(grey.eigvec)
    assert len(grey.eigval) == 3 and vec.shape == (3, 3)
    assert np.allclose(vec.T @ vec, np.eye(3), atol=1e-9)
    # Grey images: one component, along (1, 1, 1) / sqrt(3); the others vanish.
    assert np.allclose(np.abs(vec[:, 0]), 1 / np.sqrt(3), atol=1e-6)
    assert grey.eigval[0] > 0.01 and max(grey.eigval[1:]) < 1e-9
    digits = pipelines.load("digits")
    mean, std = pipelines.compute_mean_std(digits, max_examples=200)
    assert len(mean) == 3 and mean[0] == pytest.approx(mean[1]) and 0.1 < mean[0] < 0.5
    assert len(std) == 3 and min(std) > 0.1
    with pytest.raises(ValueError, match=r"has no split 'extra'; it has \['test', 'train'"):
        pipelines.compute_stats(digits, split="extra")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"image_size": (0, 8)}, r"image_size must be positive, got \(0, 8\)"),
        ({"image_size": 8}, r"image_size must be \(height, width\), got 8"),
        ({"global_batch_size": 0}, r"global_batch_size must be a positive int, got 0"),
        ({"mean": (0.5, 0.5)}, r"mean must be 3 finite per-channel values"),
        ({"std": (1.0, 0.0, 1.0)}, r"std must be > 0 for every channel"),
        ({"augment": "autoaugment"}, r"Unknown augmentation preset 'autoaugment'"),
        ({"initial_epoch": -1}, r"initial_epoch must be an int >= 0, got -1"),
        ({"epochs": 0}, r"epochs must be a positive int, got 0"),
    ],
)
def test_train_bad_arguments(kwargs, message):
    args = dict(image_size=(8, 8), global_batch_size=8, **IDENTITY)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        pipelines.make_train_dataset(indexed(8), **args)


def test_bad_datasets_and_eval_arguments():
    with pytest.raises(ValueError, match="Expected elements"):
        pipelines.make_train_dataset(
            tf.data.Dataset.range(3), image_size=(8, 8), global_batch_size=2, **IDENTITY
        )
    with pytest.raises(ValueError, match="crop_fraction must be in"):
        pipelines.make_eval_dataset(
            indexed(4), image_size=(8, 8), batch_size=2, crop_fraction=1.5, **IDENTITY
        )
    with pytest.raises(ValueError, match=r"digits has no split 'dev'"):
        pipelines.make_eval_dataset(
            pipelines.load("digits"), image_size=(8, 8), batch_size=2, split="dev", **IDENTITY
        )


def test_steps_per_epoch():
    assert pipelines.steps_per_epoch(1257, 128) == 9
    assert pipelines.steps_per_epoch(1257, 128, drop_remainder=False) == 10
    # Two workers: shares of 629 and 628, 64 per worker -> 9 full batches each.
    assert pipelines.steps_per_epoch(1257, 128, num_input_pipelines=2) == 9
    # Shares of 24 and 23 with 8 per worker per step: the smallest share has 2 full steps.
    assert pipelines.steps_per_epoch(47, 16, num_input_pipelines=2) == 2
    # Without dropping, the largest share (25 of 49) sets the count: ceil(25 / 8) = 4.
    assert pipelines.steps_per_epoch(49, 16, num_input_pipelines=2, drop_remainder=False) == 4
    assert pipelines.steps_per_epoch(np.int64(1257), np.int32(128)) == 9  # NumPy integers
    with pytest.raises(ValueError, match="global_batch_size must be a positive int, got 0"):
        pipelines.steps_per_epoch(10, 0)
    with pytest.raises(ValueError, match="global_batch_size must be a positive int, got True"):
        pipelines.steps_per_epoch(10, True)
    with pytest.raises(ValueError, match="global_batch_size 10 must be a multiple of num_input"):
        pipelines.steps_per_epoch(100, 10, num_input_pipelines=4)


def test_numpy_integers_are_accepted_and_bools_rejected():
    common = dict(image_size=(8, 8), augment="none", epochs=1, **IDENTITY)
    a = pipelines.make_train_dataset(
        indexed(24), global_batch_size=np.int64(8), seed=np.int32(3), **common
    )
    b = pipelines.make_train_dataset(indexed(24), global_batch_size=8, seed=3, **common)
    ya, yb = [y.numpy() for _, y in a], [y.numpy() for _, y in b]
    assert len(ya) == 3 and all(np.array_equal(u, v) for u, v in zip(ya, yb, strict=True))
    with pytest.raises(ValueError, match="seed must be an int, got True"):
        pipelines.make_train_dataset(indexed(24), global_batch_size=8, seed=True, **common)
    with pytest.raises(ValueError, match=r"global_batch_size must be a positive int, got 8\.0"):
        pipelines.make_train_dataset(indexed(24), global_batch_size=8.0, **common)


def test_a_batch_larger_than_the_data_is_an_error_not_an_endless_loop():
    with pytest.raises(ValueError) as info:
        pipelines.make_train_dataset(
            indexed(10), image_size=(8, 8), global_batch_size=16, **IDENTITY
        )
    message = str(info.value)
    assert "Batch size 16 (--batch-size) is larger than the 10 training examples" in message
    assert "use --batch-size 10 or less" in message
    assert "drop_remainder" not in message and "\n" not in message
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=0, num_replicas_in_sync=4
    )
    # 15 examples: 7 per pipeline; a step takes batch / 2 from each, in multiples of 2.
    with pytest.raises(ValueError, match=r"\(7 per input pipeline of 2\).*--batch-size 12 or"):
        pipelines.make_train_dataset(
            indexed(15), image_size=(8, 8), global_batch_size=16, input_context=context, **IDENTITY
        )
    assert pipelines.largest_batch_size(15, num_input_pipelines=2, replicas=2) == 12
    assert pipelines.steps_per_epoch(15, 12, num_input_pipelines=2) == 1
    assert pipelines.steps_per_epoch(15, 16, num_input_pipelines=2) == 0
    assert pipelines.largest_batch_size(10) == 10 and pipelines.largest_batch_size(3, 1, 4) == 0


def test_unknown_size_with_several_pipelines_warns(caplog):
    unknown = indexed(20).filter(lambda x, y: True)
    assert int(unknown.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )
    with caplog.at_level(logging.WARNING, logger="pipelines.build"):
        ds = pipelines.make_train_dataset(
            unknown, image_size=(8, 8), global_batch_size=4, input_context=context, **IDENTITY
        )
    assert any(
        "size is unknown, so the 2 input pipelines" in r.getMessage() for r in caplog.records
    )
    _, y = next(iter(ds))
    assert y.shape == (2,) and all(int(v) % 2 == 1 for v in y)  # shard 1 of 2


@pytest.mark.parametrize("drop_remainder,n", [(True, 47), (False, 49)])
def test_every_input_pipeline_yields_whole_equal_epochs(drop_remainder, n):
    """Two workers with two replicas each: every epoch is steps_per_epoch steps on both."""
    steps = pipelines.steps_per_epoch(n, 16, num_input_pipelines=2, drop_remainder=drop_remainder)
    assert steps == (2 if drop_remainder else 4)  # see test_steps_per_epoch
    epochs: list[list[int]] = [[], []]
    for pipeline in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=4
        )
        common = dict(
            image_size=(8, 8),
            global_batch_size=16,
            augment="cifar",
            seed=1,
            input_context=context,
            drop_remainder=drop_remainder,
            **IDENTITY,
        )
        out = batches(pipelines.make_train_dataset(indexed(n), epochs=2, **common))
        per_epoch = steps * 2  # 2 per-replica batches of 4 per step and pipeline
        assert len(out) == 2 * per_epoch, pipeline
        assert max(len(y) for _, y in out) == 4
        for e in range(2):
            labels = np.concatenate([y for _, y in out[e * per_epoch : (e + 1) * per_epoch]])
            assert len(labels) == len(set(labels.tolist()))
            epochs[e].extend(labels.tolist())
        # Resuming at epoch 1 (an infinite dataset, as the trainer builds) gives epoch 1 again.
        again = pipelines.make_train_dataset(indexed(n), initial_epoch=1, **common)
        for (xa, ya), (xb, yb) in zip(out[per_epoch:], again.take(per_epoch), strict=True):
            assert np.array_equal(xa, xb.numpy()) and np.array_equal(ya, yb.numpy())
    for labels in epochs:
        assert len(labels) == len(set(labels))  # the shards do not overlap
        # Dropping: 2 steps x 16 examples; keeping: every example.
        assert len(labels) == (32 if drop_remainder else n)


MIRRORED = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import pipelines

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    n = 45
    ds = tf.data.Dataset.from_tensor_slices(
        (np.zeros((n, 8, 8, 3), np.uint8), np.arange(n, dtype=np.int64)))
    common = dict(image_size=(8, 8), mean=(0.0,) * 3, std=(1.0,) * 3)

    def collect(dist):
        seen, sizes = [], set()
        for _, y in dist:
            for part in strategy.experimental_local_results(y):
                seen.extend(part.numpy().tolist())
                sizes.add(int(part.shape[0]))
        return seen, sorted(sizes)

    def train(drop):
        return strategy.distribute_datasets_from_function(
            lambda ctx: pipelines.make_train_dataset(
                ds, global_batch_size=8, augment="cifar", epochs=1, drop_remainder=drop,
                input_context=ctx, **common))

    out = {"replicas": strategy.num_replicas_in_sync,
           "train": collect(train(False)), "train_drop": collect(train(True))}
    out["eval"] = collect(strategy.distribute_datasets_from_function(
        lambda ctx: pipelines.make_eval_dataset(ds, batch_size=8, input_context=ctx, **common)))
    out["eval_global"] = collect(strategy.experimental_distribute_dataset(
        pipelines.make_eval_dataset(ds, batch_size=8, **common)))
    print("RESULT" + json.dumps(out))
    """
)


def test_two_replica_mirrored_strategy_sees_every_example_once():
    out = run_script(MIRRORED)
    assert out["replicas"] == 2
    for name in ("train", "eval", "eval_global"):
        seen, _ = out[name]
        assert sorted(seen) == list(range(45)), name  # each example exactly once
    seen, sizes = out["train_drop"]
    # 5 full steps of 2 per-replica batches of 4; the last 5 examples are dropped.
    assert len(seen) == len(set(seen)) == 40 and sizes == [4]
    assert max(out["train"][1]) == 4 and max(out["eval"][1]) == 4  # per-replica batch 8 / 2


MIRRORED_EPOCHS = textwrap.dedent(
    """
    import hashlib
    import json
    import numpy as np
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import pipelines

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)

    def build(ds, **kwargs):
        return strategy.distribute_datasets_from_function(
            lambda ctx: pipelines.make_train_dataset(
                ds, image_size=(8, 8), global_batch_size=8, augment="cifar", seed=5,
                mean=(0.0,) * 3, std=(1.0,) * 3, input_context=ctx, **kwargs))

    def step(x, y):
        # Labels per replica, and a digest of the step's augmented pixels.
        xs = strategy.experimental_local_results(x)
        ys = strategy.experimental_local_results(y)
        digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in xs)).hexdigest()
        return [v.numpy().tolist() for v in ys], digest

    def steps(dist, count=None):
        it = iter(dist)
        if count is None:
            return [step(*b) for b in it]
        return [step(*next(it)) for _ in range(count)]

    out = {"replicas": strategy.num_replicas_in_sync}
    for name, n, drop in (("drop", 45, True), ("keep", 41, False)):
        images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        ds = tf.data.Dataset.from_tensor_slices((images, np.arange(n, dtype=np.int64)))
        per_epoch = pipelines.steps_per_epoch(n, 8, drop_remainder=drop)
        out[name] = {
            "steps_per_epoch": per_epoch,
            "two_epochs": steps(build(ds, epochs=2, drop_remainder=drop)),
            # As the trainer does: one iterator over the infinite dataset, per_epoch steps.
            "resumed": steps(build(ds, initial_epoch=1, drop_remainder=drop), per_epoch),
        }
    print("RESULT" + json.dumps(out))
    """
)


def test_mirrored_strategy_epochs_are_whole_global_steps_and_resume_exactly():
    """45 (drop) or 41 (keep) examples, global batch 8 over 2 replicas, 2 epochs."""
    out = run_script(MIRRORED_EPOCHS)
    assert out["replicas"] == 2
    for name, n, per_epoch in (("drop", 45, 5), ("keep", 41, 6)):
        run = out[name]
        assert run["steps_per_epoch"] == per_epoch, name
        two = run["two_epochs"]
        assert len(two) == 2 * per_epoch, name  # no step mixes two epochs
        for labels, _ in two:
            flat = labels[0] + labels[1]
            assert len(flat) == len(set(flat)), (name, labels)  # no duplicate in a step
            assert max(len(part) for part in labels) <= 4
        for e in range(2):
            epoch = [
                i
                for labels, _ in two[e * per_epoch : (e + 1) * per_epoch]
                for part in labels
                for i in part
            ]
            assert len(epoch) == len(set(epoch)), (name, e)
            # Dropping keeps 5 full steps of 8; keeping sees all 41 (last step: 0 + 1).
            assert len(epoch) == (40 if name == "drop" else n), (name, e)
        assert [len(p) for p in two[per_epoch - 1][0]] == ([4, 4] if name == "drop" else [0, 1])
        # Built with initial_epoch=1: exactly the second epoch's global batches, pixels too.
        assert run["resumed"] == two[per_epoch:], name
