"""The one tokenizer: exact round trips, merges against hand-worked and naive references, batches, files."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimodal.tokenizer import NUM_BASE, WORD_PATTERN, Tokenizer

CAPTIONS = [
    "a large red circle at the top left", "a red circle", "a small blue cross in the center",
    "a red circle left of a blue square", "a green triangle below a white cross", "a yellow square",
    "a small purple triangle at the bottom right", "a large white circle on the right",
]
UNICODE = ["", " ", "é", "naïve café", "e\u0301", "😀👍🏽 emoji", "日本語のテキスト", "\x00\t\n  \r\n",
           "snake_case __init__ 3.14 1,000", "Ünïcödé — “quotes” ’", "\U0010ffff\uffff"]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(CAPTIONS * 3 + UNICODE, vocab_size=330)


# ---- references: the definitions, written the slow, obvious way ---------------------------------------
def naive_train(texts: list[str], vocab_size: int) -> list[tuple[int, int]]:
    """Recount every pair of every word after each merge; merge the most frequent (smallest ids on ties)."""
    words = Counter(w for t in texts for w in re.findall(WORD_PATTERN, t))
    seqs = {w: [3 + b for b in w.encode()] for w in words}
    merges = []
    while len(merges) < vocab_size - NUM_BASE:
        counts = Counter()
        for w, ids in seqs.items():
            for pair in zip(ids, ids[1:]):
                counts[pair] += words[w]
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        seqs = {w: naive_merge(ids, best, NUM_BASE + len(merges) - 1) for w, ids in seqs.items()}
    return merges


def naive_merge(ids, pair, new_id):
    """Left to right: a pair is joined as soon as its second id arrives (so "aaa" -> "Za")."""
    out = []
    for i in ids:
        if out and (out[-1], i) == pair:
            out[-1] = new_id
        else:
            out.append(i)
    return out


def naive_encode(merges, text: str) -> list[int]:
    """Apply every merge, in the order learned, to every word."""
    ids = []
    for w in re.findall(WORD_PATTERN, text):
        seq = [3 + b for b in w.encode()]
        for i, pair in enumerate(merges):
            seq = naive_merge(seq, pair, NUM_BASE + i)
        ids += seq
    return ids


# ---- round trip ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", UNICODE + CAPTIONS)
def test_round_trip_examples(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_unicode(tok, text):
    ids = tok.encode(text)
    assert all(3 <= i < tok.vocab_size for i in ids)  # never a special id
    assert tok.decode(ids) == text


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_word_split_covers_the_text(text):
    assert "".join(re.findall(WORD_PATTERN, text)) == text


def test_untrained_tokenizer_is_plain_utf8():
    tok = Tokenizer.train(["anything"], NUM_BASE)
    assert tok.vocab_size == NUM_BASE and tok.merges == []
    assert tok.encode("hé") == [3 + b for b in "hé".encode()] == [107, 198, 172]


# ---- training ------------------------------------------------------------------------------------------
def test_merges_match_hand_worked_example():
    # "aaabdaaabac" (ids: a=100, b=101). Pair counts: aa 4, ab 2, others 1 -> merge aa into Z = 259:
    # Z a b d Z a b a c. Now ab 2 and Za 2 tie -> the smaller pair (100, 101) wins: Y = 260:
    # Z Y d Z Y a c. Then ZY 2 -> X = 261: X d X a c. Now every pair occurs once; the smallest is
    # (97 + 3, 99 + 3) = "ac".
    tok = Tokenizer.train(["aaabdaaabac"], NUM_BASE + 4)
    assert tok.merges == [(100, 100), (100, 101), (259, 260), (100, 102)]
    assert [tok.token_bytes(i) for i in range(259, 263)] == [b"aa", b"ab", b"aaab", b"ac"]
    assert tok.encode("aaabdaaabac") == [261, 103, 261, 262]


def test_words_keep_their_leading_space_and_training_stops_when_words_are_whole():
    # words: "ab" x2, " ab" x1. (a, b) occurs 3 times -> 259; then (" ", 259) once -> 260; then nothing.
    tok = Tokenizer.train(["ab ab", "ab"], vocab_size=1000)
    assert tok.merges == [(100, 101), (35, 259)]
    assert tok.vocab_size == 261
    assert tok.encode("ab ab ab") == [259, 260, 260]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab c\u00e9", max_size=12), max_size=8),
       st.integers(NUM_BASE, NUM_BASE + 30))
def test_incremental_training_matches_naive_recount(texts, vocab_size):
    assert Tokenizer.train(texts, vocab_size).merges == naive_train(texts, vocab_size)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab cdé😀 ", max_size=40))
def test_cached_encoding_matches_applying_merges_in_order(tok, text):
    tok2 = Tokenizer.train([text, text[::-1], "ab ab cd"], NUM_BASE + 20)
    assert tok2.encode(text) == naive_encode(tok2.merges, text)
    assert tok.encode(text) == naive_encode(tok.merges, text)


def test_training_is_deterministic_and_order_free():
    a = Tokenizer.train(CAPTIONS, 320)
    assert a.merges == Tokenizer.train(CAPTIONS, 320).merges == Tokenizer.train(CAPTIONS[::-1], 320).merges


def test_smaller_vocabulary_is_a_prefix_of_a_larger_one():
    big = Tokenizer.train(CAPTIONS, 330)
    assert Tokenizer.train(CAPTIONS, 280).merges == big.merges[:280 - NUM_BASE]


def test_bpe_compresses_its_training_text(tok):
    n_bytes = sum(len(c.encode()) for c in CAPTIONS)
    n_tokens = sum(len(tok.encode(c)) for c in CAPTIONS)
    assert n_tokens < n_bytes / 3
    assert [tok.token_bytes(i) for i in tok.encode("a red circle")] == [b"a", b" red", b" circle"]


# ---- batches -------------------------------------------------------------------------------------------
def test_encode_batch_layout(tok):
    texts = ["a red circle", "", "a large red circle at the top left"]
    T = 12
    tokens_BT = tok.encode_batch(texts, T)
    assert tokens_BT.shape == (3, T) and tokens_BT.dtype == np.int32
    for row, text in zip(tokens_BT, texts):
        ids = tok.encode(text)
        assert len(ids) + 2 <= T
        n = len(ids) + 2
        np.testing.assert_array_equal(row[:n], [tok.bos_id, *ids, tok.eos_id])
        assert (row[n:] == tok.pad_id).all()
        assert tok.decode(row) == text
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)


@pytest.mark.parametrize("T", [2, 3, 5])
def test_encode_batch_truncates_and_still_ends_with_eos(tok, T):
    text = "a large red circle at the top left of a small blue cross"
    ids = tok.encode(text)
    assert len(ids) > T
    tokens_BT = tok.encode_batch([text, "a"], T)
    np.testing.assert_array_equal(tokens_BT[0], [tok.bos_id, *ids[:T - 2], tok.eos_id])
    assert tokens_BT[1, 0] == tok.bos_id and tokens_BT[1, -1] in (tok.eos_id, tok.pad_id)


def test_encode_batch_edge_cases(tok):
    assert tok.encode_batch([], 8).shape == (0, 8)
    with pytest.raises(ValueError, match="context_length"):
        tok.encode_batch(["a red circle"], 1)
    with pytest.raises(TypeError, match="list of str"):
        tok.encode_batch("a red circle", 8)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tok.encode_batch(["a red circle", None], 8)


# ---- errors at the boundary ----------------------------------------------------------------------------
def test_clear_errors(tok):
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train(CAPTIONS, NUM_BASE - 1)
    with pytest.raises(TypeError, match="must be str"):
        tok.encode(123)
    with pytest.raises(TypeError, match="list of str"):
        Tokenizer.train("a red circle", 300)
    with pytest.raises(ValueError, match="outside"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="flat sequence of int"):
        tok.decode([[3, 4]])
    with pytest.raises(ValueError, match="earlier"):
        Tokenizer([(259, 100)])


# ---- files ---------------------------------------------------------------------------------------------
def test_save_load_identity(tok, tmp_path):
    path = tok.save(tmp_path / "sub" / "tokenizer.json")
    loaded = Tokenizer.load(path)
    assert loaded.merges == tok.merges and loaded.vocab_size == tok.vocab_size
    for text in CAPTIONS + UNICODE:
        assert loaded.encode(text) == tok.encode(text)
    data = json.loads(path.read_text(encoding="utf-8"))  # human-readable: merged tokens as text
    assert data["merged_tokens"][str(tok.encode(" circle")[0])] == " circle"
    assert loaded.save(tmp_path / "again.json").read_text() == path.read_text()


def test_load_rejects_corrupt_files(tok, tmp_path):
    path = tok.save(tmp_path / "tokenizer.json")
    good = json.loads(path.read_text())
    cases = {
        "truncated": path.read_text()[:50],
        "not a dict": "[1, 2, 3]",
        "wrong format": json.dumps({**good, "format": "gpt2"}),
        "bad merge": json.dumps({**good, "merges": [[3, "x"]]}),
        "future id": json.dumps({**good, "merges": [[3, 300]] + good["merges"][1:]}),
        "size mismatch": json.dumps({**good, "vocab_size": good["vocab_size"] + 1}),
    }
    for name, text in cases.items():
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ValueError, match="bad.json|merge"):
            Tokenizer.load(tmp_path / "bad.json")
