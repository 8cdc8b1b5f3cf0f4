"""The zoo's architectures written in plain ``torch.nn``, for timing PyTorch on the same network.

Each builder mirrors the Keras model that ``zoo.create_model`` builds for the same name, width,
classes and input size, layer for layer: the same channels (``width`` scaled and rounded as the
zoo does), kernels, strides, paddings, biases (none before batch norm), batch-norm epsilon and
momentum (PyTorch's ``momentum`` is ``1 - Keras momentum``), shortcuts (option A zero-padding for
the CIFAR ResNets, 1x1 projections for the ImageNet ones, stride on the 3x3 of a bottleneck),
stems (the zoo's small-image form for inputs of at most 64 pixels: one 3x3 stride-1 convolution
and no max-pool) and heads. `assert_same_size` checks the parameter counts against the Keras twin.

Built: ``resnet20/32/44/56/110``, ``resnet18/34/50/101/152``, ``vgg11/13/16/19`` (and ``_bn``),
``googlenet`` (and ``googlenet_bn``), each in its small or large form. Not built: GoogLeNet's
auxiliary heads (off by default in the zoo) and ResNet's ``stride_in_1x1`` option (same count).

`train_step_runner` times a training step as the suite's engine section does: SGD with momentum
0.9 at 0.05 without decay or Nesterov (the same update as `benchmarks.engine.PLAIN_SGD`),
cross-entropy on logits, a few fixed in-memory batches cycled, channels-last when asked,
``torch.compile`` and AMP when asked.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.engine import PLAIN_SGD
from zoo import layers as zoo_layers

# The zoo's own settings, so that the twins cannot drift from it.
BN_EPSILON = zoo_layers.BN_EPSILON
BN_MOMENTUM = 1 - zoo_layers.BN_MOMENTUM  # PyTorch weights the new batch statistic
CLASSIFIER_STDDEV = zoo_layers.CLASSIFIER_INIT_STDDEV
LEARNING_RATE = PLAIN_SGD["learning_rate"]
MOMENTUM = PLAIN_SGD["momentum"]


class CompileUnavailable(RuntimeError):
    """``torch.compile`` failed here (e.g. no working C++ compiler); the message says why."""


def scale(channels: int, width: float) -> int:
    """``channels * width`` rounded as the zoo rounds it."""
    return zoo_layers.scale_channels(channels, width)


def small_form(image_size: int, small_inputs: bool | None) -> bool:
    """The zoo's ``small_inputs`` rule: explicit, or from the input size."""
    return zoo_layers.use_small_form((image_size, image_size), small_inputs)


# Building blocks -------------------------------------------------------------------------------


