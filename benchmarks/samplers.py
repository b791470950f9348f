"""Reparameterised samplers: direct against reparameterised samples, relaxation against
temperature, and throughput against ``torch.distributions`` ``rsample``.

    python benchmarks/samplers.py [--quick] [--out DIR]

Studies (``report``): overlaid histograms of direct (NumPy) and reparameterised (vijax)
samples of Exponential(1) and of Categorical([0.1, 0.2, 0.5, 0.2]) (argmax of a Gumbel-softmax
sample at temperature 0.1), with a goodness-of-fit statistic on a large sample in each title;
how far relaxed samples are from one-hot as the temperature grows. Benchmark (``main``):
samples per second for 10 million draws of the exponential and of the relaxed categorical
(K = 10) against PyTorch's ``rsample`` (recorded as missing if torch is not importable) on as
many threads as JAX uses, and against the same transform on ``jax.random`` noise, all called
in turn over several rounds (median and min-max of the per-round ratios; load averages
recorded).
"""

from __future__ import annotations

import os
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _harness import Log, block, markdown_table, parser, print_table, savefig, write_json  # noqa: E402,I001

from vijax import samplers as S  # noqa: E402

NAME = "samplers"
PROBS = np.array([0.1, 0.2, 0.5, 0.2], dtype=np.float32)
PROBS_TEXT = "[0.1, 0.2, 0.5, 0.2]"
TARGET_RATIO = 1.5


# ----------------------------------------------------------------------------- studies


def direct_vs_reparameterised(out: Path, log, n_plot: int = 1000,
                              n_test: int = 1_000_000) -> dict:
    """Histograms of 1,000 direct and 1,000 reparameterised samples; tests on ``n_test``."""
    import matplotlib.pyplot as plt
    from scipy import stats

    rng = np.random.default_rng(0)
    key_e, key_c = jax.random.split(jax.random.key(0))
    # Exponential(1): NumPy's sampler against the inverse CDF
    direct_e = rng.exponential(1.0, n_test)
    reparam_e = np.asarray(jax.jit(partial(S.exponential, sample_shape=(n_test,)))(key_e, 1.0))
    ks2 = stats.ks_2samp(direct_e, reparam_e)
    ks1 = stats.kstest(reparam_e, stats.expon.cdf)
    # Categorical: NumPy's choice against argmax of a Gumbel-softmax sample at temperature 0.1
    direct_c = rng.choice(4, size=n_test, p=PROBS / PROBS.sum())
    relax = jax.jit(partial(S.gumbel_softmax, sample_shape=(n_test,)))
    reparam_c = np.asarray(jnp.argmax(relax(key_c, 0.1, probs=PROBS), axis=-1))
    table = np.stack([np.bincount(direct_c, minlength=4), np.bincount(reparam_c, minlength=4)])
    chi = stats.chi2_contingency(table)
    chi1 = stats.chisquare(table[1], PROBS / PROBS.sum() * n_test)
    log(f"exponential KS two-sample D={ks2.statistic:.2e} p={ks2.pvalue:.3f}; "
        f"categorical chi2={chi.statistic:.2f} p={chi.pvalue:.3f}")

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    ax = axes[0]
    bins = np.linspace(0, 7, 36)
    ax.hist(direct_e[:n_plot], bins, alpha=0.5, density=True, label="direct (NumPy)")
    ax.hist(reparam_e[:n_plot], bins, alpha=0.5, density=True,
            label="reparameterised: -log(1-u)/rate")
    ax.plot(bins, np.exp(-bins), "k--", lw=1, label="density exp(-z)")
    ax.set_xlabel("z")
    ax.legend(fontsize=8)
    ax.set_title(f"Exponential(1), {n_plot:,} each\ntwo-sample KS on {n_test:,}: "
                 f"D = {ks2.statistic:.2e}, p = {ks2.pvalue:.3f}", fontsize=9)
    ax = axes[1]
    k = np.arange(4)
    fd = np.bincount(direct_c[:n_plot], minlength=4) / n_plot
    fr = np.bincount(reparam_c[:n_plot], minlength=4) / n_plot
    ax.bar(k - 0.2, fd, 0.4, alpha=0.7, label="direct (NumPy choice)")
    ax.bar(k + 0.2, fr, 0.4, alpha=0.7, label="argmax Gumbel-softmax, temperature 0.1")
    ax.scatter(k, PROBS, color="k", marker="_", s=400, label="p", zorder=3)
    ax.set_xticks(k)
    ax.set_xlabel("category")
    ax.legend(fontsize=8)
    ax.set_title(f"Categorical({PROBS_TEXT}), {n_plot:,} each\nchi-square (2x4) on "
                 f"{n_test:,}: X2 = {chi.statistic:.2f}, p = {chi.pvalue:.3f}", fontsize=9)
    png = savefig(fig, out / f"{NAME}_direct_vs_reparameterised.png")
    return {
        "png": png, "n_test": n_test,
        "exponential_ks_two_sample": {"statistic": ks2.statistic, "pvalue": ks2.pvalue},
        "exponential_ks_exact_cdf": {"statistic": ks1.statistic, "pvalue": ks1.pvalue},
        "categorical_chi2_two_sample": {"statistic": chi.statistic, "pvalue": chi.pvalue},
        "categorical_chi2_exact_probs": {"statistic": chi1.statistic, "pvalue": chi1.pvalue},
    }


