"""Tabular benchmark lookups and their error messages; the tabular evaluator inside a run."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

import archsmith
from archsmith.tools.spaces import get_space
from archsmith.tools.tabular import (
    TabularBenchmark,
    TabularError,
    TabularSpec,
    builtin_table,
    default_table,
)

CELL_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
CELL_B = "|skip_connect~0|+|none~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def table(tmp_path) -> Path:
    return write(tmp_path / "t.csv", "\n".join([
        "arch,dataset,valid_acc,test_acc,params_m,flops_m",
        f"{CELL_A},cifar10,91.5,94.3,1.07,153.3",
        f"{CELL_B},cifar10,80.0,81.0,0.40,60.0",
        f"{CELL_A},cifar100,70.0,71.0,1.07,153.3",
    ]) + "\n")


def test_lookup_evaluate_profile_best(table):
    space = get_space("nb201")
    bench = TabularBenchmark.load(TabularSpec(path=str(table)), space)
    assert len(bench) == 2 and bench.best()[0] == CELL_A
    # a differently spelled but equivalent cell finds the same row
    respelled = " " + CELL_A.replace("|+|", "| + |") + " "
    result = bench.evaluate(respelled)
    assert result.ok and result.score == 91.5 and result.report == {"test_acc": 94.3}
    assert bench.profile(CELL_B) == (400_000, 120_000_000)  # FLOPs = 2 x the table's MACs
    missing = bench.evaluate("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert not missing.ok and missing.error_type == "NotInTable"
    other = TabularBenchmark.load(TabularSpec(path=str(table), dataset="cifar100"), space)
    assert other.evaluate(CELL_A).score == 70.0


@pytest.mark.parametrize(
    ("content", "spec", "message"),
    [
        (None, {}, "not found"),
        ("arch,dataset,valid_acc\nx,cifar10,1\n", {}, "missing column(s) test_acc"),
        ("arch,dataset,valid_acc,test_acc\nx,cifar100,1,2\n", {"dataset": "cifar10"}, "datasets in the file: cifar100"),
        ("arch,dataset,valid_acc,test_acc\nx,a,1,2\ny,b,1,2\n", {}, "no dataset was given, and the table has several"),
        ("arch,valid_acc,test_acc\nx,1,2\n", {"dataset": "cifar10"}, "the table has no dataset column 'dataset'"),
        ("arch,valid_acc,test_acc\n", {}, "no rows"),
        (b"\x1f\x8b\x08broken", {}, "cannot be read as a CSV table"),
        ("arch,dataset,valid_acc,test_acc\nx,cifar10,abc,2\n", {}, ":2: column 'valid_acc' is not a number"),
        ("arch,dataset,valid_acc,test_acc\nx,cifar10,1,2\nx,cifar10,1,2\n", {}, ":3: architecture 'x' appears twice"),
        ("arch,dataset,valid_acc,test_acc\nx,cifar10,nan,2\n", {}, "is not finite"),
        ("arch,dataset,valid_acc,test_acc\n,cifar10,1,2\n", {}, ":2: empty 'arch'"),
    ],
)
def test_errors_name_file_line_and_column(tmp_path, content, spec, message):
    path = tmp_path / "bad.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(TabularError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TabularBenchmark.load(TabularSpec(path=str(path), **spec))


def test_datasets_chosen_when_unset(tmp_path, table):
    # A dataset column: cifar10 by default (the behaviour of every table that has one) ...
    space = get_space("nb201")
    assert TabularBenchmark.load(TabularSpec(path=str(table)), space).dataset == "cifar10"
    # ... else the table's only dataset.
    only = write(tmp_path / "only.csv", f"arch,dataset,valid_acc,test_acc\n{CELL_A},imagenet16-120,40,41\n")
    bench = TabularBenchmark.load(TabularSpec(path=str(only)), space)
    assert (bench.dataset, bench.evaluate(CELL_A).score) == ("imagenet16-120", 40.0)
    # dataset_column = None reads a column named "dataset" as any other column (not as datasets).
    ignored = TabularBenchmark.load(TabularSpec(path=str(only), dataset_column=None), space)
    assert ignored.dataset is None and len(ignored) == 1


def test_a_table_with_no_dataset_column_and_only_test_accuracy(tmp_path):
    """NAS-Bench-Macro's shape: arch,test_acc,params_m,flops_m; the signal is test_acc."""
    space = get_space("positions", {"length": 3, "options": ["0", "1", "2"]})
    path = write(tmp_path / "macro.csv", "arch,test_acc,params_m,flops_m\n012,91.0,1.5,100\n210,92.5,2.0,150\n")
    bench = TabularBenchmark.load(TabularSpec(path=str(path), signal="test_acc"), space)
    assert bench.dataset is None and len(bench) == 2 and bench.best()[0] == "210"
    result = bench.evaluate("210")
    assert result.ok and result.score == 92.5 and result.settings["dataset"] is None
    assert bench.profile("012") == (1_500_000, 200_000_000)
    missing = bench.evaluate("000")
    assert missing.error_message == f"architecture not in {path}"
    no_cost = write(tmp_path / "no-cost.csv", "arch,test_acc\n012,91.0\n")  # no params/FLOPs columns
    assert TabularBenchmark.load(TabularSpec(path=str(no_cost), signal="test_acc"), space).profile("012") == (None, None)


