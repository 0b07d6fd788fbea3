"""The multimodal assistant: speech or text in, a request model that writes a command, the right model answers.

    speech --(whisper)--> request --(request model)--> command --(dispatch)--> answer text + images
                                                       draw: CAPTION        DDPM or DALL-E draws it
                                                       find: CAPTION in <folder>   CLIP searches the folder
                                                       classify: / describe: <image>   CLIP reads the image
                                                       vary: <image>        DALL-E 2 (or CLIP describe + redraw)
                                                       chat: ANSWER         the request model's own answer

The request model is the toy counterpart of the language model in ChatGPT's pipeline: a small decoder-only
transformer over the shared tokenizer that reads `BOS request \\n` and writes `command EOS` (trained by the one
trainer on `minimodal.data.requests`, with the loss on the command tokens only). Greedy decoding is one
compiled `lax.fori_loop` with a KV cache: the request is fed one token at a time (forced), then the model
continues from its own predictions, so a batch of requests of different lengths decodes together.

Legend: B batch, T positions, D width, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from minimodal.config import TrainConfig
from minimodal.data import requests as request_data
from minimodal.nn.attention import causal_mask
from minimodal.nn.transformer import Transformer
from minimodal.tokenizer import BOS_ID, EOS_ID, NUM_SPECIAL, PAD_ID
from minimodal.train import Family

SEPARATOR_ID = NUM_SPECIAL + ord(request_data.SEPARATOR)  # the byte "\n": its own pre-token, never merged


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """`minimodal train assistant --data requests --workdir runs/assistant`: exact-match commands on
    requests of the train templates, and of held-out ones, in a few minutes on a 2-core CPU."""

    data: str = "requests"
    n_train: int = 20_000
    context_length: int = 64  # BOS request \n command EOS, in tokens
    vocab_size: int = 512
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 100
    dim: int = 96
    depth: int = 2
    num_heads: int = 4
    eval_n: int = 1000  # requests per split for `minimodal eval assistant`


PRESETS = {
    "default": Config(),
    "tiny": Config(n_train=512, steps=30, batch_size=16, dim=32, depth=1, num_heads=2, log_every=10,
                   checkpoint_every=30, eval_n=32),
    "gpu": Config(n_train=100_000, steps=4000, batch_size=256, dim=256, depth=4, num_heads=8),
}


class RequestModel(nnx.Module):
    """logits_BTV = head(Transformer(embed(tokens) + pos))."""

    def __init__(self, config: Config, vocab_size: int, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab_size, config.dim, rngs=rngs)
        self.pos_TD = nnx.Param(0.02 * jax.random.normal(rngs.params(), (config.context_length, config.dim)))
        self.transformer = Transformer(config.dim, config.depth, config.num_heads, rngs=rngs)
        self.head = nnx.Linear(config.dim, vocab_size, rngs=rngs)

    def __call__(self, tokens_BT: jax.Array) -> jax.Array:
        T = tokens_BT.shape[1]
        x_BTD = self.embed(tokens_BT) + self.pos_TD[:T]
        return self.head(self.transformer(x_BTD, mask=causal_mask(T)))


def build(config: Config, tokenizer: Any, rngs: nnx.Rngs) -> RequestModel:
    return RequestModel(config, tokenizer.vocab_size, rngs)


def command_mask(tokens_BT: jax.Array) -> jax.Array:
    """True where the next token belongs to the command (after the separator, EOS included): bool (B, T-1)."""
    after_separator_BT = jnp.cumsum(tokens_BT == SEPARATOR_ID, axis=1) > 0
    return after_separator_BT[:, :-1] & (tokens_BT[:, 1:] != PAD_ID)


def loss_fn(model: RequestModel, batch: dict[str, Any], rng: jax.Array):
    """Cross-entropy of the command tokens given the request: -mean log p(c_t | request, c_<t)."""
    tokens_BT = batch["tokens"]
    logits_BTV = model(tokens_BT[:, :-1])
    mask_BT = command_mask(tokens_BT)
    nll_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, tokens_BT[:, 1:])
    count = jnp.maximum(mask_BT.sum(), 1)
    correct_BT = (logits_BTV.argmax(-1) == tokens_BT[:, 1:]) & mask_BT
    exact_B = (correct_BT | ~mask_BT).all(axis=1)
    return (nll_BT * mask_BT).sum() / count, {"token_accuracy": correct_BT.sum() / count,
                                              "exact_match": exact_B.mean()}


def prepare(config: Config, examples: dict[str, Any], tokenizer: Any, workdir: Any) -> dict[str, Any]:
    """Refuse examples that do not fit the context (a truncated command would be learned wrong)."""
    longest = max(len(tokenizer.encode(c)) + 2 for c in examples["captions"])
    if longest > config.context_length:
        raise ValueError(f"a request + command takes {longest} tokens, more than context_length="
                         f"{config.context_length}; raise context_length")
    return examples


# ----------------------------------------------------------------------------- decoding


@functools.partial(jax.jit, static_argnames=("graphdef", "length"))
def _greedy(graphdef, state, prompt_BT: jax.Array, prompt_len_B: jax.Array, length: int) -> jax.Array:
    """Tokens (B, length): the prompt (forced while t < its length) continued greedily, one compiled loop."""
    model = nnx.merge(graphdef, state)
    B = prompt_BT.shape[0]
    cache = model.transformer.init_cache(B, length)
    tokens_BT = jnp.zeros((B, length), jnp.int32).at[:, :prompt_BT.shape[1]].set(prompt_BT)

    def step(t, carry):
        tokens_BT, cache = carry
        x_B1D = model.embed(tokens_BT[:, t][:, None]) + model.pos_TD[t]
        y_B1D, cache = model.transformer.decode(x_B1D, cache, t)
        next_B = model.head(y_B1D[:, 0]).argmax(-1).astype(jnp.int32)
        forced_B = t + 1 < prompt_len_B
        done_B = ((tokens_BT == EOS_ID) & (jnp.arange(length) <= t)).any(axis=1)  # nothing after EOS
        next_B = jnp.where(forced_B, tokens_BT[:, t + 1], jnp.where(done_B, PAD_ID, next_B))
        return tokens_BT.at[:, t + 1].set(next_B), cache

    tokens_BT, _ = jax.lax.fori_loop(0, length - 1, step, (tokens_BT, cache))
    return tokens_BT


class RequestPipeline:
    """A trained request model: `commands(requests) -> list[str]`."""

    def __init__(self, model: RequestModel, config: Config, tokenizer: Any, workdir: Any = None):
        self.model, self.config, self.tokenizer, self.workdir = model, config, tokenizer, workdir
        self._graphdef, self._state = nnx.split(model)

    def commands(self, requests: Sequence[str], batch_size: int = 256) -> list[str]:
        """The command each request means (greedy decoding), e.g. "draw: a small red circle"."""
        if isinstance(requests, str) or not all(isinstance(r, str) for r in requests):
            raise ValueError("requests must be a list of str (wrap a single request in a list)")
        out = []
        for start in range(0, len(requests), batch_size):
            out += self._decode([normalize_request(r) for r in requests[start:start + batch_size]])
        return out

    def _decode(self, requests: list[str]) -> list[str]:
        L = self.config.context_length
        prompts = [[BOS_ID, *self.tokenizer.encode(r)][:L - 16] + [SEPARATOR_ID] for r in requests]  # + the command
        width = max(len(p) for p in prompts)
        batch = _next_power_of_two(len(prompts))  # a few shapes compile at most
        prompt_BT = np.full((batch, width), PAD_ID, np.int32)
        for b, p in enumerate(prompts):
            prompt_BT[b, :len(p)] = p
        lengths = np.array([len(p) for p in prompts] + [1] * (batch - len(prompts)), np.int32)
        tokens_BT = np.asarray(_greedy(self._graphdef, self._state, prompt_BT, lengths, L))
        commands = []
        for b, p in enumerate(prompts):
            ids = tokens_BT[b, len(p):].tolist()
            commands.append(self.tokenizer.decode(ids[:ids.index(EOS_ID)] if EOS_ID in ids else ids).strip())
        return commands


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def normalize_request(text: str) -> str:
    """What the request model was trained on: lower case, single spaces, no trailing full stop."""
    return " ".join(text.lower().replace("\n", " ").split()).rstrip(".!")


def evaluate(model: RequestModel, config: Config, tokenizer: Any, workdir: Any = None) -> dict[str, float]:
    """Exact-match command accuracy on `test` (the training templates) and `holdout` (unseen phrasings),
    per intent too."""
    pipeline = RequestPipeline(model, config, tokenizer, workdir)
    results: dict[str, float] = {}
    for split in ("test", "holdout"):
        data = request_data.examples(split, config.eval_n, seed=config.seed)
        predicted = pipeline.commands(data["requests"])
        right = np.array([p == c for p, c in zip(predicted, data["commands"])])
        results[f"{split}_exact_match"] = float(right.mean())
        for intent in request_data.INTENTS:
            chosen = np.array([i == intent for i in data["intents"]])
            if chosen.any():
                results[f"{split}_{intent}"] = float(right[chosen].mean())
    return results


def pipeline(model: RequestModel, config: Config, tokenizer: Any, workdir: Any = None) -> RequestPipeline:
    return RequestPipeline(model, config, tokenizer, workdir)


FAMILY = Family(name="assistant", config_class=Config, presets=PRESETS, build=build, loss_fn=loss_fn,
                prepare=prepare, evaluate=evaluate, pipeline=pipeline)


# ----------------------------------------------------------------------------- the pipeline that routes

TRAIN_COMMANDS = {  # what to run when a work directory is missing
    "assistant": "minimodal train assistant --data requests --workdir {path}",
    "clip": "minimodal train clip --data shapes --workdir {path}",
    "ddpm": "minimodal train ddpm --data shapes --workdir {path}",
    "dalle": "minimodal train dalle --data shapes --workdir {path}",
    "whisper": "minimodal train whisper --data spoken_shapes --workdir {path}",
    "unclip": "minimodal train unclip --data shapes --workdir {path} clip=runs/clip",
}
GENERATORS = ("ddpm", "dalle")  # the best measured first (caption fidelity on shapes: README)


class MissingModel(FileNotFoundError):
    """A model the request needs has no trained work directory."""


@dataclasses.dataclass
class Answer:
    """One turn: each stage's output, so a learner sees the chain."""

    request: str  # what the request model read (the transcript, for speech)
    command: str  # what it wrote, e.g. "draw: a small red circle at the top left"
    text: str  # the answer shown to the user
    transcript: str | None = None  # speech -> text, when the request was audio
    images: list[np.ndarray] = dataclasses.field(default_factory=list)  # uint8 (H, W, 3) each
    image_paths: list[str] = dataclasses.field(default_factory=list)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # per stage

    def to_json(self) -> dict[str, Any]:
        return {"transcript": self.transcript, "request": self.request, "command": self.command,
                "answer": self.text, "images": self.image_paths, "seconds": self.seconds}


