"""Prepare a cached subset of a tensorflow-datasets data set once, so training never re-decodes JPEGs.

    python data_scripts/prepare_tfds.py cifar10 --n 50000 --size 32
    python data_scripts/prepare_tfds.py coco_captions --split train --n 20000 --size 64

Downloads the data set through tfds if needed (needs network), centre-crops and resizes the first N
examples of the split to S x S, and writes `<dataset>-<split>-<S>px-<N>.npz` to the cache directory
(`--cache-dir`, else $MINIMODAL_DATA, else ~/.cache/minimodal), where `--data cifar10` etc. find it.
Copy that file to the same place on an offline machine to train there.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from minimodal.data import tfds_sources


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(tfds_sources.DATASETS))
    parser.add_argument("--split", default="train", help="train (default), test; coco_captions also val, restval")
    parser.add_argument("--n", type=int, default=None, help="number of examples (default: the whole split)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--cache-dir", default=None,
                        help="where to write (default $MINIMODAL_DATA or ~/.cache/minimodal)")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets' own data dir (default: tfds' default)")
    args = parser.parse_args(argv)
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be positive, got {args.n}")
    try:
        raw = tfds_sources.read_tfds(args.dataset, args.split, args.n, args.size, data_dir=args.data_dir,
                                     cache_dir=args.cache_dir, progress=True)
    except tfds_sources.DataUnavailableError as e:
        parser.exit(1, f"error: {e}\n")
    path = tfds_sources.write_cache(raw, args.dataset, args.split, args.size, args.cache_dir)
    print(f"wrote {len(raw['images'])} examples to {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return path


if __name__ == "__main__":
    main()
