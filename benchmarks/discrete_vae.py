"""Discrete latents: the VAE comparison of Jang, Gu and Poole (2017, Table 1), and the toy
problem of Grathwohl et al. (2018, RELAX).

    python benchmarks/discrete_vae.py [--quick] [--out DIR] [--sources SRC ...] [--epochs E] ...

Two VAEs with Jang et al.'s architecture (encoder 784-512-256, ReLU, decoder the reverse,
Bernoulli pixels, a uniform prior): 200 Bernoulli units, and 20 categorical variables of 10
classes. Each is trained by Adam (1e-3, batch 100) on the one-sample ELBO with the exact KL to
the prior (``ELBO(kl="analytic")``) under every gradient estimator for discrete latents of
:mod:`vijax.estimators`:

- the score function with NVIL's input-dependent baseline (``Score(Learned(...))``, the
  paper's "SF") and with the leave-one-out baseline over k = 2 draws (``Score(LeaveOneOut())``
  on ``ELBO(2)``, RLOO);
- straight-through (``StraightThrough(1.0)``, Bengio et al. 2013) and annealed ST
  (``StraightThrough(Anneal(...))``);
- Gumbel-softmax and ST Gumbel-softmax with Jang et al.'s schedule
  ``tau = max(0.5, exp(-r t))`` updated every N steps (``Anneal(rate=1e-4, every=500)``);
- REBAR and RELAX (Tucker et al. 2017; Grathwohl et al. 2018), unbiased, with their control
  variates fitted to minimise the variance.

All runs of one seed start from the same parameters and see the same shuffles and binarised
images (training images are binarised afresh at every step, ``dynamic``; the test images once,
with a fixed key). The paper's headline rows are trained with ``seeds`` seeds each, REBAR and
RELAX with ``extra_seeds``. Every model is evaluated as the discrete model it is (the
Gumbel-softmax rows trained the relaxed objective): test negative log-likelihood by the
importance-weighted bound with k = 1,000 draws (``vijax.vae.iwae_nll``: "the bound with
m = 1000") and the one-sample negative ELBO (``vijax.vae.negative_elbo_dataset``); the orderings
are tested in both. Along training, the
encoder's gradient of the seed-0 run is sampled ``replicates`` times on a fixed batch
(``vijax.diagnostics.gradient_samples`` over ``vijax.vae.bound_gradient``): its total variance
and its SNR (mean and median over parameters); at the end, every estimator is also sampled at
the same parameters (those of the Gumbel-softmax run). The runs are trained epoch by epoch in
turn (order rotated each epoch), so the time of a training step relative to the Gumbel-softmax
step of the same seed is paired by epoch: the median and quartiles over the epochs after the
first ``timing_skip``.

The toy problem: maximise ``E_{b ~ Bernoulli(theta)}[-(b - t)^2]`` (``vijax.vi``,
``Expectation(1)``, logit parameter, Adam) for t = 0.45 and t = 0.499, where the optimum is
theta = 0 and the two outcomes differ by ``1 - 2t``; the learning curve of theta and the
variance of the gradient along training for the score function (no baseline), REBAR, RELAX and
Gumbel-softmax (temperature 0.5).

A run that reaches a non-finite loss is stopped there and reported (the step), not restarted.
``--anneal-rate R --anneal-every N --tag T`` runs the same study with another schedule (for
a run as short as this one, Jang et al.'s r = 1e-4 leaves the temperature above 0.9) and
writes ``discrete_vae_T*``.

Sources: ``mnist5k`` by default (4,000 training and 1,000 test images); the others
(``idx:/usr/share/datasets/fashion-mnist`` from Debian's ``dataset-fashion-mnist``, TFDS's
``mnist`` when downloaded) are probed and recorded, and run with ``--sources``. Full size: about
12 minutes on 2 CPU cores for mnist5k; ``--quick`` (the report's section) about a minute.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
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
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from vijax import diagnostics as D  # noqa: E402
from vijax import estimators as E  # noqa: E402
from vijax import vae, vi  # noqa: E402
from vijax.data import binarize, load_mnist  # noqa: E402
from vijax.families import Bernoulli  # noqa: E402
from vijax.samplers import anneal_temperature  # noqa: E402

NAME = "discrete_vae"

#: Jang, Gu, Poole (2017), Table 1, VAE rows: test negative ELBO (m = 1000) on binarised MNIST.
PAPER = {"bernoulli": {"SF": 112.2, "ST": 116.0, "annealed ST": 111.5, "Gumbel-softmax": 105.0,
                       "ST Gumbel-softmax": 111.5},
         "categorical": {"SF": 110.6, "ST": 110.9, "annealed ST": 107.8,
                         "Gumbel-softmax": 101.5, "ST Gumbel-softmax": 107.8}}
PAPER_ROWS = ["SF", "ST", "annealed ST", "Gumbel-softmax", "ST Gumbel-softmax"]

#: Jang et al.'s networks: encoder 784-512-256 (ReLU), decoder 256-512-784.
MODELS = {
    "bernoulli": vae.VAEConfig(hidden=(512, 256), latent_dim=200, latent="bernoulli",
                               activation="relu"),
    "categorical": vae.VAEConfig(hidden=(512, 256), latent_dim=20, latent="categorical",
                                 categories=10, activation="relu"),
}
LATENT_SIZE = 200  # values of the logits per image in both models (200, and 20 x 10)

# One object each: the compiled epoch functions are cached on the optimizer and estimator.
OPTIMIZER = optax.adam(1e-3)
CONTROL_OPTIMIZER = optax.adam(1e-3)  # NVIL's baseline, REBAR's and RELAX's control variates
#: Jang et al.: tau = max(0.5, exp(-r t)), t updated every N steps, r in {1e-5, 1e-4}, N in
#: {500, 1000}.
SCHEDULE = E.Anneal(rate=1e-4, min_temperature=0.5, initial=1.0, every=500)
ELBO1 = E.ELBO(kl="analytic")


class Row(NamedTuple):
    """One estimator of the comparison; ``paper``: the row of Jang et al.'s Table 1."""

    name: str
    objective: Any
    estimator: Any
    paper: str | None
    headline: bool  # trained with Settings.seeds seeds (else Settings.extra_seeds)


