"""Training of the VAE with Optax: ``init``, ``train_step``, an epoch as one ``lax.scan``, ``fit``.

The loss is the batch mean of the negative one-sample ELBO (``objectives.negative_elbo``),
or of the negative importance-weighted bound with the total-derivative, STL or DReG
gradient (``gradients.training_loss``, ``estimator=(name, k)``);
the course's recipe is Adam with learning rate 1e-3, batch 100, 15 epochs, rounded pixels.
(The course sums the loss over the batch; Adam is invariant to that scale up to its
``eps``.) An epoch shuffles the training images with the state's key, drops the last
``N mod batch_size`` of them, and runs every step inside one jitted ``lax.scan`` with the
images on the device; the state's buffers are donated.

Data parallelism: a :class:`jax.sharding.Mesh` over the local devices with one axis
``"data"``; each batch is sharded along it, parameters and optimiser state are replicated,
and XLA inserts the all-reduce of the gradients.

:func:`fit` adds a progress bar, a metrics history (``metrics.json``), an Orbax checkpoint
per epoch and an exact ``resume``: the checkpoint holds the parameters, the optimiser state,
the PRNG key and the epoch, so 2 + 2 resumed epochs give the parameters of 4.
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vijax._checks import check_int, check_key, check_scalar, check_shape
from vijax.data.mnist import BINARIZATIONS
from vijax.vae.gradients import check_training_estimator, training_loss
from vijax.vae.models import VAE, VAEConfig

__all__ = ["TrainState", "FitResult", "adam", "init", "train_step", "train_epoch", "make_mesh",
           "fit", "check_images", "load_checkpoint"]

_FORMAT = "vijax.vae/1"
_META = "vijax_vae.json"
_METRICS = "metrics.json"


class TrainState(NamedTuple):
    """What training carries (a pytree; also what a checkpoint holds).

    Attributes:
        params: the VAE's parameters.
        opt_state: the optimiser's state.
        key: raw ``uint32[2]`` PRNG key, split once per epoch or step.
        epoch: ``int32`` scalar, epochs done.
        step: ``int32`` scalar, optimiser steps done.
    """

    params: Any
    opt_state: Any
    key: jax.Array
    epoch: jax.Array
    step: jax.Array


class FitResult(NamedTuple):
    """Output of :func:`fit`: the final state, the model and one dict per epoch."""

    state: TrainState
    model: VAE
    history: list[dict]


@functools.lru_cache(maxsize=32)
def adam(learning_rate: float = 1e-3) -> optax.GradientTransformation:
    """``optax.adam(learning_rate)``, cached so that equal rates share compiled code."""
    return optax.adam(learning_rate)


def _raw_key(key: jax.Array) -> jax.Array:
    check_key("key", key)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return jnp.asarray(key, jnp.uint32)


def init(key: jax.Array, model: VAE, optimizer: optax.GradientTransformation) -> TrainState:
    """Fresh parameters (from ``key``) and optimiser state; the rest of ``key`` drives training."""
    key = _raw_key(key)
    init_key, train_key = jax.random.split(key)
    params = model.init_params(init_key)
    return TrainState(params, optimizer.init(params), train_key, jnp.zeros((), jnp.int32),
                      jnp.zeros((), jnp.int32))


def _update(params, opt_state, key, x, model, optimizer, estimator):
    loss, grads = jax.value_and_grad(lambda p: training_loss(key, model, p, x, estimator))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


@functools.partial(jax.jit, static_argnames=("model", "optimizer", "estimator"),
                   donate_argnums=0)
def train_step(state: TrainState, x: jax.Array, *, model: VAE,
               optimizer: optax.GradientTransformation,
               estimator: str = "analytic") -> tuple[TrainState, jax.Array]:
    """One optimiser step on the batch ``x`` ``(B, P)``; returns the new state and the loss.

    ``estimator``: ``"analytic"``, ``"mc"``, ``"stl"`` (``objectives``), ``"total"``,
    ``"dreg"``, or a tuple ``(name, k)`` for the importance-weighted bound with ``k`` samples
    and the estimator ``name`` in ``("total", "stl", "dreg")`` (``vijax.vae.gradients``).
    """
    key, step_key = jax.random.split(state.key)
    params, opt_state, loss = _update(state.params, state.opt_state, step_key, x, model,
                                      optimizer, estimator)
    return TrainState(params, opt_state, key, state.epoch, state.step + 1), loss


def make_mesh(devices: list | None = None) -> Mesh:
    """A one-axis (``"data"``) mesh over ``devices`` (default: all local devices)."""
    devices = list(jax.local_devices() if devices is None else devices)
    return Mesh(np.array(devices), ("data",))


@functools.lru_cache(maxsize=32)
def _epoch_fn(model: VAE, optimizer: optax.GradientTransformation, batch_size: int,
              estimator: str, dynamic: bool, mesh: Mesh):
    replicated = NamedSharding(mesh, P())
    batched = NamedSharding(mesh, P("data"))

    def epoch(state: TrainState, images: jax.Array) -> tuple[TrainState, jax.Array]:
        n_batches = images.shape[0] // batch_size
        key, perm_key, steps_key = jax.random.split(state.key, 3)
        order = jax.random.permutation(perm_key, images.shape[0])
        order = order[: n_batches * batch_size].reshape(n_batches, batch_size)

        def body(carry, inputs):
            params, opt_state = carry
            idx, step_key = inputs
            x = jax.lax.with_sharding_constraint(jnp.take(images, idx, axis=0), batched)
            if dynamic:
                bin_key, step_key = jax.random.split(step_key)
                x = jax.random.bernoulli(bin_key, x).astype(x.dtype)
            params, opt_state, loss = _update(params, opt_state, step_key, x, model,
                                              optimizer, estimator)
            return (params, opt_state), loss

        (params, opt_state), losses = jax.lax.scan(
            body, (state.params, state.opt_state),
            (order, jax.random.split(steps_key, n_batches)))
        new = TrainState(params, opt_state, key, state.epoch + 1, state.step + n_batches)
        return new, losses

    return jax.jit(epoch, donate_argnums=0, out_shardings=(replicated, replicated))


def train_epoch(state: TrainState, images: jax.Array, *, model: VAE,
                optimizer: optax.GradientTransformation, batch_size: int = 100,
                estimator: str = "analytic", dynamic_binarization: bool = False,
                mesh: Mesh | None = None) -> tuple[TrainState, jax.Array]:
    """One epoch: shuffle with ``state.key``, then ``N // batch_size`` steps in one ``lax.scan``.

    Args:
        state: the training state (its buffers are donated: do not reuse it).
        images: ``(N, P)`` float32 pixels, ideally already on the devices (replicated).
        model, optimizer, estimator: as in :func:`train_step`.
        batch_size: images per step (a multiple of the mesh size).
        dynamic_binarization: draw ``x ~ Bernoulli(images)`` afresh at every step.
        mesh: from :func:`make_mesh`; default all local devices.

    Returns:
        The new state and the ``(N // batch_size,)`` per-step losses.
    """
    mesh = make_mesh() if mesh is None else mesh
    estimator = check_training_estimator(estimator)
    fn = _epoch_fn(model, optimizer, int(batch_size), estimator, bool(dynamic_binarization),
                   mesh)
    return fn(state, images)


# --------------------------------------------------------------------------- checks


def check_images(name: str, images: Any, input_dim: int = 784) -> np.ndarray:
    """``images`` is a floating ``(N, input_dim)`` array with values in ``[0, 1]``."""
    check_shape(name, images, (None, input_dim))
    dtype = np.dtype(getattr(images, "dtype", np.asarray(images).dtype))
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"{name} must hold floating-point pixels in [0, 1] (divide uint8 "
                         f"images by 255); got dtype {dtype}")
    values = np.asarray(images)
    if values.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image; got shape {values.shape}")
    lo, hi = float(np.min(values)), float(np.max(values))
    if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
        raise ValueError(f"{name} must have pixel values in [0, 1]; got values in "
                         f"[{lo}, {hi}]")
    return values


def _devices_for(batch_size: int, devices: list | None) -> list:
    devices = list(jax.local_devices() if devices is None else devices)
    n = len(devices)
    while batch_size % n:
        n -= 1
    if n < len(devices):
        warnings.warn(f"batch_size {batch_size} is not a multiple of the {len(devices)} "
                      f"devices; training on {n} of them", stacklevel=3)
    return devices[:n]


# --------------------------------------------------------------------------- checkpoints


def _manager(workdir: Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options)


def _read_meta(workdir: Path) -> dict | None:
    path = workdir / _META
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"workdir {workdir} has an unreadable {_META} ({e}); it is not a "
                         "vijax VAE checkpoint folder: pass another workdir") from e
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"workdir {workdir} holds {_META} of another format "
                         f"({meta.get('format') if isinstance(meta, dict) else meta!r}); "
                         f"expected {_FORMAT!r}: pass another workdir")
    return meta


def _check_workdir(workdir: Path, config: VAEConfig, resume: bool) -> dict | None:
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"workdir {workdir} is a file; expected a folder")
    meta = _read_meta(workdir) if workdir.exists() else None
    if meta is None:
        if workdir.exists() and any(workdir.iterdir()):
            raise ValueError(f"workdir {workdir} is not empty and holds no {_META}; it is not "
                             "a vijax VAE checkpoint folder: pass an empty or new folder")
        if resume:
            raise ValueError(f"resume=True but workdir {workdir} holds no checkpoint; pass "
                             "resume=False to start training there")
        return None
    if not resume:
        raise ValueError(f"workdir {workdir} already holds a training run (epoch "
                         f"{meta.get('epoch')}); pass resume=True to continue it, or a new "
                         "folder")
    saved = VAEConfig.from_dict(meta["config"])
    if saved != config:
        raise ValueError(f"workdir {workdir} holds a checkpoint of an incompatible model: "
                         f"saved config {saved} differs from the requested {config}")
    return meta


def load_checkpoint(workdir: str | Path, epoch: int | None = None) -> tuple[TrainState, VAE]:
    """Restore a :class:`TrainState` (latest epoch by default) and its model from ``workdir``."""
    workdir = Path(workdir)
    meta = _read_meta(workdir)
    if meta is None:
        raise ValueError(f"workdir {workdir} holds no {_META}; not a vijax VAE checkpoint")
    model = VAE(VAEConfig.from_dict(meta["config"]))
    template = init(jax.random.PRNGKey(0), model, adam(meta["learning_rate"]))
    mesh = make_mesh(jax.local_devices()[:1])
    return _restore(_manager(workdir), template, epoch, mesh), model


def _restore(manager, template: TrainState, epoch: int | None, mesh: Mesh) -> TrainState:
    import orbax.checkpoint as ocp

    epoch = manager.latest_step() if epoch is None else epoch
    if epoch is None:
        raise ValueError(f"no checkpoint under {manager.directory}")
    replicated = NamedSharding(mesh, P())
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), template)
    try:
        restored = manager.restore(epoch, args=ocp.args.StandardRestore(abstract._asdict()))
    except Exception as e:  # orbax raises several kinds on mismatched trees
        raise ValueError(f"checkpoint {manager.directory}/{epoch} does not match the model "
                         f"and optimiser: {type(e).__name__}: {e}") from e
    return TrainState(**restored)


# --------------------------------------------------------------------------- fit


def fit(key: jax.Array, train_images: Any, *, config: VAEConfig | None = None,
        epochs: int = 15, batch_size: int = 100, learning_rate: float = 1e-3,
        estimator: str = "analytic", binarization: str = "round",
        workdir: str | Path | None = None, resume: bool = False,
        test_images: Any = None, progress: bool = True,
        devices: list | None = None) -> FitResult:
    """Train a VAE with Adam; checkpoint, log and resume.

    Args:
        key: PRNG key (initial parameters, shuffling, ``eps``, dynamic binarisation).
        train_images: ``(N, P)`` floating pixels in ``[0, 1]``, ``P = config.input_dim``.
        config: the network (default ``VAEConfig()``: the course's).
        epochs: total number of epochs (when resuming, including those already done).
        batch_size: images per step, ``<= N``.
        learning_rate: Adam's step size, ``> 0``.
        estimator: ``"analytic"``, ``"mc"`` or ``"stl"`` (see ``objectives``), ``"total"`` or
            ``"dreg"``, or ``(name, k)`` for the importance-weighted bound with ``k`` samples
            (see ``gradients``; the logged training loss is then ``-IWAE_k``).
        binarization: ``"round"``, ``"dynamic"`` or ``"none"`` (see ``vijax.data.binarize``).
        workdir: folder for ``checkpoints/`` (Orbax, one per epoch, last two kept),
            ``metrics.json`` and ``vijax_vae.json``; None: nothing written.
        resume: continue the run in ``workdir`` from its latest checkpoint.
        test_images: optional ``(M, P)`` held-out pixels; the test negative ELBO (analytic
            KL, same binarisation, a fixed key) is logged after every epoch.
        progress: show a tqdm bar with the epoch's loss.
        devices: devices for data parallelism (default: all local devices).

    Returns:
        :class:`FitResult` ``(state, model, history)``; ``history[e]`` has ``epoch``,
        ``train_loss`` (mean negative ELBO per training image of that epoch), ``seconds`` and
        ``test_loss`` when ``test_images`` is given.

    Raises:
        ValueError: bad arguments or an incompatible ``workdir``, before any training.
        FloatingPointError: a non-finite loss; names the epoch and step, and the last good
            checkpoint stays in ``workdir``.
    """
    check_key("key", key)
    config = VAEConfig() if config is None else config
    if not isinstance(config, VAEConfig):
        raise ValueError(f"config must be a VAEConfig; got {type(config).__name__}")
    images = check_images("train_images", train_images, config.input_dim)
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if batch_size > images.shape[0]:
        raise ValueError(f"batch_size must be <= the number of training images "
                         f"({images.shape[0]}); got {batch_size}")
    learning_rate = check_scalar("learning_rate", learning_rate, 0.0, strict=True)
    estimator = check_training_estimator(estimator)
    if binarization not in BINARIZATIONS:
        raise ValueError(f"binarization must be one of {BINARIZATIONS}; got {binarization!r}")
    test = None if test_images is None else check_images("test_images", test_images,
                                                          config.input_dim)
    workdir = None if workdir is None else Path(workdir)
    meta = None if workdir is None else _check_workdir(workdir, config, resume)
    if resume and workdir is None:
        raise ValueError("resume=True needs a workdir holding a checkpoint; got workdir=None")

    model = VAE(config)
    optimizer = adam(learning_rate)
    mesh = make_mesh(_devices_for(batch_size, devices))
    replicated = NamedSharding(mesh, P())
    state = jax.device_put(init(key, model, optimizer), replicated)
    history: list[dict] = []
    manager = None
    if workdir is not None:
        manager = _manager(workdir)
        if meta is not None:
            state = _restore(manager, state, None, mesh)
            if (workdir / _METRICS).exists():
                history = json.loads((workdir / _METRICS).read_text())
            history = [h for h in history if h["epoch"] <= int(state.epoch)]
    start = int(state.epoch)
    if start > epochs:
        raise ValueError(f"epochs must be >= the {start} epochs already in {workdir}; "
                         f"got {epochs}")

    if binarization == "round":
        images = np.round(images)
    data = jax.device_put(jnp.asarray(images, jnp.float32), replicated)
    test_loss = None
    if test is not None:
        from vijax.vae.evaluate import negative_elbo_dataset

        test_x = np.asarray(test, np.float32)
        if binarization == "round":
            test_x = np.round(test_x)
        elif binarization == "dynamic":  # one fixed draw, the usual test set of Burda et al.
            test_x = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(0), test_x), np.float32)
        test_loss = functools.partial(negative_elbo_dataset, jax.random.PRNGKey(1), model,
                                      images=test_x)
    epoch_fn = _epoch_fn(model, optimizer, batch_size, estimator, binarization == "dynamic",
                         mesh)
    n_batches = images.shape[0] // batch_size

    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    bar = tqdm(range(start, epochs), desc="VAE", unit="epoch", disable=not progress,
               initial=start, total=epochs)
    for e in bar:
        t0 = time.perf_counter()
        state, losses = epoch_fn(state, data)
        losses = np.asarray(losses)
        seconds = time.perf_counter() - t0
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            step = int(bad[0])
            where = (f"; the last good checkpoint (epoch {e}) is in {workdir / 'checkpoints'}"
                     if workdir is not None and e > 0 else "")
            bar.close()
            raise FloatingPointError(
                f"non-finite loss {losses[step]} at epoch {e + 1}, step {step + 1} of "
                f"{n_batches}; training stopped{where}. Lower the learning rate "
                f"({learning_rate}) or check the data")
        record = {"epoch": e + 1, "train_loss": float(np.mean(losses)), "seconds": seconds}
        if test_loss is not None:
            record["test_loss"] = float(test_loss(state.params))
        history.append(record)
        bar.set_postfix(loss=f"{record['train_loss']:.3f}")
        if workdir is not None:
            _save(manager, workdir, state, history, config, learning_rate, batch_size,
                  estimator, binarization)
    bar.close()
    if manager is not None:
        manager.close()
    return FitResult(state, model, history)


def _save(manager, workdir: Path, state: TrainState, history: list[dict], config: VAEConfig,
          learning_rate: float, batch_size: int, estimator: str, binarization: str) -> None:
    import orbax.checkpoint as ocp

    epoch = int(state.epoch)
    manager.save(epoch, args=ocp.args.StandardSave(state._asdict()))
    manager.wait_until_finished()
    meta = {"format": _FORMAT, "config": config.to_dict(), "epoch": epoch,
            "learning_rate": learning_rate, "batch_size": batch_size, "estimator": estimator,
            "binarization": binarization}
    _atomic_write(workdir / _METRICS, json.dumps(history, indent=1))
    _atomic_write(workdir / _META, json.dumps(meta, indent=1))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
