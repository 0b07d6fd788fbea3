"""The assistant: latency per stage of one request (speech -> text -> command -> picture), and the end-to-end
accuracy over spoken draw requests with held-out voices, each failure charged to its stage.

    python bench/bench_assistant.py [--runs runs] [--n 96]

Needs runs/assistant and a generator (runs/ddpm or runs/dalle); runs/whisper for the spoken figures.
Results: bench/results/assistant.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from minimodal.assistant import Assistant, evaluate_chain
from minimodal.data import spoken_shapes


def latency(helper: Assistant, repeats: int = 5) -> dict[str, float]:
    """Median seconds per stage of one spoken request, after a warm-up (compilation) request."""
    request = "a small red circle at the top left"
    length = int(spoken_shapes.SECONDS * 16_000)
    clips = [spoken_shapes.speak(request, spoken_shapes.speaker(0, "holdout", i), length) for i in range(repeats + 1)]
    use_audio = helper.available("whisper")
    runs = [helper.ask(None if use_audio else request, audio=clip if use_audio else None, seed=i).seconds
            for i, clip in enumerate(clips)][1:]
    return {stage: statistics.median(r[stage] for r in runs) for stage in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--n", type=int, default=96)
    args = parser.parse_args()
    helper = Assistant(args.runs)
    print("one request, median of 5 (s):", json.dumps({k: round(v, 4) for k, v in latency(helper).items()}))
    spoken = helper.available("whisper")
    start = time.perf_counter()
    chain = evaluate_chain(helper, n=args.n, spoken=spoken)
    print(f"end to end ({'spoken, held-out voices' if spoken else 'typed'}), {args.n} draw requests, "
          f"{time.perf_counter() - start:.0f} s:")
    print(json.dumps({k: v for k, v in chain.items() if k != "examples"}, indent=1))
    typed = evaluate_chain(helper, n=args.n, spoken=False)
    print("the same captions typed:", json.dumps({"correct": typed["correct"], "errors": typed["errors"]}))


if __name__ == "__main__":
    main()
