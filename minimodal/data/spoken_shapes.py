"""`spoken_shapes`: shapes captions spoken by eSpeak NG, synthesised offline — speech-to-text data with no download.

Example i of (seed, split) is a pure function of those three numbers: its caption is caption i of the
`shapes` data set (split "train", seed + SPLIT_SEED[split]; with `images=True` the picture it describes comes
too), and its speaker is drawn from numpy's `default_rng([seed, split_id, i])`:
    voice     an eSpeak NG English accent + a voice variant ("en-us+f2"), from the split's lists below
    rate      words per minute, uniform in the split's range
    pitch     uniform in [25, 75]; pitch range uniform in [25, 75]   (eSpeak's 0..100, 50 = the voice's own)
    loudness  peak amplitude uniform in [0.1, 0.9] of full scale
    silence   up to 0.3 s before the speech (the rest of the clip after it)
    noise     optional (`snr_db`): white Gaussian noise at that SNR over the speech
eSpeak speaks at 22,050 Hz; the speech is resampled to 16 kHz and zero-padded to `seconds` (default 4 s).

Splits:
    train    TRAIN_ACCENTS × TRAIN_VARIANTS, 140..220 words per minute
    test     the same voices and rates, other captions and draws
    holdout  TRAIN_ACCENTS × HOLDOUT_VARIANTS (voices never heard in training), at rates never heard either:
             125..135 or 225..260 words per minute
    unseen   UNSEEN_ACCENTS × UNSEEN_VARIANTS: accents and variants the training never used, 140..220 wpm

Examples: `waveforms` int16 (N, L), `captions` (N str), `objects` (shapes' attributes), `voices` and `rates`
(lists); with `images=True` also `images` uint8 (N, S, S, 3). Large requests (n >= CACHE_MIN) are synthesised
by one process per CPU core (each example depends on its index alone, so the split into chunks changes nothing)
and cached as .npz under $MINIMODAL_DATA (default ~/.cache/minimodal)/spoken_shapes, keyed by every argument.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from minimodal.audio import SAMPLE_RATE, resample, to_pcm
from minimodal.data import espeak, shapes

TRAIN_ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-029")
UNSEEN_ACCENTS = ("en-gb-scotland", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
TRAIN_VARIANTS = ("", "m1", "m2", "m3", "m4", "m6", "f1", "f2", "f4", "klatt", "klatt2", "klatt4", "Alex", "Andy",
                  "Annie", "adam", "anika", "aunty", "benjamin", "boris", "david", "ed", "edward", "grandpa",
                  "iven", "john", "linda", "max", "michel", "norbert", "paul", "quincy", "rob", "robert", "steph",
                  "travis", "victor", "zac")
HOLDOUT_VARIANTS = ("m5", "m7", "f3", "klatt3", "Alicia", "Gene", "Lee", "Mike", "ian", "belinda", "caleb",
                    "grandma")
UNSEEN_VARIANTS = ("m8", "f5", "klatt5", "Andrea", "Denis", "Hugo", "Jacky", "Michael", "antonio", "gustave",
                   "marcelo", "shelby")
TRAIN_RATES = ((140, 220),)
HOLDOUT_RATES = ((125, 135), (225, 260))  # slower than 125 wpm overflows a 4 s clip
SPLITS: dict[str, tuple[int, tuple[str, ...], tuple[str, ...], tuple[tuple[int, int], ...]]] = {
    # split: (id, accents, variants, rate ranges)
    "train": (0, TRAIN_ACCENTS, TRAIN_VARIANTS, TRAIN_RATES),
    "test": (1, TRAIN_ACCENTS, TRAIN_VARIANTS, TRAIN_RATES),
    "holdout": (2, TRAIN_ACCENTS, HOLDOUT_VARIANTS, HOLDOUT_RATES),
    "unseen": (3, UNSEEN_ACCENTS, UNSEEN_VARIANTS, TRAIN_RATES),
}
SPLIT_SEED = {"train": 0, "test": 1_000_003, "holdout": 2_000_003, "unseen": 3_000_017}
SECONDS = 4.0
MAX_LEAD_S = 0.3
CACHE_MIN = 1000
VERSION = 1  # bump when the synthesis changes, so stale caches are not used


def voice_name(accent: str, variant: str) -> str:
    return f"{accent}+{variant}" if variant else accent


def speaker(seed: int, split: str, index: int) -> dict[str, Any]:
    """The speaking parameters of example `index`: voice, rate, pitch, pitch_range, peak, lead (s), noise key."""
    split_id, accents, variants, rates = SPLITS[split]
    rng = np.random.default_rng([seed, split_id, index])
    lo, hi = rates[rng.integers(len(rates))]
    return {"voice": voice_name(accents[rng.integers(len(accents))], variants[rng.integers(len(variants))]),
            "rate": int(rng.integers(lo, hi + 1)), "pitch": int(rng.integers(25, 76)),
            "pitch_range": int(rng.integers(25, 76)), "peak": float(rng.uniform(0.1, 0.9)),
            "lead": float(rng.uniform(0, MAX_LEAD_S)), "noise_seed": int(rng.integers(2**31))}


def speak(text: str, params: dict[str, Any], length: int, snr_db: float | None = None) -> np.ndarray:
    """One utterance as float32 (length,) at 16 kHz: synthesised, resampled, scaled to its peak, placed after
    its leading silence (less if the clip would not fit), zero-padded; noise over the whole clip if asked."""
    pcm = espeak.synthesize(text, params["voice"], params["rate"], params["pitch"], params["pitch_range"])
    speech = resample(pcm.astype(np.float32) / 32768, espeak.SAMPLE_RATE, SAMPLE_RATE)
    if speech.size > length:
        raise ValueError(f"{text!r} said by {params['voice']} at {params['rate']} wpm lasts "
                         f"{speech.size / SAMPLE_RATE:.2f} s, more than the {length / SAMPLE_RATE:.2f} s clip; "
                         "ask for longer clips (seconds=...)")
    speech *= params["peak"] / max(float(np.abs(speech).max()), 1e-6)
    start = min(int(params["lead"] * SAMPLE_RATE), length - speech.size)
    clip = np.zeros(length, np.float32)
    clip[start:start + speech.size] = speech
    if snr_db is not None:  # SNR measured over the speech, the noise spread over the whole clip
        sigma = np.sqrt(np.mean(np.square(speech, dtype=np.float64)) / 10 ** (snr_db / 10))
        clip = clip + sigma * np.random.default_rng(params["noise_seed"]).standard_normal(length).astype(np.float32)
    return clip


def generate(n: int, seed: int = 0, split: str = "train", *, start: int = 0, seconds: float = SECONDS,
             snr_db: float | None = None, images: bool = False, image_size: int = 32, objects: int = 1
             ) -> dict[str, Any]:
    """Examples start .. start + n - 1 of a split (see the module doc)."""
    if split not in SPLITS:
        raise ValueError(f"spoken_shapes has splits {', '.join(SPLITS)}; got {split!r}")
    if n < 1 or start < 0:
        raise ValueError(f"need n >= 1 and start >= 0, got n={n}, start={start}")
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    scenes = shapes.generate(n, size=image_size, seed=seed + SPLIT_SEED[split], split="train", start=start,
                             objects=objects)
    length = int(round(seconds * SAMPLE_RATE))
    waveforms_NL = np.zeros((n, length), np.int16)
    voices, rates = [], []
    for k, caption in enumerate(scenes["captions"]):
        params = speaker(seed, split, start + k)
        waveforms_NL[k] = to_pcm(speak(caption, params, length, snr_db))
        voices.append(params["voice"])
        rates.append(params["rate"])
    out = {"waveforms": waveforms_NL, "captions": scenes["captions"], "objects": scenes["objects"],
           "voices": voices, "rates": rates}
    if images:
        out["images"] = scenes["images"]
    return out


def generate_parallel(n: int, seed: int = 0, split: str = "train", *, start: int = 0, workers: int | None = None,
                      **options: Any) -> dict[str, Any]:
    """`generate`, its examples shared out in contiguous chunks to `workers` processes (default: one per core)."""
    workers = min(workers or os.cpu_count() or 1, n)
    if workers == 1:
        return generate(n, seed, split, start=start, **options)
    bounds = [start + n * k // workers for k in range(workers + 1)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_chunk, [(b - a, seed, split, a, options) for a, b in zip(bounds, bounds[1:])]))
    return {k: np.concatenate([p[k] for p in parts]) if isinstance(parts[0][k], np.ndarray)
            else [x for p in parts for x in p[k]] for k in parts[0]}


def _chunk(arguments: tuple) -> dict[str, Any]:
    n, seed, split, start, options = arguments
    return generate(n, seed, split, start=start, **options)


def _cache_file(arguments: dict[str, Any]) -> Path:
    from minimodal.data.tfds_sources import default_cache_dir

    key = hashlib.sha256(json.dumps({"version": VERSION, **arguments}, sort_keys=True).encode()).hexdigest()[:16]
    return default_cache_dir() / "spoken_shapes" / f"{arguments['split']}-{arguments['n']}-{key}.npz"


def examples(split: str = "train", n: int | None = None, image_size: int = 32, seed: int = 0,
             **options: Any) -> dict[str, Any]:
    """The source-module interface of `minimodal.data.load_examples`: `generate` with n = 8,000 by default.
    Options: start, seconds, snr_db, images, objects."""
    allowed = {"start", "seconds", "snr_db", "images", "objects"}
    if set(options) - allowed:
        raise ValueError(f"unknown spoken_shapes option(s) {sorted(set(options) - allowed)}; "
                         f"spoken_shapes accepts {sorted(allowed)}")
    n = 8_000 if n is None else n
    if n < CACHE_MIN:
        return generate(n, seed, split, image_size=image_size, **options)
    arguments = {"split": split, "n": n, "seed": seed, "image_size": image_size, **options}
    path = _cache_file(arguments)
    if path.exists():
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            return {**{k: saved[k] for k in saved.files if k != "meta"}, **meta}
    out = generate_parallel(n, seed, split, image_size=image_size, **options)
    arrays = {k: v for k, v in out.items() if isinstance(v, np.ndarray)}
    meta = {k: v for k, v in out.items() if not isinstance(v, np.ndarray)}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, meta=np.array(json.dumps(meta)), **arrays)
    partial.rename(path)
    return out
