"""The benchmark suite's bookkeeping (no timing here): goals, --check, the results section."""

from __future__ import annotations

import time
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


def test_first_call_counts_only_what_it_waited_for_in_turn() -> None:
    """A KMS request that reached the KMS before the bootstrap's last BSF answer (the
    challenge fetched alongside) is left out with its connection; the rest count, each new
    peer as a new connection."""
    from benchmarks.__main__ import _Served, first_exchange

    served = [
        _Served("kms", 0.0, 0.3, "k1"),  # the challenge, alongside
        _Served("bsf", 0.1, 0.2, "b1"),
        _Served("bsf", 0.4, 0.6, "b1"),
        _Served("kms", 0.7, 1.0, "k1"),  # the ticket request, on the challenge's connection
    ]
    e = first_exchange(1.5, served, cpu=0.25)
    assert (e.requests, e.connections, e.alongside, e.cpu_s) == (3, 1, 1, 0.25)
    assert abs(e.server_s - (0.1 + 0.2 + 0.3)) < 1e-9


def test_cpu_time_of_a_process_counts_its_other_threads() -> None:
    import os
    import threading

    from benchmarks._util import cpu_s

    done, spun = threading.Event(), threading.Event()

    def spin() -> None:
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.05:
            pass
        spun.set()
        done.wait(5)

    t = threading.Thread(target=spin)
    before, main_before = cpu_s(os.getpid()), time.thread_time()
    t.start()
    spun.wait(5)
    after, main_after = cpu_s(os.getpid()), time.thread_time()
    done.set()
    t.join()
    # the 50 ms the other thread spun are in, though this thread spent less than that
    assert after - before >= 0.045 and main_after - main_before < 0.04
