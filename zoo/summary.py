"""Parameters, multiply-adds and memory per model: ``python -m zoo.summary``.

Conventions (those of CS231n's architecture tables and of torchvision's GFLOPS column):

- **Multiply-adds** (MACs) for one image and one forward pass count convolutions (grouped and
  depthwise included) and dense layers: ``H_out * W_out * C_out * k_h * k_w * C_in / groups`` and
  ``inputs * units``. Bias additions, batch norm, pooling, LRN and activations are not counted.
- **Activation memory** is the float32 size of the input plus every layer output that a training
  forward pass keeps, for one image. Activations, dropout, padding and flatten/reshape outputs
  are left out: they run in place, are views, or are fused into the next op.
- **Weight memory** is the float32 size of all weights, trainable or not (BN statistics).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from zoo.cli import add_verbose_flag, start_tensorflow

BYTES_PER_FLOAT32 = 4
MIB = 1024**2


@dataclass(frozen=True)
class ModelStats:
    """One model's size and cost at one input shape."""

    model: str
    input_shape: tuple[int, int, int]
    classes: int
    trainable_params: int
    total_params: int
    macs: int
    activations: int  # float32 values per image
    reference_macs: float | None  # published, when at the model's default shape and classes

    @property
    def activation_mib(self) -> float:
        return self.activations * BYTES_PER_FLOAT32 / MIB

    @property
    def weight_mib(self) -> float:
        return self.total_params * BYTES_PER_FLOAT32 / MIB


def _not_kept():
    from keras import layers

    return (
        layers.InputLayer,
        layers.ReLU,
        layers.Activation,
        layers.Dropout,
        layers.Flatten,
        layers.Reshape,
        layers.ZeroPadding2D,
    )


def count_macs(layer, input_shape: Sequence[int | None], output_shape: Sequence[int | None]) -> int:
    """Multiply-adds of one layer call for a batch of one (0 for layers that have none)."""
    from keras import layers

    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return math.prod(output_shape[1:]) * kh * kw
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        return math.prod(output_shape[1:]) * kh * kw * input_shape[-1] // layer.groups
    if isinstance(layer, layers.Dense):
        return math.prod(output_shape[1:]) * input_shape[-1]
    return 0


def _outputs(tensor) -> list:
    return list(tensor) if isinstance(tensor, (list, tuple)) else [tensor]


def profile(model) -> tuple[int, int]:
    """``(multiply-adds, activation values)`` per image for a built functional model whose
    layers are each called once (as every model of the zoo)."""
    from keras import layers

    not_kept = _not_kept()
    macs = 0
    activations = sum(math.prod(t.shape[1:]) for t in _outputs(model.inputs))
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        inputs, outputs = _outputs(layer.input), _outputs(layer.output)
        macs += count_macs(layer, inputs[0].shape, outputs[0].shape)
        if not isinstance(layer, not_kept):
            activations += sum(math.prod(t.shape[1:]) for t in outputs)
    return int(macs), int(activations)


def summarize(
    name: str,
    *,
    input_shape: tuple[int, int, int] | None = None,
    classes: int | None = None,
    width: float = 1.0,
    **overrides,
) -> ModelStats:
    """Build ``name`` and measure it (see the module docstring for the conventions)."""
    import keras

    import zoo

    info = zoo.model_info(name)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    # Counting needs shapes only: in a stateless scope that does not initialise them, the
    # weights are never allocated (VGG-16 at 2048x2048 has 8.6 billion of them).
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = zoo.create_model(
                name, input_shape=input_shape, classes=classes, width=width, **overrides
            )
            trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
            total = sum(math.prod(w.shape) for w in model.weights)
            macs, activations = profile(model)
            shape = tuple(model.inputs[0].shape[1:])
            n_classes = model.outputs[0].shape[-1]
            del model
    finally:
        keras.backend.clear_session()  # also forgets the uninitialised weights
    is_reference = (
        shape == info.input_shape and n_classes == info.classes and width == 1.0 and not overrides
    )
    return ModelStats(
        model=name,
        input_shape=shape,
        classes=int(n_classes),
        trainable_params=int(trainable),
        total_params=int(total),
        macs=macs,
        activations=activations,
        reference_macs=info.macs if is_reference else None,
    )


COLUMNS = (
    ("model", "model"),
    ("input", "input"),
    ("classes", "classes"),
    ("trainable params", "trainable_params"),
    ("total params", "total_params"),
    ("GMACs", "gmacs"),
    ("published GMACs", "reference_gmacs"),
    ("activations MiB/image", "activation_mib"),
    ("weights MiB", "weight_mib"),
    ("pretrained", "pretrained"),
)


