"""What every command line of the project shares, on the bottom floor so that the pipelines'
own commands need nothing above it: a quiet TensorFlow start, the ``-v`` flag and one-line
errors. `zoo.cli` builds on it.

TensorFlow's C++ runtime writes its start-up lines straight to the process's standard error
(``file descriptor 2``) before its logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` alone
does not hide them; on a machine without a GPU one of them reads ``E0000 ... failed call to
cuInit: ... CUDA error``, an error when nothing is wrong. `start_tensorflow` imports TensorFlow
and finds its devices with that descriptor pointed at a temporary file, and shows what it caught
only if the start failed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
QUIET_LEVEL = "2"  # C++ INFO and WARNING hidden from here on; errors are still shown
EXIT_BAD_INPUT = 2  # every command: bad arguments or data, one line on stderr
ONEDNN_SET_BY_ZOO = False  # whether `start_tensorflow` set ONEDNN_VARIABLE in this process


def add_verbose_flag(parser) -> None:
    """``-v``/``--verbose``: show TensorFlow's own start-up and log lines."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False,
        help="show TensorFlow's own start-up and log lines (hidden unless "
        f"{LOG_LEVEL_VARIABLE} is set)",
    )


def enable_onednn() -> bool:
    """Turn TensorFlow's oneDNN CPU kernels on for this process, unless the user set
    ``TF_ENABLE_ONEDNN_OPTS`` themselves or TensorFlow is already loaded; whether it did.

    TensorFlow decides by CPU: on an AMD EPYC of family 23 (AVX2 only) it starts without them,
    and there they made the resnet20 training step 1.5x faster (131-133 against 199-209
    images/s, float32, batch 64, alternating processes; measured by the issue that asked for
    this). Where TensorFlow turns them on itself (AVX-512 CPUs) the variable changes nothing."""
    if ONEDNN_VARIABLE in os.environ or "tensorflow" in sys.modules:
        return False
    os.environ[ONEDNN_VARIABLE] = "1"
    return True


def onednn_turned_off() -> bool:
    """Whether the user turned TensorFlow's oneDNN kernels off (``TF_ENABLE_ONEDNN_OPTS=0``)."""
    return os.environ.get(ONEDNN_VARIABLE, "").strip().lower() in ("0", "false")


def onednn_line() -> str:
    """What this process runs with: ``oneDNN kernels on (...)`` or ``off (...)``, and why."""
    value = os.environ.get(ONEDNN_VARIABLE)
    if value is None:
        return "oneDNN kernels: TensorFlow's choice for this CPU"
    state = "off" if onednn_turned_off() else "on"
    who = "set by the zoo" if ONEDNN_SET_BY_ZOO else "set by you"
    return f"oneDNN kernels {state} ({ONEDNN_VARIABLE}={value}, {who})"


def start_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and find its devices, its C++ start-up lines hidden unless ``verbose``
    or the user set ``TF_CPP_MIN_LOG_LEVEL`` themselves (then TensorFlow speaks as usual), and
    its oneDNN CPU kernels on unless the user chose (`enable_onednn`).

    Finding the devices does not start TensorFlow's runtime, so a strategy that must be created
    first (``MultiWorkerMirroredStrategy``) still can be."""
    global ONEDNN_SET_BY_ZOO
    ONEDNN_SET_BY_ZOO = enable_onednn() or ONEDNN_SET_BY_ZOO
    if verbose or LOG_LEVEL_VARIABLE in os.environ or "tensorflow" in sys.modules:
        import tensorflow as tf

        tf.config.list_physical_devices()
        return
    os.environ[LOG_LEVEL_VARIABLE] = QUIET_LEVEL
    # TensorFlow's and TFDS's Python-side chatter (absl warnings such as "Variant folder ... has
    # no dataset_info.json" before the project's own one-line error) is hidden the same way.
    logging.getLogger("absl").setLevel(logging.ERROR)
    with native_stderr_hidden():
        import tensorflow as tf

        tf.config.list_physical_devices()


@contextlib.contextmanager
def native_stderr_hidden(hide: bool = True) -> Iterator[None]:
    """What native code (C++ start-up lines, LiteRT's ``INFO: Created TensorFlow Lite XNNPACK
    delegate``) writes to the process's standard error while the block runs, hidden; shown
    after all when the block raises."""
    if not hide:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def start_tensorflow_for_main() -> None:
    """`start_tensorflow` for a module run with ``python -m`` whose imports load TensorFlow:
    called at its top, before them, verbose when ``-v``/``--verbose`` is among the arguments."""
    start_tensorflow(verbose=any(arg in ("-v", "--verbose") for arg in sys.argv[1:]))


def one_line(err: BaseException, limit: int = 240, *, typed: bool = False) -> str:
    """An exception as one line of at most ``limit`` characters: the project's own errors
    whole (their lines joined); with ``typed``, ``"Type: first line"``, for another library's
    error whose later lines are detail (TFDS, Keras, ONNX)."""
    if typed:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    else:
        text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
