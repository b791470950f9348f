"""Tests of vijax.vae.checkpoints: digests detect corruption and resume falls back to the newest
intact checkpoint; a crash between the array save and the metadata write loses no epoch;
resume stays bit-exact; damaged metadata gives errors that name the folder and file."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from vijax import estimators as E
from vijax.vae import VAEConfig, checkpoints, fit, load_checkpoint

TINY = VAEConfig(hidden=(16,), latent_dim=3)
ADAM = optax.adam(1e-3)
X = np.random.default_rng(0).uniform(size=(200, 784)).astype(np.float32)
KW = {"config": TINY, "batch_size": 50, "progress": False, "optimizer": ADAM}


@pytest.fixture(scope="module")
def straight():
    return fit(jax.random.PRNGKey(3), X, epochs=3, **KW)


def _equal(a, b):
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_array_equal(x, y)


def _flip_bytes(folder: Path) -> Path:
    """Flip bytes in the largest file of a checkpoint (same size)."""
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    target = files[-1]
    data = bytearray(target.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def test_corrupted_checkpoint_is_detected_and_resume_falls_back(tmp_path, straight):
    fit(jax.random.PRNGKey(3), X, epochs=2, workdir=tmp_path / "run", **KW)
    meta = json.loads((tmp_path / "run" / checkpoints.META).read_text())
    assert sorted(meta["checkpoints"]) == ["1", "2"]
    assert all(len(d) > 4 for d in meta["checkpoints"].values())  # one digest per array
    _flip_bytes(tmp_path / "run" / "checkpoints" / "2")
    with pytest.warns(UserWarning, match=r"checkpoints/2 .*failed verification; restored the "
                                          r"newest intact one, epoch 1"):
        resumed = fit(jax.random.PRNGKey(3), X, epochs=3, workdir=tmp_path / "run", resume=True,
                      **KW)
    _equal(resumed, straight)  # epoch 2 retrained from epoch 1: bit for bit the same run
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    # both kept checkpoints damaged: a clear error, nothing restored
    for e in ("2", "3"):
        _flip_bytes(tmp_path / "run" / "checkpoints" / e)
    with pytest.raises(ValueError, match="no intact checkpoint"):
        load_checkpoint(tmp_path / "run", ADAM)


def test_a_crash_before_the_metadata_write_loses_no_epoch(tmp_path, straight, monkeypatch):
    real = checkpoints._atomic_write
    calls = {"n": 0}

    def crash_on_second_meta(path, text):
        if path.name == checkpoints.META:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt("killed between the array save and the metadata")
        real(path, text)

    monkeypatch.setattr(checkpoints, "_atomic_write", crash_on_second_meta)
    with pytest.raises(KeyboardInterrupt):
        fit(jax.random.PRNGKey(3), X, epochs=3, workdir=tmp_path / "run", **KW)
    monkeypatch.setattr(checkpoints, "_atomic_write", real)
    assert (tmp_path / "run" / "checkpoints" / "2").exists()  # arrays saved, never recorded
    state, _ = load_checkpoint(tmp_path / "run", ADAM)
    assert int(state.epoch) == 1
    resumed = fit(jax.random.PRNGKey(3), X, epochs=3, workdir=tmp_path / "run", resume=True,
                  **KW)
    _equal(resumed, straight)
    history = json.loads((tmp_path / "run" / checkpoints.METRICS).read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_damaged_metadata_and_missing_epochs_name_the_file(tmp_path):
    fit(jax.random.PRNGKey(3), X, epochs=1, workdir=tmp_path / "run", **KW)
    path = tmp_path / "run" / checkpoints.META
    meta = json.loads(path.read_text())
    with pytest.raises(ValueError, match=r"epoch 99 has no checkpoint .*kept epochs are \[1\]"):
        load_checkpoint(tmp_path / "run", ADAM, epoch=99)
    with pytest.raises(ValueError, match=r"trained with estimator=Reparam\(\); pass that "):
        load_checkpoint(tmp_path / "run", ADAM, estimator=E.STL())
    for broken, match in (({k: v for k, v in meta.items() if k != "config"},
                           r"vijax_vae.json has no valid 'config'"),
                          ({**meta, "config": {**meta["config"], "extra": 1}},
                           r"vijax_vae.json has an unreadable 'config'"),
                          ({**meta, "checkpoints": None}, r"no valid 'checkpoints'")):
        path.write_text(json.dumps(broken))
        for call in (lambda: load_checkpoint(tmp_path / "run", ADAM),
                     lambda: fit(jax.random.PRNGKey(3), X, epochs=2, workdir=tmp_path / "run",
                                 resume=True, **KW)):
            with pytest.raises(ValueError, match=match):
                call()
