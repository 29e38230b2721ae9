"""The data layer: RAVDESS from folders and Hub layouts, clear errors, caching, actor-disjoint splits."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile

import ser_train.audio
from ser_train import cli
from ser_train.data import (
    EMOTIONS,
    actor_folds,
    audio_arrays,
    load_ravdess,
    parse_actor_list,
    parse_file_name,
    split_by_actor,
    summarize,
    validation_actors,
)
from ser_train.errors import DataError
from synthetic import CLIP_DURATION_S, make_manifest_corpus, make_ravdess_folder, ravdess_name, synth_clip


def test_folder_loads_with_normalised_columns(synthetic_ravdess):
    dataset = load_ravdess(str(synthetic_ravdess))

    assert set(dataset.column_names) == {
        "audio", "emotion", "actor", "gender", "intensity", "statement", "repetition", "file"
    }
    assert dataset.features["emotion"].names == list(EMOTIONS)
    assert dataset.features["audio"].sampling_rate == 16_000
    assert dataset.num_rows == 6 * 8 * 2
    assert sorted(dataset.unique("actor")) == [1, 2, 3, 4, 5, 6]
    assert np.bincount(dataset["emotion"]).tolist() == [12] * 8
    # Labels come from the file name: 03-01-EE-II-SS-RR-AA.
    for row in dataset.select(range(10)):
        parsed = parse_file_name(row["file"])
        assert row["emotion"] == parsed.emotion - 1
        assert row["actor"] == parsed.actor
        assert row["gender"] == ("male" if parsed.actor % 2 else "female")


def test_every_format_and_rate_decodes_to_16k_mono(synthetic_ravdess):
    """WAV/FLAC/Opus at 48 and 16 kHz, and the stereo clip, all arrive as 16 kHz mono."""
    dataset = load_ravdess(str(synthetic_ravdess))
    extensions = {Path(name).suffix for name in dataset["file"]}
    assert extensions == {".wav", ".flac", ".opus"}

    for waveform in audio_arrays(dataset):
        assert waveform.ndim == 1 and waveform.dtype == np.float32
        assert abs(len(waveform) - CLIP_DURATION_S * 16_000) < 0.02 * 16_000

    stereo = next(path for path in synthetic_ravdess.rglob("*") if path.is_file() and soundfile.info(path).channels == 2)
    row = dataset.filter(lambda name: name == stereo.name, input_columns="file")[0]
    left = soundfile.read(stereo)[0][:, 0]
    # Mono is the mean of the two channels (1.0 and 0.8 times the clip), resampled 48 -> 16 kHz.
    expected = ser_train.audio.resample(left.astype(np.float32) * 0.9, 48_000, 16_000)
    np.testing.assert_allclose(row["audio"]["array"], expected[: len(row["audio"]["array"])], atol=2e-3)


def test_requested_sampling_rate_is_honoured(synthetic_ravdess):
    dataset = load_ravdess(str(synthetic_ravdess), sampling_rate=8_000)
    assert dataset.features["audio"].sampling_rate == 8_000
    assert abs(len(dataset[0]["audio"]["array"]) - CLIP_DURATION_S * 8_000) < 0.02 * 8_000


def test_song_files_are_kept_out_unless_asked_for(tmp_path):
    make_ravdess_folder(tmp_path, actors=(1, 2), statements=(1,), mixed_formats=False, stereo_file=False)
    song = tmp_path / "Actor_01" / ravdess_name(2, 1, vocal_channel=2)
    soundfile.write(song, synth_clip(2, 1, 16_000, seed=7), 16_000)

    assert "03-02" not in "".join(load_ravdess(str(tmp_path))["file"])
    with_song = load_ravdess(str(tmp_path), include_song=True)
    assert song.name in with_song["file"]


def test_second_load_reads_the_cache_instead_of_decoding(synthetic_ravdess, monkeypatch):
    first = load_ravdess(str(synthetic_ravdess))

    def refuse(*args, **kwargs):
        raise AssertionError("audio was decoded again")

    monkeypatch.setattr(ser_train.audio, "load_audio", refuse)
    second = load_ravdess(str(synthetic_ravdess))
    np.testing.assert_array_equal(second[5]["audio"]["array"], first[5]["audio"]["array"])


def test_files_provisioned_again_keep_their_cache(synthetic_ravdess, monkeypatch):
    # A corpus copied or provisioned again has new modification times and the same contents.
    first = load_ravdess(str(synthetic_ravdess))
    for path in synthetic_ravdess.rglob("*.wav"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))

    def refuse(*args, **kwargs):
        raise AssertionError("audio was decoded again")

    monkeypatch.setattr(ser_train.audio, "load_audio", refuse)
    assert load_ravdess(str(synthetic_ravdess))._fingerprint == first._fingerprint


def test_changed_files_are_decoded_again(tmp_path):
    folder = make_ravdess_folder(tmp_path, actors=(1, 2), statements=(1,), mixed_formats=False, stereo_file=False)
    before = load_ravdess(str(folder))
    target = folder / "Actor_01" / before[0]["file"]
    soundfile.write(target, synth_clip(0, 1, 16_000, seed=99, duration_s=2.0), 16_000)
    after = load_ravdess(str(folder))
    assert len(after[0]["audio"]["array"]) == 32_000


def test_bad_sources_get_one_clear_sentence(tmp_path):
    with pytest.raises(DataError, match="no RAVDESS audio files"):
        load_ravdess(str(tmp_path))

    (tmp_path / "Actor_01").mkdir()
    soundfile.write(tmp_path / "Actor_01" / "hello.wav", synth_clip(1, 1, 16_000, seed=1), 16_000)
    with pytest.raises(DataError, match=r"hello\.wav: not a RAVDESS file name"):
        load_ravdess(str(tmp_path))

    with pytest.raises(DataError, match="neither a local folder nor a valid Hub dataset id"):
        load_ravdess("not a valid id!!")
    with pytest.raises(DataError, match=r"^'someone/ravdess-that-is-not-cached' could not be downloaded .*offline\?.*local folder"):
        load_ravdess("someone/ravdess-that-is-not-cached")
    with pytest.raises(DataError, match=r"^There is no folder 'ravdes' here, and it could not be downloaded"):
        load_ravdess("ravdes")  # a folder's name mistyped, not looked up on the Hub alone


def test_unreadable_file_is_named_or_skipped(tmp_path):
    folder = make_ravdess_folder(tmp_path, actors=(1, 2), statements=(1,), mixed_formats=False, stereo_file=False)
    broken = folder / "Actor_02" / ravdess_name(3, 2, statement=2)
    broken.write_text("this is not audio")

    with pytest.raises(DataError, match=broken.name) as refused:
        load_ravdess(str(folder))
    assert str(refused.value).endswith("or WebM)).")  # the decoder's sentence inside, one full stop (was ".).")
    dataset = load_ravdess(str(folder), skip_unreadable=True)
    assert dataset.num_rows == 16 and broken.name not in dataset["file"]


# --- Hub layout --------------------------------------------------------------------------------

HUB_ROWS = [  # (emotion as the Hub upload spells it, actor, file name)
    ("neutral", 1, "03-01-01-01-01-01-01.wav"),
    ("ANG", 2, "03-01-05-02-01-02-02.wav"),  # an abbreviation, as some corpora spell them
    ("surprise", 3, "03-01-08-01-02-01-03.wav"),
    ("fearful", 4, "03-01-06-02-02-02-04.wav"),
]


def hub_layout_dataset() -> datasets.Dataset:
    """A tiny dataset shaped like xbgoose/ravdess: one split, string emotion, int actor, 48 kHz."""
    rows = {"audio": [], "emotion": [], "actor": []}
    for index, (emotion, actor, name) in enumerate(HUB_ROWS):
        buffer = io.BytesIO()
        soundfile.write(buffer, synth_clip(index, actor, 48_000, seed=index), 48_000, format="WAV")
        rows["audio"].append({"bytes": buffer.getvalue(), "path": name})
        rows["emotion"].append(emotion)
        rows["actor"].append(actor)
    features = datasets.Features(
        {"audio": datasets.Audio(sampling_rate=48_000), "emotion": datasets.Value("string"), "actor": datasets.Value("int64")}
    )
    return datasets.Dataset.from_dict(rows, features=features)


def check_hub_mapping(dataset: datasets.Dataset) -> None:
    assert dataset.num_rows == len(HUB_ROWS)
    assert [EMOTIONS[e] for e in dataset["emotion"]] == ["neutral", "angry", "surprised", "fearful"]
    assert dataset["actor"] == [1, 2, 3, 4]
    assert dataset["gender"] == ["male", "female", "male", "female"]
    assert dataset["intensity"] == ["normal", "strong", "normal", "strong"]  # parsed from the names
    assert dataset["statement"] == [1, 1, 2, 2]
    assert dataset["file"] == [name for _, _, name in HUB_ROWS]
    assert dataset.features["audio"].sampling_rate == 16_000
    assert len(dataset[0]["audio"]["array"]) == pytest.approx(CLIP_DURATION_S * 16_000, abs=320)


def test_local_copy_of_a_hub_dataset_is_mapped(tmp_path):
    (tmp_path / "data").mkdir()
    hub_layout_dataset().to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    check_hub_mapping(load_ravdess(str(tmp_path)))


def test_hub_id_loads_offline_from_a_prefilled_cache(hermetic_hub_cache):
    snapshot = hermetic_hub_cache("datasets", "xbgoose/ravdess")
    (snapshot / "data").mkdir()
    hub_layout_dataset().to_parquet(str(snapshot / "data" / "train-00000-of-00001.parquet"))
    check_hub_mapping(load_ravdess("xbgoose/ravdess"))


def test_hub_dataset_with_a_label_that_is_no_emotion_is_refused(tmp_path):
    dataset = hub_layout_dataset()
    dataset = dataset.map(lambda row, index: {"emotion": "other" if index == 2 else row["emotion"]}, with_indices=True)
    (tmp_path / "data").mkdir()
    dataset.to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(DataError, match="Unknown emotion label 'other' in the Hub dataset"):
        load_ravdess(str(tmp_path))


def test_hub_dataset_without_ravdess_columns_is_refused(tmp_path):
    datasets.Dataset.from_dict({"text": ["a", "b"]}).to_parquet(str(tmp_path / "train.parquet"))
    with pytest.raises(DataError, match="not a RAVDESS dataset.*actor, audio, emotion"):
        load_ravdess(str(tmp_path))


@pytest.fixture
def hermetic_hub_cache(monkeypatch, tmp_path):
    """Lay out a Hugging Face Hub cache the way huggingface_hub reads it offline."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def add_repo(kind: str, repo_id: str, commit: str = "0" * 40) -> Path:
        repo = cache / f"{kind}--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        return snapshot

    return add_repo


