"""Process-wide state, resolved once by the entry point and handed to the engine.

A `Runtime` names the distribution strategy, the precision policy, whether ops are
deterministic and whether the steps are compiled with XLA: each resolved here, once, for the
devices at hand (`resolve_runtime_for` a `TrainConfig`). The engine never sets these globally
for longer than it runs: `Runtime.active` applies op determinism for the duration of a fit and
restores it, and `dtype_policy` builds a model under a precision policy and puts the previous
global policy back, so several trainings with different precisions run one after another in one
process (as a tuner runs trials).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from pipelines.cli import ONEDNN_VARIABLE, onednn_turned_off
from zoo.config import AUTO
from zoo.config import PRECISIONS as ASKED_PRECISIONS

PRECISIONS = tuple(p for p in ASKED_PRECISIONS if p != AUTO)  # what "auto" resolves to


@dataclass(frozen=True)
class Runtime:
    """Where and how training runs: a strategy, a resolved precision, op determinism and XLA."""

    strategy: tf.distribute.Strategy
    precision: str = "float32"
    deterministic: bool = False
    jit_compile: bool | None = None  # None: each config's own jit_compile (`xla`)
    precision_reason: str = ""  # why this precision, for the start line (`choose_precision`)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)} once resolved; "
                f"got {self.precision!r}."
            )

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def chief(self) -> bool:
        """Whether this process writes the run's files (always, but on a non-chief worker)."""
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is None or not resolver.task_type:
            return True
        cluster = resolver.cluster_spec().as_dict()
        if "chief" in cluster:
            return resolver.task_type == "chief"
        return resolver.task_type == "worker" and resolver.task_id == 0

    @property
    def worker_name(self) -> str:
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is None or not resolver.task_type:
            return "chief"
        return f"{resolver.task_type}-{resolver.task_id}"

    def check(self, config: Any) -> None:
        """Raise `ValueError` unless this runtime is what ``config`` (a `TrainConfig`) asks for:
        its precision (unless ``auto``), determinism and strategy kind (unless ``auto``)."""
        if config.precision not in ("auto", self.precision):
            raise ValueError(
                f"the config asks for {config.precision} but the runtime is {self.precision}."
            )
        if config.deterministic and not self.deterministic:
            raise ValueError("the config asks for deterministic ops but the runtime is not.")
        if (
            self.jit_compile is not None
            and config.jit_compile != AUTO
            and resolve_jit_compile(config.jit_compile) != self.jit_compile
        ):
            raise ValueError(
                f"the config asks for --jit-compile {config.jit_compile} but the runtime has XLA "
                f"{'on' if self.jit_compile else 'off'}."
            )
        expected = {
            "default": type(tf.distribute.get_strategy()),
            "mirrored": tf.distribute.MirroredStrategy,
            "multiworker": tf.distribute.MultiWorkerMirroredStrategy,
        }.get(config.strategy)
        if expected is not None and not isinstance(self.strategy, expected):
            raise ValueError(
                f"the config asks for the {config.strategy} strategy but the runtime has a "
                f"{type(self.strategy).__name__}."
            )

    def xla(self, config: Any) -> bool:
        """Whether ``config``'s steps are compiled with XLA: the runtime's choice, or the
        config's ``jit_compile`` resolved for the devices at hand when the runtime leaves it."""
        if self.jit_compile is not None:
            return self.jit_compile
        return resolve_jit_compile(config.jit_compile)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Op determinism as asked for while the block runs; the previous setting afterwards."""
        before = _determinism_enabled()
        if self.deterministic and not before:
            tf.config.experimental.enable_op_determinism()
        try:
            yield
        finally:
            if self.deterministic and not before:
                _set_determinism(False)


def resolve_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """``auto``: mirrored over several GPUs, default otherwise; ``mirrored`` uses every GPU, or
    every logical CPU device when there is no GPU; ``multiworker`` reads ``TF_CONFIG``."""
    if name == "multiworker":  # must come before anything initialises TensorFlow's runtime
        if not os.environ.get("TF_CONFIG"):
            logging.getLogger("zoo.train").warning(
                "warning: --strategy multiworker without TF_CONFIG runs as a single worker; set "
                "TF_CONFIG on every worker (see docs/training.md, several GPUs and several "
                "machines)"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name not in ("auto", "default"):
        raise ValueError(f"strategy must be auto, default, mirrored or multiworker; got {name!r}.")
    return tf.distribute.get_strategy()


# CPU features (as Linux's /proc/cpuinfo names them) with bfloat16 multiply instructions.
BFLOAT16_CPU_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16"}


def _cpuinfo(keys: tuple[str, ...]) -> str:
    """The first value of any of ``keys`` in Linux's ``/proc/cpuinfo`` ("" elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return ""


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags as Linux lists them in ``/proc/cpuinfo`` (empty elsewhere)."""
    return frozenset(_cpuinfo(("flags", "Features")).split())


def cpu_name() -> str:
    """This CPU's model name (``/proc/cpuinfo``), or ``"unknown"``."""
    return _cpuinfo(("model name",)) or "unknown"


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved precision and why it was picked, for the run's start line."""

    precision: str
    reason: str


