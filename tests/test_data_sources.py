"""Data sources: image helpers, digits, the tfds sources and their cache (mocked tfds), a folder of images."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from minimodal.data import load_examples
from minimodal.data import digits, folder, images, tfds_sources
from minimodal.data.folder import FolderDataError
from minimodal.data.tfds_sources import DataUnavailableError

ROOT = Path(__file__).resolve().parents[1]


# image helpers ---------------------------------------------------------------------------------------------

def test_center_crop_keeps_the_central_square():
    x = np.zeros((20, 30, 3), np.uint8)  # H=20, W=30: the crop drops 5 columns on each side
    x[:, :5] = x[:, 25:] = 255
    x[:, 5:25] = (10, 20, 30)
    out = images.center_crop_resize(x, 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.broadcast_to([10, 20, 30], (20, 20, 3)))
    tall = np.transpose(x, (1, 0, 2))  # H=30, W=20: rows are dropped instead
    np.testing.assert_array_equal(images.center_crop_resize(tall, 5), np.broadcast_to([10, 20, 30], (5, 5, 3)))


def test_resize_preserves_a_flat_colour_and_the_mean():
    flat = np.full((64, 48, 3), (200, 100, 0), np.uint8)
    np.testing.assert_array_equal(images.center_crop_resize(flat, 16), np.broadcast_to([200, 100, 0], (16, 16, 3)))
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[::2] = 255  # mean 127.5; downscaling averages (antialiased), it does not pick rows
    small = images.center_crop_resize(stripes, 8).astype(float)
    assert abs(small.mean() - 127.5) < 2 and small.std() < 3


def test_to_rgb_converts_every_mode():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (200, 40, 60)
    rgba[..., 3] = [[255, 0], [128, 255]]  # opaque, transparent, half
    out = np.asarray(images.to_rgb(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(out[0, 0], [200, 40, 60])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])  # transparency over black
    np.testing.assert_allclose(out[1, 0], np.array([200, 40, 60]) * 128 / 255, atol=1)  # a * rgb + (1 - a) * 0
    grey = np.asarray(images.to_rgb(Image.fromarray(np.full((3, 3), 77, np.uint8), "L")))
    np.testing.assert_array_equal(grey, np.full((3, 3, 3), 77))
    deep = Image.fromarray(np.array([[1000, 3000], [5000, 1000]], np.uint16))  # 16-bit grey
    np.testing.assert_array_equal(np.asarray(images.to_rgb(deep))[..., 0], [[0, 128], [255, 0]])
    palette = Image.fromarray(np.full((2, 2, 3), (9, 99, 199), np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    np.testing.assert_array_equal(np.asarray(images.to_rgb(palette)), np.full((2, 2, 3), (9, 99, 199)))


def test_template_captions_fill_the_labels_class_and_use_every_template():
    fields = [{"a_name": images.with_article(name)} for name in ("apple", "cat")]
    templates = ["a photo of {a_name}", "{a_name}"]
    labels = np.array([0, 1] * 20)
    caps = images.template_captions(labels, fields, templates, np.random.default_rng(0))
    assert caps == images.template_captions(labels, fields, templates, np.random.default_rng(0))
    assert set(caps) == {"a photo of an apple", "an apple", "a photo of a cat", "a cat"}
    assert all(("apple" in c) == (label == 0) for c, label in zip(caps, labels))


def test_bad_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="image_size"):
        digits.examples("train", 2, image_size=0)


# digits ----------------------------------------------------------------------------------------------------

def test_digits_at_8px_are_sklearns_pixels_scaled_to_255():
    from sklearn.datasets import load_digits

    raw = load_digits()
    ex = digits.examples("test", n=20, image_size=8, seed=0)
    idx = digits.split_indices("test")[:20]
    expected = np.rint(raw.images[idx] / 16 * 255)  # ink 0..16 -> grey 0..255
    np.testing.assert_array_equal(ex["images"], np.repeat(expected[..., None], 3, -1))
    np.testing.assert_array_equal(ex["labels"], raw.target[idx])


def test_digits_examples_format_and_caption_matches_label():
    ex = load_examples("digits", "train", n=200, image_size=16, seed=3)
    assert ex["images"].shape == (200, 16, 16, 3) and ex["images"].dtype == np.uint8
    assert ex["labels"].dtype == np.int32 and set(ex["labels"]) == set(range(10))
    assert ex["class_names"] == digits.CLASS_NAMES
    for caption, label in zip(ex["captions"], ex["labels"]):
        words = caption.split()
        assert str(label) in words or digits.CLASS_NAMES[label] in words, caption
    assert len(set(ex["captions"])) > 20
    np.testing.assert_array_equal(ex["images"][..., 0], ex["images"][..., 2])  # grey


def test_digits_split_is_fixed_disjoint_and_complete():
    train, test = digits.split_indices("train"), digits.split_indices("test")
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    a = digits.examples("train", n=50, image_size=16, seed=0)
    b = digits.examples("train", n=50, image_size=16, seed=1)
    np.testing.assert_array_equal(a["images"], b["images"])  # the seed picks captions, never the split
    assert a["captions"] == digits.examples("train", n=50, image_size=16, seed=0)["captions"]
    assert a["captions"] != b["captions"]
    with pytest.raises(ValueError, match="splits"):
        digits.examples("holdout", 5)


def test_digits_asked_for_more_than_exist_warns_and_returns_all():
    with pytest.warns(UserWarning, match="only 359"):
        ex = digits.examples("test", n=10_000, image_size=16)
    assert len(ex["captions"]) == 359


# tfds sources (mocked tfds) --------------------------------------------------------------------------------

@pytest.fixture
def mock_tfds(monkeypatch):
    """tfds with random examples (COCO: 5..49 px sides, several captions each) and a reachable host."""
    monkeypatch.setattr(tfds_sources, "_reachable", lambda host, timeout=0: True)
    with tfds.testing.mock_data(num_examples=12, num_sub_examples=3):
        yield


def prepare_script():
    spec = importlib.util.spec_from_file_location("prepare_tfds", ROOT / "data_scripts" / "prepare_tfds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_class_name_lists():
    assert len(tfds_sources.CIFAR100_CLASSES) == len(set(tfds_sources.CIFAR100_CLASSES)) == 100
    assert tfds_sources.DATASETS["cifar100"].class_names[1] == "aquarium fish"


@pytest.mark.parametrize("dataset, classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_examples_through_tfds(mock_tfds, tmp_path, dataset, classes):
    ex = load_examples(dataset, "train", n=10, image_size=16, seed=0, cache_dir=tmp_path, progress=False)
    assert ex["images"].shape == (10, 16, 16, 3) and ex["images"].dtype == np.uint8
    assert ex["labels"].dtype == np.int32 and np.all((0 <= ex["labels"]) & (ex["labels"] < classes))
    assert len(ex["class_names"]) == classes
    for caption, label in zip(ex["captions"], ex["labels"]):
        name = ex["class_names"][label]
        assert caption in {t.format(a_name=images.with_article(name)) for t in tfds_sources.CIFAR_TEMPLATES}


def test_coco_picks_one_of_each_images_own_captions_by_seed(mock_tfds, tmp_path):
    raw = tfds_sources.read_tfds("coco_captions", "train", 12, 16, progress=False)
    assert raw["images"].shape == (12, 16, 16, 3)
    counts = [len(c) for c in raw["captions"]]
    assert max(counts) > 1
    a, b = (tfds_sources.examples("train", 12, 16, seed, dataset="coco_captions", cache_dir=tmp_path,
                                  progress=False) for seed in (0, 1))
    assert "labels" not in a
    assert all(c in caps for c, caps in zip(a["captions"] + b["captions"], raw["captions"] * 2))
    assert a["captions"] != b["captions"]  # another seed picks other captions ...
    assert a["captions"] == tfds_sources.to_examples(raw, "coco_captions", 0)["captions"]  # ... the same one, the same


@pytest.mark.parametrize("dataset", ["cifar10", "coco_captions"])
def test_prepare_script_cache_round_trip(mock_tfds, tmp_path, monkeypatch, capsys, dataset):
    direct = tfds_sources.examples("train", 7, 16, 4, dataset=dataset, cache_dir=tmp_path, progress=False)
    path = prepare_script().main([dataset, "--n", "7", "--size", "16", "--cache-dir", str(tmp_path)])
    assert path == tmp_path / f"{dataset}-train-16px-7.npz" and "wrote 7 examples" in capsys.readouterr().out

    def no_tfds(*args, **kwargs):
        raise AssertionError("tfds was read although a prepared cache exists")

    monkeypatch.setattr(tfds_sources, "read_tfds", no_tfds)
    cached = load_examples(dataset, "train", n=7, image_size=16, seed=4, cache_dir=tmp_path)
    np.testing.assert_array_equal(cached["images"], direct["images"])
    assert cached["captions"] == direct["captions"]
    if dataset == "cifar10":
        np.testing.assert_array_equal(cached["labels"], direct["labels"])
        assert isinstance(cached["class_names"], list)  # a list, so the pipeline does not take it for a column
    monkeypatch.setenv("MINIMODAL_DATA", str(tmp_path))  # the environment variable finds it too
    assert load_examples(dataset, "train", n=3, image_size=16, seed=4)["captions"] == direct["captions"][:3]


def test_cache_keeps_unicode_captions_and_images_without_captions(tmp_path):
    raw = {"images": np.arange(3 * 4 * 4 * 3, dtype=np.uint8).reshape(3, 4, 4, 3),
           "captions": [["un café ☕", "a cup"], [], ["", "x"]]}
    path = tfds_sources.write_cache(raw, "coco_captions", "val", 4, tmp_path)
    back = tfds_sources.read_cache(path, "coco_captions", "val", 4, None)
    np.testing.assert_array_equal(back["images"], raw["images"])
    assert back["captions"] == raw["captions"]
    with pytest.raises(ValueError, match="does not hold"):
        tfds_sources.read_cache(path, "coco_captions", "val", 8, None)


def test_cache_choice_smallest_sufficient_else_largest_with_warning(tmp_path):
    for n in (5, 20, 50):
        raw = {"images": np.full((n, 4, 4, 3), n, np.uint8), "labels": np.zeros(n, np.int32)}
        tfds_sources.write_cache(raw, "cifar10", "test", 4, tmp_path)
    assert tfds_sources.find_cache("cifar10", "test", 4, 10, tmp_path).name == "cifar10-test-4px-20.npz"
    assert tfds_sources.find_cache("cifar10", "test", 4, None, tmp_path).name == "cifar10-test-4px-50.npz"
    assert tfds_sources.find_cache("cifar10", "train", 4, 1, tmp_path) is None
    with pytest.warns(UserWarning, match="only 50"):
        ex = tfds_sources.examples("test", 80, 4, dataset="cifar10", cache_dir=tmp_path)
    assert len(ex["captions"]) == 50 and np.all(ex["images"] == 50)


def test_offline_without_cache_fails_fast_and_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_sources, "_reachable", lambda host, timeout=0: False)
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError) as info:
        load_examples("cifar10", "train", n=100, image_size=32, cache_dir=tmp_path / "cache",
                      data_dir=str(tmp_path / "tfds"))
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "python data_scripts/prepare_tfds.py cifar10 --split train --n 100 --size 32" in message
    assert "--data shapes" in message and str(tmp_path / "cache") in message and "cannot be reached" in message


def test_failed_download_is_reported_with_its_cause(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise ConnectionError("name resolution failed")

    monkeypatch.setattr(tfds_sources, "_reachable", lambda host, timeout=0: True)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    with pytest.raises(DataUnavailableError, match="ConnectionError: name resolution failed") as info:
        tfds_sources.examples("test", 5, 16, dataset="cifar100", cache_dir=tmp_path, data_dir=str(tmp_path))
    assert "prepare_tfds.py cifar100 --split test --n 5 --size 16" in str(info.value)


def test_without_tensorflow_datasets_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(DataUnavailableError, match=r"pip install 'minimodal\[tfds\]'"):
        tfds_sources.examples("train", 5, 16, dataset="coco_captions", cache_dir=tmp_path)


def test_prepare_script_offline_exits_with_the_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tfds_sources, "_reachable", lambda host, timeout=0: False)
    with pytest.raises(SystemExit) as info:
        prepare_script().main(["cifar10", "--n", "10", "--cache-dir", str(tmp_path), "--data-dir", str(tmp_path)])
    assert info.value.code == 1 and "--data shapes" in capsys.readouterr().err


def test_reachable_is_bounded_in_time(monkeypatch):
    released = threading.Event()

    def hung_lookup(*args, **kwargs):
        released.wait(30)
        raise OSError("the probe gave up")

    monkeypatch.setattr(tfds_sources.socket, "create_connection", hung_lookup)
    start = time.perf_counter()
    assert not tfds_sources._reachable("example.org", timeout=0.2)
    assert time.perf_counter() - start < 2
    released.set()  # the probe thread ends the way a real timeout does, not with an unhandled error


def test_unknown_dataset_or_split():
    with pytest.raises(ValueError, match="splits train, test"):
        tfds_sources.examples("holdout", 5, dataset="cifar10")
    with pytest.raises(ValueError, match="unknown"):
        tfds_sources.examples("train", 5, dataset="imagenet")


# folder ----------------------------------------------------------------------------------------------------

def save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def write_jsonl(folder: Path, rows) -> None:
    (folder / "captions.jsonl").write_text("".join(
        (row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))


@pytest.fixture
def good_folder(tmp_path):
    """Four images of different modes and sizes, each a flat colour, captioned in captions.jsonl."""
    save(tmp_path / "red.png", np.full((40, 20, 4), (255, 0, 0, 255), np.uint8))  # RGBA, tall
    save(tmp_path / "grey.jpg", np.full((10, 30), 100, np.uint8))  # L, wide, JPEG
    save(tmp_path / "sub" / "blue.bmp", np.full((8, 8, 3), (0, 0, 255), np.uint8))  # in a subfolder
    green = Image.fromarray(np.full((9, 9, 3), (0, 250, 0), np.uint8))
    green.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "green.gif")
    write_jsonl(tmp_path, [{"file": "red.png", "caption": "a red square"},
                           {"file": "grey.jpg", "caption": "  a   grey\tpicture "},
                           {"file": "sub/blue.bmp", "caption": "blue"},
                           {"file": "green.gif", "caption": "green"}])
    return tmp_path


def test_folder_reads_any_mode_and_size_in_captions_order(good_folder):
    ex = load_examples(f"folder:{good_folder}", "all", image_size=16)
    assert ex["images"].shape == (4, 16, 16, 3) and ex["images"].dtype == np.uint8
    assert ex["captions"] == ["a red square", "a grey picture", "blue", "green"]  # whitespace normalised
    expected = [(255, 0, 0), (100, 100, 100), (0, 0, 255), (0, 250, 0)]
    for image, colour in zip(ex["images"], expected):
        np.testing.assert_allclose(image.reshape(-1, 3).mean(0), colour, atol=2)
    assert load_examples(f"folder:{good_folder}", "all", n=2, image_size=16)["captions"] == ex["captions"][:2]


def test_folder_csv_gives_the_same_examples(good_folder):
    jsonl = folder.examples("all", path=good_folder, image_size=8)
    (good_folder / "captions.jsonl").unlink()
    (good_folder / "captions.csv").write_text(
        'file,caption\nred.png,a red square\ngrey.jpg,"  a   grey\tpicture "\nsub/blue.bmp,blue\ngreen.gif,green\n')
    csv = folder.examples("all", path=good_folder, image_size=8)
    np.testing.assert_array_equal(csv["images"], jsonl["images"])
    assert csv["captions"] == jsonl["captions"]


def test_folder_problems_are_one_error_listing_every_offending_file(good_folder):
    (good_folder / "notes.jpg").write_text("this is not an image")  # unreadable, and no caption
    png = (good_folder / "red.png").read_bytes()
    (good_folder / "cut.png").write_bytes(png[:len(png) // 2])  # truncated
    save(good_folder / "orphan.png", np.zeros((4, 4, 3), np.uint8))  # no caption
    (good_folder / ".hidden.png").write_bytes(b"macOS metadata")  # hidden: ignored
    rows = [json.loads(line) for line in (good_folder / "captions.jsonl").read_text().splitlines()]
    write_jsonl(good_folder, rows + [{"file": "notes.jpg", "caption": "notes"},
                                     {"file": "cut.png", "caption": "half a picture"},
                                     {"file": "gone.png", "caption": "a missing file"},
                                     {"file": "grey.jpg", "caption": ""},
                                     '{"file": "broken.png", "caption": ',
                                     {"caption": "no file"}])
    with pytest.raises(FolderDataError) as info:
        folder.examples("all", path=good_folder, image_size=8)
    message = str(info.value)
    assert message.startswith("7 problem(s)"), message
    for expected in ("notes.jpg: unreadable image", "cut.png: unreadable image", "orphan.png: no caption",
                     "gone.png: no such file", "grey.jpg: empty or missing caption",
                     "captions.jsonl line 9: not JSON", "captions.jsonl line 10: no 'file'", "on_error='skip'"):
        assert expected in message, expected
    assert ".hidden" not in message

    with pytest.warns(UserWarning, match="skipped 7 problem"):
        ex = folder.examples("all", path=good_folder, image_size=8, on_error="skip")
    assert ex["captions"] == ["a red square", "a grey picture", "blue", "green"]


def test_folder_wrong_format_errors(tmp_path):
    save(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FolderDataError, match="found neither"):
        folder.examples(path=tmp_path)
    (tmp_path / "captions.csv").write_text("name;text\na.png;a black square\n")
    with pytest.raises(FolderDataError, match="header"):
        folder.examples(path=tmp_path)
    write_jsonl(tmp_path, [{"file": "a.png", "caption": "black"}])
    with pytest.raises(FolderDataError, match="found both"):
        folder.examples(path=tmp_path)
    (tmp_path / "captions.csv").unlink()
    (tmp_path / "captions.jsonl").write_bytes(b"\xff\xfe{}")
    with pytest.raises(FolderDataError, match="not UTF-8"):
        folder.examples(path=tmp_path)
    with pytest.raises(FolderDataError, match="not a directory"):
        folder.examples(path=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="folder:PATH"):
        load_examples("folder")
    with pytest.raises(ValueError, match="on_error"):
        folder.examples(path=tmp_path, on_error="ignore")


def test_folder_with_nothing_usable(tmp_path):
    (tmp_path / "x.png").write_text("not an image")
    write_jsonl(tmp_path, [{"file": "x.png", "caption": "x"}])
    with pytest.warns(UserWarning, match="skipped 1"), pytest.raises(FolderDataError, match="no usable"):
        folder.examples(path=tmp_path, on_error="skip")


def test_folder_splits_are_disjoint_complete_and_stable(tmp_path):
    rows = []
    for i in range(60):
        save(tmp_path / f"{i}.png", np.full((4, 4, 3), i, np.uint8))
        rows.append({"file": f"{i}.png", "caption": f"image {i}"})
    write_jsonl(tmp_path, rows)
    train, test = (set(folder.examples(split, path=tmp_path, image_size=4)["captions"]) for split in ("train", "test"))
    assert not train & test and train | test == {r["caption"] for r in rows}
    assert 1 <= len(test) <= 15  # about test_fraction = 10% of 60
    save(tmp_path / "new.png", np.zeros((4, 4, 3), np.uint8))
    write_jsonl(tmp_path, [{"file": "new.png", "caption": "new"}, *rows[::-1]])
    test_after = set(folder.examples("test", path=tmp_path, image_size=4)["captions"]) - {"new"}
    assert test_after == test  # adding a file and reordering moves no other file between splits
    with pytest.raises(FolderDataError, match="split='all'"):
        folder.examples("test", path=tmp_path, image_size=4, test_fraction=0.0)
    with pytest.raises(ValueError, match="splits 'train', 'test' and 'all'"):
        folder.examples("holdout", path=tmp_path)
