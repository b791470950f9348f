"""Gradient estimators compared: the variance and signal-to-noise ratio of every estimator
along a training run and the objective it reaches, on three models; and their speed.

    python benchmarks/gradient_variance.py [--quick] [--out DIR]

Models, each trained with every estimator that applies, from the same initial parameters and
with the same keys (``vijax.vi.fit(..., diagnostics_every=n, num_replicates=R)``; the VAE with
``vijax.vae.fit`` one epoch at a time and ``vijax.diagnostics.gradient_samples`` of the
encoder's gradient on a fixed batch after each epoch):

- the conjugate Gaussian (D = 5, 20 observations), a mean-field Gaussian, ``ELBO(4)``: exact
  ELBO, KL to the posterior and log evidence;
- Bayesian logistic regression on scikit-learn's breast cancer data (569 x 31), a full-rank
  Gaussian, ``ELBO(4)``: the final ELBO from 20,000 draws;
- the VAE on ``mnist5k`` (784-64-8), ``ELBO(5)`` and ``IWAE(5)``: test negative ELBO and IWAE
  NLL.

Also the closed-form checks of the conjugate model (the score's zero mean; variance against
distance to the posterior; the STL / total-derivative crossover), and the speed: per-sample
gradients by ``vmap`` against a loop of jitted ``grad``; a training step with each estimator
against the total derivative; and ``vi.fit`` against NumPyro's ``SVI`` + ``Trace_ELBO``.
Each pair of sides is timed in the same run, in turn within every round.

``--quick`` (the size of the report) runs every estimator on the conjugate model and in the
timings, four on the logistic regression and two VAE runs (2 epochs), with fewer steps and
replicates; the full size runs them all (about 4 minutes on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _harness import (  # noqa: E402
    Log,
    block,
    markdown_table,
    parser,
    print_table,
    savefig,
    timeit,
    write_json,
)

from vijax import diagnostics as D  # noqa: E402
from vijax import estimators as E  # noqa: E402
from vijax import vi  # noqa: E402
from vijax.families import FullRankGaussian, GaussianParams, MeanFieldGaussian  # noqa: E402
from vijax.models import from_numpyro, load_breast_cancer, simulate_conjugate_gaussian  # noqa: E402

NAME = "gradient_variance"
TARGET_PER_SAMPLE = 50.0  # vmap against a loop of jitted grad: at least this many times faster
TARGET_STEP = 1.2  # a step with any estimator: at most this many times the total derivative's
TARGET_PEER = 1.0  # NumPyro SVI time over vijax time: at least this

#: Estimators of ``ELBO(k)`` (``k >= 2``) and of ``IWAE(k)``, in table order.
ELBO_ESTIMATORS = {
    "total (Reparam)": E.Reparam(),
    "STL": E.STL(),
    "score": E.Score(),
    "score, moving average": E.Score(E.MovingAverage(0.9)),
    "score, leave-one-out (RLOO)": E.Score(E.LeaveOneOut()),
    "score control variate": E.ScoreControlVariate(),
}
IWAE_ESTIMATORS = {
    "total (Reparam)": E.Reparam(),
    "STL (biased)": E.STL(),
    "DReG": E.DReG(),
    "score, leave-one-out (VIMCO)": E.Score(E.LeaveOneOut()),
}
COLORS = {"total (Reparam)": "C0", "STL": "C2", "STL (biased)": "C2", "score": "C7",
          "score, moving average": "C1", "score, leave-one-out (RLOO)": "C4",
          "score, leave-one-out (VIMCO)": "C4", "score control variate": "C3", "DReG": "C5"}


#: Runs trained without vi.fit's gradient diagnostics: the vmapped gradient of the score
#: control variate on the full-rank family (diagnostics.gradient_samples, as vi.fit draws it)
#: never returns after some 50-500 calls on XLA:CPU with jaxlib 0.10.2 (a worker thread
#: waits in tsl::BlockUntilReady inside CpuPjRtRawLoadedExecutable::Execute, all XLA worker
#: threads idle); the unvmapped gradient and the mean-field family are not affected.
UNDIAGNOSED = {("logistic", "score control variate")}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of the studies and of the timings."""

    conj_steps: int
    conj_every: int
    lr_steps: int
    lr_every: int
    replicates: int  # gradient estimates per diagnostic record (conjugate, logistic)
    lr_estimators: tuple[str, ...]  # of ELBO_ESTIMATORS, for the logistic regression
    vae_epochs: int
    vae_runs: tuple[tuple[str, str], ...]  # (objective, estimator label)
    vae_replicates: int
    vae_batch: int  # fixed images on which the encoder's gradient is sampled
    vae_nll_samples: int
    score_samples: int
    distance_points: int
    distance_samples: int
    loop_keys: int  # loop iterations timed for the per-sample benchmark (scaled to 1,000)
    step_steps: int  # vi.fit steps per timing of a training step
    peer_steps: int
    peer_particles: tuple[int, ...]
    repeat: int


_ALL_VAE = tuple([("ELBO(5)", k) for k in ELBO_ESTIMATORS]
                 + [("IWAE(5)", k) for k in IWAE_ESTIMATORS])
QUICK = Settings(conj_steps=400, conj_every=200, lr_steps=400, lr_every=200, replicates=100,
                 lr_estimators=("total (Reparam)", "STL", "score, leave-one-out (RLOO)",
                                "score control variate"),
                 vae_epochs=2, vae_runs=(("ELBO(5)", "total (Reparam)"), ("IWAE(5)", "DReG")),
                 vae_replicates=32, vae_batch=50, vae_nll_samples=10, score_samples=100_000,
                 distance_points=5, distance_samples=1000, loop_keys=100, step_steps=500,
                 peer_steps=1000, peer_particles=(4,), repeat=3)
