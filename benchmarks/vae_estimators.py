"""Sticking the landing on the VAE: train with each gradient estimator, measure the variance
of the encoder's gradient during training, and the test likelihood at the end.

    python benchmarks/vae_estimators.py [--quick] [--out DIR] [--source SRC] [--epochs E] ...

The experiment of Roeder, Wu and Duvenaud (2017), with the doubly-reparameterised estimator of
Tucker et al. (2019) added: the same VAE (same initial parameters, data, shuffles and draws)
is trained by Adam under eight estimators: the ELBO with the total derivative and with STL,
and the importance-weighted bound with k = 5 and k = 50 samples with the total derivative, STL
and DReG. At fixed epochs, each run's estimator of the encoder's gradient is sampled
``replicates`` times on a fixed batch (``vmap`` over keys, ``vijax.vae.gradients``), giving its
total variance (trace of the covariance) and its signal-to-noise ratio (mean over parameters of
``|mean| / std``). At the end: test negative ELBO (analytic KL) and NLL by the k-sample
importance-weighted bound. The runs are trained epoch by epoch in turn, so the time per step of
each estimator (relative to the total derivative with the same k) is measured in the same
conditions.

Without ``--quick`` the default is the full size: the course's network (784-400-400-200),
all of ``mnist5k`` (or ``--source idx:/usr/share/datasets/fashion-mnist``), 50 epochs, 100
replicates, NLL with k = 5,000 on every test image (meant for a GPU).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _harness import Log, markdown_table, parser, print_table, savefig, write_json  # noqa: E402,I001
from jax.flatten_util import ravel_pytree  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from vijax.data.mnist import load_mnist  # noqa: E402
from vijax.vae import evaluate, gradients, train  # noqa: E402
from vijax.vae.models import VAE, VAEConfig  # noqa: E402

NAME = "vae_estimators"
#: (label, estimator, k): the runs, in table order.
RUNS = [("ELBO total", "total", 1), ("ELBO STL", "stl", 1),
        ("IWAE-5 total", "total", 5), ("IWAE-5 STL", "stl", 5), ("IWAE-5 DReG", "dreg", 5),
        ("IWAE-50 total", "total", 50), ("IWAE-50 STL", "stl", 50),
        ("IWAE-50 DReG", "dreg", 50)]
COLORS = {"total": "C0", "stl": "C2", "dreg": "C3"}
STYLES = {1: "-", 5: "--", 50: ":"}
TARGET_RATIO = 1.2


@dataclasses.dataclass(frozen=True)
class Settings:
    """Size of the study. ``checkpoints`` are epochs (0: the common initial parameters)."""

    config: VAEConfig
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


QUICK = Settings(config=VAEConfig(hidden=(128,), latent_dim=16), train_images=1000,
                 test_images=200, batch_size=50, epochs=15, checkpoints=(0, 1, 3, 7, 15),
                 variance_batch=20, replicates=32, chunk_size=None, nll_samples=500)
FULL = Settings(config=VAEConfig())


def _mean_snr(snr) -> float:
    flat = np.asarray(ravel_pytree(snr)[0], np.float64)
    return float(np.mean(flat[np.isfinite(flat)]))


def _norm_snr(m) -> float:
    """``||E g|| / sqrt(trace Cov g)``, with ``||E g||^2`` debiased by ``trace / R``."""
    mean = np.asarray(ravel_pytree(m.mean)[0], np.float64)
    var = float(m.variance_trace)
    signal = max(float(mean @ mean) - var / m.num_samples, 0.0)
    return float(np.sqrt(signal / var)) if var > 0 else float("inf")


def run_study(s: Settings, log) -> dict:
    """Train every run of :data:`RUNS`, measure variances at the checkpoints, evaluate."""
    data = load_mnist(s.source)
    train_x = np.round(data.train_images[: s.train_images]).astype(np.float32)
    test_x = np.round(data.test_images[: s.test_images]).astype(np.float32)
    fixed = jnp.asarray(train_x[: s.variance_batch])
    model = VAE(s.config)
    optimizer = train.adam(s.learning_rate)
    steps_per_epoch = train_x.shape[0] // s.batch_size
    # as train.fit does: state and images replicated over the mesh, so that the epoch
    # function sees the same shardings at every call (one compile per estimator)
    mesh = train.make_mesh(jax.local_devices()[:1])
    replicated = NamedSharding(mesh, PartitionSpec())
    images = jax.device_put(jnp.asarray(train_x), replicated)
    sizes = "-".join(map(str, (s.config.input_dim, *s.config.hidden, s.config.latent_dim)))
    log(f"{len(RUNS)} runs on {train_x.shape[0]} images ({data.source}), {s.epochs} epochs of "
        f"{steps_per_epoch} steps, network {sizes}")

    states = {label: jax.device_put(train.init(jax.random.PRNGKey(0), model, optimizer),
                                    replicated) for label, _, _ in RUNS}
    curves = {label: {"step": [], "variance_trace": [], "snr": [], "norm_snr": [],
                      "seconds": []}
              for label, _, _ in RUNS}
    epoch_seconds = {label: [] for label, _, _ in RUNS}
    losses = {label: [] for label, _, _ in RUNS}

    def moments(seed, params, est, k):
        return gradients.encoder_gradient_moments(
            jax.random.PRNGKey(seed), model, params, fixed, estimator=est, num_samples=k,
            num_replicates=s.replicates, chunk_size=s.chunk_size)

    def measure(epoch: int) -> None:
        for label, est, k in RUNS:
            t0 = time.perf_counter()
            m = moments(1000 + epoch, states[label].params, est, k)
            c = curves[label]
            c["step"].append(epoch * steps_per_epoch)
            c["variance_trace"].append(float(m.variance_trace))
            c["snr"].append(_mean_snr(m.snr))
            c["norm_snr"].append(_norm_snr(m))
            c["seconds"].append(time.perf_counter() - t0)

    if 0 in s.checkpoints:
        measure(0)
    for epoch in range(1, s.epochs + 1):
        for label, est, k in RUNS:  # in turn: every estimator sees the same machine load
            t0 = time.perf_counter()
            states[label], loss = train.train_epoch(
                states[label], images, model=model, optimizer=optimizer,
                batch_size=s.batch_size, estimator=(est, k), mesh=mesh)
            loss = np.asarray(loss)
            epoch_seconds[label].append(time.perf_counter() - t0)
            losses[label].append(float(loss.mean()))
            if not np.all(np.isfinite(loss)):
                raise FloatingPointError(f"{label}: non-finite loss in epoch {epoch}")
        if epoch in s.checkpoints:
            measure(epoch)
        log(f"epoch {epoch}/{s.epochs}: " + ", ".join(
            f"{label} {losses[label][-1]:.1f}" for label, _, _ in RUNS[::3]))

    # at the end, every estimator at the same parameters: those of the total-derivative run
    totals = {k: label for label, est, k in RUNS if est == "total"}
    same_point = {}
    for label, est, k in RUNS:
        m = moments(2000, states[totals[k]].params, est, k)
        same_point[label] = {"variance_trace": float(m.variance_trace), "snr": _mean_snr(m.snr),
                             "norm_snr": _norm_snr(m)}
    rows = []
    step_s = {label: float(np.median(epoch_seconds[label][1:] or epoch_seconds[label]))
              / steps_per_epoch for label, _, _ in RUNS}
    for label, _, k in RUNS:
        params = states[label].params
        t0 = time.perf_counter()
        neg_elbo = evaluate.negative_elbo_dataset(jax.random.PRNGKey(1), model, params, test_x)
        nll = float(np.mean(evaluate.iwae_nll(jax.random.PRNGKey(2), model, params, test_x,
                                              s.nll_samples)))
        log(f"{label}: test -ELBO {neg_elbo:.2f}, NLL (k={s.nll_samples}) {nll:.2f} "
            f"({time.perf_counter() - t0:.1f}s)")
        c = curves[label]
        rows.append({"estimator": label, "k": k, "steps": s.epochs * steps_per_epoch,
                     "grad variance (start)": c["variance_trace"][0],
                     "grad variance (end)": c["variance_trace"][-1],
                     "SNR (end)": c["snr"][-1], "norm SNR (end)": c["norm_snr"][-1],
                     "train loss (last epoch)": losses[label][-1],
                     "test -ELBO": neg_elbo, f"test NLL (k={s.nll_samples})": nll,
                     "ms / step": 1e3 * step_s[label],
                     "time ratio to total": step_s[label] / step_s[totals[k]]})
    return {"settings": {**dataclasses.asdict(s), "config": s.config.to_dict(),
                         "source_description": data.source,
                         "train_images": int(train_x.shape[0]),
                         "test_images": int(test_x.shape[0]),
                         "steps_per_epoch": steps_per_epoch},
            "rows": rows, "curves": curves, "same_point_end": same_point,
            "epoch_seconds": epoch_seconds,
            "train_loss": losses}


def plots(result: dict, out: Path) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    for label, est, k in RUNS:
        c = result["curves"][label]
        kw = {"color": COLORS[est], "ls": STYLES[k], "marker": "o", "ms": 3, "label": label}
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
    fig.legend(handles, labels, loc="outside lower center", ncol=8, fontsize=8)
    curves = savefig(fig, out / f"{NAME}_variance.png")

    rows = result["rows"]
    nll_key = next(key for key in rows[0] if key.startswith("test NLL"))
    fig, ax = plt.subplots(figsize=(8, 3.4))
    x = np.arange(len(rows))
    nll = np.array([r[nll_key] for r in rows])
    elbo = np.array([r["test -ELBO"] for r in rows])
    ax.bar(x - 0.2, elbo, 0.4, label="test -ELBO", color="0.7")
    ax.bar(x + 0.2, nll, 0.4, label=nll_key, color=[COLORS[e] for _, e, _ in RUNS])
    lo = min(nll.min(), elbo.min())
    ax.set_ylim(lo - 0.1 * (max(nll.max(), elbo.max()) - lo) - 1, None)
    ax.set_xticks(x, [r["estimator"] for r in rows], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("nats per image")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    bars = savefig(fig, out / f"{NAME}_nll.png")
    return curves, bars


def _compare(by: dict, k: int, column: str) -> str:
    """``"STL 0.8x, DReG 0.7x"``: ratios to the total derivative's with the same k."""
    prefix = "ELBO" if k == 1 else f"IWAE-{k}"
    base = by[f"{prefix} total"][column]
    parts = [f"{name} {by[f'{prefix} {name}'][column] / base:.2f}x"
             for name in ("STL", "DReG") if f"{prefix} {name}" in by]
    return ", ".join(parts)