# --- Actor-disjoint splits ---------------------------------------------------------------------


def test_default_folds_are_six_groups_of_four_consecutive_actors():
    assert actor_folds() == [list(range(start, start + 4)) for start in range(1, 25, 4)]
    assert actor_folds(3, (1, 2, 3, 4, 5, 6)) == [[1, 2], [3, 4], [5, 6]]
    with pytest.raises(DataError, match="between 2 and 24"):
        actor_folds(25)


def test_no_actor_is_ever_on_both_sides_of_a_split():
    actors = [actor for actor in range(1, 25) for _ in range(3)]
    dataset = datasets.Dataset.from_dict({"actor": actors, "emotion": [0] * len(actors)})

    for test in actor_folds() + [[21, 22, 23, 24], [3], [1, 24]]:
        parts = split_by_actor(dataset, test)
        sides = {name: set(part["actor"]) for name, part in parts.items()}
        assert sides["test"] == set(test)
        assert not sides["train"] & sides["test"]
        assert not sides["train"] & sides["validation"]
        assert not sides["validation"] & sides["test"]
        assert sides["train"] | sides["validation"] | sides["test"] == set(range(1, 25))
        assert sum(part.num_rows for part in parts.values()) == dataset.num_rows


def test_validation_actors_follow_the_test_group_and_respect_what_is_present():
    assert validation_actors([1, 2, 3, 4]) == [5, 6, 7, 8]
    assert validation_actors([21, 22, 23, 24]) == [1, 2, 3, 4]
    assert validation_actors([5, 6], (1, 2, 3, 4, 5, 6)) == [1, 2]
    with pytest.raises(DataError, match="Too few actors"):
        validation_actors([1], (1, 2))


