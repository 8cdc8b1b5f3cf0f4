"""Running a test's Python script in a fresh interpreter (device setup, such as logical CPUs,
must come before TensorFlow starts), and reading the JSON it prints on a ``RESULT`` line."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, timeout: float = 300) -> dict:
    """Run ``script`` with the project importable and no GPU; return its RESULT JSON."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
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
