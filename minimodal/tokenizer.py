"""The one text tokenizer: byte-level BPE, trained from scratch on a data source's captions.

Ids: PAD = 0, BOS = 1, EOS = 2, byte b -> 3 + b (259 ids), then merge i -> 259 + i.
Text is UTF-8 bytes, so any string round-trips exactly: decode(encode(s)) == s.

Training (Sennrich et al. 2016, byte-level as in GPT-2): pre-split the text into words (a word keeps its
leading space), start from each word's bytes, and repeatedly merge the most frequent adjacent pair

    (a, b)* = argmax_{(a, b)} sum_words count(word) * #{i : word[i] = a, word[i+1] = b}

(ties go to the smallest ids) into a new token, until `vocab_size` ids exist or every word is a
single token. Encoding applies the learned merges to each word in the order they were learned
(lowest rank first), and caches the result per word.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from minimodal.config import write_atomically

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIAL_TOKENS = {"pad": PAD_ID, "bos": BOS_ID, "eos": EOS_ID}
NUM_SPECIAL = 3
NUM_BASE = NUM_SPECIAL + 256  # 259: the specials and every byte; the smallest possible vocabulary
FORMAT, VERSION = "minimodal-bpe", 1

# Words: letters, digits, other non-space runs (each with an optional leading space), then whitespace.
# Every character falls in one branch, so "".join(pieces) == text.
WORD_PATTERN = r" ?[^\W\d_]+| ?\d+| ?(?:[^\w\s]|_)+|\s+(?!\S)|\s+"

Pair = tuple[int, int]


def _check_str(text: Any, what: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, got {type(text).__name__}: {text!r:.60}")
    return text


def _check_texts(texts: Any, what: str) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what} must be a list of str, got a single {type(texts).__name__}; "
                        "wrap it in a list")
    return [_check_str(t, f"{what}[{i}]") for i, t in enumerate(texts)]


def _merge(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of `pair` in `ids`, left to right, by `new_id`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _byte_ids(word: str) -> list[int]:
    return [NUM_SPECIAL + b for b in word.encode("utf-8")]


class Tokenizer:
    """Byte-level BPE with PAD/BOS/EOS; build it with `Tokenizer.train` or `Tokenizer.load`."""

    def __init__(self, merges: Sequence[Pair]):
        self._merges = [(int(a), int(b)) for a, b in merges]
        self._ranks = {pair: NUM_BASE + i for i, pair in enumerate(self._merges)}  # pair -> merged id
        self._bytes = [b""] * NUM_SPECIAL + [bytes([b]) for b in range(256)]  # id -> the bytes it stands for
        for i, (a, b) in enumerate(self._merges):
            if not (0 <= a < NUM_BASE + i and 0 <= b < NUM_BASE + i) or a < NUM_SPECIAL or b < NUM_SPECIAL:
                raise ValueError(f"merge {i} = ({a}, {b}) must join two earlier non-special ids "
                                 f"in [{NUM_SPECIAL}, {NUM_BASE + i})")
            self._bytes.append(self._bytes[a] + self._bytes[b])
        if len(self._ranks) != len(self._merges):
            raise ValueError("merges contain the same pair twice")
        self._pattern = re.compile(WORD_PATTERN)
        self._cache: dict[str, list[int]] = {}  # word -> its ids; grows with the distinct words seen

    # ---- ids ---------------------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def vocab_size(self) -> int:
        """Number of ids in use: 259 + number of merges (every id is < vocab_size)."""
        return NUM_BASE + len(self._merges)

    @property
    def merges(self) -> list[Pair]:
        """The learned merges in order: merge i joins (a, b) into id 259 + i."""
        return list(self._merges)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes an id stands for (b"" for PAD/BOS/EOS)."""
        return self._bytes[token_id]

    # ---- training ----------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> Tokenizer:
        """Learn up to `vocab_size - 259` merges from `texts` (fewer if every word becomes one token)."""
        if not isinstance(vocab_size, (int, np.integer)) or vocab_size < NUM_BASE:
            raise ValueError(f"vocab_size must be an int >= {NUM_BASE} (3 specials + 256 bytes), "
                             f"got {vocab_size!r}")
        pattern = re.compile(WORD_PATTERN)
        word_counts = Counter(w for t in _check_texts(texts, "texts") for w in pattern.findall(t))
        words = [_byte_ids(w) for w in word_counts]  # each distinct word as a list of ids
        counts = list(word_counts.values())

        # pair -> sum of count(word) * occurrences in word; pair -> indices of the words that contain it
        pair_counts: Counter[Pair] = Counter()
        where: defaultdict[Pair, set[int]] = defaultdict(set)

        def add(w: int, sign: int) -> None:
            for pair in zip(words[w], words[w][1:]):
                pair_counts[pair] += sign * counts[w]
                if sign > 0:
                    where[pair].add(w)

        for w in range(len(words)):
            add(w, +1)
        # a max-heap of (-count, pair); stale entries (count changed since the push) are skipped on pop
        heap = [(-c, p) for p, c in pair_counts.items()]
        heapq.heapify(heap)

        merges: list[Pair] = []
        while len(merges) < vocab_size - NUM_BASE and heap:
            neg_count, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -neg_count or neg_count == 0:
                continue
            new_id = NUM_BASE + len(merges)
            merges.append(pair)
            touched: set[Pair] = set()
            for w in where.pop(pair):
                old_pairs = set(zip(words[w], words[w][1:]))
                add(w, -1)
                words[w] = _merge(words[w], pair, new_id)
                add(w, +1)
                new_pairs = set(zip(words[w], words[w][1:]))
                for p in old_pairs - new_pairs:
                    where[p].discard(w)
                touched |= old_pairs | new_pairs
            del pair_counts[pair]
            for p in touched - {pair}:
                heapq.heappush(heap, (-pair_counts[p], p))
        return cls(merges)

    # ---- encoding ----------------------------------------------------------------------------------
    def _encode_word(self, word: str) -> list[int]:
        """BPE on one word: repeatedly apply the earliest-learned merge present among adjacent pairs."""
        ids = _byte_ids(word)
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: self._ranks.get(p, np.inf))
            if pair not in self._ranks:
                break
            ids = _merge(ids, pair, self._ranks[pair])
        return ids

    def encode(self, text: str) -> list[int]:
        """str -> ids (no BOS/EOS)."""
        ids: list[int] = []
        cache = self._cache
        for word in self._pattern.findall(_check_str(text, "text")):
            if word not in cache:
                cache[word] = self._encode_word(word)
            ids.extend(cache[word])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """ids -> str, skipping PAD/BOS/EOS; bytes that are not valid UTF-8 become U+FFFD."""
        ids_N = np.asarray(ids)
        if ids_N.size and (ids_N.ndim != 1 or ids_N.dtype.kind not in "iu"):
            raise ValueError(f"decode expects a flat sequence of int ids, got {ids_N.dtype} {ids_N.shape}")
        ids = ids_N.astype(np.int64).tolist()
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside this tokenizer's vocabulary [0, {self.vocab_size})")
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")

    def encode_batch(self, texts: Sequence[str], context_length: int) -> np.ndarray:
        """texts -> int32 (B, T) rows `BOS ids EOS PAD...`; a long text keeps its first T - 2 ids + EOS."""
        texts = _check_texts(texts, "texts")
        if not isinstance(context_length, (int, np.integer)) or context_length < 2:
            raise ValueError(f"context_length must be an int >= 2 (room for BOS and EOS), "
                             f"got {context_length!r}")
        T = int(context_length)
        row_of: dict[str, int] = {}  # distinct text -> its row in the table below (captions repeat)
        inverse_B = np.fromiter((row_of.setdefault(t, len(row_of)) for t in texts), np.int64, len(texts))
        table_UT = np.full((len(row_of), T), PAD_ID, np.int32)
        for u, text in enumerate(row_of):
            ids = self.encode(text)[:T - 2]
            table_UT[u, :len(ids) + 2] = [BOS_ID, *ids, EOS_ID]
        return table_UT[inverse_B]  # (B, T)

    # ---- persistence -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A human-readable description: the merges as id pairs, and every merged token as text."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "special_tokens": SPECIAL_TOKENS,
            "byte_offset": NUM_SPECIAL,
            "word_pattern": WORD_PATTERN,
            "vocab_size": self.vocab_size,
            "merges": [list(p) for p in self._merges],
            "merged_tokens": {str(NUM_BASE + i): self._bytes[NUM_BASE + i].decode("utf-8", "backslashreplace")
                              for i in range(len(self._merges))},  # for reading only; load ignores it
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a minimodal tokenizer file (invalid JSON: {e}); "
                             "re-create it with Tokenizer.train(...).save(path)") from None
        expected = {"format": FORMAT, "version": VERSION, "byte_offset": NUM_SPECIAL,
                    "word_pattern": WORD_PATTERN, "special_tokens": SPECIAL_TOKENS}
        wrong = [k for k, v in expected.items() if data.get(k) != v] if isinstance(data, dict) else ["{...}"]
        if wrong:
            raise ValueError(f"{path} is not a {FORMAT} v{VERSION} tokenizer file (wrong or missing: "
                             f"{', '.join(wrong)}); re-create it with Tokenizer.train(...).save(path)")
        merges = data.get("merges")
        if not isinstance(merges, list) or not all(
                isinstance(m, list) and len(m) == 2 and all(isinstance(i, int) for i in m) for m in merges):
            raise ValueError(f"{path}: 'merges' must be a list of [int, int] pairs")
        tokenizer = cls([tuple(m) for m in merges])
        if data.get("vocab_size") != tokenizer.vocab_size:
            raise ValueError(f"{path}: vocab_size {data.get('vocab_size')} does not match its "
                             f"{len(merges)} merges (expected {tokenizer.vocab_size})")
        return tokenizer

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"
