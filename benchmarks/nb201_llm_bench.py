"""NAS-Bench-201 CIFAR-10 with LLM agents (the CoLLM-NAS setting) beside the algorithmic methods.

    python scripts/local_llm.py prepare
    python benchmarks/nb201_llm_bench.py [--runs 3] [--start 0] [--budget 100] [--runs-dir DIR]
                                         [--threads 2] [--save benchmarks/results/nb201_llm]
    python benchmarks/nb201_llm_bench.py --resume RUN_DIR... # go on with stopped runs to their budget
    python benchmarks/nb201_llm_bench.py --report DIR        # the tables for runs already in DIR
    python benchmarks/nb201_llm_bench.py --navigator algorithmic --proposals 3 --budget 50 --runs 1
        # the LLM proposes three children per plan, the score model keeps the best (issue 19)

Runs can go side by side, one process each (``--start K --runs 1``), each with its own server:
on 2 cores, two single-thread servers give about 1.4 times the output tokens per second of one
two-thread server (28 + 28 against 41 tokens/s, measured 2026-11-23), so three runs at once with
``--threads 1`` finish sooner than three in a row.

Each run is the agent graph on the nb201 space with the Navigator (with its memory of the
trajectory) and the Generator (without one) driven by Qwen2.5-Coder-0.5B on a llama.cpp server that
the run starts; every child is scored by the NAS-Bench-201 table (``--table``), as in ``archsmith
bench``: the budget is distinct architectures evaluated. Run directories are kept in ``--runs-dir``
(traces included) so that ``--report`` can tabulate finished and stopped runs; each run's figures
are also written beside them as ``<run>.summary.json`` (and into ``--save DIR``), which ``--report``
reads too, so that figures outlive the run directories. ``benchmarks/results/nb201_llm`` keeps the
summaries the README quotes.

Printed: per LLM run the table's test accuracy of the best-valid architecture found, the
evaluations it took, wall time and the share of it spent waiting on the LLM per role; then the
mean ± std over the LLM runs beside rs, rea and the algorithmic agents for the same seeds and budget.
On 2 CPU cores (2026-11-23) three runs of 100 evaluations, each with ``--threads 1``, two at a
time and taken to their budget with ``--resume`` across sessions, took 1.8-3.0 hours each and
reached 93.72 ± 0.02 test accuracy against rs 94.02, rea 94.13 and the algorithmic agents 94.37;
late in a run the 0.5B model copied its parent (about 40% of the children, even when re-asked)
or rewrote cells already tried, and the rate fell to 0.2-0.7 evaluations per minute.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import local_llm  # noqa: E402
from llm_pass_rate import print_llm_role_rows, role_llm, trace_wall_s  # noqa: E402

from archsmith.graph.bench import BenchSpec, aggregate, load_problem, run_bench, run_seeds  # noqa: E402
from archsmith.graph.bench_output import render_table  # noqa: E402
from archsmith.graph.bench_agents import ProblemEvaluator  # noqa: E402
from archsmith.graph.config import config_from_dict  # noqa: E402
from archsmith.graph.paths import RunPaths  # noqa: E402
from archsmith.graph.run import load_history, resume, run  # noqa: E402
from archsmith.graph.trace import read_steps  # noqa: E402
from archsmith.graph.view_data import LLMRoleStats, llm_role_stats  # noqa: E402
from archsmith.tools.tabular import TabularSpec, builtin_table  # noqa: E402

DEFAULT_TABLE = builtin_table("nasbench201-cifar10")  # shipped in the package (gzip)


def llm_config(runs_dir: Path, index: int, seed: int, budget: int, time_limit_s: float | None,
               threads: int = 2, navigator: str = "llm", proposals: int = 1, strategy: str = "model") -> dict:
    """The run's config: the Generator on the LLM (``proposals`` children per plan, the score model
    keeping the best), the Navigator on it too unless ``navigator = "algorithmic"``."""
    return {
        "name": f"nb201-llm-run{index}", "seed": seed, "runs_dir": str(runs_dir),
        "space": {"name": "nb201"},
        "search": {"max_candidates": budget, "children_per_generation": 4, "top_k": 4, "time_limit_s": time_limit_s,
                   "strategy": strategy},
        "parallel": {"workers": 1},
        "phases": {"enabled": False},
        "workflow": {"min_layers": 1},
        "roles": {"navigator": {"policy": navigator, "memory": True, "llm": role_llm(512, 0.7, threads)},
                  # Two re-asks (the product default) for a child its structural check refuses.
                  "generator": {"policy": "llm", "memory": False, "proposals": proposals,
                                "llm": {**role_llm(512, 0.7, threads), "max_retries": 2}}},
    }  # fmt: skip


def run_index(run_dir: Path) -> int:
    """The run's index in the seed list, from its name (``...-nb201-llm-run<i>``)."""
    return int(run_dir.name.rsplit("run", 1)[-1])


