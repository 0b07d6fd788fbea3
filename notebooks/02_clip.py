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
# # 02 · CLIP: one embedding space for images and text
#
# **Expected run time:** about 9 minutes on a 2-core CPU (fast mode, `MINIMODAL_FAST=1`: under 2 minutes;
# on a GPU the bigger `gpu` preset runs in a few minutes).
#
# CLIP (Radford et al., 2021) learns two encoders — one for images, one for text — whose outputs land
# in the *same* vector space, so that a picture and a caption that describes it point the same way.
# Nothing in training says "this is class 7": the only signal is which caption belongs to which image.
# Yet the result classifies images into classes it was never told about ("zero-shot"), retrieves images
# for free-text queries, and later in this course steers image generators.
#
# 1. Cosine similarity: the geometry of the shared space.
# 2. The contrastive objective (InfoNCE) and its temperature.
# 3. Training a small CLIP on `shapes`, with its loss curve.
# 4. The image–text similarity matrix.
# 5. Zero-shot classification with prompt templates.
# 6. Text-based image search.
# 7. Held-out compositions: does "red triangle" work if it was never seen?
# 8. Linear probe vs zero-shot.
# 9. False negatives: captions that are true of other images in the batch.
# 10. Spurious features: the "sheep on grass" problem.

# %%

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import minimodal
from minimodal import clip, train
from minimodal.clip_tasks import SHAPES_TEMPLATES, linear_probe, retrieval_recall
from minimodal.config import override
from minimodal.data import Batches, load_examples, shapes
from minimodal.lessons import FAST, RUNS, preset, show

PRESET = preset(cpu="tour")
CONFIG = clip.PRESETS[PRESET]
N_TEST = 240 if FAST else 1200
print(f"backend {jax.default_backend()}, preset {PRESET!r}: {CONFIG.steps} steps of batch {CONFIG.batch_size}, "
      f"{CONFIG.encoder} image encoder")


# %% [markdown]
# ## 1. Cosine similarity: the geometry of the shared space
#
# Each encoder ends with a linear projection to $E$ numbers and an L2 normalisation, so every image
# and every caption becomes a point on the unit sphere in $\mathbb{R}^E$. How well a caption fits an
# image is the cosine of the angle between them — for unit vectors, just the dot product:
#
# $$\cos(x, y) = \frac{x \cdot y}{\lVert x\rVert\,\lVert y\rVert} = \hat x \cdot \hat y \in [-1, 1].$$
#
# Normalising throws away the length, which would otherwise let an encoder "shout" (a long vector
# scores high against everything). Let's check the library's normalisation against the formula.

# %%
rng = np.random.default_rng(0)
a, b = rng.normal(size=(2, 5, 8))
cos_numpy = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
cos_library = np.sum(np.asarray(clip.l2_normalize(jnp.asarray(a)) * clip.l2_normalize(jnp.asarray(b))), axis=1)
np.testing.assert_allclose(cos_library, cos_numpy, rtol=1e-5)
print("cosine similarities:", np.round(cos_numpy, 3))

# %% [markdown]
# ## 2. The contrastive objective and the temperature
#
# A batch holds $B$ images and their $B$ captions. With normalised embeddings $x_i$ (images) and
# $y_j$ (texts), CLIP forms all $B \times B$ scores $\ell_{ij} = s\, x_i \cdot y_j$ and asks each image
# to pick its own caption out of the batch (a softmax over the row), and each caption to pick its own
# image (a softmax over the column):
#
# $$L = \tfrac12\Big[\underbrace{-\tfrac1B\sum_i \log\frac{e^{\ell_{ii}}}{\sum_j e^{\ell_{ij}}}}_{\text{image}\to\text{text}}
#   \;\underbrace{-\tfrac1B\sum_j \log\frac{e^{\ell_{jj}}}{\sum_i e^{\ell_{ij}}}}_{\text{text}\to\text{image}}\Big].$$
#
# This is InfoNCE: a $B$-way classification whose "classes" are the other pairs in the batch, so the
# batch size is the number of negatives. $s = 1/\tau$ is a **learned** inverse temperature (started at
# $1/0.07 \approx 14.3$, clamped at 100): cosines live in $[-1, 1]$, far too flat for a softmax, and
# $s$ stretches them. We re-derive the loss in numpy and compare it with the library's.

