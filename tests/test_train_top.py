"""`archsmith train`: the best candidates of a finished search, trained on the executor."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from archsmith.graph.cli import app
from archsmith.graph.config import ConfigError
from archsmith.graph.run import run
from archsmith.graph.train_top import train_top

pytestmark = pytest.mark.slow

TRAIN = {
    "preset": "smoke",
    "settings": {"batch_size": 32},
    "data": {"name": "synthetic", "synthetic_samples": 128, "synthetic_classes": 4, "input_size": 8},
}


@pytest.fixture
def searched(toy_config):
    """A finished toy search (Zen-score), its config already naming the training settings."""
    config = toy_config(search={"max_candidates": 3, "children_per_generation": 1},
                        evaluator={"preset": "custom", "batch_size": 4, "repeats": 1, "train": TRAIN})
    return run(config).run_dir


def test_train_top_trains_the_best_records_them_and_skips_them_next_time(searched):
    first = train_top(searched, top=2)
    assert len(first.trained) == 2 and first.skipped == []
    assert all(entry.ok and 0 <= entry.score <= 100 for entry in first.trained), first.trained
    assert all({"train_acc", "valid_acc", "test_acc", "wall_s"} <= set(entry.report) for entry in first.trained)
    assert [e.score for e in first.trained] == sorted((e.score for e in first.trained), reverse=True)
    lines = (searched / "trained.jsonl").read_text().splitlines()
    assert len(lines) == 2 and {json.loads(line)["id"] for line in lines} == {e.id for e in first.trained}
    assert "curve" in first.trained[0].details

    again = train_top(searched, top=2)
    assert sorted(again.skipped) == sorted(e.id for e in first.trained)
    assert len((searched / "trained.jsonl").read_text().splitlines()) == 2  # nothing retrained

    other = train_top(searched, top=1, overrides=["evaluator.train.settings.epochs=2"])
    assert other.skipped == []  # other settings: trained anew


def test_train_command_prints_the_table_and_bad_input_is_one_line(searched):
    runner = CliRunner(env={"COLUMNS": "80"})
    refused = runner.invoke(app, ["train", str(searched), "--top", "1"])
    assert refused.exit_code == 2, refused.output
    flat = " ".join(refused.output.split())
    assert "no data set configured" in flat and "--synthetic" in flat and "Traceback" not in refused.output
    assert not (searched / "trained.jsonl").exists()  # nothing trained

    result = runner.invoke(app, ["train", str(searched), "--top", "2", "--synthetic"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("data: synthetic") and "SYNTHETIC" in line for line in lines), result.output
    assert any(line.startswith("preset: smoke") for line in lines), result.output
    trained = [line for line in lines if "] trained c" in line]
    assert len(trained) == 2 and all("SYNTHETIC" in line for line in trained), result.output
    assert trained[0].startswith("[1/2]") and trained[1].startswith("[2/2]")
    assert "SYNTHETIC data, measures nothing" in " ".join(result.output.split())  # the table's title
    assert "Kendall tau, " not in result.output and "no rank statistic" in result.output  # 2 < 5 candidates
    header = next(line for line in lines if "candidate" in line and "search" in line)
    assert all(name in header.split() for name in ("candidate", "search", "trained", "train", "valid", "test"))
    assert "…" not in result.output  # no column name or cell cut at 80 columns

    bad = runner.invoke(app, ["train", str(searched), "--top", "1", "--synthetic",
                              "--set", "evaluator.train.preset=forever"])
    assert bad.exit_code == 2 and "forever" in bad.output and "Traceback" not in bad.output


def test_kendall_tau_needs_five_trained_candidates(toy_config):
    config = toy_config(search={"max_candidates": 5, "children_per_generation": 1},
                        evaluator={"preset": "custom", "batch_size": 4, "repeats": 1, "train": TRAIN})
    run_dir = run(config).run_dir
    plans = []
    few = train_top(run_dir, top=4, on_plan=plans.append)
    assert few.kendall_tau is None and few.synthetic and few.data.startswith("synthetic")
    assert plans[0].synthetic and plans[0].preset.startswith("smoke") and len(plans[0].todo) == 4
    five = train_top(run_dir, top=5)
    assert len([e for e in five.trained if e.ok]) == 5 and five.kendall_tau is not None
    with pytest.raises(ConfigError, match="no data set configured"):
        train_top(run_dir, top=5, allow_synthetic=False)


def test_train_top_refuses_zero_and_runs_without_valid_candidates(searched, tmp_path):
    with pytest.raises(ConfigError, match="at least one"):
        train_top(searched, top=0)
    (searched / "history.jsonl").write_text("")
    with pytest.raises(ConfigError, match="no valid candidate"):
        train_top(searched, top=1)
