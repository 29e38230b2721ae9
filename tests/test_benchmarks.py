"""The benchmark harness itself (python -m benchmarks): options, timing in turns, the results file.

The measurements take minutes and need the real corpus, so they are not run here; these tests
check the parts that decide what a run reports.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from benchmarks.__main__ import SECTIONS, parse_args
from benchmarks.report import Row, markdown_table, text_table, write_markdown
from benchmarks.timing import Case, time_in_turns
from benchmarks.training import full_run_rows


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


def test_live_scores_answers_against_the_clip_being_spoken_and_the_offline_timeline():
    from benchmarks.live import score
    from ser_train.live import LiveAnswer
    from ser_train.timeline import Segment

    spans = [(0.0, 3.0, "angry"), (4.0, 7.0, "sad")]
    offline = [
        Segment(0.5, 3.0, {"angry": 0.9, "sad": 0.1}, speech_s=2.0),
        Segment(4.2, 7.0, {"angry": 0.6, "sad": 0.4}, speech_s=2.5),
        Segment(7.0, 9.0, {"angry": 0.9, "sad": 0.1}, speech_s=0.0),  # a sound, no speech: not compared
    ]

    def answer(time_s, top):
        probabilities = None if top is None else {"angry": float(top == "angry"), "sad": float(top == "sad")}
        return LiveAnswer(time_s, max(0.0, time_s - 3), top is not None, probabilities)

    answers = [answer(1.0, "angry"), answer(2.0, "sad"), answer(3.5, None), answer(5.0, "sad"), answer(6.0, "sad"), answer(8.0, "angry")]
    result = score(answers, spans, offline)
    assert result["answers"] == 4
    assert result["accuracy"] == 3 / 4  # 2.0 s said sad during the angry clip
    # offline says angry wherever it heard speech; the 1.0 s answer agrees (8.0 s: no speech offline)
    assert result["agreement"] == 1 / 4
    assert result["flips"] == 1 / 2  # angry -> sad inside clip 1, sad -> sad inside clip 2


def test_live_noise_is_mixed_at_the_asked_signal_to_noise_ratio():
    from benchmarks.live import GRID_S, mixed
    from ser_train.audio import SAMPLING_RATE

    rng = np.random.default_rng(0)
    speech = rng.normal(0, 0.1, 2 * SAMPLING_RATE).astype(np.float32)
    waveform = np.concatenate([speech, np.zeros(SAMPLING_RATE, dtype=np.float32)])
    truth = np.arange(round(3 / GRID_S)) < round(2 / GRID_S)
    for kind in ("white noise", "music-like"):
        noise = mixed(waveform, truth, kind, 10.0, rng) - waveform
        assert 10 * np.log10(np.mean(speech**2) / np.mean(noise**2)) == pytest.approx(10.0, abs=0.01)


def test_a_full_run_counts_every_fit_it_left_a_checkpoint_of(tmp_path):
    """Folds, held-out corpora with their nested temperature fits, and the final model."""
    fits = {
        "folds/fold-1": 30,
        "folds/fold-2": 40,
        "corpora/a": 12,
        "corpora/a/temperature/b": 5,
        "corpora/b": 20,
        ".": 35,  # the final model
    }
    for folder, epochs in fits.items():
        checkpoint = tmp_path / folder / "checkpoints" / "last.pt"
        checkpoint.parent.mkdir(parents=True)
        torch.save({"progress": {"epoch": epochs}}, checkpoint)
    (tmp_path / "training_args.json").write_text("{}")
    (tmp_path / "eval_results.json").write_text(json.dumps({"folds": [{"name": "fold-1"}, {"name": "fold-2"}]}))
    started = os.stat(tmp_path / "training_args.json").st_mtime
    os.utime(tmp_path / "eval_results.json", (started + 1420, started + 1420))  # 23 min 40 s later

    (row,) = full_run_rows(tmp_path)
    assert row.measurement.endswith("6 fits (2 folds, 3 held-out corpus fits, final model), 142 epochs")
    assert row.result.startswith("23.7 min = 10.0 s per epoch trained")


def test_a_resumed_run_is_not_timed_as_one_run(tmp_path):
    """Its files span two processes and the time between them."""
    (tmp_path / "training_args.json").write_text("{}")
    (tmp_path / "eval_results.json").write_text(json.dumps({"command": "python -m ser_train train cnn --output-dir r --resume"}))
    (row,) = full_run_rows(tmp_path)
    assert row.result == f"not available: {tmp_path} was finished by a resumed run"