def make_rows(schedule: E.Anneal = SCHEDULE) -> list[Row]:
    """The estimators, in table order, with ``schedule`` for the annealed ones."""
    return [
        Row("SF (NVIL)", ELBO1, E.Score(E.Learned(CONTROL_OPTIMIZER, num_inputs=LATENT_SIZE)),
            "SF", True),
        Row("SF (RLOO, k=2)", E.ELBO(2, kl="analytic"), E.Score(E.LeaveOneOut()), "SF", True),
        Row("ST", ELBO1, E.StraightThrough(1.0), "ST", True),
        Row("annealed ST", ELBO1, E.StraightThrough(schedule), "annealed ST", True),
        Row("Gumbel-softmax", ELBO1, E.GumbelSoftmax(schedule), "Gumbel-softmax", True),
        Row("ST Gumbel-softmax", ELBO1, E.STGumbelSoftmax(schedule), "ST Gumbel-softmax",
            True),
        Row("REBAR", ELBO1, E.REBAR(CONTROL_OPTIMIZER), None, False),
        Row("RELAX", ELBO1, E.RELAX(CONTROL_OPTIMIZER, num_latents=LATENT_SIZE, hidden=32),
            None, False),
    ]


ROWS = make_rows()
#: Sampled only at the common end point (variance reference: no baseline at all).
NO_BASELINE = Row("SF (no baseline)", ELBO1, E.Score(), None, False)
REFERENCE = "Gumbel-softmax"  # the step every other step is timed against
#: The paper's row that stands for "SF" in the orderings.
SF_ROW = "SF (NVIL)"
#: Targets on the step time relative to Gumbel-softmax (categorical VAE, CPU).
TARGETS = {"SF (NVIL)": 1.5, "SF (RLOO, k=2)": 1.5, "ST": 1.5, "annealed ST": 1.5,
           "ST Gumbel-softmax": 1.5, "REBAR": 3.0, "RELAX": 3.0}
COLORS = {"SF (NVIL)": "C1", "SF (RLOO, k=2)": "C5", "ST": "C7", "annealed ST": "C8",
          "Gumbel-softmax": "C0", "ST Gumbel-softmax": "C9", "REBAR": "C3", "RELAX": "C2",
          "SF (no baseline)": "k"}
SOURCES = ("mnist5k", "idx:/usr/share/datasets/fashion-mnist", "mnist")
TEST_BINARIZATION_SEED = 20170101
VARIANCE_BATCH_SEED = 7


@dataclasses.dataclass(frozen=True)
class Settings:
    """Size of the study (``checkpoints``: epochs at which the variance is sampled)."""

    sources: tuple[str, ...] = ("mnist5k",)
    rows: tuple[str, ...] = tuple(r.name for r in ROWS)
    seeds: int = 3
    extra_seeds: int = 1
    train_images: int | None = None  # None: all
    test_images: int | None = None  # negative ELBO on these
    nll_images: int | None = 500  # the k-sample bound on the first ones of those
    nll_samples: int = 1000
    nll_chunk: int = 25
    batch_size: int = 100
    epochs: int = 25
    checkpoints: tuple[int, ...] = (0, 1, 3, 6, 12, 25)
    variance_batch: int = 100
    replicates: int = 50
    same_point: bool = True
    timing_skip: int = 3  # epochs left out of the timing: compilation (REBAR, RELAX: 3)
    toy_steps: int = 5000
    toy_every: int = 250
    toy_replicates: int = 500
    toy_seeds: int = 5
    toy_learning_rate: float = 1e-2
    toy: bool = True
    anneal_rate: float = SCHEDULE.rate  # Jang et al.'s schedule (SCHEDULE) by default
    anneal_every: int = SCHEDULE.every
    tag: str = ""  # output names: discrete_vae{_tag}

    @property
    def schedule(self) -> E.Anneal:
        return dataclasses.replace(SCHEDULE, rate=self.anneal_rate, every=self.anneal_every)


QUICK = Settings(rows=("SF (NVIL)", "ST", "Gumbel-softmax"), seeds=1, train_images=2000,
                 test_images=500, nll_images=200, nll_samples=100, epochs=3, checkpoints=(0, 3),
                 variance_batch=50, replicates=16, same_point=False, timing_skip=1,
                 toy_steps=300, toy_every=150, toy_replicates=100, toy_seeds=2)
FULL = Settings()


# --------------------------------------------------------------------------- data


def source_status(source: str) -> str | None:
    """None when ``load_mnist(source)`` can load it here, else why not."""
    if source.startswith("idx:") and not Path(source[4:]).is_dir():
        return (f"folder {source[4:]} not present (Debian package dataset-fashion-mnist not "
                "installed)")
    try:
        load_mnist(source, download=False) if source == "mnist" else load_mnist(source)
    except Exception as e:  # noqa: BLE001 - any failure means: not available here
        return f"{type(e).__name__}: {str(e)[:200]}"
    return None


