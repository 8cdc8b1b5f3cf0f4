"""What every section of the suite shares: interleaved timing, statistics, the machine.

Every comparison is timed side by side: each round runs every contender once, in an order that
rotates from round to round, after a warm-up that is not counted, so the noise of a shared
machine falls on all of them alike. A figure is the median over rounds with its min and max.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

PACKAGES = (
    "tensorflow",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "numpy",
    "torch",
    "torchvision",
)


@dataclasses.dataclass(frozen=True)
class Spread:
    """A median with its min and max over rounds."""

    median: float
    min: float
    max: float
    rounds: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values))

    def scaled(self, factor: float) -> Spread:
        return Spread(self.median * factor, self.min * factor, self.max * factor, self.rounds)

    def text(self, digits: int = 1) -> str:
        """``median (min-max)``, e.g. ``52.4 (50.8-53.2)``."""
        return f"{self.median:,.{digits}f} ({self.min:,.{digits}f}-{self.max:,.{digits}f})"


def interleave(
    contenders: Mapping[str, Callable[[], float]],
    *,
    rounds: int,
    warmup: int = 1,
) -> dict[str, Spread]:
    """Call each contender once per round, rotating the order; each call returns its own rate
    (e.g. images/s over the work it timed). The first ``warmup`` rounds are not counted."""
    names = list(contenders)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            rate = contenders[name]()
            if r >= warmup:
                rates[name].append(rate)
    return {name: Spread.of(values) for name, values in rates.items()}


def rate(work: Callable[[], Any], units: float) -> Callable[[], float]:
    """A contender for `interleave`: ``units`` per second of one call of ``work`` (which must
    return only once its work is done, e.g. after reading a result back to the host)."""

    def timed() -> float:
        start = time.perf_counter()
        work()
        return units / (time.perf_counter() - start)

    return timed


def ratio(a: Spread, b: Spread) -> float:
    """``a / b`` of the medians."""
    return a.median / b.median


def cpu_model() -> str:
    """The CPU's model name (`zoo.training.runtime.cpu_name`), else what ``platform`` says."""
    from zoo.training.runtime import cpu_name

    name = cpu_name()
    return name if name != "unknown" else platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (`zoo.training.runtime.cpu_flags`: ``/proc/cpuinfo``)."""
    from zoo.training.runtime import cpu_flags as flags

    return set(flags())


def gpus() -> list[dict[str, str]]:
    """Name, driver and memory of each NVIDIA GPU, from ``nvidia-smi`` (empty without one)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines()]
    return [{"name": r[0], "driver": r[1], "memory": r[2]} for r in rows if len(r) == 3]


def versions() -> dict[str, str]:
    """Installed versions of the libraries the suite compares (absent ones left out)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine() -> dict[str, Any]:
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "architecture": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "cpu_features": sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))),
        "gpus": gpus(),
    }


# What a section hands back to the runner ------------------------------------------------------


@dataclasses.dataclass
class Table:
    """A Markdown table: a caption line above it, then a header and rows of text cells."""

    caption: str
    header: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = [self.caption, ""] if self.caption else []
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclasses.dataclass
class Goal:
    """A goal of the suite as measured: ``met`` is None where it cannot be measured here."""

    goal: str
    measured: str
    met: bool | None


@dataclasses.dataclass
class Section:
    """One section's results: JSON data, Markdown tables and notes, goals."""

    name: str
    title: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    tables: list[Table] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    goals: list[Goal] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class Context:
    """How the suite was asked to run: ``smoke`` runs a few steps of everything so that a test
    can show the suite works (its figures mean nothing)."""

    suite: str  # "cpu" or "gpu"
    smoke: bool
    out: str  # the output folder; sections may keep scratch files under it

    def pick(self, full: Any, smoke: Any) -> Any:
        """``smoke`` in smoke mode, ``full`` otherwise."""
        return smoke if self.smoke else full

    def scratch(self, name: str) -> str:
        path = os.path.join(self.out, "scratch", name)
        os.makedirs(path, exist_ok=True)
        return path


def print_section(section: Section) -> None:
    """A section's tables, notes and goals as text, for a section run alone."""
    for table in section.tables:
        print(table.markdown(), end="\n\n")
    for note in section.notes:
        print(note, end="\n\n")
    for goal in section.goals:
        print(f"- {goal.goal}: {goal.measured} (met: {goal.met})")


def run_alone(
    prog: str, doc: str, run: Callable[[Context], Section], argv: list[str] | None = None
) -> Section:
    """``python -m benchmarks.<section> [--smoke] [--suite cpu|gpu]``: one section, printed."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few steps of everything")
    parser.add_argument("--suite", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args(argv)
    from zoo.cli import start_tensorflow

    start_tensorflow()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        section = run(Context(args.suite, args.smoke, out))
    section.seconds = time.perf_counter() - start
    print_section(section)
    print(f"\n{section.seconds:.0f} s")
    return section
