"""Search quality of the algorithmic agents against the baselines, beyond the one table we tune on.

Two tables of figures, each cell ``runs`` seeded runs per method (``archsmith bench``'s harness):

* ``robustness``: rs, rea, ea and the agents (default settings) on NAS-Bench-201 CIFAR-10 with
  ``valid_acc`` as the signal at budgets 50/100/200, with ``test_acc`` as the signal (another
  column), and on synthetic tables of other structure (benchmarks/synthetic_tables.py: additive,
  interactions, noisy, anticost, needle; positions space, 8 x 3 options).
* ``ablation``: the agents on NAS-Bench-201 CIFAR-10 (budget 100) with search.strategy (model /
  evolution) x search.warm_start (cost_aware / random) x search.operator_bandit (on / off).

Per cell and method: runs that reached the table's best signal (ties count), the median
evaluations to reach it, the mean regret (table best minus best found), and for the agents the
share of wall time in their score model. Each cell is saved as JSON under ``--out`` as it
finishes, so a stopped benchmark resumes where it was (``--fresh`` recomputes). The markdown
report (``--out``/search_bench.md) names the git commit it ran on.

Usage: ``python benchmarks/search_bench.py [robustness|ablation|all] [--runs 10]
[--out benchmarks/results/search]``. About 25 minutes for ``all`` on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from archsmith.graph.bench import BenchResult, BenchSpec, run_bench
from archsmith.graph.bench_agents import run_agents
from archsmith.tools.tabular import TabularSpec

HERE = Path(__file__).resolve().parent
BASELINES = ("rs", "rea", "ea")
POSITIONS = {"length": 8, "options": ["0", "1", "2"]}


@dataclass
class Cell:
    name: str
    table: str
    signal: str = "valid_acc"
    budget: int = 100
    space: str = "nb201"
    settings: dict = field(default_factory=dict)
    methods: dict[str, list[str]] = field(default_factory=dict)  # agents variants: name -> overrides
    baselines: bool = True


def robustness_cells(synthetic_dir: Path) -> list[Cell]:
    default = {"agents": []}
    cells = [Cell(f"nb201-cifar10-valid-b{b}", "builtin:nasbench201-cifar10", budget=b, methods=default)
             for b in (50, 100, 200)]
    cells.append(Cell("nb201-cifar10-test-as-signal", "builtin:nasbench201-cifar10", signal="test_acc",
                      methods=default))
    for kind in ("additive", "interactions", "noisy", "anticost", "needle"):
        cells.append(Cell(f"synthetic-{kind}", str(synthetic_dir / f"{kind}.csv"), space="positions",
                          settings=POSITIONS, methods=default))
    return cells


def ablation_cells() -> list[Cell]:
    variants = {}
    for strategy in ("model", "evolution"):
        for warm in ("cost_aware", "random"):
            for bandit in (True, False):
                name = f"{strategy}/{warm}/{'bandit' if bandit else 'uniform'}"
                variants[name] = [f"search.strategy={strategy}", f"search.warm_start={warm}",
                                  f"search.operator_bandit={'true' if bandit else 'false'}"]
    return [Cell("ablation-nb201-cifar10-b100", "builtin:nasbench201-cifar10", methods=variants, baselines=False)]


def run_cell(cell: Cell, runs: int) -> BenchResult:
    spec = BenchSpec(space=cell.space, space_settings=cell.settings,
                     table=TabularSpec(path=cell.table, signal=cell.signal), test_metric="test_acc",
                     budget=cell.budget, runs=runs,
                     methods=[*(BASELINES if cell.baselines else ()), *cell.methods])
    extra = {name: partial(run_agents, overrides=overrides, space_settings=cell.settings)
             for name, overrides in cell.methods.items()}
    return run_bench(spec, methods=extra)


def summary_rows(result: BenchResult) -> list[dict]:
    rows = []
    for name, method in result.methods.items():
        wall = method.wall_seconds
        rows.append({
            "method": name,
            "reached": f"{method.runs_reaching_best_valid}/{len(method.runs)}",
            "median_evals": method.median_evals_to_best_valid,
            "regret_mean": method.regret_mean,
            "regret_std": method.regret_std,
            "test_of_best_mean": method.test_of_best_valid_mean,
            "wall_s": round(wall, 2),
            "model_share": round(method.model_seconds / wall, 3) if method.model_seconds and wall else None,
        })
    return rows


def markdown(name: str, rows: list[dict]) -> str:
    def num(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = [f"### {name}", "", "| method | reached | median evals | mean regret | test of best | wall s | model share |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        share = "-" if r["model_share"] is None else f"{100 * r['model_share']:.0f}%"
        lines.append(f"| {r['method']} | {r['reached']} | {num(r['median_evals'], 1)} | "
                     f"{num(r['regret_mean'])} ± {num(r['regret_std'])} | {num(r['test_of_best_mean'], 2)} | "
                     f"{r['wall_s']} | {share} |")
    return "\n".join(lines) + "\n"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="?", default="all", choices=("robustness", "ablation", "all"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "search")
    parser.add_argument("--fresh", action="store_true", help="recompute cells already saved")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    code = commit()  # the code this process runs: HEAD may move while a long benchmark goes on
    from synthetic_tables import KINDS, table, write  # noqa: PLC0415 (a sibling script)

    with tempfile.TemporaryDirectory(prefix="archsmith-synthetic-") as scratch:
        synthetic = Path(scratch)
        for kind in KINDS:
            write(synthetic / f"{kind}.csv", table(kind, 8, 3, seed=0))
        cells = []
        if args.which in ("robustness", "all"):
            cells += robustness_cells(synthetic)
        if args.which in ("ablation", "all"):
            cells += ablation_cells()
        report = ["# Search benchmark (each cell names the commit it ran on; cells saved earlier are reused)", ""]
        for cell in cells:
            saved = args.out / f"{cell.name}.json"
            if saved.is_file() and not args.fresh:
                record = json.loads(saved.read_text())
            else:
                started = time.perf_counter()
                rows = summary_rows(run_cell(cell, args.runs))
                record = {"cell": cell.name, "commit": code, "runs": args.runs,
                          "seconds": round(time.perf_counter() - started, 1), "rows": rows}
                saved.write_text(json.dumps(record, indent=2) + "\n")
            text = markdown(f"{cell.name} (commit {record['commit']}, {record['runs']} runs)", record["rows"])
            print(text, flush=True)
            report.append(text)
        (args.out / "search_bench.md").write_text("\n".join(report))


if __name__ == "__main__":
    main()
