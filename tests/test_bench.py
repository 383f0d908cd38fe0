"""The search-method bench (graph/bench.py, graph/bench_output.py, graph/bench_cli.py) on tiny
generated tables, a macro table with no dataset column, and the NAS-Bench-201 table in the box."""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
import types
from pathlib import Path

import pytest
import typer
from grid_space import write_grid_table
from typer.testing import CliRunner

from archsmith.graph.bench import (
    BenchError,
    BenchSpec,
    MethodRun,
    aggregate,
    resolve_method,
    run_bench,
    run_seeds,
    summarise_run,
)
from archsmith.graph.bench_cli import bench
from archsmith.graph.bench_output import render_table, write_outputs
from archsmith.tools.baselines import Evaluation, SearchProblem, random_search
from archsmith.tools.tabular import TabularSpec, builtin_table

REAL_TABLE = builtin_table("nasbench201-cifar10")
BASELINES = ["rs", "rea", "reinforce"]


@pytest.fixture
def grid_table(tmp_path) -> Path:
    return write_grid_table(tmp_path / "grid.csv", positions=3, options=3)


def grid_spec(path: Path, **fields) -> BenchSpec:
    data = {"space": "grid", "table": TabularSpec(path=str(path)), "budget": 10, "runs": 3, "methods": BASELINES}
    return BenchSpec(**(data | fields))


def fake_agents(problem: SearchProblem, budget: int, seed: int) -> list[Evaluation]:
    import random

    return random_search(problem, budget, random.Random(seed + 1))


def test_run_bench_figures(grid_table):
    seen = []
    result = run_bench(grid_spec(grid_table, budget=27), progress=lambda *event: seen.append(event))
    assert list(result.methods) == BASELINES
    assert result.table.rows == 27 and result.table.best_valid == 80.0
    for method in result.methods.values():
        # The whole space is evaluated: every run picks the best-valid arch (test = valid - 1).
        assert method.test_of_best_valid_mean == 79.0 and method.test_of_best_valid_std == 0.0
        assert method.runs_reaching_best_valid == 3
        assert 1 <= method.median_evals_to_best_valid <= 27
        assert len(method.curve_mean) == 27 and method.curve_mean[-1] == 80.0
    assert seen[:2] == [("rs", 0, 3), ("rs", 1, 3)] and seen[-1] == ("reinforce", 3, 3)


def test_run_bench_is_reproducible_and_shares_seeds(grid_table):
    spec = grid_spec(grid_table, methods=["rs", "rea"])
    first, second = run_bench(spec), run_bench(spec)
    for name in spec.methods:
        a = [r.model_dump(exclude={"wall_seconds"}) for r in first.methods[name].runs]
        b = [r.model_dump(exclude={"wall_seconds"}) for r in second.methods[name].runs]
        assert a == b
    assert [r.seed for r in first.methods["rs"].runs] == [r.seed for r in first.methods["rea"].runs] == run_seeds(0, 3)
    assert run_seeds(1, 3) != run_seeds(0, 3) and len(set(run_seeds(0, 10))) == 10


def test_bench_choices_ignore_the_test_column(tmp_path):
    results = []
    for test in ("noise", "reversed"):
        table = write_grid_table(tmp_path / f"{test}.csv", positions=4, options=4, test=test, seed=2)
        spec = grid_spec(table, space_settings={"positions": 4, "options": 4}, budget=30)
        results.append(run_bench(spec))
    for name in BASELINES:
        first, second = (r.methods[name].runs for r in results)
        assert [(r.best_arch, r.curve, r.evals_to_best_valid) for r in first] == [
            (r.best_arch, r.curve, r.evals_to_best_valid) for r in second
        ]
        assert [r.test_of_best_valid for r in first] != [r.test_of_best_valid for r in second]


EVALUATIONS = [
    Evaluation(1, "a", 50.0, {"test_acc": 90.0}, 1),
    Evaluation(2, "b", 70.0, {"test_acc": 60.0}, 3),
    Evaluation(3, "c", None, {}, 4),
    Evaluation(4, "d", 70.0, {"test_acc": 10.0}, 4),
]


