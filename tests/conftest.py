"""Shared fixtures: hermetic caches, synthetic RAVDESS folders, the real corpus when present."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REAL_RAVDESS = PROJECT_ROOT.parent / "shared" / "data" / "ravdess-opus-16k"

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import synthetic`

from synthetic import make_ravdess_folder  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def hermetic_hugging_face(tmp_path_factory):
    """Keep the Hugging Face caches of a test run in a temporary folder, and stay offline."""
    cache = tmp_path_factory.mktemp("hf-cache")
    saved = {key: os.environ.get(key) for key in ("HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN")}
    os.environ["HF_HOME"] = str(cache)
    os.environ["HF_DATASETS_CACHE"] = str(cache / "datasets")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("HF_TOKEN", None)
    import datasets

    datasets.config.HF_DATASETS_CACHE = Path(cache / "datasets")
    yield cache
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def synthetic_ravdess(tmp_path_factory) -> Path:
    """6 actors x 8 emotions x 2 statements, mixed WAV/FLAC/Opus at 48/16 kHz, one stereo file."""
    return make_ravdess_folder(tmp_path_factory.mktemp("ravdess"))


@pytest.fixture(scope="session")
def real_ravdess() -> Path:
    if not REAL_RAVDESS.is_dir():
        pytest.skip("the real RAVDESS copy is not present")
    return REAL_RAVDESS
