"""Sticking the landing on the VAE: train with each gradient estimator, measure the variance
of the encoder's gradient during training, and the test likelihood at the end.

    python benchmarks/vae_estimators.py [--quick] [--out DIR] [--source SRC] [--epochs E] ...

The experiment of Roeder, Wu and Duvenaud (2017), with the doubly-reparameterised estimator of
Tucker et al. (2019) added: the same VAE (same initial parameters, data, shuffles and draws)
is trained by Adam under each (objective, estimator) pair of :mod:`vijax.estimators`: the ELBO
(Monte-Carlo KL) with the total derivative (``Reparam()``) and with ``STL()``, and the
importance-weighted bound ``IWAE(k)`` with k = 5 and k = 50 samples under ``Reparam()``,
``STL()`` and ``DReG()``. With ``--score`` (on at the quick size), one more group: the ELBO
with k = 5 draws under the total derivative and the two score-function estimators,
``Score(LeaveOneOut())`` (RLOO) and ``ScoreControlVariate()``. At fixed epochs, each run's
estimator of the encoder's gradient is sampled ``replicates`` times on a fixed batch
(``vijax.diagnostics.gradient_samples`` over ``vijax.vae.bound_gradient``), giving its total
variance (trace of the covariance) and its signal-to-noise ratio (mean over parameters of
``|mean| / std``). At the end: test negative ELBO (analytic KL) and NLL by the k-sample
importance-weighted bound. The runs are trained epoch by epoch in turn (the order rotated
each epoch), so the time per step of each estimator relative to the total derivative of its
group is measured in the same conditions: one paired ratio per epoch, median and quartiles
over the epochs after the first (which compiles).

Without ``--quick`` the default is the full size: the course's network (784-400-400-200),
all of ``mnist5k`` (or ``--source idx:/usr/share/datasets/fashion-mnist``), 50 epochs, 100
replicates, NLL with k = 5,000 on every test image (meant for a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _harness import Log, markdown_table, parser, print_table, savefig, write_json  # noqa: E402,I001
from jax.flatten_util import ravel_pytree  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from vijax import diagnostics as D  # noqa: E402
from vijax import estimators as E  # noqa: E402
from vijax import vae  # noqa: E402
from vijax.data import load_mnist  # noqa: E402

NAME = "vae_estimators"


class Run(NamedTuple):
    """One training run: ``label`` is ``f"{group} {name}"``."""

    group: str  # runs of a group share the objective; their "total" run is the reference
    name: str
    objective: Any
    estimator: Any

    @property
    def label(self) -> str:
        return f"{self.group} {self.name}"

    @property
    def k(self) -> int:
        return self.objective.num_samples


#: The reparameterisation runs, in table order.
RUNS = [Run("ELBO", "total", E.ELBO(), E.Reparam()), Run("ELBO", "STL", E.ELBO(), E.STL()),
        Run("IWAE-5", "total", E.IWAE(5), E.Reparam()),
        Run("IWAE-5", "STL", E.IWAE(5), E.STL()),
        Run("IWAE-5", "DReG", E.IWAE(5), E.DReG()),
        Run("IWAE-50", "total", E.IWAE(50), E.Reparam()),
        Run("IWAE-50", "STL", E.IWAE(50), E.STL()),
        Run("IWAE-50", "DReG", E.IWAE(50), E.DReG())]
#: The score-function group (``Settings.score``): the ELBO with 5 draws.
SCORE_RUNS = [Run("ELBO-5", "total", E.ELBO(5), E.Reparam()),
              Run("ELBO-5", "RLOO", E.ELBO(5), E.Score(E.LeaveOneOut())),
              Run("ELBO-5", "CV", E.ELBO(5), E.ScoreControlVariate())]
GROUPS = ["ELBO", "IWAE-5", "IWAE-50", "ELBO-5"]
NAMES = ["total", "STL", "DReG", "RLOO", "CV"]
COLORS = {"total": "C0", "STL": "C2", "DReG": "C3", "RLOO": "C1", "CV": "C4"}
STYLES = {"ELBO": "-", "IWAE-5": "--", "IWAE-50": ":", "ELBO-5": "-."}
TARGET_RATIO = 1.2


@dataclasses.dataclass(frozen=True)
class Settings:
    """Size of the study. ``checkpoints`` are epochs (0: the common initial parameters)."""

    config: vae.VAEConfig
    source: str = "mnist5k"
    train_images: int | None = None  # None: all
    test_images: int | None = None
    batch_size: int = 100
    epochs: int = 50
    checkpoints: tuple[int, ...] = (0, 1, 2, 5, 10, 20, 50)
    learning_rate: float = 1e-3
    variance_batch: int = 100
    replicates: int = 100
    chunk_size: int | None = 10
    nll_samples: int = 5000
    score: bool = False  # the score-function group (SCORE_RUNS)


QUICK = Settings(config=vae.VAEConfig(hidden=(128,), latent_dim=16), train_images=1000,
                 test_images=200, batch_size=50, epochs=15, checkpoints=(0, 1, 3, 7, 15),
                 variance_batch=20, replicates=32, chunk_size=None, nll_samples=500,
                 score=True)
FULL = Settings(config=vae.VAEConfig())


def runs_of(s: Settings) -> list[Run]:
    return RUNS + (SCORE_RUNS if s.score else [])


def _norm_snr(m: D.GradientMoments) -> float:
    """``||E g|| / sqrt(trace Cov g)``, with ``||E g||^2`` debiased by ``trace / R``."""
    mean = np.asarray(ravel_pytree(m.mean)[0], np.float64)
    var = float(m.variance_trace)
    signal = max(float(mean @ mean) - var / m.num_samples, 0.0)
    return float(np.sqrt(signal / var)) if var > 0 else float("inf")


def _encoder_gradient(key, params, *, model, x, objective, estimator):
    """One estimate of the encoder's gradient of the batch-mean objective on ``x``."""
    return vae.bound_gradient(key, model, params, x, objective=objective,
                              estimator=estimator)[1]["encoder"]


