"""The wav2vec2 family, trained for real on a toy-sized, randomly initialised wav2vec2.

The tiny encoder has wav2vec2-base's layout (group-norm convolutional feature encoder with a
320-sample stride, so 50 frames per second; transformer layers with a convolutional position
embedding) at a size that trains in seconds on a CPU. It is saved like a Hub checkpoint (the bare
encoder plus its feature extractor) and passed as the base, exactly as a downloaded one would be.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForAudioClassification,
    Trainer,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    pipeline,
    set_seed,
)

from ser_train import cli
from ser_train.data import EMOTIONS, audio_arrays, load_ravdess, split_by_actor
from ser_train.models.cnn import EmotionCNN
from ser_train.errors import SERError
from ser_train.models.wav2vec2 import EmotionWav2Vec2, load_for_training
from ser_train.training import runner
from ser_train.training.wav2vec2 import MAX_TRAINING_CROP_S, Wav2Vec2Family, model_inputs
from synthetic import synth_clip

TINY_ENCODER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16, 16, 16),
    "conv_kernel": (10, 8, 8),
    "conv_stride": (5, 8, 8),  # 320 samples per frame, as in wav2vec2-base
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}
BATCH_SIZE = 8
TRAIN_ACTORS, VALIDATION_ACTORS, TEST_ACTORS = [1, 2, 3, 4], [5], [6]
STEPS_PER_EPOCH = len(TRAIN_ACTORS) * len(EMOTIONS) * 2 // BATCH_SIZE  # 2 statements per emotion
EPOCHS = 5
LEARNING_RATE = 3e-3  # large for a transformer, but the toy encoder starts from random weights


class Interrupted(Exception):
    """Stands in for a crash or a killed job in the middle of training."""


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Toy-sized matrices gain nothing from a second thread, and on busy shared cores OpenMP's
    spin-waiting threads make each training step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-wav2vec2-base")
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**TINY_ENCODER)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16_000, do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def splits(synthetic_ravdess):
    parts = split_by_actor(load_ravdess(str(synthetic_ravdess)), TEST_ACTORS, VALIDATION_ACTORS)
    assert parts["train"].num_rows == STEPS_PER_EPOCH * BATCH_SIZE
    return parts


def encoder_family(tiny_base) -> Wav2Vec2Family:
    return Wav2Vec2Family(
        base=str(tiny_base), train_mode="encoder", epochs=EPOCHS, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE
    )


@pytest.fixture(scope="module")
def encoder_run(tiny_base, splits, tmp_path_factory):
    """One uninterrupted encoder fine-tuning run with validation: (family, fit result, folder)."""
    family = encoder_family(tiny_base)
    output_dir = tmp_path_factory.mktemp("encoder-run")
    result = family.fit(splits["train"], splits["validation"], output_dir, resume=False)
    return family, result, output_dir


def weights(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def cross_entropy(classifier: EmotionWav2Vec2, dataset) -> float:
    probabilities = classifier.predict_proba(audio_arrays(dataset))
    return float(-np.mean(np.log(probabilities[np.arange(dataset.num_rows), dataset["emotion"]])))


def trainer_state(checkpoint_or_output_dir) -> dict:
    return json.loads((checkpoint_or_output_dir / "trainer_state.json").read_text())


def test_the_new_head_mixes_all_layers_equally_at_first(tiny_base):
    model = load_for_training(tiny_base, list(EMOTIONS), "encoder")

    num_layers = TINY_ENCODER["num_hidden_layers"] + 1  # the transformer layers and their input
    assert model.config.use_weighted_layer_sum and model.config.layerdrop == 0.0
    torch.testing.assert_close(model.layer_weights.detach(), torch.full((num_layers,), 1 / num_layers))


def test_training_crops_long_clips_at_random_and_evaluation_hears_them_whole(tiny_base):
    feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(tiny_base)
    long_clip = synth_clip(emotion=3, actor=1, sampling_rate=16_000, seed=0, duration_s=2 * MAX_TRAINING_CROP_S)
    batch = {"audio": [{"array": long_clip}], "emotion": [3]}

    random.seed(0)
    crops = [model_inputs(batch, feature_extractor, MAX_TRAINING_CROP_S)["input_values"][0] for _ in range(2)]
    whole = model_inputs(batch, feature_extractor)

    assert [len(crop) for crop in crops] == [int(MAX_TRAINING_CROP_S * 16_000)] * 2
    assert not np.array_equal(crops[0], crops[1])
    assert len(whole["input_values"][0]) == len(long_clip) and whole["labels"] == [3]


def test_encoder_training_lowers_the_training_loss(encoder_run, tiny_base, splits):
    family, result, _ = encoder_run
    set_seed(family.seed)  # fit draws the new head's weights right after seeding, as here
    initial = EmotionWav2Vec2(load_for_training(tiny_base, list(EMOTIONS), "encoder"), result.model.feature_extractor)

    before = cross_entropy(initial, splits["train"])
    after = cross_entropy(result.model, splits["train"])

    assert after < 0.85 * before, (before, after)
    assert 1 <= result.best_epoch <= EPOCHS


def test_encoder_mode_fine_tunes_the_transformer_but_not_the_feature_encoder(encoder_run, tiny_base):
    _, result, _ = encoder_run
    pretrained = load_file(tiny_base / "model.safetensors")
    trained = {name.removeprefix("wav2vec2."): tensor for name, tensor in weights(result.model.model).items()}

    feature_encoder = [name for name in pretrained if name.startswith("feature_extractor.")]
    transformer = [name for name in pretrained if name.startswith("encoder.layers.")]
    assert feature_encoder and transformer
    assert all(torch.equal(trained[name], pretrained[name]) for name in feature_encoder)
    assert not any(torch.equal(trained[name], pretrained[name]) for name in transformer if name.endswith("weight"))


def test_saved_folder_is_standard_and_reloads_with_identical_logits(encoder_run, splits):
    _, result, output_dir = encoder_run
    config = json.loads((output_dir / "config.json").read_text())
    assert config["use_weighted_layer_sum"] is True
    assert config["id2label"] == {str(index): name for index, name in enumerate(EMOTIONS)}
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "preprocessor_config.json").is_file()
    assert {path.name for path in output_dir.glob("*.bin")} <= {"training_args.bin"}  # Trainer's pickled arguments; no .bin weights
    assert len(list(output_dir.glob("checkpoint-*"))) <= 2

    reloaded = AutoModelForAudioClassification.from_pretrained(output_dir).eval()
    trained = result.model.model.eval()
    expected = weights(trained)
    assert all(torch.equal(tensor, expected[name]) for name, tensor in weights(reloaded).items())
    waveform = audio_arrays(splits["test"].select([0]))[0]
    inputs = result.model.feature_extractor(waveform, sampling_rate=16_000, return_tensors="pt")
    with torch.inference_mode():  # equal weights; only float rounding may differ (memory layout)
        torch.testing.assert_close(reloaded(**inputs).logits, trained(**inputs).logits, rtol=0, atol=1e-6)


def test_pipeline_gives_all_eight_emotions_as_predict_proba_does(encoder_run, splits):
    _, result, output_dir = encoder_run
    waveform = audio_arrays(splits["test"].select([0]))[0]

    scores = pipeline("audio-classification", model=str(output_dir), top_k=None)({"raw": waveform, "sampling_rate": 16_000})

    assert sorted(score["label"] for score in scores) == sorted(EMOTIONS)
    from_pipeline = np.array([{s["label"]: s["score"] for s in scores}[name] for name in EMOTIONS])
    np.testing.assert_allclose(from_pipeline, result.model.predict_proba([waveform])[0], rtol=1e-5, atol=1e-6)


def test_resume_after_a_crash_continues_to_the_uninterrupted_result(encoder_run, tiny_base, splits, tmp_path, monkeypatch):
    _, uninterrupted, _ = encoder_run
    crash_at_step = (EPOCHS - 1) * STEPS_PER_EPOCH + 2  # in the last epoch, after its checkpoint
    steps_taken = []  # Trainer's global step as each training step begins
    original_step = Trainer.training_step

    def recorded_step(self, *args, **kwargs):
        steps_taken.append(self.state.global_step)
        if crashing and len(steps_taken) == crash_at_step:
            raise Interrupted
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", recorded_step)
    crashing = True
    with pytest.raises(Interrupted):
        encoder_family(tiny_base).fit(splits["train"], splits["validation"], tmp_path, resume=False)
    steps_taken.clear()
    crashing = False
    resumed = encoder_family(tiny_base).fit(splits["train"], splits["validation"], tmp_path, resume=True)

    # Only the unfinished epoch was trained again, continuing the step count.
    assert steps_taken == list(range((EPOCHS - 1) * STEPS_PER_EPOCH, EPOCHS * STEPS_PER_EPOCH))
    assert resumed.best_epoch == uninterrupted.best_epoch
    expected, got = weights(uninterrupted.model.model), weights(resumed.model.model)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)


def test_head_mode_without_validation_trains_exactly_max_epochs_with_a_frozen_encoder(tiny_base, splits, tmp_path):
    family = Wav2Vec2Family(base=str(tiny_base), train_mode="head", batch_size=BATCH_SIZE)
    result = family.fit(splits["train"], None, tmp_path, resume=False, max_epochs=2)

    assert result.best_epoch == 2
    state = trainer_state(tmp_path / f"checkpoint-{2 * STEPS_PER_EPOCH}")
    assert state["global_step"] == 2 * STEPS_PER_EPOCH
    assert not any(key.startswith("eval_") for entry in state["log_history"] for key in entry)
    pretrained = load_file(tiny_base / "model.safetensors")
    trained = {name.removeprefix("wav2vec2."): tensor for name, tensor in weights(result.model.model).items()}
    assert all(torch.equal(trained[name], tensor) for name, tensor in pretrained.items())


def test_cli_trains_evaluates_and_records_a_holdout_model(tiny_base, synthetic_ravdess, tmp_path, capsys):
    output_dir = tmp_path / "model"
    code = cli.main(
        [
            "train", "wav2vec2", "--dataset", str(synthetic_ravdess), "--output-dir", str(output_dir),
            "--test-actors", "6", "--base", str(tiny_base), "--train-mode", "head", "--epochs", "1",
            "--batch-size", str(BATCH_SIZE),
        ]
    )

    assert code == 0, capsys.readouterr().err
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert results["family"] == "wav2vec2" and results["test"]["num_examples"] == 16
    assert (output_dir / "confusion_matrix.png").is_file()
    hyperparameters = json.loads((output_dir / "training_args.json").read_text())["hyperparameters"]
    assert hyperparameters["base"] == str(tiny_base) and hyperparameters["train_mode"] == "head"
    assert EmotionWav2Vec2.from_pretrained(output_dir).labels == list(EMOTIONS)


def test_an_uncached_hub_base_fails_fast_offline_naming_the_model_and_base(synthetic_ravdess, tmp_path, monkeypatch, capsys):
    def no_data_loading(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the base model was checked")

    monkeypatch.setattr(runner, "load_corpora", no_data_loading)
    output_dir = tmp_path / "model"
    code = cli.main(
        [
            "train", "wav2vec2", "--dataset", str(synthetic_ravdess), "--output-dir", str(output_dir),
            "--test-actors", "6", "--base", "facebook/wav2vec2-base",
        ]
    )

    error = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR
    assert "facebook/wav2vec2-base" in error and "--base" in error
    assert error.startswith("error: ") and error.count("\n") == 1
    assert not output_dir.exists()


def test_a_base_folder_without_safetensors_weights_is_refused(tiny_base, tmp_path):
    (tmp_path / "config.json").write_text((tiny_base / "config.json").read_text())

    with pytest.raises(SERError, match="safetensors"):
        Wav2Vec2Family(base=str(tmp_path))


def test_a_base_of_another_kind_or_a_missing_folder_is_refused_with_a_sentence(tmp_path):
    """A folder of this project's CNN (a model type transformers does not know) is named for what
    it is; a path that does not exist is not looked up on the Hub."""
    cnn = tmp_path / "cnn"
    EmotionCNN().save_pretrained(cnn)
    with pytest.raises(SERError, match=f"{cnn} is a 'ser-cnn' model; --base needs a speech encoder"):
        Wav2Vec2Family(base=str(cnn))
    with pytest.raises(SERError, match="no such folder"):
        Wav2Vec2Family(base=str(tmp_path / "no-such-base"))


def test_a_hub_base_that_cannot_be_fetched_is_refused_with_the_hub_reason(monkeypatch):
    """The base is fetched as every model is (ser_train.hub): a connection that breaks mid-download
    and a revision that does not exist each get their sentence, not a traceback."""
    import httpx2
    from huggingface_hub.errors import RevisionNotFoundError

    from ser_train import hub

    def broken_connection(*args, **kwargs):
        raise httpx2.ReadError("connection reset by peer")

    monkeypatch.setattr(hub, "snapshot_download", broken_connection)
    with pytest.raises(SERError, match=r"^--base user/encoder: The download of user/encoder failed because the network connection broke"):
        Wav2Vec2Family(base="user/encoder")

    def no_such_revision(*args, **kwargs):
        raise RevisionNotFoundError("404", response=httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co")))

    monkeypatch.setattr(hub, "snapshot_download", no_such_revision)
    with pytest.raises(SERError, match=r"^--base user/encoder@v9: user/encoder has no branch, tag or commit called 'v9'"):
        Wav2Vec2Family(base="user/encoder@v9")
