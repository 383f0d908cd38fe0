"""Fork and replay: `archsmith trace RUN --fork STEP --set ...` starts a new run from a middle step."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

import archsmith
from archsmith.graph.cli import app
from archsmith.graph.fork import ForkError, fork
from archsmith.graph.trace import read_steps


def checkpoints(db):
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT checkpoint_id, checkpoint FROM checkpoints WHERE checkpoint_ns = '' ORDER BY checkpoint_id"
        ).fetchall()


@pytest.fixture
def origin(toy_config):
    config = toy_config(search={"max_candidates": 6, "children_per_generation": 2})
    return archsmith.run(config)


def test_fork_from_a_middle_step_keeps_the_past_and_replays_the_rest(origin):
    navigator_steps = read_steps(origin.run_dir / "trace.sqlite", role="navigator")
    middle = navigator_steps[1]  # generation 2 is planned again, under the new config
    forked = fork(origin.run_dir, middle.id, ["seed=7"])

    assert forked.counts["valid"] == 6 and forked.run_dir != origin.run_dir
    record = json.loads((forked.run_dir / "origin.json").read_text())
    assert record["origin_run"] == str(origin.run_dir) and record["step"] == middle.id
    assert record["overrides"] == ["seed=7"]
    assert "seed = 7" in (forked.run_dir / "config.toml").read_text()

    before, after = checkpoints(origin.run_dir / "trace.sqlite"), checkpoints(forked.run_dir / "trace.sqlite")
    cut = record["checkpoint_id"]
    kept = [row for row in before if row[0] <= cut]
    assert kept and after[: len(kept)] == kept  # the same checkpoints, byte for byte, up to the cut
    assert not {row[0] for row in after[len(kept):]} & {row[0] for row in before}  # new ones after it

    generation_one = [r for r in origin.history if r["generation"] == 1]
    assert forked.history[: len(generation_one)] == generation_one
    replayed = [r["text"] for r in forked.history[len(generation_one):]]
    assert replayed != [r["text"] for r in origin.history[len(generation_one):]]  # another seed, other children
    old_steps = [s.id for s in read_steps(origin.run_dir / "trace.sqlite") if s.started_at < middle.started_at]
    new_steps = read_steps(forked.run_dir / "trace.sqlite")
    assert [s.id for s in new_steps[: len(old_steps)]] == old_steps
    assert any(s.session and s.session > 1 for s in new_steps)


def test_fork_cli_and_errors(origin):
    runner = CliRunner()
    step = read_steps(origin.run_dir / "trace.sqlite", role="navigator")[1].id
    result = runner.invoke(app, ["trace", str(origin.run_dir), "--fork", str(step), "--set", "search.top_k=2"])
    assert result.exit_code == 0, result.output
    assert f"before step {step}" in result.output
    bad = runner.invoke(app, ["trace", str(origin.run_dir), "--fork", "99999"])
    assert bad.exit_code == 2 and "has no step 99999" in " ".join(bad.output.split())
    with pytest.raises(ForkError, match="has no step 99999"):
        fork(origin.run_dir, 99999, [])
    from_the_start = fork(origin.run_dir, read_steps(origin.run_dir / "trace.sqlite")[0].id, [])
    assert [r["text"] for r in from_the_start.history] == [r["text"] for r in origin.history]  # same config


def test_reports_link_a_fork_and_its_origin(origin):
    from archsmith.graph.view import write_report

    step = read_steps(origin.run_dir / "trace.sqlite", role="navigator")[1].id
    forked = fork(origin.run_dir, step, ["seed=3"])
    fork_html = write_report(forked.run_dir).read_text()
    assert f'Forked from <a href="../{origin.run_dir.name}/report.html">' in fork_html and "seed=3" in fork_html
    origin_html = write_report(origin.run_dir).read_text()
    assert f'<a href="../{forked.run_dir.name}/report.html">' in origin_html
