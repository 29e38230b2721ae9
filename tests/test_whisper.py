"""Whisper: the converted whisper-base encoder against the source's reference output, the
converter on a tiny random encoder, and the Whisper family trained for real on that tiny encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForAudioClassification, WhisperConfig, pipeline
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from ser_train.corpora import load_corpora
from ser_train.data import EMOTIONS, audio_arrays, load_ravdess
from ser_train.errors import SERError
from ser_train.hub import publishable_files
from ser_train.inference import BUNDLED_CNN, BUNDLED_WHISPER, DEFAULT_MODEL, HELD_OUT_ACTORS, WHISPER_MODEL_TYPE, load_model, measured_ua
from ser_train.models import whisper, whisper_conversion
from ser_train.models.whisper_conversion import ENCODER_SHARD, POSITIONS_SHARD, convert
from ser_train.training import runner
from ser_train.training.whisper import STATISTICS_COLUMN, WhisperFamily, WhisperHyperparameters, _statistics, speaker_directions
from ser_train.vad import trim_silence
from synthetic import make_manifest_corpus, synth_clip

ROOT = Path(__file__).resolve().parent.parent
CONVERTED = ROOT / "models" / "whisper-base-encoder"
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "whisper_base_reference"


def test_converted_encoder_reproduces_the_reference_output():
    """The source repository ran `WhisperModel.from_pretrained("openai/whisper-base")`'s encoder
    (layer_norm, then the 6 layers) on a 512 x 512 hidden-state input and saved the output.

    The tolerance: the reference and this run sum in different orders in float32, which moves
    the output by a few 1e-6 of its scale (5e-5 of 26 here); a 1e-4 share of the scale leaves
    room for other CPUs and is still far below what one wrong tensor does (the layer norm
    applied last instead of first: an error of 20).
    """
    model = AutoModelForAudioClassification.from_pretrained(CONVERTED, num_labels=8)
    encoder = model.encoder.eval()
    hidden = torch.from_numpy(np.load(REFERENCE / "input.npy"))[None]
    expected = np.load(REFERENCE / "output_pytorch.npy")

    with torch.inference_mode():
        hidden = encoder.layer_norm(hidden)
        for layer in encoder.layers:
            hidden = layer(hidden, None)
    output = hidden[0].numpy()

    assert model.dtype == torch.float32
    assert sum(p.numel() for p in encoder.parameters()) == whisper_conversion.WHISPER_BASE_ENCODER_PARAMETERS
    np.testing.assert_allclose(output, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def tiny_config() -> WhisperConfig:
    return WhisperConfig(
        d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=32,
        num_mel_bins=80, max_source_positions=1500, vocab_size=100, dtype="float32",
    )  # fmt: skip


def write_source(folder: Path, encoder: WhisperEncoder) -> None:
    """Write an encoder as the source stores whisper-base: one fp16 .npy per tensor."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in encoder.state_dict().items():
        np.save(folder / f"{key.replace('.', '_')}_fp16.npy", value.half().numpy())


def test_convert_writes_a_folder_transformers_loads_tensor_for_tensor(tmp_path, monkeypatch):
    torch.manual_seed(0)
    config = tiny_config()
    encoder = WhisperEncoder(config)
    write_source(tmp_path / "source", encoder)
    monkeypatch.setattr(whisper_conversion, "whisper_base_config", lambda: WhisperConfig(**config.to_dict()))
    monkeypatch.setattr(whisper_conversion, "WHISPER_BASE_ENCODER_PARAMETERS", sum(p.numel() for p in encoder.parameters()))

    folder = convert(tmp_path / "source", tmp_path / "converted")

    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["encoder.embed_positions.weight"] == POSITIONS_SHARD
    assert index["weight_map"]["encoder.conv1.weight"] == ENCODER_SHARD
    loaded = AutoModelForAudioClassification.from_pretrained(folder, num_labels=8).encoder
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value.half().float(), rtol=0, atol=0, msg=key)
    assert "MIT" in (folder / "README.md").read_text()


