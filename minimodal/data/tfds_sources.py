"""`cifar10`, `cifar100` and `coco_captions` through tensorflow-datasets, behind a prepared local cache.

`examples(...)` reads, in order:
1. a prepared cache `<cache dir>/<dataset>-<split>-<S>px-<N>.npz` (written once by
   `data_scripts/prepare_tfds.py`; cache dir = option `cache_dir`, else `$MINIMODAL_DATA`, else
   `~/.cache/minimodal`): the first N examples of the split, already centre-cropped and resized;
2. else tensorflow-datasets itself (download and decode; slow the first time).
Without either (offline, nothing prepared) it fails within seconds with `DataUnavailableError`,
whose message says how to prepare the cache on a connected machine, or to use `--data shapes`.

Captions: CIFAR's from templates over the class name ("a photo of a cat"), drawn with `seed`;
COCO's own (five per image), one drawn per example with `seed`. Both caches and tfds give the first
n examples of the split in tfds order, so the two paths return identical examples.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from minimodal.data.images import center_crop_resize, check_image_size, template_captions, with_article

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear
pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark
shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone
television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
CIFAR_TEMPLATES = [
    "a photo of {a_name}",
    "a picture of {a_name}",
    "{a_name}",
    "a small photo of {a_name}",
    "a blurry photo of {a_name}",
    "a close-up photo of {a_name}",
]


@dataclasses.dataclass(frozen=True)
class Spec:
    """What minimodal needs to know about one tfds data set."""

    splits: tuple[str, ...]
    host: str  # where tfds downloads it from: probed before a download is attempted
    class_names: tuple[str, ...] | None = None  # None: captioned (COCO), not classified


DATASETS = {
    "cifar10": Spec(("train", "test"), "www.cs.toronto.edu", tuple(CIFAR10_CLASSES)),
    "cifar100": Spec(("train", "test"), "www.cs.toronto.edu", tuple(n.replace("_", " ") for n in CIFAR100_CLASSES)),
    "coco_captions": Spec(("train", "val", "test", "restval"), "images.cocodataset.org"),
}
PROBE_TIMEOUT_S = 3.0


class DataUnavailableError(RuntimeError):
    """The data set is neither prepared locally nor downloadable from here."""


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir` if given, else `$MINIMODAL_DATA`, else `~/.cache/minimodal`."""
    return Path(cache_dir or os.environ.get("MINIMODAL_DATA") or Path.home() / ".cache" / "minimodal")


def cache_path(dataset: str, split: str, image_size: int, n: int, cache_dir: str | Path | None = None) -> Path:
    return default_cache_dir(cache_dir) / f"{dataset}-{split}-{image_size}px-{n}.npz"


def find_cache(dataset: str, split: str, image_size: int, n: int | None,
               cache_dir: str | Path | None = None) -> Path | None:
    """The smallest prepared cache holding at least n examples (the largest one if none does)."""
    sizes = {}
    for path in default_cache_dir(cache_dir).glob(f"{dataset}-{split}-{image_size}px-*.npz"):
        count = path.stem.rsplit("-", 1)[-1]
        if count.isdigit():
            sizes[path] = int(count)
    if not sizes:
        return None
    enough = [p for p, count in sizes.items() if n is None or count >= n]
    return min(enough, key=sizes.get) if n is not None and enough else max(sizes, key=sizes.get)


