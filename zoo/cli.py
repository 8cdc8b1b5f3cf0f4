"""What every command line of the project shares: a quiet TensorFlow start and a device line.

TensorFlow's C++ runtime writes its start-up lines straight to the process's standard error
(``file descriptor 2``) before its logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` alone
does not hide them; on a machine without a GPU one of them reads ``E0000 ... failed call to
cuInit: ... CUDA error``, an error when nothing is wrong. `start_tensorflow` imports TensorFlow
and finds its devices with that descriptor pointed at a temporary file, and shows what it caught
only if the start failed.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import tempfile

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "2"  # C++ INFO and WARNING hidden from here on; errors are still shown


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


def start_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and find its devices, its C++ start-up lines hidden unless ``verbose``
    or the user set ``TF_CPP_MIN_LOG_LEVEL`` themselves (then TensorFlow speaks as usual).

    Finding the devices does not start TensorFlow's runtime, so a strategy that must be created
    first (``MultiWorkerMirroredStrategy``) still can be."""
    if verbose or LOG_LEVEL_VARIABLE in os.environ or "tensorflow" in sys.modules:
        import tensorflow as tf

        tf.config.list_physical_devices()
        return
    os.environ[LOG_LEVEL_VARIABLE] = QUIET_LEVEL
    # TensorFlow's and TFDS's Python-side chatter (absl warnings such as "Variant folder ... has
    # no dataset_info.json" before the project's own one-line error) is hidden the same way.
    logging.getLogger("absl").setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def device_line() -> str:
    """One line saying which devices TensorFlow will use, e.g. ``devices: CPU (no GPU found)``
    or ``devices: 2 GPUs (NVIDIA H100 80GB HBM3 x2)``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "devices: CPU (TensorFlow found no GPU)"
    names: dict[str, int] = {}
    for gpu in gpus:
        try:
            name = tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
        except (ValueError, RuntimeError):
            name = "GPU"
        names[name] = names.get(name, 0) + 1
    kinds = ", ".join(f"{name} x{count}" if count > 1 else name for name, count in names.items())
    return f"devices: {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} ({kinds})"


def os_error_line(err: OSError, flags: str) -> str:
    """One line for a failed file operation: the path, what went wrong and what to do, with
    ``flags`` naming the options that choose where output goes (e.g. ``--runs-dir/--run-dir``)."""
    path = err.filename or "a file"
    reason = err.strerror or str(err)
    advice = {
        errno.ENOSPC: "free some space on that disk, or choose another place with " + flags,
        errno.EDQUOT: "free some of your disk quota, or choose another place with " + flags,
        errno.EACCES: "choose a folder you can write to with " + flags,
        errno.EPERM: "choose a folder you can write to with " + flags,
        errno.EROFS: "the disk is read-only; choose another place with " + flags,
        errno.ENAMETOOLONG: "choose a shorter path with " + flags,
        errno.ENOTDIR: "a part of that path is a file, not a folder; choose another with " + flags,
        errno.EEXIST: "it exists and is not a folder; choose another path with " + flags,
    }.get(err.errno, "check the path, or choose another with " + flags)
    return f"cannot write {path}: {reason}; {advice}."


def start_tensorflow_for_main() -> None:
    """`start_tensorflow` for a module run with ``python -m`` whose imports load TensorFlow:
    called at its top, before them, verbose when ``-v``/``--verbose`` is among the arguments."""
    start_tensorflow(verbose=any(arg in ("-v", "--verbose") for arg in sys.argv[1:]))


def one_line(err: BaseException, limit: int = 240) -> str:
    """An exception's message on one line, shortened to ``limit`` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