# %%
def infonce_numpy(x, y, s):
    logits = s * x @ y.T
    rows = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))  # log softmax over texts
    cols = logits - np.log(np.exp(logits).sum(axis=0, keepdims=True))  # log softmax over images
    return -0.5 * (np.mean(np.diag(rows)) + np.mean(np.diag(cols)))


x = np.asarray(clip.l2_normalize(jnp.asarray(rng.normal(size=(6, 4)))), np.float64)
y = np.asarray(clip.l2_normalize(jnp.asarray(x + 0.5 * rng.normal(size=(6, 4)))), np.float64)
loss_library, _ = clip.contrastive_loss(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.eye(6), 1 / 0.07)
np.testing.assert_allclose(loss_library, infonce_numpy(x, y, 1 / 0.07), rtol=1e-5)
print(f"InfoNCE at s = 1/0.07: numpy {infonce_numpy(x, y, 1 / 0.07):.4f}, library {float(loss_library):.4f}")

scales = np.geomspace(1, 100, 30)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3))
ax1.plot(scales, [infonce_numpy(x, y, s) for s in scales])
ax1.axhline(np.log(6), ls=":", c="gray", label="log B (chance)")
ax1.set(xscale="log", xlabel="logit scale s = 1/τ", ylabel="InfoNCE", title="the same embeddings, different s")
ax1.legend()
for s in (1, 1 / 0.07, 100):
    ax2.plot(np.exp(s * x[0] @ y.T) / np.exp(s * x[0] @ y.T).sum(), "o-", label=f"s = {s:.0f}")
ax2.set(xlabel="caption j", ylabel="softmax over captions", title="image 0's distribution over captions")
ax2.legend()
plt.show()

# %% [markdown]
# With $s = 1$ every caption gets about the same probability (the loss sits near $\log B$, chance);
# a larger $s$ sharpens the softmax, rewarding embeddings that are already right and punishing
# confident mistakes harder. Learning $s$ lets the model choose how peaked to be as it improves.
#
# ## 3. Training a small CLIP on `shapes`
#
# The image encoder is a small Vision Transformer: the 32×32 image is cut into 4×4 patches, each patch
# becomes a token, a pre-LN transformer mixes them, and the mean over patches is projected to the joint
# space. The text encoder is a causal transformer over the shared BPE tokenizer's tokens, read out at
# the end-of-text token. Training goes through the one trainer (`minimodal.train.fit`), the same as
# `minimodal train clip --data shapes --preset tour` on the command line.

# %%
workdir = RUNS / "02_clip" / PRESET
trained = train.fit(clip.FAMILY, CONFIG, workdir)
pipeline = minimodal.load(workdir)
rows = train.read_metrics(workdir)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3))
ax1.plot([r["step"] for r in rows], [r["loss"] for r in rows])
ax1.set(xlabel="step", ylabel="InfoNCE loss", yscale="log", title="training loss")
ax2.plot([r["step"] for r in rows], [r["scale"] for r in rows])
ax2.set(xlabel="step", ylabel="s = 1/τ", title="learned logit scale")
plt.show()
print(f"{trained.step} steps in {trained.seconds:.0f} s of training; final logit scale {pipeline.scale:.1f} "
      f"(temperature {1 / pipeline.scale:.4f})")

# %% [markdown]
# ## 4. The image–text similarity matrix
#
# Fresh images (rendered with another seed, never trained on) against their own captions. The diagonal
# should light up. Off-diagonal bright cells are not necessarily mistakes: `shapes` repeats captions,
# and "a red circle" is also true of *another* red circle.

# %%
test = shapes.generate(N_TEST, CONFIG.image_size, seed=123)
image_NE = pipeline.embed_images(test["images"])
text_NE = pipeline.embed_texts(test["captions"])
k = 12
sim = image_NE[:k] @ text_NE[:k].T
fig, ax = plt.subplots(figsize=(8, 6))
im = ax.imshow(sim, cmap="viridis")
ax.set_yticks(range(k), [f"image {i}" for i in range(k)], fontsize=7)
ax.set_xticks(range(k), test["captions"][:k], rotation=60, ha="right", fontsize=7)
fig.colorbar(im, label="cosine similarity")
plt.show()
show(test["images"][:k], "the images (rows above)", labels=[f"image {i}" for i in range(k)])
print(retrieval_recall(image_NE, text_NE, test["captions"], test["captions"]))