FULL = Settings(conj_steps=2000, conj_every=200, lr_steps=3000, lr_every=300, replicates=200,
                lr_estimators=tuple(ELBO_ESTIMATORS),
                vae_epochs=10, vae_runs=_ALL_VAE, vae_replicates=100, vae_batch=100,
                vae_nll_samples=100, score_samples=1_000_000, distance_points=21,
                distance_samples=4000, loop_keys=1000, step_steps=2000, peer_steps=2000,
                peer_particles=(1, 4), repeat=9)


# ----------------------------------------------------------------------------- helpers


def interleaved(fns: dict[str, Callable], repeat: int) -> dict[str, np.ndarray]:
    """Seconds of each ``fn()`` in each of ``repeat`` rounds; the functions run in turn within
    a round (after one warm-up call each), so drifts of the machine hit every side alike."""
    for fn in fns.values():
        block(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            times[name].append(timeit(fn, repeat=1, warmup=0))
    return {name: np.asarray(t) for name, t in times.items()}


def spread(t: np.ndarray, scale: float = 1.0) -> dict:
    """Median, min and max of ``t * scale``."""
    return {"median": float(np.median(t) * scale), "min": float(np.min(t) * scale),
            "max": float(np.max(t) * scale)}


def ratio(num: np.ndarray, den: np.ndarray) -> dict:
    """Round-by-round ratios ``num / den``: their median, min and max."""
    return spread(np.asarray(num) / np.asarray(den))


def smooth(values: np.ndarray, points: int = 100) -> tuple[list, list]:
    """Running means of ``values`` over ``points`` equal windows: (window ends, means)."""
    n = len(values)
    w = max(1, n // points)
    m = n // w
    means = np.asarray(values[: m * w]).reshape(m, w).mean(axis=1)
    return list(range(w, m * w + 1, w)), means.tolist()


def run_rows(runs: dict, columns: list[str]) -> list[dict]:
    """One table row per run: ``columns`` ("" where a run has no value); a failed run says
    why in its first column."""
    rows = []
    for label, r in runs.items():
        row = {"estimator": label, **{c: r.get(c, "") for c in columns}}
        if "failed" in r:
            row[columns[0]] = f"failed: {r['failed']}"
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the three models


def conjugate_model(dim: int = 5, num_data: int = 20):
    return simulate_conjugate_gaussian(jax.random.key(0), num_data, dim, prior_loc=0.0,
                                       prior_scale=2.0, noise_scale=1.0)


def fit_runs(log, name: str, log_joint, family, init: Callable, optimizer, objective,
             estimators: dict, steps: int, every: int, replicates: int,
             final: Callable) -> dict:
    """``vi.fit`` with each estimator from the same initial parameters and key; ``final(params)``
    gives the model's end-of-run numbers."""
    runs = {}
    for label, est in estimators.items():
        diagnosed = (name, label) not in UNDIAGNOSED
        try:
            res = vi.fit(jax.random.key(1), init(), log_joint, family, optimizer,
                         num_steps=steps, objective=objective, estimator=est, progress=False,
                         diagnostics_every=every if diagnosed else None,
                         num_replicates=replicates)
        except FloatingPointError as e:
            runs[label] = {"failed": str(e)}
            log(f"{name} {label}: {e}")
            continue
        tail = res.values[-max(1, steps // 10):]
        steps_s, values_s = smooth(res.values)
        run = {"objective (last 10% of steps)": float(np.mean(tail)),
               **final(res.state.params, est),
               "curve": {"step": [], "variance": [], "snr": [], "value_step": steps_s,
                         "value": values_s}}
        if diagnosed:
            d = res.diagnostics
            run.update({"variance start": float(d.variance_trace[0]),
                        "variance end": float(d.variance_trace[-1]),
                        "SNR start": float(d.mean_snr[0]), "SNR end": float(d.mean_snr[-1])})
            run["curve"].update(step=d.step, variance=d.variance_trace, snr=d.mean_snr)
            log(f"{name} {label}: variance {d.variance_trace[0]:.3g} -> "
                f"{d.variance_trace[-1]:.3g}, SNR end {d.mean_snr[-1]:.3g}")
        else:
            run["variance start"] = "not measured (XLA:CPU hang)"
            log(f"{name} {label}: trained without diagnostics (see UNDIAGNOSED)")
        runs[label] = run
    return runs


def study_conjugate(s: Settings, log) -> dict:
    """Conjugate Gaussian, mean-field family, ELBO(4): exact ELBO and KL at the end."""
    model = conjugate_model()
    family = MeanFieldGaussian()
    k = 4
    objective = E.ELBO(k)
    log_evidence = float(model.log_evidence())

    def final(params, est):
        out = {"exact ELBO": float(model.elbo(params)),
               "KL(q || posterior)": float(model.kl_to_posterior(params))}
        if isinstance(est, E.Reparam | E.STL):  # closed form of one draw; the mean of k: / k
            out["closed-form variance end"] = float(model.gradient_variance(params, est)) / k
        return out

    runs = fit_runs(log, "conjugate", model.log_joint, family,
                    lambda: family.init(jnp.zeros(5)), optax.adam(0.05), objective,
                    ELBO_ESTIMATORS, s.conj_steps, s.conj_every, s.replicates, final)
    return {"runs": runs, "log_evidence": log_evidence, "objective": repr(objective),
            "steps": s.conj_steps, "every": s.conj_every, "replicates": s.replicates,
            "learning_rate": 0.05,
            "posterior_sd": float(jnp.exp(model.posterior().log_scale[0]))}


def study_logistic(s: Settings, log) -> dict:
    """Breast-cancer logistic regression, full-rank family, ELBO(4): the final ELBO from
    20,000 draws."""
    model = load_breast_cancer()
    family = FullRankGaussian()
    d = model.x.shape[1]
    objective = E.ELBO(4)
    final_draws = 20_000

    def final(params, est):
        # Reparam's value takes log q from the noise (sample_and_log_prob): exact even where
        # L is ill-conditioned, unlike log_prob's triangular solve in float32
        value = E.surrogate(jax.random.key(7), params, model.log_joint, family,
                            objective=E.ELBO(final_draws), estimator=E.Reparam()).value
        return {f"ELBO ({final_draws:,} draws)": float(value)}

    runs = fit_runs(log, "logistic", model.log_joint, family,
                    lambda: family.init(jnp.zeros(d), 0.1 * jnp.eye(d)), optax.adam(1e-2),
                    objective, {k: ELBO_ESTIMATORS[k] for k in s.lr_estimators}, s.lr_steps,
                    s.lr_every, s.replicates, final)
    return {"runs": runs, "objective": repr(objective), "steps": s.lr_steps,
            "every": s.lr_every, "replicates": s.replicates, "learning_rate": 1e-2,
            "data": f"{model.x.shape[0]} x {d}", "parameters": d + d * d,
            "final_draws": final_draws}


def study_vae(s: Settings, log) -> dict:
    """The VAE (784-64-8) on mnist5k, ELBO(5) and IWAE(5): each run trained one epoch per
    ``vijax.vae.fit`` call (resumed from its checkpoint), the encoder's gradient sampled on
    a fixed batch after each epoch; test negative ELBO and IWAE NLL at the end."""
    from vijax.data import load_mnist
    from vijax.vae import VAE, VAEConfig, bound_gradient, fit, iwae_nll
    from vijax.vae import init as vae_init

    data = load_mnist("mnist5k")
    train, test = data.train_images, data.test_images
    test_binary = np.round(test)  # as fit binarises (binarization="round")
    batch = jnp.asarray(np.round(train[: s.vae_batch]))
    config = VAEConfig(hidden=(64,), latent_dim=8)
    model = VAE(config)
    optimizer = optax.adam(1e-3)
    objectives = {"ELBO(5)": E.ELBO(5), "IWAE(5)": E.IWAE(5)}
    estimators = {"ELBO(5)": ELBO_ESTIMATORS, "IWAE(5)": IWAE_ESTIMATORS}
    key = jax.random.key(2)
    runs: dict[str, dict] = {}
    state: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for obj_name, label in s.vae_runs:
            objective, est = objectives[obj_name], estimators[obj_name][label]

            # one function object per run: gradient_samples compiles once per function
            def encoder_grad(k, carry, objective=objective, est=est):
                params, est_state = carry
                return bound_gradient(k, model, params, batch, objective=objective,
                                      estimator=est, state=est_state)[1]["encoder"]

            start = vae_init(key, model, optimizer, est)  # fit's initial parameters
            m = D.gradient_moments(D.gradient_samples(
                jax.random.key(3), encoder_grad, (start.params, start.estimator_state),
                s.vae_replicates))
            name = f"{obj_name} {label}"
            runs[name] = {"objective": obj_name, "estimator": label,
                          "curve": {"step": [0], "variance": [float(m.variance_trace)],
                                    "snr": [float(m.mean_snr)], "test -ELBO": []}}
            state[name] = {"grad": encoder_grad, "workdir": Path(tmp) / f"run{len(state)}"}
        for epoch in range(1, s.vae_epochs + 1):
            for name, run in runs.items():
                if "failed" in run:
                    continue
                objective = objectives[run["objective"]]
                est = estimators[run["objective"]][run["estimator"]]
                try:
                    res = fit(key, train, optimizer=optimizer, config=config, epochs=epoch,
                              batch_size=100, objective=objective, estimator=est,
                              workdir=state[name]["workdir"], resume=epoch > 1,
                              test_images=test, progress=False)
                except FloatingPointError as e:
                    run["failed"] = str(e)
                    log(f"VAE {name}: {e}")
                    continue
                m = D.gradient_moments(D.gradient_samples(
                    jax.random.key(3 + epoch), state[name]["grad"],
                    (res.state.params, res.state.estimator_state), s.vae_replicates))
                h = res.history[-1]
                c = run["curve"]
                c["step"].append(int(res.state.step))
                c["variance"].append(float(m.variance_trace))
                c["snr"].append(float(m.mean_snr))
                c["test -ELBO"].append(h["test_loss"])
                run.setdefault("epoch seconds", []).append(h["seconds"])
                run["train objective (last epoch)"] = -h["train_loss"]
                state[name]["params"] = res.state.params
            log(f"VAE epoch {epoch}: " + ", ".join(
                f"{n} {r['curve']['variance'][-1]:.3g}" for n, r in runs.items()
                if "failed" not in r))
    for name, run in runs.items():
        if "failed" in run:
            continue
        c = run["curve"]
        nll = iwae_nll(jax.random.key(9), model, state[name]["params"], test_binary,
                       s.vae_nll_samples)
        run.update({"test -ELBO": c["test -ELBO"][-1],
                    f"test NLL (IWAE, k={s.vae_nll_samples})": float(np.mean(nll)),
                    "variance start": c["variance"][0], "variance end": c["variance"][-1],
                    "SNR start": c["snr"][0], "SNR end": c["snr"][-1]})
    log("VAE: " + ", ".join(f"{n} NLL {r.get(f'test NLL (IWAE, k={s.vae_nll_samples})', 'failed')}"
                            for n, r in runs.items()))
    return {"runs": runs, "epochs": s.vae_epochs, "steps_per_epoch": len(train) // 100,
            "replicates": s.vae_replicates, "batch": s.vae_batch,
            "config": config.to_dict(), "learning_rate": 1e-3,
            "nll_samples": s.vae_nll_samples, "train_images": len(train),
            "test_images": len(test)}


# ----------------------------------------------------------------------------- closed-form checks


def score_mean_zero(s: Settings, log) -> dict:
    """``E_q[grad log q] = 0``: the Monte-Carlo mean's norm against its standard error."""
    model = conjugate_model()
    post = model.posterior()
    q = GaussianParams(post.loc + 1.0, post.log_scale + 0.5)
    flat = np.asarray(D.flatten_gradients(D.scores(jax.random.key(1), q, MeanFieldGaussian(),
                                                   s.score_samples)), np.float64)
    ns = np.unique(np.logspace(1, np.log10(s.score_samples), 13).astype(int))
    csum = np.cumsum(flat, axis=0)
    var = flat.var(axis=0, ddof=1)
    rows = [{"samples": int(n), "|mean|": float(np.linalg.norm(csum[n - 1] / n)),
             "standard error": float(np.sqrt(var.sum() / n)),
             "max |mean_p| / se_p": float(np.max(np.abs(csum[n - 1] / n) / np.sqrt(var / n)))}
            for n in ns]
    log(f"score mean at n={ns[-1]:,}: |mean| {rows[-1]['|mean|']:.2e}, "
        f"se {rows[-1]['standard error']:.2e}")
    return {"rows": rows}


def variance_vs_distance(s: Settings, log) -> dict:
    """Total variance of one ELBO(1) gradient along paths from 3 posterior s.d. away (a q 10x
    too narrow or too wide) to the posterior: Monte Carlo against the closed form; and the
    closed-form crossover of the total derivative and STL."""
    model = conjugate_model()
    post = model.posterior()
    family = MeanFieldGaussian()
    estimators = {"total (Reparam)": E.Reparam(), "STL": E.STL(), "score": E.Score()}
    fns = {}
    for label, est in estimators.items():
        g = E.gradient(model.log_joint, family, objective=E.ELBO(1), estimator=est)
        fns[label] = lambda k, p, g=g: g.raw(k, p, ()).grad
    sigma = float(jnp.exp(post.log_scale[0]))
    ts = np.linspace(0.0, 1.0, s.distance_points)
    paths = {}
    for start, log_ratio in (("narrow start (s = sigma/10)", np.log(0.1)),
                             ("wide start (s = 10 sigma)", np.log(10.0))):
        res: dict[str, list] = {k: [] for k in (*estimators, "closed form total",
                                                "closed form STL", "KL")}
        for t in ts:
            q = GaussianParams(post.loc + t * 3.0 * sigma, post.log_scale + t * log_ratio)
            for label, fn in fns.items():
                samples = D.gradient_samples(jax.random.key(2), fn, q, s.distance_samples)
                res[label].append(float(D.gradient_moments(samples).variance_trace))
            res["closed form total"].append(float(model.gradient_variance(q, E.Reparam())))
            res["closed form STL"].append(float(model.gradient_variance(q, E.STL())))
            res["KL"].append(float(model.kl_to_posterior(q)))
        paths[start] = res
        log(f"{start}: at the posterior STL {res['STL'][0]:.2e}, total "
            f"{res['total (Reparam)'][0]:.3g}, score {res['score'][0]:.3g}")
    rs = np.logspace(-2, 2, 40)  # misses r = 1, where STL's variance is 0
    crossover = []
    for r in rs:
        q = GaussianParams(post.loc, post.log_scale + 0.5 * np.log(r))
        stl = float(model.gradient_variance(q, E.STL()))
        crossover.append(float(model.gradient_variance(q, E.Reparam())) / stl
                         if stl > 0 else float("inf"))
    return {"t": ts, "paths": paths, "posterior_sd": sigma, "samples": s.distance_samples,
            "crossover_r": rs, "crossover_ratio": crossover}


# ----------------------------------------------------------------------------- speed


def speed_per_sample(s: Settings, log, num_samples: int = 1000, dim: int = 100) -> dict:
    """1,000 per-sample gradients, D = 100: ``gradient_samples`` (one vmapped call) against a
    Python loop of a jitted ``grad`` of the one-sample surrogate, same keys."""
    model = conjugate_model(dim=dim)
    family = MeanFieldGaussian()
    post = model.posterior()
    q = GaussianParams(post.loc + 0.5, post.log_scale + 0.3)
    objective, est = E.ELBO(1), E.Reparam()
    g = E.gradient(model.log_joint, family, objective=objective, estimator=est)

    def fn(k, p):
        return g.raw(k, p, ()).grad

    one = jax.jit(jax.grad(lambda p, k: E.surrogate(k, p, model.log_joint, family,
                                                    objective=objective,
                                                    estimator=est).surrogate))
    key = jax.random.key(4)
    keys = jax.random.split(key, num_samples)  # the keys gradient_samples uses
    loop_keys = [keys[i] for i in range(s.loop_keys)]
    got = D.flatten_gradients(D.gradient_samples(key, fn, q, num_samples))
    want = D.flatten_gradients(jax.tree.map(lambda *x: jnp.stack(x),
                                            *[one(q, k) for k in loop_keys[:10]]))
    max_diff = float(jnp.max(jnp.abs(got[:10] - want)))
    # Each side's time per round is an average over a window of similar length (the loop's
    # s.loop_keys calls, `calls` vmapped calls of ~1 ms), so a moment of load on a shared
    # machine weighs on both alike.
    # Each vmapped call is waited for and dropped: keeping 20 outputs of 800 kB would time
    # fresh pages, not gradients.
    calls = 20

    def vmapped():
        for _ in range(calls):
            out = block(D.gradient_samples(key, fn, q, num_samples))
        return out

    t = interleaved({"vmap": vmapped, "loop": lambda: [one(q, k) for k in loop_keys]},
                    s.repeat)
    t["vmap"] = t["vmap"] / calls
    scale = num_samples / s.loop_keys
    t_loop = t["loop"] * scale
    row = {"task": f"{num_samples:,} per-sample gradients, D = {dim} (ELBO(1), Reparam)",
           "vijax": "diagnostics.gradient_samples", "peer": "loop of jit(grad(surrogate))",
           "vijax s": spread(t["vmap"])["median"], "peer s": spread(t_loop)["median"],
           "peer/vijax": ratio(t_loop, t["vmap"])["median"],
           "ratio range": _range(ratio(t_loop, t["vmap"])), "target": f">= {TARGET_PER_SAMPLE:g}",
           "loop keys timed": s.loop_keys, "vmapped calls per round": calls,
           "max |difference|": max_diff, "load average": os.getloadavg()[0]}
    log(f"per-sample: vmap {row['vijax s'] * 1e3:.2f} ms, loop {row['peer s'] * 1e3:.1f} ms "
        f"({s.loop_keys} keys, scaled), ratio {row['peer/vijax']:.1f}x; same gradients to "
        f"{max_diff:.1e}")
    return {"row": row, "vmap": spread(t["vmap"]), "loop": spread(t_loop)}


def _range(r: dict) -> str:
    return f"{r['min']:.3g}-{r['max']:.3g}"


def speed_train_step(s: Settings, log) -> list[dict]:
    """Seconds per ``vi.fit`` step with each estimator against the total derivative, on the
    logistic regression (full rank, 992 parameters), ELBO(4) and IWAE(4)."""
    model = load_breast_cancer()
    family = FullRankGaussian()
    d = model.x.shape[1]
    optimizer = optax.adam(1e-2)  # one object: vi.fit's compiled chunks are cached per optimizer
    rows = []
    for objective, estimators in ((E.ELBO(4), ELBO_ESTIMATORS), (E.IWAE(4), IWAE_ESTIMATORS)):
        fns = {label: (lambda est=est, objective=objective: vi.fit(
            jax.random.key(1), family.init(jnp.zeros(d), 0.1 * jnp.eye(d)), model.log_joint,
            family, optimizer, num_steps=s.step_steps, objective=objective, estimator=est,
            progress=False).values) for label, est in estimators.items()}
        t = interleaved(fns, s.repeat)
        base = t["total (Reparam)"]
        for label in estimators:
            r = ratio(t[label], base)
            rows.append({"task": f"logistic regression, {objective!r}", "estimator": label,
                         "us/step": spread(t[label], 1e6 / s.step_steps)["median"],
                         "total (Reparam) us/step": spread(base, 1e6 / s.step_steps)["median"],
                         "ratio": r["median"], "ratio range": _range(r),
                         "target": f"<= {TARGET_STEP:g}"})
        log(f"train step {objective!r}: " + ", ".join(
            f"{r['estimator']} {r['ratio']:.2f}x" for r in rows[-len(estimators):]))
    return rows


def speed_vae(vae: dict) -> list[dict]:
    """Time per VAE step (an epoch over its steps) of each run against the total derivative
    with the same objective, from the study (its runs train in turn, one epoch each; the
    first epoch, which compiles, is left out)."""
    runs = vae["runs"]
    per = 1e6 / vae["steps_per_epoch"]
    rows = []
    for run in runs.values():
        base = runs.get(f"{run['objective']} total (Reparam)")
        if ("failed" in run or base is None or "failed" in base
                or len(run["epoch seconds"]) < 3):  # at least 2 epochs after the compiling one
            continue
        t, b = np.asarray(run["epoch seconds"][1:]), np.asarray(base["epoch seconds"][1:])
        r = ratio(t, b)
        rows.append({"task": f"VAE, {run['objective']} ({len(t)} epochs)",
                     "estimator": run["estimator"], "us/step": spread(t, per)["median"],
                     "total (Reparam) us/step": spread(b, per)["median"],
                     "ratio": r["median"], "ratio range": _range(r),
                     "target": f"<= {TARGET_STEP:g}"})
    return rows


def numpyro_logistic(x, y):
    """The breast-cancer logistic regression as a NumPyro model (prior N(0, 1) per weight)."""
    import numpyro
    import numpyro.distributions as dist

    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    numpyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)


def speed_numpyro(s: Settings, log) -> dict:
    """Seconds per step of the logistic regression, full-rank Gaussian, total derivative, k
    particles: vijax ``vi.fit`` against NumPyro ``SVI(model, AutoMultivariateNormal,
    optax.adam, Trace_ELBO(num_particles=k))``, each from loc 0 and scale 0.1 I."""
    try:
        from numpyro.infer import SVI, Trace_ELBO
        from numpyro.infer.autoguide import AutoMultivariateNormal
        from numpyro.infer.initialization import init_to_value
    except ImportError:
        log("NumPyro peer missing")
        return {"rows": [], "missing": "peer missing (numpyro is not installed)"}
    import numpyro

    model = load_breast_cancer()
    x, y = model.x, model.y
    family = FullRankGaussian()
    d = x.shape[1]
    n = s.peer_steps
    optimizer = optax.adam(1e-2)
    bridged = from_numpyro(jax.random.key(0), numpyro_logistic, x, y)
    rows, finals = [], []
    for k in s.peer_particles:
        guide = AutoMultivariateNormal(numpyro_logistic,
                                       init_loc_fn=init_to_value(values={"w": jnp.zeros(d)}),
                                       init_scale=0.1)
        svi = SVI(numpyro_logistic, guide, optimizer, Trace_ELBO(num_particles=k))
        svi_state = svi.init(jax.random.key(1), x, y)
        update = jax.jit(svi.update)

        @jax.jit
        def scanned(state, svi=svi):
            return jax.lax.scan(lambda st, _: svi.update(st, x, y), state, None, length=n)[1]

        def loop(update=update, svi_state=svi_state):
            state = svi_state
            for _ in range(n):
                state, loss = update(state, x, y)
            return loss

        def vijax_fit(log_joint, k=k):
            return vi.fit(jax.random.key(1), family.init(jnp.zeros(d), 0.1 * jnp.eye(d)),
                          log_joint, family, optimizer, num_steps=n, objective=E.ELBO(k),
                          estimator=E.Reparam(), progress=False).values

        sides = {"NumPyro jit(lax.scan(svi.update))": lambda f=scanned, st=svi_state: f(st),
                 "NumPyro jit(svi.update) in a Python loop": loop,
                 "vijax vi.fit, load_breast_cancer().log_joint":
                     lambda: vijax_fit(model.log_joint),
                 "vijax vi.fit, from_numpyro(model).log_joint":
                     lambda: vijax_fit(bridged.log_joint)}
        t = interleaved(sides, s.repeat)
        per = 1e6 / n
        for peer in list(sides)[:2]:
            for mine in list(sides)[2:]:
                r = ratio(t[peer], t[mine])
                rows.append({"particles": k, "peer": peer, "vijax": mine,
                             "peer us/step": spread(t[peer], per)["median"],
                             "vijax us/step": spread(t[mine], per)["median"],
                             "peer/vijax": r["median"], "ratio range": _range(r),
                             "target": f">= {TARGET_PEER:g}"})
        tail = max(1, n // 10)
        finals.append({"particles": k, "steps": n,
                       "NumPyro -loss (last 10%)": float(-np.mean(np.asarray(scanned(
                           svi_state))[-tail:])),
                       "vijax objective (last 10%)": float(np.mean(
                           vijax_fit(model.log_joint)[-tail:]))})
        log(f"NumPyro peer, k={k}: " + ", ".join(
            f"{r['peer'].split()[1]} / {r['vijax'].split(', ')[1]} {r['peer/vijax']:.2f}x"
            for r in rows[-4:]))
    return {"rows": rows, "finals": finals, "numpyro": numpyro.__version__, "steps": n}


# ----------------------------------------------------------------------------- figures


def plot_runs(title: str, panels: list[tuple[str, dict]], x_label: str, path: Path,
              value_label: str, reference: float | None = None,
              window: tuple[float, float] | None = None) -> str:
    """Per panel row (a group of runs): variance (log), mean SNR (log), objective."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 3, figsize=(15, 3.8 * len(panels)), squeeze=False)
    for row, (group, runs) in zip(axes, panels, strict=True):
        for label, run in runs.items():
            if "failed" in run:
                continue
            c = run["curve"]
            est = run.get("estimator", label)
            color = COLORS.get(est, None)
            if len(c["step"]):
                row[0].semilogy(c["step"], c["variance"], "o-", ms=3, color=color, label=est)
                row[1].semilogy(c["step"], np.maximum(c["snr"], 1e-6), "o-", ms=3,
                                color=color, label=est)
            if "value" in c:
                row[2].plot(c["value_step"], c["value"], "-", lw=1, color=color, label=est)
            else:
                row[2].plot(c["step"][1:], c["test -ELBO"], "o-", ms=3, color=color, label=est)
        row[0].set_ylabel("trace Cov(gradient)")
        row[1].set_ylabel("mean |mean| / std")
        row[2].set_ylabel(value_label)
        if reference is not None:
            row[2].axhline(reference, color="k", ls=":", lw=1, label="log evidence")
        if window is not None:  # the best runs' end, not the failed runs' excursions
            top = reference if reference is not None else max(
                r["curve"]["value"][-1] for r in runs.values() if "failed" not in r)
            row[2].set_ylim(top - window[0], top + window[1])
        for ax, what in zip(row, ("gradient variance", "signal-to-noise ratio", value_label),
                            strict=True):
            ax.set_xlabel(x_label)
            ax.set_title(f"{group}: {what}", fontsize=9)
        row[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return savefig(fig, path)


def plot_closed_form(a: dict, b: dict, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    ax = axes[0]
    rows = a["rows"]
    ns = [r["samples"] for r in rows]
    ax.loglog(ns, [r["|mean|"] for r in rows], "o-", ms=3, label="|MC mean of grad log q|")
    ax.loglog(ns, [r["standard error"] for r in rows], "k--", label="standard error")
    ax.set_xlabel("samples n")
    ax.set_title("the score has mean zero", fontsize=9)
    ax.legend(fontsize=7)
    colors = {"total (Reparam)": "C0", "STL": "C2", "score": "C7"}
    for ax, (start, res) in zip(axes[1:3], b["paths"].items(), strict=True):
        for label, color in colors.items():
            ax.semilogy(b["t"], np.maximum(res[label], 1e-30), "o", ms=3, color=color,
                        label=f"{label} (MC, {b['samples']:,})")
        ax.semilogy(b["t"], res["closed form total"], "-", color="C0", lw=1,
                    label="total (closed form)")
        ax.semilogy(b["t"][1:], res["closed form STL"][1:], "-", color="C2", lw=1,
                    label="STL (closed form; 0 at t = 0)")
        ax.set_xlabel("t (0 = posterior, 1 = start)")
        ax.set_ylabel("trace Cov, one ELBO(1) gradient")
        ax.set_title(f"{start}, mean +3 sigma; KL {res['KL'][-1]:.3g} -> 0", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[3]
    ax.loglog(b["crossover_r"], b["crossover_ratio"], "-")
    ax.axhline(1.0, color="gray", ls=":")
    ax.axvline(0.5, color="C3", ls="--", lw=1, label="s^2 = sigma^2 / 2")
    ax.set_xlabel("r = s^2 / sigma^2 at the posterior mean")
    ax.set_ylabel("Var(total) / Var(STL)")
    ax.set_ylim(1e-3, 1e4)
    ax.set_title("closed form: total lower iff r < 1/2 (STL's is 0 at r = 1)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return savefig(fig, path)


# ----------------------------------------------------------------------------- entry points


CONJ_COLUMNS = ["exact ELBO", "KL(q || posterior)", "objective (last 10% of steps)",
                "variance start", "variance end", "closed-form variance end", "SNR end"]
LR_COLUMNS = ["ELBO (20,000 draws)", "objective (last 10% of steps)", "variance start",
              "variance end", "SNR end"]


def run_all(s: Settings, out: Path, log) -> dict:
    """Every study and timing at the size ``s``; PNGs into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"settings": dataclasses.asdict(s),
                 "load_average_start": os.getloadavg()[0]}  # other processes on the machine
    res["conjugate"] = conj = study_conjugate(s, log)
    res["logistic"] = lr = study_logistic(s, log)
    res["vae"] = vae = study_vae(s, log)
    res["score_mean_zero"] = a = score_mean_zero(s, log)
    res["variance_vs_distance"] = b = variance_vs_distance(s, log)
    res["per_sample"] = speed_per_sample(s, log)
    res["train_step"] = speed_train_step(s, log)
    res["vae_epoch"] = speed_vae(vae)
    res["numpyro"] = speed_numpyro(s, log)
    res["load_average_end"] = os.getloadavg()[0]
    res["png"] = {
        "conjugate": plot_runs(
            f"Conjugate Gaussian (D = 5, N = 20), mean field, {conj['objective']}, Adam "
            f"{conj['learning_rate']}; {conj['replicates']} gradient estimates per point",
            [(conj["objective"], conj["runs"])], "step", out / f"{NAME}_conjugate.png",
            "ELBO estimate (running mean)", reference=conj["log_evidence"], window=(50, 5)),
        "logistic": plot_runs(
            f"Logistic regression, breast cancer ({lr['data']}), full rank "
            f"({lr['parameters']} parameters), {lr['objective']}, Adam {lr['learning_rate']}"
            f"; {lr['replicates']} gradient estimates per point",
            [(lr["objective"], lr["runs"])], "step", out / f"{NAME}_logistic.png",
            "ELBO estimate (running mean)", window=(400, 20)),
        "vae": plot_runs(
            f"VAE 784-64-8 on mnist5k, Adam 1e-3, batch 100; encoder gradient on "
            f"{vae['batch']} fixed images, {vae['replicates']} estimates per point",
            [(o, {n: r for n, r in vae["runs"].items() if r["objective"] == o})
             for o in dict.fromkeys(r["objective"] for r in vae["runs"].values())],
            "step", out / f"{NAME}_vae.png", "test -ELBO (nats)"),
        "closed_form": plot_closed_form(a, b, out / f"{NAME}_closed_form.png"),
    }
    return res


def tables(res: dict) -> dict[str, list[dict]]:
    vae = res["vae"]
    nll = f"test NLL (IWAE, k={vae['nll_samples']})"
    return {
        "conjugate": run_rows(res["conjugate"]["runs"], CONJ_COLUMNS),
        "logistic": run_rows(res["logistic"]["runs"], LR_COLUMNS),
        "vae": [{"objective": r["objective"],
                 **run_rows({r["estimator"]: r}, ["train objective (last epoch)", "test -ELBO",
                                                  nll, "variance start", "variance end",
                                                  "SNR end"])[0]}
                for r in vae["runs"].values()],
        "per_sample": [res["per_sample"]["row"]],
        "train_step": res["train_step"] + res["vae_epoch"],
        "numpyro": res["numpyro"]["rows"],
        "numpyro_final": res["numpyro"].get("finals", []),
    }


def markdown(res: dict) -> str:
    t = tables(res)
    conj, lr, vae = res["conjugate"], res["logistic"], res["vae"]
    png = res["png"]
    ps = res["per_sample"]["row"]
    peer = res["numpyro"]
    peer_md = (markdown_table(t["numpyro"]) + "\n\n" + markdown_table(t["numpyro_final"])
               if t["numpyro"] else f"NumPyro: {peer.get('missing', 'peer missing')}.")
    last = res["score_mean_zero"]["rows"][-1]
    undiagnosed = "" if not any((m, e) in UNDIAGNOSED for m in ("logistic",)
                                for e in lr["runs"]) else (
        "\nThe score control variate is trained here without `vi.fit`'s diagnostics: its "
        "gradient `vmap`ped over replicates on the full-rank family (what "
        "`diagnostics.gradient_samples` and `vi.fit(diagnostics_every=...)` run) hangs on "
        "XLA:CPU with jaxlib 0.10.2 after some 50-500 calls (reported; the mean-field family "
        "and the unvmapped gradient are not affected).\n")
    vae_speed = ("the VAE's epochs from the study (the first epoch, which compiles, left out)."
                 if res["vae_epoch"] else "the VAE's epochs are timed at the full size only.")
    narrow = next(iter(res["variance_vs_distance"]["paths"].values()))
    return f"""## Gradient estimators compared

Every estimator that applies, trained from the same initial parameters with the same keys;
along the run, `vi.fit(..., diagnostics_every, num_replicates)` draws replicate gradient
estimates at the current parameters and records their total variance (trace of the
covariance) and mean signal-to-noise ratio (`|mean| / std` per coordinate, averaged). SNR
falls towards 0 near an optimum, where the mean gradient vanishes.

### Conjugate Gaussian

D = 5, 20 observations, prior s.d. 2, mean-field family from loc 0, scale 1 (the posterior
s.d. is {conj['posterior_sd']:.3f}); {conj['objective']}, Adam {conj['learning_rate']},
{conj['steps']:,} steps, {conj['replicates']} replicates every {conj['every']} steps. Log
evidence {conj['log_evidence']:.3f}. The closed-form variance (total derivative and STL, from
`ConjugateGaussian.gradient_variance`, divided by k = 4) checks the Monte-Carlo record.

{markdown_table(t['conjugate'])}

![conjugate]({png['conjugate']})

### Bayesian logistic regression (breast cancer)

scikit-learn's breast cancer data ({lr['data']}, standardised, intercept), prior N(0, 1),
full-rank Gaussian ({lr['parameters']} parameters) from loc 0, scale 0.1 I; {lr['objective']},
Adam {lr['learning_rate']}, {lr['steps']:,} steps, {lr['replicates']} replicates every
{lr['every']} steps; final ELBO from {lr['final_draws']:,} draws.

{markdown_table(t['logistic'])}
{undiagnosed}

![logistic]({png['logistic']})

### VAE (mnist5k)

784-64-8 (leaky ReLU), Adam 1e-3, batch 100, {vae['train_images']:,} training images,
{vae['epochs']} epochs of {vae['steps_per_epoch']} steps, each epoch one `vijax.vae.fit` call
resumed from its checkpoint. Variance and SNR: {vae['replicates']} replicates of the encoder's
gradient (`bound_gradient(...)[1]["encoder"]`) on {vae['batch']} fixed training images; test
-ELBO (analytic KL) and NLL on {vae['test_images']:,} test images. The "train objective" is
the run's own objective (ELBO(5) or IWAE(5)), averaged over the last epoch.

{markdown_table(t['vae'])}

![vae]({png['vae']})

### Closed-form checks

At n = {last['samples']:,} the Monte-Carlo mean of the score has norm {last['|mean|']:.2e}
against a standard error of {last['standard error']:.2e}. Along the path from a q 10x too
narrow, at the posterior STL's variance is {narrow['STL'][0]:.1e} (0 in closed form), the
total derivative's {narrow['total (Reparam)'][0]:.3g}; far from it the total derivative is the
lower ({narrow['total (Reparam)'][-1]:.3g} against {narrow['STL'][-1]:.3g}): in closed form it
is lower exactly when q's variance is below half the posterior's (right panel).

![closed form]({png['closed_form']})

### Speed

Each pair timed in the same run, the sides in turn within each of the rounds; medians, and
the range of the round-by-round ratios (1-minute load average of the machine
{res['load_average_start']:.1f} at the start, {res['load_average_end']:.1f} at the end).
Per-sample gradients: one `diagnostics.gradient_samples` call against a Python loop of
`jax.jit(jax.grad(surrogate))`; the loop is timed over {ps['loop keys timed']} keys and
scaled to 1,000 (same keys, gradients equal to {ps['max |difference|']:.1e}).

{markdown_table(t['per_sample'])}

A training step with each estimator against the total derivative with the same objective:
`vi.fit` on the logistic regression ({res['settings']['step_steps']:,} steps per timing,
divided); {vae_speed}

{markdown_table(t['train_step'])}

NumPyro {peer.get('numpyro', '')}: the same logistic regression written as a NumPyro model
with an `AutoMultivariateNormal` guide (full rank, loc 0, scale 0.1 I) and
`SVI(model, guide, optax.adam(1e-2), Trace_ELBO(num_particles=k))`, {peer.get('steps', 0):,}
steps, timed two ways: its update jitted inside one `lax.scan` (NumPyro's fastest honest path:
`svi.run(progress_bar=False)` is the same scan but traced and compiled at every call) and
its jitted `svi.update` in a Python loop; against `vi.fit` (total derivative, the same
particles, family, optimizer and initial point) on the library's `load_breast_cancer()` log
joint and on the NumPyro model itself through `vijax.models.from_numpyro`. Ratio: NumPyro's
time over vijax's.

{peer_md}
"""


def report(out: Path, log) -> dict:
    """The report section, at the quick size."""
    res = run_all(QUICK, out, log)
    return {"markdown": markdown(res), "numbers": {**res, "tables": tables(res)}}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    out = args.out or Path(__file__).resolve().parent / "results"
    log = Log(prefix=f"{NAME}: ")
    res = run_all(QUICK if args.quick else FULL, out, log)
    for name, rows in tables(res).items():
        if rows:
            print(f"\n{name}")
            print_table(rows)
    path = write_json(out / f"{NAME}.json", {**res, "tables": tables(res), "quick": args.quick})
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
