"""The package: `pip install .` (or from the repository's git URL) gives the library a published
model's card imports, with dependencies that agree with requirements.txt; no weights inside.

The wheel is built offline from a copy of the repository's tracked files (what a clone holds),
with the build backend of the project's environment, and installed into a folder of its own;
a fresh process outside the repository then loads the bundled Whisper model through it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app_support import write_clip
from ser_train.inference import BUNDLED_WHISPER, load_model

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT_S = 300


def declared() -> dict[str, Requirement]:
    """pyproject.toml's dependencies and optional dependencies, by package name."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [line for extra in project["optional-dependencies"].values() for line in extra]
    return {canonicalize_name(requirement.name): requirement for requirement in map(Requirement, lines)}


def pinned() -> dict[str, str]:
    """requirements.txt's exact pins: package name -> version."""
    pins = {}
    for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_every_pinned_version_satisfies_the_packages_range_and_nothing_is_left_out():
    ranges, pins = declared(), pinned()
    assert set(ranges) == set(pins)
    for name, version in pins.items():
        assert ranges[name].specifier.contains(version), f"{name}=={version} is outside {ranges[name].specifier}"


def test_the_command_runs_from_any_folder(tmp_path):
    """scripts/setup.sh installs the project in place, so the venv's `python -m ser_train` does
    not depend on the folder it is started from."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-m", "ser_train", "--help"], cwd=tmp_path, env=environment,
                         capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: python -m ser_train")


@pytest.mark.slow
@pytest.mark.timeout(2 * BUILD_TIMEOUT_S)
def test_the_wheel_holds_the_library_only_and_works_outside_the_repository(tmp_path):
    source = tmp_path / "clone"
    tracked = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(source)],
                   check=True, timeout=BUILD_TIMEOUT_S)  # fmt: skip
    [wheel] = wheels.glob("ser_train-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert all(name.startswith(("ser_train/", "ser_train-")) for name in names), names  # no models/, tests, app
    assert {"ser_train/models/whisper.py", "ser_train/training/runner.py", "ser_train/__main__.py"} <= set(names)

    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--quiet", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True)
    if not Path(BUNDLED_WHISPER).is_dir():
        pytest.skip("the bundled Whisper model is not there to load")
    clip = write_clip(tmp_path / "speech.wav")
    # The card's two ways in: load_model, and transformers' pipeline after registering the type.
    program = (
        "import json, sys, ser_train, ser_train.models.whisper\n"
        "from ser_train.inference import load_model\n"
        "from transformers import pipeline\n"
        f"model = load_model({BUNDLED_WHISPER!r})\n"
        f"piped = pipeline('audio-classification', model={BUNDLED_WHISPER!r})({str(clip)!r}, top_k=None)\n"
        f"print(json.dumps([ser_train.__file__, model.predict_file({str(clip)!r}), piped]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    location, probabilities, piped = json.loads(run.stdout.splitlines()[-1])
    assert Path(location).is_relative_to(site)
    expected = load_model(BUNDLED_WHISPER).predict_file(clip)
    assert probabilities == pytest.approx(expected, abs=1e-5)
    assert {answer["label"]: answer["score"] for answer in piped} == pytest.approx(expected, abs=1e-4)
