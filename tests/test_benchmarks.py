"""The benchmark harness itself (python -m benchmarks): options, timing in turns, the results file.

The measurements take minutes and need the real corpus, so they are not run here; these tests
check the parts that decide what a run reports.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.__main__ import SECTIONS, parse_args
from benchmarks.report import Row, markdown_table, text_table, write_markdown
from benchmarks.timing import Case, time_in_turns


def test_sections_are_chosen_by_name_and_unknown_ones_refused(capsys):
    assert parse_args(["--sections", "features,latency"]).sections == ["features", "latency"]
    assert parse_args([]).sections == list(SECTIONS)
    with pytest.raises(SystemExit):
        parse_args(["--sections", "latncy"])
    assert "unknown section(s) latncy" in capsys.readouterr().err


def test_cases_take_turns_with_their_own_thread_counts():
    calls = []
    cases = {
        "one": Case(lambda: calls.append(("one", torch.get_num_threads())), threads=1),
        "two": Case(lambda: calls.append(("two", torch.get_num_threads())), threads=2),
    }
    threads = torch.get_num_threads()
    try:
        seconds = time_in_turns(cases, rounds=3, calls_per_turn=4)
    finally:
        torch.set_num_threads(threads)
    assert {name: len(values) for name, values in seconds.items()} == {"one": 12, "two": 12}
    # Each turn: one untimed call, then the timed ones; the cases alternate.
    assert [name for name, _ in calls] == (["one"] * 5 + ["two"] * 5) * 3
    assert all(count == {"one": 1, "two": 2}[name] for name, count in calls)


def test_targets_show_whether_they_were_met():
    rows = [
        Row("latency", "CNN, 1 thread", "7.0 ms", "< 20 ms", True),
        Row("features", "ours", "3.1x", ">= 10x", False),
        Row("app load", "16 callers", "9 requests/s"),
    ]
    table = text_table(rows)
    assert "< 20 ms met" in table and ">= 10x MISSED" in table
    assert markdown_table(rows).splitlines()[2] == "| latency | CNN, 1 thread | 7.0 ms | < 20 ms met |"


def test_the_results_file_says_when_where_and_how(tmp_path):
    path = tmp_path / "RESULTS.md"
    write_markdown(path, [Row("latency", "CNN", "7.0 ms")], "python -m benchmarks --quick", ["a note"])
    text = path.read_text()
    assert "- Date: " in text and "- Machine: " in text and "cores" in text and "- Code: commit " in text
    assert "- Command: `python -m benchmarks --quick`" in text
    assert "| latency | CNN | 7.0 ms |  |" in text and "- a note" in text
