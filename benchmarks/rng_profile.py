"""Where the time of the random-number rows goes: bits, transform, memory, gradient, dispatch.

    python benchmarks/rng_profile.py [--quick] [--out DIR]

Three rows of the performance issue, each split into pieces timed in turn (interleaved, several
rounds; median and min-max), with ``jax.random`` beside ``vijax.random`` (the same numbers for
a Threefry key; the cipher unrolled and fused), and the compiled HLO of each piece summarised
(fusions, while loops, XOR instructions: the Threefry cipher has 21 XORs per copy, so the count
shows how often XLA evaluates it):

- the exponential, 10 million draws: words, uniforms, ``samplers.exponential``, and a fresh
  array written once (``2 x``), the memory floor of any sampler returning 10 million floats;
- the relaxed categorical, K = 10, 10 million draws (100 million Gumbel variates);
- per-sample gradients, 1,000 x D = 100 (``gradient_variance.speed_per_sample``, the row
  itself, and its pieces: the key split, the noise for 1,000 split keys, the gradient given
  the noise, an empty jitted call).
"""

from __future__ import annotations

import os
import re
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _harness import Log, block, parser, print_table, write_json  # noqa: E402
from gradient_variance import FULL, QUICK, conjugate_model, speed_per_sample  # noqa: E402

from vijax import diagnostics as D  # noqa: E402
from vijax import estimators as E  # noqa: E402
from vijax import random as R  # noqa: E402
from vijax import samplers as S  # noqa: E402
from vijax.families import GaussianParams, MeanFieldGaussian  # noqa: E402

NAME = "rng_profile"


def hlo_summary(fn, *args) -> dict:
    """Fusions, while loops and XOR instructions of ``jax.jit(fn)``'s optimised HLO."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return {"fusions": len(re.findall(r"= [^=]*\bfusion\(", text)),
            "while_loops": len(re.findall(r"\bwhile\(", text)),
            "xor": len(re.findall(r"\bxor\(", text))}


def pieces(cases: dict, repeat: int, log, label: str) -> list[dict]:
    """``cases``: ``{piece: (fn, args)}``; each jitted, warmed up, timed in turn."""
    jitted = {name: (jax.jit(fn), args) for name, (fn, args) in cases.items()}
    times: dict = {name: [] for name in cases}
    for f, args in jitted.values():
        block(f(*args))
    for _ in range(repeat):
        for name, (f, args) in jitted.items():
            t0 = time.perf_counter()
            block(f(*args))
            times[name].append(time.perf_counter() - t0)
    rows = []
    for name, (fn, args) in cases.items():
        t = np.asarray(times[name])
        rows.append({"row": label, "piece": name, "ms": 1e3 * float(np.median(t)),
                     "ms min": 1e3 * float(t.min()), "ms max": 1e3 * float(t.max()),
                     **hlo_summary(fn, *args)})
        log(f"{label}: {name} {rows[-1]['ms']:.3f} ms")
    return rows


def sampler_rows(n: int, repeat: int, log) -> list[dict]:
    key = jax.random.key(0)
    k = 10
    logits = np.linspace(-1.0, 1.0, k).astype(np.float32)
    tiny = float(np.finfo(np.float32).tiny)
    ones = jnp.ones(n)
    ones_k = jnp.ones((n, k))
    exp = {
        f"write {n:,} floats (2 x)": (lambda x: 2 * x, (ones,)),
        "vijax.random.bits": (lambda key: R.bits(key, (n,)), (key,)),
        "jax.random.bits": (lambda key: jax.random.bits(key, (n,)), (key,)),
        "vijax.random.uniform": (lambda key: R.uniform(key, (n,)), (key,)),
        "jax.random.uniform": (lambda key: jax.random.uniform(key, (n,)), (key,)),
        "samplers.exponential": (partial(S.exponential, sample_shape=(n,)), (key,)),
        "-log1p(-jax.random.uniform)": (
            lambda key: -jnp.log1p(-jax.random.uniform(key, (n,))), (key,)),
    }
    rel = {
        f"write {n * k:,} floats (2 x)": (lambda x: 2 * x, (ones_k,)),
        "vijax.random.bits": (lambda key: R.bits(key, (n, k)), (key,)),
        "jax.random.bits": (lambda key: jax.random.bits(key, (n, k)), (key,)),
        "samplers.gumbel": (partial(S.gumbel, sample_shape=(n, k)), (key,)),
        "samplers.gumbel_softmax": (partial(S.gumbel_softmax, sample_shape=(n,), logits=logits),
                                    (key, 0.5)),
        "softmax((logits + Gumbel from jax.random) / T)": (
            lambda key: jax.nn.softmax((logits - jnp.log(-jnp.log(
                jax.random.uniform(key, (n, k), minval=tiny)))) / 0.5, axis=-1), (key,)),
    }
    rows = pieces(exp, repeat, log, f"exponential, {n:,}")
    rows += pieces(rel, max(3, repeat // 2), log, f"relaxed categorical K={k}, {n:,}")
    return rows


def per_sample_rows(repeat: int, log) -> list[dict]:
    model = conjugate_model(dim=100)
    family = MeanFieldGaussian()
    post = model.posterior()
    q = GaussianParams(post.loc + 0.5, post.log_scale + 0.3)
    g = E.gradient(model.log_joint, family, objective=E.ELBO(1), estimator=E.Reparam())

    def fn(k, p):
        return g.raw(k, p, ()).grad

    def given_noise(p, eps):  # ELBO(1) Reparam written out, for the breakdown only
        def one(p, e):
            return model.log_joint(p.loc + jnp.exp(p.log_scale) * e) + family.entropy(p)
        return jax.vmap(jax.grad(one), in_axes=(None, 0))(p, eps)

    key = jax.random.key(4)
    eps = jax.random.normal(key, (1000, 100))
    cases = {
        "empty jitted call": (lambda p: p, (q,)),
        "split 1,000 keys": (lambda key: jax.random.split(key, 1000), (key,)),
        "noise, vijax.random.normal per split key": (
            lambda key: jax.vmap(lambda k: R.normal(k, (100,)))(jax.random.split(key, 1000)),
            (key,)),
        "noise, jax.random.normal per split key": (
            lambda key: jax.vmap(lambda k: jax.random.normal(k, (100,)))(
                jax.random.split(key, 1000)), (key,)),
        "gradient given the noise": (given_noise, (q, eps)),
        "diagnostics.gradient_samples": (
            lambda key, p: D.gradient_samples(key, fn, p, 1000), (key, q)),
    }
    return pieces(cases, repeat, log, "per-sample gradients 1,000 x 100")


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    out = args.out or Path(__file__).resolve().parent / "results"
    log = Log(prefix=f"{NAME}: ")
    s = QUICK if args.quick else FULL
    load_start = os.getloadavg()
    rows = sampler_rows(100_000 if args.quick else 10_000_000, 3 if args.quick else 7, log)
    rows += per_sample_rows(20 if args.quick else 200, log)
    print_table(rows)
    per_sample = speed_per_sample(s, log)
    print_table([per_sample["row"]])
    path = write_json(out / f"{NAME}.json", {
        "pieces": rows, "per_sample": per_sample, "quick": args.quick,
        "load_average_start": load_start, "load_average_end": os.getloadavg()})
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
