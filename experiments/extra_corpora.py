"""Issue #18 probe: more corpora, converted to the manifest layout every `--dataset` option reads.

    PYTHONPATH=. .venv/bin/python experiments/extra_corpora.py urdu SOURCE OUTPUT

SOURCE is the folder of a public corpus's audio in a checkout of its GitHub repository (the
workplace's `fetch`, then `git clone` of the mirror):
    emodb  zhufeiyao/Berlin-Database-of-Emotional-Speech_2020 at commit 0ab7cbe (the newest
           commit holds a README only), download/wav
    urdu   siddiquelatif/URDU-Dataset, the repository's root
    turev  Xeonen/TurEV-DB, "Sound Source"
    nemo   amu-cai/nEMO, the repository's root
    ased   Ethio2021/ASED_V1, the repository's root
OUTPUT gets `<speaker>/<file>.opus` (16 kHz mono Ogg Opus at 24 kbit/s, as the corpora in
../shared/data), `manifest.csv` (path, emotion, speaker), `label_map.json` and a README with the
corpus's licence and citation. OUTPUT stays outside the repository. A probe's helper, not part of
the package.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile

from ser_train.audio import MIN_DURATION_S  # the shortest audio ser_train reads

OPUS_BITRATE = "24k"  # as ../shared/data's corpora
SAMPLE_RATE_HZ = 16000

URDU_README = """# URDU (Urdu emotional speech from talk shows), 16 kHz mono Opus

400 utterances of Urdu speech taken from YouTube talk shows, 100 each of angry (`A`), happy (`H`),
neutral (`N`) and sad (`S`), by 29 speaker IDs (`SM*` male, `SF*` female). Natural, not acted:
broadcast talk, other rooms and microphones than the acted corpora.

Converted from the 44.1 kHz mono WAV of github.com/siddiquelatif/URDU-Dataset: mono, 16 kHz,
Ogg Opus at 24 kbit/s, the same encoding as ../shared/data's corpora.

License: "Anyone can use this data only for research purposes."
Cite: Latif S, Qayyum A, Usman M, Qadir J (2018) Cross Lingual Speech Emotion Recognition: Urdu
vs. Western Languages. FIT 2018. https://arxiv.org/abs/1812.10411
Do not copy these files into the project repository.
"""


def urdu_clips(source: Path):
    """(wav, emotion code, speaker) of every clip: files are <speaker>_F<nn>_<emotion><nn>.wav."""
    for wav in sorted(source.glob("*/*.wav")):
        speaker, _, emotion = wav.stem.split("_")
        yield wav, emotion[0], speaker


EMODB_README = """# EmoDB (Berlin Database of Emotional Speech), 16 kHz mono Opus

All 535 utterances of EmoDB: 10 actors (5 female, 5 male; speaker IDs 03-16) reading 10 German
sentences in anger (`W`), boredom (`L`), disgust (`E`), fear (`A`), happiness (`F`), sadness (`T`)
and neutral (`N`), recorded in the anechoic chamber of TU Berlin. Boredom has no counterpart among
our eight emotions; `label_map.json` maps it to null, which leaves those 81 clips out.

Converted from the 16 kHz WAV of the original release (as committed in
github.com/zhufeiyao/Berlin-Database-of-Emotional-Speech_2020, download/wav): Ogg Opus at 24
kbit/s, the same encoding as ../shared/data's corpora.

License: made freely available by its authors (emodb.bilderbar.info) for research use, with citation;
no licence file comes with the release, so treat it as research use only.
Cite: Burkhardt F, Paeschke A, Rolfes M, Sendlmeier W, Weiss B (2005) A Database of German
Emotional Speech. Proceedings of Interspeech 2005, 1517-1520.
Do not copy these files into the project repository.
"""


def emodb_clips(source: Path):
    """(wav, emotion code, speaker) of every clip: files are <speaker:2><text:3><emotion:1><version>.wav."""
    for wav in sorted(source.glob("*.wav")):
        yield wav, wav.stem[5], wav.stem[:2]


TUREV_README = """# TurEV-DB (Turkish Emotion Voice Database), 16 kHz mono Opus

1735 single Turkish words (82 words) spoken by 6 actors (IDs 1157, 1234, 1358, 1984, 6783, 7895)
in four emotions: angry (`kz`, kizgin), calm (`sk`, sakin), happy (`mt`, mutlu) and sad (`hl`,
huzunlu); the 2 clips under 0.5 s (the shortest audio `ser_train` reads) are left out. Layout: `<speaker>/<speaker>_<emotion>_<word>.opus`.

Converted from the WAV files of github.com/Xeonen/TurEV-DB (`Sound Source/`): mono, 16 kHz, Ogg
Opus at 24 kbit/s, the same encoding as ../shared/data's corpora.

