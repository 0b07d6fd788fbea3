"""`folder:PATH`: your own images (or spoken recordings) plus a captions file, as examples.

The folder holds image files (any format and mode PIL reads, in subfolders too) and exactly one of
- `captions.jsonl`: one JSON object per line, `{"file": "cat.jpg", "caption": "a cat on a mat"}`;
- `captions.csv`: a header row with columns `file` and `caption`, then one row per example.
`file` is relative to the folder; a file may be listed on several lines (one example per line).
Images become RGB (transparency over black), centre-cropped and resized to S x S.
A folder whose captions file lists WAV files is speech instead: each recording becomes a 16 kHz mono waveform
(any WAV rate and channel count; `minimodal.audio.read_wav`), zero-padded to the longest one, and the caption
is its transcript: examples `waveforms` int16 (N, L) and `captions`.
Splits: `test` holds the files whose name hashes (crc32) into the first `test_fraction` (default 0.1)
of the hash range, `train` the others, `all` every file; so a file keeps its split when others are added.

Every problem (a malformed line, a listed file that is missing or unreadable, an image without a
caption) is collected and reported in ONE `FolderDataError` that lists the offending files; with
`on_error="skip"` those examples are left out instead, with a warning that counts them.
"""

from __future__ import annotations

import csv
import json
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from minimodal.data.images import center_crop_resize, check_image_size

