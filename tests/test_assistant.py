"""The assistant: the requests data, the request model (masking, cached decoding), routing, chat and the page."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from minimodal import assistant, cli
from minimodal.assistant import Assistant, MissingModel
from minimodal.data import requests, shapes
from minimodal.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

CAPTION = re.compile(r"a (?:(small|large) )?(\w+) (\w+)(?: (at the top left|at the top|at the top right|on the left|"
                     r"in the center|on the right|at the bottom left|at the bottom|at the bottom right))?$")


# ----------------------------------------------------------------------------- data


def test_requests_are_a_pure_function_of_seed_split_and_index():
    assert requests.request(0, "train", 7) == requests.request(0, "train", 7)
    assert requests.request(0, "train", 7) != requests.request(1, "train", 7)
    train, test = requests.examples("train", 300), requests.examples("test", 300)
    assert train["captions"][5] == requests.examples("train", 6)["captions"][5]  # independent of n
    assert train["requests"] != test["requests"]


@pytest.mark.parametrize("split", ["train", "test", "holdout"])
def test_every_command_is_in_the_caption_language_of_its_request(split):
    for index in range(400):
        text, command, attrs = requests.request(3, split, index)
        intent, _, argument = command.partition(": ")
        assert intent == attrs["intent"] and "\n" not in text and text == text.strip()
        if intent in ("draw", "find"):
            caption = argument.removesuffix(" in <folder>")
            size, color, shape, where = CAPTION.match(caption).groups()
            assert (color, shape, size) == (attrs["color"], attrs["shape"], attrs["size"])
            assert where == (shapes.PHRASES[attrs["position"]] if attrs["position"] else None)
            assert caption == requests.caption(color, shape, size, attrs["position"])
        elif intent == "chat":
            assert argument in requests.CHAT
        else:
            assert argument == "<image>"


def test_holdout_phrasings_are_never_seen_in_training():
    train = " ".join(requests.examples("train", 3000)["requests"])
    holdout = requests.examples("holdout", 300)["requests"]
    unseen = [p for group in (requests.ENDINGS, requests.POLITE) for p in group[1]]
    assert all(phrase not in train for phrase in unseen)
    assert np.mean([any(phrase in h for phrase in unseen) for h in holdout]) > 0.8
    seen = set(requests.examples("train", 3000)["requests"])
    assert not seen & set(holdout)


# ----------------------------------------------------------------------------- the request model


def _tiny(vocab: int = 300) -> assistant.RequestModel:
    config = assistant.Config(context_length=24, dim=32, depth=2, num_heads=2)
    return assistant.RequestModel(config, vocab, nnx.Rngs(0)), config


def test_the_loss_counts_command_tokens_only():
    sep = assistant.SEPARATOR_ID
    tokens = jnp.array([[BOS_ID, 40, 41, sep, 50, 51, EOS_ID, PAD_ID]])
    # next-token targets: 40 41 sep 50 51 EOS PAD -> the command part is 50, 51, EOS
    assert assistant.command_mask(tokens).tolist() == [[False, False, False, True, True, True, False]]


def test_cached_greedy_decoding_equals_argmax_of_the_full_forward_pass():
    model, config = _tiny()
    prompts = [[BOS_ID, 40, 41, 42, assistant.SEPARATOR_ID], [BOS_ID, 60, assistant.SEPARATOR_ID]]
    width = 5
    prompt_BT = np.full((2, width), PAD_ID, np.int32)
    for b, p in enumerate(prompts):
        prompt_BT[b, :len(p)] = p
    graphdef, state = nnx.split(model)
    out = np.asarray(assistant._greedy(graphdef, state, prompt_BT, np.array([5, 3], np.int32), 12))
    forward = nnx.jit(lambda model, tokens_1T: model(tokens_1T))
    for b, prompt in enumerate(prompts):  # the slow way: the whole sequence through the model at every step
        tokens = list(prompt)
        while len(tokens) < 12:
            if EOS_ID in tokens[len(prompt):]:
                tokens.append(PAD_ID)
                continue
            padded = jnp.array([tokens + [PAD_ID] * (12 - len(tokens))])  # causal: the padding is not seen
            tokens.append(int(jnp.argmax(forward(model, padded)[0, len(tokens) - 1])))
        assert out[b].tolist() == tokens


def test_a_batch_of_requests_decodes_as_each_one_alone():
    model, config = _tiny()
    tokenizer = Tokenizer.train(requests.examples("train", 200)["captions"], 300)
    pipe = assistant.RequestPipeline(_tiny(tokenizer.vocab_size)[0], config, tokenizer)
    texts = ["draw a red circle", "hello", "could you please find a big blue box in my pictures now"]
    assert pipe.commands(texts) == [pipe.commands([t])[0] for t in texts]
    with pytest.raises(ValueError, match="list of str"):
        pipe.commands("hello")


def test_the_tiny_preset_trains_and_evaluates(tmp_path):
    from minimodal import train

    trained = train.fit(assistant.FAMILY, assistant.PRESETS["tiny"], tmp_path, progress=False)
    assert train.read_metrics(tmp_path)[-1]["loss"] < train.read_metrics(tmp_path)[0]["loss"]
    results = assistant.evaluate(trained.model, trained.config, trained.tokenizer)
    assert {"test_exact_match", "holdout_exact_match", "holdout_draw"} <= results.keys()
    assert all(0 <= v <= 1 for v in results.values())


# ----------------------------------------------------------------------------- routing


class StubRequests:
    def __init__(self, table):
        self.table = table

    def commands(self, texts):
        return [self.table[t] for t in texts]


class StubGenerator:
    def __init__(self):
        self.prompts = []

    def generate(self, prompts, seed=0):
        self.prompts += prompts
        return shapes.generate(len(prompts), size=16, seed=seed)["images"]


class StubClip:
    def zero_shot(self, images):
        probs = np.zeros((len(images), 24))
        probs[:, shapes.CLASS_NAMES.index("blue square")] = 1
        return probs

    def embed_texts(self, texts):
        return np.array([[1.0, 0.0] if t == "a small blue square on the left" else [0.0, 1.0] for t in texts])

    def embed_images(self, images):
        return np.array([[1.0, 0.0]] * len(images))


TABLE = {"could you sketch me a little crimson ball up in the left corner?":
         "draw: a small red circle at the top left", "hello": "chat: hello!", "what shape is this": "classify: <image>",
         "describe this image": "describe: <image>", "vary this image": "vary: <image>", "blah": "sing: a song"}


@pytest.fixture
def stubbed(tmp_path) -> tuple[Assistant, StubGenerator]:
    generator = StubGenerator()
    helper = Assistant(tmp_path, images_per_draw=3)
    helper._loaded.update(assistant=StubRequests(TABLE), ddpm=generator, clip=StubClip())
    (tmp_path / "ddpm").mkdir()
    (tmp_path / "ddpm" / "run.json").write_text('{"model": "ddpm"}')
    return helper, generator


def test_each_command_reaches_the_model_that_answers_it(stubbed):
    helper, generator = stubbed
    answer = helper.ask("could you sketch me a little crimson ball up in the left corner?")
    assert answer.command == "draw: a small red circle at the top left"
    assert generator.prompts == ["a small red circle at the top left"] * 3 and len(answer.images) == 3
    assert set(answer.seconds) == {"request_to_command", "command_to_answer"}
    assert helper.ask("hello").text == "hello!"
    image = shapes.generate(1, size=16)["images"][0]
    assert helper.ask("what shape is this", image=image).text.startswith("this is a blue square")
    assert helper.ask("describe this image", image=image).text == "a small blue square on the left."
    assert "attach an image" in helper.ask("what shape is this").text
    varied = helper.ask("vary this image", image=image)
    assert "redrawing CLIP's description" in varied.text and len(varied.images) == 3
    assert "did not understand" in helper.ask("blah").text


def test_a_missing_model_names_the_command_that_trains_it(tmp_path):
    with pytest.raises(MissingModel, match=r"no trained assistant in .*: train one with `minimodal train assistant "
                                           r"--data requests --workdir "):
        Assistant(tmp_path).ask("hello")
    (tmp_path / "models.json").write_text(json.dumps({"assistant": str(tmp_path / "elsewhere")}))
    with pytest.raises(MissingModel, match="elsewhere"):
        Assistant(tmp_path).ask("hello")
    with pytest.raises(ValueError, match="generator must be one of ddpm, dalle"):
        Assistant(tmp_path, generator="midjourney")


def test_chat_once_prints_one_json_object_and_writes_one_png_per_image(stubbed, tmp_path, capsys, monkeypatch):
    helper, _ = stubbed
    monkeypatch.setattr(assistant.Assistant, "model", lambda self, name: helper._loaded[name])
    monkeypatch.setattr(assistant.Assistant, "available", lambda self, name: name == "ddpm")
    out = tmp_path / "answers"
    code = cli.main(["chat", "--runs", str(tmp_path), "--out", str(out), "--json", "--once",
                     "could you sketch me a little crimson ball up in the left corner?"])
    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["command"] == "draw: a small red circle at the top left" and answer["transcript"] is None
    assert len(answer["images"]) == 4 and all(Path(p).exists() and p.endswith(".png") for p in answer["images"])


@pytest.mark.filterwarnings("ignore:::gradio.queueing")  # Gradio's own use of pandas, not ours
def test_the_web_page_answers_through_its_http_api(stubbed, monkeypatch):
    gradio = pytest.importorskip("gradio")
    from gradio_client import Client

    from minimodal import demo

    helper, _ = stubbed
    monkeypatch.setattr(demo, "Assistant", lambda runs, generator=None: helper)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = demo.build("unused")
    app.launch(server_port=port, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        history, pictures, chain = client.predict(
            "could you sketch me a little crimson ball up in the left corner?", None, None, [], api_name="/ask")
        assert chain["command"] == "draw: a small red circle at the top left"
        assert len(pictures) == 3 and "small red circle" in json.dumps(history[-1]["content"])
        assert all(p["image"].endswith(".png") for p in pictures)
    finally:
        app.close()
    assert gradio.__version__
