"""Bad data through ``python -m zoo.train``: one ``error:`` line naming the CLI's flags, exit 2."""

from __future__ import annotations

import numpy as np
from PIL import Image

from zoo.train import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_cli_tfds_dataset_not_on_this_machine(tmp_path, capsys):
    code = main(
        ["--dataset", "tfds:mnist", "--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "r")]
    )
    assert code == 2
    line = _error_line(capsys)
    assert str(tmp_path / "mnist") in line  # where the data is looked for
    assert "--download" in line and "--data-dir DIR" in line
    assert not (tmp_path / "r").exists()


def test_cli_folder_with_one_class(tmp_path, capsys):
    """Enough images for a validation split: the run would train to "100% accuracy"."""
    for k in range(10):
        path = tmp_path / "data" / "cat" / f"{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 20 * k, np.uint8)).save(path)
    small = ["--width", "0.125", "--epochs", "1", "--batch-size", "4"]
    run = tmp_path / "r"
    code = main(["--dataset", f"folder:{tmp_path / 'data'}", *small, "--run-dir", str(run)])
    assert code == 2 and not run.exists()
    line = _error_line(capsys)
    assert "['cat']" in line and "at least two class folders" in line
