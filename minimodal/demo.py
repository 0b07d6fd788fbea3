"""`minimodal demo`: the assistant as a web page (Gradio), with text, microphone / audio upload and an image.

    pip install -e ".[demo]"          # Gradio is optional
    minimodal demo --port 7860        # then open http://localhost:7860

Each answer shows the chain — what was heard, the command the request model wrote, the answer — and the
pictures. The page's function is also an HTTP API (`/ask`), which the tests call with `gradio_client`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from minimodal.assistant import Assistant, MissingModel

DISPLAY_SCALE = 6  # the models draw 16-32 px pictures: show them bigger, pixel for pixel


def _gradio():
    try:
        import gradio
    except ImportError:
        raise ValueError("the demo needs Gradio: pip install -e \".[demo]\" (or pip install gradio)") from None
    return gradio


def respond(assistant: Assistant, text: str | None, audio: str | None, image: np.ndarray | None,
            history: list[dict[str, Any]] | None, seed: int = 0):
    """One turn of the page: (chat history, pictures, the chain as a dict)."""
    history = list(history or [])
    try:
        answer = assistant.ask(text or None, audio=audio or None, image=image, seed=seed + len(history))
    except (ValueError, MissingModel) as error:
        return history + [{"role": "assistant", "content": f"error: {error}"}], [], {"error": str(error)}
    said = answer.transcript if answer.transcript is not None else answer.request
    history += [{"role": "user", "content": said},
                {"role": "assistant", "content": f"{answer.text}\n\n`{answer.command}`"}]
    pictures = [np.repeat(np.repeat(np.asarray(im), DISPLAY_SCALE, 0), DISPLAY_SCALE, 1) for im in answer.images]
    return history, pictures, answer.to_json()


def build(runs: str | Path = "runs", generator: str | None = None):
    """The Gradio Blocks app (not yet launched)."""
    gr = _gradio()
    assistant = Assistant(runs, generator=generator)
    with gr.Blocks(title="minimodal assistant") as app:
        gr.Markdown("## minimodal assistant\nAsk for a picture (*draw a small red circle at the top left*), or "
                    "attach an image and ask to *describe*, *classify* or *vary* it. Speech needs `runs/whisper`.")
        chat = gr.Chatbot(label="conversation", height=320)
        with gr.Row():
            text = gr.Textbox(label="request", placeholder="could you sketch me a little crimson ball?", scale=3)
            audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="or say it")
            image = gr.Image(type="numpy", label="an image (for vary / classify / describe)")
        send = gr.Button("ask", variant="primary")
        gallery = gr.Gallery(label="pictures", columns=4, height=220, format="png")
        chain = gr.JSON(label="the chain: heard -> command -> answer (seconds per stage)")
        inputs, outputs = [text, audio, image, chat], [chat, gallery, chain]
        send.click(lambda *a: respond(assistant, *a), inputs, outputs, api_name="ask")
        text.submit(lambda *a: respond(assistant, *a), inputs, outputs, api_name=False)
    return app


def launch(runs: str | Path = "runs", port: int = 7860, generator: str | None = None, **options):
    """Serve the page on localhost:`port` (blocks until stopped)."""
    return build(runs, generator).launch(server_port=port, server_name="127.0.0.1", **options)