AUDIO_SUFFIXES = {".wav"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
CAPTION_FILES = ("captions.jsonl", "captions.csv")
MAX_LISTED = 20  # problems spelled out in an error message; the rest are counted


class FolderDataError(ValueError):
    """A folder of images that cannot be used as it is; the message lists every problem found."""


def _error(folder: Path, problems: list[str]) -> FolderDataError:
    listed = "\n".join(f"  - {p}" for p in problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return FolderDataError(
        f"{len(problems)} problem(s) with the image folder {folder}:\n{listed}{more}\n"
        "Fix these files, or load the folder with on_error='skip' to leave them out.")


def _format_help(name: str) -> str:
    if name.endswith(".jsonl"):
        return 'each line must be a JSON object like {"file": "cat.jpg", "caption": "a cat"}'
    return "the first row must be the header file,caption, then one file,caption row per example"


def read_captions(folder: Path) -> tuple[str, list[tuple[int, str, str]], list[str]]:
    """(captions file name, [(line number, file, caption)], problems with individual lines).

    A missing, doubled, non-UTF-8 or header-less captions file is an immediate `FolderDataError`.
    """
    present = [name for name in CAPTION_FILES if (folder / name).is_file()]
    if len(present) != 1:
        found = "neither" if not present else "both"
        raise FolderDataError(f"the image folder {folder} needs exactly one captions file, captions.jsonl or "
                              f"captions.csv; found {found}. In captions.jsonl "
                              f"{_format_help('.jsonl')}; in captions.csv {_format_help('.csv')}.")
    name = present[0]
    try:
        text = (folder / name).read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as e:
        raise FolderDataError(f"{folder / name} is not UTF-8 text ({e})") from e
    entries, problems = [], []
    if name.endswith(".jsonl"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{name} line {number}: not JSON ({e.msg}); {_format_help(name)}")
                continue
            entries.append((number, row.get("file") if isinstance(row, dict) else None,
                            row.get("caption") if isinstance(row, dict) else None))
    else:
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None or not {"file", "caption"} <= {f.strip() for f in reader.fieldnames}:
            raise FolderDataError(f"{folder / name} has header {reader.fieldnames}; {_format_help(name)}")
        for row in reader:
            row = {k.strip(): v for k, v in row.items() if k is not None}
            entries.append((reader.line_num, row.get("file"), row.get("caption")))
    good = []
    for number, file, caption in entries:
        if not isinstance(file, str) or not file.strip():
            problems.append(f"{name} line {number}: no 'file'; {_format_help(name)}")
        elif not isinstance(caption, str) or not caption.strip():
            problems.append(f"{file}: empty or missing caption ({name} line {number})")
        else:
            good.append((number, Path(file.strip()).as_posix(), " ".join(caption.split())))
    return name, good, problems


def _image_files(folder: Path, suffixes: set[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Image (or other `suffixes`) files under `folder`, hidden files (e.g. macOS '._x.jpg') excluded."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _load_recording(path: Path, _size: int) -> np.ndarray:
    from minimodal.audio import read_wav

    return read_wav(path)


def split_of(file: str, test_fraction: float) -> str:
    """'test' if crc32(file) / 2^32 < test_fraction, else 'train': stable, independent of the other files."""
    return "test" if zlib.crc32(file.encode("utf-8")) < test_fraction * 2**32 else "train"


def load_image(path: Path, size: int) -> np.ndarray:
    """One image file -> uint8 (size, size, 3): EXIF rotation applied, RGB, centre-cropped, resized."""
    with Image.open(path) as image:
        return center_crop_resize(ImageOps.exif_transpose(image), size)


def examples(split: str = "train", n: int | None = None, image_size: int = 32, seed: int = 0, *,
             path: str | Path, on_error: str = "raise", test_fraction: float = 0.1) -> dict[str, Any]:
    """The first n examples (all if None) of `split` ('train', 'test' or 'all'), in captions-file order.

    Returns images uint8 (n, S, S, 3) (or, for recordings, waveforms int16 (n, L)) and captions.
    `seed` is unused (nothing here is random).
    """
    size = check_image_size(image_size)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
    if split not in ("train", "test", "all"):
        raise ValueError(f"a folder of images has splits 'train', 'test' and 'all'; got {split!r}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction!r}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FolderDataError(f"the image folder {folder} does not exist or is not a directory")
    name, entries, problems = read_captions(folder)
    speech = bool(entries) and all(Path(file).suffix.lower() in AUDIO_SUFFIXES for _, file, _ in entries)
    if not speech and any(Path(file).suffix.lower() in AUDIO_SUFFIXES for _, file, _ in entries):
        raise FolderDataError(f"{folder / name} lists both WAV recordings and images: a folder holds one or the "
                              "other")
    load, kind = (_load_recording, "recording") if speech else (load_image, "image")
    captioned = {(folder / file).resolve() for _, file, _ in entries}
    problems += [f"{p.relative_to(folder).as_posix()}: no caption in {name}"
                 for p in _image_files(folder, AUDIO_SUFFIXES if speech else IMAGE_SUFFIXES)
                 if p.resolve() not in captioned]
    if split != "all":
        entries = [e for e in entries if split_of(e[1], test_fraction) == split]
    decoded: dict[str, np.ndarray | None] = {}  # file -> image, None if unusable (reported once)
    images, captions = [], []
    for number, file, caption in entries:
        if n is not None and len(images) == n:
            break
        if file not in decoded:
            decoded[file] = None
            if not (folder / file).is_file():
                problems.append(f"{file}: no such file ({name} line {number})")
            else:
                try:
                    decoded[file] = load(folder / file, size)
                except Exception as e:  # PIL and scipy raise many types for bad files; report each, never crash
                    problems.append(f"{file}: unreadable {kind} ({type(e).__name__}: {e})")
        if decoded[file] is not None:
            images.append(decoded[file])
            captions.append(caption)
    if problems:
        if on_error == "raise":
            raise _error(folder, problems)
        warnings.warn(f"image folder {folder}: skipped {len(problems)} problem(s), e.g. {problems[0]}; "
                      f"using {len(images)} examples", stacklevel=2)
    if not images:
        raise FolderDataError(f"the folder {folder} has no usable captioned {kind}s in its {split!r} split"
                              f" (test_fraction={test_fraction}); try split='all'")
    if speech:
        from minimodal.audio import to_pcm

        waveforms_NL = np.zeros((len(images), max(x.size for x in images)), np.int16)
        for k, x in enumerate(images):
            waveforms_NL[k, :x.size] = to_pcm(x)
        return {"waveforms": waveforms_NL, "captions": captions}
    return {"images": np.stack(images), "captions": captions}
