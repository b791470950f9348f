"""CAVI for the earthquake mixture: speed against peers, and the studies of the report.

    python benchmarks/cavi.py [--quick] [--out DIR]

Benchmark (float32, one run): seconds per CAVI iteration of vijax against a vectorised
NumPy implementation of the same updates (``cavi_peers.NumpyCAVI``) and scikit-learn's
``BayesianGaussianMixture`` (spherical, same K, fixed iteration count, locations only), for
N = 1e3..1e6 and K = 8; then 64 restarts vmapped in one call against a Python loop over 64
one-restart fits. Per-iteration times are differences between runs of two lengths, so
compilation, initialisation and dispatch cancel.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _harness import Log, markdown_table, parser, print_table, savefig, timeit, write_json  # noqa: E402
from cavi_peers import NumpyCAVI, sklearn_mixture  # noqa: E402

from vijax import cavi  # noqa: E402
from vijax.data import load_quakes  # noqa: E402

K = 8
# The fitted model; data are simulated from a wider prior so clusters are distinct.
PRIOR = cavi.Prior(tau=0.5, alpha=1.0, beta=0.05, nu=(0.0, 0.0), rho=0.01)
SIM_PRIOR = cavi.Prior(tau=0.5, alpha=4.0, beta=0.1, nu=(0.0, 0.0), rho=0.005)


def simulated(num_events: int, num_clusters: int = K, seed: int = 0):
    return cavi.simulate(jax.random.key(seed), SIM_PRIOR, num_clusters, num_events)


# ---------------------------------------------------------------------------- timing


def per_iteration(run, short: int, long: int, repeat: int) -> float:
    """Seconds per iteration: (time of ``long`` iterations - time of ``short``) / difference."""
    t_short = timeit(lambda: run(short), repeat=repeat)
    t_long = timeit(lambda: run(long), repeat=repeat)
    return max(t_long - t_short, 1e-12) / (long - short)


def vijax_run(data):
    key = jax.random.key(1)
    return lambda iters: cavi.fit(key, data, PRIOR, K, max_iter=iters, tol=0.0)


def numpy_run(x, s):
    def run(iters):
        model = NumpyCAVI(x, s, K, PRIOR)
        for _ in range(iters):
            model.sweep()
    return run


def sklearn_run(x):
    def run(iters):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: we ask for fixed iterations
            sklearn_mixture(K, iters).fit(x)
    return run


def scaling(sizes: list[int], log: Log, quick: bool) -> list[dict]:
    try:
        import sklearn  # noqa: F401
        have_sklearn = True
    except ImportError:
        have_sklearn = False
        log("scikit-learn not installed: its column stays empty (pip install -e '.[bench]')")
    rows = []
    for n in sizes:
        data, _ = simulated(n)
        x, s = np.asarray(data.locations), np.asarray(data.strengths)
        big = n >= 500_000
        short, long_ = (1, 3) if big or quick else (2, 12)
        v_short, v_long = (5, 25) if quick else (10, 110)
        repeat = 1 if big else 3
        t_vijax = per_iteration(vijax_run(data), v_short, v_long, repeat)
        t_numpy = per_iteration(numpy_run(x, s), short, long_, repeat)
        t_skl = per_iteration(sklearn_run(x), short, long_, repeat) if have_sklearn else np.nan
        rows.append({"N": n, "K": K, "vijax_s": t_vijax, "numpy_s": t_numpy,
                     "sklearn_s": t_skl, "vs_numpy": t_numpy / t_vijax,
                     "vs_sklearn": t_skl / t_vijax})
        log(f"N={n:,}: vijax {t_vijax * 1e3:.3f} ms/iter, NumPy x{t_numpy / t_vijax:.1f}, "
            f"scikit-learn x{t_skl / t_vijax:.1f}")
    return rows


def restarts(num_events: int, num_restarts: int, iters: int, log: Log) -> dict:
    """``num_restarts`` restarts in one vmapped fit against a Python loop of one-restart fits.

    Both run ``iters`` sweeps per restart (``tol=0``), so the work is equal.
    """
    data, _ = simulated(num_events)
    key = jax.random.key(3)
    keys = jax.random.split(key, num_restarts)

    def vmapped():
        return cavi.fit(key, data, PRIOR, K, num_restarts=num_restarts, max_iter=iters, tol=0.0)

    def loop():
        return [cavi.fit(k, data, PRIOR, K, max_iter=iters, tol=0.0).elbo for k in keys]

    t_vmap, t_loop = timeit(vmapped, repeat=3), timeit(loop, repeat=3)
    same = np.allclose(np.asarray(vmapped().restart_elbos), np.asarray(loop()), rtol=1e-4)
    log(f"{num_restarts} restarts, N={num_events:,}: vmapped {t_vmap * 1e3:.1f} ms, "
        f"loop {t_loop * 1e3:.1f} ms, x{t_loop / t_vmap:.1f}")
    return {"N": num_events, "K": K, "restarts": num_restarts, "iterations": iters,
            "vmapped_s": t_vmap, "loop_s": t_loop, "speedup": t_loop / t_vmap,
            "same_elbos": bool(same)}


def scaling_figure(rows: list[dict], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    n = [r["N"] for r in rows]
    for key, label in (("vijax_s", "vijax (JAX)"), ("numpy_s", "NumPy, same updates"),
                       ("sklearn_s", "scikit-learn BGMM (spherical)")):
        ax.loglog(n, [r[key] for r in rows], "o-", label=label)
    ax.set_xlabel("events N")
    ax.set_ylabel("seconds per iteration")
    ax.set_title(f"CAVI iteration time, K = {K}, float32")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return savefig(fig, path)


# --------------------------------------------------------------------- report studies


def quakes_prior(q) -> cavi.Prior:
    """Weakly informative prior for the catalogue, in degrees and station counts: clusters of
    about 2 degrees (tau = 1/2^2), centres within about 10 degrees of the catalogue's mean,
    rates around the mean station count, learned weights (Dirichlet(1))."""
    return cavi.Prior(tau=0.25, alpha=1.0, beta=1.0 / float(q.stations.mean()),
                      nu=tuple(q.locations.mean(0)), rho=0.01, concentration=1.0)


def study_simulated(out: Path, log: Log) -> tuple[str, dict]:
    from sklearn.metrics import adjusted_rand_score

    means = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0]])
    rates = np.array([5.0, 15.0, 40.0, 80.0])
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    prior = cavi.Prior(tau=1.0, alpha=1.0, beta=0.05, nu=(4.0, 4.0), rho=0.01,
                       concentration=1.0)
    data, labels = cavi.sample_events(jax.random.key(0), means, rates, weights, 1.0, 2000)
    res = cavi.fit(jax.random.key(1), data, prior, 4, num_restarts=16, max_iter=300, tol=1e-8)
    found = np.asarray(res.params.responsibilities).argmax(1)
    ari = adjusted_rand_score(np.asarray(labels), found)
    order = np.argmin(((means[:, None] - np.asarray(res.params.mean)[None]) ** 2).sum(-1), 1)
    g = np.asarray(res.params.concentration)
    rates_fit = np.asarray(res.params.gamma_shape / res.params.gamma_rate)
    rows = [{"cluster": k, "true centre": str(means[k].tolist()),
             "fitted centre": str(np.round(np.asarray(res.params.mean, np.float64)[order[k]],
                                           2).tolist()),
             "true rate": rates[k],
             "fitted E[lam]": float(rates_fit[order[k]]),
             "true weight": weights[k], "fitted E[pi]": float(g[order[k]] / g.sum())}
            for k in range(4)]
    log(f"simulated: ARI {ari:.3f}, best ELBO {float(res.elbo):.1f}")

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for r, (hist, t) in enumerate(zip(np.asarray(res.elbo_history), np.asarray(res.num_iters),
                                      strict=True)):
        ax.plot(np.arange(t + 1), hist[: t + 1], lw=2 if r == int(res.best_restart) else 0.8,
                color="C3" if r == int(res.best_restart) else "0.6")
    ax.set_xlabel("sweep")
    ax.set_ylabel("ELBO")
    ax.set_ylim(np.nanpercentile(np.asarray(res.elbo_history), 5), float(res.elbo) +
                0.02 * abs(float(res.elbo)))
    ax.set_title("ELBO of 16 restarts (best in red)")
    trace = savefig(fig, out / "cavi_elbo_traces.png")

    md = (f"### Simulated data\n\n2,000 events from 4 well-separated clusters (weights "
          f"{weights.tolist()}), fitted with learned weights and 16 restarts. Adjusted Rand "
          f"index of the most probable clusters against the truth: **{ari:.3f}**; "
          f"{int(np.asarray(res.converged).sum())}/16 restarts converged (relative change "
          f"< 1e-8).\n\n{markdown_table(rows)}\n\n![ELBO traces]({trace})\n")
    numbers = {"ari": ari, "elbo": float(res.elbo), "clusters": rows,
               "restart_elbos": np.asarray(res.restart_elbos),
               "num_iters": np.asarray(res.num_iters)}
    return md, numbers


def study_quakes(out: Path, log: Log, ks: range) -> tuple[str, dict]:
    from scipy.stats import poisson

    q = load_quakes()
    prior = quakes_prior(q)
    fits = {}
    for k in ks:
        fits[k] = cavi.fit(jax.random.key(k), q, prior, k, num_restarts=32, max_iter=500,
                           tol=1e-8)
        log(f"quakes: K={k} ELBO {float(fits[k].elbo):.1f}")
    best_k = max(fits, key=lambda k: float(fits[k].elbo))
    res = fits[best_k]
    rows = [{"K": k, "ELBO": float(f.elbo),
             "gain over K-1": (float(f.elbo) - float(fits[k - 1].elbo)) if k - 1 in fits else "",
             "sweeps": int(f.num_iters[f.best_restart])} for k, f in fits.items()]

    p = res.params
    r = np.asarray(p.responsibilities)
    label = r.argmax(1)
    g = np.asarray(p.concentration)
    rate = np.asarray(p.gamma_shape / p.gamma_rate)
    fig, ax = plt.subplots(figsize=(6, 6))
    cmap = plt.get_cmap("tab10")
    for k in range(best_k):
        sel = label == k
        ax.scatter(q.long[sel], q.lat[sel], s=8 + q.stations[sel] / 6, color=cmap(k % 10),
                   alpha=0.6, label=f"{k}: {sel.sum()} events, E[lam]={rate[k]:.0f}")
    m = np.asarray(p.mean)
    ax.scatter(m[:, 1], m[:, 0], marker="X", s=160, c="k", label="posterior centres m_k")
    radius = 2.0 / np.sqrt(float(prior.tau))  # 2 sd of the within-cluster spread
    for k in range(best_k):
        ax.add_patch(plt.Circle((m[k, 1], m[k, 0]), radius, fill=False, ls="--",
                                color=cmap(k % 10)))
    ax.set_xlabel("longitude (degrees east)")
    ax.set_ylabel("latitude")
    ax.set_aspect("equal")
    ax.set_title(f"Fiji earthquakes: most probable cluster (K = {best_k})")
    ax.legend(fontsize=7, loc="lower left")
    map_png = savefig(fig, out / "cavi_quakes_map.png")

    cols = 4
    rows_fig = int(np.ceil(best_k / cols))
    fig, axes = plt.subplots(rows_fig, cols, figsize=(3 * cols, 2.4 * rows_fig), squeeze=False)
    grid = np.arange(0, q.stations.max() + 10)
    for k, ax in enumerate(axes.ravel()):
        if k >= best_k:
            ax.axis("off")
            continue
        counts = q.stations[label == k]
        ax.hist(counts, bins=np.arange(0, q.stations.max() + 6, 5), density=True,
                color=cmap(k % 10), alpha=0.6, label="stations")
        ax.plot(grid, poisson.pmf(grid, rate[k]) * 1.0, "k-", lw=1.2,
                label=f"Poisson({rate[k]:.1f})")
        ax.set_title(f"cluster {k} ({len(counts)} events)", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("Strengths (stations reporting) per cluster against the fitted Poisson")
    fig.tight_layout()
    hist_png = savefig(fig, out / "cavi_quakes_strengths.png")

    disp = [float(q.stations[label == k].var() / max(q.stations[label == k].mean(), 1e-9))
            for k in range(best_k) if (label == k).sum() > 1]
    md = (f"### The Fiji catalogue\n\n1,000 events (`vijax.data.load_quakes`), locations "
          f"(lat, long) in degrees, strength = stations reporting. Prior: clusters of about "
          f"2 degrees (tau = 0.25), rho = 0.01 around the catalogue's mean, Gamma(1, "
          f"1/{q.stations.mean():.1f}) rates, Dirichlet(1) weights; 32 restarts per K.\n\n"
          f"{markdown_table(rows)}\n\nK is chosen by the ELBO over {ks.start}..{ks.stop - 1}: "
          f"**K = {best_k}**. The ELBO still rises at the end of the range, with gains that "
          f"shrink: with the location precision fixed and strengths far more dispersed than "
          f"Poisson within any cluster (variance/mean between {min(disp):.1f} and "
          f"{max(disp):.1f}), each extra cluster buys likelihood by splitting events by "
          f"strength, so the ELBO alone does not settle on the two planes of activity that "
          f"the catalogue's documentation describes. Dashed circles are two within-cluster "
          f"standard deviations.\n\n![map]({map_png})\n\n![strengths]({hist_png})\n")
    numbers = {"elbo_by_k": {k: float(f.elbo) for k, f in fits.items()}, "chosen_k": best_k,
               "means": m, "rates": rate, "weights": g / g.sum(),
               "cluster_sizes": np.bincount(label, minlength=best_k),
               "dispersion_index": disp}
    return md, numbers


def report(out: Path, log: Log) -> dict:
    """The CAVI section of the main job: simulated recovery, the Fiji catalogue, speed."""
    sim_md, sim = study_simulated(out, log)
    quake_md, quakes = study_quakes(out, log, range(2, 9))
    rows = scaling([1_000, 10_000, 100_000], log, quick=True)
    fig = scaling_figure(rows, out / "cavi_scaling.png")
    speed_md = (f"### Speed\n\nSeconds per CAVI iteration (K = {K}, float32) against a "
                "vectorised NumPy implementation of the same updates and scikit-learn's "
                "`BayesianGaussianMixture` (spherical; locations only). A quick run; "
                "`python benchmarks/cavi.py` measures up to N = 1e6 and the restarts.\n\n"
                f"{markdown_table(rows)}\n\n![scaling]({fig})\n")
    md = ("## CAVI for the earthquake mixture model\n\n" + sim_md + "\n" + quake_md + "\n"
          + speed_md)
    return {"markdown": md, "numbers": {"simulated": sim, "quakes": quakes, "scaling": rows}}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    out = args.out or Path("benchmarks/results")
    log = Log()
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    rows = scaling(sizes, log, args.quick)
    print("\nSeconds per CAVI iteration (float32), ratios = peer time / vijax time")
    print_table(rows)
    restart = restarts(1_000, 16 if args.quick else 64, 20 if args.quick else 100, log)
    print(f"\n{restart['restarts']} restarts at N = {restart['N']:,}")
    print_table([restart])
    targets = {"vs_numpy_at_1e5 >= 30": next((r["vs_numpy"] for r in rows
                                              if r["N"] == 100_000), None),
               "vs_sklearn_at_1e5 >= 15": next((r["vs_sklearn"] for r in rows
                                                if r["N"] == 100_000), None),
               "restarts_speedup >= 10": restart["speedup"]}
    name = "cavi_quick" if args.quick else "cavi"
    fig = scaling_figure(rows, out / f"{name}_scaling.png")
    path = write_json(out / f"{name}.json", {"scaling": rows, "restarts": restart,
                                             "targets": targets, "figure": fig})
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