def choose_precision(
    name: str = "auto",
    *,
    gpu: bool | None = None,
    flags: Iterable[str] | None = None,
    onednn: bool | None = None,
) -> PrecisionChoice:
    """The precision ``name`` resolves to, and why.

    ``auto``: ``mixed_float16`` (with loss scaling) on a GPU; ``mixed_bfloat16`` on a CPU with
    bfloat16 instructions (AVX512-BF16 or AMX) while TensorFlow's oneDNN kernels are on, which
    use them; ``float32`` on any other CPU (AVX2 only, say), where bfloat16 is emulated and
    slower. ``gpu``, ``flags`` and ``onednn`` default to this machine's (`cpu_flags`,
    ``TF_ENABLE_ONEDNN_OPTS``); a test feeds them. Measured in docs/training.md (precision).
    """
    if name != AUTO:
        return PrecisionChoice(name, "asked for")
    if gpu is None:
        gpu = bool(tf.config.list_logical_devices("GPU"))
    if gpu:
        return PrecisionChoice("mixed_float16", "auto: a GPU")
    found = sorted(
        BFLOAT16_CPU_FLAGS[f]
        for f in set(flags if flags is not None else cpu_flags()) & set(BFLOAT16_CPU_FLAGS)
    )
    if not found:
        return PrecisionChoice("float32", "auto: this CPU has no bfloat16 instructions")
    if onednn is None:
        onednn = not onednn_turned_off()
    if not onednn:
        return PrecisionChoice(
            "float32",
            f"auto: this CPU has {'/'.join(found)} but oneDNN kernels are off "
            f"({ONEDNN_VARIABLE}=0), and without them bfloat16 is slower",
        )
    return PrecisionChoice("mixed_bfloat16", f"auto: this CPU has {'/'.join(found)}")


def resolve_precision(name: str = "auto") -> str:
    """`choose_precision`'s precision for this machine."""
    return choose_precision(name).precision


def resolve_jit_compile(value: str | bool = "auto") -> bool:
    """Whether the steps are compiled with XLA: ``auto`` on a GPU only. On a CPU, XLA's
    convolutions are slower than oneDNN's (``python -m benchmarks.run``; Keras's own
    ``jit_compile="auto"`` is off on a CPU for the same reason)."""
    if value == "auto":
        return bool(tf.config.list_logical_devices("GPU"))
    return value in (True, "on")


def resolve_runtime(
    strategy: str = "auto",
    precision: str = "auto",
    deterministic: bool = False,
    jit_compile: str | bool | None = None,
) -> Runtime:
    """The runtime for a `TrainConfig`'s ``strategy``, ``precision``, ``deterministic`` and
    ``jit_compile`` (None: left to each config, as for a tuner's trials)."""
    resolved = resolve_strategy(strategy)  # first: a multi-worker strategy must be created
    choice = choose_precision(precision)  # before anything lists the logical devices
    return Runtime(
        resolved,
        choice.precision,
        deterministic,
        None if jit_compile is None else resolve_jit_compile(jit_compile),
        precision_reason=choice.reason,
    )


def resolve_runtime_for(config: Any, *, trained_precision: str | None = None) -> Runtime:
    """`resolve_runtime` of a `TrainConfig`'s fields. ``trained_precision``: the precision a
    run being resumed trained under (its ``data.json``), kept when the config says ``auto``, so
    a run never changes precision halfway (as it would on another machine)."""
    runtime = resolve_runtime(
        config.strategy,
        config.precision
        if config.precision != AUTO or not trained_precision
        else trained_precision,
        config.deterministic,
        config.jit_compile,
    )
    if config.precision == AUTO and trained_precision:
        runtime = dataclasses.replace(
            runtime, precision_reason="auto: the precision this run started with"
        )
    return runtime


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras's global dtype policy set to ``name`` while the block runs (layers keep the policy
    they were built with); the previous policy afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _determinism_enabled() -> bool:
    from tensorflow.python.framework import config as tf_config  # not exported by tf.config

    return bool(tf_config.is_op_determinism_enabled())


def _set_determinism(enabled: bool) -> None:
    from tensorflow.python.framework import config as tf_config

    if enabled:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()
