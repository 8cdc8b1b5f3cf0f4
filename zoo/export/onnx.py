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


# Calibration batch of ONNX Runtime's static quantization (images per calibration run).
CALIBRATION_BATCH = 16


def quantize(model: Path, out: Path, calibration: np.ndarray) -> None:
    """``out``: ``model`` (float32 ONNX) with static int8 quantization by ONNX Runtime: QDQ
    format, int8 weights per channel, uint8 activations (ONNX Runtime's choice for x86 CPUs,
    U8S8), ranges from ``calibration`` (raw-pixel images) by min-max.

    Raises:
        ExportError: ONNX Runtime's quantization failed.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                {"images": calibration[i : i + CALIBRATION_BATCH].astype(np.float32)}
                for i in range(0, len(calibration), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    prepared = out.with_name(out.stem + ".prepared.onnx")
    try:
        # Shapes inferred and the graph folded, as ONNX Runtime asks before quantizing (its
        # symbolic shape inference needs sympy and nothing here has a symbolic shape but batch).
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    except (ExportError, OSError):
        raise
    except Exception as err:  # ONNX Runtime's tools raise many kinds
        raise ExportError(
            f"onnx_int8: ONNX Runtime's quantization failed ({one_line(err, 300, typed=True)}); "
            "leave onnx_int8 out of --formats; nothing was exported."
        ) from None
    finally:
        prepared.unlink(missing_ok=True)