def _quartiles(values: list[float]) -> dict[str, float]:
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return {"median": float(q50), "q25": float(q25), "q75": float(q75),
            "min": float(np.min(values)), "max": float(np.max(values)), "n": len(values)}


def run_study(s: Settings, log) -> dict:
    """Train every run, measure variances at the checkpoints, time the steps, evaluate."""
    runs = runs_of(s)
    data = load_mnist(s.source)
    train_x = np.round(data.train_images[: s.train_images]).astype(np.float32)
    test_x = np.round(data.test_images[: s.test_images]).astype(np.float32)
    fixed = jnp.asarray(train_x[: s.variance_batch])
    model = vae.VAE(s.config)
    optimizer = optax.adam(s.learning_rate)  # one object: the epoch functions are cached on it
    steps_per_epoch = train_x.shape[0] // s.batch_size
    # as vae.fit does: state and images replicated over the mesh, so that the epoch
    # function sees the same shardings at every call (one compile per estimator)
    mesh = vae.make_mesh(jax.local_devices()[:1])
    replicated = NamedSharding(mesh, PartitionSpec())
    images = jax.device_put(jnp.asarray(train_x), replicated)
    sizes = "-".join(map(str, (s.config.input_dim, *s.config.hidden, s.config.latent_dim)))
    log(f"{len(runs)} runs on {train_x.shape[0]} images ({data.source}), {s.epochs} epochs of "
        f"{steps_per_epoch} steps, network {sizes}")

    states = {r.label: jax.device_put(vae.init(jax.random.PRNGKey(0), model, optimizer,
                                               r.estimator), replicated) for r in runs}
    # one gradient function per run, made once: gradient_samples compiles once per function
    grad_fns = {r.label: functools.partial(_encoder_gradient, model=model, x=fixed,
                                           objective=r.objective, estimator=r.estimator)
                for r in runs}
    curves = {r.label: {"step": [], "variance_trace": [], "snr": [], "norm_snr": [],
                        "group_variance": [], "seconds": []} for r in runs}
    epoch_seconds = {r.label: [] for r in runs}
    losses = {r.label: [] for r in runs}

    def moments(seed: int, params, run: Run) -> D.GradientMoments:
        samples = D.gradient_samples(jax.random.PRNGKey(seed), grad_fns[run.label], params,
                                     s.replicates, chunk_size=s.chunk_size)
        return D.gradient_moments(samples)

    def measure(epoch: int) -> None:
        for r in runs:
            t0 = time.perf_counter()
            m = moments(1000 + epoch, states[r.label].params, r)
            c = curves[r.label]
            c["step"].append(epoch * steps_per_epoch)
            c["variance_trace"].append(float(m.variance_trace))
            c["snr"].append(float(m.mean_snr))
            c["norm_snr"].append(_norm_snr(m))
            c["group_variance"].append({g: float(v) for g, v in m.group_variance.items()})
            c["seconds"].append(time.perf_counter() - t0)

    if 0 in s.checkpoints:
        measure(0)
    for epoch in range(1, s.epochs + 1):
        shift = (epoch - 1) % len(runs)  # in turn, the order rotated: the same machine load
        for r in runs[shift:] + runs[:shift]:
            t0 = time.perf_counter()
            states[r.label], loss = vae.train_epoch(
                states[r.label], images, model=model, optimizer=optimizer,
                batch_size=s.batch_size, objective=r.objective, estimator=r.estimator,
                mesh=mesh)
            loss = np.asarray(loss)
            epoch_seconds[r.label].append(time.perf_counter() - t0)
            losses[r.label].append(float(loss.mean()))
            if not np.all(np.isfinite(loss)):
                raise FloatingPointError(f"{r.label}: non-finite loss in epoch {epoch}")
        if epoch in s.checkpoints:
            measure(epoch)
        log(f"epoch {epoch}/{s.epochs}: " + ", ".join(
            f"{r.label} {losses[r.label][-1]:.1f}" for r in runs if r.name == "total"))

    # at the end, every estimator at the same parameters: those of its group's total run
    totals = {r.group: r.label for r in runs if r.name == "total"}
    same_point = {}
    for r in runs:
        m = moments(2000, states[totals[r.group]].params, r)
        same_point[r.label] = {"variance_trace": float(m.variance_trace),
                               "snr": float(m.mean_snr), "norm_snr": _norm_snr(m)}
    # time per step: the epoch's time over its steps, after the first epoch (compilation);
    # the ratio to the group's total derivative is paired by epoch (same machine state)
    timed = slice(1, None) if s.epochs > 1 else slice(None)
    step_s = {label: float(np.median(t[timed])) / steps_per_epoch
              for label, t in epoch_seconds.items()}
    timing = {}
    for r in runs:
        own, ref = epoch_seconds[r.label][timed], epoch_seconds[totals[r.group]][timed]
        timing[r.label] = {
            "ms_per_step": _quartiles([1e3 * t / steps_per_epoch for t in own]),
            "ratio_to_total": _quartiles([a / b for a, b in zip(own, ref, strict=True)])}
    rows = []
    for r in runs:
        params = states[r.label].params
        t0 = time.perf_counter()
        neg_elbo = vae.negative_elbo_dataset(jax.random.PRNGKey(1), model, params, test_x)
        nll = float(np.mean(vae.iwae_nll(jax.random.PRNGKey(2), model, params, test_x,
                                         s.nll_samples)))
        log(f"{r.label}: test -ELBO {neg_elbo:.2f}, NLL (k={s.nll_samples}) {nll:.2f} "
            f"({time.perf_counter() - t0:.1f}s)")
        c = curves[r.label]
        ratio = timing[r.label]["ratio_to_total"]
        first, last = (0, -1) if c["step"] else (None, None)  # no checkpoints: no variance
        rows.append({"estimator": r.label, "k": r.k, "steps": s.epochs * steps_per_epoch,
                     "grad variance (start)": _at(c["variance_trace"], first),
                     "grad variance (end)": _at(c["variance_trace"], last),
                     "SNR (end)": _at(c["snr"], last), "norm SNR (end)": _at(c["norm_snr"], last),
                     "train loss (last epoch)": losses[r.label][-1],
                     "test -ELBO": neg_elbo, f"test NLL (k={s.nll_samples})": nll,
                     "ms / step": 1e3 * step_s[r.label],
                     "time ratio to total": ratio["median"],
                     "ratio IQR": f"{ratio['q25']:.2f}-{ratio['q75']:.2f}"})
    return {"settings": {**dataclasses.asdict(s), "config": s.config.to_dict(),
                         "source_description": data.source,
                         "train_images": int(train_x.shape[0]),
                         "test_images": int(test_x.shape[0]),
                         "steps_per_epoch": steps_per_epoch},
            "runs": {r.label: {"objective": repr(r.objective), "estimator": repr(r.estimator)}
                     for r in runs},
            "rows": rows, "curves": curves, "same_point_end": same_point,
            "timing": timing, "epoch_seconds": epoch_seconds, "train_loss": losses}


