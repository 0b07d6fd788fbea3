"""What users do with a trained CLIP: embed, zero-shot classify, retrieve, search, linear-probe.

Legend: N images, M texts, C classes, P prompt templates, E embedding width.

    zero-shot:  w_c = normalize( 1/P Σ_p normalize(embed_text(template_p.format(class_c))) )
                p(c | image) = softmax_c(s · x · w_c)                     (prompt ensembling)
    retrieval:  recall@k = fraction of queries with a relevant item among their k most similar
                (relevant = carries the same caption: shapes repeats captions, so "the" match is ambiguous)
    probe:      multinomial logistic regression on frozen image embeddings,
                min_W,b  -1/N Σ_n log softmax(x_n W + b)_{y_n} + λ/2 ‖W‖²   (L-BFGS)

`ClipPipeline` is what `minimodal.load(workdir)` returns for a CLIP work directory. This module knows
the model only through its `encode_images` / `encode_texts` / `scale` methods.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from minimodal.data import load_examples, normalize_images
from minimodal.data import shapes
from minimodal.data.folder import IMAGE_SUFFIXES, load_image
from minimodal.data.images import center_crop_resize_batch, with_article

# Prompts for shapes' 24 "colour shape" classes: every caption template of the training data
# (size named or not, position named or not), so the ensemble marginalises over size and position.
SHAPES_TEMPLATES: tuple[str, ...] = tuple(f"a {size}{{}}{where}" for size in ("", "small ", "large ")
                                          for where in ("", *(f" {p}" for p in shapes.PHRASES.values())))
PHOTO_TEMPLATES: tuple[str, ...] = ("a photo of {}", "a picture of {}", "{}", "a blurry photo of {}")


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class ClipPipeline:
    """A trained CLIP for inference: jitted, batched, L2-normalised embeddings (numpy float32)."""

    def __init__(self, model: Any, config: Any, tokenizer: Any, workdir: Any = None, batch_size: int = 256):
        self.model, self.config, self.tokenizer, self.workdir = model, config, tokenizer, workdir
        self.batch_size = batch_size
        graphdef, self._state = nnx.split(model)
        self._images_fn = jax.jit(lambda state, x: nnx.merge(graphdef, state).encode_images(x))
        self._texts_fn = jax.jit(lambda state, t: nnx.merge(graphdef, state).encode_texts(t))
        self.scale = float(model.scale())  # the learned logit scale s = 1 / temperature

    def _batched(self, fn: Any, x: np.ndarray) -> np.ndarray:
        """fn over fixed-size chunks (padded; a few shapes compile at most): (N, ...) -> (N, E)."""
        chunk = min(self.batch_size, _next_power_of_two(len(x)))
        out = []
        for i in range(0, len(x), chunk):
            part = x[i:i + chunk]
            padded = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)])
            out.append(np.asarray(fn(self._state, padded))[:len(part)])
        return np.concatenate(out) if out else np.zeros((0, self.config.embed_dim), np.float32)

    def embed_images(self, images_uint8: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> (N, E); other sizes are centre-cropped and resized to `image_size`."""
        images = np.asarray(images_uint8)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"embed_images expects uint8 images (N, H, W, 3), got {images.dtype} "
                             f"{images.shape} (one image? pass images[None])")
        size = self.config.image_size
        if images.shape[1:3] != (size, size):
            images = center_crop_resize_batch(images, size)
        return self._batched(self._images_fn, normalize_images(images))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """list of M str -> (M, E)."""
        if isinstance(texts, str):
            raise TypeError("embed_texts expects a list of str; wrap a single text in a list")
        tokens_MT = self.tokenizer.encode_batch(list(texts), self.config.context_length)
        return self._batched(self._texts_fn, tokens_MT)

    def zero_shot(self, images_uint8: np.ndarray, class_names: Sequence[str] | None = None,
                  templates: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities (N, C); see `zero_shot`."""
        return zero_shot(self, images_uint8, class_names, templates)

    def search(self, images: np.ndarray | str | Path, query: str, k: int = 8) -> list[dict[str, Any]]:
        """The k images most similar to `query`; see `search`."""
        return search(self, images, query, k)


def class_embeddings(pipeline: ClipPipeline, class_names: Sequence[str],
                     templates: Sequence[str]) -> np.ndarray:
    """w_c = normalize(mean_p embed_text(template_p.format(class_c))): (C, E)."""
    texts = [t.format(name) for name in class_names for t in templates]
    emb_CPE = pipeline.embed_texts(texts).reshape(len(class_names), len(templates), -1)
    mean_CE = emb_CPE.mean(axis=1)
    return mean_CE / np.linalg.norm(mean_CE, axis=1, keepdims=True)


def default_prompts(class_names: Sequence[str]) -> tuple[list[str], tuple[str, ...]]:
    """(names as the templates want them, templates): shapes' caption templates for shapes classes,
    else photo templates filled with the name and its article ("a photo of an airplane")."""
    if set(class_names) <= set(shapes.CLASS_NAMES):
        return list(class_names), SHAPES_TEMPLATES
    return [with_article(name) for name in class_names], PHOTO_TEMPLATES


def zero_shot(pipeline: ClipPipeline, images_uint8: np.ndarray, class_names: Sequence[str] | None = None,
              templates: Sequence[str] | None = None) -> np.ndarray:
    """p(c | image) = softmax_c(s · x · w_c) with prompt-ensembled class embeddings w_c: (N, C).

    Defaults: shapes' 24 class names, and templates that match the training captions
    (`SHAPES_TEMPLATES` for shapes classes, `PHOTO_TEMPLATES` otherwise). Templates hold one `{}`.
    """
    class_names = list(shapes.CLASS_NAMES if class_names is None else class_names)
    if templates is None:
        class_names, templates = default_prompts(class_names)
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not class_names:
        raise ValueError(f"need class names and templates with exactly one '{{}}'; bad templates: {bad}")
    logits_NC = pipeline.scale * pipeline.embed_images(images_uint8) @ class_embeddings(
        pipeline, class_names, templates).T
    return np.asarray(jax.nn.softmax(logits_NC, axis=1))


def retrieval_recall(image_NE: np.ndarray, text_ME: np.ndarray, image_keys: Sequence[Any],
                     text_keys: Sequence[Any], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k both ways; an image and a text are relevant to each other iff their keys are equal.

    text->image: each text queries all images; image->text: each image queries all texts.
    """
    image_keys, text_keys = np.asarray(image_keys, object), np.asarray(text_keys, object)
    relevant_NM = image_keys[:, None] == text_keys[None, :]
    sim_NM = np.asarray(image_NE) @ np.asarray(text_ME).T
    out = {}
    directions = (("image_to_text", sim_NM, relevant_NM), ("text_to_image", sim_NM.T, relevant_NM.T))
    for name, sim, rel in directions:
        order = np.argsort(-sim, axis=1, kind="stable")
        hits = np.take_along_axis(rel, order, axis=1)  # hits[q, r]: the r-th best match is relevant
        for k in ks:
            out[f"{name}_recall@{k}"] = float(hits[:, :k].any(axis=1).mean())
    return out


def image_folder(path: str | Path, image_size: int) -> tuple[np.ndarray, list[str]]:
    """Every image file under a folder (no captions needed), centre-cropped and resized:
    (uint8 (N, S, S, 3), file paths). Unreadable files are skipped with a warning."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    images, names = [], []
    for file in files:
        try:
            images.append(load_image(file, image_size))
            names.append(str(file))
        except (OSError, ValueError) as error:
            warnings.warn(f"skipping {file}: {error}")
    if not images:
        raise ValueError(f"found no readable images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return np.stack(images), names


def search(pipeline: ClipPipeline, images: np.ndarray | str | Path, query: str,
           k: int = 8) -> list[dict[str, Any]]:
    """Text-based image search over uint8 images (N, H, W, 3) or a folder of image files.

    Returns the k best matches, best first, as dicts: `index` (into the images / sorted files),
    `score` (cosine similarity x · y in [-1, 1]), `name` (the file path, or "#index"), `image` (uint8).
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"search needs a non-empty text query, got {query!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"search: k (the number of matches) must be a positive integer, got {k!r}")
    if isinstance(images, (str, Path)):
        images, names = image_folder(images, pipeline.config.image_size)
    else:
        names = [f"#{i}" for i in range(len(images))]
    scores_N = pipeline.embed_images(images) @ pipeline.embed_texts([query])[0]
    top = np.argsort(-scores_N, kind="stable")[:k]
    return [{"index": int(i), "score": float(scores_N[i]), "name": names[i], "image": np.asarray(images[i])}
            for i in top]


def linear_probe(features_NE: np.ndarray, labels_N: np.ndarray, num_classes: int, *, l2: float = 1e-3,
                 iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Fit min_W,b -1/N Σ log softmax(x W + b)_y + λ/2 ‖W‖² with L-BFGS; returns (W (E, C), b (C,)).
    Predict with argmax(x W + b)."""
    x_NE, y_N = jnp.asarray(features_NE, jnp.float32), jnp.asarray(labels_N)

    def objective(params):
        logits_NC = x_NE @ params["W"] + params["b"]
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits_NC), y_N[:, None], axis=1).mean()
        return nll + 0.5 * l2 * jnp.sum(params["W"] ** 2)

    @jax.jit
    def fit(params):
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(objective)

        def step(_, carry):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=objective)
            return optax.apply_updates(params, updates), state

        return jax.lax.fori_loop(0, iterations, step, (params, opt.init(params)))[0]

    params = fit({"W": jnp.zeros((x_NE.shape[1], num_classes)), "b": jnp.zeros(num_classes)})
    return np.asarray(params["W"]), np.asarray(params["b"])


def evaluate_pipeline(pipeline: ClipPipeline, n: int = 1200, seed_offset: int = 1) -> dict[str, float]:
    """Zero-shot accuracy, retrieval recalls and the final temperature, on images not trained on.

    shapes: 24-way zero-shot on fresh train-distribution images (another seed) and on the holdout split
    (colour–shape pairs never seen in training); retrieval on the fresh images. Other sources: their
    "test" split (zero-shot when it has class names).
    """
    config = pipeline.config
    seed = config.seed + seed_offset
    out: dict[str, float] = {"temperature": 1.0 / pipeline.scale, "logit_scale": pipeline.scale}
    if config.data == "shapes":
        sets = {"": shapes.generate(n, config.image_size, seed=seed, split="train"),
                "_holdout": shapes.generate(n // 3, config.image_size, seed=seed, split="holdout")}
    else:
        sets = {"": load_examples(config.data, "test", n, config.image_size, seed)}
    for suffix, ex in sets.items():
        if "labels" in ex:
            probs_NC = pipeline.zero_shot(ex["images"], ex["class_names"])
            out[f"zero_shot_accuracy{suffix}"] = float((probs_NC.argmax(1) == ex["labels"]).mean())
    ex = sets[""]
    out.update(retrieval_recall(pipeline.embed_images(ex["images"]), pipeline.embed_texts(ex["captions"]),
                                ex["captions"], ex["captions"]))
    return out


__all__ = ["ClipPipeline", "PHOTO_TEMPLATES", "SHAPES_TEMPLATES", "class_embeddings", "evaluate_pipeline",
           "image_folder", "linear_probe", "retrieval_recall", "search", "zero_shot"]
