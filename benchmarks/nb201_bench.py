"""Search methods on NAS-Bench-201 CIFAR-10: the default bench (100 distinct archs x 10 runs).

Usage::

    python benchmarks/nb201_bench.py [--table PATH] [--methods rs,rea,reinforce,agents] [--out DIR]

Runs rs, rea and reinforce, plus agents when ``archsmith.graph.bench_agents`` is importable
(unless --methods says otherwise), and prints the table (± = population std over runs, ddof=0)
with the wall time per method. Published figures on this protocol (test accuracy of the chosen
arch, 100 archs): RS 93.83 ± 0.09, REINFORCE 93.94 ± 0.25, REA 94.21 ± 0.25.

Also printed: the process's CPU time beside the wall time (the bench is single-threaded, so on a
machine shared with other work the CPU time is what the wall time would be on an idle one) and
the agents' score-model share. With ``--out`` the printed text is saved as ``summary.txt`` with
the commit it ran on (``benchmarks/results/default_bench``).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import time
from pathlib import Path

from rich.console import Console

from archsmith.graph.bench import BenchSpec, run_bench
from archsmith.graph.bench_output import render_table, write_outputs
from archsmith.tools.tabular import TabularSpec, builtin_table

DEFAULT_TABLE = builtin_table("nasbench201-cifar10")  # shipped in the package (gzip)


def default_methods() -> list[str]:
    methods = ["rs", "rea", "reinforce"]
    if importlib.util.find_spec("archsmith.graph.bench_agents") is not None:
        methods.append("agents")
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE,
                        help="NAS-Bench-201 CIFAR-10 CSV (default: the packaged table)")
    parser.add_argument("--methods", default=None, help="comma-separated (default: rs,rea,reinforce[,agents])")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write results.json, CSVs and curves.png here")
    args = parser.parse_args()
    methods = args.methods.split(",") if args.methods else default_methods()
    spec = BenchSpec(
        space="nb201",
        table=TabularSpec(path=str(args.table), dataset="cifar10"),
        budget=args.budget,
        runs=args.runs,
        methods=methods,
        seed=args.seed,
    )
    console = Console(record=True, width=120)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = run_bench(spec, progress=lambda m, done, total: done == total and console.print(f"{m}: {total} runs done"))
    console.print(render_table(result))
    console.print(f"total wall time {time.perf_counter() - started:.1f} s, CPU time "
                  f"{time.process_time() - cpu_started:.1f} s (table load included)")
    if args.out:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
        paths = list(write_outputs(result, args.out).values())
        console.print(f"commit {commit or 'unknown'}")
        (args.out / "summary.txt").write_text(console.export_text(), encoding="utf-8")
        for path in paths:
            console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