def _at(values: list, index: int | None):
    return None if index is None else values[index]


def _run(label: str) -> Run:
    return next(r for r in RUNS + SCORE_RUNS if r.label == label)


def plots(result: dict, out: Path) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    for label, c in result["curves"].items():
        r = _run(label)
        kw = {"color": COLORS[r.name], "ls": STYLES[r.group], "marker": "o", "ms": 3,
              "label": label}
        axes[0].plot(c["step"], c["variance_trace"], **kw)
        axes[1].plot(c["step"], c["snr"], **kw)
        axes[2].plot(c["step"], c["norm_snr"], **kw)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("total variance of the encoder gradient")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("mean SNR over encoder parameters")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("||mean|| / sqrt(total variance)")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6),
               fontsize=8)
    curves = savefig(fig, out / f"{NAME}_variance.png")

    rows = result["rows"]
    nll_key = next(key for key in rows[0] if key.startswith("test NLL"))
    fig, ax = plt.subplots(figsize=(max(8, 0.75 * len(rows)), 3.4))
    x = np.arange(len(rows))
    nll = np.array([r[nll_key] for r in rows])
    elbo = np.array([r["test -ELBO"] for r in rows])
    ax.bar(x - 0.2, elbo, 0.4, label="test -ELBO", color="0.7")
    ax.bar(x + 0.2, nll, 0.4, label=nll_key,
           color=[COLORS[_run(r["estimator"]).name] for r in rows])
    lo = min(nll.min(), elbo.min())
    ax.set_ylim(lo - 0.1 * (max(nll.max(), elbo.max()) - lo) - 1, None)
    ax.set_xticks(x, [r["estimator"] for r in rows], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("nats per image")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    bars = savefig(fig, out / f"{NAME}_nll.png")
    return curves, bars


def _groups(by: dict) -> list[str]:
    return [g for g in GROUPS if f"{g} total" in by]


def _compare(by: dict, group: str, column: str) -> str:
    """``"STL 0.80x, DReG 0.70x"``: ratios to the group's total derivative's."""
    base = by[f"{group} total"][column]
    return ", ".join(f"{name} {by[f'{group} {name}'][column] / base:.2f}x"
                     for name in NAMES[1:] if f"{group} {name}" in by)


def _row_values(by: dict, column: str) -> str:
    """``"ELBO: 108.2 / 107.6; ..."``: a column of each group's runs, total first."""
    parts = []
    for g in _groups(by):
        names = [n for n in NAMES if f"{g} {n}" in by]
        parts.append(f"{g} ({' / '.join(names)}): " + " / ".join(
            f"{by[f'{g} {n}'][column]:.1f}" for n in names))
    return "; ".join(parts)


def _ratios(result: dict, names: tuple[str, ...]) -> str:
    """``"IWAE-5 STL 1.01x (0.98-1.03)"``: median paired time ratios and their quartiles."""
    parts = []
    for label, t in result["timing"].items():
        if _run(label).name in names:
            q = t["ratio_to_total"]
            parts.append(f"{label} {q['median']:.2f}x ({q['q25']:.2f}-{q['q75']:.2f})")
    return "; ".join(parts)


def _markdown(result: dict, curves: str, bars: str) -> str:
    s = result["settings"]
    rows = result["rows"]
    by = {r["estimator"]: r for r in rows}
    groups = _groups(by)
    path_ratios = [t["ratio_to_total"]["median"] for label, t in result["timing"].items()
                   if _run(label).name in ("STL", "DReG")]
    nll_key = next(key for key in rows[0] if key.startswith("test NLL"))
    sizes = "-".join(map(str, (s["config"]["input_dim"], *s["config"]["hidden"],
                               s["config"]["latent_dim"])))
    best = min(rows, key=lambda r: r[nll_key])
    floor = np.sqrt(2 / np.pi / s["replicates"])
    quick_note = ("" if s["nll_samples"] == 5000 else
                  f" (k = {s['nll_samples']} at this quick size; 5,000 in the full run)")
    same = result["same_point_end"]
    header = ("| group | variance, start | variance, end (own run) | variance, end (same point) "
              "| norm SNR, end (same point) |")
    variance_lines = "\n".join(
        f"| {g} | {_compare(by, g, 'grad variance (start)')} | "
        f"{_compare(by, g, 'grad variance (end)')} | {_compare(same, g, 'variance_trace')} | "
        f"{_compare(same, g, 'norm_snr')} |" for g in groups)
    score_text = ""
    if "ELBO-5" in groups:
        def times(column: str, table: dict, name: str) -> str:
            return f"{table[f'ELBO-5 {name}'][column] / table['ELBO-5 total'][column]:.2g}x"

        score_text = f"""
The score-function group (ELBO with k = 5 draws, Monte-Carlo KL): the total derivative against
`Score(LeaveOneOut())` (RLOO: each draw's baseline is the mean learning signal of the other
four) and `ScoreControlVariate()` (the path derivative minus the score term times its
leave-one-out optimal coefficient, per coordinate of q's parameters). With a
{s['config']['latent_dim']}-d latent, RLOO's encoder-gradient variance is
{times('grad variance (start)', by, 'RLOO')} the total derivative's at the start and
{times('variance_trace', same, 'RLOO')} at the end (same point); the control variate's
{times('grad variance (start)', by, 'CV')} and {times('variance_trace', same, 'CV')}.
Time per step relative to the total derivative with k = 5:
{_ratios(result, ("RLOO", "CV"))} (the control variate takes two more backward passes for
its per-draw path and score terms).
"""
    return f"""## Sticking the landing on the VAE: gradient variance and test likelihood

One VAE ({sizes}, Bernoulli pixels) trained by Adam for {rows[0]['steps']} steps of
{s['batch_size']} images ({s['train_images']} training images of {s['source']}) under
{len(rows)} gradient estimators, with the same initial parameters, shuffles and draws: the
ELBO (Monte-Carlo KL) with the total derivative and with STL (Roeder et al. 2017), and the
importance-weighted bound with k = 5 and 50 samples with the total derivative, STL and DReG
(Tucker et al. 2019){", and a score-function group" if "ELBO-5" in groups else ""}
(`vijax.estimators`: `Reparam()`, `STL()`, `DReG()`, ...; `vijax.vae.train_epoch`). At each
checkpoint, each run's own estimator of the encoder's gradient is sampled {s['replicates']}
times on a fixed batch of {s['variance_batch']} training images
(`vijax.diagnostics.gradient_samples` over `vijax.vae.bound_gradient`, one `vmap` over keys):
its total variance
(trace of the covariance) and its SNR, as the mean over parameters of |mean|/std (noise
floor about {floor:.2f} with {s['replicates']} replicates) and as the debiased
||mean|| / sqrt(trace). At step 0 every run has the same parameters, so that column compares
the estimators at one point. Test set: {s['test_images']} images; -ELBO with the analytic
KL, NLL by the importance-weighted bound{quick_note}.

{markdown_table(rows)}

Encoder-gradient variance relative to the total derivative of the same group (below 1: lower
variance): at the common starting point; at the end of each run (each at its own parameters);
and at the end at the same parameters (those of the group's total-derivative run), with the
norm SNR there (above 1: higher SNR):

{header}
|---|---|---|---|---|
{variance_lines}

Theory to read this against: STL and the total derivative have the same mean for the ELBO, and
STL's variance vanishes as q approaches the exact posterior, so its advantage should grow as
training proceeds; far from the posterior the score term can act as a control variate and the
total derivative can be the lower one. For k > 1, STL is biased (its mean is not the bound's
gradient) and DReG is the unbiased fix. The best test NLL here is {best['estimator']}
({best[nll_key]:.2f} nats); training on a larger k costs k times the decoder work. This is one
seed: small differences between estimators with the same k are not established by it. Test
-ELBO, which also measures how well the encoder fits:
{_row_values(by, 'test -ELBO')} nats.

Time per step, as the ratio to the total derivative of the same group, paired by epoch (the
runs are trained epoch by epoch in turn) with its median and quartiles over
{result['timing'][rows[0]['estimator']]['ratio_to_total']['n']} epochs:
{_ratios(result, ("STL", "DReG"))}. STL and DReG are within {max(path_ratios):.2f}x of the
total derivative (target {TARGET_RATIO}x); each is one encoder and one decoder pass forward
and backward (DReG reweights the cotangent of z in a `custom_vjp`).
{score_text}
![variance and SNR over training]({curves})

![test -ELBO and NLL]({bars})
"""


def report(out: Path, log) -> dict:
    """The report section at the quick size (about a minute on 2 CPU cores)."""
    out.mkdir(parents=True, exist_ok=True)
    result = run_study(QUICK, log)
    curves, bars = plots(result, out)
    return {"markdown": _markdown(result, curves, bars), "numbers": result}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--source", default=None,
                   help="mnist5k (default), mnist, or idx:/folder (e.g. "
                        "idx:/usr/share/datasets/fashion-mnist)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--replicates", type=int, default=None)
    p.add_argument("--nll-samples", type=int, default=None)
    p.add_argument("--checkpoints", type=int, nargs="*", default=None,
                   help="epochs at which to measure the gradient variance")
    p.add_argument("--score", action=argparse.BooleanOptionalAction, default=None,
                   help="the score-function group (default: on with --quick, off otherwise)")
    args = p.parse_args(argv)
    s = QUICK if args.quick else FULL
    changes = {name: getattr(args, name) for name in ("source", "epochs", "train_images",
                                                      "test_images", "replicates",
                                                      "nll_samples", "score")
               if getattr(args, name) is not None}
    if args.checkpoints is not None:
        changes["checkpoints"] = tuple(args.checkpoints)
    s = dataclasses.replace(s, **changes)
    if args.epochs is not None and args.checkpoints is None:
        s = dataclasses.replace(s, checkpoints=tuple(
            c for c in s.checkpoints if c <= s.epochs) + ((s.epochs,) if s.epochs not in
                                                          s.checkpoints else ()))
    out = args.out or Path("benchmarks/results")
    log = Log(prefix=f"{NAME}: ")
    result = run_study(s, log)
    plots(result, out)
    print_table(result["rows"])
    write_json(out / f"{NAME}.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
