"""Reference outputs of torchvision's ResNets and VGGs for `tests/test_weights.py`.

A state dict in torchvision's names and shapes is drawn from a seeded NumPy generator (no
PyTorch needed: the names and shapes come from `zoo.weights.torchvision_state_shapes`). Where
PyTorch and torchvision are installed, ``python tests/torchvision_reference.py`` loads each
state dict into torchvision's own model (``strict=True``, so a wrong name or shape fails here)
and stores its outputs on fixed inputs in ``tests/fixtures/torchvision_reference.npz``; the
test converts the same state dict into the zoo's model and compares, offline.

Generated with torch 2.14.1 and torchvision 0.29.1 on the CPU (``pip install torch==2.14.1
torchvision==0.29.1`` beside ``pip install -e .``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_reference.npz"
CLASSES = 10
IMAGES = 2

# (model, input side, with the classifier): ResNets with their classifier at 64x64; VGG's
# classifier needs 224x224 (torchvision pools to 7x7 before flattening), so vgg11 and vgg11_bn
# check it there and every VGG checks its convolutions at 32x32 without it.
CASES = [
    ("resnet18", 64, True),
    ("resnet34", 64, True),
    ("resnet50", 64, True),
    ("resnet101", 64, True),
    ("resnet152", 64, True),
    ("vgg11", 224, True),
    ("vgg11_bn", 224, True),
    *((name, 32, False) for name in ("vgg11", "vgg13", "vgg16", "vgg19")),
    *((f"{name}_bn", 32, False) for name in ("vgg11", "vgg13", "vgg16", "vgg19")),
]


def key(name: str, side: int, top: bool) -> str:
    return f"{name}_{side}_{'top' if top else 'features'}"


def zoo_model(name: str, side: int, top: bool):
    import zoo

    return zoo.create_model(
        name,
        input_shape=(side, side, 3),
        classes=CLASSES,
        include_top=top,
        small_inputs=False,
    )


def random_state(model, family: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights at a scale that keeps outputs near 1, and batch-norm statistics far from
    0 and 1, in torchvision's names and shapes (drawn in sorted key order)."""
    from zoo.weights import torchvision_state_shapes

    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in sorted(torchvision_state_shapes(model, family).items()):
        if name.endswith("running_mean"):
            value = rng.normal(0, 2, shape)
        elif name.endswith("running_var"):
            value = rng.uniform(0.5, 4, shape)
        elif len(shape) == 1 and name.endswith(".weight"):  # batch-norm scale
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 1:  # biases
            value = rng.normal(0, 0.1, shape)
        else:
            value = rng.normal(0, np.sqrt(1 / np.prod(shape[1:])), shape)
        state[name] = value.astype(np.float32)
    return state


def inputs(side: int, seed: int = 1) -> np.ndarray:
    """Normalised NHWC images (what both models take after their normalisation)."""
    return np.random.default_rng(seed).normal(0, 1, (IMAGES, side, side, 3)).astype(np.float32)


def main() -> None:
    import torch
    import torchvision

    torch.use_deterministic_algorithms(True)
    outputs = {}
    for name, side, top in CASES:
        family = "resnet" if name.startswith("resnet") else "vgg"
        state = random_state(zoo_model(name, side, top), family)
        net = getattr(torchvision.models, name)(weights=None, num_classes=CLASSES).eval()
        tensors = {k: torch.from_numpy(v) for k, v in state.items()}
        for buffer in net.state_dict():
            if buffer.endswith("num_batches_tracked"):
                tensors[buffer] = torch.tensor(0)
        if not top:  # the features alone: the classifier's keys come from its own init
            for k, v in net.state_dict().items():
                if k.startswith("classifier."):
                    tensors[k] = v
        net.load_state_dict(tensors, strict=True)
        x = torch.from_numpy(inputs(side)).permute(0, 3, 1, 2)
        with torch.no_grad():
            out = net(x) if top else net.features(x).permute(0, 2, 3, 1)
        outputs[key(name, side, top)] = out.numpy().astype(np.float32)
        print(name, side, top, tuple(out.shape), float(out.abs().max()))
    FIXTURE.parent.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURE, **outputs)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
