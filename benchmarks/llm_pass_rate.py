"""FairNAD's pass rate with a real small model: idea-driven code mutations of the CIFAR ResNet-32.

    python scripts/local_llm.py prepare
    python benchmarks/llm_pass_rate.py --children 50            # Qwen2.5-Coder-0.5B on llama.cpp
    python benchmarks/llm_pass_rate.py --children 50 --space tree  # the model picks tree edits
    python benchmarks/llm_pass_rate.py --resume RUN_DIR            # go on after a stop (Ctrl-C, kill)

One run on the code space: the algorithmic Navigator draws a fair idea per child from the starter
corpus, the Generator, Debugger and Downscaler are Qwen2.5-Coder-0.5B (llama.cpp server started by
the run), the Verifier checks execution, budget (params <= 1.5 M, FLOPs <= 400 M = FairNAD's 0.2 G
MACs) and structure. Every child counts: ``max_children`` = ``max_candidates`` = N.

Printed (as FairNAD Table 3): the pass rate (valid / generated) with the whole feedback loop, and
what it would have been without execution repair (children the Debugger saved count as failures),
without budget repair (children the Downscaler saved count as failures) and how many children the
structural check rejected (and how many Generator answers it refused and had re-asked first); the number of Debugger and Downscaler calls; wall time; per role the
LLM steps, tokens in/out, LLM wait, output tokens per second and the share of wall time waiting. The "without" rates are counterfactual from the same run, not separate runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import local_llm  # noqa: E402

import archsmith  # noqa: E402
from archsmith.graph.config import config_from_dict  # noqa: E402
from archsmith.graph.trace import read_steps  # noqa: E402


def role_llm(max_tokens: int, temperature: float = 0.3, threads: int = 2) -> dict:
    """A role's llm settings: Qwen2.5-Coder-0.5B on the llama.cpp server the run starts (using
    ``threads`` CPU threads)."""
    return {"model": "qwen-coder", "max_tokens": max_tokens, "timeout_s": 600, "max_retries": 1,
            "temperature": temperature, "server": local_llm.server_spec(["qwen-coder"], threads).model_dump()}


def trace_wall_s(steps: list) -> float:
    """Wall time of a run from its trace: first step start to last step end in each session (a
    resumed run's time between its sessions is not the run's)."""
    sessions: dict[int | None, list] = {}
    for step in steps:
        sessions.setdefault(step.session, []).append(step)
    return sum(max(s.started_at + s.duration_s for s in group) - min(s.started_at for s in group)
               for group in sessions.values())


SPACES = {"code": {"name": "code", "settings": {"bases": ["resnet32"]}},
          "tree": {"name": "tree", "settings": {"seed": "resnet32"}}}


def roles(space: str) -> dict:
    """The LLM roles: in the code space the model writes and repairs sources; in the tree space it
    only chooses an edit (a short JSON answer), and repairs are the space's own (by rule)."""
    if space == "tree":
        return {"generator": {"policy": "llm", "fallback": "none", "llm": role_llm(64)}}
    return {"generator": {"policy": "llm", "fallback": "none", "llm": role_llm(2048)},
            "debugger": {"policy": "llm", "llm": role_llm(2048)},
            "downscaler": {"policy": "llm", "llm": role_llm(2048)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="children at once (the server is shared)")
    parser.add_argument("--report", type=Path, help="print the tables for an existing (e.g. stopped) run directory")
    parser.add_argument("--resume", type=Path, help="continue a stopped run directory (its saved config), then print")
    parser.add_argument("--space", choices=("code", "tree"), default="code",
                        help="code: the model writes the child's source (FairNAD); tree: the model picks one of "
                        "the enumerated, valid-by-construction tree edits (LLMasTool), repairs by rule")
    args = parser.parse_args(argv)
    if args.report is not None:
        return report_existing(args.report)
    local_llm.prepare(["qwen-coder"])
    if args.resume is not None:
        archsmith.resume(args.resume)
        return report_existing(args.resume)
    runs = Path(tempfile.mkdtemp(prefix="archsmith-passrate-"))
    config = config_from_dict({
        "name": "llm-pass-rate", "seed": args.seed, "runs_dir": str(runs),
        "space": SPACES[args.space],
        "budget": {"params_m": 1.5, "flops_m": 400.0, "input_size": 32, "num_classes": 100},
        "evaluator": {"preset": "custom", "batch_size": 16, "repeats": 1},
        "search": {"max_candidates": args.children, "max_children": args.children,
                   "children_per_generation": 4, "top_k": 4},
        "parallel": {"workers": args.workers},
        "phases": {"enabled": False},
        "workflow": {"max_debug": 2, "max_downscale": 4},
        "knowledge": {"use": True, "embedding": "hashing"},
        "roles": roles(args.space),
    })
    result = archsmith.run(config)
    print(f"\nrun directory: {result.run_dir}")
    report(result.run_dir, result.history, result.elapsed_s)
    return 0


def report_existing(run_dir: Path) -> int:
    """Tables for a run directory: the archived children, wall time from its trace."""
    from archsmith.graph.paths import RunPaths
    from archsmith.graph.run import load_history

    elapsed = trace_wall_s(read_steps(run_dir / "trace.sqlite"))
    history = load_history(RunPaths.existing(run_dir))
    print(f"run directory: {run_dir} (archived children: {len(history)}; wall time from the trace)")
    report(run_dir, history, elapsed)
    return 0


def report(run_dir: Path, history: list[dict], elapsed_s: float) -> None:
    """The tables for the children archived in ``run_dir`` (a finished run, or one stopped early)."""
    generated = len(history)
    valid = [r for r in history if r["status"] == "valid"]
    steps = read_steps(run_dir / "trace.sqlite")
    calls = Counter(step.role for step in steps if step.role in ("debugger", "downscaler"))
    stages = Counter(r.get("discard_stage") for r in history if r["status"] != "valid")

    def rate(count: int) -> str:
        return f"{count / generated:.2f} ({count}/{generated})" if generated else "-"

    print("\n| setting | pass rate |\n|---|---:|")
    print(f"| all (execution repair + budget repair + structural check) | {rate(len(valid))} |")
    print(f"| without execution repair | {rate(sum(1 for r in valid if not r.get('debug_repairs')))} |")
    print(f"| without budget repair | {rate(sum(1 for r in valid if not r.get('downscale_repairs')))} |")
    refusals = Counter(step.candidate_id for step in steps if step.role == "generator"
                       for error in step.tools.get("llm_errors", []) if error.get("kind") == "rejected")
    print(f"\nrejected by the structural check: {stages.get('structure', 0)} children discarded by the "
          f"Verifier; {sum(refusals.values())} Generator answers refused and re-asked first (in "
          f"{len(refusals)} children; workflow.reask_on_structure); discards per stage: {dict(stages)}")
    print(f"debugger calls: {calls['debugger']}, downscaler calls: {calls['downscaler']}")
    print(f"wall time: {elapsed_s:.0f} s")
    print_llm_roles(steps, elapsed_s)
    best = max(valid, key=lambda r: r["score"], default=None)
    if best:
        print(f"best Zen-score {best['score']:.2f} at {best['params'] / 1e6:.2f} M params")


def print_llm_roles(steps: list, elapsed_s: float) -> None:
    """Per role (graph.view_data.llm_role_stats, the run report's table): LLM steps, unusable
    answers by kind, steps that fell back to the algorithmic policy, tokens, seconds waiting on the
    model, output tokens per second and the share of wall time."""
    from archsmith.graph.view_data import llm_role_stats

    print_llm_role_rows(llm_role_stats(steps), elapsed_s)


def print_llm_role_rows(rows: list, elapsed_s: float) -> None:
    """The table of :func:`print_llm_roles` from its rows (``LLMRoleStats``, e.g. read back from
    a saved summary)."""
    print("\n| role | LLM steps | unusable answers (by kind) | fell back to algorithmic | tokens in | tokens out "
          "| LLM wait s | tokens out / s | share of wall time |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        failures = ", ".join(f"{kind} {count}" for kind, count in row.failures.items()) or "none"
        speed = f"{row.tokens_per_s:.1f}" if row.tokens_per_s is not None else "-"
        share = row.wait_s / elapsed_s if elapsed_s else 0.0
        print(f"| {row.role} | {row.steps} | {failures} | {row.fell_back} | {row.tokens_in} | {row.tokens_out} | "
              f"{row.wait_s:.0f} | {speed} | {share:.0%} |")
    print("(shares can add up to more than 100% when children run in parallel)")


if __name__ == "__main__":
    sys.exit(main())