def _row(stats: ModelStats) -> dict:
    ref = stats.reference_macs
    return {
        "model": stats.model,
        "input": "x".join(map(str, stats.input_shape)),
        "classes": stats.classes,
        "trainable_params": stats.trainable_params,
        "total_params": stats.total_params,
        "gmacs": round(stats.macs / 1e9, 3),
        "reference_gmacs": None if ref is None else round(ref / 1e9, 3),
        "activation_mib": round(stats.activation_mib, 2),
        "weight_mib": round(stats.weight_mib, 2),
        "pretrained": ", ".join(_pretrained(stats.model)),
    }


def _pretrained(name: str) -> tuple[str, ...]:
    """The published weights ``create_model(name, weights=...)`` converts (`zoo.weights`)."""
    import zoo

    try:
        return zoo.model_info(name).weights
    except ValueError:  # a model registered under another name
        return ()


def _cell(key: str, value) -> str:
    if value is None:
        return ""
    if key.endswith("gmacs"):
        return f"{value:.3f}"
    if key.endswith("_mib"):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(stats: Sequence[ModelStats], fmt: str) -> str:
    """Render rows as ``table``, ``markdown``, ``json`` or ``csv``."""
    rows = [_row(s) for s in stats]
    if fmt == "json":
        return json.dumps([{**asdict(s), **r} for s, r in zip(stats, rows, strict=True)], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[key for _, key in COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    headers = [title for title, _ in COLUMNS]
    cells = [[_cell(key, r[key]) for _, key in COLUMNS] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|")
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        padded = (
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def render_recipes(names: Sequence[str], fmt: str) -> str:
    """Each model's `zoo.registry.Recipe` as ``table``, ``markdown``, ``json`` or ``csv``."""
    import zoo

    rows = []
    for name in names:
        recipe = zoo.model_info(name).recipe
        rows.append({"model": name, **recipe.values(), "note": recipe.note})
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["model"])
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    cells = [[r["model"], zoo.model_info(r["model"]).recipe.describe()] for r in rows]
    if fmt == "markdown":
        return "\n".join(["| model | recipe |", "|---|---|", *(f"| {m} | {d} |" for m, d in cells)])
    width = max([5, *(len(m) for m, _ in cells)])
    return "\n".join(
        [f"{'model'.ljust(width)}  recipe", f"{'-' * width}  ------"]
        + [f"{m.ljust(width)}  {d}" for m, d in cells]
    )


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) == 2:
        shape = (*shape, 3)
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHT,WIDTH[,CHANNELS] such as 224,224,3 or 32x32, got {text!r}"
        )
    return shape  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.summary",
        description="Parameters, multiply-adds and memory per image for the zoo's models "
        "(MACs count convolutions and dense layers; memory is float32).",
    )
    parser.add_argument(
        "--model", default=None, help="a model name or glob (e.g. 'resnet*'); default: every model"
    )
    parser.add_argument(
        "--input-shape",
        type=_shape,
        default=None,
        help="HEIGHT,WIDTH[,CHANNELS], e.g. 32,32,3; default: each model's own",
    )
    parser.add_argument(
        "--classes", type=int, default=None, help="number of classes; default: each model's own"
    )
    parser.add_argument(
        "--width", type=float, default=1.0, help="channel width multiplier (default: 1.0)"
    )
    parser.add_argument(
        "--small-inputs",
        choices=("auto", "yes", "no"),
        default="auto",
        help="small-image stem/head: 'auto' (default) picks it for inputs of at most 64 pixels",
    )
    parser.add_argument(
        "--recipes",
        action="store_true",
        help="print each model's training recipe (the defaults of python -m zoo.train) instead",
    )
    parser.add_argument(
        "--format",
        choices=("table", "markdown", "json", "csv"),
        default="table",
        help="output format (default: table)",
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    start_tensorflow(args.verbose)

    import zoo

    if args.model is None:
        names = zoo.list_models()
    else:
        names = zoo.list_models(args.model)
        if not names:
            try:
                zoo.model_info(args.model)  # raises with close matches and the known names
            except ValueError as err:
                parser.error(str(err))
    if args.recipes:
        print(render_recipes(names, args.format))
        return 0
    small = {"auto": None, "yes": True, "no": False}[args.small_inputs]
    stats, failures = [], 0
    for name in names:
        try:
            stats.append(
                summarize(
                    name,
                    input_shape=args.input_shape,
                    classes=args.classes,
                    width=args.width,
                    small_inputs=small,
                )
            )
        except ValueError as err:
            failures += 1
            print(f"skipped {name}: {err}", file=sys.stderr)
    if stats:
        print(render(stats, args.format))
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
