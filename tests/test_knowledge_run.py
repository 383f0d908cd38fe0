"""Runs that draw ideas from the knowledge store (knowledge.use), and the `knowledge` commands."""

from __future__ import annotations

import json

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from typer.testing import CliRunner

import archsmith
from archsmith.graph.cli import app
from archsmith.graph.trace import read_steps
from archsmith.knowledge.sampling import MODIFY_MODULE, NETWORK, NEW_MODULE

KNOWLEDGE = {"use": True, "embedding": "hashing"}


def test_algorithmic_navigator_attaches_a_sampled_idea_to_every_child(toy_config, private_data_dir):
    config = toy_config(search={"max_candidates": 4, "children_per_generation": 2}, knowledge=KNOWLEDGE)
    result = archsmith.run(config)
    records = [r for r in result.history if r["status"] == "valid"]
    assert records and all(r["idea_id"] for r in records)
    navigator_steps = read_steps(result.run_dir / "trace.sqlite", role="navigator")
    plans = [plan for step in navigator_steps for plan in step.parsed]
    assert all(plan["mutation_target"] in (NEW_MODULE, MODIFY_MODULE, NETWORK) for plan in plans)
    assert all(" > " in plan["idea_tag"] for plan in plans)
    [session] = json.loads((result.run_dir / "knowledge.json").read_text())["sessions"]
    assert session["path"] == str(private_data_dir / "knowledge")
    assert session["embedding_model"] == "hashing-384" and session["sampling"] == "main_category"
    assert session["ideas"] >= 140 and len(session["fingerprint"]) == 12

    # The same seed and store content draw the same ideas.
    again = archsmith.run(config)
    assert [r["idea_id"] for r in again.history] == [r["idea_id"] for r in result.history]


def test_ideas_leave_the_algorithmic_search_itself_unchanged(toy_config):
    plain = archsmith.run(toy_config(search={"max_candidates": 4, "children_per_generation": 2}))
    with_ideas = archsmith.run(toy_config(search={"max_candidates": 4, "children_per_generation": 2},
                                          knowledge=KNOWLEDGE))
    assert [r["text"] for r in plain.history] == [r["text"] for r in with_ideas.history]


def test_llm_roles_see_the_sampled_idea(toy_config):
    plan = {"plans": [{"parent_ids": ["seed0"], "operator": None, "idea": "mine", "rationale": "r"}]}
    config = toy_config(search={"max_candidates": 1}, knowledge=KNOWLEDGE,
                        roles={"navigator": {"policy": "llm"}, "generator": {"policy": "llm"}})
    models = {
        "navigator": GenericFakeChatModel(messages=iter([json.dumps(plan)])),
        "generator": GenericFakeChatModel(messages=iter(["```\nC8,C24\n```"])),
    }
    result = archsmith.run(config, chat_models=models)
    [record] = result.history
    [navigator_step] = read_steps(result.run_dir / "trace.sqlite", role="navigator")
    [generator_step] = read_steps(result.run_dir / "trace.sqlite", role="generator")
    idea_text = navigator_step.parsed[0]["idea"]
    assert idea_text != "mine" and record["idea"] == idea_text
    assert "Design ideas drawn for this generation" in navigator_step.prompts[1].text
    assert idea_text in navigator_step.prompts[1].text
    assert f"Idea: {idea_text}" in generator_step.prompts[1].text
    assert "Apply it this way:" in generator_step.prompts[1].text


def test_knowledge_commands(tmp_path):
    runner = CliRunner()
    store = ["--store", str(tmp_path / "store"), "--set", "knowledge.embedding=hashing"]
    stats = runner.invoke(app, ["knowledge", "stats", *store, "--json", "--plot", str(tmp_path / "bars.png")])
    assert stats.exit_code == 0, stats.output
    assert "first use of the idea store" in stats.stderr  # the slow first use says so, on stderr
    data = json.loads(stats.stdout)
    assert data["total"] >= 140 and len(data["main_categories"]) == 15
    assert (tmp_path / "bars.png").stat().st_size > 10_000

    listed = runner.invoke(app, ["knowledge", "list", *store, "--main", "activation", "--json", "-n", "0"])
    rows = json.loads(listed.output)
    assert rows and {row["main_category"] for row in rows} == {"activation"}

    found = runner.invoke(app, ["knowledge", "search", "depthwise separable convolution", *store, "-n", "3", "--json"])
    hits = json.loads(found.output)
    assert len(hits) == 3 and "depthwise" in hits[0]["text"].lower()

    sampled = runner.invoke(app, ["knowledge", "sample", *store, "-n", "4", "--seed", "3", "--json"])
    draws = json.loads(sampled.output)
    assert len(draws) == 4 and all(d["mutation_target"] for d in draws)
    assert json.loads(runner.invoke(app, ["knowledge", "sample", *store, "-n", "4", "--seed", "3", "--json"]).output) == draws

    ideas = tmp_path / "mine.jsonl"
    ideas.write_text(json.dumps({"text": "Use a pooling token mixer instead of attention in early stages.",
                                 "target": "performance", "granularity": "operation",
                                 "main_category": "feature extraction operators", "sub_category": "input subtraction pooling",
                                 "source": {"title": "MetaFormer Is Actually What You Need for Vision", "year": 2022}}) + "\n")
    ingested = runner.invoke(app, ["knowledge", "ingest", str(ideas), *store, "--json"])
    assert ingested.exit_code == 0, ingested.output
    assert json.loads(ingested.output)["ideas_added"] + json.loads(ingested.output)["ideas_merged"] == 1
    again = runner.invoke(app, ["knowledge", "ingest", str(ideas), *store], terminal_width=80)  # piped: 80 columns
    assert again.exit_code == 0, again.output
    assert f"store: {tmp_path / 'store'} (" in again.output  # the path whole, on one line
    shown = runner.invoke(app, ["knowledge", "search", "depthwise separable convolution", *store, "-n", "2"],
                          terminal_width=80)
    assert shown.exit_code == 0 and "sim" in shown.output and f"{hits[0]['similarity']:.2f}" in shown.output

    typo = runner.invoke(app, ["knowledge", "list", *store, "--sub", "depthwse convolution"])
    assert typo.exit_code == 2 and "did you mean 'depthwise convolution'" in typo.output.replace("\n", " ")
    assert runner.invoke(app, ["knowledge", "search", "x", "-n", "0", *store]).exit_code == 2
    missing = runner.invoke(app, ["knowledge", "ingest", str(tmp_path / "absent.jsonl"), *store])
    assert missing.exit_code == 2 and "absent.jsonl" in missing.output

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("mine", "utf-8")
    refused = runner.invoke(app, ["knowledge", "stats", "--store", str(foreign), "--set", "knowledge.embedding=hashing"])
    assert refused.exit_code == 2 and "not an Archsmith idea store" in refused.output.replace("\n", " ")