def test_convert_refuses_a_folder_that_is_not_the_encoder(tmp_path):
    write_source(tmp_path / "source", WhisperEncoder(tiny_config()))
    with pytest.raises(SERError, match="is not the whisper-base encoder"):
        convert(tmp_path / "source", tmp_path / "converted")
    assert not (tmp_path / "converted").exists()


# --- The Whisper family, trained for real on a tiny random encoder -----------------------------

WINDOW_S = 3


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random Whisper encoder in the converted base's layout (encoder shard, table shard)."""
    folder = tmp_path_factory.mktemp("tiny-whisper")
    torch.manual_seed(0)
    config = tiny_config()
    encoder = WhisperEncoder(config)
    write_source(folder / "source", encoder)
    patch = pytest.MonkeyPatch()
    patch.setattr(whisper_conversion, "whisper_base_config", lambda: WhisperConfig(**config.to_dict()))
    patch.setattr(whisper_conversion, "WHISPER_BASE_ENCODER_PARAMETERS", sum(p.numel() for p in encoder.parameters()))
    try:
        return convert(folder / "source", folder / "base")
    finally:
        patch.undo()


def tiny_family(base: Path, **overrides) -> WhisperFamily:
    settings = dict(base=str(base), window_s=WINDOW_S, augmented_views=1, channel_views=1, calibrated_views=1)
    return WhisperFamily(WhisperHyperparameters(**{**settings, **overrides}))


