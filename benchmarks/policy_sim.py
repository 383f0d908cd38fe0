"""The model strategy's policy alone, without the graph: a quick loop for trying policy changes.

``archsmith bench`` runs the whole agent graph per run (checkpoints, trace, roles): about 15 s
per 100-evaluation run on 2 cores. This loop calls the same planning function
(:func:`archsmith.agents.policies.model_plans.plan_generation`) generation by generation on a
table, with the pool, duplicates and operator posteriors computed as the Navigator computes
them, and scores children by table lookup: about ten times faster, so that a change can be
judged on 20-30 seeded runs per table instead of 10. What it leaves out: phases (the refinement
base joining the pool), ideas from the knowledge store, the Verifier (every table cell is valid).
On NAS-Bench-201 CIFAR-10 at budget 100 it gave 7/10 runs reaching the best at a median of 61
evaluations where the graph (benchmarks/results/search) gave 7/10 at 58.

Judge a change on several tables (benchmarks/synthetic_tables.py with another ``--seed`` than
the saved results use), never on the CIFAR-10 table alone; then confirm it with
benchmarks/search_bench.py, whose figures the docs quote.

Usage: ``python benchmarks/policy_sim.py [--table builtin:nasbench201-cifar10] [--space nb201]
[--budget 100] [--runs 20] [--signal valid_acc] [--set search.model.exploration=2.0 ...]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from archsmith.agents.policies import model_plans
from archsmith.agents.policies.bandit import operator_posteriors
from archsmith.agents.selection import rng_for, top_k
from archsmith.graph.bench import BenchSpec, load_problem, reaches
from archsmith.graph.config import load_config
from archsmith.graph.state import CandidateRecord
from archsmith.tools.baselines import SearchProblem
from archsmith.tools.tabular import TabularSpec

POSITIONS = {"length": 8, "options": ["0", "1", "2"]}  # benchmarks/synthetic_tables.py's default


def simulate(problem: SearchProblem, budget: int, seed: int, overrides: list[str]) -> list[CandidateRecord]:
    """One seeded run: the history of evaluated children, in order."""
    config = load_config(None, [f"seed={seed}", f"search.max_candidates={budget}", *overrides])
    config.budget.params_m = config.budget.flops_m = None  # the table's whole space, as the bench
    space = problem.space
    features = model_plans.CandidateFeatures(
        space, (lambda text: problem.profile(space.canonical(text))) if problem.profile else (lambda text: (None, None)))
    operators = space.operators()
    history: list[CandidateRecord] = []
    taken: set[str] = set()
    for generation in range(10 * budget):
        if len(history) >= budget:
            break
        pool = top_k(history, config.search.top_k) or [
            {"id": f"seed{i}", "text": text, "score": 0.0} for i, text in enumerate(space.initial())]
        plan = model_plans.plan_generation(history, model_plans.Generation(
            pool, config, space, features, taken.__contains__, operator_posteriors(history, operators),
            operators, config.search.children_per_generation, rng_for(seed, "model", generation)))
        if not plan.plans:
            break
        for strategy in plan.plans[: budget - len(history)]:
            key = space.canonical(strategy["proposal"])
            if key in taken:
                continue
            taken.add(key)
            signal, report = problem.evaluate(key)
            history.append({"id": f"c{len(history):04d}", "text": key, "score": signal, "metrics": report,
                            "status": "valid" if signal is not None else "discarded",
                            "parent_ids": strategy["parent_ids"], "operator": strategy["operator"]})
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="builtin:nasbench201-cifar10")
    parser.add_argument("--space", default="nb201")
    parser.add_argument("--signal", default="valid_acc")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    settings = POSITIONS if args.space == "positions" else {}
    spec = BenchSpec(space=args.space, space_settings=settings, table=TabularSpec(path=args.table, signal=args.signal),
                     test_metric="test_acc", budget=args.budget, runs=args.runs)
    problem, table = load_problem(spec)
    best = table.best()[1][args.signal]
    started = time.perf_counter()
    reached, evaluations, regrets = 0, [], []
    for seed in range(args.runs):
        history = simulate(problem, args.budget, seed, args.overrides)
        scores = [r["score"] for r in history if r["score"] is not None]
        regrets.append(best - max(scores))
        hit = next((i + 1 for i, score in enumerate(r["score"] for r in history)
                    if score is not None and reaches(score, best)), None)
        if hit is not None:
            reached += 1
            evaluations.append(hit)
    median = statistics.median(evaluations) if evaluations else "-"
    print(f"{args.table} budget {args.budget} {' '.join(args.overrides)}: reached {reached}/{args.runs}, "
          f"median evaluations {median}, mean regret {statistics.mean(regrets):.3f} "
          f"± {statistics.pstdev(regrets):.3f} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
