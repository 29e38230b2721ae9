"""Small synthetic RAVDESS look-alikes, so tests never need the real (licensed) corpus.

Each emotion gets its own voice: a harmonic tone whose pitch, loudness, brightness, vibrato and
syllable rate depend on the emotion, with a little per-actor variation and noise. The classes
really differ, so a model that learns anything beats chance on held-out actors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from ser_train.data import EMOTIONS

CLIP_DURATION_S = 1.5


def synth_clip(emotion: int, actor: int, sampling_rate: int, seed: int, duration_s: float = CLIP_DURATION_S) -> np.ndarray:
    """A float32 mono clip whose acoustics encode `emotion` (0-based index into EMOTIONS)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sampling_rate)) / sampling_rate
    f0 = 110.0 + 22.0 * emotion + 6.0 * (actor % 3) + rng.normal(0, 2)
    vibrato = 1.0 + (0.01 + 0.006 * emotion) * np.sin(2 * np.pi * (3 + emotion) * t)
    phase = 2 * np.pi * np.cumsum(f0 * vibrato) / sampling_rate
    brightness = 0.25 + 0.08 * emotion  # weight of the upper harmonics
    voice = sum(brightness ** (k - 1) * np.sin(k * phase) for k in range(1, 7))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * (2.0 + 0.5 * emotion) * t) ** 2
    loudness = 0.05 + 0.03 * emotion
    noise = rng.normal(0, 0.004 + 0.002 * (emotion % 4), t.size)
    clip = loudness * syllables * voice / np.max(np.abs(voice)) + noise
    return clip.astype(np.float32)


def ravdess_name(emotion: int, actor: int, statement: int = 1, repetition: int = 1, intensity: int = 1, vocal_channel: int = 1, extension: str = "wav") -> str:
    """Official file name for a clip; `emotion` is the 0-based index."""
    if emotion == 0:
        intensity = 1  # RAVDESS has no strong neutral
    return f"03-{vocal_channel:02d}-{emotion + 1:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}.{extension}"


# (extension, soundfile format, subtype, sampling rate): the mix of formats and rates a folder holds
FORMATS = (
    ("wav", "WAV", "PCM_16", 48_000),
    ("flac", "FLAC", "PCM_16", 16_000),
    ("opus", "OGG", "OPUS", 48_000),
    ("wav", "WAV", "PCM_16", 16_000),
)


def make_ravdess_folder(
    root: Path,
    actors: tuple[int, ...] = (1, 2, 3, 4, 5, 6),
    statements: tuple[int, ...] = (1, 2),
    intensities: tuple[int, ...] = (1,),
    mixed_formats: bool = True,
    stereo_file: bool = True,
) -> Path:
    """Write a RAVDESS-layout folder (Actor_XX/...) and return it.

    With `mixed_formats`, files cycle through WAV/FLAC/Opus at 48 and 16 kHz; with
    `stereo_file`, the first clip is written as two channels.
    """
    index = 0
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for emotion in range(len(EMOTIONS)):
            for statement in statements:
                for intensity in intensities:
                    if emotion == 0 and intensity == 2:
                        continue
                    extension, file_format, subtype, rate = FORMATS[index % len(FORMATS)] if mixed_formats else FORMATS[3]
                    clip = synth_clip(emotion, actor, rate, seed=index)
                    if stereo_file and index == 0:
                        clip = np.stack([clip, clip * 0.8], axis=1)
                    name = ravdess_name(emotion, actor, statement, intensity=intensity, extension=extension)
                    soundfile.write(folder / name, clip, rate, format=file_format, subtype=subtype)
                    index += 1
    return root


def make_manifest_corpus(
    root: Path,
    labels: dict[str, int],
    speakers: tuple[str, ...] = ("spk1", "spk2", "spk3", "spk4"),
    clips_per_label: int = 2,
    label_map: dict | None = None,
    splits: dict[str, str] | None = None,
    clip_duration_s: float = CLIP_DURATION_S,
) -> Path:
    """A corpus folder as another lab would ship it: audio under wav/, manifest.csv, label_map.json.

    `labels` maps the corpus's own label spellings to the emotion (index into EMOTIONS) whose
    voice its clips get; `splits` optionally gives each speaker a split.
    """
    import csv
    import json
    import zlib

    (root / "wav").mkdir(parents=True, exist_ok=True)
    with (root / "manifest.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "emotion", "speaker"] + (["split"] if splits else []))
        for number, speaker in enumerate(speakers):
            for label, emotion in labels.items():
                for take in range(clips_per_label):
                    path = f"wav/{speaker}_{label}_{take}.wav"
                    clip = synth_clip(emotion, number, 16_000, seed=zlib.crc32(path.encode()), duration_s=clip_duration_s)
                    soundfile.write(root / path, clip, 16_000)
                    writer.writerow([path, label, speaker] + ([splits[speaker]] if splits else []))
    if label_map is not None:
        (root / "label_map.json").write_text(json.dumps(label_map))
    return root
