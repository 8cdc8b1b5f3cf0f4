"""``python -m tuning.search``: a real search, failed trials, resume after SIGKILL, the fine
stage's ranges and edge warnings, distributed tuning, and reproducing the best trial."""

import csv
import json
import math
import os
import signal
import socket
import subprocess
import time

import pytest
from scripts import CHILD_TIMEOUT, child_env, finish, run_module, start_module

from tuning import space as spaces
from tuning.search import main as search_main
from zoo.train import main as train_main

# Everything but the learning rate fixed, a tiny model: a trial is a few seconds.
SMALL = ["--width", "0.125", "--batch-size", "64", "--bn-recalibration", "2"]


def only_learning_rate(tmp_path, spec) -> str:
    path = tmp_path / "space.json"
    fixed = {name: None for name in spaces.DEFAULT_SPACE if name != "learning_rate"}
    path.write_text(json.dumps({**fixed, "model": None, "learning_rate": spec}))
    return str(path)


def trials(root) -> list[dict[str, str]]:
    with open(root / "trials.csv") as f:
        return list(csv.DictReader(f))


def hparams_tags(folder) -> set[str]:
    import tensorflow as tf

    tags = set()
    for path in tf.io.gfile.glob(os.path.join(str(folder), "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    tags.add(value.tag)
    return tags


# The search ---------------------------------------------------------------------------------


def test_a_real_search_writes_every_trial_and_the_plot(tmp_path, capsys):
    code = search_main(
        [
            *SMALL,
            "--max-trials", "3", "--fine-trials", "1", "--top", "2",
            "--epochs-per-trial", "1", "--fine-epochs", "1",
            "--space", only_learning_rate(
                tmp_path, {"type": "float", "min": 1e-3, "max": 1.0, "sampling": "log"}
            ),
            "--directory", str(tmp_path / "runs"), "--project", "p",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    root = tmp_path / "runs" / "p"
    rows = trials(root)
    assert [(r["stage"], r["status"]) for r in rows] == [("coarse", "completed")] * 3 + [
        ("fine", "completed")
    ]
    for row in rows:
        assert 1e-3 <= float(row["learning_rate"]) <= 1.0
        assert 0.0 <= float(row["val_accuracy"]) <= 1.0 and math.isfinite(float(row["val_loss"]))
        assert float(row["seconds"]) > 0
        # Each trial's run is an ordinary zoo.train run directory.
        assert os.path.isfile(os.path.join(row["run_dir"], "best", "checkpoint"))
    # The fine range lies inside the span of the two best coarse trials, widened by 10%.
    coarse = sorted(rows[:3], key=lambda r: -float(r["val_accuracy"]))[:2]
    lrs = [float(r["learning_rate"]) for r in coarse]
    low, high = min(lrs) / 1000**0.1, max(lrs) * 1000**0.1
    assert all(low * 0.999 <= float(r["learning_rate"]) <= high * 1.001 for r in rows[3:])
    assert (root / "trials.png").stat().st_size > 10_000
    # TensorBoard's HParams dashboard: the search's configuration and each trial's values.
    assert hparams_tags(root / "hparams") == {"_hparams_/experiment"}
    trial_logs = os.path.join(rows[0]["run_dir"], "tensorboard")
    assert "_hparams_/session_start_info" in hparams_tags(trial_logs)
    assert "reproduce: python -m zoo.train" in out and "[coarse] trial 3 of 3" in out
    best = json.loads((root / "best.json").read_text())
    assert best["value"] == max(float(r["val_accuracy"]) for r in rows)


def test_a_loss_objective_picks_and_exports_each_trials_loss_best_epoch(
    tmp_path, capsys, monkeypatch
):
    """``--objective val_loss``: each trial's best/ (what --export-best exports) is its
    val_loss-best epoch, the epoch the search reports, not its val_accuracy-best one."""
    monkeypatch.chdir(tmp_path)
    code = search_main(
        [
            *SMALL,
            "--max-trials", "1", "--stage", "coarse", "--epochs-per-trial", "3",
            "--objective", "val_loss", "--export-best",
            "--directory", str(tmp_path / "runs"), "--project", "p",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    [row] = trials(tmp_path / "runs" / "p")
    run = row["run_dir"]
    with open(os.path.join(run, "history.csv")) as f:
        history = list(csv.DictReader(f))
    losses = [float(r["val_loss"]) for r in history]
    best = max(i for i, v in enumerate(losses) if v == min(losses)) + 1  # a tie: the later
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["monitor"] == "val_loss" and metrics["best_epoch"] == best
    assert float(row["val_loss"]) == min(losses)
    exported = json.loads(
        (tmp_path / "saved_models" / "resnet20" / "1" / "metadata.json").read_text()
    )
    assert exported["checkpoint"].endswith(f"best-{best}")
    assert "--monitor val_loss" in out  # the reproducing command keeps the same best epoch


def test_a_diverging_trial_is_failed_with_its_reason_and_the_search_goes_on(tmp_path):
    root = tmp_path / "runs" / "p"
    code = search_main(
        [
            *SMALL,
            "--max-trials", "2", "--epochs-per-trial", "1", "--stage", "coarse",
            "--space", only_learning_rate(tmp_path, {"type": "choice", "values": [1e9, 0.05]}),
            "--directory", str(tmp_path / "runs"), "--project", "p", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    rows = {float(r["learning_rate"]): r for r in trials(root)}
    assert rows.keys() == {1e9, 0.05}
    assert rows[1e9]["status"] == "failed" and "diverged: loss became" in rows[1e9]["reason"]
    assert rows[0.05]["status"] == "completed" and rows[0.05]["reason"] == ""


def test_bad_space_file_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "space.json"
    path.write_text('{"learning_rate": {"type": "float", "min": 0, "max": 1, "sampling": "log"}}')
    with pytest.raises(SystemExit) as exit_info:
        search_main(["--space", str(path)])
    assert exit_info.value.code == 2
    assert "learning_rate: a log range needs min > 0" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_search_resumes_without_losing_or_rerunning_a_trial(tmp_path):
    args = [
        *SMALL,
        "--max-trials", "3", "--epochs-per-trial", "2", "--stage", "coarse",
        "--space", only_learning_rate(
            tmp_path, {"type": "float", "min": 1e-2, "max": 0.3, "sampling": "log"}
        ),
        "--directory", str(tmp_path / "runs"), "--project", "p",
    ]  # fmt: skip
    proc = start_module("tuning.search", *args, stderr=subprocess.DEVNULL)
    deadline = time.time() + CHILD_TIMEOUT
    for line in proc.stdout:
        if line.startswith("[coarse] trial 2 of 3") or time.time() > deadline:
            time.sleep(4)  # into the second trial
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=CHILD_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    root = tmp_path / "runs" / "p"
    first = trials(root)
    assert [r["trial"] for r in first if r["status"] == "completed"] == ["0"]
    history = (root / "coarse" / "trial_0" / "run" / "history.csv").read_bytes()

    again = run_module("tuning.search", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = trials(root)
    assert [(r["trial"], r["status"]) for r in rows] == [
        ("0", "completed"),
        ("1", "completed"),
        ("2", "completed"),
    ]
    assert rows[0] == first[0]  # the finished trial is kept as it was, not re-run
    assert (root / "coarse" / "trial_0" / "run" / "history.csv").read_bytes() == history
    assert "(id 0)" not in again.stdout
    for trial in ("1", "2"):  # the interrupted trial was finished, each epoch once
        with open(root / "coarse" / f"trial_{trial}" / "run" / "history.csv") as f:
            assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]


@pytest.mark.slow
def test_the_printed_command_reproduces_the_best_trial(tmp_path, capsys):
    code = search_main(
        [
            *SMALL,
            "--deterministic",
            "--max-trials", "2", "--epochs-per-trial", "2", "--stage", "coarse",
            "--space", only_learning_rate(
                tmp_path, {"type": "float", "min": 1e-2, "max": 0.3, "sampling": "log"}
            ),
            "--directory", str(tmp_path / "runs"), "--project", "p",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    command = next(
        line.split("reproduce: ", 1)[1]
        for line in out.splitlines()
        if line.startswith("reproduce: ")
    )
    assert command.startswith("python -m zoo.train ")
    assert "--deterministic" in command and "--epochs 2" in command
    argv = command.split()[3:]  # after python -m zoo.train
    argv[argv.index("--run-dir") + 1] = str(tmp_path / "again")
    assert train_main(argv) == 0
    best = json.loads((tmp_path / "runs" / "p" / "best.json").read_text())
    metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert metrics["val_accuracy"] == best["value"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen) -> None:
    """Until something listens on ``port`` (the chief's oracle server), or ``proc`` ends."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listened on port {port} (chief's exit code {proc.poll()})")


@pytest.mark.slow
def test_a_chief_and_two_workers_search_together(tmp_path):
    port = _free_port()
    args = [
        *SMALL,
        "--max-trials", "4", "--epochs-per-trial", "1", "--stage", "coarse",
        "--space", only_learning_rate(
            tmp_path, {"type": "float", "min": 1e-2, "max": 0.3, "sampling": "log"}
        ),
        "--directory", str(tmp_path / "runs"), "--project", "p",
    ]  # fmt: skip
    procs = {}
    try:
        for tuner_id in ("chief", "tuner0", "tuner1"):
            env = child_env(
                KERASTUNER_TUNER_ID=tuner_id,
                KERASTUNER_ORACLE_IP="127.0.0.1",
                KERASTUNER_ORACLE_PORT=str(port),
            )
            procs[tuner_id] = start_module("tuning.search", *args, env=env)
            if tuner_id == "chief":
                wait_for_port(port, procs["chief"])  # the oracle's server first
        outputs = dict(zip(procs, finish(list(procs.values())), strict=True))
    finally:
        for proc in procs.values():
            proc.kill()
    for tuner_id, proc in procs.items():
        assert proc.returncode == 0, (tuner_id, outputs[tuner_id][1][-3000:])
    ran = {
        tuner_id: [
            line.split("trial id ")[1].split(":")[0]
            for line in outputs[tuner_id][0].splitlines()
            if "trial id " in line
        ]
        for tuner_id in ("tuner0", "tuner1")
    }
    ids = ran["tuner0"] + ran["tuner1"]
    assert sorted(ids) == ["0", "1", "2", "3"]  # every trial run once, by one worker
    assert ran["tuner0"] and ran["tuner1"]  # both workers took part
    rows = trials(tmp_path / "runs" / "p")
    assert [(r["trial"], r["status"]) for r in rows] == [(i, "completed") for i in "0123"]
