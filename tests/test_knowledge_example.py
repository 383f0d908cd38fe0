"""A new user's first hour: an example that fills the default idea store with one embedding, then
every `archsmith knowledge` command with the default embedding (each model has its own collection,
so neither locks the other out)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archsmith.graph.cli import app
from archsmith.graph.knowledge_cli import knowledge_app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "code-space-offline.toml"
SMALL = ["search.max_candidates=3", "search.children_per_generation=2", "search.fairnad.initial=2",
         "parallel.workers=1"]


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    """An empty home directory and no data-directory settings: the store goes where a new user's would."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ARCHSMITH_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    return home


def _commands() -> set[str]:
    return {command.name or command.callback.__name__ for command in knowledge_app.registered_commands}


def test_the_offline_example_then_every_knowledge_command(fresh_home, tmp_path):
    runner = CliRunner()
    overrides = [arg for value in SMALL for arg in ("--set", value)]
    ran = runner.invoke(app, ["run", str(EXAMPLE), *overrides])
    assert ran.exit_code == 0, ran.output
    store = fresh_home / ".local" / "share" / "archsmith" / "knowledge"
    manifest = json.loads((store / "store.json").read_text("utf-8"))
    assert list(manifest["collections"]) == ["hashing-384"]  # the example's embedding

    ideas = tmp_path / "mine.jsonl"
    ideas.write_text(json.dumps({
        "text": "Use a pooling token mixer instead of attention in early stages.", "target": "performance",
        "granularity": "operation", "main_category": "feature extraction operators",
        "sub_category": "input subtraction pooling",
        "source": {"title": "MetaFormer Is Actually What You Need for Vision", "year": 2022}}) + "\n", "utf-8")
    calls = {  # the default embedding (MiniLM), as a user types them after the example
        "stats": ["stats", "--json"],
        "list": ["list", "--main", "activation", "--json"],
        "search": ["search", "depthwise separable convolution", "-n", "3", "--json"],
        "sample": ["sample", "-n", "3", "--json"],
        "ingest": ["ingest", str(ideas), "--json"],
    }
    assert set(calls) == _commands(), "a knowledge command is missing from this test"
    out = {}
    for name, args in calls.items():
        result = runner.invoke(app, ["knowledge", *args])
        assert result.exit_code == 0, f"knowledge {name}: {result.output}"
        out[name] = json.loads(result.stdout)

    assert out["stats"]["embedding_model"] == "all-MiniLM-L6-v2" and out["stats"]["total"] >= 140
    assert set(out["stats"]["embeddings"]) == {"all-MiniLM-L6-v2", "hashing-384"}
    assert out["list"] and {row["main_category"] for row in out["list"]} == {"activation"}
    assert len(out["search"]) == 3 and len(out["sample"]) == 3
    assert out["ingest"]["ideas_added"] + out["ingest"]["ideas_merged"] == 1

    # the example's own embedding still works on the same store, and the run can be repeated
    again = runner.invoke(app, ["knowledge", "stats", "--config", str(EXAMPLE), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["embedding_model"] == "hashing-384"
    assert runner.invoke(app, ["run", str(EXAMPLE), *overrides]).exit_code == 0