@pytest.fixture(scope="module")
def holdout_run(tiny_base, synthetic_ravdess, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("whisper-run")
    family = tiny_family(tiny_base)
    results = runner.run(family, str(synthetic_ravdess), output_dir, test_actors=[6], command=["test"])
    return family, output_dir, results


def test_holdout_run_learns_and_saves_a_transformers_folder_sharing_the_base_encoder(holdout_run, tiny_base):
    family, output_dir, results = holdout_run

    assert results["family"] == "whisper"
    assert results["test"]["balanced_accuracy"] > 3 / 8  # three times chance (8 emotions)
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == whisper.EMOTION_MODEL_TYPE == WHISPER_MODEL_TYPE
    assert config["architectures"] == ["WhisperForEmotionRecognition"]
    assert config["max_source_positions"] == WINDOW_S * 50
    extractor = json.loads((output_dir / "preprocessor_config.json").read_text())
    assert extractor["chunk_length"] == WINDOW_S and extractor["return_attention_mask"]
    assert (output_dir / ENCODER_SHARD).read_bytes() == (tiny_base / ENCODER_SHARD).read_bytes()
    assert not (output_dir / "model.safetensors").exists()
    published = {path.name for path in publishable_files(output_dir)}  # a sharded folder can be pushed
    assert {ENCODER_SHARD, POSITIONS_SHARD, "model.safetensors.index.json", "config.json"} <= published
    # The calibration protocol ran on the test speaker, with and without calibration.
    assert set(results["calibration"]["mean_over_folds"]["random_clips"]) == {"3", "5", "10", "all"}


def test_saved_model_answers_alike_through_load_model_pipeline_and_the_training_cache(holdout_run, synthetic_ravdess):
    family, output_dir, _ = holdout_run
    dataset = family.prepare(load_ravdess(str(synthetic_ravdess)))
    waveforms = audio_arrays(dataset)[:6]
    waveforms[1] = np.tile(waveforms[1], 2)  # longer than the window: cut at its end
    model = load_model(str(output_dir))
    assert model.family == "whisper" and model.can_calibrate

    from_library = model.predict_batch(waveforms)
    # Stock transformers loads the folder once this package has registered the model type.
    classifier = pipeline("audio-classification", model=str(output_dir), top_k=None)
    # The model pools over speech only; the pipeline is given what load_model trims to (model card).
    assert json.loads((output_dir / "config.json").read_text())[whisper.TRIM_SILENCE_KEY]
    for waveform, row in zip(waveforms, from_library):
        scores = {s["label"]: s["score"] for s in classifier({"raw": trim_silence(waveform), "sampling_rate": 16_000})}
        np.testing.assert_allclose([scores[label] for label in model.labels], row, rtol=1e-4, atol=1e-6)

    # The head was trained on cached statistics; from them it must give the model's own answer.
    cached = np.asarray(dataset.with_format("numpy")[STATISTICS_COLUMN][:6])[:, 0]
    classifier_of_folder = whisper.EmotionWhisper.from_pretrained(output_dir)
    kept = [0, 2, 3, 4, 5]  # clip 1 was changed above
    np.testing.assert_allclose(classifier_of_folder.probabilities(cached)[kept], from_library[kept], rtol=1e-4, atol=1e-5)


def test_the_training_cache_gives_what_speaker_calibration_sees_of_each_clip(holdout_run, synthetic_ravdess):
    """Held-out answers with speaker calibration read each clip's representation from the cache
    instead of encoding the clip again; it must be what the saved model computes from the audio."""
    family, output_dir, _ = holdout_run
    dataset = family.prepare(load_ravdess(str(synthetic_ravdess))).select(range(6))
    from_audio = load_model(str(output_dir)).represent(audio_arrays(dataset))
    from_cache = family.representations(dataset)
    assert [set(clip) for clip in from_cache] == [set(clip) for clip in from_audio]
    for cached, computed in zip(from_cache, from_audio):
        # The same float32 encoder on the same clip, batched with other clips: rounding apart.
        np.testing.assert_allclose(cached[whisper.REPRESENTATION], computed[whisper.REPRESENTATION], rtol=1e-4, atol=1e-5)
    assert family.representations(load_ravdess(str(synthetic_ravdess))) is None  # not prepared: nothing kept


def test_statistics_pool_the_clips_own_frames_not_the_windows_padding(tiny_base, synthetic_ravdess):
    [clip] = audio_arrays(load_ravdess(str(synthetic_ravdess)))[:1]
    classifier = whisper.EmotionWhisper(whisper.new_classifier(tiny_base, ["_"], WINDOW_S), whisper.window_feature_extractor(tiny_base, WINDOW_S))
    features = classifier.feature_extractor([clip], sampling_rate=16_000, return_tensors="pt").input_features
    with torch.inference_mode():
        hidden = torch.stack(classifier.model.encoder(features, output_hidden_states=True).hidden_states, dim=1)[0].double().numpy()
    own = int(np.ceil(len(clip) / 320))  # 10 ms mel frames, halved by the encoder
    assert own < hidden.shape[1]  # the clip is shorter than the window
    expected = np.concatenate([hidden[:, :own].mean(axis=1), hidden[:, :own].std(axis=1)], axis=-1).ravel()
    padded = np.concatenate([hidden.mean(axis=1), hidden.std(axis=1)], axis=-1).ravel()

    statistics = classifier.statistics([clip])[0]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(statistics, expected, rtol=0, atol=1e-4 * scale)
    assert np.abs(padded - expected).max() > 100 * 1e-4 * scale  # pooling the padding would show


def test_channel_views_are_encoded_after_the_views_before_them_which_stay_as_they_were(tiny_base, synthetic_ravdess):
    dataset = load_ravdess(str(synthetic_ravdess)).select(range(8))
    before = np.asarray(tiny_family(tiny_base, channel_views=0).prepare(dataset).with_format("numpy")[STATISTICS_COLUMN])
    with_channel = np.asarray(tiny_family(tiny_base, channel_views=1).prepare(dataset).with_format("numpy")[STATISTICS_COLUMN])

    assert with_channel.shape[1] == before.shape[1] + 1
    # The same clips through the same encoder in the same batches: the same floats.
    np.testing.assert_array_equal(with_channel[:, : before.shape[1]], before)
    assert not np.allclose(with_channel[:, -1], with_channel[:, 0], rtol=1e-3)  # another room, band or codec


class CountingFamily(WhisperFamily):
    """The real family, counting the clips it encodes; `fail_after` batches, it stops as a killed run would."""

    def __init__(self, hyperparameters, fail_after: int | None = None):
        super().__init__(hyperparameters)
        self.encoded, self.batches_left = 0, fail_after

    def _encode_batch(self, batch, indices, first_index=0):
        if self.batches_left is not None:
            if self.batches_left == 0:
                raise KeyboardInterrupt
            self.batches_left -= 1
        self.encoded += len(indices)
        return super()._encode_batch(batch, indices, first_index)


def test_encoding_interrupted_or_extended_by_a_corpus_redoes_one_piece_at_most(tiny_base, synthetic_ravdess, tmp_path, monkeypatch):
    """The encoder's output is cached in pieces: a run killed while encoding (hours on real
    corpora) keeps the pieces it finished, and a run over more corpora reuses those of the clips
    it begins with; the statistics are those of one uninterrupted pass."""
    hp = tiny_family(tiny_base).hp
    labels = {"neu": EMOTIONS.index("neutral"), "ang": EMOTIONS.index("angry")}
    ravdess, more = str(synthetic_ravdess), str(make_manifest_corpus(tmp_path / "more", labels))
    whole = _statistics(WhisperFamily(hp).prepare(load_corpora([ravdess, more])))  # one piece: 96 + 16 clips
    monkeypatch.setattr("ser_train.training.whisper.PIECE_CLIPS", 16)

    interrupted = CountingFamily(hp, fail_after=3)  # the first piece (2 batches of 8), then 1 batch of the next
    with pytest.raises(KeyboardInterrupt):
        interrupted.prepare(load_ravdess(ravdess))
    resumed = CountingFamily(hp)
    resumed.prepare(load_ravdess(ravdess))
    assert resumed.encoded == 96 - 16

    extended = CountingFamily(hp)
    combined = load_corpora([ravdess, more])
    prepared = extended.prepare(combined)
    assert extended.encoded == 16  # the other corpus's clips only
    # Every other column is this run's, not that of the run that cached a piece: the actor ids
    # of RAVDESS alone are not those of RAVDESS among other corpora.
    assert set(prepared.column_names) == {*combined.column_names, STATISTICS_COLUMN}
    actors = list(combined["actor"])
    assert list(prepared["actor"]) == actors != list(load_ravdess(ravdess)["actor"]) + actors[96:]
    statistics = _statistics(prepared)
    # The same clips through the same encoder in the same batches of 8: the same floats.
    np.testing.assert_array_equal(statistics, whole)


def test_population_statistics_of_the_training_speakers_are_stored_and_calibration_is_per_speaker(holdout_run, synthetic_ravdess):
    from ser_train.calibration import population_statistics

    family, output_dir, _ = holdout_run
    dataset = family.prepare(load_ravdess(str(synthetic_ravdess)))
    trained = dataset.filter(lambda row: row["actor"] != 6)  # the run's training and validation actors
    labels = dataset.features["emotion"].names
    clean = list(np.asarray(trained.with_format("numpy")[STATISTICS_COLUMN])[:, 0, None])
    expected = population_statistics(clean, trained["actor"], [labels[e] for e in trained["emotion"]])
    stored = whisper.EmotionWhisper.from_pretrained(output_dir).model.population()[whisper.REPRESENTATION]
    for name, values in expected.as_arrays().items():
        np.testing.assert_allclose(stored.as_arrays()[name], values, rtol=1e-5, atol=1e-6 * np.abs(values).max(), err_msg=name)

    model = load_model(str(output_dir))
    test = dataset.filter(lambda row: row["actor"] == 6)
    waveforms = audio_arrays(test)
    calibration = model.calibrate(waveforms[:4], source="speech")
    assert calibration.spread_estimated
    calibrated = model.predict_batch(waveforms[4:], calibration=calibration)
    assert not np.allclose(calibrated, model.predict_batch(waveforms[4:]), atol=1e-3)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1, atol=1e-5)


