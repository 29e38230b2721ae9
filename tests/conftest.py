"""Shared fixtures: hermetic caches, synthetic RAVDESS folders, the real corpus when present."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REAL_RAVDESS = PROJECT_ROOT.parent / "shared" / "data" / "ravdess-opus-16k"

# Hugging Face libraries read these when first imported, so they are set before any import:
# a test run uses its own empty caches and never reaches for the network.
_HF_CACHE = Path(tempfile.mkdtemp(prefix="ser-test-hf-"))
os.environ["HF_HOME"] = str(_HF_CACHE)
os.environ["HF_DATASETS_CACHE"] = str(_HF_CACHE / "datasets")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("HF_TOKEN", None)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import synthetic`

from synthetic import make_ravdess_folder  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def remove_hf_cache():
    yield
    shutil.rmtree(_HF_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def synthetic_ravdess(tmp_path_factory) -> Path:
    """6 actors x 8 emotions x 2 statements, mixed WAV/FLAC/Opus at 48/16 kHz, one stereo file."""
    return make_ravdess_folder(tmp_path_factory.mktemp("ravdess"))


@pytest.fixture(scope="session")
def real_ravdess() -> Path:
    if not REAL_RAVDESS.is_dir():
        pytest.skip("the real RAVDESS copy is not present")
    return REAL_RAVDESS


@pytest.fixture(scope="session")
def calibratable_cnn(synthetic_ravdess, tmp_path_factory) -> Path:
    """A small CNN trained on actors 1-3 of the synthetic corpus (4 validates, 5-6 are new to it),
    with the training speakers' statistics that calibration needs."""
    from ser_train.data import load_ravdess, split_by_actor
    from ser_train.training.cnn import CNNFamily, CNNHyperparameters

    splits = split_by_actor(load_ravdess(str(synthetic_ravdess)), [5, 6], [4])
    # No channel views: four epochs drawing from five views per clip leave so small a model close to
    # uniform answers (top 0.17-0.23), which calibration then barely moves; tests/test_cnn.py
    # covers channel views.
    family = CNNFamily(
        CNNHyperparameters(epochs=4, patience=4, channels=24, blocks=1, batch_size=8, augmented_views=1, channel_views=0, threads=1),
        cache_dir=tmp_path_factory.mktemp("features"),
    )
    output_dir = tmp_path_factory.mktemp("models") / "calibratable-cnn"
    family.fit(splits["train"], splits["validation"], output_dir, resume=False)
    return output_dir


@pytest.fixture(scope="session")
def precalibration_cnn(tmp_path_factory) -> Path:
    """A CNN folder as saved before speaker calibration existed: no training-speaker statistics."""
    from ser_train.models.cnn import EmotionCNN

    folder = tmp_path_factory.mktemp("models") / "precalibration-cnn"
    EmotionCNN(channels=12, blocks=1).save_pretrained(folder)
    return folder