# %% [markdown]
# ## 5. Zero-shot classification with prompt templates
#
# To classify into the 24 classes "red circle", …, "white cross", embed a *prompt* for each class and
# pick the class whose prompt is most similar to the image. A class name alone ("red circle") is not
# a caption the model has read; "a red circle" is. **Prompt ensembling** goes further: embed the class
# in every template (`a {}`, `a small {} at the top left`, …), normalise, average, renormalise:
#
# $$w_c = \operatorname{normalize}\Big(\tfrac1P \sum_p \operatorname{normalize}(f_{\text{text}}(\text{template}_p(c)))\Big),\qquad
#   p(c \mid \text{image}) = \operatorname{softmax}_c(s\, x \cdot w_c).$$
#
# We compute it by hand and check the library's `zero_shot` against it.

# %%
classes = list(shapes.CLASS_NAMES)


def zero_shot_by_hand(image_NE, templates):
    prompts = pipeline.embed_texts([t.format(c) for c in classes for t in templates])
    w = prompts.reshape(len(classes), len(templates), -1).mean(axis=1)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    logits = pipeline.scale * image_NE @ w.T
    return np.exp(logits - logits.max(1, keepdims=True)) / np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)


probs = pipeline.zero_shot(test["images"])  # all 30 caption templates of shapes
np.testing.assert_allclose(probs, zero_shot_by_hand(image_NE, SHAPES_TEMPLATES), rtol=1e-3, atol=1e-5)
for name, templates in [("bare class name '{}'", ["{}"]), ("'a {}'", ["a {}"]),
                        (f"ensemble of {len(SHAPES_TEMPLATES)} caption templates", SHAPES_TEMPLATES)]:
    accuracy = (zero_shot_by_hand(image_NE, templates).argmax(1) == test["labels"]).mean()
    print(f"24-way zero-shot accuracy with {name:45s} {accuracy:.1%}")

# %% [markdown]
# ## 6. Text-based image search
#
# Search is zero-shot classification turned around: embed one free-text query and rank a collection of
# images by their cosine similarity to it. `pipeline.search(images_or_folder, query, k)` does this
# (and `minimodal search --workdir DIR --images PATH "a red circle"` on the command line).

# %%
for query in ["a blue square", "a large yellow circle", "a small white cross at the top left", "a purple triangle on the right"]:
    matches = pipeline.search(test["images"], query, k=8)
    show([m["image"] for m in matches], f"“{query}”", labels=[f"{m['score']:.2f}" for m in matches])

# %% [markdown]
# ## 7. Held-out compositions: does "red triangle" work if it was never seen?
#
# The `train` split never contains a red triangle, a green circle, a blue cross or a yellow square —
# but it has red things, triangles, and so on. The `holdout` split contains only those four pairs.
# Recognising them needs *compositional* generalisation: colour and shape represented separately in
# both encoders, and combined in a new way at test time.

