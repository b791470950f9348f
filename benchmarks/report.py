"""The main job: every study at a quick default size, written as a report folder.

    python benchmarks/report.py --out report/

Writes ``report.md`` (a Markdown summary with tables), PNG figures and ``report.json`` (every
number). Uses only embedded data; nothing is downloaded. Each section is the ``report``
function of a benchmark script, which returns its Markdown and its numbers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

from _harness import Log, environment, markdown_table, write_json  # noqa: E402

# Section modules (benchmark scripts in this folder), in report order.
SECTIONS = ["cavi", "cavi_scale", "samplers", "gradient_variance", "vae", "vae_estimators",
            "discrete_vae"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("report"), help="report folder")
    p.add_argument("--only", nargs="*", default=None, choices=SECTIONS,
                   help="run only these sections")
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = Log()
    env = environment()
    log(f"vijax report on {env['device']} ({env['backend']}), JAX {env['jax']}")

    parts = ["# vijax report", "", markdown_table([env]), ""]
    numbers: dict[str, object] = {}
    for name in args.only or SECTIONS:
        module = importlib.import_module(name)
        t0 = time.perf_counter()
        log(f"section {name}: start")
        section = module.report(out, Log(prefix=f"{name}: "))
        seconds = time.perf_counter() - t0
        log(f"section {name}: done in {seconds:.1f}s")
        parts += [section["markdown"].rstrip(), "", f"*Section time: {seconds:.1f} s.*", ""]
        numbers[name] = {**section["numbers"], "seconds": seconds}

    (out / "report.md").write_text("\n".join(parts) + "\n")
    write_json(out / "report.json", numbers)
    log(f"wrote {out / 'report.md'} and {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
