"""The preview command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines import preview

REPO = Path(__file__).resolve().parents[1]


def test_preview_writes_a_captioned_grid(tmp_path):
    out = tmp_path / "grid.png"
    captions = preview.render_grid("digits", "cifar", out, rows=2, cols=3, seed=1)
    assert len(captions) == 6 and set(captions) <= set("0123456789")
    image = np.asarray(Image.open(out))
    assert image.shape[0] > 100 and image.shape[1] > 150
    assert image[..., :3].std() > 10  # not a blank canvas


def test_preview_soft_labels_show_two_classes(tmp_path):
    captions = preview.render_grid(
        "digits", "cifar,mixup=1.0", tmp_path / "mix.png", rows=2, cols=4
    )
    assert any(" / " in c for c in captions)


def test_preview_help_explains_every_flag():
    help_text = " ".join(preview.build_parser().format_help().split())
    for flag in (
        "--dataset",
        "--augment",
        "--out",
        "--rows",
        "--cols",
        "--seed",
        "--epoch",
        "--split",
        "--image-size",
        "--data-dir",
        "--download",
    ):
        assert flag in help_text
    assert "(default: digits)" in help_text and "(default: cifar)" in help_text


def test_preview_module_command(tmp_path, capsys):
    out = tmp_path / "grid.png"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.preview",
            "--dataset",
            "digits",
            "--augment",
            "cifar",
            "--out",
            str(out),
            "--rows",
            "1",
            "--cols",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {out}" in proc.stdout and out.is_file()
    assert preview.main(["--augment", "sharpen", "--out", str(tmp_path / "x.png")]) == 2
    assert "Unknown augmentation preset 'sharpen'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