# %%
held = shapes.generate(N_TEST // 3, CONFIG.image_size, seed=123, split="holdout")
held_pred = pipeline.zero_shot(held["images"]).argmax(1)
print(f"24-way zero-shot accuracy on held-out pairs: {(held_pred == held['labels']).mean():.1%}"
      f"  (colour right {(held_pred // 4 == held['labels'] // 4).mean():.1%}, "
      f"shape right {(held_pred % 4 == held['labels'] % 4).mean():.1%})")
for c, s in shapes.HOLDOUT_PAIRS:
    label = list(shapes.COLORS).index(c) * 4 + shapes.SHAPES.index(s)
    mine = held_pred[held["labels"] == label]
    guesses = np.bincount(mine, minlength=24)
    top = np.argsort(-guesses)[:3]
    print(f"  {c} {s:8s}: {np.mean(mine == label):6.1%} right; most often called "
          + ", ".join(f"{classes[t]} ({guesses[t] / len(mine):.0%})" for t in top if guesses[t]))
show(held["images"][:10], "held-out images and what CLIP calls them", labels=[classes[p] for p in held_pred[:10]])

# %% [markdown]
# ## 8. Linear probe vs zero-shot
#
# Zero-shot uses only the text encoder to build the classifier. A *linear probe* instead fits a logistic
# regression on the frozen image embeddings with labelled examples. It measures what the image
# embedding *contains*, whether or not the text side can point at it.

# %%
probe_train = shapes.generate(N_TEST, CONFIG.image_size, seed=7)
W, b = linear_probe(pipeline.embed_images(probe_train["images"]), probe_train["labels"], 24)
print(f"linear probe accuracy on fresh train-distribution images: "
      f"{((image_NE @ W + b).argmax(1) == test['labels']).mean():.1%}")
print(f"zero-shot accuracy on the same images:                     {(probs.argmax(1) == test['labels']).mean():.1%}")
print("(the probe cannot score held-out pairs: it has never seen a labelled example of them)")

# %% [markdown]
# ## 9. False negatives: captions that are true of other images
#
# InfoNCE treats every other caption in the batch as wrong for image $i$. `shapes` has only a few
# hundred distinct captions, so a batch of 128 repeats many of them. Two kinds of repeats:
#
# * **Identical captions.** Their token rows are identical, so the text encoder gives them *identical*
#   embeddings $y_j = y_k$. Then columns $j$ and $k$ of the score matrix are equal, and the loss already
#   cannot tell them apart: spreading the target over both ("share the target mass") gives exactly the
#   same loss and gradients as plain CLIP. We check that numerically below.
# * **Different captions that are both true.** "a red circle" is true of the image captioned "a large red
#   circle at the top left". Plain CLIP pushes that image *away* from "a red circle". minimodal's default
#   `targets="attributes"` reads the structured attributes of each example (`prepare`) and makes
#   $M_{ij} = 1$ whenever caption $j$ names only attributes image $i$ has; the target mass of row $i$ is
#   spread over all such captions (and of column $j$ over all such images).

# %%
batches = Batches(clip.prepare(CONFIG, load_examples("shapes", n=CONFIG.n_train, image_size=CONFIG.image_size), None),
                                 trained.tokenizer, CONFIG.batch_size, CONFIG.context_length)
batch = {k: jnp.asarray(v) for k, v in batches.batch(0).items()}
B = CONFIG.batch_size
for targets in clip.TARGETS:
    M = np.asarray(clip.positives(batch, targets))
    print(f"targets={targets!r:13s} positive pairs per image: {M.sum() / B:5.2f}  (off the diagonal: {(M.sum() - B) / B:.2f})")

# identical captions: sharing their target changes nothing (texts i and k have the same embedding)
x_BE, y_BE = (trained.model.encode_images(batch["images"]), trained.model.encode_texts(batch["tokens"]))
same, ident = clip.positives(batch, "captions"), jnp.eye(B)
np.testing.assert_allclose(clip.contrastive_loss(x_BE, y_BE, same, 14.0)[0],
                           clip.contrastive_loss(x_BE, y_BE, ident, 14.0)[0], rtol=1e-5)
print("identical captions: shared targets and plain CLIP give the same loss, as derived")

# %% [markdown]
# Does treating true captions as negatives hurt? Train the same model with plain CLIP targets
# (`targets="identity"`) and compare, in distribution and on the held-out pairs.

# %%
identity_dir = RUNS / "02_clip" / f"{PRESET}-identity"
identity = train.fit(clip.FAMILY, override(CONFIG, {"targets": "identity"}), identity_dir, progress=False)
table = {}
for name, model in [("attributes (default)", trained.model), ("identity (plain CLIP)", identity.model)]:
    metrics = clip.evaluate(model, CONFIG, trained.tokenizer)
    table[name] = metrics
    print(f"{name:22s} zero-shot {metrics['zero_shot_accuracy']:.1%}, held-out {metrics['zero_shot_accuracy_holdout']:.1%}, "
          f"text->image R@1 {metrics['text_to_image_recall@1']:.1%}")

# %% [markdown]
# ## 10. Spurious features: the "sheep on grass" problem
#
# A classifier that learned "sheep" from photos of sheep on grass may answer "sheep" for an empty
# meadow: the background predicted the label in training, so the model used it. We recreate this on
# `shapes`: each shape gets its own dark background colour (`background="by_shape"`: circles on navy,
# squares on brown, …), always in training (`shape_background_p=1`). At test time the background is
# decorrelated (`shape_background_p=0.25`: any of the four, at random).

# %%
spurious_config = override(CONFIG, {"steps": max(CONFIG.steps // 2, 30)})
spurious_train = load_examples("shapes", n=CONFIG.n_train, image_size=CONFIG.image_size, seed=CONFIG.seed,
                               background="by_shape", shape_background_p=1.0)
spurious = train.fit(clip.FAMILY, spurious_config, RUNS / "02_clip" / f"{PRESET}-spurious",
                     examples=spurious_train, progress=False)
spurious_pipe = clip.ClipPipeline(spurious.model, spurious_config, spurious.tokenizer)
BACKGROUNDS = list(shapes.BACKGROUND_BY_SHAPE.values())  # in the order of shapes.SHAPES


def background_shape_of(image):
    """The shape whose background this is: the median colour of the outer ring (an object covers little of it)."""
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return BACKGROUNDS.index(tuple(int(v) for v in np.median(ring, axis=0)))


results = {}
for p, name in [(1.0, "correlated (as in training)"), (0.25, "decorrelated")]:
    ex = shapes.generate(N_TEST, CONFIG.image_size, seed=321, background="by_shape", shape_background_p=p)
    pred = spurious_pipe.zero_shot(ex["images"]).argmax(1)
    background_shape = np.array([background_shape_of(im) for im in ex["images"]])
    results[name] = pred
    print(f"{name:28s} 24-way {np.mean(pred == ex['labels']):6.1%}   "
          f"shape right {np.mean(pred % 4 == ex['labels'] % 4):6.1%}   "
          f"shape named = the background's shape {np.mean(pred % 4 == background_shape):6.1%}")
    show(ex["images"][:8], f"{name}: CLIP says", labels=[classes[i] for i in pred[:8]])

# %% [markdown]
# When the background agrees with the shape, the spuriously trained CLIP looks excellent. Decorrelate
# it and shape accuracy drops: part of what the model calls "triangle" is "purple background". The
# cure is in the data — backgrounds (or grass) that vary independently of the label — which is why
# `shapes` renders on black by default and offers `random_dark` / `noise` backgrounds for robustness.
#
# **Summary.** Two encoders, one normalised space, one symmetric cross-entropy with a learned
# temperature. Zero-shot classification and search fall out of the shared space; prompts that look like
# the training captions matter; captions that are true of several images should not be negatives; and
# CLIP learns whatever separates the pairs in its data, including the background.
#
# **On real images.** The same code trains on CIFAR-10 or COCO once the data is prepared (README,
# "CIFAR-10 / COCO subsets"): `minimodal train clip --data cifar10 --preset gpu`. That run has not been
# measured in this repository (it needs the download and an accelerator); as an expectation, not a result:
# CIFAR-10's captions are templates around ten class names, so zero-shot classification there is a
# classifier trained from scratch, and small ViTs trained from scratch on CIFAR-10 without augmentation
# typically land around 60–80% test accuracy — far from `shapes`' 100%, because photos of a class vary in
# ways no caption names. COCO's free-form captions are much harder: expect retrieval recalls far below
# the original CLIP's, which saw 400 million pairs.

# %% [markdown]
# ## What you should have seen
#
# From the run recorded in this notebook (`make lessons`, 2026-12-02, 2-core CPU, 7.6 minutes). Seeds fix the
# data and the initialisation, so your numbers should be close; the timings depend on the machine.
#
# - The InfoNCE loss at $s = 1/0.07$: **0.6018** from numpy and from the library.
# - 300 training steps (batch 128) in about **133 s**; the learned temperature ends at **0.0565**
#   (logit scale 17.7).
# - 24-way zero-shot accuracy: **11.7%** with the bare class name, **100.0%** with `'a {}'` and with the
#   30-template ensemble; the linear probe also reaches **100.0%**.
# - Held-out pairs: **47.8%** (colour right 100.0%, shape right 47.8%); "red triangle" is easiest (86.5%),
#   "green circle" hardest (7.9%, mostly called a green cross).
# - Text → image recall@1 **16.0%**, recall@10 **73.0%** (many images share a caption).
# - False negatives: attribute targets give **100.0%** zero-shot and **45.2%** on held-out pairs, plain CLIP
#   **99.4%** and **33.2%**.
# - Spurious backgrounds: **100.0%** when the background agrees with the shape, **24.3%** when it does not —
#   and the shape named is the background's 100% of the time.