class ConvBN(nn.Sequential):
    """Convolution (by default a bias only without batch norm), optional batch norm and ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        *,
        stride: int = 1,
        padding: int | None = None,
        batch_norm: bool = True,
        bias: bool | None = None,
        relu: bool = True,
    ) -> None:
        pad = kernel // 2 if padding is None else padding
        bias = not batch_norm if bias is None else bias
        parts: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, bias=bias)
        ]
        if batch_norm:
            parts.append(nn.BatchNorm2d(cout, eps=BN_EPSILON, momentum=BN_MOMENTUM))
        if relu:
            parts.append(nn.ReLU(inplace=True))
        super().__init__(*parts)


class ZeroPadShortcut(nn.Module):
    """Option A: every ``stride``-th pixel, channels zero-padded evenly on both sides."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        extra = cout - cin
        self.stride, self.before, self.after = stride, extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.before, self.after))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut."""

    def __init__(self, cin: int, filters: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.out_channels = filters
        self.branch = nn.Sequential(
            ConvBN(cin, filters, 3, stride=stride), ConvBN(filters, filters, 3, relu=False)
        )
        self.skip = _shortcut(cin, filters, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.skip(x) + self.branch(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand x4, and a shortcut."""

    def __init__(self, cin: int, filters: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.out_channels = out = 4 * filters
        self.branch = nn.Sequential(
            ConvBN(cin, filters, 1),
            ConvBN(filters, filters, 3, stride=stride),
            ConvBN(filters, out, 1, relu=False),
        )
        self.skip = _shortcut(cin, out, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.skip(x) + self.branch(x))


def _shortcut(cin: int, cout: int, stride: int, kind: str) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    if kind == "zero_pad":
        return ZeroPadShortcut(cin, cout, stride)
    return ConvBN(cin, cout, 1, stride=stride, padding=0, relu=False)


class SamePool(nn.Module):
    """Max-pooling with TensorFlow's 'same' padding (extra row and column at the bottom/right)."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad lists the last dimension first
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=-math.inf), self.kernel, self.stride)


class Classifier(nn.Sequential):
    """Global average pooling, optional dropout, the final linear layer."""

    def __init__(self, cin: int, classes: int, dropout: float = 0.0) -> None:
        parts: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout:
            parts.append(nn.Dropout(dropout))
        parts.append(nn.Linear(cin, classes))
        super().__init__(*parts)


# Families --------------------------------------------------------------------------------------

# name: (block, blocks per stage, filters per stage, stem filters, shortcut)
RESNETS: dict[str, tuple[str, tuple[int, ...], tuple[int, ...], int, str]] = {
    **{
        f"resnet{6 * n + 2}": ("basic", (n, n, n), (16, 32, 64), 16, "zero_pad")
        for n in (3, 5, 7, 9, 18)
    },
    "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512), 64, "projection"),
    "resnet34": ("basic", (3, 4, 6, 3), (64, 128, 256, 512), 64, "projection"),
    "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), 64, "projection"),
    "resnet101": ("bottleneck", (3, 4, 23, 3), (64, 128, 256, 512), 64, "projection"),
    "resnet152": ("bottleneck", (3, 8, 36, 3), (64, 128, 256, 512), 64, "projection"),
}
VGGS: dict[str, tuple[int, ...]] = {  # 3x3 convolutions per stage (Table 1, A B D E)
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
VGG_WIDTHS = (64, 128, 256, 512, 512)
# GoogLeNet Table 1: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection); None is a pool.
INCEPTIONS: tuple[tuple[int, int, int, int, int, int] | None, ...] = (
    (64, 96, 128, 16, 32, 32),
    (128, 128, 192, 32, 96, 64),
    None,
    (192, 96, 208, 16, 48, 64),
    (160, 112, 224, 24, 64, 64),
    (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64),
    (256, 160, 320, 32, 128, 128),
    None,
    (256, 160, 320, 32, 128, 128),
    (384, 192, 384, 48, 128, 128),
)


def resnet(name: str, classes: int, width: float, small: bool) -> nn.Module:
    block_kind, depths, widths, stem_width, shortcut = RESNETS[name]
    block = BasicBlock if block_kind == "basic" else Bottleneck
    stem = scale(stem_width, width)
    if small:
        layers: list[nn.Module] = [ConvBN(3, stem, 3)]
    else:
        layers = [ConvBN(3, stem, 7, stride=2, padding=3), nn.MaxPool2d(3, 2, padding=1)]
    channels = stem
    for stage, (depth, filters) in enumerate(zip(depths, widths, strict=True)):
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            unit = block(channels, scale(filters, width), stride, shortcut)
            layers.append(unit)
            channels = unit.out_channels
    layers.append(Classifier(channels, classes))
    return nn.Sequential(*layers)


def vgg(name: str, classes: int, width: float, small: bool, image_size: int) -> nn.Module:
    batch_norm = name.endswith("_bn")
    layers: list[nn.Module] = []
    channels = 3
    for depth, filters in zip(VGGS[name.removesuffix("_bn")], VGG_WIDTHS, strict=True):
        for _ in range(depth):
            # the zoo's VGG convolutions keep their biases, with batch norm too
            cout = scale(filters, width)
            layers.append(ConvBN(channels, cout, 3, batch_norm=batch_norm, bias=True))
            channels = cout
        layers.append(nn.MaxPool2d(2, 2))
    side = image_size
    for _ in VGG_WIDTHS:
        side //= 2
    units = scale(512 if small else 4096, width)
    layers += [
        nn.Flatten(),
        nn.Linear(channels * side * side, units),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(units, units),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(units, classes),
    ]
    return nn.Sequential(*layers)


class Inception(nn.Module):
    """Four branches concatenated on channels (Figure 2b)."""

    def __init__(self, cin: int, row: tuple[int, ...], width: float, batch_norm: bool) -> None:
        super().__init__()
        b1, r3, b3, r5, b5, bp = (scale(c, width) for c in row)
        self.out_channels = b1 + b3 + b5 + bp
        conv = lambda i, o, k: ConvBN(i, o, k, batch_norm=batch_norm)  # noqa: E731
        self.b1 = conv(cin, b1, 1)
        self.b3 = nn.Sequential(conv(cin, r3, 1), conv(r3, b3, 3))
        self.b5 = nn.Sequential(conv(cin, r5, 1), conv(r5, b5, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), conv(cin, bp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


def lrn() -> nn.Module:
    """The zoo's LRN: k=2, n=5, alpha=1e-4 on the sum (PyTorch divides alpha by n)."""
    return nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)


