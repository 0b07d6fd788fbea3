# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Text to integers: the one tokenizer
#
# **Expected run time:** about 20 seconds on a 2-core CPU (fast mode, `MINIMODAL_FAST=1`: about 10 s).
#
# Every model in minimodal reads text — CLIP embeds captions, DALL-E writes an image after a caption,
# DDPM is guided by one — and a neural network reads numbers, not letters. So text first becomes a
# list of integer *ids*, one per *token*. This lesson builds the tokenizer that all of them share:
# **byte-level byte-pair encoding (BPE)**, trained from scratch, live, on the captions of the `shapes`
# data set.
#
# 1. Start from bytes: 256 ids that can spell any string in any language, plus three special ids.
# 2. BPE: repeatedly glue the most frequent adjacent pair of tokens into a new token.
# 3. Watch the vocabulary grow and the captions shrink; measure compression against vocabulary size.
# 4. Batches for the models: `BOS ids EOS PAD...` with a fixed context length.
# 5. Why one tokenizer, saved next to every model.

# %%
import html
import json
import re
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, display

from minimodal.data import shapes
from minimodal.lessons import BIG, FAST, RUNS
from minimodal.tokenizer import NUM_BASE, WORD_PATTERN, Tokenizer

# on a GPU/TPU machine (BIG): more captions (BPE itself runs on the CPU)
N_CAPTIONS = 2_000 if FAST else 100_000 if BIG else 20_000
VOCAB_SIZE = 384  # the default `vocab_size` of every model's config

