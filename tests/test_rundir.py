"""The run directory's rules (`zoo.training.rundir`): exclusive creation, one trainer per run
(the lock), atomic writes, a history row for every checkpoint, best weights repaired after a
kill, and checkpoints tried newest first with a warning for each one that does not restore.

Runs that need training copy one 2-epoch run trained once per test session (`trained`) and
then break it the way a kill or a bad disk would."""

import csv
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import at, build_once
from scripts import CHILD_TIMEOUT, child_env, run_module, run_python

from zoo.config import TrainConfig
from zoo.train import main
from zoo.training import NoCheckpointError, RunDirectory, RunLockedError, Trainer, rundir
from zoo.training.rundir import atomic_write_text

# The training loss falls from epoch 1 to 2, so with monitor=loss epoch 2 is the best.
TINY = TrainConfig(
    model="resnet20", width=0.125, batch_size=64, epochs=2, monitor="loss", mode="min"
)
TINY_FLAGS = ["--model", "resnet20", "--width", "0.125", "--batch-size", "64", "--epochs", "1"]
ENV = child_env(TF_CPP_MIN_LOG_LEVEL="3")


def epochs_in_history(run: Path) -> list[int]:
    with open(run / "history.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def corrupt(prefix: Path, how: str = "garbage") -> None:
    """Break a checkpoint's data file: same-size garbage, or cut to half its length."""
    data = prefix.with_name(prefix.name + ".data-00000-of-00001")
    size = data.stat().st_size
    if how == "garbage":
        data.write_bytes((bytes(range(256)) * (size // 256 + 1))[:size])
    else:
        data.write_bytes(data.read_bytes()[: size // 2])


def model_arrays(prefix: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(prefix)
    return {
        name: np.asarray(reader.get_tensor(name))
        for name in reader.get_variable_to_shape_map()
        if name.startswith("model/") and "OBJECT_CONFIG" not in name
    }


# A trained run, and copies of it broken on purpose ------------------------------------------


def _train_with_snapshot(root: Path) -> None:
    run, snapshot = root / "run", root / "after-epoch-1"

    class Snapshot(keras.callbacks.Callback):  # runs after the engine's own callbacks
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                snapshot.mkdir()
                shutil.copy2(run / "checkpoints" / "checkpoint", snapshot / "checkpoint")
                shutil.copytree(run / "best", snapshot / "best")

    Trainer(TINY, options=at(run), callbacks=[Snapshot()]).fit()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A finished 2-epoch run, and a snapshot of its ``checkpoints/checkpoint`` state file and
    ``best/`` folder as they were at the end of epoch 1 (what a kill in epoch 2 leaves). Made
    once per test session; tests break copies of it."""
    root = build_once(tmp_path_factory, "rundir-trained", _train_with_snapshot)
    run, snapshot = root / "run", root / "after-epoch-1"
    with open(run / "history.csv", newline="") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert losses[1] < losses[0], "the fixture needs epoch 2 to be the best by loss"
    assert sorted(p.name for p in (snapshot / "best").iterdir() if p.suffix == ".index") == [
        "best-1.index"
    ]
    return run, snapshot


def copy_of(trained, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    return run


def kill_after_history_row(run: Path, snapshot: Path, epoch: int = 2) -> None:
    """The state a SIGKILL leaves between epoch ``epoch``'s history row and its checkpoint: the
    row is on disk; the checkpoint, its entry in the state file and its best save are not."""
    for f in (run / "checkpoints").glob(f"epoch-{epoch}.*"):
        f.unlink()
    shutil.copy2(snapshot / "checkpoint", run / "checkpoints" / "checkpoint")
    assert f'"epoch-{epoch}"' not in (run / "checkpoints" / "checkpoint").read_text()
    shutil.rmtree(run / "best")
    shutil.copytree(snapshot / "best", run / "best")
    (run / "metrics.json").unlink()
    assert epochs_in_history(run) == [1, 2]  # the row of the lost checkpoint is still there


# 1. Exclusive creation ----------------------------------------------------------------------


def test_same_default_name_gives_separate_run_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "default_name", lambda config: "same-name")
    (tmp_path / "runs" / "same-name-2").mkdir(parents=True)  # a leftover folder is not reused
    first = RunDirectory.create(TrainConfig(seed=1), runs_dir=tmp_path / "runs")
    second = RunDirectory.create(TrainConfig(seed=2), runs_dir=tmp_path / "runs")
    assert first.path == tmp_path / "runs" / "same-name"
    assert second.path == tmp_path / "runs" / "same-name-3"
    assert RunDirectory.open(first.path).read_config() == TrainConfig(seed=1)
    assert RunDirectory.open(second.path).read_config() == TrainConfig(seed=2)
    assert not (tmp_path / "runs" / "same-name-2" / "config.json").exists()
    # Written through a temporary file, yet with the usual permissions (not mkstemp's 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert (first.path / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_create_in_an_existing_run_raises_and_keeps_its_config(tmp_path):
    run = RunDirectory.create(TrainConfig(seed=1), run_dir=tmp_path / "run")
    before = (run.path / "config.json").read_bytes()
    with pytest.raises(FileExistsError, match=re.escape(f"--resume {run.path}")):
        RunDirectory.create(TrainConfig(seed=2), run_dir=tmp_path / "run")
    assert (run.path / "config.json").read_bytes() == before
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json"]  # no temp file left


def test_cli_refuses_a_run_dir_that_holds_a_run(tmp_path, capsys):
    run = RunDirectory.create(TrainConfig(seed=1), run_dir=tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.path.iterdir()}
    assert main([*TINY_FLAGS, "--run-dir", str(run.path)]) == 2  # returns: no exception
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "Traceback" not in err
    assert f"--resume {run.path}" in error_lines(err)[0]
    assert {p.name: p.read_bytes() for p in run.path.iterdir()} == before  # nothing touched


RACE = """
    import json, multiprocessing, sys
    from zoo.config import TrainConfig
    from zoo.training import rundir
    from zoo.training.rundir import RunDirectory

    rundir.default_name = lambda config: "same-name"

    def attempt(i, create, barrier):
        barrier.wait()  # every process released at once
        try:
            run = create(TrainConfig(seed=i))
        except FileExistsError:
            sys.exit(100)
        except BaseException:
            sys.exit(101)
        sys.exit(0 if run.read_config().seed == i else 102)

    def race(n, create):
        # n forked processes call create(TrainConfig(seed=i)) together; their exit codes.
        context = multiprocessing.get_context("fork")
        barrier = context.Barrier(n)
        children = [context.Process(target=attempt, args=(i, create, barrier)) for i in range(n)]
        for child in children:
            child.start()
        for child in children:
            child.join()
        return [child.exitcode for child in children]

    root = sys.argv[1]
    print(json.dumps({
        "run_dir": race(4, lambda c: RunDirectory.create(c, run_dir=root + "/one")),
        "runs_dir": race(4, lambda c: RunDirectory.create(c, runs_dir=root + "/runs")),
    }))
"""


@pytest.fixture(scope="module")
def race(tmp_path_factory) -> tuple[Path, dict[str, list[int]]]:
    """Two races of 4 processes each: the same ``run_dir``, and the same default name."""
    root = tmp_path_factory.mktemp("race")
    result = run_python(RACE, str(root), env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    return root, json.loads(result.stdout.strip().splitlines()[-1])


def test_concurrent_creates_of_one_run_dir_let_exactly_one_win(race):
    root, codes = race
    # 0: created (and reads back its own config); 100: FileExistsError; anything else: a bug.
    assert sorted(codes["run_dir"]) == [0, 100, 100, 100]
    winner = codes["run_dir"].index(0)
    assert RunDirectory.open(root / "one").read_config().seed == winner
    assert [p.name for p in (root / "one").iterdir()] == ["config.json"]


def test_concurrent_creates_with_one_default_name_get_a_folder_each(race):
    root, codes = race
    assert codes["runs_dir"] == [0, 0, 0, 0]
    folders = sorted(p.name for p in (root / "runs").iterdir())
    assert folders == ["same-name", "same-name-2", "same-name-3", "same-name-4"]
    seeds = {RunDirectory.open(root / "runs" / name).read_config().seed for name in folders}
    assert seeds == {0, 1, 2, 3}


# 2. The lock --------------------------------------------------------------------------------

HOLD = """
    import sys, time
    from zoo.training.rundir import RunDirectory

    run = RunDirectory.open(sys.argv[1])  # kept: the lock lives as long as the object
    run.lock()
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_held_lock_refuses_other_trainers_until_its_holder_dies(tmp_path):
    run = RunDirectory.create(TINY, run_dir=tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD), str(run.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"being trained by pid {holder.pid} "):
            RunDirectory.open(run.path).lock()

        cli = run_module("zoo.train", "--resume", str(run.path), env=ENV)
        assert cli.returncode == 2, cli.stderr[-2000:]
        assert "Traceback" not in cli.stderr
        [line] = error_lines(cli.stderr)
        assert f"{run.path} is being trained by pid {holder.pid}" in line
        # The refused trainer left the holder's lock and its name alone.
        assert f"pid {holder.pid} " in (run.path / ".lock").read_text()
        with pytest.raises(RunLockedError, match=f"pid {holder.pid} "):
            RunDirectory.open(run.path).lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=CHILD_TIMEOUT)

    assert holder.returncode == -signal.SIGKILL
    assert f"pid {holder.pid} " in (run.path / ".lock").read_text()  # the stale holder's name
    mine = RunDirectory.open(run.path)
    mine.lock()  # the kernel released the dead holder's flock: taken over
    try:
        assert (run.path / ".lock").read_text().startswith(f"pid {os.getpid()} ")
    finally:
        mine.unlock()


# 3. Atomic writes ---------------------------------------------------------------------------


def _fail(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("failing", ["fsync", "replace"])
@pytest.mark.parametrize("previous", ["old content\n", None])
def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path, monkeypatch, failing, previous
):
    target = tmp_path / "history.csv"
    if previous is not None:
        target.write_text(previous)
    monkeypatch.setattr(os, failing, _fail)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new content\n" * 1000)
    monkeypatch.undo()
    if previous is None:
        assert list(tmp_path.iterdir()) == []
    else:
        assert target.read_text() == previous
        assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]
    atomic_write_text(target, "new content\n")  # and once the disk is fine, it is replaced
    assert target.read_text() == "new content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]


@pytest.mark.parametrize("name", ["config.json", "data.json", "history.csv"])
def test_run_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch, name):
    run = RunDirectory.create(TrainConfig(seed=1), run_dir=tmp_path / "run")
    run.write_json("data.json", {"classes": 10})
    run.write_history([{"epoch": 1, "loss": 2.3}], ["epoch", "loss"])
    files = {p.name: p.read_bytes() for p in run.path.iterdir()}
    write = {
        "config.json": lambda: run.write_config(TrainConfig(seed=2)),
        "data.json": lambda: run.write_json("data.json", {"classes": 3}),
        "history.csv": lambda: run.write_history(
            [{"epoch": 1, "loss": 2.3}, {"epoch": 2, "loss": 2.2}], ["epoch", "loss"]
        ),
    }[name]
    monkeypatch.setattr(os, "fsync", _fail)
    with pytest.raises(OSError):
        write()
    assert {p.name: p.read_bytes() for p in run.path.iterdir()} == files
    monkeypatch.undo()
    write()
    assert (run.path / name).read_bytes() != files[name]
    assert sorted(p.name for p in run.path.iterdir()) == sorted(files)


# 4. A history row for every checkpoint ------------------------------------------------------


def test_resume_after_a_kill_between_row_and_checkpoint_writes_each_row_once(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    kill_after_history_row(run, trained[1])
    trainer = Trainer.resume(run, options=at(run))
    trainer.fit()
    assert trainer.start_epoch == 1  # epoch 2 was trained again
    assert epochs_in_history(run) == [1, 2]
    assert RunDirectory.open(run).checkpoints()[0] == str(run / "checkpoints" / "epoch-2")
    assert tf.train.latest_checkpoint(run / "checkpoints") == str(run / "checkpoints" / "epoch-2")
    reader = tf.train.load_checkpoint(str(run / "checkpoints" / "epoch-2"))
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2


# The rows after the restored checkpoint are dropped from history.csv too, not only in memory,
# even when the resume has nothing left to train (--epochs equal to the restored epoch).
def test_resume_with_nothing_to_train_drops_rows_after_the_restored_checkpoint(trained, tmp_path):
    run = copy_of(trained, tmp_path)
    kill_after_history_row(run, trained[1])
    Trainer.resume(run, epochs=1, options=at(run)).fit()
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1
    assert epochs_in_history(run) == [1]


# 5. Best weights repaired after a kill ------------------------------------------------------


@pytest.mark.parametrize("best_left", ["best-1", "nothing"])
def test_resume_saves_the_best_epoch_a_kill_left_out_of_best(trained, tmp_path, best_left):
    """Killed between epoch 2's checkpoint and its best save: ``best/`` still holds best-1 (as
    a kill leaves it) or nothing (best-2's files deleted)."""
    run = copy_of(trained, tmp_path)
    for f in (run / "best").glob("best-2.*"):
        f.unlink()
    if best_left == "best-1":
        shutil.rmtree(run / "best")
        shutil.copytree(trained[1] / "best", run / "best")
    (run / "metrics.json").unlink()
    trainer = Trainer.resume(run, options=at(run))  # epochs=2: nothing left to train
    trainer.fit()
    assert trainer.start_epoch == 2
    best = str(run / "best" / "best-2")
    assert RunDirectory.open(run).checkpoints("best") == [best]
    assert tf.train.latest_checkpoint(run / "best") == best
    assert json.loads((run / "metrics.json").read_text())["best_checkpoint"] == best
    saved, epoch = model_arrays(best), model_arrays(str(run / "checkpoints" / "epoch-2"))
    assert saved and saved.keys() == epoch.keys()
    for name in saved:
        np.testing.assert_array_equal(saved[name], epoch[name], err_msg=name)
    assert epochs_in_history(run) == [1, 2]


# 6. Checkpoint fallback ---------------------------------------------------------------------


def test_checkpoints_are_listed_newest_first_by_number(tmp_path):
    run = RunDirectory.create(TrainConfig(), run_dir=tmp_path / "run")
    for kind, names in {
        "checkpoints": ["epoch-2", "epoch-10", "epoch-1", "best-3", "epoch-x", "old-epoch-4"],
        "best": ["best-7", "best-12", "epoch-5"],
    }.items():
        (run.path / kind).mkdir()
        for name in names:
            (run.path / kind / f"{name}.index").touch()
            (run.path / kind / f"{name}.data-00000-of-00001").touch()
    folder, best = run.path / "checkpoints", run.path / "best"
    assert run.checkpoints() == [str(folder / f"epoch-{n}") for n in (10, 2, 1)]
    assert run.checkpoints("best") == [str(best / "best-12"), str(best / "best-7")]


# A truncated data file makes TensorFlow raise the builtin IndexError ("Read less bytes than
# requested"), garbage an OpError: both are skipped with a warning.
@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_restore_skips_a_corrupt_checkpoint_with_a_warning_naming_it(tmp_path, caplog, how):
    run = RunDirectory.create(TrainConfig(), run_dir=tmp_path / "run")
    value = tf.Variable(tf.zeros([64]))
    manager = run.checkpoint_manager(tf.train.Checkpoint(value=value), "checkpoints", 5)
    for n in (1, 2, 3):
        value.assign(tf.fill([64], float(n)))
        manager.save(checkpoint_number=n)
    corrupt(run.path / "checkpoints" / "epoch-3", how)
    value.assign(tf.fill([64], -1.0))
    with caplog.at_level(logging.WARNING, logger="zoo.train"):
        prefix = run.restore(tf.train.Checkpoint(value=value))
    assert prefix == str(run.path / "checkpoints" / "epoch-2")
    np.testing.assert_array_equal(value.numpy(), np.full([64], 2.0))
    skipped = [r.getMessage() for r in caplog.records if "skipped checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and str(run.path / "checkpoints" / "epoch-3") in skipped[0]


def test_restore_without_any_checkpoint_raises(tmp_path):
    run = RunDirectory.create(TrainConfig(), run_dir=tmp_path / "run")
    with pytest.raises(NoCheckpointError, match=r"no usable checkpoint .*there is none"):
        run.restore(tf.train.Checkpoint(value=tf.Variable(1.0)))


@pytest.mark.parametrize("how", ["garbage", "truncated"])  # [truncated]: the restore bug above
def test_resume_falls_back_from_a_corrupt_newest_checkpoint(trained, tmp_path, caplog, how):
    run = copy_of(trained, tmp_path)
    corrupt(run / "checkpoints" / "epoch-2", how)
    with caplog.at_level(logging.WARNING, logger="zoo.train"):
        trainer = Trainer.resume(run, options=at(run))
        trainer.fit()
    assert trainer.start_epoch == 1  # restored epoch-1 and trained epoch 2 again
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "skipped checkpoint" in w and str(run / "checkpoints" / "epoch-2") in w for w in warnings
    ), warnings
    assert epochs_in_history(run) == [1, 2]
    assert RunDirectory.open(run).checkpoints() == [
        str(run / "checkpoints" / f"epoch-{n}") for n in (2, 1, 0)
    ]
    reader = tf.train.load_checkpoint(str(run / "checkpoints" / "epoch-2"))  # good again
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 2


def test_no_good_checkpoint_is_an_error_naming_each_one(trained, tmp_path, capsys):
    run = copy_of(trained, tmp_path)
    prefixes = [run / "checkpoints" / f"epoch-{n}" for n in (2, 1, 0)]
    for prefix in prefixes:
        corrupt(prefix)
    opened = RunDirectory.open(run)
    checkpoint = tf.train.Checkpoint(model=opened.build_model())
    with pytest.raises(NoCheckpointError, match="no usable checkpoint in") as raised:
        opened.restore(checkpoint, partial=True)
    assert f"none of {', '.join(map(str, prefixes))} restores" in str(raised.value)

    assert main(["--resume", str(run)]) == 2  # the CLI: returns 2, raises nothing
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = error_lines(err)
    assert "no usable checkpoint" in line and str(prefixes[0]) in line


# 7. Opening -------------------------------------------------------------------------------


@pytest.mark.parametrize("exists", [True, False])
def test_open_a_folder_without_config_raises_naming_it(tmp_path, exists):
    folder = tmp_path / "not-a-run"
    if exists:
        (folder / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{folder} is not a run directory")):
        RunDirectory.open(folder)