def googlenet(name: str, classes: int, width: float, small: bool) -> nn.Module:
    batch_norm = name == "googlenet_bn"
    c64, c192 = scale(64, width), scale(192, width)
    if small:
        layers: list[nn.Module] = [ConvBN(3, c64, 3, batch_norm=batch_norm)]
    else:
        layers = [ConvBN(3, c64, 7, stride=2, padding=3, batch_norm=batch_norm), SamePool(3, 2)]
    if not batch_norm:
        layers.append(lrn())
    layers += [
        ConvBN(c64, c64, 1, batch_norm=batch_norm),
        ConvBN(c64, c192, 3, batch_norm=batch_norm),
    ]
    if not batch_norm:
        layers.append(lrn())
    if not small:
        layers.append(SamePool(3, 2))
    channels = c192
    for row in INCEPTIONS:
        if row is None:
            layers.append(SamePool(3, 2))
            continue
        module = Inception(channels, row, width, batch_norm)
        layers.append(module)
        channels = module.out_channels
    layers.append(Classifier(channels, classes, dropout=0.4))
    return nn.Sequential(*layers)


def _initialise(model: nn.Module) -> None:
    """The zoo's initialisers: He-normal (truncated) kernels, N(0, 0.01) classifier, zero biases."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            if m is linears[-1]:
                nn.init.normal_(m.weight, std=CLASSIFIER_STDDEV)
            else:  # Keras's he_normal: normal truncated at 2 sigma, rescaled to sqrt(2 / fan_in)
                std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def names() -> list[str]:
    """The names `build` knows."""
    return [*RESNETS, *VGGS, *(f"{v}_bn" for v in VGGS), "googlenet", "googlenet_bn"]


def build(
    name: str,
    classes: int = 10,
    width: float = 1.0,
    *,
    image_size: int = 32,
    small_inputs: bool | None = None,
) -> nn.Module:
    """The PyTorch twin of ``zoo.create_model(name, input_shape=(image_size, image_size, 3),
    classes=classes, width=width, small_inputs=small_inputs)``; it outputs logits."""
    small = small_form(image_size, small_inputs)
    if name in RESNETS:
        model = resnet(name, classes, width, small)
    elif name.removesuffix("_bn") in VGGS:
        model = vgg(name, classes, width, small, image_size)
    elif name in ("googlenet", "googlenet_bn"):
        model = googlenet(name, classes, width, small)
    else:
        raise ValueError(f"No PyTorch twin of {name!r}; known: {', '.join(names())}.")
    _initialise(model)
    return model


# Sizes -----------------------------------------------------------------------------------------


def keras_twin(
    name: str,
    width: float = 1.0,
    *,
    image_size: int = 32,
    classes: int = 10,
    small_inputs: bool | None = None,
) -> Any:
    """The zoo's Keras model for the same configuration (logits, random weights)."""
    import zoo

    return zoo.create_model(
        name,
        input_shape=(image_size, image_size, 3),
        classes=classes,
        width=width,
        small_inputs=small_inputs,
    )


def torch_size(model: nn.Module) -> int:
    """Parameters plus batch-norm running means and variances (``num_batches_tracked`` is a
    counter with no Keras counterpart and is left out)."""
    params = sum(p.numel() for p in model.parameters())
    stats = sum(
        b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))
    )
    return params + stats


def parameter_counts(
    name: str,
    width: float = 1.0,
    *,
    image_size: int = 32,
    classes: int = 10,
    small_inputs: bool | None = None,
) -> tuple[int, int]:
    """``(torch, keras)``: every weight of each side, trainable and not. Torch counts its
    parameters plus the batch-norm running mean and variance (`torch_size`); Keras counts
    ``model.count_params()``, its trainable weights plus the batch-norm moving mean and
    variance. Both are built at ``image_size`` (VGG's flattened classifier depends on it)."""
    config = {"image_size": image_size, "classes": classes, "small_inputs": small_inputs}
    mine = torch_size(build(name, classes, width, image_size=image_size, small_inputs=small_inputs))
    keras_model = keras_twin(name, width, **config)
    return mine, int(keras_model.count_params())


def assert_same_size(name: str, width: float = 1.0, **config: Any) -> tuple[int, int]:
    """Raise ``AssertionError`` with both counts unless the twins have as many weights."""
    mine, theirs = parameter_counts(name, width, **config)
    if mine != theirs:
        raise AssertionError(
            f"{name} (width {width}, {config or 'defaults'}): PyTorch twin has {mine:,} "
            f"weights, the zoo's Keras model {theirs:,}."
        )
    return mine, theirs


# Timing ----------------------------------------------------------------------------------------


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


_COMPILE_CHECK: dict[str, Any] | None = None