# Half one-object scenes ("a small red circle at the top left"), half two-object scenes ("... left of ...").
captions = (shapes.generate(N_CAPTIONS // 2, size=16, seed=0, objects=1)["captions"]
            + shapes.generate(N_CAPTIONS // 2, size=16, seed=0, objects=2)["captions"])
print(f"{len(captions):,} captions, {len(set(captions)):,} distinct; for example:")
for c in captions[:3] + captions[-3:]:
    print("   ", c)

# %% [markdown]
# ## 1. Bytes: a vocabulary that can spell anything
#
# UTF-8 writes every Unicode character as 1 to 4 bytes, so 256 byte values spell every string — English,
# accents, Japanese, emoji — and no text is ever "unknown". minimodal's ids are
#
# | id | meaning |
# | --- | --- |
# | 0 | PAD: filler after the end of a short caption |
# | 1 | BOS: beginning of sequence |
# | 2 | EOS: end of sequence (CLIP reads its text embedding here) |
# | 3 … 258 | the byte values 0 … 255 (id = 3 + byte) |
# | 259 … | merged tokens learned by BPE, in the order they were learned |
#
# Bytes alone make long sequences: every letter is one position the model must attend over.

# %%
for text in ["a red circle", "é", "日本", "🔴"]:
    raw = text.encode("utf-8")
    print(f"{text!r:16} {len(text)} characters -> {len(raw)} bytes {list(raw)} -> ids {[3 + b for b in raw]}")

# %% [markdown]
# ## 2. One BPE step, by hand
#
# Byte-pair encoding (Sennrich et al., 2016; byte-level as in GPT-2) learns the vocabulary from data:
#
# 1. split the text into words — each word keeps its leading space, so `" red"` and `"red"` differ and
#    the spaces survive the round trip;
# 2. write each word as its bytes and count every adjacent pair, weighted by how often the word occurs:
#    $\text{count}(a, b) = \sum_{w} n(w) \cdot \#\{i : w_i = a,\ w_{i+1} = b\}$ over the distinct words $w$;
# 3. the most frequent pair becomes a new token (ties: the smallest ids), and every occurrence is replaced;
# 4. repeat until the vocabulary has the size we asked for.
#
# Here is step 2–3 in plain Python; the library must agree with it.

# %%
words = Counter(w for c in captions for w in re.findall(WORD_PATTERN, c))
print("word counts:", dict(words.most_common(8)), "...")

pair_counts = Counter()
for word, n in words.items():
    b = word.encode("utf-8")
    for pair in zip(b, b[1:]):
        pair_counts[pair] += n
best = min(pair_counts, key=lambda p: (-pair_counts[p], p))  # most frequent, then smallest
print(f"most frequent pair: {bytes(best)!r} seen {pair_counts[best]:,} times")

tok = Tokenizer.train(captions, VOCAB_SIZE)
np.testing.assert_array_equal(tok.merges[0], (3 + best[0], 3 + best[1]))  # bytes b -> ids 3 + b
print("the library's first merge:", tok.merges[0], "=", tok.token_bytes(NUM_BASE))

# %% [markdown]
# The whole algorithm is that step in a loop. A ten-line version, recounting everything after each merge,
# reproduces the library's first merges exactly (the library keeps the counts up to date incrementally
# instead, which is what makes it fast on large corpora).

# %%
def tiny_bpe(words: Counter, n_merges: int) -> list[tuple[int, int]]:
    seqs = {w: [3 + b for b in w.encode("utf-8")] for w in words}  # every word as ids
    merges = []
    for new_id in range(NUM_BASE, NUM_BASE + n_merges):
        counts = Counter()
        for w, ids in seqs.items():
            for pair in zip(ids, ids[1:]):
                counts[pair] += words[w]
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        for w, ids in seqs.items():  # replace each occurrence, left to right
            out = []
            for i in ids:
                if out and (out[-1], i) == pair:
                    out[-1] = new_id
                else:
                    out.append(i)
            seqs[w] = out
    return merges


np.testing.assert_array_equal(tiny_bpe(words, 10), tok.merges[:10])
print("tiny_bpe agrees with Tokenizer.train on the first 10 merges")

# %% [markdown]
# ## 3. Watching the vocabulary grow
#
# The merges, in the order they were learned. Each new token joins two earlier tokens; common
# pieces (`" c"`, `"le"`) come first, whole words (`" circle"`, `" square"`) soon after.

# %%
def show(token_id: int) -> str:
    return repr(tok.token_bytes(token_id).decode("utf-8", "backslashreplace"))


rows = [f"{NUM_BASE + i:4d} = {show(a):>12} + {show(b):<12} -> {show(NUM_BASE + i)}"
        for i, (a, b) in enumerate(tok.merges)]
print("\n".join(rows[:24]), "\n...\n" + "\n".join(rows[-6:]))
print(f"\nasked for {VOCAB_SIZE} ids, learned {len(tok.merges)} merges -> vocab_size {tok.vocab_size}")

# %% [markdown]
# Training stopped before 384: the caption language of `shapes` has only a few dozen distinct words, and
# once every word is a single token there is no pair left to merge (BPE never merges across words).
# Real caption sets (COCO) have tens of thousands of words and use every id they are given.
#
# Because training is greedy and deterministic, a smaller vocabulary is exactly a prefix of a larger one,
# so we can watch one caption being split with the first $k$ merges:

# %%
COLOURS = ["#fde2e4", "#cde7f0", "#e2f0cb", "#fff1c1", "#e8dff5"]


def token_html(tokenizer: Tokenizer, text: str) -> str:
    """The text with each token on its own coloured background."""
    spans = [f'<span style="background:{COLOURS[i % len(COLOURS)]};padding:1px;white-space:pre">'
             f'{html.escape(tokenizer.token_bytes(t).decode("utf-8", "replace"))}</span>'
             for i, t in enumerate(tokenizer.encode(text))]
    return "".join(spans)


caption = "a small purple triangle left of a large white cross"
lines = []
for k in [0, 5, 10, 20, 40, len(tok.merges)]:
    partial = Tokenizer(tok.merges[:k])
    lines.append(f"<tr><td>{k} merges</td><td>{len(partial.encode(caption))} tokens</td>"
                 f"<td style='font-family:monospace'>{token_html(partial, caption)}</td></tr>")
display(HTML("<table>" + "".join(lines) + "</table>"))
print(caption, "->", tok.encode(caption))

# %% [markdown]
# ## 4. Compression against vocabulary size
#
# The point of BPE: fewer tokens per caption means shorter sequences for every model (attention costs
# grow with the square of the length), at the price of a larger embedding table. We measure bytes per
# token on captions the tokenizer never saw (a different seed).

# %%
held_out = shapes.generate(500, size=16, seed=1, objects=2)["captions"]
sizes = sorted({NUM_BASE, *range(NUM_BASE + 5, tok.vocab_size, 3 if FAST else 1), tok.vocab_size})
n_bytes = sum(len(c.encode("utf-8")) for c in held_out)
bytes_per_token = [n_bytes / sum(len(Tokenizer(tok.merges[:v - NUM_BASE]).encode(c)) for c in held_out)
                   for v in sizes]

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(sizes, bytes_per_token, marker=".")
ax.set(xlabel="vocabulary size (ids)", ylabel="bytes per token (held-out captions)",
       title="BPE on shapes captions: compression vs vocabulary")
ax.grid(alpha=0.3)
plt.show()
print(f"bytes only: {bytes_per_token[0]:.2f} bytes/token; all {len(tok.merges)} merges: "
      f"{bytes_per_token[-1]:.2f} bytes/token (about one token per word)")

# %% [markdown]
# ## 5. Anything round-trips — even text it never saw
#
# Unseen words fall back to smaller pieces and, at worst, to single bytes; there is no "unknown" token.
# Decoding joins the bytes of the ids and reads them as UTF-8, so `decode(encode(s)) == s` for every
# string (the test suite checks this on random Unicode with `hypothesis`).

# %%
for text in ["a red circle 🔴✨", "un cercle rouge à gauche", "a hexagon", ""]:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    print(f"{text!r:28} -> {len(ids):2d} ids {ids}")
display(HTML(f"<p style='font-family:monospace'>{token_html(tok, 'a red circle 🔴✨')}</p>"))
print("the emoji are raw bytes:", [tok.token_bytes(i) for i in tok.encode("🔴")])

# %% [markdown]
# ## 6. Batches for the models
#
# Models read fixed-size integer arrays. `encode_batch(texts, T)` gives int32 `(B, T)`:
# `BOS ids EOS` then PAD. A caption longer than the context keeps its first $T - 2$ ids and still ends with
# EOS, because CLIP's text encoder reads its summary of the caption at the EOS position.

# %%
batch = ["a red circle", "a small purple triangle left of a large white cross", ""]
tokens_BT = tok.encode_batch(batch, context_length=8)
print(tokens_BT)
for row, text in zip(tokens_BT, batch):
    print(f"{text!r:56} -> {tok.decode(row)!r}")
assert tokens_BT.dtype == np.int32 and (tokens_BT[:, 0] == tok.bos_id).all()
assert tokens_BT[1, -1] == tok.eos_id  # truncated, still ends with EOS
lengths = np.array([len(tok.encode(c)) + 2 for c in captions])
print(f"captions need {lengths.min()}..{lengths.max()} positions with BOS and EOS; the models' default "
      "context_length is 24")

# %% [markdown]
# ## 7. Why every model shares one tokenizer
#
# An id means nothing by itself: id 300 is whatever the 42nd merge happened to be. A tokenizer trained on
# other captions numbers its tokens differently, so a model trained with one tokenizer and fed ids from
# another reads garbage. That is why minimodal has exactly one tokenizer class, trains it once on the
# chosen data source's captions, and saves it as human-readable JSON in every model's work directory,
# next to the weights. CLIP, DALL-E and DDPM trained on the same source then turn one prompt into the
# same ids, and a model reloaded from its work directory reads text exactly as it did in training.

# %%
digit_captions = ["a handwritten digit seven", "the number three", "a drawing of the number five"]
other = Tokenizer.train(digit_captions * 50, VOCAB_SIZE)
print("shapes tokenizer:", tok.encode("a red circle"))
print("digits tokenizer:", other.encode("a red circle"), "<- same text, different ids")
print(f"id 300 is {tok.token_bytes(300)!r} to one and {other.token_bytes(300)!r} to the other")

path = tok.save(RUNS / "01_tokenizer" / "tokenizer.json")
saved = json.loads(path.read_text(encoding="utf-8"))
print(f"\n{path} ({path.stat().st_size:,} bytes):",
      {k: saved[k] for k in ["format", "special_tokens", "vocab_size"]},
      "\nfirst merges:", saved["merges"][:4], "\nmerged tokens:", list(saved["merged_tokens"].items())[-4:])
reloaded = Tokenizer.load(path)
np.testing.assert_array_equal(reloaded.encode_batch(captions[:100], 24), tok.encode_batch(captions[:100], 24))
print("reloaded tokenizer gives identical batches")

# %% [markdown]
# ## Summary
#
# - Text -> UTF-8 bytes -> ids 3..258, plus PAD = 0, BOS = 1, EOS = 2: every string is representable.
# - BPE glues the most frequent adjacent pair into a new id, again and again; the learned merges are the
#   whole tokenizer. On shapes captions it reaches one token per word (~4 bytes per token).
# - `encode_batch` gives the models int32 `(B, T)` arrays `BOS ids EOS PAD...`.
# - One tokenizer, trained on the data source and saved with each model, so all models agree on what each
#   id means.
#
# Next: the CLIP lesson turns these ids — and images — into vectors that live in one shared space.

# %% [markdown]
# ## What you should have seen
#
# From the run recorded in this notebook (`make lessons`, 2026-12-02, 2-core CPU, 9 s). Nothing here is random
# beyond the caption seeds, so your numbers should be identical.
#
# - **20,000** captions, **5,405** distinct; the most frequent pair is `b'le'`, seen **25,215** times, and it
#   is the library's first merge; `tiny_bpe` agrees with the library on the first 10 merges.
# - Training stops after **90 merges** (vocab_size **349**, not the 384 asked for): the last merge builds
#   `' center'`.
# - Compression goes from **1.00** byte per token (bytes only) to **5.00** (all merges): about a word a token.
# - Unseen text still round-trips: `'a red circle 🔴✨'` is **11** ids, the French caption **19**.
# - Captions need **5 to 12** positions with BOS and EOS; the same text gets different ids from a tokenizer
#   trained on digit captions.