class Assistant:
    """Speech or text in -> request model -> the model that answers. Models are the work directories
    `runs/<name>` (or what `runs/models.json` maps each name to), loaded on first use."""

    def __init__(self, runs: str | Path = "runs", generator: str | None = None, images_per_draw: int = 4):
        self.runs = Path(runs)
        if generator is not None and generator not in GENERATORS:
            raise ValueError(f"generator must be one of {', '.join(GENERATORS)}, got {generator!r}")
        self.generator, self.images_per_draw = generator, images_per_draw
        mapping = self.runs / "models.json"
        self.paths = {name: self.runs / name for name in TRAIN_COMMANDS}
        if mapping.exists():
            try:
                overrides = json.loads(mapping.read_text())
                self.paths.update({name: Path(path) for name, path in overrides.items()})
            except (ValueError, AttributeError, TypeError):
                raise ValueError(f"{mapping} must map model names to work directories, e.g. "
                                 '{"clip": "runs/clip_big"}') from None
        self._loaded: dict[str, Any] = {}

    def available(self, name: str) -> bool:
        return (self.paths[name] / "run.json").exists()

    def model(self, name: str) -> Any:
        """The pipeline of model `name`, loaded once; a clear error naming the command that trains it."""
        if name not in self._loaded:
            if not self.available(name):
                raise MissingModel(f"no trained {name} in {self.paths[name]}: train one with `"
                                   f"{TRAIN_COMMANDS[name].format(path=self.paths[name])}`")
            import minimodal

            self._loaded[name] = minimodal.load(self.paths[name])
        return self._loaded[name]

    def ask(self, text: str | None = None, *, audio: Any = None, image: np.ndarray | None = None,
            folder: str | Path | None = None, seed: int = 0) -> Answer:
        """Answer one request (text, or `audio`: a WAV path or 16 kHz waveform), with an attached `image`
        (uint8 (H, W, 3)) for vary/classify/describe or a `folder` of images for find."""
        seconds: dict[str, float] = {}
        transcript = None
        if audio is not None:
            start = time.perf_counter()
            transcript = self.model("whisper").transcribe([audio])[0]
            seconds["speech_to_text"] = time.perf_counter() - start
            text = transcript
        if not text or not text.strip():
            raise ValueError("nothing to answer: give a request as text or audio")
        start = time.perf_counter()
        command = self.model("assistant").commands([text])[0]
        seconds["request_to_command"] = time.perf_counter() - start
        start = time.perf_counter()
        answer, images = self._dispatch(command, image, folder, seed)
        seconds["command_to_answer"] = time.perf_counter() - start
        return Answer(normalize_request(text), command, answer, transcript, images, [], seconds)

    def _dispatch(self, command: str, image, folder, seed: int) -> tuple[str, list[np.ndarray]]:
        intent, _, argument = command.partition(": ")
        if intent == "chat":
            return argument, []
        if intent == "draw":
            return self._draw(argument, seed)
        if intent == "find":
            return self._find(argument.removesuffix(" in <folder>"), folder)
        if intent in ("vary", "classify", "describe"):
            if image is None:
                return f"please attach an image to {intent}.", []
            return getattr(self, f"_{intent}")(np.asarray(image), seed)
        return f"sorry, i did not understand that (the request model wrote {command!r}).", []

    def _draw(self, prompt: str, seed: int) -> tuple[str, list[np.ndarray]]:
        names = [self.generator] if self.generator else [g for g in GENERATORS if self.available(g)]
        if not names:
            ddpm, dalle = (TRAIN_COMMANDS[g].format(path=self.paths[g]) for g in GENERATORS)
            raise MissingModel(f"drawing needs a trained generator: `{ddpm}` (or `{dalle}`)")
        images = self.model(names[0]).generate([prompt] * self.images_per_draw, seed=seed)
        return f"here is {prompt} ({names[0]}).", list(images)

    def _find(self, query: str, folder) -> tuple[str, list[np.ndarray]]:
        from minimodal.clip_tasks import search

        if folder is None:
            return "please give a folder of images to search.", []
        matches = search(self.model("clip"), folder, query, k=4)
        names = ", ".join(f"{Path(m['name']).name} ({m['score']:.2f})" for m in matches)
        return f"the best matches for {query}: {names}.", [m["image"] for m in matches]

    def _classify(self, image: np.ndarray, seed: int) -> tuple[str, list[np.ndarray]]:
        from minimodal.data import shapes

        probs = self.model("clip").zero_shot(image[None])[0]
        best = int(np.argmax(probs))
        return f"this is a {shapes.CLASS_NAMES[best]} ({probs[best]:.0%} sure).", []

    def _describe(self, image: np.ndarray, seed: int) -> tuple[str, list[np.ndarray]]:
        clip = self.model("clip")
        captions = every_caption()
        scores = clip.embed_texts(captions) @ clip.embed_images(image[None])[0]
        return f"{captions[int(np.argmax(scores))]}.", []

    def _vary(self, image: np.ndarray, seed: int) -> tuple[str, list[np.ndarray]]:
        if self.available("unclip"):
            images = self.model("unclip").vary(image[None], self.images_per_draw, seed=seed)
            return "variations of your image (DALL-E 2).", list(images)
        description, _ = self._describe(image, seed)
        text, images = self._draw(description.rstrip("."), seed + 1)
        return (f"variations by redrawing CLIP's description, {description.rstrip('.')!r} (DALL-E 2's decoder, "
                f"which varies an image itself, is not trained here).", images)