def _slug(source: str) -> str:
    return "" if source == "mnist5k" else "_" + "".join(
        c if c.isalnum() else "-" for c in source.split("/")[-1]).strip("-")


class Data(NamedTuple):
    train: np.ndarray  # grey levels in [0, 1], binarised at every step
    test: np.ndarray  # binarised once
    variance_batch: np.ndarray  # binarised once
    description: str


def load(source: str, s: Settings) -> Data:
    data = load_mnist(source, download=False) if source == "mnist" else load_mnist(source)
    train = np.asarray(data.train_images[: s.train_images], np.float32)
    test = np.asarray(binarize(data.test_images[: s.test_images], "dynamic",
                               key=jax.random.PRNGKey(TEST_BINARIZATION_SEED)))
    fixed = np.asarray(binarize(train[: s.variance_batch], "dynamic",
                                key=jax.random.PRNGKey(VARIANCE_BATCH_SEED)))
    return Data(train, test, fixed, data.source)


# --------------------------------------------------------------------------- VAE study


def _encoder_gradient(key, params_and_state, *, model, x, objective, estimator):
    """One estimate of the encoder's gradient of the batch-mean objective on ``x``."""
    params, state = params_and_state
    return vae.bound_gradient(key, model, params, x, objective=objective, estimator=estimator,
                              state=state)[1]["encoder"]


def _quartiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "q25": float("nan"), "q75": float("nan"), "n": 0}
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return {"median": float(q50), "q25": float(q25), "q75": float(q75),
            "min": float(np.min(values)), "max": float(np.max(values)), "n": len(values)}


def _median_snr(m: D.GradientMoments) -> float:
    """The median of ``|mean| / std`` over the parameters whose gradient varies (``std > 0``;
    the weights of pixels that are 0 in the whole batch have none): the mean SNR is dominated by
    the coordinates whose gradient is nearly deterministic."""
    snr = np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree.leaves(m.snr)])
    se = np.concatenate([np.ravel(np.asarray(v)) for v in jax.tree.leaves(m.standard_error)])
    snr = snr[(se > 0) & np.isfinite(snr)]
    return float(np.median(snr)) if snr.size else float("nan")


def _temperature(schedule: E.Anneal, step: int) -> float:
    return float(anneal_temperature(step, schedule.rate, schedule.min_temperature,
                                    schedule.initial, schedule.every))


def _mean_sd(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else float("nan"))


