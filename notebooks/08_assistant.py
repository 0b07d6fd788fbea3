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
# # 08 · The assistant: speech or text in, the right model answers, pictures out
#
# **Expected run time:** about 4 minutes on a 2-core CPU with the work directories below trained beforehand
# (the request model alone takes about 5 minutes to train here if it is missing); fast mode
# (`MINIMODAL_FAST=1`, tiny models that learn little): about a minute.
#
#     minimodal train assistant --data requests --workdir runs/assistant
#     minimodal train ddpm --data shapes --workdir runs/ddpm
#     minimodal train clip --data shapes --workdir runs/clip
#     minimodal train whisper --data spoken_shapes --workdir runs/whisper
#
# ChatGPT's multimodal pipeline is a chain: speech becomes text (Whisper), a language model understands the
# request and writes a precise prompt, an image model draws it (DALL-E 3) — or the request goes to another
# capability. Here is the same chain built from this project's own small models:
#
# ```
#  speech ──whisper──▶ request ──request model──▶ command ──────────▶ answer
#                                                 draw: CAPTION       DDPM (or DALL-E) draws it
#                                                 find: CAPTION in <folder>   CLIP searches the folder
#                                                 classify / describe: <image>   CLIP reads the picture
#                                                 vary: <image>       DALL-E 2 (or CLIP describe + redraw)
#                                                 chat: ANSWER        the request model answers itself
# ```
#
# 1. The requests: free text paired with the command it means; held-out phrasings.
# 2. The request model: a decoder-only transformer that continues `request \n` with the command.
# 3. How well it understands: exact-match accuracy, on the training phrasings and on unseen ones.
# 4. The chain on one request, each stage's output shown.
# 5. End to end, spoken: where the errors come from.
# 6. `minimodal chat` and the web page.

# %%
import time

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx

from minimodal import assistant, ddpm
from minimodal.assistant import Assistant, MissingModel
from minimodal.data import requests, shapes
from minimodal.lessons import FAST, RUNS, preset, show, workdir
from minimodal.train import fit, read_metrics

PRESET = preset()
t_start = time.perf_counter()

# %% [markdown]
# ## 1. Requests and the commands they mean
#
# `minimodal.data.requests` fills templates with synonyms ("crimson", "ball", "up in the left corner"),
# politeness and fillers in varied word order, and pairs each request with its command in the *caption
# language* the image models were trained on. The `holdout` split uses templates, fillers and phrasings never
# seen in training. A word the model has never seen cannot be understood by a model trained from scratch — so
# the held-out phrasings keep the word that carries the meaning and wrap it in unknown ones ("a *deep* green
# square *thing*", "*very* small", "*kindly* ... *if possible*"), and the training requests carry made-up
# words (random letters) so the model learns to skip what it does not know.

# %%
for split in ("train", "holdout"):
    data = requests.examples(split, 6, seed=1)
    print(f"--- {split}")
    for text, command in zip(data["requests"], data["commands"]):
        print(f"{text!r:80} -> {command}")

# %% [markdown]
# ## 2. The request model
#
# The toy counterpart of the language model: a small decoder-only transformer over the shared BPE tokenizer.
# Each training string is `BOS request \n command EOS`; the loss is the cross-entropy of the command tokens
# only, $-\frac{1}{|C|}\sum_{t \in C} \log p(x_{t+1} \mid x_{\le t})$ with $C$ the positions after the
# newline. Re-derived in numpy, then checked against the library's mask:

# %%
sep = assistant.SEPARATOR_ID
tokens = np.array([[1, 40, 41, sep, 50, 51, 2, 0]])  # BOS r r \n c c EOS PAD
after_newline = np.cumsum(tokens == sep, axis=1) > 0
mine = after_newline[:, :-1] & (tokens[:, 1:] != 0)  # predict token t+1 from tokens <= t
np.testing.assert_array_equal(mine, np.asarray(assistant.command_mask(jnp.asarray(tokens))))
print("positions whose next token is learned:", mine.astype(int))

# %% [markdown]
# Training goes through the one trainer, like every model (`minimodal train assistant ...` above writes the
# same work directory this cell reads back).

# %%
CONFIG = assistant.PRESETS[PRESET]
WORKDIR = workdir("assistant", PRESET)
run = fit(assistant.FAMILY, CONFIG, WORKDIR, progress=False)
rows = read_metrics(WORKDIR)
plt.figure(figsize=(5, 3))
plt.plot([r["step"] for r in rows], [r["loss"] for r in rows])
plt.yscale("log")
plt.xlabel("step")
plt.ylabel("command cross-entropy")
plt.title("request model")
plt.show()
request_model = assistant.pipeline(run.model, CONFIG, run.tokenizer)

# %% [markdown]
# Decoding is greedy, one compiled `lax.fori_loop` with a KV cache: the request is fed one token per step
# (forced), then the model continues from its own predictions, so requests of different lengths decode
# together. The cached loop must give what the slow way gives — the whole sequence through the model at
# every step:

# %%
graphdef, state = nnx.split(run.model)
prompt = [1, *run.tokenizer.encode("could you sketch me a little crimson ball up in the left corner?"), sep]
fast = np.asarray(assistant._greedy(graphdef, state, np.array([prompt], np.int32), np.array([len(prompt)]),
                                    CONFIG.context_length))[0]
forward = nnx.jit(lambda model, tokens: model(tokens))
slow, width = list(prompt), len(prompt) + 14
while len(slow) < width and 2 not in slow[len(prompt):]:  # (padded to one width: causal, so unseen)
    logits = forward(run.model, jnp.array([slow + [0] * (width - len(slow))]))[0, len(slow) - 1]
    slow.append(int(jnp.argmax(logits)))
