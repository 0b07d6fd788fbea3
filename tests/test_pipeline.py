"""The batch pipeline: one normalisation, deterministic and resumable batches, epochs as permutations, sharding."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from minimodal.data import Batches, denormalize_images, normalize_images
from minimodal.data.pipeline import check_examples

N, S, T = 37, 4, 6  # 37 examples: batches of 8 leave 5 out of every epoch


class ByteTokenizer:
    """Stands in for minimodal.tokenizer.Tokenizer: BOS, byte + 3 ..., EOS, PAD (truncated to keep EOS)."""

    def encode_batch(self, texts, context_length):
        out = np.zeros((len(texts), context_length), np.int32)
        for i, text in enumerate(texts):
            ids = [1] + [b + 3 for b in text.encode()][:context_length - 2] + [2]
            out[i, :len(ids)] = ids
        return out


def make_examples(n=N):
    """Example i has label i and caption 'image i', and its pixels encode i, so a batch row names its example."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return {"images": images, "captions": [f"image {i}" for i in range(n)],
            "labels": np.arange(n, dtype=np.int32), "class_names": ["unused"]}


def batches(seed=0, batch_size=8, sharding=None, examples=None):
    return Batches(examples or make_examples(), ByteTokenizer(), batch_size, T, seed=seed, sharding=sharding)


# normalisation ---------------------------------------------------------------------------------------------

def test_normalize_is_the_affine_map_onto_minus_one_one():
    x = np.arange(256, dtype=np.uint8)
    y = normalize_images(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x / 127.5 - 1.0, atol=1e-6)  # x / 127.5 - 1
    assert y[0] == -1.0 and y[255] == 1.0 and np.all(np.diff(y) > 0)


def test_denormalize_inverts_normalize_exactly_and_clips():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    np.testing.assert_array_equal(denormalize_images(normalize_images(x)), x)
    out = denormalize_images(np.array([-3.0, -1.0, 0.0, 1.0, 7.0]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255])  # clip(rint((y + 1) * 127.5), 0, 255)


# batches ---------------------------------------------------------------------------------------------------

def test_batch_contents_follow_the_examples():
    ex, b = make_examples(), batches()
    out = b.batch(3)
    idx = out["labels"]
    assert out["images"].shape == (8, S, S, 3) and out["images"].dtype == np.float32
    assert out["tokens"].shape == (8, T) and out["tokens"].dtype == np.int32
    assert set(out) == {"images", "tokens", "labels"}  # every ndarray of the examples, lists left out
    np.testing.assert_array_equal(out["images"], normalize_images(ex["images"][idx]))
    np.testing.assert_array_equal(out["tokens"], ByteTokenizer().encode_batch([ex["captions"][i] for i in idx], T))
    assert out["images"].min() >= -1.0 and out["images"].max() <= 1.0


def test_batches_are_deterministic_given_the_seed_and_differ_across_seeds():
    a, b, c = batches(seed=5), batches(seed=5), batches(seed=6)
    for step in (0, 1, 4, 9, 30):
        for key in ("images", "tokens", "labels"):
            np.testing.assert_array_equal(a.batch(step)[key], b.batch(step)[key])
    assert not np.array_equal(a.batch(0)["labels"], c.batch(0)["labels"])


def test_resuming_at_a_step_gives_the_batches_an_uninterrupted_run_saw():
    full = batches(seed=1)
    seen = [full.batch(step)["labels"] for step in range(20)]
    resumed = batches(seed=1)
    np.testing.assert_array_equal(resumed.batch(13)["labels"], seen[13])  # no earlier step drawn
    for step, out in zip(range(7, 20), resumed.iterate(start_step=7)):
        np.testing.assert_array_equal(out["labels"], seen[step])
    np.testing.assert_array_equal(resumed.batch(2)["labels"], seen[2])  # going back works too


def test_each_epoch_is_a_permutation_and_epochs_differ():
    b = batches(seed=2)
    assert b.steps_per_epoch == N // 8
    epochs = []
    for epoch in range(3):
        labels = np.concatenate([b.batch(epoch * b.steps_per_epoch + i)["labels"]
                                 for i in range(b.steps_per_epoch)])
        assert len(np.unique(labels)) == len(labels) == b.steps_per_epoch * 8  # no example twice in an epoch
        epochs.append(labels)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_every_example_exactly_once_per_epoch_when_batches_tile_the_data():
    b = batches(seed=3, batch_size=8, examples=make_examples(32))
    for epoch in range(2):
        labels = np.concatenate([b.batch(epoch * 4 + i)["labels"] for i in range(4)])
        np.testing.assert_array_equal(np.sort(labels), np.arange(32))


def test_bad_examples_are_rejected_at_the_boundary():
    ex = make_examples()
    with pytest.raises(ValueError, match="uint8"):
        check_examples({**ex, "images": ex["images"].astype(np.float32)})
    with pytest.raises(ValueError, match="labels"):
        check_examples({**ex, "labels": ex["labels"][:-1]})
    with pytest.raises(ValueError, match="captions"):
        check_examples({"images": ex["images"]})
    with pytest.raises(ValueError, match="batch_size"):
        batches(batch_size=N + 1)


# sharding --------------------------------------------------------------------------------------------------

def test_batches_are_sharded_along_the_batch_axis_over_all_devices():
    devices = jax.devices()
    sharding = NamedSharding(Mesh(np.array(devices), ("data",)), P("data"))
    batch_size = 2 * len(devices)
    ex = make_examples(4 * batch_size)
    plain = Batches(ex, ByteTokenizer(), batch_size, T, seed=0).batch(1)
    out = Batches(ex, ByteTokenizer(), batch_size, T, seed=0, sharding=sharding).batch(1)
    for key in ("images", "tokens", "labels"):
        assert isinstance(out[key], jax.Array) and out[key].sharding == sharding
        shards = out[key].addressable_shards
        assert {s.device for s in shards} == set(devices)
        assert all(s.data.shape[0] == 2 for s in shards)  # B / devices rows on each device
        np.testing.assert_array_equal(np.asarray(out[key]), plain[key])
