"""The benchmark suite runs end to end (in smoke mode: a few steps of everything), so it cannot
rot; its figures are not checked here, only that every section measured and reported."""

import json
import os
import subprocess
import sys

from scripts import REPO


def test_suite_smoke_run_writes_both_files_with_every_section(tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "benchmarks.run", "--suite", "cpu", "--smoke"]
    proc = subprocess.run(
        [*command, "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["smoke"] is True and results["suite"] == "cpu"
    assert results["command"].startswith("python -m benchmarks.run --suite cpu --smoke")
    assert results["machine"]["cores"] == os.cpu_count()
    assert "tensorflow" in results["versions"] and "keras" in results["versions"]
    sections = results["sections"]
    assert set(sections) == {"train_step", "overhead", "pipeline", "inference", "scaling"}
    for name, section in sections.items():
        assert "error" not in section, (name, section.get("error"))
        assert section["tables"], name
        for table in section["tables"]:
            assert table["rows"] and all(len(r) == len(table["header"]) for r in table["rows"])
    goals = [g for s in sections.values() for g in s["goals"]]
    assert len(goals) >= 6 and all(g["met"] in (True, False, None) for g in goals)
    text = (out / "RESULTS.md").read_text()
    assert "smoke mode" in text and results["command"] in text
    for section in sections.values():
        assert f"## {section['title']}" in text
    assert not (out / "scratch").exists()  # the sections' run directories are cleaned up


def test_suite_rejects_an_unknown_section(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--only", "nonsense", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid choice: 'nonsense'" in proc.stderr and "Traceback" not in proc.stderr
