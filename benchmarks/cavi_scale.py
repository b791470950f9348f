"""Stochastic VI for the earthquake mixture at scale: events streamed from a file on disk.

    python benchmarks/cavi_scale.py [--events 1e8] [--quick] [--out DIR]

Simulates ``--events`` events (K = 8, float32) with ``vijax.cavi.sample_events`` in chunks
of 1e6 and writes them to a ``.npy`` file under a temporary folder (``cavi.write_events``,
12 bytes per event; deleted at the end). Then:

- Batch CAVI (``cavi.fit``) on the first ``--cavi-events`` (1e6) events of the file, the
  best of ``--restarts``: its ELBO per event, its held-out ELBO, and its events per second
  (events / seconds per sweep; a sweep timed as the difference between fits of two lengths,
  so that compilation, initialisation and the final assignment cancel; timed before and
  after SVI, as the load of a shared machine drifts, and the mean used).
- SVI (``cavi.fit_stochastic``) reads the file window by window (``np.fromfile`` at
  offsets), in minibatches of ``--batch-size`` events, for ``--passes`` passes, from the
  start of the best CAVI restart (``init_params``), so that both climb from the same point;
  the held-out ELBO per event (``cavi.held_out_elbo`` on 1e5 events drawn apart) is
  recorded against the training time; peak resident memory (``ru_maxrss``, reset before
  SVI where Linux allows) per phase (target < 2 GB).
- The ratio of SVI's events per second (end to end: reading the file, shuffling, the steps;
  compilation excluded by a warm-up on the same shapes, held-out evaluations excluded)
  to batch CAVI's (target >= 0.5x).
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _harness import Log, markdown_table, parser, print_table, savefig, timeit, write_json  # noqa: E402

from vijax import cavi  # noqa: E402

K = 8
# The fitted model; data are simulated from a wider prior so clusters are distinct (as in
# benchmarks/cavi.py).
PRIOR = cavi.Prior(tau=0.5, alpha=1.0, beta=0.05, nu=(0.0, 0.0), rho=0.01)
SIM_PRIOR = cavi.Prior(tau=0.5, alpha=4.0, beta=0.1, nu=(0.0, 0.0), rho=0.005)
CHUNK = 1_000_000


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory of this process now, in MB (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load() -> str:
    """The load averages (1, 5, 15 minutes) of the machine."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def truth(seed: int = 0):
    """Cluster centres, rates and weights drawn from ``SIM_PRIOR``."""
    _, t = cavi.simulate(jax.random.key(seed), SIM_PRIOR, K, 1)
    return t.means, t.rates, t.weights


def chunks(key, num_events: int, clusters):
    """The events in chunks of ``CHUNK`` (NumPy), chunk ``i`` from ``fold_in(key, i)``."""
    means, rates, weights = clusters
    for i, start in enumerate(range(0, num_events, CHUNK)):
        n = min(CHUNK, num_events - start)
        data, _ = cavi.sample_events(jax.random.fold_in(key, i), means, rates, weights,
                                     float(SIM_PRIOR.tau), n)
        yield np.asarray(data.locations), np.asarray(data.strengths)


