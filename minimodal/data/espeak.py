"""eSpeak NG through ctypes: text -> int16 PCM at 22,050 Hz, offline, deterministic.

The library and its voice data come from the PyPI package `espeakng-loader` (`pip install espeakng-loader`,
part of minimodal's dependencies), or from a system eSpeak NG (`apt-get install libespeak-ng1`) with
`$ESPEAK_NG_LIBRARY` / `$ESPEAK_NG_DATA` pointing at `libespeak-ng.so` and its `espeak-ng-data` folder.

eSpeak NG is used in its synchronous mode: `espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS)`, then
`espeak_Synth` returns once the whole utterance has been passed, chunk by chunk, to a synth callback.
The library keeps state between utterances in static variables (the pitch "flutter" index, the wave
phase): the same text said twice in one process gives different samples. `synthesize` therefore loads
a fresh copy of the library for every utterance (dlopen after dlclose, ~10 ms) and seeds its random
numbers, so an utterance is a pure function of (text, voice, rate, pitch, pitch range).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

SAMPLE_RATE = 22_050  # eSpeak NG's output rate (Hz)
_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4  # espeak_PARAMETER
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
WHERE_TO_GET_IT = ("install it with `pip install espeakng-loader` (the library and its voices, no download "
                   "at run time), or install eSpeak NG (`apt-get install libespeak-ng1 espeak-ng-data`) and set "
                   "ESPEAK_NG_LIBRARY=/path/to/libespeak-ng.so and ESPEAK_NG_DATA=/path/to/espeak-ng-data")


class ESpeakUnavailable(RuntimeError):
    """The eSpeak NG library or its voice data cannot be loaded; the message says where to get them."""


def library_paths() -> tuple[str, str]:
    """(shared library, espeak-ng-data folder): $ESPEAK_NG_LIBRARY / $ESPEAK_NG_DATA, else espeakng-loader's."""
    library, data = os.environ.get("ESPEAK_NG_LIBRARY"), os.environ.get("ESPEAK_NG_DATA")
    if not (library and data):
        try:
            import espeakng_loader
        except ImportError:
            raise ESpeakUnavailable(f"spoken_shapes needs the eSpeak NG speech synthesiser: {WHERE_TO_GET_IT}") \
                from None
        library = library or espeakng_loader.get_library_path()
        data = data or str(Path(espeakng_loader.get_library_path()).parent / "espeak-ng-data")
    for path, what in ((library, "library"), (data, "voice data folder")):
        if not Path(path).exists():
            raise ESpeakUnavailable(f"the eSpeak NG {what} {path} does not exist: {WHERE_TO_GET_IT}")
    return library, data


def _load(library: str, data: str) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(library)
    except OSError as error:
        raise ESpeakUnavailable(f"cannot load the eSpeak NG library {library} ({error}): {WHERE_TO_GET_IT}") \
            from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, data.encode(), 0)
    if rate != SAMPLE_RATE:
        _unload(lib)
        raise ESpeakUnavailable(f"eSpeak NG did not start with the voice data in {data} (espeak_Initialize "
                                f"returned {rate}): {WHERE_TO_GET_IT}")
    return lib


def _unload(lib: ctypes.CDLL) -> None:
    import _ctypes

    lib.espeak_Terminate()
    _ctypes.dlclose(lib._handle)


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50
               ) -> np.ndarray:
    """`text` spoken by eSpeak NG -> int16 (L,) at SAMPLE_RATE Hz.

    voice: an eSpeak voice name, optionally with a variant, e.g. "en-us", "en-gb-scotland+f3";
    rate: words per minute (80..450); pitch and pitch_range: 0..100 (50 = the voice's own).
    """
    if not text.strip():
        raise ValueError("synthesize needs non-empty text")
    for name, value, lo, hi in (("rate", rate, 80, 450), ("pitch", pitch, 0, 100),
                                ("pitch_range", pitch_range, 0, 100)):
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    chunks: list[np.ndarray] = []

    def collect(wav, n, _events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        return 0  # 0 = go on

    callback = _CALLBACK(collect)
    lib = _load(*library_paths())
    try:
        lib.espeak_ng_SetRandSeed(0)
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r} (names look like 'en-us' or 'en-us+f3')")
        for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            lib.espeak_SetParameter(parameter, int(value), 0)
        encoded = text.encode()
        status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"eSpeak NG failed to say {text!r} with voice {voice!r} (status {status})")
    finally:
        _unload(lib)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