def test_a_folder_saved_before_the_mood_statistics_loads_and_compares_the_moods_with_all_speech(holdout_run, tmp_path):
    from safetensors.torch import load_file, save_file

    _, output_dir, _ = holdout_run
    earlier = tmp_path / "earlier"
    shutil.copytree(output_dir, earlier)
    head = load_file(earlier / whisper.HEAD_SHARD)
    save_file({k: v for k, v in head.items() if "population_mood" not in k}, earlier / whisper.HEAD_SHARD)
    index = json.loads((earlier / whisper_conversion.INDEX_FILE).read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if "population_mood" not in k}
    (earlier / whisper_conversion.INDEX_FILE).write_text(json.dumps(index))

    population = whisper.EmotionWhisper.from_pretrained(earlier).model.population()[whisper.REPRESENTATION]
    np.testing.assert_array_equal(population.mood_mean, population.mean)
    np.testing.assert_array_equal(population.mood_std, population.std)
    saved = whisper.EmotionWhisper.from_pretrained(output_dir).model.population()[whisper.REPRESENTATION]
    assert not np.array_equal(saved.mood_mean, saved.mean)  # a folder of today keeps its own


def test_fitting_again_gives_the_same_weights_so_a_rerun_fold_reproduces_its_model(tiny_base, synthetic_ravdess, tmp_path):
    family = tiny_family(tiny_base)
    train = family.prepare(load_ravdess(str(synthetic_ravdess)))
    first = family.fit(train, None, tmp_path / "first", resume=False)
    again = family.fit(train, None, tmp_path / "again", resume=False)
    for name, weights in first.model.model.state_dict().items():
        torch.testing.assert_close(again.model.model.state_dict()[name], weights, rtol=0, atol=0, msg=name)
    assert (tmp_path / "first" / POSITIONS_SHARD).read_bytes() == (tmp_path / "again" / POSITIONS_SHARD).read_bytes()


