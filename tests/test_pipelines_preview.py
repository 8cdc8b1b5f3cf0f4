"""The preview command line."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipelines import preview


def test_preview_writes_a_captioned_grid(tmp_path):
    out = tmp_path / "grid.png"
    result = preview.render_grid("digits", "cifar", out, rows=2, cols=3, seed=1)
    captions = result.captions
    assert len(captions) == 6 and set(captions) <= set("0123456789")
    assert (result.augment, result.image_size) == ("cifar", 32)
    image = np.asarray(Image.open(out))
    assert image.shape[0] > 100 and image.shape[1] > 150
    assert image[..., :3].std() > 10  # not a blank canvas


def test_preview_soft_labels_show_two_classes(tmp_path):
    result = preview.render_grid("digits", "cifar,mixup=1.0", tmp_path / "mix.png", rows=2, cols=4)
    assert any(" / " in c for c in result.captions)


def test_preview_default_shows_what_training_uses(tmp_path):
    """``auto`` is resolved as for training: the grid is the resolved spec's grid, pixel for
    pixel, and not the flipped one."""

    def pixels(augment: str) -> np.ndarray:
        out = tmp_path / f"{augment}.png"
        preview.render_grid("digits", augment, out, rows=2, cols=4, seed=3)
        return np.asarray(Image.open(out))

    result = preview.render_grid("digits", out=tmp_path / "auto.png", rows=2, cols=4, seed=3)
    assert result.augment == "cifar,flip=false" and result.image_size == 32
    auto = np.asarray(Image.open(tmp_path / "auto.png"))
    assert np.array_equal(auto, pixels("cifar,flip=false"))
    assert not np.array_equal(auto, pixels("cifar"))


def test_preview_default_size_follows_the_model(tmp_path):
    """Images of several sizes: the model's native side, else 224 (as training picks)."""
    rng = np.random.default_rng(0)
    for k in range(4):
        path = tmp_path / "data" / ("a" if k % 2 else "b") / f"{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + k, 30, 3), dtype=np.uint8)).save(path)
    source = f"folder:{tmp_path / 'data'}"
    small = preview.render_grid(source, out=tmp_path / "a.png", rows=1, cols=2, model="resnet20")
    assert (small.image_size, small.augment) == (32, "cifar")
    large = preview.render_grid(source, out=tmp_path / "b.png", rows=1, cols=2)
    assert (large.image_size, large.augment) == (224, "imagenet")


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
        "--model",
        "--data-dir",
        "--download",
    ):
        assert flag in help_text
    assert "(default: digits)" in help_text and "(default: auto)" in help_text


def test_preview_command_writes_the_grid_and_refuses_an_unknown_preset(tmp_path, capsys):
    out = tmp_path / "grid.png"
    argv = ["--dataset", "digits", "--out", str(out), "--rows", "1", "--cols", "2"]
    assert preview.main(argv) == 0
    assert f"wrote {out} (augment 'cifar,flip=false', 32x32)" in capsys.readouterr().out
    assert out.is_file()
    assert preview.main(["--augment", "sharpen", "--out", str(tmp_path / "x.png")]) == 2
    assert "Unknown augmentation preset 'sharpen'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