def test_split_rejects_absent_or_overlapping_actors():
    dataset = datasets.Dataset.from_dict({"actor": [1, 2, 3, 4], "emotion": [0, 1, 2, 3]})
    with pytest.raises(DataError, match="not all in the dataset"):
        split_by_actor(dataset, [9])
    with pytest.raises(DataError, match="must not overlap"):
        split_by_actor(dataset, [1], validation=[1, 2])


def test_actor_lists_parse_with_clear_errors():
    assert parse_actor_list("21,22,23,24") == [21, 22, 23, 24]
    assert parse_actor_list("21-24") == [21, 22, 23, 24]
    assert parse_actor_list("1, 5-6") == [1, 5, 6]
    for bad in ("", "a,b", "0", "25", "3-"):
        with pytest.raises(DataError):
            parse_actor_list(bad)


# --- CLI and the real corpus -------------------------------------------------------------------


def test_data_command_prints_json_summary(synthetic_ravdess, capsys):
    assert cli.main(["data", "--dataset", str(synthetic_ravdess), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 96
    assert summary["actors"] == 6
    assert summary["sampling_rate"] == 16_000
    assert summary["emotions"] == {name: 12 for name in EMOTIONS}
    assert summary["duration_s"] == pytest.approx(96 * CLIP_DURATION_S, rel=0.01)


def test_data_command_reports_bad_source_without_traceback(tmp_path, capsys):
    assert cli.main(["data", "--dataset", str(tmp_path)]) == cli.EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "Traceback" not in error


def test_include_song_on_a_manifest_corpus_says_it_is_for_ravdess(tmp_path, capsys):
    corpus = make_manifest_corpus(tmp_path / "corpus", {"ang": EMOTIONS.index("angry"), "sad": EMOTIONS.index("sad")})
    assert cli.main(["data", "--dataset", str(corpus), "--include-song"]) == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: --include-song applies to one RAVDESS source only (song clips are RAVDESS's).\n"


@pytest.mark.real_data
@pytest.mark.slow
def test_real_ravdess_counts(real_ravdess):
    summary = summarize(load_ravdess(str(real_ravdess)))
    assert summary["rows"] == 1440
    assert summary["actors"] == 24
    assert summary["emotions"] == {"neutral": 96, **{name: 192 for name in EMOTIONS[1:]}}
    assert summary["sampling_rate"] == 16_000
    assert 5000 < summary["duration_s"] < 5700
