"""Loading models by folder or Hub id (offline, from a pre-filled cache) and predicting."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile
from huggingface_hub import constants

from hub_helpers import Route, evaluation_clips, fill_hub_cache, make_tiny_wav2vec2, online_hub  # noqa: F401 (fixture)
from ser_train.audio import SAMPLING_RATE, resample
from ser_train.cli import main
from ser_train.data import EMOTIONS
from ser_train.errors import HubError, ModelError, SERError
from ser_train.inference import BUNDLED_CNN, DEFAULT_MODEL, EmotionModel, bundled_model_named, emotion_labels, load_model

MAIN_COMMIT = "a" * 40
V1_COMMIT = "b" * 40


@pytest.fixture(scope="module")
def wav2vec2_dir(tmp_path_factory):
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("wav2vec2"), seed=0)


@pytest.fixture(scope="module")
def wav2vec2_v1_dir(tmp_path_factory):
    """The same architecture with other weights: what an older revision of a repo holds."""
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("wav2vec2-v1"), seed=1)


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    """A small randomly initialised EmotionCNN, saved as training saves it (PyTorchModelHubMixin)."""
    import torch

    from ser_train.models.cnn import EmotionCNN

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cnn")
    EmotionCNN(channels=16, blocks=1).save_pretrained(folder)
    return folder


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test's own (tests run with HF_HUB_OFFLINE=1)."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def clips():
    return [clip for clip, _, _ in evaluation_clips(actors=(1,))]


@pytest.mark.parametrize("family", ["cnn", "wav2vec2"])
def test_hub_id_from_the_cache_predicts_like_the_local_folder(family, request, hub_cache, clips):
    model_dir = request.getfixturevalue(f"{family}_dir")
    fill_hub_cache(hub_cache, f"someone/ser-{family}", model_dir, MAIN_COMMIT)
    local = load_model(str(model_dir))
    from_hub = load_model(f"someone/ser-{family}")

    assert (from_hub.family, from_hub.labels, from_hub.name) == (family, EMOTIONS, f"someone/ser-{family}")
    expected = local.predict_batch(clips)
    np.testing.assert_allclose(from_hub.predict_batch(clips), expected, atol=1e-6)
    assert expected.shape == (len(clips), len(EMOTIONS))
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-5)


def test_a_pinned_revision_loads_that_revision(wav2vec2_dir, wav2vec2_v1_dir, hub_cache, clips):
    fill_hub_cache(hub_cache, "someone/ser-wav2vec2", wav2vec2_dir, MAIN_COMMIT)
    fill_hub_cache(hub_cache, "someone/ser-wav2vec2", wav2vec2_v1_dir, V1_COMMIT, refs=("v1",))

    pinned = load_model("someone/ser-wav2vec2@v1").predict_batch(clips)
    np.testing.assert_allclose(pinned, load_model(str(wav2vec2_v1_dir)).predict_batch(clips), atol=1e-6)
    assert not np.allclose(pinned, load_model("someone/ser-wav2vec2").predict_batch(clips), atol=1e-4)
    by_commit = load_model(f"someone/ser-wav2vec2@{V1_COMMIT}").predict_batch(clips)
    np.testing.assert_allclose(by_commit, pinned, atol=1e-6)


@pytest.mark.parametrize("revision", ["", ".", "../../../../../../../../etc/passwd", "/etc/passwd", "a..b", "v 1"])
def test_a_revision_that_names_no_branch_tag_or_commit_is_refused_before_the_cache_is_read(revision, wav2vec2_dir, hub_cache):
    """The cache looks a revision up as a file under the repo's refs/ folder: a QA pass got a
    traceback (IsADirectoryError) for "someone/x@" once the repo was cached, and made a server
    open /etc/passwd with "@../../...". Such a name is refused in one sentence, page and CLI alike."""
    fill_hub_cache(hub_cache, "someone/ser-wav2vec2", wav2vec2_dir, MAIN_COMMIT)
    name = f"someone/ser-wav2vec2@{revision}"
    with pytest.raises(HubError, match=f"^There is no model folder '{re.escape(name)}', and it is not a Hub repo id"):
        load_model(name)
    with pytest.raises(HubError, match=f"^'{re.escape(name)}' is not a Hub model id; type it as user/name or user/name@revision"):
        load_model(name, hub_only=True)


def test_hub_only_never_reads_a_folder_of_the_same_name(wav2vec2_dir, wav2vec2_v1_dir, hub_cache, clips, tmp_path, monkeypatch):
    """`someone/ser-wav2vec2` names both a folder in the working directory and a cached Hub repo
    with other weights: hub_only loads the repo, and with nothing cached refuses; never the folder."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(wav2vec2_v1_dir, tmp_path / "someone" / "ser-wav2vec2")
    folder_answer = load_model("someone/ser-wav2vec2").predict_batch(clips)
    np.testing.assert_allclose(folder_answer, load_model(str(wav2vec2_v1_dir)).predict_batch(clips), atol=1e-6)

    with pytest.raises(HubError, match=r"^'someone/ser-wav2vec2' is not \(completely\) in the Hugging Face cache"):
        load_model("someone/ser-wav2vec2", hub_only=True)
    fill_hub_cache(hub_cache, "someone/ser-wav2vec2", wav2vec2_dir, MAIN_COMMIT)
    hub_answer = load_model("someone/ser-wav2vec2", hub_only=True).predict_batch(clips)
    np.testing.assert_allclose(hub_answer, load_model(str(wav2vec2_dir)).predict_batch(clips), atol=1e-6)
    assert not np.allclose(hub_answer, folder_answer, atol=1e-4)
    with pytest.raises(HubError, match="'../models' is not a Hub model id"):
        load_model("../models", hub_only=True)


