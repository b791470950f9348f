"""Training of the VAE with Optax: ``init``, ``train_step``, an epoch as one ``lax.scan``, ``fit``.

The loss is minus the batch mean of an objective of :mod:`vijax.estimators` (``ELBO(k, kl)``
or ``IWAE(k)``) under any of its estimators (``Reparam()``, ``STL()``, ``DReG()``,
``Score(...)``, ``ScoreControlVariate()``): ``objectives.loss``. The optimizer is passed in;
the course's recipe is ``ELBO(kl="analytic")``, ``Reparam()``, ``optax.adam(1e-3)``, batch 100,
15 epochs, rounded pixels.
(The course sums the loss over the batch; Adam is invariant to that scale up to its
``eps``.) An epoch shuffles the training images with the state's key, leaves out
``N mod batch_size`` of them (a different random set each epoch), and runs every step inside
one jitted ``lax.scan`` with the images on the device; the state's buffers are donated.

Data parallelism: a :class:`jax.sharding.Mesh` over the devices with one axis ``"data"``.
The images are sharded along it (device ``d`` of ``D`` holds a contiguous ``1/D`` of them),
each batch is too, parameters and optimiser state are replicated, and XLA inserts the
all-reduce of the gradients. The shuffle is local to each device's images, so no image
crosses devices: row ``j`` of every batch (``j < B``) is drawn, without replacement over
the epoch, from its own group of ``N // B`` consecutive images, in the order of a
permutation keyed by ``fold_in(key, j)`` (a stratified shuffle: each image at most once per
epoch; two images of one group never share a batch). Groups are consecutive images of one
device's shard, counted cyclically from an offset drawn afresh each epoch for each shard,
uniform over the shard's ``L`` images (keyed by ``fold_in(fold_in(key, B), shard)``): the
``L mod (B / D)`` images after the groups, left out of the epoch, are then any of the shard's
with equal probability, so every image is trained on over the epochs. When ``N`` is a
multiple of ``B`` no image is left out and the offset is 0, so the batches, and the
training, are the same on any number of devices (with fewer devices than before this scheme,
the order differs from the former global permutation).

Several processes (``jax.distributed.initialize`` first; README, "Several processes or
hosts"): the mesh spans every process's devices and :func:`fit` takes ``train_images`` as
this process's images. Each device holds ``L`` of its process's images (``L`` the smallest
``n_p // local devices`` over the processes; a process with more leaves the rest out, with
a warning), the batch is the concatenation over devices of their sub-batches, and ``P``
processes of one device each, given the parts of ``images``, train exactly as one process
with ``P`` devices given ``images`` (equal parts). Every process ends with the same state.
Checkpointing (``workdir``) is single-process for now: refused under several processes.

:func:`fit` adds a progress bar, a metrics history (``metrics.json``), an Orbax checkpoint
per epoch and an exact ``resume``: the checkpoint holds the parameters, the optimiser state,
the estimator's state, the PRNG key and the epoch, so 2 + 2 resumed epochs give the
parameters of 4.
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

from vijax import _distributed
from vijax._checks import check_images, check_int, check_key, check_optimizer, check_pixels
from vijax.data.mnist import BINARIZATIONS
from vijax.estimators import ELBO, Estimator, Reparam
from vijax.vae import checkpoints
from vijax.vae.evaluate import negative_elbo_dataset
from vijax.vae.models import VAE, VAEConfig
from vijax.vae.objectives import check_model, check_training, loss

__all__ = ["TrainState", "FitResult", "init", "train_step", "train_epoch", "make_mesh", "fit",
           "load_checkpoint", "COURSE_OBJECTIVE"]

#: The course's objective: the one-sample ELBO with the closed-form KL.
COURSE_OBJECTIVE = ELBO(kl="analytic")



class TrainState(NamedTuple):
    """What training carries (a pytree; also what a checkpoint holds).

    Attributes:
        params: the VAE's parameters.
        opt_state: the optimiser's state.
        estimator_state: the estimator's state (``()`` for most; a moving-average baseline's).
        key: raw ``uint32[2]`` PRNG key, split once per epoch or step.
        epoch: ``int32`` scalar, epochs done.
        step: ``int32`` scalar, optimiser steps done.
    """

    params: Any
    opt_state: Any
    estimator_state: Any
    key: jax.Array
    epoch: jax.Array
    step: jax.Array


class FitResult(NamedTuple):
    """Output of :func:`fit`: the final state, the model and one dict per epoch."""

    state: TrainState
    model: VAE
    history: list[dict]


def _raw_key(key: jax.Array) -> jax.Array:
    check_key("key", key)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return jnp.asarray(key, jnp.uint32)


def _check_state(state: Any, estimator: Any = None) -> None:
    if not isinstance(state, TrainState):
        raise ValueError("state must be a vijax.vae.TrainState from vijax.vae.init; got "
                         f"{type(state).__name__}")
    if isinstance(estimator, Estimator) and jax.tree.structure(
            state.estimator_state) != jax.tree.structure(estimator.init_state()):
        raise ValueError(f"state.estimator_state does not belong to estimator {estimator!r}: "
                         "pass the estimator to vijax.vae.init(key, model, optimizer, "
                         "estimator)")


def init(key: jax.Array, model: VAE, optimizer: optax.GradientTransformation,
         estimator: Estimator = Reparam()) -> TrainState:
    """Fresh parameters (from ``key``), optimiser and estimator states; the rest of ``key``
    drives training."""
    if not isinstance(model, VAE):
        raise ValueError(f"model must be a vijax.vae.VAE (e.g. VAE(VAEConfig())); got "
                         f"{model!r}")
    check_optimizer("optimizer", optimizer)
    if not isinstance(estimator, Estimator):
        raise ValueError(f"estimator must be an estimator object (Reparam(), STL(), ...); got "
                         f"{estimator!r}")
    key = _raw_key(key)
    init_key, train_key = jax.random.split(key)
    params = model.init_params(init_key)
    return TrainState(params, optimizer.init(params), estimator.init_state(), train_key,
                      jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def _update(params, opt_state, est_state, key, x, model, optimizer, objective, estimator):
    (value, (_, est_state)), grads = jax.value_and_grad(
        lambda p: loss(key, model, p, x, objective=objective, estimator=estimator,
                       state=est_state), has_aux=True)(params)
    with jax.named_scope("optimizer"):  # a name in profiles and HLO dumps
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, est_state, value


@functools.partial(jax.jit, static_argnames=("model", "optimizer", "objective", "estimator"),
                   donate_argnums=0)
def _train_step(state, x, *, model, optimizer, objective, estimator):
    key, step_key = jax.random.split(state.key)
    params, opt_state, est_state, value = _update(state.params, state.opt_state,
                                                  state.estimator_state, step_key, x, model,
                                                  optimizer, objective, estimator)
    return TrainState(params, opt_state, est_state, key, state.epoch, state.step + 1), value


def train_step(state: TrainState, x: jax.Array, *, model: VAE,
               optimizer: optax.GradientTransformation, objective: Any = COURSE_OBJECTIVE,
               estimator: Estimator = Reparam()) -> tuple[TrainState, jax.Array]:
    """One optimiser step on the batch ``x`` ``(B, P)``; returns the new state and the loss
    (minus the batch-mean objective). ``state``'s buffers are donated. ``x``'s shape and dtype
    are checked, not its values (that would copy every batch to the host)."""
    check_model(model)
    check_pixels("x", x, model.config.input_dim, values=False)
    check_optimizer("optimizer", optimizer)
    check_training(objective, estimator, model)
    _check_state(state, estimator)
    return _train_step(state, x, model=model, optimizer=optimizer, objective=objective,
                       estimator=estimator)


def make_mesh(devices: list | None = None) -> Mesh:
    """A one-axis (``"data"``) mesh over ``devices`` (default: ``jax.devices()``, every
    process's devices; the local devices when there is one process), ordered by process and
    id, so that each process's devices are consecutive."""
    return Mesh(np.array(_distributed.sorted_devices(devices)), ("data",))


def _batch_order(key: jax.Array, batch_size: int, shards: int, shard_size: int) -> jax.Array:
    """``(n_batches, B)``, ``n_batches = shards shard_size // B``: entry ``[t, j]`` is the
    index, within its device's shard of ``L = shard_size`` images, of row ``j`` of batch
    ``t``: ``(o_s + g n_batches + pi_j(t)) mod L``, with ``s = j // (B / shards)`` the row's
    shard, ``g = j mod (B / shards)`` its group in the shard, ``pi_j`` a permutation of
    ``n_batches`` keyed by ``fold_in(key, j)``, and ``o_s`` the shard's offset, uniform on
    ``0..L-1`` keyed by ``fold_in(fold_in(key, B), s)``, or 0 when ``B`` divides
    ``shards L`` (module docstring)."""
    per_shard = batch_size // shards
    n_batches = shards * shard_size // batch_size
    rows = jnp.arange(batch_size)
    perms = jax.vmap(lambda j: jax.random.permutation(jax.random.fold_in(key, j),
                                                      n_batches))(rows)
    order = (rows % per_shard)[:, None] * n_batches + perms
    if shard_size % per_shard:  # images left out: which ones changes with the offset
        offset_key = jax.random.fold_in(key, batch_size)
        offsets = jax.vmap(lambda s: jax.random.randint(jax.random.fold_in(offset_key, s), (),
                                                        0, shard_size))(jnp.arange(shards))
        order = (order + offsets[rows // per_shard][:, None]) % shard_size
    return order.T


def _shard_images(images: Any, mesh: Mesh) -> jax.Array:
    """One process's ``images`` as a global array sharded along ``mesh`` (contiguous
    ``L`` per device), leaving out the last ``N mod D`` (one process) or what exceeds the
    smallest process's share (several processes, with a warning). An array already
    sharded so (``L D`` rows) is returned as it is."""
    batched = NamedSharding(mesh, P("data"))
    if isinstance(images, jax.Array) and images.sharding == batched:
        return images
    if not _distributed.multiprocess():
        rows = images.shape[0] - images.shape[0] % mesh.size
        return jax.device_put(jnp.asarray(images[:rows], jnp.float32), batched)
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    per_device = int(np.min(_distributed.allgather(np.int64(images.shape[0] // local_devices))))
    rows = per_device * local_devices
    if rows < images.shape[0]:
        warnings.warn(f"process {jax.process_index()} trains on {rows} of its "
                      f"{images.shape[0]} images: every device holds as many images as the "
                      "smallest process's devices; give every process as many", stacklevel=3)
    return _distributed.global_rows(mesh, np.asarray(images[:rows], np.float32))


@functools.lru_cache(maxsize=32)
def _epoch_fn(model: VAE, optimizer: optax.GradientTransformation, batch_size: int,
              objective: Any, estimator: Estimator, dynamic: bool, mesh: Mesh):
    replicated = NamedSharding(mesh, P())
    # Each device gathers its rows of the batch from its own shard (indices within it).
    take = jax.shard_map(lambda shard, idx: shard[idx], mesh=mesh,
                         in_specs=(P("data"), P("data")), out_specs=P("data"))

    def epoch(state: TrainState, images: jax.Array) -> tuple[TrainState, jax.Array]:
        n_batches = images.shape[0] // batch_size
        key, perm_key, steps_key = jax.random.split(state.key, 3)
        order = _batch_order(perm_key, batch_size, mesh.size, images.shape[0] // mesh.size)

        def body(carry, inputs):
            params, opt_state, est_state = carry
            idx, step_key = inputs
            x = take(images, idx)
            if dynamic:
                bin_key, step_key = jax.random.split(step_key)
                x = jax.random.bernoulli(bin_key, x).astype(x.dtype)
            params, opt_state, est_state, value = _update(params, opt_state, est_state,
                                                          step_key, x, model, optimizer,
                                                          objective, estimator)
            return (params, opt_state, est_state), value

        (params, opt_state, est_state), losses = jax.lax.scan(
            body, (state.params, state.opt_state, state.estimator_state),
            (order, jax.random.split(steps_key, n_batches)))
        new = TrainState(params, opt_state, est_state, key, state.epoch + 1,
                         state.step + n_batches)
        return new, losses

    return jax.jit(epoch, donate_argnums=0, out_shardings=(replicated, replicated))


def train_epoch(state: TrainState, images: jax.Array, *, model: VAE,
                optimizer: optax.GradientTransformation, batch_size: int = 100,
                objective: Any = COURSE_OBJECTIVE, estimator: Estimator = Reparam(),
                dynamic_binarization: bool = False,
                mesh: Mesh | None = None) -> tuple[TrainState, jax.Array]:
    """One epoch: shuffle with ``state.key``, then ``N // batch_size`` steps in one ``lax.scan``.

    Args:
        state: the training state (its buffers are donated: do not reuse it).
        images: ``(N, P)`` float32 pixels in ``[0, 1]``; shape and dtype are checked, not the
            values. Sharded along the mesh (the last ``N mod D`` left out) unless already
            so; under several processes pass a global array sharded along it.
        model, optimizer, objective, estimator: as in :func:`train_step`.
        batch_size: images per step (a multiple of the mesh size ``D``).
        dynamic_binarization: draw ``x ~ Bernoulli(images)`` afresh at every step.
        mesh: from :func:`make_mesh`; default all local devices.

    Returns:
        The new state and the ``(N // batch_size,)`` per-step losses.
    """
    check_model(model)
    check_pixels("images", images, model.config.input_dim, values=False)
    batch_size = check_int("batch_size", batch_size, minimum=1, maximum=images.shape[0])
    check_optimizer("optimizer", optimizer)
    check_training(objective, estimator, model)
    _check_state(state, estimator)
    mesh = make_mesh() if mesh is None else mesh
    if not isinstance(mesh, Mesh) or batch_size % mesh.size:
        raise ValueError(f"mesh must be a jax.sharding.Mesh whose size divides batch_size "
                         f"({batch_size}); got {mesh!r}")
    fn = _epoch_fn(model, optimizer, int(batch_size), objective, estimator,
                   bool(dynamic_binarization), mesh)
    return fn(state, _shard_images(images, mesh))


# --------------------------------------------------------------------------- checks


def _devices_for(batch_size: int, devices: list | None) -> list:
    devices = list(jax.devices() if devices is None else devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError(f"devices must be a non-empty list of jax devices (jax.devices()); "
                         f"got {devices!r}")
    if _distributed.multiprocess():
        if set(devices) != set(jax.devices()):
            raise ValueError("devices must be None (every process's devices) under several "
                             f"processes; got {len(devices)} of the {jax.device_count()}")
        if batch_size % len(devices):
            raise ValueError(f"batch_size must be a multiple of the {len(devices)} devices "
                             f"of all {jax.process_count()} processes; got {batch_size}")
        return devices
    n = len(devices)
    while batch_size % n:
        n -= 1
    if n < len(devices):
        warnings.warn(f"batch_size {batch_size} is not a multiple of the {len(devices)} "
                      f"devices; training on {n} of them", stacklevel=3)
    return devices[:n]


# --------------------------------------------------------------------------- checkpoints


def _config_from(workdir: Path, meta: dict) -> VAEConfig:
    try:
        return VAEConfig.from_dict(meta["config"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"workdir {workdir}: {checkpoints.META} has an unreadable 'config' "
                         f"({type(e).__name__}: {e}); the file is damaged: pass another "
                         "workdir") from e


def _check_workdir(workdir: Path, config: VAEConfig, resume: bool,
                   settings: dict) -> dict | None:
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"workdir {workdir} is a file; expected a folder")
    meta = checkpoints.read_meta(workdir) if workdir.exists() else None
    if meta is None:
        if workdir.exists() and any(workdir.iterdir()):
            raise ValueError(f"workdir {workdir} is not empty and holds no "
                             f"{checkpoints.META}; it is not a vijax VAE checkpoint folder: "
                             "pass an empty or new folder")
        if resume:
            raise ValueError(f"resume=True but workdir {workdir} holds no checkpoint; pass "
                             "resume=False to start training there")
        return None
    if not resume:
        raise ValueError(f"workdir {workdir} already holds a training run (epoch "
                         f"{meta.get('epoch')}); pass resume=True to continue it, or a new "
                         "folder")
    saved = _config_from(workdir, meta)
    if saved != config:
        raise ValueError(f"workdir {workdir} holds a checkpoint of an incompatible model: "
                         f"saved config {saved} differs from the requested {config}")
    for name, value in settings.items():
        if meta.get(name) != value:
            raise ValueError(f"workdir {workdir} was trained with {name}={meta.get(name)!r}; "
                             f"resuming with {name}={value!r} would change the run: pass the "
                             "same setting, or start a new workdir")
    return meta


def load_checkpoint(workdir: str | Path, optimizer: optax.GradientTransformation, *,
                    estimator: Estimator = Reparam(),
                    epoch: int | None = None) -> tuple[TrainState, VAE]:
    """Restore a :class:`TrainState` (latest epoch by default) and its model from ``workdir``.

    ``optimizer`` and ``estimator`` give the structure of the saved optimiser and estimator
    states (the run's own: a stateless estimator other than ``Reparam()`` restores the same).
    """
    workdir = Path(workdir)
    check_optimizer("optimizer", optimizer)
    if epoch is not None:
        check_int("epoch", epoch, minimum=0)
    meta = checkpoints.read_meta(workdir) if workdir.is_dir() else None
    if meta is None:
        raise ValueError(f"workdir {workdir} holds no {checkpoints.META}; not a vijax VAE "
                         "checkpoint folder")
    if meta.get("estimator") != repr(estimator):
        raise ValueError(f"workdir {workdir} was trained with estimator={meta.get('estimator')}; "
                         f"pass that estimator to load_checkpoint (got {estimator!r}): its state "
                         "is part of the checkpoint")
    model = VAE(_config_from(workdir, meta))
    template = init(jax.random.PRNGKey(0), model, optimizer, estimator)
    mesh = make_mesh(jax.local_devices()[:1])
    return checkpoints.restore(checkpoints.manager(workdir), meta, template, mesh, epoch), model


# --------------------------------------------------------------------------- fit


def fit(key: jax.Array, train_images: Any, *, optimizer: optax.GradientTransformation,
        config: VAEConfig | None = None, epochs: int = 15, batch_size: int = 100,
        objective: Any = COURSE_OBJECTIVE, estimator: Estimator = Reparam(),
        binarization: str = "round",
        workdir: str | Path | None = None, resume: bool = False,
        test_images: Any = None, progress: bool = True,
        devices: list | None = None) -> FitResult:
    """Train a VAE with an Optax optimizer; checkpoint, log and resume.

    Args:
        key: PRNG key (initial parameters, shuffling, ``eps``, dynamic binarisation).
        train_images: ``(N, P)`` floating pixels in ``[0, 1]``, ``P = config.input_dim``.
        optimizer: an Optax optimizer (the course's: ``optax.adam(1e-3)``); when resuming,
            the same as the run's (its state is restored; a different learning rate cannot
            be detected).
        config: the network (default ``VAEConfig()``: the course's).
        epochs: total number of epochs (when resuming, including those already done).
        batch_size: images per step, ``<= N``.
        objective: ``ELBO(k, kl)`` or ``IWAE(k)`` (default the course's
            ``ELBO(kl="analytic")``); the logged training loss is minus it.
        estimator: ``Reparam()`` (total derivative), ``STL()``, ``DReG()`` (with ``IWAE``),
            ``Score(baseline=...)``, ``ScoreControlVariate()``.
        binarization: ``"round"``, ``"dynamic"`` or ``"none"`` (see ``vijax.data.binarize``).
        workdir: folder for ``checkpoints/`` (Orbax, one per epoch, last two kept),
            ``metrics.json`` and ``vijax_vae.json``; None: nothing written.
        resume: continue the run in ``workdir`` from its latest checkpoint.
        test_images: optional ``(M, P)`` held-out pixels; the test negative ELBO (analytic
            KL, same binarisation, a fixed key) is logged after every epoch.
        progress: show a tqdm bar with the epoch's loss.
        devices: devices for data parallelism (default: ``jax.devices()``).

    Several processes: ``train_images`` is this process's images (module docstring);
    ``batch_size`` is the global batch, a multiple of the global device count; ``key`` and
    the settings must be the same on every process: ``key``, ``epochs``, ``batch_size``,
    ``config``, ``objective``, ``estimator`` and ``binarization`` by value, ``optimizer`` by
    the names of its functions and the values they capture (its learning rate, ...; see
    ``vijax._distributed.fingerprint``), checked on every process; ``workdir`` must be None;
    the test loss is the mean over every process's ``test_images`` (the same on every
    process; each process draws its images' one-sample noise, and a dynamic binarisation,
    from the same fixed key as if its images were the only ones, so the noise differs from a
    single-process run's on the concatenation and the loss equals that run's in expectation
    only); the returned state is
    the same on every process, as arrays of this process; the progress bar shows on
    process 0 only.

    Returns:
        :class:`FitResult` ``(state, model, history)``; ``history[e]`` has ``epoch``,
        ``train_loss`` (minus the objective per training image, mean over the epoch),
        ``seconds`` and
        ``test_loss`` when ``test_images`` is given.

    Raises:
        ValueError: bad arguments or an incompatible ``workdir``, before any training.
        FloatingPointError: a non-finite loss; names the epoch and step, and the last good
            checkpoint stays in ``workdir``.
    """
    def check():
        check_key("key", key)
        conf = VAEConfig() if config is None else config
        if not isinstance(conf, VAEConfig):
            raise ValueError(f"config must be a VAEConfig; got {type(conf).__name__}")
        x = check_images("train_images", train_images, conf.input_dim)
        e = check_int("epochs", epochs, 1)
        b = check_int("batch_size", batch_size, 1)
        if b > x.shape[0] and not several:
            raise ValueError(f"batch_size must be <= the number of training images "
                             f"({x.shape[0]}); got {b}")
        check_optimizer("optimizer", optimizer)
        check_training(objective, estimator, VAE(conf))
        if binarization not in BINARIZATIONS:
            raise ValueError(f"binarization must be one of {BINARIZATIONS}; got "
                             f"{binarization!r}")
        if several and workdir is not None:
            raise ValueError("workdir must be None under several processes (checkpointing "
                             f"is single-process for now); got {workdir!r}")
        t = None if test_images is None else check_images("test_images", test_images,
                                                           conf.input_dim)
        return conf, x, e, b, t, _devices_for(b, devices)

    several = _distributed.multiprocess()
    config, images, epochs, batch_size, test, devices = _distributed.agree(check)
    if several:  # read by vijax._distributed.fingerprint
        _distributed.check_same({
            "key": np.asarray(_raw_key(key)), "epochs": epochs, "batch_size": batch_size,
            "config": config, "objective": objective, "estimator": estimator,
            "binarization": binarization, "optimizer": optimizer})
    settings = {"batch_size": batch_size, "objective": repr(objective),
                "estimator": repr(estimator), "binarization": binarization}
    workdir = None if workdir is None else Path(workdir)
    meta = None if workdir is None else _check_workdir(workdir, config, resume, settings)
    if resume and workdir is None:
        raise ValueError("resume=True needs a workdir holding a checkpoint; got workdir=None")

    model = VAE(config)
    mesh = make_mesh(devices)
    replicated = NamedSharding(mesh, P())
    state = init(key, model, optimizer, estimator)
    state = (_distributed.replicated(mesh, state) if several
             else jax.device_put(state, replicated))
    history: list[dict] = []
    manager = None
    if workdir is not None:
        manager = checkpoints.manager(workdir)
        if meta is not None:
            state = checkpoints.restore(manager, meta, state, mesh)
            history = _read_history(workdir, int(state.epoch))
        else:
            meta = {"config": config.to_dict(), **settings, "checkpoints": {}}
    start = int(state.epoch)
    if start > epochs:
        raise ValueError(f"epochs must be >= the {start} epochs already in {workdir}; "
                         f"got {epochs}")

    if binarization == "round":
        images = np.round(images)
    data = _shard_images(images, mesh)
    if several and batch_size > data.shape[0]:
        raise ValueError(f"batch_size must be <= the {data.shape[0]} training images of all "
                         f"{jax.process_count()} processes; got {batch_size}")
    test_loss = None
    if test is not None:
        test_x = np.asarray(test, np.float32)
        if binarization == "round":
            test_x = np.round(test_x)
        elif binarization == "dynamic":  # one fixed draw, the usual test set of Burda et al.
            test_x = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(0), test_x), np.float32)
        test_loss = functools.partial(_test_loss, model, test_x)
    epoch_fn = _epoch_fn(model, optimizer, batch_size, objective, estimator,
                         binarization == "dynamic", mesh)
    n_batches = data.shape[0] // batch_size

    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    bar = tqdm(range(start, epochs), desc="VAE", unit="epoch",
               disable=not progress or jax.process_index() > 0, initial=start, total=epochs)
    try:
        for e in bar:
            state, timing = _epoch(epoch_fn, state, data, e, n_batches, workdir)
            record = {"epoch": e + 1, **timing}
            if test_loss is not None:
                record["test_loss"] = float(test_loss(state.params))
            history.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}")
            if workdir is not None:
                meta = checkpoints.save(manager, workdir, state, history, meta)
    finally:  # also when interrupted: the files stay consistent, the threads stop
        bar.close()
        if manager is not None:
            manager.close()
    return FitResult(_distributed.to_local(state) if several else state, model, history)


def _test_loss(model: VAE, images: np.ndarray, params: Any) -> float:
    """The test negative ELBO (a fixed key) of ``images``; several processes: the mean over
    every process's images, the same on every process."""
    key = jax.random.PRNGKey(1)
    if not _distributed.multiprocess():
        return negative_elbo_dataset(key, model, params, images=images)
    value = negative_elbo_dataset(key, model, _distributed.to_local(params), images=images)
    sums = _distributed.allgather(np.array([value * images.shape[0], images.shape[0]]))
    return float(sums[:, 0].sum() / sums[:, 1].sum())


def _epoch(epoch_fn, state: TrainState, data, e: int, n_batches: int,
           workdir: Path | None) -> tuple[TrainState, dict]:
    """One epoch, timed, with the non-finite-loss check."""
    t0 = time.perf_counter()
    state, losses = epoch_fn(state, data)
    losses = np.asarray(losses)
    seconds = time.perf_counter() - t0
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        step = int(bad[0])
        where = (f"; the last good checkpoint (epoch {e}) is in {workdir / 'checkpoints'}"
                 if workdir is not None and e > 0 else "")
        raise FloatingPointError(
            f"non-finite loss {losses[step]} at epoch {e + 1}, step {step + 1} of "
            f"{n_batches}; training stopped{where}. Lower the optimizer's learning "
            "rate or check the data")
    return state, {"train_loss": float(np.mean(losses)), "seconds": seconds}


def _read_history(workdir: Path, epoch: int) -> list[dict]:
    """The per-epoch records of ``metrics.json`` up to ``epoch`` (they must all be there)."""
    path = workdir / checkpoints.METRICS
    try:
        history = json.loads(path.read_text()) if path.exists() else []
        history = [h for h in history if int(h["epoch"]) <= epoch]
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"workdir {workdir}: {path.name} is unreadable ({e}); the file is "
                         "damaged") from e
    if [h["epoch"] for h in history] != list(range(1, epoch + 1)):
        warnings.warn(f"{path} lacks records of some of the {epoch} epochs restored; the "
                      "history returned has gaps", stacklevel=3)
    return history