def test_summary_uses_signal_then_reads_test():
    run = summarise_run(EVALUATIONS, 0, 5, 0.1, 80.0, "test_acc")
    assert (run.best_arch, run.test_of_best_valid, run.best_test) == ("b", 60.0, 90.0)
    assert run.evals_to_best_valid is None and run.regret == 10.0 and run.proposals == 4
    assert run.curve == [50.0, 70.0, 70.0, 70.0] and run.model_seconds is None
    other = summarise_run(EVALUATIONS[:1], 1, 6, 0.1, 80.0, "test_acc")
    summary = aggregate([run, other], budget=4)
    assert summary.test_of_best_valid_mean == 75.0 and summary.test_of_best_valid_std == 15.0
    assert summary.best_test_std == 0.0 and summary.runs_reaching_best_valid == 0
    assert summary.median_evals_to_best_valid is None and summary.evals_to_best_valid_mean is None
    assert (summary.regret_mean, summary.regret_std) == (20.0, 10.0)  # population std, ddof=0
    assert summary.curve_mean == [50.0, 60.0, 60.0, 60.0]  # the short run is padded with its last value
    assert summary.model_seconds is None


def test_every_arch_tied_for_the_best_signal_counts_as_reaching_it():
    # "b" and "d" tie for the table's best signal 70: the run reaches it with "b", at evaluation 2,
    # whichever of the two the table's best() names.
    run = summarise_run(EVALUATIONS, 0, 5, 0.1, 70.0, "test_acc", model_seconds=0.02)
    assert run.evals_to_best_valid == 2 and run.regret == 0.0 and run.model_seconds == 0.02
    late = summarise_run([EVALUATIONS[0], EVALUATIONS[3]], 1, 6, 0.3, 70.0, "test_acc", model_seconds=0.01)
    missed = summarise_run(EVALUATIONS[:1], 2, 7, 0.1, 70.0, "test_acc")
    summary = aggregate([run, late, missed], budget=4)
    assert late.evals_to_best_valid == 4  # "d" (the record's own index), the other tied arch
    assert summary.runs_reaching_best_valid == 2 and summary.median_evals_to_best_valid == 3.0
    assert summary.evals_to_best_valid_mean == 3.0
    assert summary.regret_mean == pytest.approx(20 / 3) and summary.regret_std == pytest.approx((800 / 9) ** 0.5)
    assert summary.model_seconds == pytest.approx(0.03) and summary.wall_seconds == pytest.approx(0.5)