class CacheWatchingFamily(WhisperFamily):
    """The real family, noting the datasets cache files there are once the encoder's output is cached."""

    def prepare(self, dataset):
        prepared = super().prepare(dataset)
        self.cache_folders = {Path(datasets.config.HF_DATASETS_CACHE)} | {Path(file["filename"]).parent for file in prepared.cache_files}
        self.files_after_encoder = self.cache_files()
        return prepared

    def cache_files(self) -> set[Path]:
        return {path for folder in self.cache_folders for path in folder.rglob("*.arrow")}


@pytest.mark.slow
def test_a_run_writes_no_copy_of_the_cached_statistics_after_the_encoder(tiny_base, tmp_path):
    """Every fold, held-out corpus and nested fit works on a subset of the cached statistics
    (gigabytes on real corpora); none may write a copy of it to the cache (`Dataset.unique` on a
    subset did: one to three GB per fit, never removed)."""
    labels = {"neu": EMOTIONS.index("neutral"), "ang": EMOTIONS.index("angry"), "sad": EMOTIONS.index("sad")}
    speakers = {"alpha": ("a1", "a2", "a3", "a4"), "beta": ("b1", "b2"), "gamma": ("c1", "c2")}
    corpora = [str(make_manifest_corpus(tmp_path / name, labels, voices)) for name, voices in speakers.items()]
    family = CacheWatchingFamily(tiny_family(tiny_base).hp)
    runner.run(family, corpora, tmp_path / "run", num_folds=2, folds_within="alpha", leave_one_corpus_out=True, command=["test"])
    assert family.cache_files() == family.files_after_encoder