def run_model(latent: str, data: Data, s: Settings, log) -> dict:
    """Train every (row, seed) of one model in turn, sample variances, time, evaluate."""
    rows = [r for r in make_rows(s.schedule) if r.name in s.rows]
    model = vae.VAE(MODELS[latent])
    mesh = vae.make_mesh(jax.local_devices()[:1])
    replicated = NamedSharding(mesh, PartitionSpec())  # as vae.fit: one compile per estimator
    images = jax.device_put(jnp.asarray(data.train), replicated)
    fixed = jnp.asarray(data.variance_batch)
    steps_per_epoch = data.train.shape[0] // s.batch_size
    runs = [(r, seed) for r in rows for seed in range(s.seeds if r.headline else s.extra_seeds)]
    log(f"{latent}: {len(runs)} runs, {s.epochs} epochs of {steps_per_epoch} steps on "
        f"{data.train.shape[0]} images")
    states = {(r.name, seed): jax.device_put(
        vae.init(jax.random.PRNGKey(seed), model, OPTIMIZER, r.estimator), replicated)
        for r, seed in runs}
    grad_fns = {r.name: functools.partial(_encoder_gradient, model=model, x=fixed,
                                          objective=r.objective, estimator=r.estimator)
                for r in [*rows, NO_BASELINE]}
    curves = {r.name: {"epoch": [], "step": [], "variance_trace": [], "mean_snr": [],
                       "median_snr": [], "seconds": []} for r in rows}
    nan = float("nan")
    epoch_seconds = {f"{r.name}|{seed}": [nan] * s.epochs for r, seed in runs}
    losses = {f"{r.name}|{seed}": [nan] * s.epochs for r, seed in runs}
    diverged: dict[str, dict] = {}  # label -> where the loss first became non-finite

    def moments(seed: int, row: Row, params, est_state) -> D.GradientMoments:
        samples = D.gradient_samples(jax.random.PRNGKey(seed), grad_fns[row.name],
                                     (params, est_state), s.replicates)
        return D.gradient_moments(samples)

    def measure(epoch: int) -> None:
        for r in rows:
            if f"{r.name}|0" in diverged:
                continue
            t0 = time.perf_counter()
            st = states[(r.name, 0)]
            m = moments(1000 + epoch, r, st.params, st.estimator_state)
            c = curves[r.name]
            c["epoch"].append(epoch)
            c["step"].append(epoch * steps_per_epoch)
            c["variance_trace"].append(float(m.variance_trace))
            c["mean_snr"].append(float(m.mean_snr))
            c["median_snr"].append(_median_snr(m))
            c["seconds"].append(time.perf_counter() - t0)

    if 0 in s.checkpoints:
        measure(0)
    for epoch in range(1, s.epochs + 1):
        shift = (epoch - 1) % len(runs)  # in turn, the order rotated: the same machine load
        for r, seed in runs[shift:] + runs[:shift]:
            key, label = (r.name, seed), f"{r.name}|{seed}"
            if label in diverged:
                continue
            t0 = time.perf_counter()
            states[key], loss = vae.train_epoch(
                states[key], images, model=model, optimizer=OPTIMIZER,
                batch_size=s.batch_size, objective=r.objective, estimator=r.estimator,
                dynamic_binarization=True, mesh=mesh)
            loss = np.asarray(loss)
            epoch_seconds[label][epoch - 1] = time.perf_counter() - t0
            if not np.all(np.isfinite(loss)):
                step = int(np.flatnonzero(~np.isfinite(loss))[0])
                diverged[label] = {"epoch": epoch, "step": (epoch - 1) * steps_per_epoch + step}
                log(f"{latent} {r.name} seed {seed}: non-finite loss at epoch {epoch}, step "
                    f"{diverged[label]['step']}; the run is stopped there")
                continue
            losses[label][epoch - 1] = float(loss.mean())
        if epoch in s.checkpoints:
            measure(epoch)
        if epoch == 1 or epoch % 5 == 0 or epoch == s.epochs:
            log(f"{latent} epoch {epoch}/{s.epochs}: " + ", ".join(
                f"{r.name} {losses[f'{r.name}|0'][epoch - 1]:.1f}" for r in rows))

    # every estimator at the same parameters: the Gumbel-softmax seed-0 run's, at the end
    same_point = {}
    if s.same_point and REFERENCE in s.rows and f"{REFERENCE}|0" not in diverged:
        common = states[(REFERENCE, 0)].params
        for r in [*rows, NO_BASELINE]:
            if f"{r.name}|0" in diverged:  # its estimator state is not finite
                continue
            est_state = (states[(r.name, 0)].estimator_state if (r.name, 0) in states
                         else r.estimator.init_state())
            m = moments(2000, r, common, est_state)
            same_point[r.name] = {"variance_trace": float(m.variance_trace),
                                  "mean_snr": float(m.mean_snr),
                                  "median_snr": _median_snr(m)}

    # time per step relative to Gumbel-softmax: paired by seed and epoch
    timing = {}
    skip = min(s.timing_skip, s.epochs - 1)
    for r in rows:
        ratios, ms = [], []
        for seed in range(s.seeds if r.headline else s.extra_seeds):
            own = epoch_seconds[f"{r.name}|{seed}"][skip:]
            ms += [1e3 * t / steps_per_epoch for t in own if np.isfinite(t)]
            ref = epoch_seconds.get(f"{REFERENCE}|{seed}")
            if ref is not None:  # epochs that both ran (a diverged run stops)
                ratios += [a / b for a, b in zip(own, ref[skip:], strict=True)
                           if np.isfinite(a) and np.isfinite(b)]
        timing[r.name] = {"ms_per_step": _quartiles(ms), "ratio_to_reference": _quartiles(ratios)}

    # evaluation of the discrete model
    runs_out = {}
    nll_x = data.test[: s.nll_images]
    for r, seed in runs:
        label = f"{r.name}|{seed}"
        if label in diverged:
            runs_out[label] = {"row": r.name, "seed": seed, "test_nll": nan,
                               "test_neg_elbo": nan, "train_loss_last_epoch": nan,
                               "diverged": diverged[label]}
            continue
        params = states[(r.name, seed)].params
        t0 = time.perf_counter()
        neg_elbo = vae.negative_elbo_dataset(jax.random.PRNGKey(100 + seed), model, params,
                                             data.test)
        nll = float(np.mean(vae.iwae_nll(jax.random.PRNGKey(200 + seed), model, params, nll_x,
                                         s.nll_samples, batch_size=100,
                                         chunk_size=s.nll_chunk)))
        runs_out[f"{r.name}|{seed}"] = {"row": r.name, "seed": seed, "test_nll": nll,
                                        "test_neg_elbo": neg_elbo,
                                        "train_loss_last_epoch": losses[f"{r.name}|{seed}"][-1],
                                        "eval_seconds": time.perf_counter() - t0}
    log(f"{latent}: evaluated {len(runs)} runs")

    table = []
    for r in rows:
        mine = [v for v in runs_out.values() if v["row"] == r.name and "diverged" not in v]
        lost = [f"seed {v['seed']} at step {v['diverged']['step']}" for v in runs_out.values()
                if v["row"] == r.name and "diverged" in v]
        nll_m, nll_sd = _mean_sd([v["test_nll"] for v in mine])
        elbo_m, elbo_sd = _mean_sd([v["test_neg_elbo"] for v in mine])
        c = curves[r.name]
        t = timing[r.name]
        target = TARGETS.get(r.name)
        ratio = t["ratio_to_reference"]
        table.append({
            "estimator": r.name, "seeds": len(mine),
            "diverged": ", ".join(lost) or None,
            "paper (m=1000)": PAPER[latent].get(r.paper) if r.paper else None,
            f"test NLL (k={s.nll_samples})": nll_m, "NLL sd": nll_sd,
            "test -ELBO": elbo_m, "-ELBO sd": elbo_sd,
            "train loss (last epoch)": _mean_sd([v["train_loss_last_epoch"] for v in mine])[0],
            "enc. var (start)": c["variance_trace"][0] if c["variance_trace"] else None,
            "enc. var (end)": c["variance_trace"][-1] if c["variance_trace"] else None,
            "SNR (end)": c["mean_snr"][-1] if c["mean_snr"] else None,
            "median SNR (end)": c["median_snr"][-1] if c["median_snr"] else None,
            "var (same point)": same_point.get(r.name, {}).get("variance_trace"),
            "ms / step": t["ms_per_step"]["median"],
            "time / GS": ratio["median"],
            "IQR": f"{ratio['q25']:.2f}-{ratio['q75']:.2f}" if ratio["n"] else "",
            "target": target, "met": (None if target is None or not ratio["n"]
                                      else bool(ratio["median"] <= target))})
    steps = s.epochs * steps_per_epoch
    return {"latent": latent, "config": MODELS[latent].to_dict(),
            "steps_per_epoch": steps_per_epoch, "steps": steps,
            "final_temperature": _temperature(s.schedule, steps),
            "table": table, "runs": runs_out, "curves": curves, "same_point": same_point,
            "timing": timing, "epoch_seconds": epoch_seconds, "train_loss": losses,
            "diverged": diverged,
            "orderings": orderings(latent, runs_out, rows),
            "orderings_neg_elbo": orderings(latent, runs_out, rows, "test_neg_elbo")}