def test_outputs_written(grid_table, tmp_path):
    result = run_bench(grid_spec(grid_table, methods=["rs", "agents"]), methods={"agents": fake_agents})
    paths = write_outputs(result, tmp_path / "out")
    data = json.loads(paths["results.json"].read_text())
    assert set(data["methods"]) == {"rs", "agents"}
    keys = {
        "test_of_best_valid_mean", "test_of_best_valid_std", "best_test_mean", "best_test_std",
        "runs_reaching_best_valid", "median_evals_to_best_valid", "wall_seconds", "runs",
    }
    assert keys <= set(data["methods"]["rs"])
    keys |= {"regret_mean", "regret_std", "evals_to_best_valid_mean", "model_seconds"}
    assert keys <= set(data["methods"]["rs"])
    first = data["methods"]["rs"]["runs"][0]
    assert len(data["methods"]["rs"]["runs"]) == 3 and {"test_of_best_valid", "regret", "model_seconds"} <= set(first)
    assert "ddof=0" in data["std"] and data["spec"]["budget"] == 10
    summary = paths["results.csv"].read_text().splitlines()
    assert summary[0].startswith("method,test_of_best_valid_mean") and len(summary) == 3
    assert len(paths["runs.csv"].read_text().splitlines()) == 1 + 2 * 3
    assert paths["curves.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert render_table(result).row_count == 2


def test_unknown_method_space_dataset(grid_table, tmp_path):
    with pytest.raises(BenchError, match="unknown method 'nope'"):
        run_bench(grid_spec(grid_table, methods=["rs", "nope"]))
    with pytest.raises(BenchError, match="unknown search space"):
        run_bench(grid_spec(grid_table, space="no-such-space"))
    with pytest.raises(BenchError, match="no rows for dataset 'mnist'"):
        run_bench(grid_spec(grid_table, table=TabularSpec(path=str(grid_table), dataset="mnist")))
    with pytest.raises(BenchError, match="not found"):
        run_bench(grid_spec(tmp_path / "missing.csv"))
    with pytest.raises(BenchError, match="not enumerable"):
        run_bench(grid_spec(grid_table, space="template"))


def test_agents_method_is_imported_lazily_with_options(grid_table, monkeypatch):
    calls = []

    def run_agents(problem, budget, seed, *, overrides=(), config_path=None, space_settings=None):
        calls.append((budget, seed, list(overrides), config_path, space_settings))
        return fake_agents(problem, budget, seed)

    module = types.ModuleType("archsmith.graph.bench_agents")
    module.run_agents = run_agents
    monkeypatch.setitem(sys.modules, "archsmith.graph.bench_agents", module)
    spec = grid_spec(grid_table, methods=["agents"], runs=2, agents_overrides=["a.b=1"], agents_config="c.toml")
    result = run_bench(spec)
    settings = spec.space_settings
    assert calls == [(10, seed, ["a.b=1"], "c.toml", settings) for seed in run_seeds(0, 2)]
    assert result.methods["agents"].runs[0].n_evaluations == 10
    monkeypatch.setitem(sys.modules, "archsmith.graph.bench_agents", None)  # import fails
    with pytest.raises(BenchError, match="'agents' is not available"):
        resolve_method("agents", spec)


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.command("bench")(bench)
    app.command("other")(lambda: None)
    return app


def test_cli_bench_end_to_end(grid_table, tmp_path):
    out = tmp_path / "cli-out"
    args = ["bench", "--space", "grid", "--table", str(grid_table), "--budget", "8", "--runs", "2",
            "--methods", "rs,rea,reinforce", "--seed", "3", "--out", str(out), "--space-setting", "options=3"]
    result = CliRunner().invoke(cli_app(), args, terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in BASELINES:
        assert f"wall time {name}:" in result.output
    assert "ddof=0" in result.output
    data = json.loads((out / "results.json").read_text())
    assert data["spec"]["seed"] == 3 and data["spec"]["space_settings"] == {"options": 3}
    assert (out / "curves.png").is_file() and (out / "results.csv").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "mnist"], "no rows for dataset 'mnist'"),
        (["--methods", "rs,bogus"], "unknown method 'bogus'"),
        (["--budget", "0"], "budget"),
        (["--space-setting", "novalue"], "key=value"),
    ],
)
def test_cli_errors_exit_2(grid_table, extra, message):
    args = ["bench", "--space", "grid", "--table", str(grid_table), "--runs", "1", *extra]
    result = CliRunner().invoke(cli_app(), args, terminal_width=200)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_cli_missing_table_exit_2(tmp_path):
    args = ["bench", "--space", "grid", "--table", str(tmp_path / "missing.csv"), "--methods", "rs"]
    result = CliRunner().invoke(cli_app(), args, terminal_width=200)
    assert result.exit_code == 2 and "not found" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--space", "grid"], "no table ships for space 'grid'"),
        (["--dataset", "cifar100"], "no table ships for space 'nb201' and dataset 'cifar100'"),
    ],
)
def test_cli_requires_a_table_where_none_ships(extra, message):
    result = CliRunner().invoke(cli_app(), ["bench", "--methods", "rs", *extra], terminal_width=200)
    assert result.exit_code == 2 and "--table is required" in result.output and message in result.output


def test_cli_uses_the_packaged_nasbench201_table(tmp_path):
    args = ["bench", "--space", "nb201", "--dataset", "cifar10", "--budget", "5", "--runs", "1", "--methods", "rs",
            "--out", str(tmp_path)]
    result = CliRunner().invoke(cli_app(), args, terminal_width=200)
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "results.json").read_text())["table"]
    assert table["path"] == "builtin:nasbench201-cifar10" and table["rows"] == 15625
    assert (table["dataset"], table["signal"], table["best_valid"]) == ("cifar10", "valid_acc", 91.606667)
    assert table["test_of_best_valid"] == 94.373333


def write_macro_table(path: Path, length: int = 8, free: int = 3) -> tuple[Path, int]:
    """NAS-Bench-Macro's shape: arch,test_acc,params_m,flops_m and no dataset column. Additive: 5 points
    per leading position that matches a target; the last ``free`` positions do not matter, so
    3 ** free archs tie for the best. Returns the path and the number of tied archs."""
    target = [2, 0, 1, 1, 2, 0, 1, 2][: length - free]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "test_acc", "params_m", "flops_m"])
        for digits in itertools.product(range(3), repeat=length):
            score = 60.0 + 5.0 * sum(d == t for d, t in zip(digits, target))
            writer.writerow(["".join(map(str, digits)), f"{score:.2f}", f"{0.1 * sum(digits):.2f}", 10 * sum(digits)])
    return path, 3**free


MACRO = ["--space", "positions", "--space-setting", "length=8", "--space-setting", 'options=["0","1","2"]']