@functools.cache
def every_caption() -> list[str]:
    """Every one-object shapes caption (colour, shape, optional size and position): 720 of them."""
    from minimodal.data import shapes

    return [request_data.caption(c, s, z, p) for c in shapes.COLORS for s in shapes.SHAPES
            for z in (None, *shapes.SIZES) for p in (None, *shapes.POSITIONS)]


def evaluate_chain(helper: Assistant, n: int = 48, seed: int = 0, spoken: bool = True,
                   split: str = "holdout") -> dict[str, Any]:
    """End to end on n draw requests: each one-object caption (train colour-shape pairs) said by a voice of
    `spoken_shapes`' `split` (held-out voices and rates by default) -> text -> command -> image -> the exact
    grader. Each request is charged to the first stage that got it wrong, so the weakest link shows:
    speech_to_text (transcript != the caption), text_to_command (command != "draw: caption"), command_to_image
    (the grader does not read the caption's colour and shape). With `spoken=False` the caption goes in as text.
    Also the mean seconds per request of each stage (batched)."""
    from minimodal.data import shapes

    scenes = shapes.generate(n, size=16, seed=seed, split="train")
    captions = scenes["captions"]
    seconds: dict[str, float] = {}
    if spoken:
        from minimodal.data import spoken_shapes

        clips = [spoken_shapes.speak(c, spoken_shapes.speaker(seed, split, i), int(spoken_shapes.SECONDS * 16_000))
                 for i, c in enumerate(captions)]
        start = time.perf_counter()
        heard = [normalize_request(t) for t in helper.model("whisper").transcribe(clips)]
        seconds["speech_to_text"] = (time.perf_counter() - start) / n
    else:
        heard = list(captions)
    start = time.perf_counter()
    commands = helper.model("assistant").commands(heard)
    seconds["request_to_command"] = (time.perf_counter() - start) / n
    name = helper.generator or next(g for g in GENERATORS if helper.available(g))
    prompts = [c.partition(": ")[2] if c.startswith("draw: ") else c for c in commands]
    start = time.perf_counter()
    images = helper.model(name).generate(prompts, seed=seed)
    seconds["command_to_image"] = (time.perf_counter() - start) / n
    failed_at = []
    for caption, text, command, image, scene in zip(captions, heard, commands, images, scenes["objects"]):
        read = shapes.read_attributes(image)
        drawn = read is not None and (read["color"], read["shape"]) == (scene[0]["color"], scene[0]["shape"])
        failed_at.append("speech_to_text" if text != caption else "text_to_command" if command != f"draw: {caption}"
                         else None if drawn else "command_to_image")
    errors = {stage: failed_at.count(stage) / n for stage in ("speech_to_text", "text_to_command", "command_to_image")}
    return {"n": n, "generator": name, "correct": failed_at.count(None) / n, "errors": errors, "seconds": seconds,
            "examples": list(zip(captions, heard, commands))[:8]}