def summarize(run_dir: Path) -> dict:
    """The run's figures (JSON-ready, so that they can be kept when the run directory is not):
    best-valid architecture and its test accuracy, evaluations in order, fallbacks, stop reason,
    wall time and the LLM table per role from the trace."""
    history = load_history(RunPaths.existing(run_dir))
    valid = [r for r in history if r.get("status") == "valid"]
    steps = read_steps(run_dir / "trace.sqlite")
    fallback_children = {s.candidate_id for s in steps if s.role == "generator" and s.tools.get("fallback")}
    stops = [s.decision for s in steps if s.role == "archive" and s.decision != "continue"]
    evaluated = [{"id": r["id"], "score": r["score"], "test_acc": (r.get("metrics") or {}).get("test_acc")}
                 for r in valid]
    score, test = best_valid(evaluated)
    return {"run": run_dir.name, "index": run_index(run_dir), "valid": evaluated, "evaluations": len(valid),
            "children": len(history), "fallback_evaluations": sum(1 for r in valid if r["id"] in fallback_children),
            "wall_s": trace_wall_s(steps), "stop": stops[-1] if stops else "stopped from outside (no stop rule fired)",
            "best_valid": score, "test_of_best_valid": test,
            "llm_roles": [dataclasses.asdict(row) for row in llm_role_stats(steps)]}  # fmt: skip


