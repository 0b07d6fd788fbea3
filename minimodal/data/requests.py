"""`requests`: free-form requests to the assistant, each paired with the command it means.

    "could you sketch me a little crimson ball up in the left corner?"
        -> "draw: a small red circle at the top left"

Commands (the caption language of `shapes`, so the image models understand them):
    draw: CAPTION | find: CAPTION in <folder> | vary: <image> | classify: <image> | describe: <image> |
    chat: ANSWER  (greetings, thanks, questions about the assistant, and everything it cannot do)

A request is a template filled with synonyms (colour, shape, size, position, verb), politeness and filler
phrases, in varied word order. Splits:
    train    the TRAIN templates and phrasings
    test     the same templates and phrasings, other draws (index space disjoint from train)
    holdout  templates, fillers and phrasings never seen in training. A word never seen cannot be understood
             by a model trained from scratch, so a held-out phrasing keeps the word that carries the meaning
             and wraps it in unseen ones ("a deep green square thing", "very small") or recombines known
             words ("in the upper left": training saw "in the upper right" and "up in the left corner");
             held-out templates and fillers ("kindly ... if possible") bring words to ignore; training
             requests carry made-up words (random letters) to teach the model to skip what it does not know.

Every example is a pure function of (seed, split, index), like `shapes`. The `caption` of an example is
`request + "\\n" + command`: the request model learns to continue a request past the newline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minimodal.data import shapes

SEPARATOR = "\n"  # between a request and its command
SPLITS = {"train": 0, "test": 1, "holdout": 2}
_TEST_OFFSET = 1 << 40  # test draws come from an index range train never reaches

# --- phrasings: canonical value -> (training synonyms, held-out synonyms) -------------------------------
COLORS = {
    "red": (["red", "crimson", "scarlet"], ["deep red"]),
    "green": (["green", "emerald", "lime"], ["deep green"]),
    "blue": (["blue", "navy", "azure"], ["light blue"]),
    "yellow": (["yellow", "golden", "lemon"], ["light yellow"]),
    "purple": (["purple", "violet", "lilac"], ["deep purple"]),
    "white": (["white", "snowy", "ivory"], ["bright white"]),
}
SHAPES = {
    "circle": (["circle", "ball", "disc", "dot", "round shape"], ["round thing"]),
    "square": (["square", "box", "block", "square shape"], ["square thing"]),
    "triangle": (["triangle", "pyramid", "wedge", "triangular shape"], ["triangle thing"]),
    "cross": (["cross", "plus", "plus sign", "cross shape"], ["plus thing"]),
}
SIZES = {
    "small": (["small", "little", "tiny"], ["very small", "really tiny"]),
    "large": (["large", "big", "huge"], ["very large", "really big"]),
}
POSITIONS = {
    "top left": (["at the top left", "up in the left corner", "in the top left corner"], ["in the upper left"]),
    "top": (["at the top", "up top", "near the top"], ["at the very top"]),
    "top right": (["at the top right", "in the upper right", "up in the right corner"], ["in the top right corner"]),
    "left": (["on the left", "on the left side", "to the left", "at the left edge"], ["at the left side"]),
    "center": (["in the center", "in the middle", "at the centre"], ["in the very middle"]),
    "right": (["on the right", "on the right side", "to the right", "at the right edge"], ["at the right side"]),
    "bottom left": (["at the bottom left", "in the lower left", "down in the left corner"],
                    ["in the bottom left corner"]),
    "bottom": (["at the bottom", "down low", "near the bottom"], ["at the very bottom"]),
    "bottom right": (["at the bottom right", "in the bottom right corner", "down in the right corner"],
                     ["in the lower right"]),
}
DRAW_VERBS = (["draw", "sketch", "paint", "make", "create", "generate", "render", "show me"], ["illustrate", "design"])
POLITE = (["", "", "please", "could you", "can you", "would you", "i'd like you to", "hey,", "hi, please"],
          ["kindly", "i want you to"])
ENDINGS = (["", "", "", "please", "for me", "now", "thanks", "?"], ["if you can", "if possible"])
OTHER_THINGS = (["dog", "cat", "house", "car", "tree", "face", "flower", "bird"], ["horse", "boat"])

# --- templates: train, held-out. Slots: {polite} {verb} {obj} {end}. Held-out frames recombine words that
# carry meaning in training ("search my pictures for" from "search my folder for" and "in my pictures").
DRAW = (["{polite} {verb} {obj} {end}", "{polite} {verb} me {obj} {end}", "i want {obj} {end}", "{obj} {end}",
         "{obj}, {verb} it {end}", "{polite} {verb} a picture of {obj} {end}", "can i get {obj} {end}"],
        ["{polite} {verb} for me {obj} {end}", "i want a picture of {obj} {end}", "{obj}, {verb} it for me {end}"])
FIND = (["{polite} find {obj} in my pictures {end}", "search my folder for {obj} {end}",
         "where is {obj} in these images {end}", "{polite} look for {obj} in the folder {end}",
         "{polite} search these images for {obj} {end}", "{polite} find {obj} among my images {end}"],
        ["{polite} search my pictures for {obj} {end}", "where is {obj} in the folder {end}"])
VARY = (["{polite} make variations of this image {end}", "give me more like this picture {end}",
         "{polite} vary this image {end}", "show me other versions of this {end}",
         "{polite} make variations of this photo {end}", "{polite} vary this picture {end}"],
        ["{polite} make variations of this picture {end}", "give me more like this image {end}"])
CLASSIFY = (["what shape is this {end}", "{polite} classify this picture {end}",
             "which colour and shape is this {end}", "what is in this image {end}"],
            ["{polite} classify this image {end}", "which shape is this {end}"])
DESCRIBE = (["{polite} describe this image {end}", "{polite} write a caption for this picture {end}",
             "what does this picture show {end}", "tell me about this image {end}"],
            ["{polite} describe this picture {end}", "{polite} write a caption for this image {end}"])
CHAT = {  # answer -> (train requests, held-out requests)
    "hello! ask me to draw, find, vary, classify or describe shapes.":
        (["hello", "hi there", "good morning", "hey"], ["hello there", "hey there"]),
    "you're welcome!":
        (["thanks", "thank you", "thank you very much", "cheers"], ["thanks a lot", "thank you so much"]),
    "i can draw coloured shapes, vary a picture, find shapes in a folder, and classify or describe a picture.":
        (["what can you do", "help", "how do i use you", "what are you"], ["what else can you do", "help me"]),
    "sorry, i can only draw and recognise coloured shapes.":
        (["what is the weather", "tell me a joke", "play some music", "sing me a song", "what is your name",
          "{polite} {verb} a {thing} {end}"],
         ["tell me a story", "{polite} {verb} a {thing} {end}"]),
}
INTENTS = ("draw", "find", "vary", "classify", "describe", "chat")
_WEIGHTS = np.array([0.45, 0.12, 0.08, 0.1, 0.1, 0.15])


def caption(color: str, shape: str, size: str | None = None, position: str | None = None) -> str:
    """The shapes caption of one object: "a [size] colour shape [where]" (SHAPES.md's templates)."""
    text = f"a {size + ' ' if size else ''}{color} {shape}"
    return f"{text} {shapes.PHRASES[position]}" if position else text


def _choice(rng: np.random.Generator, options: tuple[list[str], list[str]], held_out: bool) -> str:
    pool = options[1] if held_out and options[1] else options[0]
    return pool[rng.integers(len(pool))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noise_word(rng: np.random.Generator) -> str:
    """A made-up word of 2-7 random letters ("qhem", "tw", "uxlaip"). Inserted into training requests, such
    words teach the model to skip words it does not know, as held-out requests bring words never seen."""
    return "".join("abcdefghijklmnopqrstuvwxyz"[i] for i in rng.integers(26, size=rng.integers(2, 8)))


def _with_noise_words(text: str, rng: np.random.Generator) -> str:
    """`text` with 0 (45%), 1, 2 or 4 made-up words inserted between its words."""
    words = text.split()
    for _ in range(((0,) * 9 + (1,) * 6 + (2,) * 3 + (4,) * 2)[rng.integers(20)]):
        words.insert(rng.integers(len(words) + 1), _noise_word(rng))
    return " ".join(words)


def _fill(template: str, rng: np.random.Generator, held_out: bool, obj: str = "", thing: str = "") -> str:
    text = template.format(polite=_choice(rng, POLITE, held_out), verb=_choice(rng, DRAW_VERBS, held_out), obj=obj,
                           end=_choice(rng, ENDINGS, held_out), thing=thing)
    text = " ".join(text.replace(" ?", "?").split()).replace(" ,", ",").strip(", ")
    return text if held_out else _with_noise_words(text, rng)


def request(seed: int, split: str, index: int) -> tuple[str, str, dict[str, Any]]:
    """(request, command, attributes) of example `index` of `split`."""
    rng = np.random.default_rng([seed, SPLITS[split], index + (_TEST_OFFSET if split == "test" else 0)])
    held_out = split == "holdout"
    # each template group draws a held-out template half of the time in holdout, the phrasings always held out
    pick = lambda group: group[1][rng.integers(len(group[1]))] if held_out and rng.random() < 0.5 else \
        group[0][rng.integers(len(group[0]))]  # noqa: E731
    intent = INTENTS[rng.choice(len(INTENTS), p=_WEIGHTS)]
    attrs: dict[str, Any] = {"intent": intent}
    if intent in ("draw", "find"):
        color, shape = list(COLORS)[rng.integers(6)], list(SHAPES)[rng.integers(4)]
        size = list(SIZES)[rng.integers(2)] if rng.random() < 0.5 else None
        position = shapes.POSITIONS[rng.integers(9)] if intent == "draw" and rng.random() < 0.5 else None
        words = [_choice(rng, SIZES[size], held_out) if size else "", _choice(rng, COLORS[color], held_out),
                 _choice(rng, SHAPES[shape], held_out)]
        obj = _article(" ".join(w for w in words if w))
        if position:
            obj += " " + _choice(rng, POSITIONS[position], held_out)
        attrs.update(color=color, shape=shape, size=size, position=position)
        text = _fill(pick(DRAW if intent == "draw" else FIND), rng, held_out, obj)
        command = f"draw: {caption(color, shape, size, position)}" if intent == "draw" else \
            f"find: {caption(color, shape, size)} in <folder>"
    elif intent == "chat":
        answer = list(CHAT)[rng.integers(len(CHAT))]
        options = CHAT[answer][1 if held_out else 0]  # (chat requests have few slots to hold out: all of them)
        text = _fill(options[rng.integers(len(options))], rng, held_out, thing=_choice(rng, OTHER_THINGS, held_out))
        if not held_out and answer.startswith("sorry") and rng.random() < 0.2:  # gibberish: nothing to do
            text = " ".join(_noise_word(rng) for _ in range(rng.integers(1, 5)))
        command = f"chat: {answer}"
    else:
        text = _fill(pick({"vary": VARY, "classify": CLASSIFY, "describe": DESCRIBE}[intent]), rng, held_out)
        command = f"{intent}: <image>"
    return text, command, attrs


def examples(split: str = "train", n: int | None = None, image_size: int = 32, seed: int = 0,
             **options: Any) -> dict[str, Any]:
    """The source-module interface of `minimodal.data.load_examples`: n (default 20,000) requests.
    `captions[i]` = request + "\\n" + command; also `requests`, `commands` and `intents` (lists of n)."""
    if options:
        raise ValueError(f"the requests source takes no options, got {sorted(options)}")
    if split not in SPLITS:
        raise ValueError(f"requests has splits {', '.join(SPLITS)}, got {split!r}")
    n = 20_000 if n is None else n
    rows = [request(seed, split, i) for i in range(n)]
    return {"captions": [f"{r}{SEPARATOR}{c}" for r, c, _ in rows], "requests": [r for r, _, _ in rows],
            "commands": [c for _, c, _ in rows], "intents": [a["intent"] for _, _, a in rows]}
