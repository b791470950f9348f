"""VAE: where the time of a training epoch and of the IWAE evaluation goes, op by op.

    python benchmarks/vae_profile.py [--quick] [--out DIR]

Traces (``jax.profiler``) one epoch of ``vijax.vae.train_epoch`` on Fashion-MNIST (batch 100,
the course's network; 60,000 images, 6,000 with ``--quick``) and one ``iwae_nll`` call on
100 test images (``k = 5000``; 500 with ``--quick``), and sums the time of every XLA
operation the CPU runtime executed, grouped by what it computes. The groups come from the
optimised HLO that ``XLA_FLAGS=--xla_dump_to`` writes (each operation's ``op_name``):

- ``matmul``: a ``dot`` or a fusion that holds one (the elementwise work XLA fused into it
  included: the Bernoulli log-likelihood and its sum ride on the logits' product);
- ``noise``: the Gaussian draws (random bits and their transformation);
- ``optimizer``: the optimiser's update (``jax.named_scope("optimizer")`` in the step);
- ``gather``: the epoch's shuffle and the batch taken from the images;
- ``elementwise``: the rest (activations and their derivatives, bias gradients, the KL,
  copies and transposes, the log-sum-exp);
- ``thread-pool wait``: time a thread spent waiting for the pool's other thread.

The shares are of the summed operation time (both threads); the epoch's wall time is printed
beside it. Results: ``vae_profile.json``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_DUMP = tempfile.mkdtemp(prefix="vijax_hlo_")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme"
                           f"=true --xla_dump_to={_DUMP} --xla_dump_hlo_as_text").strip()
sys.path.insert(0, str(Path(__file__).resolve().parent))

import collections  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _harness import Log, loadavg, parser, print_table, write_json  # noqa: E402
from jax.profiler import ProfileData  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from vijax.data.mnist import FASHION_MNIST_DIR, load_mnist  # noqa: E402
from vijax.vae import VAE, VAEConfig, init, iwae_nll, make_mesh, train_epoch  # noqa: E402

GROUPS = ("matmul", "noise", "optimizer", "gather", "elementwise", "thread-pool wait")
#: The Gaussian draws: their random bits (threefry rounds: the only loop nested in a step or
#: a chunk, unnamed inside a ``jvp``) and their transformation (``erf_inv``).
_NOISE = re.compile(r"random|threefry|_normal|_uniform|erf_inv|_blocks|bits|"
                    r"closed_call/(jvp\(\)/)?while|shift_right_logical|shift_left")
_GATHER = re.compile(r"gather|_take|_shuffle|_batch_order|permutation")


def _hlo_ops(module: str) -> dict[str, tuple[str, bool]]:
    """``{instruction: (op_name, holds a dot)}`` from the dumped optimised HLO of ``module``."""
    ops: dict[str, tuple[str, bool]] = {}
    for path in Path(_DUMP).glob(f"*{module}*after_optimizations.txt"):
        text = path.read_text()
        dot_computations = {m.group(1) for m in re.finditer(
            r"\n%?([\w.\-]+) [^\n]*\{\n(?:(?!\n\}).)*? dot\(", text, re.S)}
        for m in re.finditer(r"%([\w.\-]+) = ([^\n]*)", text):
            name, rest = m.group(1), m.group(2)
            opcode = re.search(r"[\]\)}] (\w[\w\-]*)\(", rest)  # after the shape
            opcode = opcode.group(1) if opcode else ""
            op_name = re.search(r'op_name="([^"]*)"', rest)
            calls = re.search(r"calls=%([\w.\-]+)", rest)
            is_dot = opcode == "dot" or (calls is not None and calls.group(1) in dot_computations)
            ops[name] = (op_name.group(1) if op_name else "", is_dot)
    return ops


def _group(event: str, ops: dict[str, tuple[str, bool]]) -> str:
    if "Await" in event:
        return "thread-pool wait"
    op_name, is_dot = ops.get(event, ("", False))
    if is_dot:
        return "matmul"
    if "/optimizer" in op_name:
        return "optimizer"
    if _GATHER.search(op_name) or "gather" in event:
        return "gather"
    if _NOISE.search(op_name):
        return "noise"
    return "elementwise"


def _exclusive_seconds(events) -> collections.Counter:
    """Seconds per operation name on one thread, less the operations nested in it (a
    ``while`` loop's body runs inside the loop's event); the executor's own events dropped."""
    spans = sorted(((e.start_ns, e.end_ns, e.name) for e in events),
                   key=lambda s: (s[0], -s[1]))
    own: collections.Counter = collections.Counter()
    stack: list[tuple[int, int, str]] = []
    for start, end, name in spans:
        while stack and stack[-1][1] <= start:
            stack.pop()
        if stack:
            own[stack[-1][2]] -= (min(end, stack[-1][1]) - start) * 1e-9
        own[name] += (end - start) * 1e-9
        stack.append((start, end, name))
    for name in [n for n in own if n.startswith(("ThunkExecutor", "ThreadpoolListener"))]:
        del own[name]
    return own