def save_summary(summary: dict, folder: Path) -> Path:
    """``<folder>/<run>.summary.json``, which ``--report`` reads beside run directories."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{summary['run']}.summary.json"
    path.write_text(json.dumps(summary, indent=1) + "\n", "utf-8")
    return path


def best_valid(valid: list[dict], evaluations: int | None = None) -> tuple:
    """(score, test accuracy) of the best valid record, among the first ``evaluations`` only when
    given, so that runs that got different numbers of evaluations compare at the same count."""
    best = max(valid[:evaluations], key=lambda r: r["score"], default=None)
    return (best["score"], best.get("test_acc")) if best else (None, None)


def print_run(summary: dict) -> None:
    test = summary["test_of_best_valid"]
    print(f"\n{summary['run']}: {summary['evaluations']} evaluations ({summary['children']} children; "
          f"{summary['fallback_evaluations']} of the evaluations written by the Generator's algorithmic fallback), "
          f"best valid {summary['best_valid']}, its test accuracy {test}, wall {summary['wall_s']:.0f} s; "
          f"stop: {summary['stop']}")  # fmt: skip
    print_llm_role_rows([LLMRoleStats(**row) for row in summary["llm_roles"]], summary["wall_s"])


def print_comparison(summaries: list[dict], table: Path, budget: int, seed: int) -> None:
    """The LLM runs and rs / rea / algorithmic agents (same seeds) at the same number of evaluations:
    the budget when every LLM run reached it, else the fewest evaluations an LLM run got."""
    if not summaries:
        print("\nno LLM run to compare")
        return
    count = min(budget, *(s["evaluations"] for s in summaries))
    if count == 0:
        print("\nLLM agents: a run without any valid architecture; nothing to compare")
        return
    tests = [best_valid(s["valid"], count)[1] for s in summaries]
    spread = statistics.pstdev(tests) if len(tests) > 1 else 0.0
    indices = sorted(s["index"] for s in summaries)
    spec = BenchSpec(space="nb201", table=TabularSpec(path=str(table), dataset="cifar10"), budget=count,
                     runs=1 + max(indices), methods=["rs", "rea", "agents"], seed=seed)  # fmt: skip
    result = run_bench(spec)
    # The baselines on the LLM runs' seeds only (run i of every method shares seed i).
    result = result.model_copy(update={"spec": spec.model_copy(update={"runs": len(indices)}), "methods": {
        name: aggregate([r for r in method.runs if r.run in indices], count) for name, method in result.methods.items()
    }})  # fmt: skip
    print(f"\nAt {count} evaluations: baselines on the LLM runs' seeds (runs {', '.join(map(str, indices))} of --seed "
          f"{seed}; algorithmic agents: the default policies):")
    Console().print(render_table(result))
    print(f"LLM agents (Qwen2.5-Coder-0.5B navigator + generator), runs {', '.join(map(str, indices))}: test of best valid "
          f"{statistics.mean(tests):.2f} ± {spread:.2f} over {len(tests)} runs at {count} evaluations "
          f"(evaluations each run got: {', '.join(str(s['evaluations']) for s in summaries)})")  # fmt: skip


def report_existing(folder: Path, table: Path, budget: int, seed: int, save: Path | None = None) -> int:
    """The tables for the run directories and saved summaries (``*.summary.json``) in ``folder``;
    a run that has both is read from its directory, and of several runs with one index (seed) the
    one with the most evaluations is used. With ``save``, the summaries of the run directories
    (stopped runs included) are written there."""
    summaries = {d.name: summarize(d) for d in sorted(folder.iterdir()) if (d / "trace.sqlite").is_file()}
    if save is not None:
        for summary in summaries.values():
            save_summary(summary, save)
    for path in sorted(folder.glob("*.summary.json")):
        saved = json.loads(path.read_text("utf-8"))
        summaries.setdefault(saved["run"], saved)
    # One run per index (seed): the one with the most evaluations, e.g. a finished run over a stopped one.
    by_index: dict[int, dict] = {}
    for summary in summaries.values():
        kept = by_index.get(summary["index"])
        if kept is None or summary["evaluations"] > kept["evaluations"]:
            by_index[summary["index"]] = summary
    summaries = [by_index[index] for index in sorted(by_index)]
    for summary in summaries:
        print_run(summary)
    print_comparison(summaries, table, budget, seed)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE,
                        help="NAS-Bench-201 CIFAR-10 CSV (default: the packaged table)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--start", type=int, default=0, help="first run index (one run per session: --start 1 --runs 1)")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--time-limit", type=float, default=None, metavar="S",
                        help="stop each LLM run after S seconds (search.time_limit_s); runs are then compared "
                             "with the baselines at the fewest evaluations any run got")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", type=Path, default=Path("nb201-llm-runs"))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each run's llama.cpp server")
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="also keep each run's figures as DIR/<run>.summary.json (e.g. benchmarks/results/nb201_llm); "
                             "with --report, those of the run directories it reads")
    parser.add_argument("--resume", type=Path, nargs="+", metavar="RUN_DIR",
                        help="go on with stopped runs (one after the other) to their budget, scored by --table; "
                             "wall time counts each session, not the time between them")  # fmt: skip
    parser.add_argument("--navigator", choices=("llm", "algorithmic"), default="llm",
                        help="the Navigator's policy (algorithmic: the score model plans, the LLM only writes children)")
    parser.add_argument("--proposals", type=int, default=1,
                        help="children the LLM Generator writes per plan; the score model keeps the best")
    parser.add_argument("--strategy", choices=("model", "evolution"), default="model",
                        help="search.strategy (evolution: as the runs before the score model existed)")
    parser.add_argument("--report", type=Path, metavar="DIR",
                        help="print the tables for the run directories and *.summary.json files in DIR")
    args = parser.parse_args(argv)
    if args.report is not None:
        return report_existing(args.report, args.table, args.budget, args.seed, args.save)
    local_llm.prepare(["qwen-coder"])
    spec = BenchSpec(space="nb201", table=TabularSpec(path=str(args.table), dataset="cifar10"), budget=args.budget,
                     runs=args.start + args.runs, methods=["rs", "rea", "agents"], seed=args.seed)  # fmt: skip
    problem, _ = load_problem(spec)
    summaries = []

    def finished(run_dir: Path) -> None:
        summary = summarize(run_dir)
        save_summary(summary, run_dir.parent)
        if args.save is not None:
            save_summary(summary, args.save)
        summaries.append(summary)
        print_run(summary)

    if args.resume:
        for run_dir in args.resume:
            finished(resume(run_dir, evaluator=ProblemEvaluator(problem)).run_dir)
    else:
        seeds = run_seeds(args.seed, args.start + args.runs)  # the baselines' seeds, run by run
        for index, seed in list(enumerate(seeds))[args.start :]:
            config = config_from_dict(llm_config(args.runs_dir, index, seed, args.budget, args.time_limit, args.threads,
                                                 args.navigator, args.proposals, args.strategy))
            finished(run(config, evaluator=ProblemEvaluator(problem)).run_dir)
    print_comparison(summaries, args.table, args.budget, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