def orderings(latent: str, runs: dict, rows: list[Row], metric: str = "test_nll") -> list[dict]:
    """Each pair of the paper's rows: the paper's difference, the measured one in ``metric``
    (paired by seed) and whether the paper's order holds (paired t beyond the two-sided 95%
    point)."""
    from scipy import stats

    names = {r.paper: r.name for r in rows if r.paper and r.headline and (
        r.paper != "SF" or r.name == SF_ROW)}
    out = []
    for i, a in enumerate(PAPER_ROWS):
        for b in PAPER_ROWS[i + 1:]:
            if a not in names or b not in names:
                continue
            paper = PAPER[latent][a] - PAPER[latent][b]
            xa = {v["seed"]: v[metric] for v in runs.values()
                  if v["row"] == names[a] and np.isfinite(v[metric])}
            xb = {v["seed"]: v[metric] for v in runs.values()
                  if v["row"] == names[b] and np.isfinite(v[metric])}
            seeds = sorted(set(xa) & set(xb))
            if not seeds:
                continue
            d = np.array([xa[k] - xb[k] for k in seeds])
            mean = float(d.mean())
            sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
            t = mean / (sd / math.sqrt(d.size)) if d.size > 1 and sd > 0 else float("nan")
            crit = float(stats.t.ppf(0.975, d.size - 1)) if d.size > 1 else float("nan")
            significant = bool(np.isfinite(t) and abs(t) > crit)
            if abs(paper) < 0.05:
                verdict = "paper: tie; " + (f"{'lower' if mean < 0 else 'higher'} here"
                                            if significant else "tie here too")
            elif not significant:
                verdict = "not resolved" if d.size > 1 else "one seed"
            else:
                verdict = "holds" if np.sign(mean) == np.sign(paper) else "reversed"
            out.append({"pair": f"{a} - {b}", "paper": paper, "measured": mean, "sd": sd,
                        "seeds": int(d.size), "t": t, "t_crit": crit, "verdict": verdict})
    return out


# --------------------------------------------------------------------------- toy problem


def _toy_objective(b, *, target):
    return -jnp.sum(jnp.square(b - target))


def _toy_chunk(state, keys, *, log_joint, family, optimizer, objective, estimator):
    """``len(keys)`` steps of ``vijax.vi.step``, recording theta's logit after each (``vi.fit``
    records no parameter trace)."""

    def body(st, key):
        st, _ = vi.step(key, st, log_joint, family, optimizer, objective=objective,
                        estimator=estimator)
        return st, st.params[0]

    return jax.lax.scan(body, state, keys)


def _toy_gradient(key, params_and_state, *, raw):
    params, state = params_and_state
    return raw(key, params, state).grad


