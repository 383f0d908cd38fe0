"""The agent graph as a bench method, on a tabular benchmark the test writes itself."""

from __future__ import annotations

import csv
import itertools
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archsmith.graph.bench import BenchSpec, run_bench
from archsmith.graph.bench_agents import ProblemEvaluator, run_agents
from archsmith.graph.config import load_config
from archsmith.graph.run import resume, run
from archsmith.graph.cli import app
from archsmith.tools.baselines import SearchProblem
from archsmith.tools.spaces import get_space
from archsmith.tools.tabular import TabularBenchmark, TabularSpec, builtin_table

SETTINGS = {"length": 4, "options": ["0", "1", "2"]}
REAL_TABLE = builtin_table("nasbench201-cifar10")


def write_macro_table(path: Path, test_column: str = "shifted") -> Path:
    """81 archs of a 4-position macro space; validation accuracy peaks at 2,1,2,0."""
    rng = random.Random(7)
    target = (2, 1, 2, 0)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "dataset", "valid_acc", "test_acc"])
        for digits in itertools.product(range(3), repeat=4):
            valid = 90.0 - 3.0 * sum(d != t for d, t in zip(digits, target)) - 0.1 * sum(digits)
            test = valid + 1.0 if test_column == "shifted" else rng.uniform(0, 100)
            writer.writerow(["".join(map(str, digits)), "toy", f"{valid:.3f}", f"{test:.3f}"])
    return path


def problem_for(table_path: Path) -> SearchProblem:
    space = get_space("positions", SETTINGS)
    table = TabularBenchmark.load(TabularSpec(path=str(table_path), dataset="toy"), space)
    return SearchProblem.from_table(space, table)


def test_agents_find_the_optimum_and_count_distinct_evaluations(tmp_path):
    problem = problem_for(write_macro_table(tmp_path / "macro.csv"))
    evaluations = run_agents(problem, 30, seed=3, space_settings=SETTINGS).evaluations
    assert len(evaluations) == 30
    assert len({e.arch for e in evaluations}) == 30  # distinct architectures
    assert max(evaluations, key=lambda e: e.signal).arch == "2120"
    assert [e.index for e in evaluations] == list(range(1, 31))


def test_agents_are_seeded_and_blind_to_the_test_column(tmp_path):
    shifted = problem_for(write_macro_table(tmp_path / "a.csv", "shifted"))
    noisy = problem_for(write_macro_table(tmp_path / "b.csv", "noise"))
    first = [e.arch for e in run_agents(shifted, 20, seed=5, space_settings=SETTINGS).evaluations]
    again = [e.arch for e in run_agents(shifted, 20, seed=5, space_settings=SETTINGS).evaluations]
    blind = [e.arch for e in run_agents(noisy, 20, seed=5, space_settings=SETTINGS).evaluations]
    other = [e.arch for e in run_agents(shifted, 20, seed=6, space_settings=SETTINGS).evaluations]
    assert first == again == blind
    assert first != other


def test_a_new_tabular_benchmark_needs_only_its_csv_and_a_space_spec(tmp_path):
    table = write_macro_table(tmp_path / "macro.csv")
    out = tmp_path / "out"
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, [
        "bench", "--space", "positions", "--space-setting", "length=4",
        "--space-setting", 'options=["0","1","2"]', "--table", str(table), "--dataset", "toy",
        "--budget", "25", "--runs", "2", "--methods", "rs,rea,agents", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "agents" in result.output
    data = json.loads((out / "results.json").read_text())
    assert data["methods"]["agents"]["test_of_best_valid_mean"] == pytest.approx(91.0, abs=3.0)
    assert (out / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_bench_with_agents_on_nasbench201_cifar10():
    spec = BenchSpec(space="nb201", table=TabularSpec(path=str(REAL_TABLE)), budget=30, runs=2,
                     methods=["rs", "agents"])
    result = run_bench(spec)
    agents = result.methods["agents"]
    assert all(run.n_evaluations == 30 for run in agents.runs)
    assert 85.0 < agents.test_of_best_valid_mean <= result.table.best_test


def test_agents_with_an_llm_generator(tmp_path):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    problem = problem_for(write_macro_table(tmp_path / "macro.csv"))
    answers = ["```\n2120\n```", "Try this:\n```\n2121\n```", "```\n2110", "```\n1120\n```"]
    evaluations = run_agents(
        problem, 3, seed=0, space_settings=SETTINGS,
        overrides=["roles.generator.policy=llm", "search.children_per_generation=1", "search.max_children=12"],
        chat_models={"generator": FakeListChatModel(responses=answers)},
    ).evaluations
    archs = [e.arch for e in evaluations]
    assert archs[:3] == ["2120", "2121", "1120"]  # the truncated answer was retried, not executed


class Interrupt(Exception):
    pass


def test_a_run_with_an_injected_evaluator_resumes_with_it(tmp_path):
    """A bench run stopped half-way goes on with the table that scored its first half."""
    problem = problem_for(write_macro_table(tmp_path / "macro.csv"))
    settings = [f"space.settings.{key}={json.dumps(value)}" for key, value in SETTINGS.items()]
    config = load_config(None, ["space.name=positions", f"runs_dir='{tmp_path / 'runs'}'", "seed=1",
                                "search.max_candidates=12", "parallel.workers=1", "workflow.min_layers=1", *settings])
    archived: list[str] = []

    def stop_after_five(record: dict) -> None:
        archived.append(record["id"])
        if len(archived) == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(config, evaluator=ProblemEvaluator(problem), on_record=stop_after_five)
    (run_dir,) = (tmp_path / "runs").iterdir()
    result = resume(run_dir, evaluator=ProblemEvaluator(problem))
    valid = [r for r in result.history if r["status"] == "valid"]
    assert len(valid) == 12 and result.sessions == 2
    for record in valid:  # every score, before and after the stop, is the table's
        signal, report = problem.evaluate(record["canonical"])
        assert record["score"] == pytest.approx(signal)
        assert record["metrics"]["test_acc"] == pytest.approx(report["test_acc"])
