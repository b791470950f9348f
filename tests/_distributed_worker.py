"""One process of the multi-process tests (tests/test_distributed.py); run by path.

``python _distributed_worker.py OUT single`` fits on all the data in one process (its device
count set by the parent through ``XLA_FLAGS``); ``python _distributed_worker.py OUT PORT
NUM_PROCESSES PROCESS_ID`` joins ``jax.distributed`` on 127.0.0.1:PORT and fits on this
process's part. Both write ``OUT`` (``np.savez``): CAVI's init and fit, one VAE epoch, and
the messages of calls that must fail.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

EVENTS = 400
IMAGES = 64
BATCH = 16
MEANS = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
RATES = np.array([2.0, 20.0, 60.0])


def events() -> tuple[np.ndarray, np.ndarray]:
    """``EVENTS`` events of three clusters (NumPy: nothing to compile)."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, EVENTS)
    return (MEANS[labels] + rng.normal(size=(EVENTS, 2)) / np.sqrt(0.5),
            rng.poisson(RATES[labels]).astype(np.float64))


def cavi_parts(processes: int) -> list[slice]:
    """Unequal parts (alternately 20 events more and fewer than ``EVENTS / processes``), so
    that padding falls between the processes' events."""
    sizes = [EVENTS // processes + (20 if p % 2 else -20) for p in range(processes)]
    sizes[-1] = EVENTS - sum(sizes[:-1])
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


class Unreadable:
    """Events whose ``locations`` raise something other than a ``ValueError``."""

    strengths = np.ones(3)

    @property
    def locations(self):
        raise RuntimeError("the events cannot be read")


def caught(call) -> np.str_:
    """``"Type: message"`` of what ``call()`` raises (it must raise)."""
    try:
        call()
    except Exception as e:  # noqa: BLE001 -- any exception is recorded, none may hang
        return np.str_(f"{type(e).__name__}: {e}")
    return np.str_("no error")


def bad_cavi_calls(results: dict, mine: tuple, prior, params, process_id: int) -> None:
    """Calls that must fail on every process, before anything compiles."""
    from vijax import cavi

    def fit(data=mine, prior=prior, key=3, k=3, **kwargs):
        return cavi.fit(jax.random.key(key), data, prior, k, max_iter=2, **kwargs)

    other = prior._replace(alpha=2.0 + process_id)
    nan = (np.where(np.arange(len(mine[1]))[:, None] == 5, np.nan, mine[0]), mine[1])
    moved = params._replace(mean=params.mean + process_id)
    results.update(
        bad_key=caught(lambda: fit(key=3 + process_id)),
        bad_prior=caught(lambda: fit(prior=other)),
        bad_start=caught(lambda: fit(init_params=moved)),
        bad_k=caught(lambda: fit(k=EVENTS + 1)),
        # only process 1's arguments are bad: every process must raise, none may wait
        bad_nan=caught(lambda: fit(data=nan if process_id == 1 else mine)),
        bad_unreadable=caught(lambda: fit(data=Unreadable() if process_id == 1 else mine)))


def main(out: str, port: int | None, processes: int, process_id: int) -> None:
    if port is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                                   num_processes=processes, process_id=process_id,
                                   initialization_timeout=120)
    import optax

    from vijax import cavi
    from vijax.vae import VAEConfig, fit

    results: dict[str, np.ndarray] = {"devices": np.int64(jax.device_count())}

    with jax.enable_x64(True):
        locations, strengths = events()
        part = cavi_parts(processes)[process_id] if port is not None else slice(None)
        mine = (locations[part], strengths[part])
        prior = cavi.Prior(tau=0.5, alpha=2.0, beta=0.2, rho=0.1, concentration=1.5)
        if processes <= 2:  # init's own test (fit's seeds are tested through its history)
            params, value = cavi.init(jax.random.key(2), mine, prior, 3)
            results.update(init_mean=params.mean, init_shape=params.gamma_shape,
                           init_elbo=value, init_r=params.responsibilities)
        res = cavi.fit(jax.random.key(3), mine, prior, 3, num_restarts=2, max_iter=25, tol=0.0)
        results.update(elbo=res.elbo, restart_elbos=res.restart_elbos,
                       history=res.elbo_history, mean=res.params.mean,
                       shape=res.params.gamma_shape, rate=res.params.gamma_rate,
                       precision=res.params.precision, weights=res.params.concentration,
                       r=res.params.responsibilities)
        if port is not None:
            bad_cavi_calls(results, mine, prior, res.params, process_id)
        if port is not None and processes == 2:
            # Process 1 has 2 events of positive weight, fewer than K = 3: the 182 of both
            # processes are enough (the shapes of init's first call: no new compile).
            weights = np.ones(len(mine[1]))
            weights[2 if process_id == 1 else len(weights):] = 0.0
            try:
                params, _ = cavi.init(jax.random.key(2), cavi.Observations(*mine, weights),
                                      prior, 3)
                results.update(weighted_init_mean=params.mean,
                               positive_locations=mine[0][weights > 0])
            except ValueError as e:
                results["weighted_init_error"] = np.str_(str(e))

    images = np.random.default_rng(0).uniform(size=(IMAGES, 784)).astype(np.float32)
    if port is not None:
        images = np.split(images, processes)[process_id]
    config = VAEConfig(hidden=(8,), latent_dim=2)
    vae = fit(jax.random.PRNGKey(4), images, optimizer=optax.adam(1e-2), config=config,
              epochs=1, batch_size=BATCH, binarization="dynamic", progress=False)
    for i, leaf in enumerate(jax.tree.leaves(vae.state.params)):
        results[f"vae_{i}"] = np.asarray(leaf)
    results["vae_loss"] = np.float64(vae.history[0]["train_loss"])
    if port is not None:
        try:  # a batch that the global device count does not divide
            fit(jax.random.PRNGKey(4), images, optimizer=optax.adam(1e-2), config=config,
                epochs=1, batch_size=jax.device_count() + 1, progress=False)
        except ValueError as e:
            results["bad_batch"] = np.str_(str(e))
        results["bad_optimizer"] = caught(lambda: fit(  # a learning rate per process
            jax.random.PRNGKey(4), images, optimizer=optax.adam(1e-2 * (1 + process_id)),
            config=config, epochs=1, batch_size=BATCH, progress=False))
        from vijax import _distributed
        from vijax.vae import make_mesh

        reverse = jax.devices()[::-1]
        results["mesh_processes"] = np.array([d.process_index for d in
                                              make_mesh(reverse).devices.flat])
        results["global_mesh_processes"] = np.array(
            [d.process_index for d in _distributed.global_mesh("x").devices.flat])

    np.savez(out, **{k: np.asarray(v) for k, v in results.items()})


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[1] == "single":
        main(args[0], None, 1, 0)
    else:
        main(args[0], int(args[1]), int(args[2]), int(args[3]))
