"""Shared plumbing for the benchmark scripts and the report: environment, timing, output.

Every benchmark script takes ``--quick`` and ``--out DIR``, prints a table with the ratios to
its peers and writes JSON that records the device, the JAX version and the date. Scripts are
thin: the work is in ``vijax``; this module only measures and writes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` or ``lscpu``), or the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (``/proc/loadavg``), None where there is none.

    On a machine of ``n`` cores a load above ``n`` means other processes competed for the
    cores while a benchmark ran: its times are then inflated and its ratios less fair.
    """
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


#: The load when the benchmark started (this module is imported first by every script).
LOADAVG_AT_START = loadavg()


def cpu_threads() -> int:
    """The cores this process may run on (its affinity): the threads JAX's CPU backend uses,
    and the count a peer (``torch.set_num_threads``) is pinned to."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def environment() -> dict[str, Any]:
    """What the numbers were measured on: device, CPU model, threads, library versions, date,
    and the load average when the script started and when it wrote its results."""
    import jax
    import jaxlib

    devices = jax.devices()
    return {
        "cpu_model": cpu_model(),
        "cpu_threads_available": cpu_threads(),
        "loadavg_start": LOADAVG_AT_START,
        "loadavg_end": loadavg(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "backend": jax.default_backend(),
        "device": devices[0].device_kind,
        "device_count": len(devices),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "blas_threads": blas_threads(),
    }


def blas_threads() -> dict[str, int] | None:
    """The thread count of each BLAS / OpenMP pool loaded in this process (NumPy's and
    scikit-learn's peers run on them), from ``threadpoolctl`` (a scikit-learn dependency);
    None when it is not installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return {f"{p.get('internal_api')}:{Path(p.get('filepath', '')).name}": p.get("num_threads")
            for p in threadpool_info()}


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark script shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    p.add_argument("--out", type=Path, default=None, help="folder for JSON and PNGs")
    return p


def block(x: Any) -> Any:
    """Wait for JAX arrays in ``x`` (a pytree); other values pass through."""
    import jax

    return jax.block_until_ready(x)


def timeit(fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1,
           min_time: float = 0.0) -> float:
    """Median wall-clock seconds of ``fn()`` (results blocked on), after ``warmup`` calls.

    With ``min_time`` > 0, repeats continue until that many seconds were spent timing.
    """
    for _ in range(warmup):
        block(fn())
    times: list[float] = []
    spent = 0.0
    while len(times) < repeat or spent < min_time:
        t0 = time.perf_counter()
        block(fn())
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return float(np.median(times))


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """Median, quartiles, extremes and count of repeated measurements (their spread)."""
    v = np.asarray(values, float)
    q25, median, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75),
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (dicts with the same keys)."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Print ``rows`` as a Markdown table and return it."""
    table = markdown_table(rows, columns)
    print(table, flush=True)
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if v != v:
            return "nan"
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(value)


def to_jsonable(obj: Any) -> Any:
    """Arrays and NumPy scalars as lists and numbers; NaN as null."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with the environment under ``"environment"``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"environment": environment(), **payload}
    path.write_text(json.dumps(to_jsonable(doc), indent=2) + "\n")
    return path


class Log:
    """Progress lines with the seconds elapsed since the start, flushed at once."""

    def __init__(self, prefix: str = "") -> None:
        self.t0 = time.perf_counter()
        self.prefix = prefix

    def __call__(self, message: str) -> None:
        dt = time.perf_counter() - self.t0
        print(f"[{dt:7.1f}s] {self.prefix}{message}", file=sys.stderr, flush=True)


def savefig(fig: Any, path: Path) -> str:
    """Save a Matplotlib figure as PNG, close it, and return its file name."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name
