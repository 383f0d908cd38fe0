"""The model strategy's pure pieces (features, surrogate, warm start, bandit) and the strategy in a
run: on tables the test writes itself, never tuned to a real benchmark."""

from __future__ import annotations

import csv
import itertools
import random

import numpy as np
import pytest

from archsmith.agents.policies.bandit import draw_operator, operator_posteriors
from archsmith.agents.policies.surrogate import (
    capacity,
    choose_batch,
    cost_matrix,
    exploration_weights,
    fit_model,
    predict,
    warm_start,
)
from archsmith.graph.bench_agents import run_agents
from archsmith.tools.baselines import SearchProblem
from archsmith.tools.spaces import get_space
from archsmith.tools.spaces.features import HASHED_FEATURES, closed_form_costs, structure_features
from archsmith.tools.tabular import TabularBenchmark, TabularSpec

SETTINGS = {"length": 6, "options": ["0", "1", "2"]}


def _record(cid, score, parent=None, operator=None, status="valid", stage=None):
    return {"id": cid, "score": score, "status": status, "parent_ids": [parent] if parent else [],
            "operator": operator, "discard_stage": stage}


def test_operator_posteriors_count_children_that_beat_their_parent():
    history = [
        _record("a", 1.0),
        _record("b", 2.0, "a", "wide"),  # win
        _record("c", 0.5, "a", "wide"),  # loss
        _record("d", 3.0, "b", "deep"),  # win
        _record("e", None, "b", "deep", status="discarded", stage="score"),  # loss: failed scoring
        _record("f", None, "b", "deep", status="discarded", stage="structure"),  # says nothing
        _record("g", 9.0, None, "deep"),  # no parent: says nothing
    ]
    posteriors = {p.operator: (p.alpha, p.beta) for p in operator_posteriors(history, ["wide", "deep", "none"])}
    assert posteriors == {"wide": (2.0, 2.0), "deep": (2.0, 2.0), "none": (1.0, 1.0)}


def test_thompson_sampling_prefers_the_operator_that_wins_and_is_seeded():
    history = [_record("p", 1.0)]
    history += [_record(f"w{i}", 2.0, "p", "good") for i in range(20)]
    history += [_record(f"l{i}", 0.0, "p", "bad") for i in range(20)]
    posteriors = operator_posteriors(history, ["good", "bad"])
    draws = [draw_operator(posteriors, random.Random(seed), epsilon=0.0) for seed in range(200)]
    assert draws.count("good") > 190
    assert draws == [draw_operator(posteriors, random.Random(seed), epsilon=0.0) for seed in range(200)]
    uniform = [draw_operator(posteriors, random.Random(seed), epsilon=1.0) for seed in range(400)]
    assert 150 < uniform.count("bad") < 250  # epsilon = 1: every choice uniform


def test_batch_acquisition_spans_exploitation_to_exploration():
    mean = np.array([1.0, 0.9, 0.0, 0.2])
    std = np.array([0.0, 0.0, 2.0, 0.1])
    chosen = choose_batch(mean, std, 2, exploration=1.0)
    assert chosen == [(0, 0.0), (2, 1.0)]  # best mean first, then the most uncertain bet
    assert len({i for i, _ in choose_batch(mean, std, 10, 1.0)}) == 4  # never more than there are
    assert exploration_weights(1, 3.0) == [0.0]


def test_warm_start_takes_the_most_capable_then_spreads():
    rng = random.Random(0)
    features = np.eye(8)
    costs = np.array([[float(i)] for i in range(8)])  # row 7 is the most capable
    chosen = warm_start(features, costs, 2, rng)
    assert chosen[0] == 7 and len(set(chosen)) == 2
    assert capacity(np.array([[1.0, 10.0], [2.0, 10.0]])).tolist() == [0.25, 0.75]  # ranks from 0, ties shared
    assert cost_matrix([(1_000_000, None), (2_000_000, None)]).shape == (2, 1)
    assert cost_matrix([(1_000_000, 5), (2_000_000, None)]) is None  # inconsistent: not used
    assert len(warm_start(features, None, 3, rng)) == 3


