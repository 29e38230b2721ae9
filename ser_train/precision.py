"""The numeric precision models run at: fp32, exactly as trained, or int8 for the Whisper family.

    fp32  every family, the exact path (training, `evaluate` and `load_model` use it by default)
    int8  the Whisper family's encoder with int8 linear layers, quantised when the model is loaded
          (`ser_train.models.whisper.quantize_encoder`); the CNN and wav2vec2 families have no
          int8 form and run at fp32 whatever is asked

`DEFAULT_PRECISION` is what the app (the page, `/predict`, live mode) and the CLI's `predict` and
`live` load models at; the environment variable SER_PRECISION overrides it. Issue #19's rule
decides it: int8 only if, on the bundled Whisper recipe's cross-validation folds, int8's mean
UA stays within 0.5 points of fp32's and the top emotion agrees on at least 99 % of RAVDESS
clips (`python -m benchmarks.int8_check RUN_DIR`). Measured, it does not (UA 1.5 points lower,
91 % agreement; README, Precision), so the default is fp32 and int8 is there to ask for.
This module imports nothing heavy, so the CLI's --help stays instant.
"""

from __future__ import annotations

import os

from ser_train.errors import ModelError

FP32 = "fp32"
INT8 = "int8"
PRECISIONS = (FP32, INT8)
PRECISION_ENV = "SER_PRECISION"

DEFAULT_PRECISION = os.environ.get(PRECISION_ENV, FP32)


def checked_precision(precision: str) -> str:
    """`precision` if it is one of PRECISIONS, else a ModelError naming the choices."""
    if precision not in PRECISIONS:
        raise ModelError(
            f"Precision '{precision}' is not one of {', '.join(PRECISIONS)} "
            f"(the environment variable {PRECISION_ENV} sets the app's)."
        )
    return precision
