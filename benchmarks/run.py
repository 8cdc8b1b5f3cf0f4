"""The benchmark suite: ``python -m benchmarks.run --suite cpu|gpu --out DIR``.

Runs every section (training step, steps per call, input pipeline, inference, scaling, deployment
formats) and writes ``DIR/results.json`` and ``DIR/RESULTS.md`` with the machine, the library
versions and the exact command. ``--smoke`` runs a few steps of everything: its figures mean
nothing, it only shows that the suite works (a test runs it).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path

SECTIONS = ("train_step", "overhead", "pipeline", "inference", "scaling", "deploy")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--suite", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--out",
        default="benchmarks",
        help="output folder (default: benchmarks/, the committed figures)",
    )
    parser.add_argument("--smoke", action="store_true", help="a few steps of everything")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, metavar="SECTION", help=f"some of {SECTIONS}"
    )
    return parser.parse_args(argv)


def markdown(results: dict) -> str:
    from benchmarks.harness import Goal, Table

    m = results["machine"]
    gpus = ", ".join(f"{g['name']} (driver {g['driver']})" for g in m["gpus"]) or "none"
    smoke = ", smoke mode: its figures mean nothing" if results["smoke"] else ""
    lines = [
        f"# Benchmark results ({results['suite']} suite{smoke})",
        "",
        f"- Command: `{results['command']}`",
        f"- Date: {results['date']}; took {results['seconds'] / 60:.1f} min",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['architecture']}, {m['system']}); "
        f"GPUs: {gpus}",
        f"- CPU features: {' '.join(m['cpu_features']) or 'unknown'}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        "",
        "Every comparison is timed side by side in one process: interleaved rounds (the order",
        "rotates), warm-up excluded, medians with min-max over rounds.",
        "",
        "## Goals",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
    ]
    for section in results["sections"].values():
        for g in section.get("goals", []):
            goal = Goal(**g)
            met = {True: "yes", False: "**no**", None: "not measured here"}[goal.met]
            lines.append(f"| {goal.goal} | {goal.measured} | {met} |")
    for section in results["sections"].values():
        lines += ["", f"## {section['title']}", ""]
        if "error" in section:
            lines += [f"Failed: `{section['error']}`", ""]
        for table in section.get("tables", []):
            lines += [Table(**table).markdown(), ""]
        for note in section.get("notes", []):
            lines += [note, ""]
        lines.append(f"_{section['seconds']:.0f} s_")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from zoo.cli import start_tensorflow

    start_tensorflow()
    from benchmarks import harness

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = harness.Context(args.suite, args.smoke, str(out))
    command = shlex.join(
        ["python", "-m", "benchmarks.run", *(argv if argv is not None else sys.argv[1:])]
    )
    results = {
        "command": command,
        "suite": args.suite,
        "smoke": args.smoke,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": harness.machine(),
        "versions": harness.versions(),
        "sections": {},
    }
    start, failed = time.perf_counter(), []
    for name in args.only or SECTIONS:
        print(f"[{time.perf_counter() - start:6.0f} s] {name} ...", flush=True)
        begun = time.perf_counter()
        try:
            section = importlib.import_module(f"benchmarks.{name}").run(ctx)
            record = dataclasses.asdict(section)
        except Exception as err:  # one broken section must not lose the others' figures
            traceback.print_exc()
            failed.append(name)
            record = {"name": name, "title": name, "error": f"{type(err).__name__}: {err}"}
        record["seconds"] = time.perf_counter() - begun
        results["sections"][name] = record
        results["seconds"] = time.perf_counter() - start
        # Written after every section: a long run that dies keeps what it measured.
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        (out / "RESULTS.md").write_text(markdown(results))
    shutil.rmtree(out / "scratch", ignore_errors=True)
    print(
        f"wrote {out / 'results.json'} and {out / 'RESULTS.md'} "
        f"in {results['seconds'] / 60:.1f} min"
    )
    if failed:
        print(f"error: sections failed: {', '.join(failed)} (tracebacks above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
