"""Child processes of the tests: a fresh interpreter where one is needed (device setup such as
logical CPUs or ``TF_CONFIG`` must come before TensorFlow starts; a command line's exit code and
first screen; a process to kill), and nowhere else.

Every child gets `CHILD_TIMEOUT` seconds: far above what a healthy child takes on the slowest
machine this project has seen (the longest, a benchmark section in smoke mode, about 3 minutes
on a 2-core AVX2-only CPU), so only a hung child reaches it. ``ZOO_TEST_CHILD_TIMEOUT`` (seconds)
changes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT = float(os.environ.get("ZOO_TEST_CHILD_TIMEOUT", "1800"))

# The project importable, TensorFlow's log quiet, no GPU, output unbuffered.
ENV = {
    **os.environ,
    "PYTHONPATH": str(REPO),
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "CUDA_VISIBLE_DEVICES": "",
    "PYTHONUNBUFFERED": "1",
}


def child_env(drop: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """`ENV` without the variables in ``drop`` and with ``extra`` set."""
    return {**{k: v for k, v in ENV.items() if k not in drop}, **extra}


def _run(argv: list[str], env: dict[str, str] | None, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env=ENV if env is None else env,
        cwd=cwd,
        timeout=CHILD_TIMEOUT,
        check=False,
    )


def run_python(
    code: str, *args: str, env: dict[str, str] | None = None, cwd=None
) -> subprocess.CompletedProcess:
    """Run ``code`` (dedented) with ``args`` in a fresh interpreter; capture its output."""
    return _run(["-c", textwrap.dedent(code), *args], env, cwd)


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None, cwd=None
) -> subprocess.CompletedProcess:
    """``python -m module args`` as a user types it; capture its output."""
    return _run(["-m", module, *args], env, cwd)


def start_module(
    module: str, *args: str, env: dict[str, str] | None = None, stderr=subprocess.PIPE
) -> subprocess.Popen:
    """``python -m module args`` started in the background, its stdout a text pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=ENV if env is None else env,
    )


def finish(procs: list[subprocess.Popen]) -> list[tuple[str, str]]:
    """Each process's (stdout, stderr) once it ends, read from all at once (a child blocked on a
    full pipe cannot hold up the others); all are killed if one outlives the timeout or the
    test fails meanwhile."""
    try:
        with ThreadPoolExecutor(len(procs)) as pool:
            return list(pool.map(lambda p: p.communicate(timeout=CHILD_TIMEOUT), procs))
    finally:
        for proc in procs:
            proc.kill()


def run_script(script: str, *args: str) -> dict:
    """Run ``script`` with ``args`` in a fresh interpreter; assert it succeeded; return its
    ``RESULT`` JSON."""
    proc = run_python(script, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def assert_same_layer_weights(model, other, names) -> None:
    """Every weight of each named layer is identical in ``model`` and ``other``."""
    import numpy as np

    for name in names:
        got, want = model.get_layer(name).get_weights(), other.get_layer(name).get_weights()
        assert len(got) == len(want), name
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