def test_cli_bench_on_a_macro_table_with_no_dataset_column(tmp_path):
    table, tied = write_macro_table(tmp_path / "macro.csv")
    out = tmp_path / "out"
    args = ["bench", *MACRO, "--table", str(table), "--signal", "test_acc", "--budget", "40", "--runs", "3",
            "--methods", "rs,rea,ea,agents", "--out", str(out)]
    result = CliRunner().invoke(cli_app(), args, terminal_width=80)
    assert result.exit_code == 0, result.output
    assert "regret" in result.output and "wall time agents:" in result.output and "27 archs tied" in result.output
    assert "…" not in result.output  # 80 columns: cells wrap, never cut
    assert result.output.count("ddof=0") == 1  # the std note once, in the caption
    data = json.loads((out / "results.json").read_text())
    info = data["table"]
    assert (info["dataset"], info["signal"], info["rows"], info["best_valid"]) == (None, "test_acc", 3**8, 85.0)
    assert info["best_valid_archs"] == tied and data["spec"]["table"]["signal"] == "test_acc"
    reached_by_another_tie = False
    for name in ("rs", "rea", "ea", "agents"):
        method = data["methods"][name]
        runs = method["runs"]
        for run in runs:
            assert run["regret"] == pytest.approx(85.0 - run["best_valid"])
            assert run["test_of_best_valid"] == run["best_valid"]  # the signal is the test column
            first = next((i + 1 for i, best in enumerate(run["curve"]) if best == 85.0), None)
            assert run["evals_to_best_valid"] == first
            assert (first is not None) == (run["regret"] == 0.0)
            if first is not None and run["best_arch"] != info["best_valid_arch"]:
                reached_by_another_tie = True
        assert method["regret_mean"] == pytest.approx(sum(r["regret"] for r in runs) / len(runs))
        reached = [r["evals_to_best_valid"] for r in runs if r["evals_to_best_valid"] is not None]
        assert method["runs_reaching_best_valid"] == len(reached)
        assert method["evals_to_best_valid_mean"] == (pytest.approx(sum(reached) / len(reached)) if reached else None)
        if name != "agents":  # a method with a model of its own may report its time; the baselines have none
            assert method["model_seconds"] is None
        assert method["model_seconds"] is None or 0 <= method["model_seconds"] <= method["wall_seconds"]
    assert reached_by_another_tie  # a tie for the best signal counts as reaching the best
    assert data["methods"]["rea"]["runs_reaching_best_valid"] >= 1
    assert data["methods"]["rea"]["regret_mean"] < data["methods"]["rs"]["regret_mean"]


def test_cli_dataset_for_a_table_without_a_dataset_column_is_an_error(tmp_path):
    table, _ = write_macro_table(tmp_path / "macro.csv", length=4, free=1)
    args = ["bench", "--space", "positions", "--space-setting", "length=4", "--space-setting", 'options=["0","1","2"]',
            "--table", str(table), "--signal", "test_acc", "--dataset", "cifar10", "--runs", "1", "--methods", "rs"]
    result = CliRunner().invoke(cli_app(), args, terminal_width=240)
    assert result.exit_code == 2, result.output
    assert "dataset 'cifar10' was asked for, but the table has no dataset column 'dataset'" in result.output


def test_a_method_reports_its_model_time_as_a_share_of_the_wall_time(grid_table):
    def modelled(problem: SearchProblem, budget: int, seed: int) -> MethodRun:
        return MethodRun(fake_agents(problem, budget, seed), model_seconds=0.0)

    result = run_bench(grid_spec(grid_table, methods=["rs", "modelled"]), methods={"modelled": modelled})
    assert result.methods["modelled"].model_seconds == 0.0 and result.methods["rs"].model_seconds is None
    assert all(r.model_seconds == 0.0 for r in result.methods["modelled"].runs)
    table = render_table(result)
    assert table.columns[-1].header == "model"
    assert list(table.columns[-1].cells) == ["-", "0%"]
    from rich.console import Console

    narrow = Console(width=80, file=io.StringIO(), color_system=None)  # a pipe: 80 columns, not a TTY
    narrow.print(table)
    assert "…" not in narrow.file.getvalue()  # cells wrap, never cut


@pytest.mark.slow
def test_baselines_on_nasbench201_cifar10():
    spec = BenchSpec(space="nb201", table=TabularSpec(path=str(REAL_TABLE)), budget=30, runs=3, methods=BASELINES)
    result = run_bench(spec)
    assert result.table.rows == 15625
    for method in result.methods.values():
        assert all(run.n_evaluations == 30 for run in method.runs)
        assert 85.0 < method.test_of_best_valid_mean <= result.table.best_test
        assert method.wall_seconds < 30
