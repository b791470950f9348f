"""VAE checkpoints: Orbax arrays, a metadata file that records a digest of every saved array,
verification on restore with a fall-back to the newest intact checkpoint.

A workdir holds ``checkpoints/<epoch>/`` (Orbax, the last two kept), ``metrics.json`` (one
record per epoch) and ``vijax_vae.json`` (the format, the model's config, the run's settings,
and per kept epoch the SHA-256 digest of every array of the training state). Writes are
ordered so that a crash anywhere leaves a consistent run:

1. the arrays of epoch ``e`` (Orbax writes them to a temporary folder and renames it);
2. ``metrics.json`` with epoch ``e`` (atomic rename);
3. ``vijax_vae.json`` recording epoch ``e`` and its digests (atomic rename).

Only epochs recorded in ``vijax_vae.json`` are restored: a checkpoint written before a crash
that never reached step 3 is ignored, and the history is cut at the restored epoch, so no
epoch goes missing. On restore every array is hashed again; a checkpoint whose digests differ
(flipped bytes in a data file, a truncated array) is skipped with a warning that names it,
and the newest intact one is used; when none is intact the error says so.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

FORMAT = "vijax.vae/3"
META = "vijax_vae.json"
METRICS = "metrics.json"
KEEP = 2

__all__ = ["FORMAT", "META", "METRICS", "manager", "read_meta", "save", "restore", "digests"]


def manager(workdir: Path):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=KEEP, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options)


def digests(state: Any) -> dict[str, str]:
    """``{key path: sha256 of dtype, shape and bytes}`` for every array of a pytree."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        a = np.asarray(jax.device_get(leaf))
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        out[jax.tree_util.keystr(path)] = h.hexdigest()
    return out


def read_meta(workdir: Path) -> dict | None:
    """The metadata of ``workdir`` (None when it has none), checked for format and entries."""
    path = workdir / META
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"workdir {workdir} has an unreadable {META} ({e}); it is not a "
                         "vijax VAE checkpoint folder: pass another workdir") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"workdir {workdir} holds {META} of another format "
                         f"({meta.get('format') if isinstance(meta, dict) else meta!r}); "
                         f"expected {FORMAT!r}: pass another workdir")
    for name, kind in (("config", dict), ("epoch", int), ("checkpoints", dict)):
        if not isinstance(meta.get(name), kind):
            raise ValueError(f"workdir {workdir}: {path.name} has no valid {name!r} entry (got "
                             f"{meta.get(name)!r}); the file is damaged: pass another workdir")
    return meta


def save(mgr, workdir: Path, state: Any, history: list[dict], meta: dict) -> dict:
    """Write epoch ``state.epoch`` in the crash-safe order above; returns the new metadata."""
    import orbax.checkpoint as ocp

    epoch = int(state.epoch)
    if epoch in mgr.all_steps():  # an unrecorded leftover of a run that crashed: redo it
        mgr.delete(epoch)
    mgr.save(epoch, args=ocp.args.StandardSave(state._asdict()), force=True)
    mgr.wait_until_finished()
    kept = {str(s) for s in mgr.all_steps()}
    recorded = {k: v for k, v in meta.get("checkpoints", {}).items() if k in kept}
    recorded[str(epoch)] = digests(state)
    new = {**meta, "format": FORMAT, "epoch": epoch, "checkpoints": recorded}
    _atomic_write(workdir / METRICS, json.dumps(history, indent=1))
    _atomic_write(workdir / META, json.dumps(new, indent=1))
    return new


def restore(mgr, meta: dict, template: Any, mesh: Mesh, epoch: int | None = None) -> Any:
    """The newest intact recorded checkpoint (or exactly ``epoch``), verified by digest."""
    import orbax.checkpoint as ocp

    recorded = sorted((int(k) for k in meta["checkpoints"]), reverse=True)
    on_disk = set(mgr.all_steps())
    if epoch is not None:
        if epoch not in recorded or epoch not in on_disk:
            raise ValueError(f"epoch {epoch} has no checkpoint in {mgr.directory}; the kept "
                             f"epochs are {sorted(set(recorded) & on_disk)}")
        candidates = [epoch]
    else:
        candidates = [e for e in recorded if e in on_disk]
    replicated = NamedSharding(mesh, P())
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), template)
    broken = []
    for e in candidates:
        where = f"{mgr.directory}/{e}"
        try:
            restored = type(template)(**mgr.restore(
                e, args=ocp.args.StandardRestore(abstract._asdict())))
        except Exception as err:  # orbax raises several kinds on damaged or mismatched files
            broken.append(f"{where} ({type(err).__name__}: {str(err)[:200]})")
        else:
            if digests(restored) == meta["checkpoints"][str(e)]:
                if broken:
                    warnings.warn(f"checkpoint(s) {'; '.join(broken)} failed verification; "
                                  f"restored the newest intact one, epoch {e}", stacklevel=3)
                return restored
            broken.append(f"{where} (its arrays differ from the digests recorded in {META}: "
                          "corrupted)")
    if not broken:
        raise ValueError(f"no checkpoint recorded in {META} is in {mgr.directory}")
    raise ValueError(f"no intact checkpoint in {mgr.directory}: {'; '.join(broken)}. The "
                     "optimiser or estimator passed may also differ from the run's")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
