"""Benchmark results as rows of one table, printed to the terminal and written as Markdown."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.corpus import PROJECT_ROOT


@dataclass(frozen=True)
class Row:
    """One measured figure, with the target it is held to (if any) and whether it met it."""

    section: str
    measurement: str
    result: str  # the figure with its unit, e.g. "7.9 ms (p95 9.1 ms)"
    target: str = ""  # e.g. "< 20 ms"
    met: bool | None = None  # None: no target


COLUMNS = ("section", "measurement", "result", "target")


def verdict(row: Row) -> str:
    if row.met is None:
        return row.target
    return f"{row.target} {'met' if row.met else 'MISSED'}"


def cells(row: Row) -> tuple[str, ...]:
    return (row.section, row.measurement, row.result, verdict(row))


def text_table(rows: list[Row]) -> str:
    """Fixed-width columns for the terminal."""
    lines = [COLUMNS, *(cells(row) for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def machine_description() -> str:
    """CPU model, core count, memory, and the software versions that decide the speed."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_gib:.0f} GiB RAM, no GPU used; "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}"
    )


def code_version() -> str:
    """The commit measured, and the tracked files that differed from it (the tree is shared)."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    modified = git("diff", "--name-only", "HEAD").split()
    return f"{commit}" + (f", with uncommitted changes to {', '.join(modified)}" if modified else "")


def write_markdown(path: Path, rows: list[Row], command: str, notes: list[str]) -> None:
    """RESULTS.md: when, where and how the figures were measured, then the table and notes."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    text = [
        "# Benchmark results",
        "",
        f"- Date: {now}",
        f"- Machine: {machine_description()}",
        f"- Code: commit {code_version()}",
        f"- Load average when the run ended (1, 5, 15 min): {load}",
        f"- Command: `{command}`",
        "",
        markdown_table(rows),
        "",
    ]
    if notes:
        text += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    path.write_text("\n".join(text))