def test_predict_takes_any_rate_and_channels(wav2vec2_dir, clips):
    model = load_model(str(wav2vec2_dir))
    clip = clips[3]
    at_44k = resample(clip, SAMPLING_RATE, 44_100)
    stereo = np.stack([at_44k, 0.5 * at_44k], axis=1)  # (samples, channels), as soundfile gives

    probabilities = model.predict(stereo, 44_100)

    assert list(probabilities) == list(EMOTIONS)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    # Downmixed and resampled back to 16 kHz it is the same clip (the extractor normalises level).
    np.testing.assert_allclose(list(probabilities.values()), model.predict_batch([clip])[0], atol=1e-4)


def test_concurrent_predictions_match_sequential_ones(wav2vec2_dir, clips):
    model = load_model(str(wav2vec2_dir))
    expected = [model.predict(clip, SAMPLING_RATE) for clip in clips]
    results = [None] * len(clips)

    def predict(index):
        results[index] = model.predict(clips[index], SAMPLING_RATE)

    threads = [threading.Thread(target=predict, args=(i,)) for i in range(len(clips))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected):
        assert got == pytest.approx(want, abs=1e-6)


def test_unknown_repo_while_offline_is_one_clear_sentence(hub_cache):
    with pytest.raises(HubError, match=r"not \(completely\) in the Hugging Face cache, and offline mode is on"):
        load_model("someone/no-such-model")


def test_a_bundled_model_is_named_by_its_folders_name_from_any_folder(tmp_path, monkeypatch, capsys):
    """The page and the API name a bundled model by its folder's name; a QA pass found the CLI,
    run from another folder, taking that name for a Hub id. A folder of that name here still wins."""
    name = Path(BUNDLED_CNN).name
    if not Path(BUNDLED_CNN).is_dir():
        pytest.skip(f"the bundled model ({BUNDLED_CNN}) is not there yet")
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, np.sin(np.linspace(0, 2000, 2 * SAMPLING_RATE)).astype(np.float32) * 0.3, SAMPLING_RATE)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(clip), "--model", name, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["probabilities"] == pytest.approx(load_model(BUNDLED_CNN).predict_file(clip), abs=1e-6)
    (tmp_path / name).mkdir()
    assert bundled_model_named(name) == name  # the folder here, not the bundled one
    # The Whisper encoder under models/ is named the same way, and refused as what it is, not
    # looked for on the Hub (a QA pass got "the Hub cannot be reached").
    assert main(["predict", str(clip), "--model", "whisper-base-encoder"]) == 2
    assert "models/whisper-base-encoder is not an emotion model" in capsys.readouterr().err
    assert bundled_model_named("..") == ".."


