"""Training throughput and peak memory of the wav2vec2 family at wav2vec2-base size.

The model is the real wav2vec2-base architecture (`Wav2Vec2Config()` defaults: 7 convolutional
layers, 12 transformer layers of width 768), randomly initialised because weights need not be
downloaded to time them, under the family's head (weighted layer sum, 8 emotions) and frozen
as `--train-mode` says. Each step is a forward pass, backward pass and AdamW update on random
audio; data loading is not included. fp32 and bf16 (torch.autocast) are measured, and on a GPU
also with activation checkpointing, which training switches on there in encoder mode.

Every configuration runs in a fresh child process, so each peak-memory figure is its own:
torch.cuda.max_memory_allocated on a GPU, the process's peak resident memory (RSS) on a CPU.

    python -m benchmarks.wav2vec2_throughput                 # the device's default sizes
    python -m benchmarks.wav2vec2_throughput --batch-size 32 --clip-s 6 --steps 30
    OMP_NUM_THREADS=1 python -m benchmarks.wav2vec2_throughput   # CPU cores busy with other work
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time

import torch

from ser_train.audio import SAMPLING_RATE
from ser_train.data import EMOTIONS
from ser_train.models.wav2vec2 import HEAD_CONFIG, TRAIN_MODES, freeze


@dataclasses.dataclass(frozen=True)
class Sizes:
    batch_size: int  # clips per step
    clip_s: float  # seconds of audio per clip
    steps: int  # timed steps
    warmup_steps: int  # untimed steps first: they allocate memory and pick kernels


# On a GPU a batch as training uses (6 s is the longest training crop). On a CPU one short clip:
# without native bf16 instructions (AVX-512 BF16, AMX) a bf16 step can take over a minute, and
# the first step costs little more than the others.
DEFAULT_SIZES = {"cuda": Sizes(16, 6.0, 20, 3), "cpu": Sizes(1, 4.0, 1, 0)}
LEARNING_RATE = 5e-5  # the family's encoder-mode default; the value does not change the speed
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
BYTES_PER_GIB = 2**30
KIB_PER_GIB = 2**20  # ru_maxrss is in KiB on Linux


def measure(device: str, precision: str, checkpointing: bool, train_mode: str, sizes: Sizes) -> dict:
    """Time `sizes.steps` training steps after the warm-up; return the figures as a dict."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    model = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(num_labels=len(EMOTIONS), **HEAD_CONFIG))
    freeze(model, train_mode)
    if checkpointing:
        model.activation_checkpointing_enable()
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
    audio = torch.randn(sizes.batch_size, int(sizes.clip_s * SAMPLING_RATE), device=device)
    labels = torch.randint(len(EMOTIONS), (sizes.batch_size,), device=device)
    dtype = PRECISIONS[precision]

    def step() -> None:
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = model(audio, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(sizes.warmup_steps):
        step()
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _ in range(sizes.steps):
        step()
    synchronize()
    seconds = time.perf_counter() - start
    if device == "cuda":
        peak_gib = torch.cuda.max_memory_allocated() / BYTES_PER_GIB
    else:
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_GIB
    clips_per_s = sizes.batch_size * sizes.steps / seconds
    return {
        "precision": precision,
        "checkpointing": checkpointing,
        "clips_per_s": clips_per_s,
        "audio_s_per_s": clips_per_s * sizes.clip_s,
        "step_s": seconds / sizes.steps,
        "peak_gib": peak_gib,
    }


def measure_in_child(precision: str, checkpointing: bool, train_mode: str, sizes: Sizes) -> dict:
    """`measure` in a fresh Python process, so that its peak memory is its own."""
    job = [sys.executable, "-m", __spec__.name, "--child", f"{precision},{int(checkpointing)}"]
    job += ["--train-mode", train_mode, "--batch-size", str(sizes.batch_size), "--clip-s", str(sizes.clip_s)]
    job += ["--steps", str(sizes.steps), "--warmup-steps", str(sizes.warmup_steps)]
    output = subprocess.run(job, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(output.splitlines()[-1])


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    threads = torch.get_num_threads()
    return f"CPU ({threads} torch thread{'s' if threads > 1 else ''})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-mode", choices=TRAIN_MODES, default="encoder")
    parser.add_argument("--batch-size", type=int, help="clips per step (device default if omitted)")
    parser.add_argument("--clip-s", type=float, help="seconds of audio per clip (device default if omitted)")
    parser.add_argument("--steps", type=int, help="timed steps (device default if omitted)")
    parser.add_argument("--warmup-steps", type=int, help="untimed steps first (device default if omitted)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "precision,checkpointing": one measurement
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    overrides = {
        name: getattr(args, name)
        for name in ("batch_size", "clip_s", "steps", "warmup_steps")
        if getattr(args, name) is not None
    }
    sizes = dataclasses.replace(DEFAULT_SIZES[device], **overrides)
    if args.child:
        precision, checkpointing = args.child.split(",")
        print(json.dumps(measure(device, precision, checkpointing == "1", args.train_mode, sizes)))
        return

    print(
        f"wav2vec2-base (random init), train mode {args.train_mode}, on {device_name(device)}: "
        f"batch {sizes.batch_size} x {sizes.clip_s:g} s, timed steps {sizes.steps} after warm-up steps {sizes.warmup_steps}"
    )
    memory = "peak GPU memory" if device == "cuda" else "peak RSS"
    print(f"{'precision':<10}{'act. ckpt':>10}{'clips/s':>10}{'audio s/s':>11}{'s/step':>9}{memory:>17}")
    for checkpointing in [False, True] if device == "cuda" else [False]:
        for precision in PRECISIONS:
            row = measure_in_child(precision, checkpointing, args.train_mode, sizes)
            print(
                f"{precision:<10}{'on' if checkpointing else 'off':>10}{row['clips_per_s']:>10.2f}"
                f"{row['audio_s_per_s']:>11.2f}{row['step_s']:>9.2f}{row['peak_gib']:>13.2f} GiB"
            )


if __name__ == "__main__":
    main()
