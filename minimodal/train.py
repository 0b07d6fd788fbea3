"""The one training loop: any model family, sharded over all devices, checkpointed, resumable, observable.

A family (`Family`) gives a model builder and a pure `loss_fn`; `fit` owns everything else:
data -> tokenizer -> batches sharded along the batch axis over a 1-D device mesh -> one jit-compiled
step (AdamW, warm-up + cosine, global-norm clipping, optional EMA) -> metrics.jsonl, sample grids,
Orbax checkpoints in the work directory. Re-running the same command resumes from the last checkpoint
and, on the CPU, ends bitwise identical to an uninterrupted run: batch `s` and the step's PRNG key
(`fold_in(key(seed), s)`) are pure functions of the step number.

Flax API: NNX (`flax.nnx`), Flax's recommended API for new code. The model is split once into
(graphdef, params, rest) and the step is a plain `jax.jit` of a pure function of those arrays, because
`nnx.jit` re-walks the module graph on every call (tens of ms with hundreds of arrays).

Two (or more) optimisers: a family may declare `groups`, sub-modules trained by a loss and an optimiser of
their own (a GAN's discriminator: `Group("discriminator", discriminator_loss_fn, its_optimizer)`). The
model's Params are then split by the sub-module's attribute name: each group's Params, and the others
("params", which the family's `loss_fn` and `make_optimizer(config)` train, as always). One step updates
them in turn on the same batch (alternating, as taming-transformers' VQGAN does):
    1. the main loss's gradient w.r.t. the main params only (the groups' Params are constants) -> update;
    2. for each group in order: its loss, on the model *after* step 1 (and earlier groups), differentiated
       w.r.t. that group's Params only -> its own optimiser's update.
Each group has its own optimiser state in `state["groups"][name]`; its loss, gradient norm and metrics are
logged as `<name>_loss`, `<name>_grad_norm`, `<name>_<metric>`; a non-finite one stops training like the main
loss. EMA (if any) averages the main params only. A group whose sub-module the built model lacks (None) is
left out, so a family can make it a config option (the plain VQ-VAE and the VQGAN are one family): without
groups the state, the step and the checkpoints are exactly those of a single-optimiser family.

Frozen weights: a model whose `frozen` attribute names a sub-module (the DDPM's pretrained text encoder with
`freeze_text`) keeps that sub-module's Params in the state's rest: saved and restored with the rest, never
differentiated, updated, decayed or averaged.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from minimodal import config as configlib
from minimodal import distributed
from minimodal.checkpoints import CheckpointDamaged, Checkpoints
from minimodal.config import TrainConfig
from minimodal.tokenizer import Tokenizer
from minimodal.workdir import (CONFIG_FILE, METRICS_FILE, RUN_FILE, TOKENIZER_FILE, TrainingLock, WorkdirError,
                               model_name, read_tokenizer)

logging.getLogger("absl").setLevel(logging.WARNING)


@dataclasses.dataclass(frozen=True)
class Group:
    """A sub-module trained by a loss and an optimiser of its own (see the module docstring).

    module: the model's attribute holding it (e.g. "discriminator"); the group is left out when it is None.
    loss_fn(model, batch, rng) -> (scalar loss, {name: scalar}), differentiated w.r.t. that sub-module's Params.
    optimizer(config) -> optax.GradientTransformation; default: `make_optimizer(config)`.
    """

    module: str
    loss_fn: Callable[[nnx.Module, dict[str, Any], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
    optimizer: Callable[[TrainConfig], optax.GradientTransformation] | None = None


@dataclasses.dataclass(frozen=True)
class Family:
    """What a model family gives the trainer; the loop owns everything else.

    build(config, tokenizer, rngs) -> nnx.Module
    loss_fn(model, batch, rng) -> (scalar loss, {name: scalar}); pure, jit-able, no host sync.
        `batch` is the pipeline's dict (images float32 (B,H,W,3) in [-1,1], tokens int32 (B,T), extras).
    text_tokenizer(config, workdir) -> Tokenizer | None   optional: the tokenizer to use instead of training one on
        the captions (unCLIP, a DDPM reading CLIP's text encoder: that CLIP's; None: train one)
    prepare(config, examples, tokenizer, workdir) -> examples     optional: add arrays (e.g. image tokens)
    warm_start(model, config, tokenizer, workdir) -> None   optional: set some weights before step 0 of a fresh run
    sample_grid(model, config, tokenizer, rng, workdir) -> uint8 (N,H,W,3)   optional: periodic PNG grids
    evaluate(model, config, tokenizer, workdir) -> {name: float}   optional: `minimodal eval` + periodic
    pipeline(model, config, tokenizer, workdir) -> object          what `minimodal.load(workdir)` returns
    groups: sub-modules with a loss and an optimiser of their own (`Group`; e.g. a GAN's discriminator)
    per_example_loss: the loss is a mean of per-example terms, so `micro_batches` > 1 gives the same gradient
        (or close to it, for a mean over non-padding tokens; False: CLIP's contrastive loss, whose negatives are
        the rest of the batch, and the VQ-VAE's codebook EMA)
    one_device_per_core: `minimodal train` on a CPU splits each batch over one device per core, or as many as
        leave each ≥ 8 examples of a slice (`distributed.one_cpu_device_per_core`; measured faster for CLIP and
        the DDPM, slower for DALL-E: bench/results/clip.md, dalle.md)
    """

    name: str
    config_class: type
    presets: dict[str, TrainConfig]  # at least "default" (CPU shapes), "tiny" (tests), "gpu"
    build: Callable[..., nnx.Module]
    loss_fn: Callable[[nnx.Module, dict[str, Any], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
    prepare: Callable[..., dict[str, Any]] | None = None
    text_tokenizer: Callable[..., Tokenizer] | None = None
    warm_start: Callable[..., None] | None = None
    sample_grid: Callable[..., np.ndarray] | None = None
    evaluate: Callable[..., dict[str, float]] | None = None
    pipeline: Callable[..., Any] | None = None
    groups: tuple[Group, ...] = ()
    per_example_loss: bool = True
    one_device_per_core: bool = False


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class WorkdirMismatch(ValueError):
    """The work directory belongs to another model or to an incompatible config."""


@dataclasses.dataclass
class Trained:
    """What `fit` returns: the trained model (EMA weights if kept) and what describes it."""

    model: nnx.Module
    config: TrainConfig
    tokenizer: Tokenizer
    workdir: Path
    step: int
    seconds: float  # wall time of this call's steps after its first log interval (which includes compiling)


# ----------------------------------------------------------------------------- work directory

def saved_model_name(workdir: str | Path) -> str | None:
    """The model family a work directory was made by, or None for a new directory."""
    return model_name(workdir)


def saved_config(family: Family, workdir: str | Path) -> TrainConfig | None:
    path = Path(workdir) / CONFIG_FILE
    return configlib.load(family.config_class, path) if path.exists() else None


def _check_workdir_fits(family: Family, config: TrainConfig, workdir: Path) -> None:
    """Refuse a work directory made by another model or with an incompatible config (reads only)."""
    owner = saved_model_name(workdir)
    if owner is not None and owner != family.name:
        raise WorkdirMismatch(f"{workdir} holds a {owner!r} run, not {family.name!r}: choose another --workdir")
    if _checkpoints(workdir, 1).steps():  # resuming needs the exact config and tokenizer the run began with
        for name in (CONFIG_FILE, TOKENIZER_FILE):
            if not (workdir / name).exists():
                raise WorkdirError(f"{workdir / name} is missing but {workdir} holds checkpoints trained with it; "
                                   "restore it from a copy, or choose a new --workdir")
    if (workdir / TOKENIZER_FILE).exists():
        read_tokenizer(workdir)  # a damaged one is named now, before any data is loaded
    old = saved_config(family, workdir)
    if old is not None:
        changed = configlib.incompatible_keys(old, config)
        if changed:
            diffs = ", ".join(f"{k}: {getattr(old, k)!r} -> {getattr(config, k)!r}" for k in changed)
            raise WorkdirMismatch(f"{workdir} was trained with another config ({diffs}); resume with the "
                                  "saved settings or choose a new --workdir")


def _claim_workdir(family: Family, config: TrainConfig, workdir: Path) -> None:
    """Write run.json + config.json (the lock is held)."""
    configlib.write_atomically(workdir / RUN_FILE, json.dumps({"model": family.name}) + "\n")
    configlib.save(config, workdir / CONFIG_FILE)


def _tokenizer_for(workdir: Path, captions: Sequence[str], vocab_size: int) -> Tokenizer:
    path = workdir / TOKENIZER_FILE
    if path.exists():
        return read_tokenizer(workdir)
    tokenizer = Tokenizer.train(list(captions), vocab_size)
    tokenizer.save(path)
    return tokenizer


# ----------------------------------------------------------------------------- optimisation


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW with linear warm-up then cosine decay to 5% of `lr`, after global-norm clipping.

    Weight decay applies to matrices and kernels only (ndim >= 2), not to biases, norms or scales.
    """
    warmup = min(config.warmup_steps, max(config.steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.lr, warmup, max(config.steps, warmup + 1),
                                                  end_value=0.05 * config.lr)
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
    return optax.chain(optax.clip_by_global_norm(config.grad_clip),
                       optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask))


def group_optimizers(family: Family, model: nnx.Module,
                     config: TrainConfig) -> list[tuple[Group, optax.GradientTransformation]]:
    """The family's groups that this model has (sub-module not None), each with its optimiser."""
    return [(g, (g.optimizer or make_optimizer)(config)) for g in family.groups
            if getattr(model, g.module, None) is not None]


def _split(model: nnx.Module, groups: Sequence[tuple[Group, Any]] = ()):
    """(graphdef, [each group's Params], the other Params, the rest); without groups: nnx.split(model, Param, ...).
    A model whose `frozen` attribute names a sub-module keeps that sub-module's Params in the rest."""
    filters = [nnx.All(nnx.Param, nnx.PathContains(g.module)) for g, _ in groups]
    frozen = getattr(model, "frozen", None)
    if frozen is not None and getattr(model, frozen, None) is None:
        raise ValueError(f"{type(model).__name__}.frozen names {frozen!r}, which the model does not have")
    trained = nnx.Param if frozen is None else nnx.All(nnx.Param, lambda path, _: path[:1] != (frozen,))
    graphdef, *states = nnx.split(model, *filters, trained, ...)
    return graphdef, states[:-2], states[-2], states[-1]


def _compile_once(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` traced and compiled as one XLA program, then run. For set-up code run once per model (its
    initialisers, its optimiser state): run eagerly, each of its ops is a compilation of its own (~0.2 s
    each on a CPU core: 15 s to build the fast tour's DDPM); as one program compiled at LLVM optimisation level 1
    (the code runs once, so it needs no more) ~6 s. Same arrays as eager, up to float rounding."""
    options = {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None
    return jax.jit(fn, compiler_options=options)(*args)


def build_model(family: Family, config: TrainConfig, tokenizer: Any, seed: int, *,
                abstract: bool = False) -> nnx.Module:
    """`family.build(config, tokenizer, nnx.Rngs(seed))`, its initialisers run as one program (`_compile_once`);
    `abstract`: only its arrays' shapes and dtypes (`nnx.eval_shape`), nothing initialised — for a checkpoint
    to replace."""
    if abstract:
        return nnx.eval_shape(lambda: family.build(config, tokenizer, nnx.Rngs(seed)))
    graphdefs = []

    def init():
        graphdef, state = nnx.split(family.build(config, tokenizer, nnx.Rngs(seed)))
        graphdefs.append(graphdef)  # static: known once traced
        return state

    state = _compile_once(init)
    return nnx.merge(graphdefs[0], state)


def _initial_state(model: nnx.Module, tx: optax.GradientTransformation, config: TrainConfig,
                   groups: Sequence[tuple[Group, optax.GradientTransformation]] = (), *, abstract: bool = False,
                   sharding: jax.sharding.Sharding | None = None):
    """Split the model into (graphdef, state): state = {step, params, rest, opt_state, ema?, bad_step}, plus
    groups: {name: {params, opt_state}} when the model has groups. Made as one program (`_compile_once`);
    `abstract`: of a model from `nnx.eval_shape`, only the state's shapes and dtypes, placed with `sharding`
    (default: the process's first local device), with nothing computed (a target to restore a checkpoint into)."""
    graphdef, group_params, params, rest = _split(model, groups)

    def init(params, rest, group_params):
        # weakly typed leaves would make the step compile twice
        params, rest, group_params = jax.tree.map(lambda x: jnp.array(x, dtype=jnp.result_type(x)),
                                                  (params, rest, group_params))
        state = {"step": jnp.zeros((), jnp.int32), "params": params, "rest": rest,
                 "opt_state": tx.init(params), "bad_step": jnp.full((), -1, jnp.int32)}
        if groups:
            state["groups"] = {g.module: {"params": p, "opt_state": gtx.init(p)}
                               for (g, gtx), p in zip(groups, group_params)}
        if config.ema_decay > 0:
            state["ema"] = jax.tree.map(jnp.copy, params)
        return state

    if abstract:
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # where eager arrays are
        shapes = jax.eval_shape(init, params, rest, group_params)
        return graphdef, jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)
    return graphdef, _compile_once(init, params, rest, group_params)


def _group_params(state) -> list[Any]:
    return [g["params"] for g in state.get("groups", {}).values()]


def make_train_step(family: Family, graphdef: Any, tx: optax.GradientTransformation, config: TrainConfig,
                    groups: Sequence[tuple[Group, optax.GradientTransformation]] = ()):
    """The pure step: (state, batch) -> (state, metrics). A non-finite loss or gradient records its step in
    `state["bad_step"]` (a scalar: no host sync per step, no select over the weights); the loop checks it
    at every log and before every checkpoint, so only finite states are ever saved.
    With `groups` (from `group_optimizers`), each group's loss then updates its own Params in turn."""
    base_key = jax.random.key(config.seed)

    def step_fn(state, batch):
        rng = jax.random.fold_in(base_key, state["step"])
        held = _group_params(state)  # constants of the main loss

        def loss_of(params, rest, batch, rng):
            model = nnx.merge(graphdef, params, *held, rest, copy=True)  # fresh Variables in this trace
            loss, metrics = family.loss_fn(model, batch, rng)
            rest = _split(model, groups)[3]  # non-Param state the loss updated (e.g. EMA codebooks)
            return loss, (metrics, rest)

        grad_fn = jax.value_and_grad(loss_of, has_aux=True)
        if config.micro_batches == 1:
            (loss, (metrics, rest)), grads = grad_fn(state["params"], state["rest"], batch, rng)
        else:
            loss, metrics, rest, grads = _accumulate(grad_fn, state["params"], state["rest"], batch, rng,
                                                     config.micro_batches)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = {**state, "step": state["step"] + 1, "params": params, "rest": rest, "opt_state": opt_state}
        metrics = {"loss": loss, "grad_norm": grad_norm, **metrics}
        if groups:
            new["groups"], finite_groups, group_metrics = _group_updates(groups, graphdef, new, batch, rng)
            finite, metrics = finite & finite_groups, {**metrics, **group_metrics}
        new["bad_step"] = jnp.where(finite | (state["bad_step"] >= 0), state["bad_step"], state["step"])
        if "ema" in state:  # ema <- d * ema + (1 - d) * params
            d = config.ema_decay
            new["ema"] = jax.tree.map(lambda e, p: d * e + (1 - d) * p, state["ema"], params)
        return new, metrics

    return step_fn


def _accumulate(grad_fn, params, rest, batch, rng, k: int):
    """A per-example-mean loss's gradient over the batch as the mean of k slices' gradients:
    ∇ (1/B) Σ_b ℓ_b = (1/k) Σ_j ∇ (k/B) Σ_{b ∈ slice j} ℓ_b. Slice j takes rows j, j + k, j + 2k, ... (when k
    divides a device's shard of the batch, every device holds an equal part of every slice; otherwise XLA moves
    rows) and the key `fold_in(rng, j)`; the non-Param state flows through the slices in order. A mean over a
    batch's non-padding tokens (DALL-E's text, Whisper's transcripts, the assistant's replies)
    becomes the mean of the slices' means: close to, not equal to, the whole batch's when slices differ in
    length. The slices are written out one after another, not in a `lax.scan`: on XLA's CPU backend a loop
    body ran the U-Net's convolutions 15× slower. Returns (loss, metrics, rest, gradient), each the mean over
    the slices."""
    rows = {x.shape[0] for x in jax.tree.leaves(batch)}
    if any(r % k for r in rows):
        raise ValueError(f"a batch of {sorted(rows)} rows does not cut into micro_batches={k} equal slices")
    outs = []
    for j in range(k):
        part = jax.tree.map(lambda x: x[j::k], batch)
        (loss, (metrics, rest)), grads = grad_fn(params, rest, part, jax.random.fold_in(rng, j))
        outs.append((loss, metrics, grads))
    loss, metrics, grads = jax.tree.map(lambda *xs: sum(xs) / k, *outs)
    return loss, metrics, rest, grads


def _group_updates(groups, graphdef, state, batch, rng):
    """Each group's loss on the current model, differentiated w.r.t. its own Params, then its optimiser's
    update; later groups see earlier groups' updates. Returns (groups state, all finite, metrics);
    `state["rest"]` takes the non-Param state the group losses updated."""
    current = dict(state["groups"])
    finite, metrics = jnp.asarray(True), {}
    for i, (group, gtx) in enumerate(groups):
        name = group.module
        others = [current[g.module]["params"] for g, _ in groups if g.module != name]

        def loss_of(own, group=group, others=others):
            model = nnx.merge(graphdef, state["params"], *others, own, state["rest"], copy=True)
            loss, aux = group.loss_fn(model, batch, jax.random.fold_in(rng, i + 1))
            return loss, (aux, _split(model, groups)[3])

        (loss, (aux, rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(current[name]["params"])
        state = {**state, "rest": rest}
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = gtx.update(grads, current[name]["opt_state"], current[name]["params"])
        current[name] = {"params": optax.apply_updates(current[name]["params"], updates), "opt_state": opt_state}
        finite = finite & jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        metrics.update({f"{name}_loss": loss, f"{name}_grad_norm": grad_norm,
                        **{f"{name}_{k}": v for k, v in aux.items()}})
    return current, finite, metrics


# ----------------------------------------------------------------------------- checkpoints


def _checkpoints(workdir: Path, keep: int) -> Checkpoints:
    return Checkpoints(workdir / "checkpoints", keep, say=distributed.say)


# ----------------------------------------------------------------------------- the loop


def mesh_for(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D data-parallel mesh over `devices` (default: all devices)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


# Whether a `fit` that is not told shows its progress bar: the enclosing `fit`'s choice (a model a family trains
# first from one of its hooks, e.g. a DDPM's CLIP), else yes.
_SHOW_PROGRESS = contextvars.ContextVar("minimodal_show_progress", default=True)


@contextlib.contextmanager
def _progress_for_nested_fits(show: bool):
    token = _SHOW_PROGRESS.set(show)
    try:
        yield
    finally:
        _SHOW_PROGRESS.reset(token)


def fit(family: Family, config: TrainConfig, workdir: str | Path, *, examples: dict[str, Any] | None = None,
        tokenizer: Tokenizer | None = None, devices: Sequence[jax.Device] | None = None,
        progress: bool | None = None) -> Trained:
    """Train `family` with `config` in `workdir`, resuming from its last checkpoint if there is one. `progress`:
    show a progress bar (None: as the `fit` this one runs inside does, else yes)."""
    from minimodal.data import Batches, load_examples

    workdir = Path(workdir)
    if not isinstance(config, family.config_class):
        raise TypeError(f"{family.name} needs a {family.config_class.__name__}, got {type(config).__name__}")
    configlib.check_training_values(config)
    mesh = mesh_for(devices)
    if config.batch_size % mesh.size:
        raise ValueError(f"batch_size={config.batch_size} must be a multiple of the {mesh.size} devices "
                         "the batch is split over")
    if config.micro_batches > 1 and not family.per_example_loss:
        raise ValueError(f"{family.name}'s loss is not a mean of per-example terms, so slicing its batch would "
                         f"change what it learns: micro_batches must be 1, got {config.micro_batches}")
    if config.batch_size % config.micro_batches:
        raise ValueError(f"batch_size={config.batch_size} must be a multiple of micro_batches="
                         f"{config.micro_batches} (the batch is cut into that many equal slices)")
    distributed.check_same_settings({"model": family.name, "workdir": str(workdir), **configlib.to_dict(config)})
    _check_workdir_fits(family, config, workdir)
    distributed.barrier("minimodal_workdir_checked")  # every process has read the files before any is written
    finished = _finished(config, workdir)
    if finished is not None:
        return finished
    primary = distributed.is_primary()
    if primary:
        workdir.mkdir(parents=True, exist_ok=True)
    progress = _SHOW_PROGRESS.get() if progress is None else progress
    with (TrainingLock(workdir, say=distributed.say) if primary else contextlib.nullcontext(),
          _progress_for_nested_fits(progress)):
        if primary:
            _claim_workdir(family, config, workdir)
        if examples is None:
            examples = load_examples(config.data, "train", config.n_train, config.image_size, config.seed)
        if tokenizer is None and family.text_tokenizer is not None:
            tokenizer = family.text_tokenizer(config, workdir)
        if tokenizer is None and primary:
            tokenizer = _tokenizer_for(workdir, examples["captions"], config.vocab_size)
        elif primary and not (workdir / TOKENIZER_FILE).exists():
            tokenizer.save(workdir / TOKENIZER_FILE)
        distributed.barrier("minimodal_workdir_claimed")
        tokenizer = tokenizer or read_tokenizer(workdir)
        if family.prepare is not None:
            examples = family.prepare(config, examples, tokenizer, workdir)

        replicated, by_batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        batches = Batches(examples, tokenizer, config.batch_size, config.context_length, config.seed, by_batch)
        checkpoints = _checkpoints(workdir, config.keep_checkpoints)
        resuming = bool(checkpoints.steps())  # a checkpoint will replace every array: build only their shapes
        model = build_model(family, config, tokenizer, config.seed, abstract=resuming)
        if not resuming and family.warm_start is not None:
            family.warm_start(model, config, tokenizer, workdir)
        tx, groups = make_optimizer(config), group_optimizers(family, model, config)
        graphdef, state = _initial_state(model, tx, config, groups, abstract=resuming, sharding=replicated)
        start, restored = checkpoints.restore_newest(state, set_damaged_aside=True)
        if start:
            state = restored
            distributed.say(f"resuming {workdir} from step {start}")
        state = jax.device_put(state, replicated)
        step_fn = jax.jit(make_train_step(family, graphdef, tx, config, groups), donate_argnums=0,
                          out_shardings=(replicated, replicated))

        stop = _StopFlag()
        state, seconds = _run_steps(family, config, workdir, graphdef, tokenizer, batches, step_fn, checkpoints,
                                    state, start, stop, progress and primary)
    if stop.requested:
        raise KeyboardInterrupt(f"interrupted: checkpoint saved at step {int(state['step'])} in {workdir}")
    state = distributed.local_copy(state)
    return Trained(_current_model(graphdef, state), config, tokenizer, workdir, int(state["step"]), seconds)


def _finished(config: TrainConfig, workdir: Path) -> Trained | None:
    """A run whose newest checkpoint is intact and at `config.steps`, loaded as it is (no data, no steps);
    None when there is training left to do. A model that carries its config gets the caller's (which may
    differ from the saved one only in keys a resumed run may change, such as sampling settings)."""
    checkpoints = _checkpoints(workdir, config.keep_checkpoints)
    step = checkpoints.latest_step()
    if step != config.steps or not _intact(checkpoints, step):
        return None
    _, model, saved, tokenizer = load_model(workdir, step)
    if getattr(model, "config", None) == saved:
        model.config = config
    distributed.say(f"{workdir} is already trained to step {step}: loaded it")
    return Trained(model, config, tokenizer, workdir, step, 0.0)


class _StopFlag:
    """Ctrl-C sets a flag the loop checks between steps, so the state is never half-updated."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, *_):
        self.requested = True

    def __exit__(self, *_):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _run_steps(family, config, workdir, graphdef, tokenizer, batches, step_fn, checkpoints, state, start, stop,
               progress) -> tuple[dict[str, Any], float]:
    """Run steps [start, config.steps) unless stopped; returns (state, seconds of steady-state training)."""
    metrics_file = workdir / METRICS_FILE
    pending: list[dict[str, jax.Array]] = []  # device scalars of the steps since the last log
    bar = tqdm(total=config.steps, initial=start, desc=f"train {family.name}", disable=not progress,
               dynamic_ncols=True)
    t_log, t_train, logged = time.perf_counter(), 0.0, 0
    with stop:
        for step in range(start, config.steps):
            if stop.requested:
                break
            state, metrics = step_fn(state, batches.batch(step))
            pending.append(metrics)
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                _check_finite(state, checkpoints, workdir)
                row = {k: float(v) for k, v in jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *pending).items()}
                now = time.perf_counter()
                row = {"step": done, **row, "steps_per_sec": len(pending) / (now - t_log), "time": time.time()}
                if logged:  # the first interval of a call includes compilation: not timed
                    t_train += now - t_log
                logged += 1
                t_log, pending = now, []
                if distributed.is_primary():
                    with metrics_file.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
            bar.update(1)
            if done % config.checkpoint_every == 0 and done != config.steps:
                _save(checkpoints, state, workdir)
            if config.sample_every and done % config.sample_every == 0:
                _write_samples(family, config, graphdef, tokenizer, state, workdir)
            if config.eval_every and done % config.eval_every == 0:
                _write_eval(family, config, graphdef, tokenizer, state, workdir)
    bar.close()
    final_step = int(state["step"])
    if final_step > (checkpoints.latest_step() or 0):
        _save(checkpoints, state, workdir)
    if final_step == config.steps and not stop.requested and family.sample_grid is not None:
        _write_samples(family, config, graphdef, tokenizer, state, workdir)
    return state, t_train


def _check_finite(state, checkpoints: Checkpoints, workdir: Path) -> None:
    bad = int(state["bad_step"])
    if bad >= 0:
        last = checkpoints.latest_step()
        kept = f"the last good checkpoint (step {last}) is kept in {workdir}" if last else "no checkpoint was saved"
        raise TrainingDiverged(f"loss became NaN/Inf at step {bad + 1}; training stopped and {kept}. "
                               "Try a lower lr or stronger gradient clipping (grad_clip=...).")


def _save(checkpoints: Checkpoints, state, workdir: Path) -> None:
    _check_finite(state, checkpoints, workdir)
    checkpoints.save(int(state["step"]), state)


def _current_model(graphdef, state) -> nnx.Module:
    return nnx.merge(graphdef, state.get("ema", state["params"]), *_group_params(state), state["rest"])


def _write_samples(family, config, graphdef, tokenizer, state, workdir: Path) -> None:
    from minimodal.viz import save_grid

    if family.sample_grid is None or not distributed.is_primary():
        return
    state = distributed.local_copy(state)
    step = int(state["step"])
    images = family.sample_grid(_current_model(graphdef, state), config, tokenizer,
                                jax.random.fold_in(jax.random.key(config.seed + 1), step), workdir)
    save_grid(np.asarray(images), workdir / "samples" / f"step_{step:06d}.png")


def _write_eval(family, config, graphdef, tokenizer, state, workdir: Path) -> None:
    if family.evaluate is None or not distributed.is_primary():
        return
    state = distributed.local_copy(state)
    results = family.evaluate(_current_model(graphdef, state), config, tokenizer, workdir)
    with (workdir / "eval.jsonl").open("a") as f:
        f.write(json.dumps({"step": int(state["step"]), **{k: float(v) for k, v in results.items()}}) + "\n")


# ----------------------------------------------------------------------------- loading


def load_model(workdir: str | Path, step: int | None = None) -> tuple[Family, nnx.Module, TrainConfig, Tokenizer]:
    """Rebuild a trained model from its work directory alone (EMA weights when the run kept them),
    from the last checkpoint or the one at `step`."""
    from minimodal.models import get_family

    workdir = Path(workdir)
    name = saved_model_name(workdir)
    if name is None:
        raise FileNotFoundError(f"{workdir} is not a minimodal work directory (no {RUN_FILE}); "
                                "train one with `minimodal train MODEL --workdir DIR`")
    family = get_family(name)
    config = configlib.load(family.config_class, workdir / CONFIG_FILE)
    tokenizer = read_tokenizer(workdir)
    model = build_model(family, config, tokenizer, config.seed, abstract=True)  # nothing to initialise
    graphdef, state = _initial_state(model, make_optimizer(config), config, group_optimizers(family, model, config),
                                     abstract=True)
    checkpoints = _checkpoints(workdir, config.keep_checkpoints)
    saved = checkpoints.steps()
    if not saved:
        raise FileNotFoundError(f"{workdir} has no checkpoint yet; train it first")
    if step is None:
        step, state = checkpoints.restore_newest(state, set_damaged_aside=False)
    elif step not in saved:
        raise FileNotFoundError(f"{workdir} has no checkpoint at step {step}; it has {saved}")
    else:
        try:
            state = checkpoints.restore(step, state)
        except CheckpointDamaged as damage:
            intact = [s for s in saved if s != step and _intact(checkpoints, s)]
            choice = (f"the intact one(s): {intact} (or no step for the newest intact one)" if intact
                      else "none of the others is intact either")
            raise CheckpointDamaged(step, damage.file, f"{damage.why}; choose another step of {workdir}: "
                                    f"{choice}") from None
    return family, _current_model(graphdef, state), config, tokenizer


def _intact(checkpoints: Checkpoints, step: int) -> bool:
    try:
        checkpoints.verify(step)
    except CheckpointDamaged:
        return False
    return True


def read_metrics(workdir: str | Path) -> list[dict[str, float]]:
    """The rows of `metrics.jsonl`, in order."""
    path = Path(workdir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def plot_loss(workdir: str | Path, out: str | Path | None = None) -> Path:
    """Plot the loss curve of a run (log-scale y) to a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    if not rows:
        raise FileNotFoundError(f"{workdir} has no {METRICS_FILE} yet")
    out = Path(out) if out else Path(workdir) / "loss.png"
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    ax.set(xlabel="step", ylabel="loss", title=f"{saved_model_name(workdir)}: training loss")
    if all(r["loss"] > 0 for r in rows) and max(r["loss"] for r in rows) > 4 * min(r["loss"] for r in rows):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


__all__ = ["Family", "Group", "Trained", "TrainingDiverged", "WorkdirMismatch", "fit", "group_optimizers",
           "load_model", "make_optimizer",
           "make_train_step", "mesh_for", "plot_loss", "read_metrics"]