def _profile(fn, module: str, trace_dir: Path) -> dict:
    """Wall seconds of ``fn()`` under the profiler, and its operation time by group."""
    with jax.profiler.trace(str(trace_dir)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        wall = time.perf_counter() - t0
    ops = _hlo_ops(module)
    data = ProfileData.from_file(str(next(trace_dir.rglob("*.xplane.pb"))))
    by_op: collections.Counter = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if line.name.startswith("tf_XLAEigen"):
                by_op.update(_exclusive_seconds(line.events))
    groups = dict.fromkeys(GROUPS, 0.0)
    for name, seconds in by_op.items():
        groups[_group(name, ops)] += seconds
    total = sum(groups.values())
    top = [{"op": name, "group": _group(name, ops), "seconds": s,
            "op_name": ops.get(name, ("", False))[0][-100:]} for name, s in by_op.most_common(12)]
    return {"wall_seconds": wall, "op_seconds": total, "groups": groups,
            "shares": {g: s / total for g, s in groups.items()}, "top_ops": top}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    out = args.out or Path("benchmarks/results")
    log = Log("vae_profile: ")
    data = load_mnist(FASHION_MNIST_DIR)
    n = 6000 if args.quick else data.train_images.shape[0] // 100 * 100
    k = 500 if args.quick else 5000
    model, optimizer = VAE(VAEConfig()), optax.adam(1e-3)
    mesh = make_mesh()
    x = jax.device_put(jnp.round(jnp.asarray(data.train_images[:n])),
                       NamedSharding(mesh, P("data")))
    state = jax.device_put(init(jax.random.PRNGKey(0), model, optimizer),
                           NamedSharding(mesh, P()))

    def epoch():
        nonlocal state
        state, losses = train_epoch(state, x, model=model, optimizer=optimizer, mesh=mesh)
        return losses

    for _ in range(2):  # compile, then one warm epoch
        jax.block_until_ready(epoch())
    t0 = time.perf_counter()
    jax.block_until_ready(epoch())
    untraced = time.perf_counter() - t0
    log(f"epoch of {n} images: {untraced:.2f} s untraced; tracing one (load {loadavg()})")
    tmp = Path(tempfile.mkdtemp(prefix="vijax_trace_"))
    train = _profile(epoch, "jit_epoch", tmp / "epoch")
    train["untraced_wall_seconds"] = untraced

    test = jnp.asarray(np.round(data.test_images[:100]))
    iwae_nll(jax.random.PRNGKey(1), model, state.params, test, k)  # compile
    log(f"IWAE k = {k}, 100 images (load {loadavg()})")
    iwae = _profile(lambda: iwae_nll(jax.random.PRNGKey(2), model, state.params, test, k),
                    "iwae_batch", tmp / "iwae")

    rows = [{"group": g, "epoch (s)": train["groups"][g], "epoch share": train["shares"][g],
             "IWAE (s)": iwae["groups"][g], "IWAE share": iwae["shares"][g]} for g in GROUPS]
    rows.append({"group": "all operations", "epoch (s)": train["op_seconds"],
                 "epoch share": 1.0, "IWAE (s)": iwae["op_seconds"], "IWAE share": 1.0})
    print(f"epoch: {n} images, batch 100, {train['wall_seconds']:.2f} s traced "
          f"({untraced:.2f} s untraced); IWAE: k = {k}, 100 images, {iwae['wall_seconds']:.2f} s; "
          f"load {loadavg()}")
    print_table(rows)
    for name, result in (("epoch", train), ("IWAE", iwae)):
        print(f"largest operations, {name}:")
        print_table(result["top_ops"], ["op", "group", "seconds", "op_name"])
    path = write_json(out / "vae_profile.json", {
        "quick": args.quick, "train_images": n, "iwae_k": k, "iwae_images": 100,
        "epoch": train, "iwae": iwae, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