def toy_study(s: Settings, log) -> dict:
    family = Bernoulli()
    optimizer = optax.adam(s.toy_learning_rate)
    control = optax.adam(s.toy_learning_rate)
    estimators = {"score function": E.Score(), "REBAR": E.REBAR(control),
                  "RELAX": E.RELAX(control, num_latents=1, hidden=10),
                  "Gumbel-softmax (0.5)": E.GumbelSoftmax(0.5)}
    objective = E.Expectation(1)
    every = min(s.toy_every, s.toy_steps)
    n_chunks = s.toy_steps // every
    out = {}
    for target in (0.45, 0.499):
        f = functools.partial(_toy_objective, target=target)  # one object: one compile
        res = {}
        for name, est in estimators.items():
            t0 = time.perf_counter()
            chunk = jax.jit(functools.partial(_toy_chunk, log_joint=f, family=family,
                                              optimizer=optimizer, objective=objective,
                                              estimator=est))
            grad_fn = functools.partial(_toy_gradient, raw=E.gradient(
                f, family, objective=objective, estimator=est).raw)
            thetas, variances, snrs = [], [], []
            for seed in range(s.toy_seeds):
                state = vi.init(jnp.zeros(1), family, optimizer, est)
                keys = jax.random.split(jax.random.PRNGKey(seed), n_chunks * every)
                trace, var, snr = [], [], []
                for c in range(n_chunks + 1):
                    m = D.gradient_moments(D.gradient_samples(
                        jax.random.PRNGKey(10_000 * (seed + 1) + c), grad_fn,
                        (state.params, state.estimator_state), s.toy_replicates))
                    var.append(float(m.variance_trace))
                    snr.append(float(m.mean_snr))
                    if c == n_chunks:
                        break
                    state, logits = chunk(state, keys[c * every:(c + 1) * every])
                    trace.append(np.asarray(logits))
                thetas.append(1 / (1 + np.exp(-np.concatenate(trace))))
                variances.append(var)
                snrs.append(snr)
            theta = np.asarray(thetas)  # (seeds, steps)
            below = [int(np.argmax(th < 0.1)) + 1 if np.any(th < 0.1) else None for th in theta]
            res[name] = {"theta": theta[:, :: max(1, s.toy_steps // 500)],
                         "theta_every": max(1, s.toy_steps // 500),
                         "variance": np.asarray(variances), "mean_snr": np.asarray(snrs),
                         "record_steps": [c * every for c in range(n_chunks + 1)],
                         "final_theta": theta[:, -1], "steps_to_0.1": below,
                         "seconds": time.perf_counter() - t0}
            log(f"toy t={target} {name}: theta {theta[:, -1].mean():.3f}, variance "
                f"{np.median(variances):.3g} ({time.perf_counter() - t0:.1f}s)")
        out[str(target)] = res
    return {"steps": s.toy_steps, "seeds": s.toy_seeds, "replicates": s.toy_replicates,
            "learning_rate": s.toy_learning_rate, "estimators": list(estimators),
            "targets": out}


def toy_rows(toy: dict) -> list[dict]:
    rows = []
    for target, res in toy["targets"].items():
        for name, r in res.items():
            final = np.asarray(r["final_theta"])
            reached = [b for b in r["steps_to_0.1"] if b is not None]
            var = np.asarray(r["variance"])
            rows.append({"t": float(target), "estimator": name,
                         "final theta (mean)": float(final.mean()),
                         "final theta (min-max)": f"{final.min():.3f}-{final.max():.3f}",
                         "seeds reaching theta<0.1": f"{len(reached)}/{final.size}",
                         "median steps to theta<0.1": (float(np.median(reached)) if reached
                                                       else None),
                         "grad variance (start)": float(np.median(var[:, 0])),
                         "grad variance (median along run)": float(np.median(var))})
    return rows


# --------------------------------------------------------------------------- study


def run_study(s: Settings, log) -> dict:
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    status = {src: source_status(src) for src in dict.fromkeys((*SOURCES, *s.sources))}
    for src, why in status.items():
        log(f"source {src}: {'available' if why is None else why}")
    results = {}
    for source in s.sources:
        if status[source] is not None:
            log(f"skipping {source}: {status[source]}")
            continue
        data = load(source, s)
        results[source] = {"description": data.description,
                           "train_images": int(data.train.shape[0]),
                           "test_images": int(data.test.shape[0]),
                           "nll_images": int(data.test[: s.nll_images].shape[0]),
                           "models": {latent: run_model(latent, data, s, log)
                                      for latent in MODELS}}
    t_toy = time.perf_counter()
    toy = toy_study(s, log) if s.toy else None
    return {"settings": {**dataclasses.asdict(s), "schedule": dataclasses.asdict(s.schedule),
                         "optimizer": "adam(1e-3)", "control_optimizer": "adam(1e-3)"},
            "estimators": {r.name: {"objective": repr(r.objective),
                                    "estimator": repr(r.estimator), "paper_row": r.paper}
                           for r in [*make_rows(s.schedule), NO_BASELINE]},
            "paper": PAPER, "sources": status, "results": results, "toy": toy,
            "toy_table": toy_rows(toy) if toy else [],
            "load_average": {"start": load_start, "end": os.getloadavg(),
                             "note": "1, 5, 15-minute load averages of this 2-core machine, "
                                     "which other users share"},
            "seconds": {"vae": t_toy - t_start, "toy": time.perf_counter() - t_toy,
                        "total": time.perf_counter() - t_start}}


# --------------------------------------------------------------------------- figures


def _num(x: float | None) -> float:
    """A number, NaN for None (NaN is written as null in the JSON)."""
    return float("nan") if x is None else float(x)


def plots(result: dict, out: Path) -> dict[str, str]:
    """One figure per source and model, and one of the toy problem; works on ``run_study``'s
    result and on it read back from the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {}
    for source, res in result["results"].items():
        for latent, m in res["models"].items():
            fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), layout="constrained")
            ax = axes[0]
            rows = m["table"]
            nll_key = next(k for k in rows[0] if k.startswith("test NLL"))
            for i, row in enumerate(rows):
                vals = [v for v in m["runs"].values() if v["row"] == row["estimator"]]
                color = COLORS[row["estimator"]]
                ax.bar(i, _num(row[nll_key]), 0.6, color=color, alpha=0.35)
                ax.plot([i] * len(vals), [_num(v["test_nll"]) for v in vals], "o",
                        color=color, ms=5)
                ax.plot([i + 0.2] * len(vals), [_num(v["test_neg_elbo"]) for v in vals], "_",
                        color=color, ms=10, mew=2)
                if row["diverged"]:
                    ax.annotate(f"diverged:\n{row['diverged']}", (i, 0.05), rotation=90,
                                xycoords=("data", "axes fraction"), ha="center", fontsize=6)
            labels = [row["estimator"] + (f"\n(paper {row['paper (m=1000)']:.1f})"
                                          if row["paper (m=1000)"] else "") for row in rows]
            ax.set_xticks(range(len(rows)), labels, rotation=35, ha="right", fontsize=7)
            ax.set_xlim(-0.6, len(rows) - 0.4)
            allv = [_num(x) for v in m["runs"].values()
                    for x in (v["test_nll"], v["test_neg_elbo"]) if np.isfinite(_num(x))]
            lo, hi = min(allv), max(allv)
            ax.set_ylim(lo - 0.15 * (hi - lo) - 1, hi + 0.1 * (hi - lo) + 1)
            ax.set_ylabel(f"nats per test image ({res['nll_images']} images)")
            ax.set_title(f"{latent}: test NLL (k={result['settings']['nll_samples']}, dots "
                         "= seeds, bar = mean);\n dash = -ELBO (k=1)", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
            for name, c in m["curves"].items():
                kw = {"color": COLORS[name], "marker": "o", "ms": 3, "label": name}
                axes[1].plot(c["step"], c["variance_trace"], **kw)
                axes[2].plot(c["step"], c["median_snr"], **kw)
                axes[2].plot(c["step"], c["mean_snr"], color=COLORS[name], ls=":", lw=0.8)
            axes[1].set_yscale("log")
            axes[1].set_ylabel("total variance of the encoder gradient")
            axes[2].set_yscale("log")
            axes[2].set_ylabel("SNR over encoder parameters: median (mean dotted)")
            for a in axes[1:]:
                a.set_xlabel("training step (seed 0)")
                a.grid(alpha=0.3)
            axes[1].legend(fontsize=7)
            fig.suptitle(f"Discrete VAE ({latent}) on {source}: {m['steps']} steps", fontsize=10)
            names[f"{source}|{latent}"] = savefig(
                fig, out / f"{_name(result)}{_slug(source)}_{latent}.png")

    toy = result["toy"]
    if toy is None:
        return names
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), layout="constrained")
    for j, (target, res) in enumerate(toy["targets"].items()):
        for i, (name, r) in enumerate(res.items()):
            theta = np.asarray(r["theta"])
            x = (np.arange(theta.shape[1]) + 1) * r["theta_every"]
            color = f"C{i}"
            axes[0, j].plot(x, np.median(theta, 0), color=color, label=name)
            axes[0, j].fill_between(x, theta.min(0), theta.max(0), color=color, alpha=0.2)
            var = np.asarray(r["variance"])
            axes[1, j].plot(r["record_steps"], np.median(var, 0), "o-", ms=3, color=color,
                            label=name)
        axes[0, j].set_title(f"t = {target}: theta (median and range over {toy['seeds']} "
                             "seeds)", fontsize=9)
        axes[0, j].set_ylabel("theta = P(b = 1)")
        axes[1, j].set_yscale("log")
        axes[1, j].set_ylabel("variance of the gradient in the logit")
        for a in axes[:, j]:
            a.set_xlabel("step")
            a.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Toy problem: maximise E[-(b - t)^2], b ~ Bernoulli(theta) (optimum theta = 0)",
                 fontsize=10)
    names["toy"] = savefig(fig, out / f"{_name(result)}_toy.png")
    return names


# --------------------------------------------------------------------------- report


def _name(result: dict) -> str:
    tag = result["settings"]["tag"]
    return f"{NAME}_{tag}" if tag else NAME


def _fmt_ms(m: float | None, sd: float | None) -> str:
    """``"m ± sd"``; NaN (None once written as JSON) as ``nan``."""
    m, sd = (float("nan") if v is None else v for v in (m, sd))
    return f"{m:.1f}" if not np.isfinite(sd) else f"{m:.1f} ± {sd:.1f}"


def _markdown(result: dict, figures: dict[str, str]) -> str:
    s = result["settings"]
    schedule = s["schedule"]
    parts = ["## Discrete latents: Jang, Gu and Poole (2017), Table 1, and the RELAX toy problem",
             "",
             "Two VAEs with Jang et al.'s networks (784-512-256 ReLU encoder, the reverse "
             "decoder): 200 Bernoulli units, and 20 categorical variables of 10 classes, "
             "uniform priors. Adam (1e-3), batch 100, the one-sample ELBO with the exact KL to "
             "the prior, training images binarised afresh at each step; the temperature "
             f"schedule max(0.5, exp(-{schedule['rate']:g} t)) updated every "
             f"{schedule['every']} "
             "steps. Test NLL: the importance-weighted bound of the discrete model with "
             f"k = {s['nll_samples']} (`vijax.vae.iwae_nll`); -ELBO: one sample, exact KL. "
             "Mean ± sd over seeds; the paper's numbers are on the full binarised MNIST (60,000 "
             "images, long training): compare orderings, not levels.", ""]
    unavailable = {k: v for k, v in result["sources"].items() if v is not None}
    if unavailable:
        parts += ["Sources not run: " + "; ".join(f"`{k}` ({v})" for k, v in
                                                   unavailable.items()) + ".", ""]
    for source, res in result["results"].items():
        for latent, m in res["models"].items():
            nll_key = next(k for k in m["table"][0] if k.startswith("test NLL"))
            rows = [{"estimator": r["estimator"], "seeds": r["seeds"], "diverged": r["diverged"],
                     "paper": r["paper (m=1000)"],
                     "test NLL": _fmt_ms(r[nll_key], r["NLL sd"]),
                     "test -ELBO": _fmt_ms(r["test -ELBO"], r["-ELBO sd"]),
                     "enc. var start": r["enc. var (start)"],
                     "enc. var end": r["enc. var (end)"],
                     "SNR end (mean / median)": (
                         f"{r['SNR (end)']:.3g} / {r['median SNR (end)']:.3g}"
                         if r["SNR (end)"] is not None else None),
                     "var same point": r["var (same point)"],
                     "ms/step": r["ms / step"], "time / GS": r["time / GS"], "IQR": r["IQR"],
                     "target": r["target"], "met": r["met"]} for r in m["table"]]
            parts += [f"### {latent} VAE on {source} ({res['train_images']} training images, "
                      f"{m['steps']} steps; NLL on {res['nll_images']} test images, -ELBO on "
                      f"{res['test_images']}; final temperature {m['final_temperature']:.3f})",
                      "", markdown_table(rows), ""]
            if m["same_point"]:
                parts += ["Encoder-gradient variance at the same parameters (the Gumbel-softmax "
                          "seed-0 run's, at the end): " + ", ".join(
                              f"{k} {v['variance_trace']:.3g}"
                              for k, v in m["same_point"].items()) + ".", ""]
            if m["orderings"]:
                both = [{"pair": o["pair"], "paper": o["paper"],
                         "NLL: measured": _fmt_ms(o["measured"], o["sd"]), "NLL: t": o["t"],
                         "NLL: verdict": o["verdict"],
                         "-ELBO: measured": _fmt_ms(e["measured"], e["sd"]),
                         "-ELBO: t": e["t"], "-ELBO: verdict": e["verdict"]}
                        for o, e in zip(m["orderings"], m["orderings_neg_elbo"], strict=True)]
                crit, n = m["orderings"][0]["t_crit"], m["orderings"][0]["seeds"]
                test = (f"the paired t beyond the two-sided 95% point, {crit:.2f} for {n} "
                        "seeds" if crit is not None and np.isfinite(crit) else
                        "no test with one seed")
                parts += ["The paper's orderings (the first row minus the second, paired by "
                          f"seed, mean ± sd; 'holds': the paper's sign with {test}), in test "
                          "NLL and in test -ELBO:", "", markdown_table(both), ""]
            fig = figures.get(f"{source}|{latent}")
            if fig:
                parts += [f"![{latent} VAE]({fig})", ""]
    parts += ["Encoder-gradient variance: total variance (trace of the covariance) of the "
              f"encoder's gradient over {s['replicates']} draws on a fixed batch of "
              f"{s['variance_batch']} training images, for the seed-0 run at its own parameters "
              "(start: every run at the same initial parameters), and at the end at the "
              "Gumbel-softmax run's parameters ('same point', with 'SF (no baseline)' as the "
              "reference). SNR: the mean over encoder parameters of |mean| / std, and its "
              "median over the parameters whose gradient varies (the mean is dominated by "
              "parameters whose gradient is nearly deterministic). The relaxed estimators' "
              "variance is that of the relaxed objective's gradient; ST's and the "
              "relaxations' gradients are biased for the discrete ELBO, "
              "the score-function rows, REBAR and RELAX are not. Time per step: ratio to the "
              "Gumbel-softmax step of the same seed, paired by epoch (runs trained in turn), "
              f"after the first {s['timing_skip']} epochs.", ""]
    toy = result["toy"]
    if toy is None:
        return "\n".join(parts)
    parts += [f"### Toy problem (Grathwohl et al. 2018): maximise E[-(b - t)^2], "
              f"b ~ Bernoulli(theta), {toy['steps']} Adam steps ({toy['learning_rate']:g}) "
              f"from theta = 0.5, {toy['seeds']} seeds; variance over "
              f"{toy['replicates']} draws", "",
              markdown_table(result["toy_table"]), "",
              f"![toy problem]({figures['toy']})", ""]
    return "\n".join(parts)


def report(out: Path, log) -> dict:
    """The report section at the quick size (about a minute on 2 CPU cores)."""
    out.mkdir(parents=True, exist_ok=True)
    result = run_study(QUICK, log)
    figures = plots(result, out)
    return {"markdown": _markdown(result, figures), "numbers": result}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sources", nargs="+", default=None,
                   help="mnist5k (default), idx:/usr/share/datasets/fashion-mnist, mnist")
    p.add_argument("--rows", nargs="+", default=None, choices=[r.name for r in ROWS])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--extra-seeds", type=int, default=None)
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--nll-images", type=int, default=None)
    p.add_argument("--nll-samples", type=int, default=None)
    p.add_argument("--toy-steps", type=int, default=None)
    p.add_argument("--no-toy", action="store_true", help="leave out the toy problem")
    p.add_argument("--anneal-rate", type=float, default=None,
                   help=f"r of the temperature schedule (default {SCHEDULE.rate:g})")
    p.add_argument("--anneal-every", type=int, default=None,
                   help=f"N of the temperature schedule (default {SCHEDULE.every})")
    p.add_argument("--tag", default=None, help="output names discrete_vae_TAG*")
    args = p.parse_args(argv)
    s = QUICK if args.quick else FULL
    changes = {name: getattr(args, name) for name in ("epochs", "seeds", "extra_seeds",
                                                      "train_images", "nll_images",
                                                      "nll_samples", "toy_steps",
                                                      "anneal_rate", "anneal_every", "tag")
               if getattr(args, name) is not None}
    if args.sources is not None:
        changes["sources"] = tuple(args.sources)
    if args.no_toy:
        changes["toy"] = False
    if args.rows is not None:
        changes["rows"] = tuple(args.rows)
    s = dataclasses.replace(s, **changes)
    if args.epochs is not None:
        s = dataclasses.replace(s, checkpoints=tuple(
            c for c in s.checkpoints if c < s.epochs) + (s.epochs,))
    out = args.out or Path(__file__).resolve().parent / "results"
    log = Log(prefix=f"{NAME}: ")
    result = run_study(s, log)
    figures = plots(result, out)
    for source, res in result["results"].items():
        for latent, m in res["models"].items():
            print(f"\n{source}, {latent}")
            print_table(m["table"])
            print_table(m["orderings"])
    if result["toy_table"]:
        print("\ntoy problem")
        print_table(result["toy_table"])
    path = write_json(out / f"{_name(result)}.json", {**result, "quick": args.quick,
                                              "figures": figures})
    log(f"wrote {path} in {result['seconds']['total']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