def _row_values(by: dict, column: str) -> str:
    """``"k = 1: 108.2; ..."``: a column of each k's total-derivative run, then STL, DReG."""
    parts = []
    for k in (1, 5, 50):
        prefix = "ELBO" if k == 1 else f"IWAE-{k}"
        names = [n for n in ("total", "STL", "DReG") if f"{prefix} {n}" in by]
        parts.append(f"k = {k}: " + " / ".join(f"{by[f'{prefix} {n}'][column]:.1f}"
                                               for n in names))
    return "; ".join(parts)


def _markdown(result: dict, curves: str, bars: str) -> str:
    s = result["settings"]
    rows = result["rows"]
    by = {r["estimator"]: r for r in rows}
    ratios = [r["time ratio to total"] for r in rows if r["estimator"].split()[1] != "total"]
    nll_key = next(key for key in rows[0] if key.startswith("test NLL"))
    sizes = "-".join(map(str, (s["config"]["input_dim"], *s["config"]["hidden"],
                               s["config"]["latent_dim"])))
    best = min(rows, key=lambda r: r[nll_key])
    floor = np.sqrt(2 / np.pi / s["replicates"])
    quick_note = ("" if s["nll_samples"] == 5000 else
                  f" (k = {s['nll_samples']} at this quick size; 5,000 in the full run)")
    same = result["same_point_end"]
    header = ("| k | variance, start | variance, end (own run) | variance, end (same point) "
              "| norm SNR, end (same point) |")
    variance_lines = "\n".join(
        f"| {k} | {_compare(by, k, 'grad variance (start)')} | "
        f"{_compare(by, k, 'grad variance (end)')} | {_compare(same, k, 'variance_trace')} | "
        f"{_compare(same, k, 'norm_snr')} |" for k in (1, 5, 50))
    return f"""## Sticking the landing on the VAE: gradient variance and test likelihood

One VAE ({sizes}, Bernoulli pixels) trained by Adam for {rows[0]['steps']} steps of
{s['batch_size']} images ({s['train_images']} training images of {s['source']}) under eight
gradient estimators, with the same initial parameters, shuffles and draws: the ELBO with the
total derivative and with STL (Roeder et al. 2017), and the importance-weighted bound with k = 5
and 50 samples with the total derivative, STL and DReG (Tucker et al. 2019;
`vijax.vae.gradients`). At each checkpoint, each run's own estimator of the encoder's gradient
is sampled {s['replicates']} times on a fixed batch of {s['variance_batch']} training images
(one `vmap` over keys): its total variance (trace of the covariance) and its SNR, as the mean
over parameters of |mean|/std (noise floor about {floor:.2f} with {s['replicates']} replicates)
and as the debiased ||mean|| / sqrt(trace). At step 0 every run has the same parameters, so
that column compares the estimators at one point. Test set: {s['test_images']} images; -ELBO
with the analytic KL, NLL by the importance-weighted bound{quick_note}.

{markdown_table(rows)}

Encoder-gradient variance relative to the total derivative with the same k (below 1: lower
variance): at the common starting point; at the end of each run (each at its own parameters);
and at the end at the same parameters (those of the total-derivative run with that k), with
the norm SNR there (above 1: higher SNR):

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
-ELBO, which also measures how well the encoder fits (total / STL / DReG):
{_row_values(by, 'test -ELBO')} nats.

Time per step: STL and DReG are within {max(ratios):.2f}x of the total derivative with the same
k (target {TARGET_RATIO}x); each is one encoder and one decoder pass forward and backward (DReG
reweights the cotangent of z in a `custom_vjp`).

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
    args = p.parse_args(argv)
    s = QUICK if args.quick else FULL
    changes = {name: getattr(args, name) for name in ("source", "epochs", "train_images",
                                                      "test_images", "replicates",
                                                      "nll_samples")
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
