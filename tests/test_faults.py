"""Fault injection: a training process is SIGKILLed at eleven points in turn (epoch ends,
checkpoint writes whole, torn and not begun, history writes before, during and after), each
next process resuming the run; the last resume, `python -m zoo.train --resume RUN`, finishes
it. Every epoch is in ``history.csv``
exactly once and the final weights, optimizer state and dropout RNG equal those of a run that was
never interrupted (deterministic ops).

Each point is "the Nth time this process reaches X"; the child script below arms it by wrapping
public functions (`tf.train.CheckpointManager.save`, `RunDirectory.write_history`, `os.replace`)
and a Keras callback, and kills its own process there with SIGKILL (no cleanup runs)."""

import signal
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from helpers import history_rows as history
from scripts import child_env, run_module, run_python

ENV = child_env(TF_CPP_MIN_LOG_LEVEL="3")

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path

    import keras
    import tensorflow as tf

    from zoo.config import RunOptions, TrainConfig
    from zoo.training import RunDirectory, Trainer

    run_dir, plan = sys.argv[1], sys.argv[2]
    hook, nth, how = plan.split("|") if plan != "none" else ("none", "0", "")
    nth = int(nth)
    seen = {}

    def reached(name):
        seen[name] = seen.get(name, 0) + 1
        return name == hook and seen[name] == nth

    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    save = tf.train.CheckpointManager.save

    def checkpoint_save(self, *args, **kwargs):
        name = "best_save" if Path(self.directory).name == "best" else "last_save"
        hit = reached(name)
        if hit and how == "before":
            die()
        path = save(self, *args, **kwargs)
        if hit and how == "torn":  # what a power cut before the data reached the disk leaves
            data = Path(path + ".data-00000-of-00001")
            data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
            die()
        if hit:
            die()
        return path

    tf.train.CheckpointManager.save = checkpoint_save
    write_history = RunDirectory.write_history

    def history(self, *args, **kwargs):
        hit = reached("history")
        if hit and how == "before":
            die()
        write_history(self, *args, **kwargs)
        if hit:
            die()

    RunDirectory.write_history = history
    replace = os.replace

    def rename(src, dst, *args, **kwargs):  # the temporary file is whole; the rename is next
        if reached("replace:" + Path(dst).name):
            die()
        return replace(src, dst, *args, **kwargs)

    os.replace = rename

    class Kill(keras.callbacks.Callback):  # runs after the engine's callbacks
        def on_train_batch_end(self, batch, logs=None):
            if reached("batch"):
                die()

        def on_epoch_end(self, epoch, logs=None):
            if reached("epoch_end"):
                die()

    options = RunOptions(run_dir=run_dir, verbose=False, steps_per_execution=1)
    if (Path(run_dir) / "config.json").is_file():
        trainer = Trainer.resume(run_dir, options=options, callbacks=[Kill()])
    else:
        config = TrainConfig(
            model="vgg11_bn", width=0.125, batch_size=64, epochs=3, deterministic=True,
            monitor="loss", mode="min", seed=3,
        )
        trainer = Trainer(config, options=options, callbacks=[Kill()])
    trainer.fit()
    print("FINISHED")
    """
)

# (hook, nth time in that process, how): in order, each starting where the last one left off.
PLAN = [
    ("last_save", 1, "torn"),  # the initial checkpoint, torn: the resume starts afresh
    ("batch", 5, ""),  # in the middle of epoch 1
    ("history", 1, "before"),  # epoch 1 done, nothing of it written
    ("replace:history.csv", 1, ""),  # its row in a whole temporary file, not renamed yet
    ("history", 1, "after"),  # its row written, its checkpoint not
    ("last_save", 2, "torn"),  # its checkpoint torn (the resume falls back to the initial one)
    ("last_save", 2, "after"),  # its checkpoint whole, the best one not yet saved
    ("last_save", 1, "before"),  # epoch 2's row written, its checkpoint not begun
    ("best_save", 1, "before"),  # epoch 2's checkpoint whole, its best one not begun
    ("epoch_end", 1, ""),  # epoch 3 over: every callback of the epoch has run
    ("replace:metrics.json", 1, ""),  # the final metrics, not renamed yet
]


def run_child(run_dir: Path, plan: str) -> subprocess.CompletedProcess:
    return run_python(CHILD, str(run_dir), plan, env=ENV)


def arrays(prefix: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(prefix)
    return {
        name: np.asarray(reader.get_tensor(name))
        for name in reader.get_variable_to_shape_map()
        if "OBJECT_CONFIG" not in name and not name.startswith("save_counter")  # saves made
    }


@pytest.mark.slow
def test_sigkill_at_eleven_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    straight = run_child(tmp_path / "straight", "none")
    assert straight.returncode == 0 and "FINISHED" in straight.stdout, straight.stderr[-3000:]

    run = tmp_path / "killed"
    for hook, nth, how in PLAN:
        plan = f"{hook}|{nth}|{how}"
        killed = run_child(run, plan)
        # Killed where planned (a point never reached would let the process finish).
        assert killed.returncode == -signal.SIGKILL, (plan, killed.stderr[-3000:])
    # The last resume is the command line's, as a user would type it.
    final = run_module("zoo.train", "--resume", str(run), env=ENV)
    assert final.returncode == 0 and f"Results: {run}" in final.stdout, final.stderr[-3000:]

    assert [int(row["epoch"]) for row in history(run)] == [1, 2, 3]
    expected = history(tmp_path / "straight")
    for got, want in zip(history(run), expected, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert got[key] == want[key], (got["epoch"], key)
    for kind in ("checkpoints", "best"):
        a = arrays(tf.train.latest_checkpoint(tmp_path / "straight" / kind))
        b = arrays(tf.train.latest_checkpoint(run / kind))
        assert a.keys() == b.keys() and any(k.startswith("rng/") for k in a), kind
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{kind}: {name}")
    assert (run / "metrics.json").is_file()