def test_speaker_directions_are_where_voices_differ_not_where_emotions_do():
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(6), 20)
    emotions = np.tile(np.arange(4), 30)
    groups = np.where(speakers < 3, "corpus-a", "corpus-b")
    voice, emotion = np.eye(5)[1], np.eye(5)[3]
    rows = (
        rng.normal(0, 3, 6)[speakers, None] * voice  # each speaker's own offset
        + (emotions[:, None] - 1.5) * 2 * emotion
        + np.where(groups == "corpus-b", 5.0, 0.0)[:, None] * np.eye(5)[0]  # a corpus's offset
        + rng.normal(0, 0.1, (len(speakers), 5))
    ).astype(np.float32)

    found = speaker_directions(rows, speakers, emotions, groups, 1)

    assert found.shape == (1, 5)
    assert abs(found[0] @ voice) > 0.99  # neither the emotions' axis nor the corpora's
    many = speaker_directions(rows, speakers, emotions, groups, 10)
    assert len(many) == 5  # six speakers' offsets span at most five directions
    np.testing.assert_allclose(many @ many.T, np.eye(5), atol=1e-5)  # orthonormal, to float32 rounding
    assert len(speaker_directions(rows, speakers, emotions, groups, 0)) == 0


def test_with_speaker_directions_the_saved_head_ignores_them_and_loads_as_any_other(tiny_base, synthetic_ravdess, tmp_path):
    family = tiny_family(tiny_base, speaker_directions=2)
    train = family.prepare(load_ravdess(str(synthetic_ravdess)))
    result = family.fit(train, None, tmp_path / "model", resume=False)
    model = result.model.model
    clean = np.asarray(train.with_format("numpy")[STATISTICS_COLUMN])[:, 0]
    standardised = ((torch.from_numpy(clean) - model.input_mean) / model.input_std).numpy()
    directions = speaker_directions(standardised, np.asarray(train["actor"]), np.asarray(train["emotion"]), np.zeros(train.num_rows), 2)

    weight = model.classifier.weight.detach().numpy()
    assert directions.shape == (2, weight.shape[1])
    # Folded in, the projection leaves the weights no component along the directions: what is
    # left is float32 rounding of sums over the statistics' dimensions, far under 1e-4 of |W|.
    assert np.abs(weight @ directions.T).max() < 1e-4 * np.abs(weight).max()
    assert np.abs(weight).max() > 0  # the head learnt something
    loaded = load_model(str(tmp_path / "model"))
    clips = audio_arrays(train.select(range(4)))
    np.testing.assert_allclose(loaded.predict_batch(clips), result.model.predict_proba(clips), atol=1e-5)


def test_a_base_that_is_not_whisper_is_refused_before_any_audio_is_read(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor().save_pretrained(tmp_path)
    with pytest.raises(SERError, match="'wav2vec2' model; --base needs a speech encoder of the type whisper"):
        tiny_family(tmp_path)


def test_the_bundled_whisper_model_is_the_default_and_the_pipeline_gives_its_answers():
    model = load_model(BUNDLED_WHISPER)
    clips = [synth_clip(emotion, actor=1, sampling_rate=16_000, seed=emotion) for emotion in (0, 4)]
    clips.append(np.tile(clips[0], 2)[: 7 * 16_000])  # longer than the 5 s window: cut at its end

    from_library = model.predict_batch(clips)
    classifier = pipeline("audio-classification", model=BUNDLED_WHISPER, top_k=None)
    trims = json.loads(Path(BUNDLED_WHISPER, "config.json").read_text()).get(whisper.TRIM_SILENCE_KEY, False)
    for clip, row in zip(clips, from_library):
        heard = trim_silence(clip) if trims else clip  # what load_model pools over (model card)
        scores = {s["label"]: s["score"] for s in classifier({"raw": heard, "sampling_rate": 16_000})}
        np.testing.assert_allclose([scores[label] for label in model.labels], row, rtol=1e-4, atol=1e-6)
    assert DEFAULT_MODEL == BUNDLED_WHISPER  # it measured the higher UA on actors it never heard, as the CNN was measured
    assert measured_ua(BUNDLED_WHISPER, HELD_OUT_ACTORS) > measured_ua(BUNDLED_CNN, HELD_OUT_ACTORS)
    assert model.family == "whisper" and model.can_calibrate
