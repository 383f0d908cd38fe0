"""`archsmith compare`: runs side by side (a table, or one line per run when piped) and a plot of
their best-so-far curves."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import archsmith
from archsmith.graph.cli import app
from archsmith.graph.compare import compare_runs


def _synthetic_run(root, evaluator="tabular", scores=(0.5, None, 0.7, 0.6)):
    """A run directory as a finished tabular run leaves it (only the files compare reads)."""
    root.mkdir(parents=True)
    (root / "config.toml").write_text(f'name = "t"\n[space]\nname = "nb201"\n[evaluator]\nname = "{evaluator}"\n', "utf-8")
    records = [{"id": f"c{i:04d}", "status": "valid" if s is not None else "discarded", "score": s}
               for i, s in enumerate(scores, start=1)]
    (root / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    (root / "summary.json").write_text(json.dumps({"elapsed_s": 75.0, "stop_reason": "budget"}), "utf-8")
    return root


def test_compare_a_real_run_and_a_table_run(toy_config, tmp_path):
    result = archsmith.run(toy_config(search={"max_candidates": 4}))
    other = _synthetic_run(tmp_path / "runs" / "20260101-000000-nb201")
    [real, table] = compare_runs([result.run_dir, other])
    assert real.space == "toy" and real.evaluator == "zen" and real.best_id == result.best["id"]
    assert real.best_score == result.best["score"] and real.finished and real.wall_s is not None
    assert [score for _, score in real.curve] == sorted(score for _, score in real.curve)
    assert table.curve == [(1, 0.5), (3, 0.7), (4, 0.7)] and (table.valid, table.candidates) == (3, 4)

    plot = tmp_path / "plots" / "curves.png"
    shown = CliRunner().invoke(app, ["compare", str(result.run_dir), str(other), "--out", str(plot)])
    assert shown.exit_code == 0, shown.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    lines = shown.output.splitlines()  # not a terminal: one line per run, nothing cut
    assert any(line.startswith(result.run_id) and result.best["id"] in line for line in lines)
    assert "20260101-000000-nb201  nb201  tabular  3/4  0.7000  c0003  1m15s" in lines
    assert "scores of different evaluators (tabular, zen) are not comparable" in shown.output

    as_json = CliRunner().invoke(app, ["compare", str(other), "--json", "--out", str(plot)])
    assert json.loads(as_json.stdout)["runs"][0]["best_id"] == "c0003"


def test_compare_names_a_directory_that_is_not_a_run(tmp_path):
    result = CliRunner().invoke(app, ["compare", str(tmp_path), "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 2 and "is not an Archsmith run directory" in result.output
    assert not (tmp_path / "p.png").exists()
