"""Any labelled corpus: CSV manifest + label mapping, combined corpora, shared-label evaluation."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ser_train import cli
from ser_train.corpora import (
    KNOWN_CORPORA,
    actors_of_speakers,
    corpus_info,
    interleave_speakers,
    load_corpora,
    manifest_split_actors,
    speaker_names,
)
from ser_train.data import EMOTIONS, actor_folds, audio_arrays, load_ravdess, split_by_actor
from ser_train.errors import DataError
from ser_train.evaluation import EVAL_RESULTS_FILE, classification_metrics
from ser_train.model_card import format_actors, format_speakers
from ser_train.training import runner
from synthetic import make_manifest_corpus, make_ravdess_folder
from test_runner import NearestCentroidFamily

ANGRY, HAPPY, SAD, NEUTRAL = (EMOTIONS.index(name) for name in ("angry", "happy", "sad", "neutral"))
# A four-emotion corpus in another lab's spelling: "exc" needs the mapping, "oth" is left out,
# "ANG" / "Sad" / "neu" are recognised as ours without an entry.
CORPUS_LABELS = {"ANG": ANGRY, "exc": HAPPY, "Sad": SAD, "neu": NEUTRAL, "oth": EMOTIONS.index("surprised")}
LABEL_MAP = {"exc": "happy", "oth": None}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_manifest_corpus(tmp_path_factory.mktemp("corpus") / "labcorpus", CORPUS_LABELS, label_map=LABEL_MAP)


def test_manifest_corpus_loads_with_mapped_labels_and_namespaced_speakers(corpus):
    dataset = load_corpora(str(corpus))

    assert dataset.features["emotion"].names == list(EMOTIONS)
    assert dataset.features["audio"].sampling_rate == 16_000
    assert dataset.num_rows == 4 * 4 * 2  # 4 speakers x 4 kept labels x 2 clips; "oth" left out
    counts = np.bincount(dataset["emotion"], minlength=len(EMOTIONS))
    assert {EMOTIONS[i] for i in np.flatnonzero(counts)} == {"angry", "happy", "sad", "neutral"}
    assert sorted(set(dataset["speaker"])) == [f"labcorpus/spk{i}" for i in range(1, 5)]
    assert sorted(dataset.unique("actor")) == [1, 2, 3, 4]
    assert all(len(waveform) > 16_000 for waveform in audio_arrays(dataset))


def test_a_corpus_provisioned_again_keeps_its_cache_and_a_changed_one_does_not(tmp_path, monkeypatch):
    folder = make_manifest_corpus(tmp_path / "lab", CORPUS_LABELS, label_map=LABEL_MAP)
    first = load_corpora(str(folder))
    clip = next((folder / "wav").iterdir())
    stat = clip.stat()
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the same contents, copied again
    assert load_corpora(str(folder))._fingerprint == first._fingerprint

    clip.write_bytes(clip.read_bytes() + b"\0")  # other contents, the same modification time
    os.utime(clip, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load_corpora(str(folder))._fingerprint != first._fingerprint


def test_unknown_labels_and_bad_manifests_are_explained(tmp_path):
    unmapped = make_manifest_corpus(tmp_path / "a", {"exc": HAPPY, "ang": ANGRY}, speakers=("s1",), clips_per_label=1)
    with pytest.raises(DataError, match=r"exc are not among our emotions.*in a label_map.json beside manifest.csv \(the folder has none\)"):
        load_corpora(str(unmapped))
    (unmapped / "label_map.json").write_text('{"ang": "angry"}')  # one it has, which misses a label
    with pytest.raises(DataError, match="exc are not among our emotions.*; map each one in label_map.json to one of ours"):
        load_corpora(str(unmapped))

    mixed = make_manifest_corpus(
        tmp_path / "b", {"ang": ANGRY}, speakers=("s1", "s2"), clips_per_label=2, splits={"s1": "train", "s2": "test"}
    )
    manifest = mixed / "manifest.csv"
    lines = manifest.read_text().splitlines()
    lines[1] = lines[1].replace(",train", ",test")  # s1 now in both splits
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="speaker s1 is in both"):
        load_corpora(str(mixed))
    manifest.write_text("\n".join([lines[0], lines[1].replace(",test", ","), *lines[2:]]) + "\n")  # one clip without
    with pytest.raises(DataError, match="speaker s1 has a split for some clips \\('train'\\) and none for others"):
        load_corpora(str(mixed))

    manifest.write_text("\n".join([lines[0], lines[2], lines[3], lines[2]]) + "\n")
    with pytest.raises(DataError, match=r"manifest.csv, lines 2 and 4: .* is listed twice; list each clip once"):
        load_corpora(str(mixed))
    manifest.write_text("\n".join([lines[0], "", lines[2], "", lines[3], lines[2]]) + "\n")  # blank lines count too
    with pytest.raises(DataError, match=r"manifest.csv, lines 3 and 6: .* is listed twice; list each clip once"):
        load_corpora(str(mixed))
    manifest.write_text("\n".join([lines[0], lines[2], lines[3], "./" + lines[2].replace("/", "//")]) + "\n")  # the same clip, spelt otherwise
    with pytest.raises(DataError, match=r"manifest.csv, lines 2 and 4: .* is listed twice; list each clip once"):
        load_corpora(str(mixed))

    outside = tmp_path / "outside.wav"
    shutil.copy(mixed / lines[2].split(",")[0], outside)  # a real clip, but not in the corpus folder
    for clip_path in ("../outside.wav", str(outside), "wav/../../outside.wav", "wav\\..\\..\\outside.wav", "C:/outside.wav"):
        manifest.write_text("\n".join([lines[0], lines[2], f"{clip_path},ang,s1"]) + "\n")
        with pytest.raises(DataError, match=r"manifest.csv, line 3: .* is not inside the corpus folder"):
            load_corpora(str(mixed))

    manifest.write_text("file,label\nx.wav,ang\n")
    with pytest.raises(DataError, match="lacks the column\\(s\\) path, emotion, speaker"):
        load_corpora(str(mixed))


def test_ravdess_alone_keeps_its_columns(synthetic_ravdess):
    assert load_corpora(str(synthetic_ravdess)).column_names == load_ravdess(str(synthetic_ravdess)).column_names


def test_combined_corpora_split_speaker_disjoint_across_them(synthetic_ravdess, corpus):
    combined = load_corpora([str(synthetic_ravdess), str(corpus)])

    assert combined.num_rows == 96 + 32
    speakers = sorted(set(combined["speaker"]))
    assert "labcorpus/spk1" in speakers and f"{synthetic_ravdess.name}/01" in speakers
    # One integer id per speaker, never shared between two speakers.
    assert len({(s, a) for s, a in zip(combined["speaker"], combined["actor"])}) == len(speakers) == 10
    actors = sorted(combined.unique("actor"))
    for fold in actor_folds(3, tuple(actors)):
        parts = split_by_actor(combined, fold)
        seen = {name: set(parts[name]["speaker"]) for name in parts}
        assert not seen["test"] & seen["train"] and not seen["test"] & seen["validation"]
        assert not seen["validation"] & seen["train"]
    # Interleaved ids put both corpora into the first fold.
    first = split_by_actor(combined, actor_folds(3, tuple(actors))[0])["test"]
    assert set(first["corpus"]) == {synthetic_ravdess.name, "labcorpus"}
    assert interleave_speakers([["a2", "a1"], ["b1"]]) == {"a1": 1, "b1": 2, "a2": 3}


def test_combining_corpora_writes_no_copy_of_their_audio(tmp_path):
    """Each corpus's decoded audio is cached once; combining them must not write it again (a
    `cast` to the combined columns did: a GB for a large corpus, at every first run)."""
    sources = [str(make_ravdess_folder(tmp_path / "ravdess")), str(make_manifest_corpus(tmp_path / "lab", CORPUS_LABELS, label_map=LABEL_MAP))]
    parts = [load_corpora(source) for source in sources]
    cache = {Path(file["filename"]).parent for part in parts for file in part.cache_files}
    decoded = {path for folder in cache for path in folder.rglob("*.arrow")}
    combined = load_corpora(sources)
    assert combined.num_rows == sum(part.num_rows for part in parts)
    assert {path for folder in cache for path in folder.rglob("*.arrow")} == decoded


def test_two_corpora_of_one_name_are_told_apart_and_one_corpus_twice_is_refused(corpus, tmp_path):
    # Another lab's corpus of the same folder and speaker names (other recordings: longer clips).
    other = make_manifest_corpus(tmp_path / "elsewhere" / corpus.name, CORPUS_LABELS, label_map=LABEL_MAP, clip_duration_s=2.5)
    combined = load_corpora([str(corpus), str(other)])
    assert {speaker.split("/")[0] for speaker in combined["speaker"]} == {"labcorpus-1", "labcorpus-2"}
    with pytest.raises(DataError, match="Ambiguous speaker name.*spk1 is labcorpus-1/spk1 and labcorpus-2/spk1; write the corpus too"):
        actors_of_speakers(combined, ["spk1"])
    assert actors_of_speakers(combined, ["labcorpus-2/spk1"]) != actors_of_speakers(combined, ["labcorpus-1/spk1"])
    with pytest.raises(DataError, match="the same corpus is given twice"):
        load_corpora([str(corpus), str(corpus.parent / ".." / corpus.parent.name / corpus.name)])
    # A copy under another name is the same corpus too, found by its recordings (a QA pass
    # trained on a corpus and its copy and was tested on a speaker it had trained on).
    copy = shutil.copytree(corpus, tmp_path / "copy")
    with pytest.raises(DataError, match=r"^labcorpus/wav/spk1_\w+_0.wav and copy/wav/spk1_\w+_0.wav are the same recording, so labcorpus and copy share clips"):
        load_corpora([str(corpus), str(copy)])


def test_training_on_combined_corpora_and_on_a_manifest_split(synthetic_ravdess, corpus, tmp_path):
    family = NearestCentroidFamily()
    results = runner.run(family, [str(synthetic_ravdess), str(corpus)], tmp_path / "cv", num_folds=2, command=["train"])
    assert results["test"]["num_examples"] == 128  # every clip of both corpora tested once
    assert results["dataset"] == f"{synthetic_ravdess} + {corpus}"
    # Broken down by corpus: each corpus's clips, every one tested once, add up to the whole.
    per_corpus = results["per_corpus"]
    combined = load_corpora([str(synthetic_ravdess), str(corpus)])
    expected = {name: combined["corpus"].count(name) for name in combined.unique("corpus")}
    assert {name: m["num_examples"] for name, m in per_corpus.items()} == expected and len(expected) == 2
    pooled = np.sum([np.asarray(m["confusion_matrix"]) for m in per_corpus.values()], axis=0)
    np.testing.assert_array_equal(pooled, results["test"]["confusion_matrix"])
    # Each fold names its speakers (the integer ids interleave the corpora), and the card says them.
    for fold in results["folds"]:
        for role in ("test", "validation"):
            assert fold[f"{role}_speakers"] == speaker_names(combined, fold[f"{role}_actors"])
    first = results["folds"][0]
    ravdess = sorted(int(name.split("/")[1]) for name in first["test_speakers"] if name.startswith(synthetic_ravdess.name))
    labs = sorted(name.split("/")[1] for name in first["test_speakers"] if name.startswith("labcorpus/"))
    assert format_speakers(first, "test") == f"{synthetic_ravdess.name} {format_actors(ravdess)}; labcorpus {', '.join(labs)}"

    split_corpus = make_manifest_corpus(
        tmp_path / "split", {"ang": ANGRY, "sad": SAD}, speakers=("a", "b", "c", "d"), clips_per_label=2,
        splits={"a": "train", "b": "train", "c": "validation", "d": "test"},
    )
    dataset = load_corpora(str(split_corpus))
    assert manifest_split_actors(dataset) == (actors_of_speakers(dataset, ["d"]), actors_of_speakers(dataset, ["c"]))
    held_out = runner.run(NearestCentroidFamily(), str(split_corpus), tmp_path / "holdout", command=["train"])
    assert held_out["folds"][0]["test_actors"] == actors_of_speakers(dataset, ["d"])
    assert held_out["test"]["num_examples"] == 4


def test_a_copy_of_a_training_corpus_under_another_name_counts_as_heard(corpus, tmp_path):
    """A CLI QA pass scored the bundled CNN at UA 0.972 on a copy of EMOVO in a folder of another
    name: the record names its corpora by location. Their audio gives the copy away."""
    copy = shutil.copytree(corpus, tmp_path / "renamed")
    dataset = load_corpora(str(copy))
    every = set(dataset.unique("actor"))
    trained_on_everyone = {"dataset": str(corpus), "splits": [{"name": "fold-1", "test_actors": [1]}, {"name": "fold-2", "test_actors": [2]}]}
    assert cli.heard_in_copies(trained_on_everyone, dataset) == every
    assert cli.heard_actors(trained_on_everyone, str(copy), dataset) == every  # what evaluate goes by
    holdout = {"dataset": str(corpus), "splits": [{"name": "holdout", "test_actors": [4]}]}
    assert cli.heard_in_copies(holdout, dataset) == every - {4}  # its test speaker it never heard
    assert cli.heard_actors(holdout, str(corpus), load_corpora(str(corpus))) == every - {4}  # the same folder, by the record
    assert cli.heard_in_copies({"dataset": str(tmp_path / "gone")}, dataset) == set()  # nothing at hand to compare
    other = make_manifest_corpus(tmp_path / "other", CORPUS_LABELS, speakers=("new1", "new2"), label_map=LABEL_MAP)  # other voices
    assert cli.heard_actors(trained_on_everyone, str(other), load_corpora(str(other))) == set()


@pytest.mark.slow
def test_evaluate_scores_only_the_emotions_a_corpus_shares_with_the_model(synthetic_ravdess, corpus, tmp_path, capsys):
    """A CNN trained on (synthetic) RAVDESS, evaluated on a four-emotion corpus through the CLI."""
    from ser_train.inference import load_model
    from ser_train.training.cnn import CNNFamily, CNNHyperparameters

    family = CNNFamily(
        CNNHyperparameters(epochs=8, patience=8, channels=24, blocks=1, batch_size=8, augmented_views=1, threads=1),
        cache_dir=tmp_path / "features",
    )
    splits = split_by_actor(load_ravdess(str(synthetic_ravdess)), [5, 6], [4])
    family.fit(splits["train"], splits["validation"], tmp_path / "model", resume=False)

    assert cli.main(["evaluate", "--model", str(tmp_path / "model"), "--dataset", str(corpus), "--output-dir", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "Scored: neutral, happy, sad, angry (4 of the model's 8 emotions; argmax over them)" in out
    results = json.loads((tmp_path / "eval" / EVAL_RESULTS_FILE).read_text())
    assert results["test"]["labels"] == ["neutral", "happy", "sad", "angry"]
    assert results["folds"][0]["test_speakers"] == [f"labcorpus/spk{i}" for i in range(1, 5)]

    # The same figure from the library: argmax over the four shared columns only.
    model = load_model(str(tmp_path / "model"))
    dataset = load_corpora(str(corpus))
    probabilities = model.predict_batch(audio_arrays(dataset))
    shared = ["neutral", "happy", "sad", "angry"]
    columns = [model.labels.index(name) for name in shared]
    predictions = probabilities[:, columns].argmax(axis=1)
    references = [shared.index(EMOTIONS[e]) for e in dataset["emotion"]]
    expected = classification_metrics(references, predictions, shared)
    assert results["test"]["balanced_accuracy"] == pytest.approx(expected["balanced_accuracy"])
    assert results["test"]["num_examples"] == 32
    # The calibration protocol ran on the corpus too (the model stores its training speakers' statistics).
    assert set(results["calibration"]["mean_over_folds"]["random_clips"]) == {"3", "5", "all"}


@pytest.mark.parametrize(
    "source, known",
    [
        ("../shared/data/ravdess-opus-16k", "ravdess"),
        ("tess-opus-16k", "tess"),
        ("EMOVO", "emovo"),
        ("emodb-opus-16k", "emodb"),
        ("urdu-opus-16k", "urdu"),
        ("turev-opus-16k", "turev"),
        ("nemo-opus-16k", "nemo"),
        ("/data/ASED_V1", "ased"),
        ("based-on-speech", None),
        ("xbgoose/ravdess", "ravdess"),  # a Hub id, by its repo name
        ("someone/RAVDESS_speech", "ravdess"),
        ("contessa-recordings", None),  # "tess" inside a word is not TESS
        ("hostess-speech", None),
        ("ravdessish", None),
        ("labcorpus", None),
    ],
)
def test_a_known_corpus_is_recognised_by_a_whole_word_of_its_name(source, known):
    assert corpus_info(source) == (KNOWN_CORPORA[known] if known else None)


def test_a_folder_in_the_ravdess_layout_is_ravdess_whatever_its_name(tmp_path):
    ravdess_copies = [
        make_ravdess_folder(tmp_path / name, actors=(1,), statements=(1,), mixed_formats=False, stereo_file=False)
        for name in ("rav-small", "hostess-speech")
    ]
    for folder in ravdess_copies:
        assert corpus_info(str(folder)) == KNOWN_CORPORA["ravdess"]
    # A manifest corpus is never taken for RAVDESS by its layout, whatever its clips are called.
    manifest = make_manifest_corpus(tmp_path / "rav-small-manifest", {"ANG": ANGRY, "Sad": SAD}, speakers=("s1",), clips_per_label=1)
    assert corpus_info(str(manifest)) is None
    assert corpus_info(str(make_manifest_corpus(tmp_path / "contessa-recordings", {"ANG": ANGRY}, speakers=("s1",), clips_per_label=1))) is None
