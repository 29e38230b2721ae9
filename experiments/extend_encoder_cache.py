"""Issue #18 probe's shortcut: the encoder cache of a run over more corpora, from a cached run over
the first of them.

    PYTHONPATH=. .venv/bin/python experiments/extend_encoder_cache.py FIRST_CORPORA... --more MORE_CORPORA...

(the corpora as the run's `--dataset` names them, in its order: the first corpora, then the more)

`train whisper` caches the encoder's statistics of every clip and view under a key of the whole
dataset (`WhisperFamily._cache_key`), so adding corpora to a run encodes every clip again (about 75
minutes for the 7415 clips of six corpora in 7 views on this 2-core machine). A clip's views
depend only on its audio, the settings and its index in the dataset (`_encode_batch` seeds them by
(seed, index, view)), and corpora added after the first ones keep those clips' indices. So this
writes the larger run's cache where `datasets.map` will look for it: the first corpora's rows read
from their run's cache, the new corpora's rows encoded by the family's own `_encode_batch`. Before
that it encodes two batches of the old clips again and refuses to go on unless they match the
cached rows to within MAX_RELATIVE_DIFFERENCE of their largest value (float32 sums in another
order, as another CPU's kernels may take, move the last digits, not more). The defaults are those of `train whisper` with no
options, the bundled default's recipe. A probe's helper, not part of the package.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import datasets
import numpy as np

from ser_train.corpora import load_corpora
from ser_train.models import whisper
from ser_train.training.whisper import STATISTICS_COLUMN, WhisperFamily

CHECKED_BATCHES = 2
MAX_RELATIVE_DIFFERENCE = 1e-4  # float32 carries about 7 digits; accumulation order costs a few


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", nargs="+")
    parser.add_argument("--more", nargs="+", required=True)
    args = parser.parse_args()
    family = WhisperFamily()
    first = load_corpora(args.first)
    # Where `datasets.map` keeps (and looks for) its output under a fingerprint.
    cached = Path(first._get_cache_file_path(family._cache_key(first)))
    if not cached.exists():
        raise SystemExit(f"no cache of the first corpora at {cached}: run train whisper on them first")
    old = datasets.Dataset.from_file(str(cached)).with_format("numpy", columns=[STATISTICS_COLUMN])
    n_old = len(old)

    everything = load_corpora(args.first + args.more)
    assert everything.num_rows == n_old + load_corpora(args.more).num_rows
    batch = whisper.CLIPS_PER_FORWARD
    worst, largest = 0.0, 0.0
    for start in np.linspace(0, n_old - batch, CHECKED_BATCHES).astype(int):
        rows = list(range(start, start + batch))
        fresh = family._encode_batch(everything[rows[0] : rows[-1] + 1], rows)[STATISTICS_COLUMN]
        cached_rows = old[rows][STATISTICS_COLUMN]
        worst, largest = max(worst, float(np.abs(fresh - cached_rows).max())), max(largest, float(np.abs(cached_rows).max()))
    print(f"old rows encoded again: max |difference| {worst:.2e} (largest value {largest:.2e})", flush=True)
    if worst > MAX_RELATIVE_DIFFERENCE * largest:
        raise SystemExit("the old clips' statistics differ from their cache: not the same code, settings or clips")

    started = time.time()

    def statistics(rows: dict, indices: list[int]) -> dict:
        """The batch's rows: the old clips' (first, indices being in order) from their cache, the
        new clips' encoded."""
        old_count = sum(i < n_old for i in indices)
        parts = [old[indices[:old_count]][STATISTICS_COLUMN]] if old_count else []
        if old_count < len(indices):
            new = {column: values[old_count:] for column, values in rows.items()}
            parts.append(family._encode_batch(new, indices[old_count:])[STATISTICS_COLUMN])
            if indices[old_count] % 400 < batch:
                print(f"{indices[old_count] - n_old} new clips encoded, {time.time() - started:.0f} s", flush=True)
        return {STATISTICS_COLUMN: np.concatenate(parts)}

    key = family._cache_key(everything)
    everything.map(statistics, batched=True, batch_size=batch, with_indices=True, new_fingerprint=key, desc="statistics")
    print(f"the run's cache: {everything._get_cache_file_path(key)}")


if __name__ == "__main__":
    main()
