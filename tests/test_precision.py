"""Int8 inference: the quantised Whisper encoder against the error its rounding allows, the
precision option from the CLI to the model, calibration at int8, no pickles, and the int8 check
tool on a real (tiny) cross-validation run."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from benchmarks import int8_check
from ser_train import cli
from ser_train.audio import SAMPLING_RATE
from ser_train.confidence import with_temperature
from ser_train.errors import ModelError, SERError
from ser_train.inference import BUNDLED_CNN, BUNDLED_WHISPER, load_model
from ser_train.models.whisper import EmotionWhisper
from ser_train.precision import DEFAULT_PRECISION, FP32, INT8, PRECISION_ENV
from ser_train.training import runner
from synthetic import synth_clip
from test_whisper import tiny_base, tiny_family  # noqa: F401 (tiny_base is a fixture)

# The input of an int8 linear layer is rounded to at least 2**7 levels spanning its range on each
# call (7 bits on x86, where fbgemm reduces the range; 8 on ARM), and a rounding zero point can
# put an extreme value one whole step from its level, hence one step, not half, per element.
ACTIVATION_LEVELS = 2**7 - 1
FP32_EPSILON = float(np.finfo(np.float32).eps)
# Over all 1440 RAVDESS clips, each judged by a fold model that never heard its speaker, int8
# overturned answers whose fp32 top emotion led the runner-up by up to 0.73 in probability
# (benchmarks/int8_check.py, "largest_fp32_lead_changed"), none leading by more. Rounding is the
# same on every x86 CPU (only float summation order differs), so a lead of 0.9 must survive.
DECISIVE_LEAD = 0.9


def clips(count: int = 6) -> list[np.ndarray]:
    return [synth_clip(emotion, actor=2, sampling_rate=16_000, seed=emotion, duration_s=3.5) for emotion in range(count)]


@pytest.fixture(scope="module")
def whisper_pair() -> dict[str, EmotionWhisper]:
    return {precision: EmotionWhisper.from_pretrained(BUNDLED_WHISPER, precision) for precision in (FP32, INT8)}


def test_every_int8_linear_layer_stays_within_the_error_its_rounding_allows(whisper_pair):
    """Each quantised layer's output on the encoder's real activations, against the fp32 layer on
    the same input: weights rounded to their scale (at most half a step each) and the input
    rounded to its dynamic range (at most a step each) bound the difference, per output."""
    fp32_layers = {name: module for name, module in whisper_pair[FP32].model.encoder.named_modules() if isinstance(module, nn.Linear)}
    int8_layers = {name: module for name, module in whisper_pair[INT8].model.encoder.named_modules() if isinstance(module, DynamicQuantizedLinear)}
    assert set(int8_layers) == set(fp32_layers) and len(int8_layers) == 6 * 6  # q, k, v, out, fc1, fc2 per layer
    assert type(whisper_pair[INT8].model.classifier) is nn.Linear  # the head stays fp32

    seen = {}
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (i[0], o))) for name, module in int8_layers.items()]
    try:
        whisper_pair[INT8].statistics(clips(1))
    finally:
        for hook in hooks:
            hook.remove()

    for name, (inputs, outputs) in seen.items():
        fp32_layer, int8_layer = fp32_layers[name], int8_layers[name]
        weight, rounded = fp32_layer.weight.detach(), int8_layer.weight()
        weight_step = rounded.q_scale()
        # Half a step, give or take the float32 rounding of the dequantised value itself.
        assert (rounded.dequantize() - weight).abs().max() <= weight_step / 2 + 2 * FP32_EPSILON * weight.abs().max(), name
        input_step = (inputs.max().clamp_min(0) - inputs.min().clamp_max(0)) / ACTIVATION_LEVELS
        magnitude = inputs.abs() @ weight.abs().T  # what float summation errors scale with
        bound = (
            input_step * rounded.dequantize().abs().sum(dim=1)
            + weight_step / 2 * inputs.abs().sum(dim=-1, keepdim=True)
            + 2 * weight.shape[1] * FP32_EPSILON * magnitude
        )
        with torch.inference_mode():
            error = (outputs - fp32_layer(inputs)).abs()
        assert (error <= bound).all(), f"{name}: {(error / bound).max():.2f} of the bound"
        assert error.max() > 0, name  # the layer really runs in int8


def test_int8_keeps_every_decisive_answer_and_stays_a_distribution(whisper_pair):
    waveforms = [synth_clip(emotion, actor, 16_000, seed=emotion + 10 * actor, duration_s=3.5) for emotion in range(8) for actor in (2, 5)]
    waveforms.append(np.tile(waveforms[0], 2))  # a clip longer than the window, cut at its end
    fp32, int8 = (whisper_pair[precision].predict_proba(waveforms) for precision in (FP32, INT8))

    ranked = np.sort(fp32, axis=1)
    decisive = ranked[:, -1] - ranked[:, -2] > DECISIVE_LEAD
    assert decisive.sum() >= 3  # the check below is about real answers
    np.testing.assert_array_equal(int8[decisive].argmax(axis=1), fp32[decisive].argmax(axis=1))
    np.testing.assert_allclose(int8.sum(axis=1), 1, atol=1e-5)
    assert not np.array_equal(int8, fp32)


def test_the_precision_reaches_the_model_through_load_model():
    waveforms = clips(3)
    int8 = load_model(BUNDLED_WHISPER, precision=INT8)
    assert int8.precision == INT8 and load_model(BUNDLED_WHISPER).precision == FP32
    # load_model's answers are tempered by the model's measured temperature (config.json).
    direct = with_temperature(EmotionWhisper.from_pretrained(BUNDLED_WHISPER, INT8).predict_proba(waveforms), int8.temperature)
    assert int8.temperature != 1.0
    np.testing.assert_allclose(int8.predict_batch(waveforms), direct, rtol=0, atol=1e-6)

    # The CNN has no int8 form: asked for it, it runs and says fp32.
    cnn_int8, cnn = load_model(BUNDLED_CNN, precision=INT8), load_model(BUNDLED_CNN)
    assert cnn_int8.precision == FP32
    np.testing.assert_array_equal(cnn_int8.predict_batch(waveforms), cnn.predict_batch(waveforms))
    with pytest.raises(ModelError, match="Precision 'int4' is not one of fp32, int8"):
        load_model(BUNDLED_WHISPER, precision="int4")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["predict", "speech.wav"], DEFAULT_PRECISION),
        (["predict", "speech.wav", "--precision", "fp32"], FP32),
        (["live", "speech.wav"], DEFAULT_PRECISION),
        (["live", "speech.wav", "--precision", "int8"], INT8),
        (["evaluate", "--model", "m", "--output-dir", "out"], FP32),
        (["evaluate", "--model", "m", "--output-dir", "out", "--precision", "int8"], INT8),
    ],
)
def test_the_cli_passes_its_precision_to_load_model(arguments, expected, monkeypatch, tmp_path, capsys):
    import ser_train.inference

    asked = []

    def load_model_stub(name, precision):
        asked.append(precision)
        raise SERError("stopped after loading")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ser_train.inference, "load_model", load_model_stub)
    tone = 0.3 * np.sin(np.linspace(0, 2000, 2 * SAMPLING_RATE))
    soundfile.write(tmp_path / "speech.wav", tone, SAMPLING_RATE)  # `live` reads its file before the model
    assert cli.main(arguments) == cli.EXIT_USER_ERROR
    assert asked == [expected]
    assert "stopped after loading" in capsys.readouterr().err


def test_ser_precision_sets_the_default_and_fp32_is_the_default_otherwise():
    def default_with(environment: dict) -> str:
        code = "from ser_train.precision import DEFAULT_PRECISION; print(DEFAULT_PRECISION)"
        env = {key: value for key, value in os.environ.items() if key != PRECISION_ENV}
        return subprocess.run([sys.executable, "-c", code], env={**env, **environment}, capture_output=True, text=True, check=True).stdout.strip()

    assert default_with({}) == FP32  # issue #19's rule does not hold for int8 (README, Precision)
    assert default_with({PRECISION_ENV: INT8}) == INT8


def test_calibration_works_at_int8_and_a_calibration_carries_across_precisions():
    speaker = [synth_clip(emotion, actor=3, sampling_rate=16_000, seed=10 + emotion, duration_s=3.5) for emotion in range(8)]
    int8, fp32 = load_model(BUNDLED_WHISPER, precision=INT8), load_model(BUNDLED_WHISPER)
    assert int8.can_calibrate

    calibration = int8.calibrate(speaker[:4], source="speech")
    calibrated = int8.predict_batch(speaker[4:], calibration=calibration)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1, atol=1e-5)
    assert not np.allclose(calibrated, int8.predict_batch(speaker[4:]), atol=1e-3)
    # The training speakers' statistics are fp32 buffers at both precisions, so a calibration
    # made with one precision (e.g. before a restart with SER_PRECISION changed) applies to the other.
    from_fp32 = fp32.predict_batch(speaker[4:], calibration=calibration)
    np.testing.assert_allclose(from_fp32.sum(axis=1), 1, atol=1e-5)


def test_loading_at_int8_unpickles_nothing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    model = load_model(BUNDLED_WHISPER, precision=INT8)
    assert model.predict_batch(clips(1)).shape == (1, len(model.labels))


# --- The decision rule's check on a finished cross-validation run --------------------------------


@pytest.fixture(scope="module")
def tiny_cv_run(tiny_base, synthetic_ravdess, tmp_path_factory):  # noqa: F811 (tiny_base is the imported fixture)
    output_dir = tmp_path_factory.mktemp("whisper-cv")
    runner.run(tiny_family(tiny_base), str(synthetic_ravdess), output_dir, num_folds=2, command=["test"])
    return output_dir


@pytest.mark.slow
def test_int8_check_reproduces_the_runs_fp32_figures_and_judges_int8(tiny_cv_run, tmp_path, capsys):
    output = tmp_path / "check.json"
    assert int8_check.main([str(tiny_cv_run), "--fitted-window", "--output", str(output)]) == 0
    results = json.loads(output.read_text())

    recorded = json.loads((tiny_cv_run / "eval_results.json").read_text())["folds"]
    for fold, training in zip(results["folds"], recorded, strict=True):
        assert fold["test_actors"] == training["test_actors"]
        # Judged from the audio through load_model, as training judged its cached statistics.
        assert fold["ua"][FP32] == pytest.approx(training["metrics"]["balanced_accuracy"], abs=1e-9)
        assert set(fold["ua"]) == {FP32, INT8, f"{FP32}, {int8_check.FITTED}", f"{INT8}, {int8_check.FITTED}"}
    assert results["clips"] == sum(fold["clips"] for fold in results["folds"]) == 6 * 8 * 2  # every clip once
    mean = results["mean_ua"]
    holds = abs(mean[INT8] - mean[FP32]) <= int8_check.UA_TOLERANCE and results["agreement_with_fp32"][INT8] >= int8_check.MIN_AGREEMENT
    assert results["rule_holds"] == holds
    assert 0 <= min(results["agreement_with_fp32"].values()) <= max(results["agreement_with_fp32"].values()) <= 1
    printed = capsys.readouterr().out
    assert "mean UA over folds" in printed and str(output) in printed


def test_int8_check_refuses_a_run_that_is_not_whisper_cross_validation(tmp_path):
    (tmp_path / runner.TRAINING_ARGS_FILE).write_text(json.dumps({"family": "cnn", "splits": [], "dataset": "x"}))
    with pytest.raises(SERError, match="int8 applies to Whisper models"):
        int8_check.run_folds(tmp_path)
    assert int8_check.main([str(tmp_path / "missing")]) == 2


def test_fitted_windows_are_whole_seconds_covering_the_clip_up_to_the_models_window():
    second = 16_000
    assert [int8_check.fitted_window_s(np.zeros(n), 5) for n in (1, second, second + 1, 4 * second, 7 * second)] == [1, 1, 2, 4, 5]