def _spec(dataset: str, split: str) -> Spec:
    if dataset not in DATASETS:
        raise ValueError(f"unknown tfds data set {dataset!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    if split not in spec.splits:
        raise ValueError(f"{dataset} has splits {', '.join(spec.splits)}; got {split!r}")
    return spec


def _reachable(host: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to host:443 opens within `timeout` seconds, DNS lookup included."""
    opened: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)  # a hung DNS lookup cannot hold us up
    thread.start()
    thread.join(timeout)
    return bool(opened)


def unavailable_message(dataset: str, split: str, n: int | None, image_size: int, cache_dir: Path,
                        reason: str) -> str:
    n_arg = f" --n {n}" if n else ""
    return (
        f"{dataset} ({split} split) is not available on this machine: {reason}.\n"
        "To fix, either\n"
        f"  - on a machine with network access run\n"
        f"      python data_scripts/prepare_tfds.py {dataset} --split {split}{n_arg} --size {image_size}\n"
        f"    and copy the .npz file it writes into {cache_dir} here (or set $MINIMODAL_DATA to its folder), or\n"
        "  - use the built-in offline data: --data shapes (or --data digits)."
    )


def read_tfds(dataset: str, split: str = "train", n: int | None = None, image_size: int = 32,
              data_dir: str | None = None, cache_dir: str | Path | None = None,
              progress: bool = True) -> dict[str, Any]:
    """The first n examples of a tfds split, cropped and resized: the raw form a cache stores.

    Returns images uint8 (n, S, S, 3) and either labels int32 (n,) or captions (list of n lists of str).
    Downloads through tfds if the data set is not prepared in `data_dir` (tfds' default if None),
    after checking within seconds that the download host answers.
    """
    spec = _spec(dataset, split)
    size = check_image_size(image_size)

    def unavailable(reason: str) -> DataUnavailableError:
        return DataUnavailableError(unavailable_message(dataset, split, n, size, default_cache_dir(cache_dir), reason))

    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise unavailable("no prepared cache, and tensorflow-datasets is not installed "
                          "(pip install 'minimodal[tfds]')") from e
    builder = tfds.builder(dataset, data_dir=data_dir)
    if not builder.is_prepared():
        # tfds retries a failed download 10 times with back-off and no timeout: probe the host first.
        if not _reachable(spec.host):
            raise unavailable(f"no prepared cache, not downloaded under {builder.data_dir}, "
                              f"and {spec.host} cannot be reached (offline?)")
        try:
            builder.download_and_prepare()
        except Exception as e:  # any failure of the download is reported the same way, with its cause
            raise unavailable(f"no prepared cache, and downloading with tensorflow-datasets failed "
                              f"({type(e).__name__}: {e})") from e
    ds = builder.as_dataset(split=split, shuffle_files=False)  # tfds' fixed order
    if n is not None:
        ds = ds.take(n)
    total = int(ds.cardinality())
    examples = tfds.as_numpy(ds)
    if progress:
        from tqdm import tqdm

        examples = tqdm(examples, total=total if total >= 0 else None, desc=f"{dataset} {split} -> {size}px",
                        unit="img")
    images, labels, captions = [], [], []
    for ex in examples:
        images.append(center_crop_resize(ex["image"], size))
        if spec.class_names is None:
            captions.append([" ".join(t.decode("utf-8", "replace").split()) for t in ex["captions"]["text"]])
        else:
            labels.append(ex["label"])
    raw: dict[str, Any] = {"images": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)}
    if spec.class_names is None:
        raw["captions"] = captions
    else:
        raw["labels"] = np.asarray(labels, np.int32)
    return raw


def write_cache(raw: dict[str, Any], dataset: str, split: str, image_size: int,
                cache_dir: str | Path | None = None) -> Path:
    """Store `read_tfds`'s output as `<dataset>-<split>-<S>px-<N>.npz` (atomically); returns the path.

    COCO's captions are stored as one UTF-8 byte string joined by newlines plus a count per image.
    """
    n = len(raw["images"])
    path = cache_path(dataset, split, image_size, n, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"images": raw["images"], "dataset": np.array(dataset), "split": np.array(split)}
    if "labels" in raw:
        arrays["labels"] = raw["labels"]
    else:
        flat = [c for caps in raw["captions"] for c in caps]
        arrays["caption_counts"] = np.array([len(caps) for caps in raw["captions"]], np.int32)
        arrays["captions_utf8"] = np.frombuffer("\n".join(flat).encode("utf-8"), np.uint8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def read_cache(path: Path, dataset: str, split: str, image_size: int, n: int | None) -> dict[str, Any]:
    """The first n examples (all if None) of a cache written by `write_cache`, checked against the request."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # a truncated copy, a foreign file: name it and the fix
        raise ValueError(f"cannot read the prepared cache {path} ({type(e).__name__}: {e}); "
                         "delete it and run data_scripts/prepare_tfds.py again") from e
    images = arrays.get("images")
    if (str(arrays.get("dataset")) != dataset or str(arrays.get("split")) != split or images is None
            or images.dtype != np.uint8 or images.shape[1:] != (image_size, image_size, 3)):
        raise ValueError(f"{path} does not hold {dataset} {split} images at {image_size}px; "
                         "delete it and run data_scripts/prepare_tfds.py again")
    count = len(images) if n is None else min(n, len(images))
    if n is not None and n > len(images):
        warnings.warn(f"the prepared cache {path.name} holds only {len(images)} examples, fewer than the "
                      f"{n} asked for; prepare a bigger one with data_scripts/prepare_tfds.py --n {n}",
                      stacklevel=3)
    raw: dict[str, Any] = {"images": images[:count]}
    if "labels" in arrays:
        raw["labels"] = arrays["labels"][:count].astype(np.int32)
    else:
        flat = arrays["captions_utf8"].tobytes().decode("utf-8").split("\n")
        ends = np.cumsum(arrays["caption_counts"])
        raw["captions"] = [flat[e - c:e] for c, e in zip(arrays["caption_counts"][:count], ends[:count])]
    return raw


def to_examples(raw: dict[str, Any], dataset: str, seed: int) -> dict[str, Any]:
    """Raw images + labels / caption lists -> the example format, captions drawn with `seed`."""
    spec = DATASETS[dataset]
    rng = np.random.default_rng([seed, 0xC0C0])
    if spec.class_names is None:
        counts_N = np.array([len(caps) for caps in raw["captions"]])
        pick_N = np.floor(rng.random(len(counts_N)) * counts_N).astype(int)  # uniform over each image's captions
        captions = [caps[j] if caps else "" for caps, j in zip(raw["captions"], pick_N)]
        return {"images": raw["images"], "captions": captions}
    fields = [{"name": name, "a_name": with_article(name)} for name in spec.class_names]
    captions = template_captions(raw["labels"], fields, CIFAR_TEMPLATES, rng)
    return {"images": raw["images"], "captions": captions, "labels": raw["labels"],
            "class_names": list(spec.class_names)}


def examples(split: str = "train", n: int | None = None, image_size: int = 32, seed: int = 0, *,
             dataset: str, cache_dir: str | Path | None = None, data_dir: str | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Up to n examples (all if None) of `dataset`'s `split`, from the prepared cache or else tfds.

    Options: `cache_dir` (prepared caches), `data_dir` (tfds' own data dir), `progress` (tqdm bar).
    """
    _spec(dataset, split)
    size = check_image_size(image_size)
    path = find_cache(dataset, split, size, n, cache_dir)
    if path is not None:
        raw = read_cache(path, dataset, split, size, n)
    else:
        raw = read_tfds(dataset, split, n, size, data_dir=data_dir, cache_dir=cache_dir, progress=progress)
    return to_examples(raw, dataset, seed)
