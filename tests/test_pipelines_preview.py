"""The preview command lines: ``pipelines.preview`` and the model-aware ``zoo.preview``."""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipelines import preview
from zoo import preview as zoo_preview


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


def test_preview_default_size_follows_the_model(tmp_path, capsys):
    """Images of several sizes: the model's native side (``zoo.preview --model``, or the side
    passed to ``render_grid``), else 224 (as training picks)."""
    rng = np.random.default_rng(0)
    for k in range(4):
        path = tmp_path / "data" / ("a" if k % 2 else "b") / f"{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + k, 30, 3), dtype=np.uint8)).save(path)
    source = f"folder:{tmp_path / 'data'}"
    flags = ["--dataset", source, "--rows", "1", "--cols", "2"]
    out = tmp_path / "a.png"
    assert zoo_preview.main([*flags, "--out", str(out), "--model", "resnet20"]) == 0
    assert f"wrote {out} (augment 'cifar', 32x32)" in capsys.readouterr().out
    side = preview.render_grid(source, out=tmp_path / "c.png", rows=1, cols=2, model_side=48)
    assert (side.image_size, side.augment) == (48, "cifar")
    large = preview.render_grid(source, out=tmp_path / "b.png", rows=1, cols=2)
    assert (large.image_size, large.augment) == (224, "imagenet")


def test_zoo_preview_refuses_an_unknown_model(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert zoo_preview.main(["--model", "resnet5", "--out", str(out)]) == 2
    assert "error: Unknown model 'resnet5'." in capsys.readouterr().err
    assert not out.exists()


def test_pipelines_preview_sends_model_to_zoo_preview(tmp_path, capsys):
    """``--model`` needs the zoo, a floor above the pipelines: one line naming the command."""
    out = tmp_path / "x.png"
    argv = ["--dataset", "digits", "--model", "resnet20", "--out", str(out)]
    assert preview.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"run: python -m zoo.preview --dataset digits --model resnet20 --out {out}" in err
    assert not out.exists()


def test_preview_help_explains_every_flag():
    help_text = " ".join(preview.build_parser().format_help().split())
    zoo_help = " ".join(zoo_preview.build_parser().format_help().split())
    assert zoo_help.startswith("usage: python -m zoo.preview [-h]")
    assert "--model MODEL" not in help_text and "python -m zoo.preview --model NAME" in help_text
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
        assert flag in help_text and flag in zoo_help
    assert "--model" in zoo_help and "else the --model's input side, else 224" in zoo_help
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
