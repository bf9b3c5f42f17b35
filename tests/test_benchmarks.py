"""The benchmark suite's bookkeeping (no timing here): goals, --check, the results section."""

from __future__ import annotations

from pathlib import Path

from benchmarks.__main__ import BEGIN, END, Goal, Report, gba_apdus, write


def test_goal_directions() -> None:
    assert Goal("x", 1.4, 1.5, "<=").met and not Goal("x", 1.6, 1.5, "<=").met
    assert Goal("x", 0.8, 0.8, ">=").met and not Goal("x", 0.7, 0.8, ">=").met
    assert "**MISSED**" in Goal("x", 2, 1, "<=").row() and "| met |" in Goal("x", 1, 1, "<=").row()


def test_write_replaces_only_the_results_section(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\nprose\n\n{BEGIN}\nold figures\n{END}\n\nafter\n")
    rep = Report()
    rep.sections.append(("Socket", ["| a |", "|---|", "| 1 |"]))
    rep.goal("g", 1.0, 2.0, "<=", "x")
    write(doc, rep, {"nproc": "2"}, "python -m benchmarks", 1.0)
    text = doc.read_text()
    assert text.startswith("# Performance\n\nprose\n\n") and text.endswith("\n\nafter\n")
    assert "old figures" not in text and "nproc 2" in text and "`python -m benchmarks`" in text
    assert "### Socket" in text and "| g | 1.00x | <= 2x | met |" in text
    write(doc, rep, {"nproc": "2"}, "python -m benchmarks", 1.0)  # idempotent
    assert doc.read_text().count(BEGIN) == 1


def test_gba_apdu_figures_are_the_asserted_counts() -> None:
    # the same counts tests/test_gba_apdus.py asserts (soft UICC, T=0)
    assert gba_apdus() == {"alice": (2, 2, 0), "bob": (5, 3, 2)}


def test_hotpath_benchmark_runs_each_part() -> None:
    """python -m benchmarks.bench_hotpath: every part runs (timed, a few requests; no
    threshold)."""
    from benchmarks.bench_hotpath import PARTS, main

    assert main(["-n", "20", *PARTS]) == 0