def reset_peak_rss() -> bool:
    """Reset the peak resident memory to the current one (Linux ``clear_refs``), so that
    ``ru_maxrss`` then measures one phase; False where the system does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run(num_events: int, *, batch_size: int, window_batches: int, passes: int,
        holdout_events: int, cavi_events: int, restarts: int, eval_every: int,
        log: Log) -> dict:
    clusters = truth()
    result: dict = {"events": num_events, "K": K, "batch_size": batch_size,
                    "window_batches": window_batches, "passes": passes,
                    "holdout_events": holdout_events, "cavi_restarts": restarts,
                    "load_start": load()}
    held, _ = cavi.sample_events(jax.random.key(2), *clusters, float(SIM_PRIOR.tau),
                                 holdout_events)
    held = (np.asarray(held.locations), np.asarray(held.strengths))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.npy"
        t0 = time.perf_counter()
        cavi.write_events(path, chunks(jax.random.key(1), num_events, clusters), num_events)
        result["write_s"] = time.perf_counter() - t0
        result["file_bytes"] = path.stat().st_size
        result["rss_peak_write_mb"] = peak_rss_mb()
        log(f"wrote {num_events:,} events ({result['file_bytes'] / 1e9:.2f} GB) in "
            f"{result['write_s']:.1f}s; peak RSS {result['rss_peak_write_mb']:.0f} MB")
        sub = np.load(path, mmap_mode="r")[:cavi_events]
        data = (np.array(sub["locations"]), np.array(sub["strengths"]))
        del sub

        # Batch CAVI on the first cavi_events events: events/s from the time of one sweep,
        # then the reference fit (the best of `restarts`).
        key = jax.random.key(5)

        def sweeps(iters):
            return cavi.fit(key, data, PRIOR, K, max_iter=iters, tol=0.0)

        def seconds_per_sweep(short=5, long_=25):
            """Seconds per sweep, and seconds per sweep of a whole warm fit of ``long_``."""
            t_short = timeit(lambda: sweeps(short), repeat=3)
            t_long = timeit(lambda: sweeps(long_), repeat=3)
            return max(t_long - t_short, 1e-12) / (long_ - short), t_long / long_

        per_sweep, whole = seconds_per_sweep()
        cavi.fit(key, data, PRIOR, K, num_restarts=restarts, max_iter=500)  # compiles
        t0 = time.perf_counter()
        ref = jax.block_until_ready(cavi.fit(key, data, PRIOR, K, num_restarts=restarts,
                                             max_iter=500))
        fit_s = time.perf_counter() - t0
        best = int(ref.best_restart)
        result.update({
            "cavi_events": cavi_events, "cavi_seconds_per_sweep": per_sweep,
            "cavi_events_per_s": cavi_events / per_sweep, "cavi_fit_s": fit_s,
            "cavi_sweeps_best": int(ref.num_iters[best]),
            "cavi_elbo_per_event": float(ref.elbo) / cavi_events,
            "cavi_restart_elbos_per_event": np.asarray(ref.restart_elbos) / cavi_events,
            "cavi_held_out_elbo": float(cavi.held_out_elbo(held, PRIOR, ref.params)),
            "rss_peak_cavi_mb": peak_rss_mb(),
        })
        log(f"CAVI on {cavi_events:,}: {per_sweep * 1e3:.2f} ms/sweep "
            f"({result['cavi_events_per_s']:.3g} events/s); {restarts} restarts in "
            f"{fit_s:.2f}s, best ELBO {result['cavi_elbo_per_event']:.4f}/event, held-out "
            f"{result['cavi_held_out_elbo']:.4f}/event")

        # SVI starts where the best CAVI restart started (restart i starts from
        # init(split(key, R)[i])), so that both climb from the same point.
        start_key = jax.random.split(key, restarts)[best] if restarts > 1 else key
        start, _ = cavi.init(start_key, data, PRIOR, K)
        start = start._replace(responsibilities=None)
        # Warm-up: the same shapes on the first window only, so that the timed run compiles
        # none of its steps.
        first = np.array(np.load(path, mmap_mode="r")[: batch_size * window_batches])
        t0 = time.perf_counter()
        cavi.fit_stochastic(jax.random.key(3), first, PRIOR, K, batch_size=batch_size,
                            window_batches=window_batches, num_steps=1, holdout=held,
                            init_params=start)
        result["svi_compile_s"] = time.perf_counter() - t0
        del first

        result["rss_before_svi_mb"] = current_rss_mb()
        result["rss_peak_reset"] = reset_peak_rss()
        t0 = time.perf_counter()
        svi = cavi.fit_stochastic(jax.random.key(4), path, PRIOR, K, batch_size=batch_size,
                                  window_batches=window_batches, num_passes=passes,
                                  holdout=held, eval_every=eval_every, init_params=start)
        wall = time.perf_counter() - t0
        h = svi.history
        result.update({
            "svi_wall_s": wall, "svi_train_s": float(h.seconds[-1]),
            "svi_steps": int(h.step[-1]), "svi_events_processed": int(h.events[-1]),
            "svi_events_per_s": float(h.events[-1] / h.seconds[-1]),
            "svi_held_out_elbo": float(h.held_out_elbo[-1]),
            "svi_elbo_on_cavi_events_per_event": float(cavi.assign_with_elbo(
                cavi.as_observations(data), cavi.as_prior(PRIOR, K), svi.params)[1])
            / cavi_events,
            "svi_final_step_size": float(svi.step_sizes[-1]),
            "rss_peak_svi_mb": peak_rss_mb(),
            "history": {"step": h.step, "events": h.events, "seconds": h.seconds,
                        "held_out_elbo": h.held_out_elbo},
        })
        log(f"SVI: {result['svi_events_processed']:,} events in {result['svi_train_s']:.1f}s "
            f"({result['svi_events_per_s']:.3g} events/s; wall {wall:.1f}s with evaluations), "
            f"held-out ELBO {result['svi_held_out_elbo']:.4f}/event; peak RSS during SVI "
            f"{result['rss_peak_svi_mb']:.0f} MB")
    # CAVI's sweep timed again after SVI: on a shared machine the load drifts, so the ratio
    # uses the mean of the two timings (both are in the JSON).
    after, whole_after = seconds_per_sweep()
    result["cavi_seconds_per_sweep_before_svi"] = per_sweep
    result["cavi_seconds_per_sweep_after_svi"] = after
    result["cavi_seconds_per_sweep"] = (per_sweep + after) / 2
    result["cavi_events_per_s"] = cavi_events / result["cavi_seconds_per_sweep"]
    # A whole warm fit of 25 sweeps (event terms, initialisation, final assignment
    # included), per sweep: what a user of cavi.fit sees.
    result["cavi_fit_events_per_s"] = cavi_events / ((whole + whole_after) / 2)
    result["events_per_s_ratio_svi_over_cavi_fit"] = (result["svi_events_per_s"]
                                                      / result["cavi_fit_events_per_s"])
    result["rss_peak_mb"] = max(result["rss_peak_write_mb"], result["rss_peak_cavi_mb"],
                                result["rss_peak_svi_mb"])
    result["events_per_s_ratio_svi_over_cavi"] = (result["svi_events_per_s"]
                                                  / result["cavi_events_per_s"])
    result["load_end"] = load()
    return result


def figure(result: dict, path: Path) -> str:
    """Held-out ELBO per event against training seconds: the whole run (from the start) and
    a close-up of its end, with batch CAVI's as a line."""
    h = {k: np.asarray(v, float) for k, v in result["history"].items()}
    ref = result["cavi_held_out_elbo"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, part in zip(axes, (slice(None), slice(1, None)), strict=True):
        ax.plot(h["seconds"][part], h["held_out_elbo"][part], "o-", ms=3,
                label=f"SVI, {result['events']:.0e} events from disk")
        ax.axhline(ref, color="C3", ls="--", label=f"batch CAVI on {result['cavi_events']:.0e} "
                   f"events, best of {result['cavi_restarts']} ({result['cavi_fit_s']:.1f} s)")
        ax.set_xlabel("training seconds (held-out evaluations excluded)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("held-out ELBO per event")
    axes[0].set_title(f"SVI, K = {K}, minibatches of {result['batch_size']:,}")
    axes[1].set_title("after the first evaluation (close-up)")
    tail = np.append(h["held_out_elbo"][1:], ref)
    pad = 0.1 * (tail.max() - tail.min()) + 1e-6
    axes[1].set_ylim(tail.min() - pad, tail.max() + pad)
    axes[0].legend(fontsize=8)
    return savefig(fig, path)


def summary_row(r: dict) -> dict:
    return {"events": r["events"], "SVI events/s": r["svi_events_per_s"],
            "CAVI events/s (1e6)": r["cavi_events_per_s"],
            "ratio SVI/CAVI": r["events_per_s_ratio_svi_over_cavi"],
            "CAVI fit events/s (25 sweeps)": r["cavi_fit_events_per_s"],
            "ratio SVI/CAVI fit": r["events_per_s_ratio_svi_over_cavi_fit"],
            "SVI held-out ELBO": r["svi_held_out_elbo"],
            "CAVI held-out ELBO": r["cavi_held_out_elbo"],
            "peak RSS MB (SVI phase)": r["rss_peak_svi_mb"],
            "peak RSS MB (run)": r["rss_peak_mb"]}


def report(out: Path, log: Log) -> dict:
    """The section of the main job: a small run (1e6 events, two passes; CAVI on 2.5e5)."""
    r = run(1_000_000, batch_size=16384, window_batches=16, passes=2, holdout_events=50_000,
            cavi_events=250_000, restarts=4, eval_every=2, log=log)
    fig = figure(r, out / "cavi_scale.png")
    md = ("## Stochastic VI from disk\n\n"
          f"{r['events']:,} simulated events (K = {K}) written to a `.npy` file and fitted by "
          f"`cavi.fit_stochastic` ({r['passes']} passes, minibatches of "
          f"{r['batch_size']:,}); batch CAVI on {r['cavi_events']:,} of them as the "
          "reference. Events per second: SVI end to end (reading, shuffling, steps), CAVI per "
          "sweep. A small run; `python benchmarks/cavi_scale.py` streams 1e8 events.\n\n"
          f"{markdown_table([summary_row(r)])}\n\n![held-out ELBO]({fig})\n")
    return {"markdown": md, "numbers": r}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--events", type=float, default=1e8, help="events in the file")
    p.add_argument("--batch-size", type=int, default=65536)
    p.add_argument("--window-batches", type=int, default=16)
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--holdout", type=int, default=100_000, help="held-out events")
    p.add_argument("--cavi-events", type=int, default=1_000_000)
    p.add_argument("--restarts", type=int, default=8, help="batch CAVI restarts")
    p.add_argument("--eval-every", type=int, default=4, help="windows between evaluations")
    args = p.parse_args(argv)
    if args.quick:
        args.events, args.passes = 1e6, 2
    out = args.out or Path("benchmarks/results")
    log = Log()
    num_events = int(args.events)
    r = run(num_events, batch_size=args.batch_size, window_batches=args.window_batches,
            passes=args.passes, holdout_events=args.holdout,
            cavi_events=min(args.cavi_events, num_events), restarts=args.restarts,
            eval_every=args.eval_every, log=log)
    print("\nSVI streamed from disk against batch CAVI in memory (float32), ratio = SVI / CAVI")
    print_table([summary_row(r)])
    targets = {"peak_rss_mb < 2048": r["rss_peak_mb"],
               "svi_phase_peak_rss_mb < 2048": r["rss_peak_svi_mb"],
               "events_per_s_ratio >= 0.5": r["events_per_s_ratio_svi_over_cavi"]}
    print(f"\ntargets: {targets}")
    name = "cavi_scale_quick" if args.quick else "cavi_scale"
    fig = figure(r, out / f"{name}.png")
    path = write_json(out / f"{name}.json", {**r, "targets": targets, "figure": fig})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
