"""Padded evaluation: every example exactly once, full static batches, equal steps per worker."""

from __future__ import annotations

import logging
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scripts import run_script

import pipelines

IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def indexed(n: int, size: int = 8) -> tf.data.Dataset:
    """``n`` random images whose label is their index."""
    images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return tf.data.Dataset.from_tensor_slices((images, np.arange(n, dtype=np.int64)))


def varying(n: int, known_size: bool = True) -> tf.data.Dataset:
    """``n`` images of different sizes (label = index), of known cardinality or not."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (10 + i % 5, 14 + i % 3, 3), dtype=np.uint8) for i in range(n)]
    ds = tf.data.Dataset.from_generator(
        lambda: iter(zip(images, range(n), strict=True)),
        output_signature=(tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int64)),
    )
    return ds.apply(tf.data.experimental.assert_cardinality(n)) if known_size else ds


def batches(ds: tf.data.Dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in ds]


def context(pipelines_: int, pipeline_id: int, replicas: int) -> tf.distribute.InputContext:
    return tf.distribute.InputContext(
        num_input_pipelines=pipelines_,
        input_pipeline_id=pipeline_id,
        num_replicas_in_sync=replicas,
    )


def test_eval_steps_is_the_largest_shard_in_full_steps():
    for n in range(41):
        for count in range(1, 5):
            for batch in range(count, 17, count):
                shards = [len(range(i, n, count)) for i in range(count)]
                largest = max(-(-s // (batch // count)) for s in shards)
                steps = pipelines.eval_steps(n, batch, num_input_pipelines=count)
                assert steps == largest, (n, batch, count)
                # A step's share per pipeline divides the global batch, so this equals
                # ceil(n / global batch) for any number of pipelines.
                assert steps == -(-n // batch), (n, batch, count)
    assert pipelines.eval_steps(180, 7) == 26 and pipelines.eval_steps(180, 200) == 1


def test_eval_steps_rejects_bad_values():
    with pytest.raises(ValueError, match="num_examples must be an int >= 0"):
        pipelines.eval_steps(-1, 8)
    with pytest.raises(ValueError, match="global_batch_size must be a positive int"):
        pipelines.eval_steps(10, 0)
    with pytest.raises(ValueError, match="global_batch_size 10 must be a multiple of num_input"):
        pipelines.eval_steps(10, 10, num_input_pipelines=4)


def test_padded_eval_fills_the_last_batch_with_label_minus_one():
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.5, 1.0)
    ds = pipelines.make_eval_dataset(
        indexed(10, size=16), image_size=(8, 8), batch_size=4, mean=mean, std=std, pad=True
    )
    assert ds.element_spec[0].shape.as_list() == [4, 8, 8, 3]  # static for XLA
    assert ds.element_spec[1].shape.as_list() == [4]
    assert int(ds.cardinality()) == pipelines.eval_steps(10, 4) == 3
    out = batches(ds)
    labels = np.concatenate([y for _, y in out])
    assert labels.tolist() == [*range(10), pipelines.PAD_LABEL, pipelines.PAD_LABEL]
    # Padding is zero pixels before normalisation, after the resize of the real images.
    padding = out[-1][0][2:]
    assert np.allclose(padding, -np.array(mean) / np.array(std))
    # Real examples are what the unpadded pipeline gives.
    plain = batches(
        pipelines.make_eval_dataset(
            indexed(10, size=16), image_size=(8, 8), batch_size=4, mean=mean, std=std
        )
    )
    real = np.concatenate([x for x, _ in out])[:10]
    assert np.allclose(np.concatenate([x for x, _ in plain]), real)


def test_padded_eval_of_variable_size_images_resizes_then_pads():
    out = batches(
        pipelines.make_eval_dataset(
            varying(7), image_size=(9, 9), batch_size=4, pad=True, **IDENTITY
        )
    )
    assert [x.shape for x, _ in out] == [(4, 9, 9, 3), (4, 9, 9, 3)]
    assert out[1][1].tolist() == [4, 5, 6, -1]
    assert not out[1][0][3].any() and out[1][0][2].any()


def test_padded_eval_of_unknown_size_pads_the_last_batch_only(caplog):
    ds = pipelines.make_eval_dataset(
        varying(7, known_size=False), image_size=(9, 9), batch_size=4, pad=True, **IDENTITY
    )
    assert ds.element_spec[0].shape[0] == 4
    assert [y.tolist() for _, y in batches(ds)] == [[0, 1, 2, 3], [4, 5, 6, -1]]
    # Several workers cannot agree on a step count without the size: they are warned.
    with caplog.at_level(logging.WARNING, logger="pipelines.build"):
        pipelines.make_eval_dataset(
            varying(7, known_size=False),
            image_size=(9, 9),
            batch_size=4,
            pad=True,
            input_context=context(2, 0, 2),
            **IDENTITY,
        )
    assert any("cannot be padded to the same number" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "n,batch,count,replicas",
    [(45, 16, 2, 4), (7, 3, 3, 3), (5, 12, 2, 4), (13, 6, 3, 6)],
)
def test_padded_eval_gives_every_worker_the_same_full_steps(n, batch, count, replicas):
    """``count`` workers of ``replicas // count`` replicas; shards of ceil or floor(n / count)."""
    steps = pipelines.eval_steps(n, batch, num_input_pipelines=count)
    per_replica = batch // replicas
    seen = []
    for pipeline in range(count):
        ds = pipelines.make_eval_dataset(
            indexed(n),
            image_size=(8, 8),
            batch_size=batch,
            pad=True,
            input_context=context(count, pipeline, replicas),
            **IDENTITY,
        )
        assert ds.element_spec[1].shape.as_list() == [per_replica]
        assert int(ds.cardinality()) == steps * (replicas // count)
        out = batches(ds)
        assert len(out) == steps * (replicas // count), pipeline
        assert {len(y) for _, y in out} == {per_replica}
        labels = np.concatenate([y for _, y in out])
        seen.extend(labels[labels != pipelines.PAD_LABEL].tolist())
        assert set(labels[labels < 0].tolist()) <= {pipelines.PAD_LABEL}
    assert sorted(seen) == list(range(n))  # every example once over all workers


def test_padded_eval_of_an_unverified_folder_uses_its_upper_bound(tmp_path):
    """An unreadable file makes the file count an upper bound: the extra step is padding."""
    rng = np.random.default_rng(0)
    for k in range(5):
        side = 10 + k
        path = tmp_path / ("a" if k % 2 else "b") / f"{k}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side + 3, 3), dtype=np.uint8)).save(path)
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    data = pipelines.load(f"folder:{tmp_path}", validation_fraction=0.0, verify=False)
    assert data.num_examples["train"] == 6 and not data.exact_sizes
    steps = pipelines.eval_steps(6, 4, num_input_pipelines=2)
    real = 0
    for pipeline in range(2):
        out = batches(
            pipelines.make_eval_dataset(
                data,
                split="train",
                image_size=(8, 8),
                batch_size=4,
                pad=True,
                input_context=context(2, pipeline, 2),
                **IDENTITY,
            )
        )
        assert len(out) == steps and {x.shape for x, _ in out} == {(2, 8, 8, 3)}
        real += sum(int((y >= 0).sum()) for _, y in out)
    assert real == 5


def test_padded_eval_argument_checks():
    common = dict(image_size=(8, 8), **IDENTITY)
    with pytest.raises(ValueError, match="pad must be True or False"):
        pipelines.make_eval_dataset(indexed(4), batch_size=2, pad="yes", **common)
    with pytest.raises(ValueError, match=r"batch_size 6 is the global batch size.*multiple of"):
        pipelines.make_eval_dataset(
            indexed(4), batch_size=6, pad=True, input_context=context(1, 0, 4), **common
        )


MIRRORED_PADDED = textwrap.dedent(
    """
    import hashlib
    import json
    import numpy as np
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 4)
    import pipelines

    data = pipelines.load("digits")  # 180 validation images, 32x32

    def key(image, label):
        return [hashlib.sha256(image.tobytes()).hexdigest()[:16], int(label)]

    out = {"split": [key(x, y) for x, y in data.splits["validation"].as_numpy_iterator()]}
    @tf.function
    def count_real(x, y):
        # Mean over the batch, as batch norm takes: NaN on an empty batch.
        return tf.reduce_sum(tf.cast(y >= 0, tf.int32)), tf.reduce_mean(x)

    runs = []
    for replicas in (1, 2, 3, 4):
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
        for batch in (7 * replicas, 25 * replicas, 200 - 200 % replicas):
            shapes = []

            def fn(ctx, batch=batch, shapes=shapes):
                ds = pipelines.make_eval_dataset(
                    data, image_size=(32, 32), batch_size=batch, pad=True, input_context=ctx,
                    mean=(0.0,) * 3, std=(1.0,) * 3)
                shapes.append(ds.element_spec[0].shape.as_list())
                return ds

            run = {"replicas": replicas, "batch": batch, "steps": 0, "keys": [],
                   "padding": 0, "padding_nonzero": 0, "sizes": [], "counted": 0,
                   "finite": True, "shapes": shapes}
            for x, y in strategy.distribute_datasets_from_function(fn):
                run["steps"] += 1
                real, mean = strategy.run(count_real, args=(x, y))
                run["counted"] += int(strategy.reduce("SUM", real, axis=None))
                run["finite"] &= all(
                    bool(np.isfinite(m.numpy())) for m in strategy.experimental_local_results(mean))
                for xs, ys in zip(strategy.experimental_local_results(x),
                                  strategy.experimental_local_results(y)):
                    run["sizes"].append(int(xs.shape[0]))
                    pixels = np.round(xs.numpy() * 255.0).astype(np.uint8)
                    for image, label in zip(pixels, ys.numpy()):
                        if label == -1:
                            run["padding"] += 1
                            run["padding_nonzero"] += int(image.any())
                        else:
                            run["keys"].append(key(image, label))
            runs.append(run)
    out["runs"] = runs
    print("RESULT" + json.dumps(out))
    """
)


def test_mirrored_padded_eval_counts_every_example_once_on_1_to_4_replicas():
    out = run_script(MIRRORED_PADDED)
    split = sorted(map(tuple, out["split"]))
    assert len(split) == 180
    assert len(out["runs"]) == 12
    for run in out["runs"]:
        name = (run["replicas"], run["batch"])
        batch, replicas = run["batch"], run["replicas"]
        assert 180 % batch, name  # the batch never divides the split
        steps = pipelines.eval_steps(180, batch)
        assert run["steps"] == steps, name
        assert sorted(map(tuple, run["keys"])) == split, name  # each example exactly once
        assert run["counted"] == 180, name  # and the replicas' sums agree
        assert run["finite"], name  # no replica got an empty batch
        assert run["sizes"] == [batch // replicas] * (steps * replicas), name
        assert run["shapes"] == [[batch // replicas, 32, 32, 3]], name  # static batch
        assert run["padding"] == steps * batch - 180, name
        assert run["padding_nonzero"] == 0, name
