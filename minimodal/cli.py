"""`minimodal train|sample|vary|eval|search|transcribe|plot|tour|chat|demo ...` (also `python -m minimodal`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from minimodal import config as configlib
from minimodal.host_memory import run_with_huge_pages


def _value(text: str) -> Any:
    """A sampling option from the command line: int, float, bool, None or str."""
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _options(assignments: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {item!r}")
        out[key.strip()] = _value(value.strip())
    return out


def _config_for(family, workdir: Path, preset: str | None, data: str | None, overrides: Sequence[str]):
    """The saved config when resuming (new key=values on top), else the preset's."""
    from minimodal import train

    saved = train.saved_config(family, workdir) if train.saved_model_name(workdir) == family.name else None
    if saved is not None and preset is None:
        base = saved
    else:
        name = preset or "default"
        if name not in family.presets:
            raise ValueError(f"{family.name} has no preset {name!r}; choose one of {', '.join(family.presets)}")
        base = family.presets[name]
    if data is not None:
        base = configlib.override(base, {"data": data})
    return configlib.override(base, overrides)


def _start_distributed(args) -> bool:
    """`--coordinator/--num-processes/--process-id` or `--distributed`: one process of a multi-process run."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if args.distributed or any(v is not None for v in explicit):
        from minimodal import distributed

        distributed.initialize(*explicit, auto=args.distributed and not any(v is not None for v in explicit))
        return True
    return False


def cmd_train(args) -> int:
    import jax

    from minimodal import distributed, train
    from minimodal.models import get_family

    several_processes = _start_distributed(args)
    family = get_family(args.model)
    workdir = Path(args.workdir)
    config = _config_for(family, workdir, args.preset, args.data, args.overrides)
    configlib.check_training_values(config)
    if family.one_device_per_core and not several_processes and config.batch_size % config.micro_batches == 0:
        count = distributed.one_cpu_device_per_core(config.batch_size // config.micro_batches)
        if count and count > 1 and jax.default_backend() == "cpu":
            distributed.say(f"each batch is split over {count} CPU devices (JAX_NUM_CPU_DEVICES=1 for one)")
    trained = train.fit(family, config, workdir, progress=not args.quiet)
    if not distributed.is_primary():
        return 0
    train.plot_loss(workdir)
    print(f"trained {family.name} to step {trained.step} in {workdir} "
          f"({trained.seconds:.0f} s of training); loss curve: {workdir / 'loss.png'}")
    return 0


def _load(model: str | None, workdir: str, step: int | None = None):
    from minimodal import train

    owner = train.saved_model_name(workdir)
    if model is not None and owner is not None and owner != model:
        raise ValueError(f"{workdir} holds a {owner!r} model, not {model!r}")
    return train.load_model(workdir, step)


def cmd_eval(args) -> int:
    family, model, config, tokenizer = _load(args.model, args.workdir, args.step)
    config = configlib.override(config, args.overrides)
    configlib.check_training_values(config)
    if family.evaluate is None:
        raise ValueError(f"{family.name} has no evaluation")
    print(json.dumps(family.evaluate(model, config, tokenizer, Path(args.workdir)), indent=2))
    return 0


def cmd_sample(args) -> int:
    from minimodal.viz import film_strip, save_grid

    options = _options(args.options)
    for flag in ("seed", "prompts"):
        if flag in options:
            raise ValueError(f"{flag}= is not a sampler option here: use --{flag.rstrip('s')}")
    if args.n < 1:
        raise ValueError(f"-n (images per prompt) must be at least 1, got {args.n}")
    if not all(p.strip() for p in args.prompt):
        raise ValueError("--prompt must not be empty")
    if args.model == "clip-guided":
        return _sample_clip_guided(args, options)
    if not args.workdir:
        raise ValueError("sample needs --workdir (the generator's work directory)")
    family, model, config, tokenizer = _load(args.model, args.workdir, args.step)
    pipeline = family.pipeline(model, config, tokenizer, Path(args.workdir))
    if not hasattr(pipeline, "generate"):
        raise ValueError(f"{family.name} is not a generator: it has no generate()")
    prompts = [p for p in args.prompt for _ in range(args.n)]
    images = pipeline.generate(prompts, seed=args.seed, **options)
    out = Path(args.out or Path(args.workdir) / "samples" / "sample.png")
    if isinstance(images, tuple):  # (images, trajectory (S, N, H, W, 3)) with return_trajectory=true
        images, film = images
        strip = out.with_name(out.stem + "_trajectory.png")
        save_grid(film_strip(film, frames=10), strip, ncols=10)
        print(f"wrote the denoising trajectory (rows: images, columns: noise -> image) to {strip}")
    save_grid(images, out, ncols=args.n)
    print(f"wrote {len(images)} images for {len(args.prompt)} prompt(s) to {out}")
    return 0


def _sample_clip_guided(args, options: dict[str, Any]) -> int:
    """`sample clip-guided --clip DIR [--vqgan DIR]`: images optimised against CLIP, and their progress strip."""
    from minimodal.clip_guided import ClipGuided
    from minimodal.viz import film_strip, save_grid

    if not args.clip:
        raise ValueError("sample clip-guided needs --clip DIR (a trained CLIP); --vqgan DIR draws through a VQGAN, "
                         "without it the pixels are optimised directly")
    if args.workdir or args.step is not None:
        raise ValueError("sample clip-guided takes --clip, --vqgan and --judge, not --workdir / --step")
    if args.judge and not (isinstance(options.get("candidates"), int) and options["candidates"] > 1):
        raise ValueError("--judge picks among candidates: add candidates=N (N >= 2) to use it")
    generator = ClipGuided(args.clip, args.vqgan, args.judge)
    prompts = [p for p in args.prompt for _ in range(args.n)]
    images, progress = generator.generate(prompts, seed=args.seed, **{"return_progress": True, **options})
    out = Path(args.out or Path(args.vqgan or args.clip) / "samples" / "clip_guided.png")
    strip = out.with_name(out.stem + "_progress.png")
    save_grid(film_strip(progress, frames=min(10, len(progress))), strip, ncols=min(10, len(progress)))
    save_grid(images, out, ncols=args.n)
    scores = generator.clip_score(images, prompts)
    print(f"wrote {len(images)} images for {len(args.prompt)} prompt(s) to {out} (mean CLIP score "
          f"{np.mean(scores):.3f}); progress (rows: images, columns: start -> end) in {strip}")
    return 0


def cmd_vary(args) -> int:
    """unCLIP: n variations of each --image (one row each), or with --to the interpolation strip a -> b."""
    from minimodal.viz import save_grid

    images = [_read_image(path) for path in args.image]
    family, model, config, tokenizer = _load("unclip", args.workdir, args.step)
    pipeline = family.pipeline(model, config, tokenizer, Path(args.workdir))
    options = _options(args.options)
    out = Path(args.out or Path(args.workdir) / "samples" / ("interpolation.png" if args.to else "variations.png"))
    if args.to:
        if len(images) != 1:
            raise ValueError("--to interpolates from one --image to another: give exactly one --image")
        strip = pipeline.interpolate(images[0], _read_image(args.to), steps=args.n, seed=args.seed, **options)
        save_grid(strip, out, ncols=args.n)
        print(f"wrote the {args.n}-step interpolation {args.image[0]} -> {args.to} to {out}")
        return 0
    rows = [pipeline.vary(image[None], n=args.n, seed=args.seed, **options)[0] for image in images]
    save_grid(np.concatenate(rows), out, ncols=args.n)
    print(f"wrote {args.n} variations of each of {len(images)} image(s) (one row each) to {out}")
    return 0


def cmd_search(args) -> int:
    import minimodal
    from minimodal.clip_tasks import search
    from minimodal.viz import save_grid

    pipeline = minimodal.load(args.workdir)
    matches = search(pipeline, args.images, args.query, k=args.k)
    for rank, match in enumerate(matches, 1):
        print(f"{rank:2d}. {match['score']:.3f}  {match['name']}")
    if args.out:
        save_grid(np.stack([m["image"] for m in matches]), args.out)
        print(f"wrote the top {len(matches)} matches to {args.out}")
    return 0


def cmd_transcribe(args) -> int:
    options = [a for a in args.files if "=" in a and not Path(a).exists()]  # key=value options follow the files
    files = [a for a in args.files if a not in options]
    if not files:
        raise ValueError("give at least one WAV file to transcribe")
    family, model, config, tokenizer = _load(None, args.workdir, args.step)
    pipeline = family.pipeline(model, config, tokenizer, Path(args.workdir))
    if not hasattr(pipeline, "transcribe"):
        raise ValueError(f"{family.name} does not transcribe speech: give a whisper work directory")
    for path, text in zip(files, pipeline.transcribe(files, **_options(options))):
        print(f"{path}\t{text}")
    return 0


def cmd_plot(args) -> int:
    from minimodal import train

    print(train.plot_loss(args.workdir, args.out))
    return 0


def cmd_tour(args) -> int:
    from minimodal import tour

    report = tour.run(Path(args.workdir), mode="smoke" if args.smoke else "fast" if args.fast else "full")
    print(f"report: {report}")
    return 0


def _read_image(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, IsADirectoryError):
        raise ValueError(f"--image {path} is not a readable image file") from None


def _show_answer(answer, out: Path, as_json: bool) -> None:
    """Write the answer's images (one PNG each) and print the chain, or one JSON object."""
    from PIL import Image

    if answer.images:
        out.mkdir(parents=True, exist_ok=True)
        stamp = f"{int(time.time() * 1000) % 10**9:09d}"
        for i, image in enumerate(answer.images):
            path = out / f"answer_{stamp}_{i}.png"
            Image.fromarray(np.asarray(image)).save(path)
            answer.image_paths.append(str(path))
    if as_json:
        print(json.dumps(answer.to_json()), flush=True)
        return
    if answer.transcript is not None:
        print(f"  heard:   {answer.transcript}")
    print(f"  command: {answer.command}")
    print(f"  answer:  {answer.text}")
    for path in answer.image_paths:
        print(f"  image:   {path}")


