"""Several processes under ``jax.distributed`` (vijax.cavi.fit / init, vijax.vae.fit).

Three runs start at once, each in fresh subprocesses (tests/_distributed_worker.py), with 4
CPU devices in all: one process of 4 devices on all the data (the reference), 2 processes
of 2 devices and 4 processes of 1 device, each process on its part, joined on 127.0.0.1
(a free port) with gloo collectives. Every subprocess is killed after ``TIMEOUT`` seconds.

What must hold: every process ends with the same CAVI globals and ELBOs and the same VAE
parameters, and they equal the single-process run on the concatenation, within float
rounding (CAVI in float64; the VAE's gradient sums taken in another order); the CAVI seeds
are the same (the ELBO after initialisation of each restart, and ``init``'s centres, which
are events, exactly); each process's responsibilities are its events' rows; bad use fails
on every process with a message, also when only one process's arguments are bad (none waits
for another in a collective), and settings that differ between processes (the prior, a warm
start, the optimizer's learning rate) are refused; ``num_clusters`` is bounded by the events of
every process; meshes hold each process's devices consecutively.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("_distributed_worker.py")
TIMEOUT = 240  # seconds for all the runs together (~35 s on 2 idle cores); then killed
# Cheaper compiles (no LLVM optimisation): the processes here compile more than they run.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
RUNS = {"1x4": (1, 4), "2x2": (2, 2), "4x1": (4, 1)}  # processes x devices per process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp: Path, name: str, processes: int, devices: int) -> list[tuple]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}",
           "PYTHONPATH": os.pathsep.join([str(WORKER.parent.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    port = _free_port()
    started = []
    for i in range(processes):
        out, log = tmp / f"{name}_{i}.npz", tmp / f"{name}_{i}.log"
        args = ["single"] if processes == 1 else [str(port), str(processes), str(i)]
        with open(log, "w") as f:
            proc = subprocess.Popen([sys.executable, str(WORKER), str(out), *args], env=env,
                                    stdout=f, stderr=subprocess.STDOUT)
        started.append((proc, out, log))
    return started


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    started = {name: _start(tmp, name, *shape) for name, shape in RUNS.items()}
    every = [item for group in started.values() for item in group]
    deadline = time.monotonic() + TIMEOUT
    try:
        for proc, _, _ in every:
            proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc, _, _ in every:  # only our own subprocesses, by their handles
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [(log, proc.returncode) for proc, _, log in every if proc.returncode != 0]
    if failed:
        log, code = failed[0]
        pytest.fail(f"{len(failed)} worker(s) failed or timed out (first: exit {code}, "
                    f"{log.name}):\n{log.read_text()[-3000:]}")
    return {name: [dict(np.load(out)) for _, out, _ in group]
            for name, group in started.items()}


GLOBALS = ("mean", "shape", "rate", "precision", "weights")


@pytest.mark.parametrize("name", ["2x2", "4x1"])
def test_cavi_fit_on_several_processes_equals_one_process(runs, name):
    (one,), parts = runs["1x4"], runs[name]
    assert all(int(p["devices"]) == 4 for p in parts) and int(one["devices"]) == 4
    for p in parts:  # every process holds the same result, bit for bit
        for field in (*GLOBALS, "elbo", "restart_elbos", "history"):
            np.testing.assert_array_equal(p[field], parts[0][field], err_msg=field)
    # The same seeds: each restart's ELBO after initialisation (history entry 0).
    np.testing.assert_allclose(parts[0]["history"][:, 0], one["history"][:, 0], rtol=1e-12)
    np.testing.assert_allclose(parts[0]["history"], one["history"], rtol=1e-10)
    np.testing.assert_allclose(parts[0]["restart_elbos"], one["restart_elbos"], rtol=1e-10)
    for field in GLOBALS:
        np.testing.assert_allclose(parts[0][field], one[field], rtol=1e-9, atol=1e-12,
                                   err_msg=field)
    # Each process's responsibilities are its own events' rows, in order.
    r = np.concatenate([p["r"] for p in parts])
    assert r.shape == one["r"].shape
    np.testing.assert_allclose(r, one["r"], atol=1e-9)


def test_cavi_init_on_two_processes_draws_the_seeds_of_the_concatenation(runs):
    (one,), parts = runs["1x4"], runs["2x2"]
    for p in parts:
        np.testing.assert_array_equal(p["init_mean"], one["init_mean"])  # the seed events
        np.testing.assert_array_equal(p["init_shape"], one["init_shape"])
        np.testing.assert_allclose(p["init_elbo"], one["init_elbo"], rtol=1e-12)
    r = np.concatenate([p["init_r"] for p in parts])
    np.testing.assert_allclose(r, one["init_r"], atol=1e-12)


@pytest.mark.parametrize("name", ["2x2", "4x1"])
def test_vae_epoch_on_several_processes_equals_one_process(runs, name):
    (one,), parts = runs["1x4"], runs[name]
    leaves = sorted(k for k in one if k.startswith("vae_"))
    assert len(leaves) > 2
    for p in parts:
        for k in leaves:
            np.testing.assert_array_equal(p[k], parts[0][k], err_msg=k)
            np.testing.assert_allclose(p[k], one[k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("name", ["2x2", "4x1"])
def test_bad_use_fails_on_every_process_with_a_message(runs, name):
    for i, p in enumerate(runs[name]):
        assert "batch_size must be a multiple of the 4 devices" in str(p["bad_batch"])
        for case, setting in [("bad_key", "key"), ("bad_prior", "prior"),
                              ("bad_start", "init_params"), ("bad_optimizer", "optimizer")]:
            assert f"ValueError: {setting} must be the same on every process" in str(p[case])
        assert "num_clusters must be <= the 400 events of positive weight" in str(p["bad_k"])
        # Only process 1's arguments are bad; it raises its own error, every other process a
        # ValueError naming it (none waits for it: the run would time out).
        if i == 1:
            assert str(p["bad_nan"]).startswith("ValueError: data.locations")
            assert str(p["bad_unreadable"]) == "RuntimeError: the events cannot be read"
        else:
            for case in ("bad_nan", "bad_unreadable"):
                assert str(p[case]).startswith("ValueError: process(es) [1] failed"), case


def test_num_clusters_is_bounded_by_the_events_of_every_process(runs):
    # Process 1 holds 2 events of positive weight, fewer than K = 3; process 0 holds 180.
    parts = runs["2x2"]
    for p in parts:
        assert "weighted_init_error" not in p, str(p.get("weighted_init_error"))
        np.testing.assert_array_equal(p["weighted_init_mean"], parts[0]["weighted_init_mean"])
    positive = np.concatenate([p["positive_locations"] for p in parts])
    assert len(positive) == 182
    for centre in parts[0]["weighted_init_mean"]:  # each seed is an event of positive weight
        assert np.any(np.all(positive == centre, axis=1))


@pytest.mark.parametrize("name", ["2x2", "4x1"])
def test_meshes_hold_each_process_s_devices_consecutively(runs, name):
    for p in runs[name]:  # make_mesh given the devices in reverse order; global_mesh
        for field in ("mesh_processes", "global_mesh_processes"):
            order = p[field]
            assert len(order) == 4 and np.all(np.diff(order) >= 0), (field, order)


def test_fingerprints_read_values_not_addresses():
    import optax

    from vijax import cavi
    from vijax._distributed import fingerprint

    assert fingerprint(optax.adam(1e-3)) == fingerprint(optax.adam(1e-3))
    assert fingerprint(optax.adam(1e-3)) != fingerprint(optax.adam(1e-2))
    assert fingerprint(optax.adam(1e-3)) != fingerprint(optax.sgd(1e-3))
    schedule = [optax.exponential_decay(1e-3, 100, rate) for rate in (0.9, 0.8)]
    assert fingerprint(optax.adam(schedule[0])) != fingerprint(optax.adam(schedule[1]))
    prior = cavi.Prior(tau=0.5, alpha=2.0, beta=0.2, rho=0.1, concentration=1.5)
    assert fingerprint(prior) == fingerprint(prior._replace(alpha=2.0))
    assert fingerprint(prior) != fingerprint(prior._replace(alpha=2.5))
    assert fingerprint(np.zeros(2)) != fingerprint(np.zeros(2, np.float32))
    assert fingerprint(np.zeros(2)) != fingerprint(np.zeros((1, 2)))
    assert fingerprint(None) != fingerprint(np.zeros(2))