def compile_check() -> dict[str, Any]:
    """Whether ``torch.compile`` works here: compiles and runs a tiny function once (cached).
    ``{"ok": True, "seconds": ...}`` or ``{"ok": False, "error": first line}``."""
    global _COMPILE_CHECK
    if _COMPILE_CHECK is None:
        start = time.perf_counter()
        try:
            fn = torch.compile(lambda x: torch.relu(x) * 2 + 1)
            fn(torch.randn(8, 8))
            _COMPILE_CHECK = {"ok": True, "seconds": round(time.perf_counter() - start, 2)}
        except Exception as err:  # a missing or broken C++ compiler, an unsupported Python
            _COMPILE_CHECK = {"ok": False, "error": f"{type(err).__name__}: {_first_line(err)}"}
    return _COMPILE_CHECK


def torch_info() -> dict[str, Any]:
    """Version, threads, oneDNN (mkldnn), CUDA and whether ``torch.compile`` works here."""
    info: dict[str, Any] = {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda": torch.cuda.is_available(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "compile": compile_check(),
    }
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name()
    return info


def train_step_runner(
    name: str,
    *,
    batch_size: int,
    image_size: int = 32,
    classes: int = 10,
    width: float = 1.0,
    compile: bool = False,
    channels_last: bool = True,
    amp: bool = False,
    device: str = "cpu",
    threads: int | None = None,
    distinct_batches: int = 4,
    warmup_steps: int = 2,
    seed: int = 0,
) -> Callable[[int], None]:
    """``steps(n)``: ``n`` training steps of the twin of ``name``, finished when it returns.

    The model, SGD (momentum 0.9, lr 0.05, no decay), cross-entropy and ``distinct_batches``
    fixed batches (N(0, 1) images, uniform labels; channels-last when asked) are set up here,
    and ``warmup_steps`` steps run here too, so ``torch.compile``'s compilation and the first
    allocations are done before the caller times anything, and a failing compile raises
    `CompileUnavailable` from this call rather than from a timed one. ``amp``: bfloat16
    autocast on a CPU, float16 autocast with a gradient scaler on CUDA (where cuDNN's
    autotuner is switched on for the process, as TensorFlow autotunes its convolutions).
    ``threads`` sets ``torch.set_num_threads`` for the whole process (None keeps PyTorch's
    default: one thread per physical core). The returned function has ``compile_seconds``
    (the set-up's warm-up time) as an attribute; Inductor caches compiled kernels on disk
    (``TORCHINDUCTOR_CACHE_DIR``), so it is far shorter on a later run with the same shapes.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    if dev.type == "cuda":  # pick the fastest convolution algorithms, as TensorFlow does
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build(name, classes, width, image_size=image_size).to(dev, memory_format=fmt)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    batches = [
        (
            torch.randn(batch_size, 3, image_size, image_size, device=dev).contiguous(
                memory_format=fmt
            ),
            torch.randint(0, classes, (batch_size,), device=dev),
        )
        for _ in range(distinct_batches)
    ]
    forward = torch.compile(model) if compile else model
    cuda = dev.type == "cuda"
    amp_dtype = torch.float16 if cuda else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda") if amp and cuda else None
    position = 0

    def step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            loss = loss_fn(forward(images), labels)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss

    def steps(n: int) -> None:
        nonlocal position
        loss = None
        for _ in range(n):
            images, labels = batches[position % distinct_batches]
            position += 1
            loss = step(images, labels)
        if cuda:
            torch.cuda.synchronize(dev)
        elif loss is not None:
            loss.item()

    start = time.perf_counter()
    try:
        steps(warmup_steps)
    except Exception as err:
        if compile:
            raise CompileUnavailable(
                f"torch.compile failed: {type(err).__name__}: {_first_line(err)}"
            ) from err
        raise
    steps.compile_seconds = time.perf_counter() - start  # type: ignore[attr-defined]
    return steps


def _main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print("torch:", torch_info())
    for name in ("resnet20", "resnet18"):
        for width in (1.0, 0.25):
            mine, theirs = parameter_counts(name, width)
            mark = "same" if mine == theirs else "DIFFERENT"
            print(f"{name} w={width} 32x32: torch {mine:,}  keras {theirs:,}  {mark}")
    batch, n = 128, 3
    for compiled in (False, True):
        start = time.perf_counter()
        run = train_step_runner("resnet20", batch_size=batch, compile=compiled)
        setup = time.perf_counter() - start
        start = time.perf_counter()
        run(n)
        seconds = time.perf_counter() - start
        label = "compiled" if compiled else "eager"
        print(
            f"resnet20 batch {batch} {label}: set-up + 2 warm-up steps {setup:.1f} s, "
            f"{n / seconds:.2f} steps/s ({n * batch / seconds:.0f} images/s)"
        )


if __name__ == "__main__":
    _main()
