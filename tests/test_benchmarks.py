"""The benchmark suite runs end to end (in smoke mode: a few steps of everything), so it cannot
rot; its figures are not checked here, only that each section measured and reported. Each
section is its own test, so they spread over the workers; all but the pipeline section are in
the slow tier."""

import json
import os

import pytest
from scripts import run_module

from benchmarks.run import SECTIONS, main


def test_the_suite_has_its_six_sections():
    assert SECTIONS == ("train_step", "overhead", "pipeline", "inference", "scaling", "deploy")


# The pipeline section (about 15 s) keeps the harness and its files in the quick tier.
@pytest.mark.parametrize(
    "section", [s if s == "pipeline" else pytest.param(s, marks=pytest.mark.slow) for s in SECTIONS]
)
def test_each_section_smoke_run_writes_both_files(tmp_path, section):
    out = tmp_path / "bench"
    args = ["--suite", "cpu", "--smoke", "--only", section]
    proc = run_module("benchmarks.run", *args, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["smoke"] is True and results["suite"] == "cpu"
    assert results["command"].startswith(f"python -m benchmarks.run {' '.join(args)}")
    assert results["machine"]["cores"] == os.cpu_count()
    assert "tensorflow" in results["versions"] and "keras" in results["versions"]
    assert set(results["sections"]) == {section}
    record = results["sections"][section]
    assert "error" not in record, record.get("error")
    assert record["tables"]
    for table in record["tables"]:
        assert table["rows"] and all(len(r) == len(table["header"]) for r in table["rows"])
    # Every section but scaling states goals (the suite's table of goals: at least 6 in all).
    assert bool(record["goals"]) == (section != "scaling")
    assert all(g["met"] in (True, False, None) for g in record["goals"])
    text = (out / "RESULTS.md").read_text()
    assert "smoke mode" in text and results["command"] in text
    assert f"## {record['title']}" in text
    assert not (out / "scratch").exists()  # the section's run directories are cleaned up


def test_suite_rejects_an_unknown_section(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "nonsense", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