def cmd_chat(args) -> int:
    from minimodal.assistant import Assistant

    assistant = Assistant(args.runs, generator=args.generator)
    image, out = _read_image(args.image), Path(args.out or Path(args.runs) / "chat")
    if args.once is not None or args.audio is not None:
        _show_answer(assistant.ask(args.once, audio=args.audio, image=image, folder=args.images, seed=args.seed),
                     out, args.json)
        return 0
    print("minimodal chat: ask for a picture (\"draw a small red circle at the top left\"), or about --image / "
          "--images; an empty line or Ctrl-D quits.")
    turn = 0
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            return 0
        if not text or text in ("quit", "exit"):
            return 0
        try:
            _show_answer(assistant.ask(text, image=image, folder=args.images, seed=args.seed + turn), out, args.json)
        except (ValueError, FileNotFoundError) as error:
            print(f"  error: {error}")
        turn += 1


def cmd_demo(args) -> int:
    from minimodal import demo

    demo.launch(args.runs, port=args.port, generator=args.generator)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimodal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model end to end; resumes when WORKDIR holds a checkpoint")
    p.add_argument("model", help="clip | vqvae | dalle | ddpm | unclip | assistant | whisper")
    p.add_argument("--data", help="data source: shapes, digits, cifar10, cifar100, coco_captions, folder:PATH")
    p.add_argument("--workdir", required=True)
    p.add_argument("--preset", help="named config (default: 'default', or the saved one when resuming)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. steps=2000 lr=3e-4")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="several processes: process 0's address")
    p.add_argument("--num-processes", type=int, metavar="N", help="several processes: how many in all")
    p.add_argument("--process-id", type=int, metavar="I", help="several processes: this one's index, 0..N-1")
    p.add_argument("--distributed", action="store_true",
                   help="several processes, found by JAX's cluster auto-detection (SLURM, Open MPI, TPU pods)")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("sample", help="draw images for prompts with a trained generator, as a PNG grid")
    p.add_argument("model", nargs="?", help="dalle | ddpm (checked against WORKDIR) | clip-guided (--clip, --vqgan)")
    p.add_argument("--workdir", help="the generator's work directory (all but clip-guided)")
    p.add_argument("--clip", help="clip-guided: the CLIP work directory whose similarity is maximised")
    p.add_argument("--vqgan", help="clip-guided: a VQGAN (vqvae) work directory to draw through; none: raw pixels")
    p.add_argument("--judge", help="clip-guided: a second CLIP work directory that picks among candidates=N "
                                   "(default: the guiding CLIP)")
    p.add_argument("--prompt", action="append", required=True, help="repeat for several prompts")
    p.add_argument("-n", type=int, default=8, help="images per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="PNG path (default WORKDIR/samples/sample.png)")
    p.add_argument("--step", type=int, help="the checkpoint to use (default: the newest intact one)")
    p.add_argument("options", nargs="*", metavar="key=value", help="sampler options, e.g. guidance=3 steps=50")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("vary", help="unCLIP: variations of an image (or an interpolation between two)")
    p.add_argument("--workdir", required=True, help="an unCLIP work directory")
    p.add_argument("--image", action="append", required=True, help="an image file; repeat for several")
    p.add_argument("--to", help="a second image: write the interpolation strip from --image to it instead")
    p.add_argument("-n", type=int, default=8, help="variations per image (or images in the strip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="PNG path (default WORKDIR/samples/variations.png or interpolation.png)")
    p.add_argument("--step", type=int, help="the checkpoint to use (default: the newest intact one)")
    p.add_argument("options", nargs="*", metavar="key=value", help="decoder options, e.g. guidance=3 steps=50")
    p.set_defaults(run=cmd_vary)

    p = sub.add_parser("eval", help="print a trained model's metrics as one JSON object")
    p.add_argument("model", nargs="?")
    p.add_argument("--workdir", required=True)
    p.add_argument("--step", type=int, help="the checkpoint to use (default: the newest intact one)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("search", help="text-based image search with a trained CLIP")
    p.add_argument("query")
    p.add_argument("--workdir", required=True)
    p.add_argument("--images", required=True, help="a folder of images, or a data source such as shapes")
    p.add_argument("-k", type=int, default=8)
    p.add_argument("--out", help="write the top matches as a PNG grid")
    p.set_defaults(run=cmd_search)

    p = sub.add_parser("transcribe", help="speech to text with a trained whisper: one 'file<TAB>text' line each")
    p.add_argument("--workdir", required=True)
    p.add_argument("--step", type=int, help="the checkpoint to use (default: the newest intact one)")
    p.add_argument("files", nargs="+", metavar="FILE.wav [key=value ...]",
                   help="WAV files, then transcription options, e.g. beam_size=1 (greedy)")
    p.set_defaults(run=cmd_transcribe)

    p = sub.add_parser("plot", help="plot a run's loss curve to PNG")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out")
    p.set_defaults(run=cmd_plot)

    p = sub.add_parser("chat", help="the assistant: ask in words (or --audio) for pictures, or about an image")
    p.add_argument("--runs", default="runs", help="folder of trained work directories (runs/assistant, runs/clip, ...)")
    p.add_argument("--once", metavar="TEXT", help="answer one request and exit")
    p.add_argument("--audio", metavar="WAV", help="answer one spoken request (needs runs/whisper) and exit")
    p.add_argument("--image", help="an image to vary, classify or describe")
    p.add_argument("--images", help="a folder of images to find things in")
    p.add_argument("--generator", choices=("ddpm", "dalle"), help="who draws (default: the best one trained)")
    p.add_argument("--out", help="where answer images go (default RUNS/chat)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object per answer")
    p.set_defaults(run=cmd_chat)

    p = sub.add_parser("demo", help="the assistant as a web page (Gradio; pip install -e '.[demo]')")
    p.add_argument("--runs", default="runs")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--generator", choices=("ddpm", "dalle"))
    p.set_defaults(run=cmd_demo)

    p = sub.add_parser("tour", help="train CLIP, DALL-E and DDPM on shapes and write report.html")
    p.add_argument("--workdir", default="runs/tour")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--fast", action="store_true", help="the ~5.5 minute version: 16 px models, short training")
    speed.add_argument("--smoke", action="store_true",
                       help="seconds of training that learn nothing: checks every stage runs (the tests use it)")
    p.set_defaults(run=cmd_tour)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the `minimodal` command itself, not a caller passing arguments
        run_with_huge_pages()
    from minimodal.checkpoints import CheckpointWriteError
    from minimodal.train import TrainingDiverged, WorkdirMismatch

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # key=value pairs may follow --options too
    if "=" in (getattr(args, "model", None) or ""):  # `sample --workdir D guidance=3`: no model name given
        extra.insert(0, args.model)
        args.model = None
    leftovers = [e for e in extra if e.startswith("-") or "=" not in e]
    if leftovers or (extra and not hasattr(args, "overrides") and not hasattr(args, "options")):
        parser.error(f"unrecognized arguments: {' '.join(leftovers or extra)}")
    for name in ("overrides", "options"):
        if hasattr(args, name):
            setattr(args, name, [*getattr(args, name), *extra])
    try:
        return args.run(args)
    except CheckpointWriteError as error:  # disk full / read-only while saving: the last checkpoint is intact
        if os.environ.get("MINIMODAL_DEBUG"):
            raise
        print(f"minimodal {args.command}: error: {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)  # now: Orbax's writer threads would print the same failure for pages
    except (ValueError, FileNotFoundError, WorkdirMismatch, TrainingDiverged) as error:
        if os.environ.get("MINIMODAL_DEBUG"):
            raise
        print(f"minimodal {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, read-only or vanished files outside a checkpoint write
        if os.environ.get("MINIMODAL_DEBUG"):
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"minimodal {args.command}: error: {error.strerror or error}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"minimodal {args.command}: {stop or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