assert fast[:len(slow)].tolist() == slow
print(run.tokenizer.decode(slow[len(prompt):]))

# %% [markdown]
# ## 3. How well it understands
#
# Exact match: the whole command must be right, word for word. `test` uses the training templates and
# phrasings (other draws); `holdout` only unseen ones.

# %%
results = assistant.evaluate(run.model, CONFIG, run.tokenizer)
print(f"{'intent':10} {'test':>7} {'holdout':>8}")
for intent in ("exact_match", *requests.INTENTS):
    print(f"{intent:10} {results[f'test_{intent}']:7.1%} {results[f'holdout_{intent}']:8.1%}")

data = requests.examples("holdout", 200, seed=CONFIG.seed)
wrong = [(r, c, p) for r, c, p in zip(data["requests"], data["commands"], request_model.commands(data["requests"]))
         if c != p]
print(f"\n{len(wrong)} of 200 held-out requests wrong; the first few:")
for text, command, predicted in wrong[:6]:
    print(f"  {text!r}\n    wanted {command!r}\n    wrote  {predicted!r}")

# %% [markdown]
# ## 4. The chain on one request
#
# `Assistant(runs)` finds each model as a work directory under one folder (`runs/assistant`, `runs/ddpm`,
# `runs/clip`, `runs/whisper`; `runs/models.json` may point elsewhere) and says which `minimodal train`
# command makes any that is missing. In fast mode, a tiny DDPM stands in for the real one.

# %%
helper = Assistant(RUNS)
helper.paths["assistant"] = WORKDIR
if FAST:
    helper.paths["ddpm"] = workdir("ddpm", PRESET)
    fit(ddpm.FAMILY, ddpm.PRESETS[PRESET], helper.paths["ddpm"], progress=False)
request = "could you sketch me a little crimson ball up in the left corner?"
answer = helper.ask(request)
print(f"request : {request}\ncommand : {answer.command}\nanswer  : {answer.text}")
print("seconds :", {k: round(v, 3) for k, v in answer.seconds.items()})
show(np.stack(answer.images), title=answer.command, upscale=6)

# %% [markdown]
# The other capabilities need CLIP: `classify` and `describe` read an attached picture (describe picks the
# best of the 720 one-object captions), `find` searches a folder, `vary` redraws (DALL-E 2's decoder would
# vary the picture itself; it is not trained in this project yet).

# %%
picture = shapes.generate(1, size=32, seed=5)
print("the picture's own caption:", picture["captions"][0])
for text in ("what shape is this?", "please describe this image", "hello", "tell me a joke"):
    try:
        reply = helper.ask(text, image=picture["images"][0])
        print(f"{text!r:32} -> {reply.command!r:28} -> {reply.text}")
    except MissingModel as missing:
        print(f"{text!r:32} -> {missing}")

# %% [markdown]
# ## 5. End to end, spoken: where do the errors come from?
#
# `evaluate_chain` says draw requests with the **held-out voices and speaking rates** of `spoken_shapes`, and
# charges each failure to the first stage that got it wrong: speech → text (the transcript is not the caption),
# text → command, command → image (the exact grader does not read the asked colour and shape). Without a
# trained Whisper it types the captions instead.

# %%
spoken = helper.available("whisper") and not FAST
chain = assistant.evaluate_chain(helper, n=8 if FAST else 96, spoken=spoken)
print(f"{'spoken, held-out voices' if spoken else 'typed'}: {chain['n']} draw requests, generator {chain['generator']}")
print(f"  right end to end: {chain['correct']:.1%}")
for stage, share in chain["errors"].items():
    print(f"  lost at {stage:18} {share:6.1%}")
print("  seconds per request:", {stage: round(s, 4) for stage, s in chain["seconds"].items()})
for said, heard, command in chain["examples"][:4]:
    print(f"  said {said!r} -> heard {heard!r} -> {command!r}")

# %% [markdown]
# ## 6. Try it
#
#     minimodal chat                                  # type requests; --image PNG to ask about a picture
#     minimodal chat --once "draw a big blue box" --json
#     minimodal chat --audio request.wav             # speech in (needs runs/whisper)
#     pip install -e ".[demo]" && minimodal demo     # the web page: text, microphone, image upload
#
# ![the demo page](../docs/demo_page.png)
#
# Or right here: set `TRY_IT = True` (in Jupyter, with `pip install -e ".[demo]"`) and the page opens inline.

# %%
TRY_IT = False
if TRY_IT:
    from minimodal import demo

    demo.build(RUNS).launch(inline=True, prevent_thread_lock=True)
print(f"lesson time: {time.perf_counter() - t_start:.0f} s")

# %% [markdown]
# ## What you should have seen
#
# (From the recorded run on a 2-core CPU, 2026-12-02; your numbers will differ a little.)
#
# - The request model's exact-match accuracy: **99.7%** on `test` and **98.6%** on the held-out phrasings
#   (chat is the weakest intent held out: 92.7%, requests made of words never seen).
# - "could you sketch me a little crimson ball up in the left corner?" → `draw: a small red circle at the top
#   left`, and four red blobs from the DDPM (the first request's seconds include compiling the samplers).
# - `classify` and `describe` of a small white triangle read back as "white triangle" / "a small white
#   triangle"; "tell me a joke" → the polite refusal.
# - End to end over 96 spoken draw requests with held-out voices: **76%** right; 19.8% lost at speech → text
#   (mostly a colour heard wrong), 0% at text → command, 4.2% at command → image. Typed instead of spoken, the
#   same captions come out right 94% of the time: the ear is the weakest link.