License: Creative Commons Attribution-NonCommercial-NoDerivatives 4.0 International (CC BY-NC-ND 4.0).
Cite: Canpolat SF, Ormanoglu Z, Zeyrek D (2020) Turkish Emotion Voice Database (TurEV-DB).
Proceedings of SLTU-CCURL 2020, 368-375.
Do not copy these files into the project repository.
"""


def turev_clips(source: Path):
    """(wav, emotion code, speaker) of every clip: files are <emotion folder>/<speaker>_<code>_<word>.wav."""
    for wav in sorted(source.glob("*/*.wav")):
        speaker, emotion, _ = wav.stem.split("_", 2)
        if soundfile.info(wav).duration >= MIN_DURATION_S:
            yield wav, emotion, speaker


NEMO_README = """# nEMO (emotional speech in Polish), 16 kHz mono Opus

4481 utterances of 9 actors (speaker IDs EB0, IC0, KD0, KS0, MK0, MP0, SM0, TP0, WR0; 4 female,
5 male, aged 20-30) reading Polish sentences in anger, fear, happiness, sadness, surprise and a
neutral state, about 2 s each. Layout: `<speaker>/<speaker>_<emotion>_<sentence>.opus`.

Converted from the 24 kHz WAV of github.com/amu-cai/nEMO (commit 66de999, `samples/`): mono,
16 kHz, Ogg Opus at 24 kbit/s, the same encoding as ../shared/data's corpora; clips under 0.5 s
(the shortest audio `ser_train` reads) left out.

License: Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International (CC BY-NC-SA 4.0).
Cite: Christop I (2024) nEMO: Dataset of Emotional Speech in Polish. Proceedings of LREC-COLING
2024, 12111-12116.
Do not copy these files into the project repository.
"""


def nemo_clips(source: Path):
    """(wav, emotion, speaker) of every clip: files are samples/<speaker>_<emotion>_<sentence>.wav."""
    for wav in sorted(source.glob("samples/*.wav")):
        speaker, emotion, _ = wav.stem.split("_")
        if soundfile.info(wav).duration >= MIN_DURATION_S:
            yield wav, emotion, speaker


ASED_README = """# ASED (Amharic Speech Emotion Dataset) v1, 16 kHz mono Opus

2474 utterances of Amharic sentences by 65 speakers (25 female, 40 male), recorded by each
participant at a time and place of their choosing, in their own dialect, in five emotions:
neutral (`n`), fearful (`f`), happy (`h`), sad (`s`) and angry (`a`); about 3 s each. Only
recordings that at least five of eight judges accepted are in the corpus. Layout:
`<speaker>/<file>.opus`; the speaker is the last field of the file name (01-65; a few files
carry the other gender code than the rest of their speaker's, so the gender field is not used).

Converted from the 16 kHz WAV of github.com/Ethio2021/ASED_V1 (commit 30fee03): Ogg Opus at 24
kbit/s, the same encoding as ../shared/data's corpora.

License: none stated; the authors ask that the article below be cited. Treat it as research use
only.
Cite: Retta EA, Almekhlafi E, Sutcliffe R, Mhamed M, Ali H, Feng J (2022) A New Amharic Speech
Emotion Dataset and Classification Benchmark. ACM Transactions on Asian and Low-Resource Language
Information Processing. https://doi.org/10.1145/3529759
Do not copy these files into the project repository.
"""


def ased_clips(source: Path):
    """(wav, emotion letter, speaker) of every clip: files are <emotion><folder>-<sentence>-<take>-<gender>-<speaker>.wav."""
    for wav in sorted(source.glob("*/*.wav")):
        fields = wav.stem.split("-")
        if soundfile.info(wav).duration >= MIN_DURATION_S:
            yield wav, fields[0][0].lower(), fields[4]


CORPORA = {
    "urdu": (urdu_clips, {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}, URDU_README),
    "turev": (turev_clips, {"kz": "angry", "sk": "calm", "mt": "happy", "hl": "sad"}, TUREV_README),
    "emodb": (emodb_clips, {"W": "angry", "L": None, "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral"}, EMODB_README),
    "nemo": (nemo_clips, {"anger": "angry", "fear": "fearful", "happiness": "happy", "neutral": "neutral", "sadness": "sad", "surprised": "surprised"}, NEMO_README),
    "ased": (ased_clips, {"n": "neutral", "f": "fearful", "h": "happy", "s": "sad", "a": "angry"}, ASED_README),
}


def to_opus(wav: Path, opus: Path) -> None:
    opus.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-ac", "1", "-ar", str(SAMPLE_RATE_HZ),
                    "-c:a", "libopus", "-b:a", OPUS_BITRATE, str(opus)], check=True)


def convert(name: str, source: Path, output: Path) -> None:
    clips, label_map, readme = CORPORA[name]
    rows = [(f"{speaker}/{wav.stem}.opus", emotion, speaker, wav) for wav, emotion, speaker in clips(source)]
    if not rows:
        raise SystemExit(f"No {name} clips under {source}: pass the folder named in this script's docstring.")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda row: to_opus(row[3], output / row[0]), rows))
    with open(output / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "emotion", "speaker"])
        writer.writerows(row[:3] for row in rows)
    (output / "label_map.json").write_text(json.dumps(label_map))
    (output / "README.md").write_text(readme)
    print(f"{name}: {len(rows)} clips, {len({row[2] for row in rows})} speakers -> {output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=sorted(CORPORA))
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    convert(args.corpus, args.source, args.output)


if __name__ == "__main__":
    main()
