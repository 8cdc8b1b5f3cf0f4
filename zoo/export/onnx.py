"""``model.onnx``: converted with tf2onnx from the same function as ``serving_default`` (dynamic
batch, input ``images``, outputs ``probabilities``, ``logits``, ``classes``), checked with
``onnx.checker`` and run in ONNX Runtime against the saved SavedModel on real images; a largest
difference in probabilities above `PARITY_TOLERANCE` fails the export.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.cli import one_line
from zoo.export.errors import ExportError

if TYPE_CHECKING:
    from zoo.export.serving import ServingModule

PARITY_TOLERANCE = 1e-4
DEFAULT_OPSET = 17
MIN_OPSET = 6  # tf2onnx's README: opsets 14-18 are tested, 6-13 "should work"


def max_opset() -> int:
    """The newest ONNX opset that the installed tf2onnx converts to."""
    from tf2onnx import constants

    return max(constants.OPSET_TO_IR_VERSION)


def check_opset(opset: Any, name: str = "opset") -> int:
    """An opset tf2onnx can convert to, else a `ValueError` naming ``name`` (``--opset``)."""
    top = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise ValueError(
            f"{name} {opset} is not supported: tf2onnx converts opsets {MIN_OPSET} to {top} "
            f"(default {DEFAULT_OPSET}); choose one of those, or skip ONNX with --no-onnx."
        )
    return opset


def _convert_onnx(module: ServingModule, path: Path, opset: int) -> None:
    import onnx
    import tf2onnx

    proto, _ = tf2onnx.convert.from_function(
        module.serve, input_signature=module.serve.input_signature, opset=opset
    )
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())


def write_and_check(
    module: ServingModule, path: Path, opset: int, images: np.ndarray, expected: np.ndarray
) -> dict[str, Any]:
    """Write ``module.serve`` as ONNX to ``path`` and run it in ONNX Runtime on ``images``:
    its probabilities must match ``expected`` (the SavedModel's). Returns the parity figures.

    Raises:
        ExportError: the conversion, the check or ONNX Runtime failed, or they differ by more
            than `PARITY_TOLERANCE`.
    """
    try:
        import onnxruntime

        _convert_onnx(module, path, opset)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = [o.name for o in session.get_outputs()]
        probabilities = session.run(["probabilities"], {"images": images})[0]
    except (ExportError, OSError):
        raise
    except Exception as err:  # tf2onnx, onnx.checker and ONNX Runtime raise many kinds
        raise ExportError(
            f"the ONNX conversion at opset {opset} failed ({one_line(err, 300, typed=True)}); "
            "try another --opset, or --no-onnx to export the SavedModel alone; nothing was "
            "exported."
        ) from None
    diff = float(np.abs(probabilities - expected).max())
    if not diff <= PARITY_TOLERANCE:
        raise ExportError(
            f"ONNX Runtime differs from the SavedModel by {diff:.3g} in "
            f"probabilities (tolerance {PARITY_TOLERANCE}); not exported."
        )
    return {"onnx_vs_savedmodel_max_abs_diff": diff, "onnx_outputs": sorted(outputs)}