def relaxation_vs_temperature(out: Path, log, n: int = 20_000) -> dict:
    """Mean largest coordinate of Gumbel-softmax samples against temperature; simplex examples."""
    import matplotlib.pyplot as plt

    temps = np.logspace(-2, 2, 25)
    relax = jax.jit(partial(S.gumbel_softmax, sample_shape=(n,)))
    key = jax.random.key(1)
    max_coord, one_hot_frac = [], []
    for t in temps:
        y = relax(key, float(t), probs=PROBS)
        m = jnp.max(y, axis=-1)
        max_coord.append(float(jnp.mean(m)))
        one_hot_frac.append(float(jnp.mean(m > 0.99)))
    log(f"mean max coordinate {max_coord[0]:.3f} at T={temps[0]:g}, "
        f"{max_coord[-1]:.3f} at T={temps[-1]:g}")

    fig = plt.figure(figsize=(12, 3.8))
    ax = fig.add_subplot(1, 2, 1)
    ax.semilogx(temps, max_coord, "o-", ms=3, label="E[max_k y_k]")
    ax.semilogx(temps, one_hot_frac, "s-", ms=3, label="P(max_k y_k > 0.99)")
    ax.axhline(1 / len(PROBS), color="gray", ls=":", label="1/K (barycentre)")
    ax.axvline(0.1, color="C3", ls="--", lw=1, label="temperature 0.1")
    ax.set_xlabel("temperature")
    ax.set_title(f"Gumbel-softmax, p = {PROBS_TEXT}:\none-hot -> barycentre", fontsize=9)
    ax.legend(fontsize=8)
    # example samples on the 2-simplex (K = 3), in barycentric coordinates
    p3 = np.array([0.2, 0.3, 0.5], np.float32)
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    small = jax.jit(partial(S.gumbel_softmax, sample_shape=(400,)))
    examples = [0.1, 0.5, 1.0, 5.0]
    for i, t in enumerate(examples):
        ax = fig.add_subplot(2, 4, 3 + (i // 2) * 4 + (i % 2))
        xy = np.asarray(small(jax.random.key(2), t, probs=p3)) @ corners
        ax.fill(corners[:, 0], corners[:, 1], fc="none", ec="gray", lw=0.8)
        ax.scatter(xy[:, 0], xy[:, 1], s=2, alpha=0.5)
        ax.set_title(f"T = {t:g}", fontsize=8)
        ax.set_aspect("equal")
        ax.axis("off")
    png = savefig(fig, out / f"{NAME}_temperature.png")
    return {"png": png, "temperatures": temps, "mean_max_coordinate": max_coord,
            "fraction_max_above_0.99": one_hot_frac, "samples_per_temperature": n}


# ----------------------------------------------------------------------------- benchmark


def _interleaved(fns: dict, repeat: int) -> dict:
    """Seconds of each function in each of ``repeat`` rounds, the functions called in turn
    within a round (fair under a varying load), after one warm-up call each (compiles)."""
    times: dict = {name: [] for name in fns}
    for fn in fns.values():
        block(fn())
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            block(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: np.asarray(t) for name, t in times.items()}


def _spread(x: np.ndarray) -> dict:
    return {"median": float(np.median(x)), "min": float(np.min(x)), "max": float(np.max(x))}


def jax_threads() -> int:
    """The cores XLA's CPU client runs on (it uses every core of the process's affinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def throughput(n: int, log, repeat: int = 5) -> list[dict]:
    """Samples/s of vijax (jitted), of the same transform on ``jax.random`` noise, and of torch
    ``rsample`` for ``n`` draws; ratios per round (median, min, max).

    All sides are called in turn, ``repeat`` rounds; torch runs on as many threads as JAX
    (``torch.set_num_threads``), recorded as ``torch_threads``. ``jax.random`` is the baseline
    the library replaced: vijax draws the same numbers from a Threefry key (``vijax.random``),
    with the cipher fused.
    """
    k = 10
    logits = np.linspace(-1.0, 1.0, k).astype(np.float32)
    key = jax.random.key(0)
    rbg = jax.random.key(0, impl="rbg")  # XLA's RngBitGenerator: passed through to jax.random
    tiny = float(np.finfo(np.float32).tiny)
    exp_fn = jax.jit(partial(S.exponential, sample_shape=(n,)))
    rel_fn = jax.jit(partial(S.gumbel_softmax, sample_shape=(n,)))
    exp_jax = jax.jit(lambda key: -jnp.log1p(-jax.random.uniform(key, (n,))))
    rel_jax = jax.jit(lambda key: jax.nn.softmax(  # softmax((logits + Gumbel) / T)
        (logits - jnp.log(-jnp.log(jax.random.uniform(key, (n, k), minval=tiny)))) / 0.5,
        axis=-1))
    relaxed = f"relaxed categorical (K={k}, T=0.5)"
    cases = {"exponential": {"vijax": lambda: exp_fn(key, 1.0),
                             "jax.random": lambda: exp_jax(key),
                             "vijax_rbg": lambda: exp_fn(rbg, 1.0)},
             relaxed: {"vijax": lambda: rel_fn(key, 0.5, logits=logits),
                       "jax.random": lambda: rel_jax(key),
                       "vijax_rbg": lambda: rel_fn(rbg, 0.5, logits=logits)}}
    threads = jax_threads()
    torch_threads = None
    try:
        import torch

        # The peer runs where JAX runs: on the GPU when JAX has one and torch sees it.
        on_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
        device = torch.device("cuda" if on_gpu else "cpu")
        sync = torch.cuda.synchronize if on_gpu else (lambda: None)
        if not on_gpu:
            torch.set_num_threads(threads)
            torch_threads = torch.get_num_threads()
        torch.manual_seed(0)
        e = torch.distributions.Exponential(torch.tensor(1.0, device=device))
        r = torch.distributions.RelaxedOneHotCategorical(
            torch.tensor(0.5, device=device), logits=torch.from_numpy(logits).to(device))
        cases["exponential"]["torch"] = lambda: (e.rsample((n,)), sync())[0]
        cases[relaxed]["torch"] = lambda: (r.rsample((n,)), sync())[0]
        where = torch.cuda.get_device_name() if on_gpu else f"{torch_threads} threads"
        peer = f"torch {torch.__version__} ({where})"
    except ImportError:
        peer = "torch (missing)"
    rows = []
    for name, fns in cases.items():
        t = _interleaved(fns, repeat)
        tt = t.get("torch")
        row = {"sampler": name, "draws": n, "peer": peer,
               "peer samples/s": n / float(np.median(tt)) if tt is not None else None,
               "vijax samples/s": n / float(np.median(t["vijax"])),
               "ratio (vijax/peer)": float(np.median(tt / t["vijax"])) if tt is not None else None,
               "ratio min-max": (f"{np.min(tt / t['vijax']):.3g}-{np.max(tt / t['vijax']):.3g}"
                                 if tt is not None else None),
               "target": TARGET_RATIO,
               "jax.random samples/s": n / float(np.median(t["jax.random"])),
               "vijax/jax.random": float(np.median(t["jax.random"] / t["vijax"])),
               "vijax samples/s, rbg key": n / float(np.median(t["vijax_rbg"])),
               "ratio, rbg key": float(np.median(tt / t["vijax_rbg"])) if tt is not None else None,
               "seconds": {side: _spread(x) for side, x in t.items()},
               "repeats": repeat, "jax_threads": threads, "torch_threads": torch_threads}
        rows.append(row)
        log(f"{name}: vijax {row['vijax samples/s']:.3e}/s, jax.random "
            f"{row['jax.random samples/s']:.3e}/s, peer "
            f"{row['peer samples/s'] or float('nan'):.3e}/s, ratio {row['ratio (vijax/peer)']}")
    return rows


# ----------------------------------------------------------------------------- entry points


def report(out: Path, log) -> dict:
    """The report section: both studies and a 1-million-draw throughput table."""
    out.mkdir(parents=True, exist_ok=True)
    a = direct_vs_reparameterised(out, log)
    b = relaxation_vs_temperature(out, log)
    rows = throughput(1_000_000, log, repeat=3)
    ek, ec = a["exponential_ks_two_sample"], a["categorical_chi2_two_sample"]
    md = f"""## Reparameterised samplers

Direct samples (NumPy) against reparameterised ones (vijax), 1,000 of each as in the course;
the titles give a two-sample test on {a['n_test']:,} of each. Exponential(1) by the inverse CDF
`-log(1-u)/rate`: Kolmogorov-Smirnov D = {ek['statistic']:.2e}, p = {ek['pvalue']:.3f} (against the
exact CDF: p = {a['exponential_ks_exact_cdf']['pvalue']:.3f}). Categorical([0.1, 0.2, 0.5, 0.2])
as the argmax of a Gumbel-softmax sample at temperature 0.1: chi-square X2 = {ec['statistic']:.2f}
(3 d.o.f.), p = {ec['pvalue']:.3f}. The argmax is an exact categorical sample at every
temperature (Gumbel-max); large p-values say the samplers are indistinguishable at this size.

![direct vs reparameterised]({a['png']})

The relaxed samples themselves are one-hot only in the limit: the mean largest coordinate
falls from {b['mean_max_coordinate'][0]:.3f} at temperature {b['temperatures'][0]:g} to
{b['mean_max_coordinate'][-1]:.3f} at {b['temperatures'][-1]:g} (1/K = 0.25 is the barycentre);
the simplex panels (K = 3, p = [0.2, 0.3, 0.5]) show samples leaving the corners for the centre
as the temperature grows.

![relaxation vs temperature]({b['png']})

Throughput, 1 million draws (jitted vijax against `torch.distributions` `rsample`, CPU; the
full benchmark, `python benchmarks/samplers.py`, uses 10 million):

{markdown_table(rows, [c for c in rows[0] if c != "seconds"])}
"""
    return {"markdown": md, "numbers": {"direct_vs_reparameterised": a,
                                        "relaxation_vs_temperature": b, "throughput": rows}}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    out = args.out or Path(__file__).resolve().parent / "results"
    log = Log(prefix=f"{NAME}: ")
    n = 100_000 if args.quick else 10_000_000
    load_start = os.getloadavg()
    rows = throughput(n, log, repeat=3 if args.quick else 7)
    print_table(rows, [c for c in rows[0] if c != "seconds"])
    path = write_json(out / f"{NAME}.json", {
        "throughput": rows, "quick": args.quick, "jax_threads": jax_threads(),
        "torch_threads": rows[0]["torch_threads"], "load_average_start": load_start,
        "load_average_end": os.getloadavg()})
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