def test_the_model_learns_an_additive_score():
    rng = np.random.default_rng(0)
    features = rng.integers(0, 2, size=(80, 6)).astype(float)
    scores = features @ np.array([3.0, -2.0, 1.0, 0.0, 0.0, 0.5])
    model = fit_model(features, scores, trees=30, seed=1)
    mean, std = predict(model, features[:5])
    assert np.allclose(mean, scores[:5], atol=1e-6) and np.all(std < 1e-6)  # seen points
    unseen = np.array([[1.0, 0.0, 1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    guess, _ = predict(model, unseen)
    assert guess[0] > guess[1]


def test_free_features_of_every_kind_of_space():
    nb201 = get_space("nb201")
    cell = nb201.initial()[0]
    row = structure_features(nb201, cell)
    one_hot, counts = row[:6 * 5], row[6 * 5:]  # every edge offers the same 5 operations
    assert len(counts) == 5 and sum(one_hot) == 6
    ops = nb201.ops(cell)
    assert counts == [float(ops.count(op)) for op in nb201.choices()[0]]
    positions = get_space("positions", SETTINGS)
    assert structure_features(positions, "012012")[-3:] == [2.0, 2.0, 2.0]
    params, flops = closed_form_costs(nb201, cell, 10)
    assert params == nb201.param_count(cell) and flops == 2 * nb201.macs(cell)
    template = get_space("template")
    row = structure_features(template, template.initial()[0])
    assert len(row) == HASHED_FEATURES + 1 and row != structure_features(template, template.initial()[1])
    assert closed_form_costs(template, template.initial()[0], 10)[0] > 0
    positions = get_space("positions", SETTINGS)
    assert closed_form_costs(positions, "012012", 10) == (None, None)


def _table(path, kind: str, seed: int = 0):
    """A positions-space table: the score is additive, or additive with neighbour interactions;
    costs grow with the option index; the best arch is unique."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0, 1, size=(6, 3))
    pair = rng.normal(0, 1.5, size=(5, 3, 3)) if kind == "interactions" else np.zeros((5, 3, 3))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "valid_acc", "test_acc", "params_m", "flops_m"])
        for arch in itertools.product(range(3), repeat=6):
            score = sum(effect[p, a] for p, a in enumerate(arch))
            score += sum(pair[p, arch[p], arch[p + 1]] for p in range(5))
            size = 0.1 + 0.05 * sum(arch)
            writer.writerow(["".join(map(str, arch)), 80 + score, 80 + score, size, 10 * size])
    return path


def _problem(path):
    space = get_space("positions", SETTINGS)
    return SearchProblem.from_table(space, TabularBenchmark.load(TabularSpec(path=str(path)), space))


@pytest.mark.parametrize("kind", ["additive", "interactions"])
def test_the_model_strategy_finds_the_best_of_a_synthetic_table(tmp_path, kind):
    problem = _problem(_table(tmp_path / "t.csv", kind))
    best = max(row["valid_acc"] for row in TabularBenchmark.load(
        TabularSpec(path=str(tmp_path / "t.csv")), problem.space).rows.values())
    found = 0
    for seed in range(3):
        outcome = run_agents(problem, 60, seed, space_settings=SETTINGS)
        assert len({e.arch for e in outcome.evaluations}) == len(outcome.evaluations) == 60
        assert outcome.model_seconds is not None and outcome.model_seconds > 0
        found += max(e.signal for e in outcome.evaluations) == best
    assert found >= 2  # 729 archs, 60 evaluations: random search finds it 8% of the time


def test_model_runs_are_seeded_and_record_their_predictions(tmp_path):
    problem = _problem(_table(tmp_path / "t.csv", "additive"))
    first = run_agents(problem, 30, 4, space_settings=SETTINGS).evaluations
    again = run_agents(problem, 30, 4, space_settings=SETTINGS).evaluations
    assert [e.arch for e in first] == [e.arch for e in again]
    evolution = run_agents(problem, 30, 4, space_settings=SETTINGS, overrides=["search.strategy=evolution"])
    assert [e.arch for e in evolution.evaluations] != [e.arch for e in first]
    assert evolution.model_seconds == 0


def test_an_llm_generator_proposes_and_the_model_disposes(tmp_path):
    """roles.generator.proposals = 3: three children per plan, the score model keeps the one it
    predicts best, the trace holds all three with their predictions."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from archsmith.graph.trace import read_steps

    problem = _problem(_table(tmp_path / "t.csv", "additive"))
    draw = random.Random(0)
    answers = [f"```\n{''.join(draw.choice('012') for _ in range(6))}\n```" for _ in range(200)]
    overrides = ["roles.generator.policy=llm", "roles.generator.proposals=3", "search.top_k=2",
                 "search.children_per_generation=2", "workflow.reask_on_structure=false"]
    from archsmith.graph.bench_agents import ProblemEvaluator
    from archsmith.graph.config import load_config
    from archsmith.graph.run import run

    config = load_config(None, [f"runs_dir='{tmp_path / 'runs'}'", "space.name=positions",
                                "space.settings.length=6", 'space.settings.options=["0","1","2"]',
                                "search.max_candidates=10", "parallel.workers=1", "workflow.min_layers=1",
                                *overrides])
    config.budget.params_m = None
    result = run(config, evaluator=ProblemEvaluator(problem),
                 chat_models={"generator": FakeListChatModel(responses=answers)})
    steps = [s for s in read_steps(result.run_dir / "trace.sqlite", role="generator") if "proposals" in s.tools]
    assert steps
    predicted = [s for s in steps if all(p["predicted"] is not None for p in s.tools["proposals"])]
    assert predicted  # after the warm start the model ranks them
    for step in predicted:
        proposals = step.tools["proposals"]
        assert sum(p["chosen"] for p in proposals) == 1 and len(proposals) >= 2
        chosen = next(p for p in proposals if p["chosen"])
        assert chosen["predicted"] == max(p["predicted"] for p in proposals)
        assert step.parsed == chosen["text"]


def test_proposals_need_the_llm_generator():
    from archsmith.graph.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="proposals"):
        load_config(None, ["roles.generator.proposals=3"])
    with pytest.raises(ConfigError, match="only the generator"):
        load_config(None, ["roles.debugger.policy=llm", "roles.debugger.proposals=2"])


def test_an_llm_navigator_is_shown_the_models_predictions(tmp_path):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from archsmith.graph.bench_agents import ProblemEvaluator
    from archsmith.graph.config import load_config
    from archsmith.graph.run import run
    from archsmith.graph.trace import read_steps

    problem = _problem(_table(tmp_path / "t.csv", "additive"))
    plan = '{"plans": [{"parent_ids": ["%s"], "operator": "position", "idea": "x", "rationale": "y"}]}'
    config = load_config(None, [f"runs_dir='{tmp_path / 'runs'}'", "space.name=positions",
                                "space.settings.length=6", 'space.settings.options=["0","1","2"]',
                                "search.max_candidates=8", "search.top_k=2", "search.children_per_generation=2",
                                "parallel.workers=1", "workflow.min_layers=1", "roles.navigator.policy=llm"])
    result = run(config, evaluator=ProblemEvaluator(problem),
                 chat_models={"navigator": FakeListChatModel(responses=[plan % "nope"] * 50)})
    prompts = [p.text for s in read_steps(result.run_dir / "trace.sqlite", role="navigator") for p in s.prompts]
    assert any("score model" in text and "±" in text for text in prompts)
    assert not any("score model" in text for text in prompts[:1])  # the warm start has no model yet


@pytest.mark.slow
def test_the_model_strategy_keeps_children_within_the_budget_before_they_are_built(tmp_path):
    """Proposals over the budget (by the template space's closed-form parameter count) are
    dropped before they are picked: from a seed 10 times over budget, no child needs the
    downscaler (the evolution strategy's do: tests/test_end_to_end.py)."""
    import archsmith
    from archsmith.graph.config import load_config

    seed = ("SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,1)SuperResK3K3(64,128,2,64,1)"
            "SuperConvK1BNRELU(128,256,1,1)")
    config = load_config(overrides=[f"runs_dir='{tmp_path}'", "search.max_candidates=8", "budget.params_m=0.1",
                                    f"space.settings.initial=['{seed}']"])
    result = archsmith.run(config)
    assert result.counts["valid"] == 8 and result.counts["repaired_by_downscaler"] == 0
    assert all(r["params"] <= 0.1e6 for r in result.history if r["status"] == "valid")
