"""What every command line of the zoo shares: the bottom floor's quiet TensorFlow start and
one-line errors (`pipelines.cli`, re-exported here), a device line, flags made from a
dataclass's fields, and the help formatter."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import types
import typing
from typing import Any

from pipelines.cli import (
    EXIT_BAD_INPUT,
    LOG_LEVEL_VARIABLE,
    QUIET_LEVEL,
    add_verbose_flag,
    one_line,
    onednn_line,
    start_tensorflow,
    start_tensorflow_for_main,
)
from zoo.config import RECIPE

__all__ = [
    "EXIT_BAD_INPUT",
    "LOG_LEVEL_VARIABLE",
    "QUIET_LEVEL",
    "HelpFormatter",
    "add_dataclass_flags",
    "add_verbose_flag",
    "cli_fields",
    "device_line",
    "one_line",
    "onednn_line",
    "os_error_line",
    "start_tensorflow",
    "start_tensorflow_for_main",
]


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


def _base_type(cls: type, name: str):
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return args[0], True
    return hint, False


def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of the dataclass ``cls`` that are flags (``cli=False`` in a field's metadata
    keeps it off the command line)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def add_dataclass_flags(
    group: Any,  # a parser or an argument group
    cls: type,
    *,
    suppress_defaults: bool = False,
    skip: frozenset[str] = frozenset(),
) -> None:
    """One ``--flag-name`` per field of the dataclass ``cls`` (its type, choices and help from
    the field); booleans get ``--flag``/``--no-flag``. Used by every CLI that takes a config."""
    for field in cli_fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind, optional = _base_type(cls, field.name)
        default = argparse.SUPPRESS if suppress_defaults else field.default
        help_text = field.metadata["help"]
        if kind is bool:
            group.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            group.add_argument(
                flag,
                type=field.metadata.get("parse") or (_optional(kind) if optional else kind),
                default=default,
                choices=field.metadata.get("choices"),
                metavar=field.name.upper() if not field.metadata.get("choices") else None,
                help=help_text,
            )


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default after its help, except a recipe field's: its help says where its
    default comes from (the model's recipe), which "(default: None)" would hide."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if RECIPE in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)