def test_gzip_tables_are_read_transparently(tmp_path, table):
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(table.read_bytes()))
    space = get_space("nb201")
    plain = TabularBenchmark.load(TabularSpec(path=str(table)), space)
    assert TabularBenchmark.load(TabularSpec(path=str(packed)), space).rows == plain.rows


def test_the_packaged_nasbench201_table():
    path = builtin_table("nasbench201-cifar10")
    assert path.name == "nasbench201-cifar10.csv.gz" and path.is_file()
    assert default_table("nb201", None) == default_table("nb201", "cifar10") == "builtin:nasbench201-cifar10"
    assert default_table("nb201", "cifar100") is None and default_table("positions", None) is None
    bench = TabularBenchmark.load(TabularSpec(path="builtin:nasbench201-cifar10"), get_space("nb201"))
    # The reference figures of the data README.
    assert len(bench) == 15625 and bench.dataset == "cifar10"
    arch, row = bench.best()
    assert (row["valid_acc"], row["test_acc"]) == (91.606667, 94.373333)
    assert max(r["test_acc"] for r in bench.rows.values()) == 94.373333
    assert bench.lookup("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")["test_acc"] == 10.0
    with pytest.raises(TabularError, match="no builtin table 'builtin:nope'; the package ships: builtin:nasbench201"):
        TabularBenchmark.load(TabularSpec(path="builtin:nope"))


def test_invalid_architecture_in_table_is_reported(tmp_path):
    path = write(tmp_path / "t.csv", "arch,dataset,valid_acc,test_acc\n|conv~0|,cifar10,1,2\n")
    with pytest.raises(TabularError, match=r":2: architecture '\|conv~0\|' is not valid"):
        TabularBenchmark.load(TabularSpec(path=str(path)), get_space("nb201"))


def test_a_run_with_the_tabular_evaluator_records_test_accuracy_without_executing(tmp_path, table):
    config = archsmith.load_config(overrides=[
        f"runs_dir='{tmp_path / 'runs'}'", "space.name=nb201", "evaluator.name=tabular",
        f"evaluator.tabular.path='{table}'", "search.max_candidates=1", "search.max_children=30",
        "budget.params_m=2.0",
    ])
    result = archsmith.run(config)
    assert result.sandbox.startswith("none")
    for record in result.history:
        assert record["status"] == "discarded"  # only two cells exist: the rest are not in the table
        assert record["discard_reason"].startswith(("scoring failed: NotInTable", "duplicate", "only"))


def test_check_a_cell_against_a_table(table):
    from typer.testing import CliRunner

    from archsmith.graph.cli import app

    args = ["check", CELL_A, "--set", "space.name=nb201", "--set", "evaluator.name=tabular",
            "--set", f"evaluator.tabular.path='{table}'", "--set", "budget.params_m=2"]
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "91.5000" in result.output and "test_acc (reported only)" in result.output
    over = CliRunner(env={"COLUMNS": "200"}).invoke(app, [*args[:-2], "--set", "budget.params_m=0.5"])
    assert over.exit_code == 1 and "params 1.070 M > 0.5 M" in over.output
