"""Whisper transcription speed: real-time factor, greedy vs beam, with and without the KV cache.

    flock /tmp/minimodal-cpu.lock .venv/bin/python bench/bench_whisper.py [WORKDIR] [key=value ...]

Real-time factor (RTF) = seconds of compute / seconds of audio, for a batch of 4 s clips of spoken_shapes'
`test` split, the whole compiled transcription timed (log-mel, encoder, decoding loop; the best of 3 after
a compiling call). With a trained WORKDIR (default runs/whisper, if present) the model stops at each
utterance's EOS as it would in use; without one, random weights of the default config decode all T - 1 steps
(the worst case). The cached decoders run one position per step against the self-attention cache and the
cross-attention keys/values projected once; the uncached ones re-run the decoder over the whole prefix.
Prints a markdown table; the recorded results are in bench/results/whisper.md.
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import date
from pathlib import Path

import jax
import numpy as np
from flax import nnx

import minimodal
from minimodal import whisper
from minimodal.config import override
from minimodal.data import spoken_shapes
from timing import best_of  # bench/timing.py (scripts run as python bench/...)


class _Vocab:
    vocab_size = 64


def main(argv: list[str]) -> None:
    workdir = Path(argv[0]) if argv and "=" not in argv[0] else Path("runs/whisper")
    overrides = [a for a in argv if "=" in a]
    if (workdir / "run.json").exists():
        pipe = minimodal.load(workdir)
        model, config, source = pipe.model, pipe.config, f"trained model in {workdir}"
    else:
        config = override(whisper.PRESETS["default"], overrides)
        model, source = whisper.build(config, _Vocab(), nnx.Rngs(0)), "random weights (decodes every step)"
    print(f"{date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__}; {source}")
    print("\n| batch | decoder | KV cache | s per batch | RTF | speed-up from the cache |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch in (1, 32):
        clips = spoken_shapes.generate(batch, seed=0, split="test", seconds=config.audio_seconds)
        waveforms_BL = clips["waveforms"].astype(np.float32) / 32768
        audio_s = batch * config.audio_seconds
        for beam in (1, 4):
            seconds = {}
            for cached in (True, False):
                seconds[cached] = best_of(lambda: whisper.decode_tokens(model, waveforms_BL, beam_size=beam,
                                                                        cached=cached))
            for cached in (True, False):
                speedup = f"{seconds[False] / seconds[True]:.2f}×" if cached else ""
                print(f"| {batch} | {'greedy' if beam == 1 else f'beam {beam}'} | {'yes' if cached else 'no'} | "
                      f"{seconds[cached]:.3f} | {seconds[cached] / audio_s:.4f} | {speedup} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