def test_a_name_that_is_neither_folder_nor_repo_id(tmp_path):
    with pytest.raises(HubError, match="There is no model folder '.*', and it is not a Hub repo id"):
        load_model(str(tmp_path / "missing" / "model"))
    weights = Path(BUNDLED_CNN) / "model.safetensors"  # a model's file instead of its folder
    with pytest.raises(HubError, match=f"^{re.escape(str(weights))} is a file; .* pass {re.escape(BUNDLED_CNN)}.$"):
        load_model(str(weights))


def test_a_mistyped_bundled_models_name_is_answered_with_the_name_meant(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for typed in ("ravdess-tess-emovo-cn", "models/ravdess-tess-emovo-cn", "Ravdess-Tess-Emovo-CNN"):
        with pytest.raises(HubError, match=f"Did you mean the bundled model {Path(BUNDLED_CNN).name}\\?$"):
            load_model(typed)
    with pytest.raises(HubError) as far_from_any:
        load_model("someone/nothing")
    assert "Did you mean" not in str(far_from_any.value)


def test_pickle_only_repos_are_refused(wav2vec2_dir, hub_cache, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(wav2vec2_dir / "config.json", pickled)
    shutil.copy(wav2vec2_dir / "preprocessor_config.json", pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"a pickle that must never be opened")
    fill_hub_cache(hub_cache, "someone/pickled", pickled, MAIN_COMMIT)

    for name in ("someone/pickled", str(pickled)):
        with pytest.raises(ModelError, match=r"no safetensors weights .* pickle formats \(\.bin, \.pt\) are refused"):
            load_model(name)
    # No weights at all: a folder copied in part, or a repo cached in part (offline, as the tests
    # run), is said to be incomplete, not blamed on pickles.
    (pickled / "pytorch_model.bin").unlink()
    with pytest.raises(ModelError, match=f"^{pickled} has no weights \\(model.safetensors\\): the folder is incomplete"):
        load_model(str(pickled))
    fill_hub_cache(hub_cache, "someone/partial", pickled, MAIN_COMMIT)
    with pytest.raises(ModelError, match=r"^someone/partial: its weights are not in the Hugging Face cache \(only part"):
        load_model("someone/partial")


def test_code_that_comes_with_a_model_is_never_run_even_when_a_terminal_would_say_yes(wav2vec2_dir, hub_cache, tmp_path, monkeypatch):
    """A QA pass made a model's preprocessor_config.json name a feature-extractor class of the
    folder's own Python file: transformers asked at the terminal whether to run it, and "y" ran it."""
    from ser_train.training.wav2vec2 import Wav2Vec2Family

    folder = shutil.copytree(wav2vec2_dir, tmp_path / "brings-code")
    ran = tmp_path / "the model's code ran"
    (folder / "its_code.py").write_text(
        f"from pathlib import Path\nPath({str(ran)!r}).touch()\n"
        "from transformers import Wav2Vec2FeatureExtractor\nclass ItsExtractor(Wav2Vec2FeatureExtractor):\n    pass\n"
    )
    settings = json.loads((folder / "preprocessor_config.json").read_text())
    settings |= {"feature_extractor_type": "ItsExtractor", "auto_map": {"AutoFeatureExtractor": "its_code.ItsExtractor"}}
    (folder / "preprocessor_config.json").write_text(json.dumps(settings))
    fill_hub_cache(hub_cache, "someone/brings-code", folder, MAIN_COMMIT)
    monkeypatch.setattr("builtins.input", lambda *prompt: "y")  # a person who says yes to every prompt

    for name in (str(folder), "someone/brings-code"):
        with pytest.raises(ModelError, match=f"{name}: its preprocessor_config.json needs code that comes with the model"):
            load_model(name)
    with pytest.raises(ModelError, match="code a model brings is never run here"):
        Wav2Vec2Family(base=str(folder))  # nor as the base of a training
    assert not ran.exists()


def test_models_for_other_tasks_are_refused(tmp_path, hub_cache):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    fill_hub_cache(hub_cache, "someone/bert", bert, MAIN_COMMIT)
    with pytest.raises(ModelError, match=r"someone/bert is not an emotion model: .* 'bert' model \(BertForMaskedLM\)"):
        load_model("someone/bert")

    encoder_only = make_tiny_wav2vec2(tmp_path / "pretrained", architecture="pretraining")
    with pytest.raises(ModelError, match=r"Wav2Vec2ForPreTraining\), not audio classification"):
        load_model(str(encoder_only))

    keywords = make_tiny_wav2vec2(tmp_path / "keywords", labels=("yes", "no", "up", "down"))
    with pytest.raises(ModelError, match=r"labels \(yes, no, up, down\) are not distinct emotions"):
        load_model(str(keywords))


def test_other_spellings_of_emotions_are_mapped_to_ours():
    assert emotion_labels(["neu", "hap", "ang", "sad"], "m") == ("neutral", "happy", "angry", "sad")
    assert emotion_labels(["Fear", "surprise", "disgusted"], "m") == ("fearful", "surprised", "disgust")
    with pytest.raises(ModelError, match="not distinct emotions"):
        emotion_labels(["LABEL_0", "LABEL_1"], "m")


@pytest.mark.parametrize(
    "status, error_code, message",
    [
        (401, "RepoNotFound", r"no model 'someone/secret' on the Hub that you can access: .* `hf auth login` if the repo is private"),
        (401, "GatedRepo", r"someone/secret is a gated model: accept its conditions at https://huggingface.co/someone/secret"),
        # A token the Hub refuses, and the Hub failing: said as such, not as a missing network.
        (401, None, r"The Hub refused your token as invalid or expired, so someone/secret could not be fetched: .*HF_TOKEN"),
        (500, None, r"the Hugging Face Hub answered with an error \(HTTP 500: down for repairs\): try again later"),
    ],
)
def test_unknown_private_or_gated_repos_and_hub_errors_online(online_hub, hub_cache, status, error_code, message):
    headers = {"X-Error-Code": error_code} if error_code else {}
    hub = online_hub({"GET /api/models/someone/secret": Route(status, {"error": "down for repairs"}, headers=headers)})
    with pytest.raises(HubError, match=message):
        load_model("someone/secret")
    if status == 401 and not error_code:  # a visitor of a server is not told to fix its token
        with pytest.raises(HubError, match=r"^The Hub refused this server's token, so someone/secret could not be fetched: pick a model"):
            load_model("someone/secret", hub_only=True)
    assert any(path.startswith("/api/models/someone/secret/revision/main") for _, path in hub.requests)


def write_wav(path, clip):
    soundfile.write(path, clip, SAMPLING_RATE)
    return str(path)


def test_predict_command_json_keeps_going_past_a_bad_file(wav2vec2_dir, tmp_path, clips, capsys):
    good = [write_wav(tmp_path / f"clip{i}.wav", clip) for i, clip in enumerate(clips[:2])]
    bad = tmp_path / "notes.wav"
    bad.write_text("this is text, not audio")

    code = main(["predict", "--model", str(wav2vec2_dir), good[0], str(bad), good[1], "--json"])
    results = json.loads(capsys.readouterr().out)

    assert code != 0
    assert [result["file"] for result in results] == [good[0], str(bad), good[1]]
    assert set(results[1]) == {"file", "error"} and "could not be read as audio" in results[1]["error"]
    model = load_model(str(wav2vec2_dir))
    for result in (results[0], results[2]):
        assert list(result["probabilities"]) == list(EMOTIONS)
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        # Synthetic clips, not speech to Silero: no verdict, though every probability is given.
        assert result["top"] == (max(result["probabilities"], key=result["probabilities"].get) if result["speech_seconds"] else None)
        assert result["probabilities"] == pytest.approx(model.predict_file(result["file"]), abs=1e-6)


@pytest.mark.parametrize("command", ["predict", "live"])
def test_the_commands_help_names_the_default_model(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert f"models/{Path(DEFAULT_MODEL).name}" in "".join(capsys.readouterr().out.split())  # argparse wraps at hyphens


@pytest.mark.parametrize(
    "arguments, option",
    [
        (["predict", "--model", "", "clip.wav"], "--model"),  # was the default model, silently
        (["live", "--model", " ", "clip.wav"], "--model"),
        (["predict", ""], "FILE"),
        (["evaluate", "--model", ""], "--model"),
        (["train", "cnn", "--dataset", "", "--output-dir", "run"], "--dataset"),  # was this folder
        (["train", "cnn", "--output-dir", ""], "--output-dir"),
        (["card", "--model-dir", ""], "--model-dir"),  # was this folder
    ],
)
def test_an_empty_path_or_model_is_refused_before_anything_runs(arguments, option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(arguments)
    assert exit.value.code == 2
    assert f"error: argument {option}: it is empty (an unset shell variable?)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_clis_help_imports_no_torch():
    """--help took 2.5 s (a QA pass) while the parser imported ser_train.data for one name."""
    from ser_train import cli, data

    assert cli.DEFAULT_DATASET == data.DEFAULT_DATASET
    check = "import sys; from ser_train.cli import build_parser; build_parser(); print(sorted({'torch', 'datasets'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_a_folder_the_machine_refuses_is_said_in_one_sentence(synthetic_ravdess, tmp_path, capsys):
    """A QA pass's read-only output folder ended in a traceback; a file where a folder is needed is
    refused by the machine the same way (read-only is no refusal to root, who runs the tests)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("notes")
    arguments = ["train", "cnn", "--dataset", str(synthetic_ravdess), "--test-actors", "5,6", "--epochs", "1"]
    assert main([*arguments, "--output-dir", str(notes / "run")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {notes / 'run'}: Not a directory"  # after any progress bar
    assert notes.read_text() == "notes"


def test_predict_command_prints_every_emotion(wav2vec2_dir, tmp_path, clips, capsys):
    path = write_wav(tmp_path / "clip.wav", clips[0])
    assert main(["predict", "--model", str(wav2vec2_dir), path]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ")
    assert all(f"  {emotion:<10} " in out for emotion in EMOTIONS)


def test_empty_batch_gives_an_empty_array():
    def forward(waveforms):
        raise AssertionError("an empty batch needs no forward pass")

    assert EmotionModel("stub", "cnn", EMOTIONS, forward).predict_batch([]).shape == (0, len(EMOTIONS))


def test_a_transformers_model_without_feature_extractor_settings(wav2vec2_dir, tmp_path):
    incomplete = shutil.copytree(wav2vec2_dir, tmp_path / "incomplete")
    (incomplete / "preprocessor_config.json").unlink()
    with pytest.raises(ModelError, match=r"has no feature-extractor settings \(preprocessor_config.json\)"):
        load_model(str(incomplete))


def test_a_broken_model_folder_is_one_sentence_not_a_traceback(wav2vec2_dir, calibratable_cnn, tmp_path):
    """A truncated copy or download, a config without labels or that is no JSON object."""
    for source in (wav2vec2_dir, Path(calibratable_cnn)):
        truncated = shutil.copytree(source, tmp_path / f"truncated-{source.name}")
        [weights] = truncated.glob("*.safetensors")
        weights.write_bytes(weights.read_bytes()[:1000])
        with pytest.raises(ModelError, match=r"its weights could not be loaded .*incomplete or corrupt"):
            load_model(str(truncated))
    no_labels = shutil.copytree(calibratable_cnn, tmp_path / "no-labels")
    config = json.loads((no_labels / "config.json").read_text())
    del config["labels"]
    (no_labels / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="its config.json lists no labels"):
        load_model(str(no_labels))
    (no_labels / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="not a model configuration"):
        load_model(str(no_labels))


def test_a_damaged_eval_results_is_named_in_a_sentence(tmp_path):
    """Every reader of a model's records reads them one way (evaluation.read_record): a file cut
    short is named as damaged, where measured_ua gave a JSONDecodeError's traceback."""
    from ser_train.inference import measured_ua

    assert measured_ua(tmp_path) is None  # no record: nothing measured
    (tmp_path / "eval_results.json").write_text('{"leave_one_corpus_out": {"mean": ')
    with pytest.raises(SERError, match=r"eval_results.json is not valid JSON \(.*\); it is damaged"):
        measured_ua(tmp_path)
