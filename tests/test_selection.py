"""Pure search policies: parent pools and the phase controller."""

from __future__ import annotations

import numpy as np

from archsmith.agents.selection import choose_parent, next_phase, pareto_front, rng_for, top_k
from archsmith.graph.config import load_config


def rec(cid, score, params, flops=0, status="valid"):
    return {"id": cid, "score": score, "params": params, "flops": flops, "status": status, "text": cid}


HISTORY = [
    rec("a", 10.0, 500), rec("b", 12.0, 900), rec("c", 11.0, 400), rec("d", 9.0, 950),
    rec("e", None, 100, status="discarded"), rec("f", 12.0, 950),
]


def test_top_k_ranks_valid_by_score():
    assert [r["id"] for r in top_k(HISTORY, 3)] == ["b", "f", "c"]


def test_pareto_front_trades_score_against_size():
    front = [r["id"] for r in pareto_front(HISTORY)]
    assert front == ["b", "c"]  # a is dominated by c; d by a; f by b (same score, larger)


def test_phase_switches_on_threshold_and_never_back():
    config = load_config(overrides=["phases.transition_score=11.5"])
    assert next_phase(HISTORY[:1], "exploration", config) == "exploration"
    assert next_phase(HISTORY, "exploration", config) == "refinement"
    assert next_phase([], "refinement", config) == "refinement"


def test_phase_switches_after_budget_fraction_without_threshold():
    config = load_config(overrides=["search.max_candidates=10", "phases.transition_after=0.5"])
    assert next_phase(HISTORY[:4], "exploration", config) == "exploration"
    assert next_phase(HISTORY, "exploration", config) == "refinement"
    disabled = load_config(overrides=["phases.enabled=false"])
    assert next_phase(HISTORY * 100, "exploration", disabled) == "exploration"


def test_rank_weighted_choice_is_seeded_and_favours_the_best():
    pool = top_k(HISTORY, 4)
    picks = [choose_parent(pool, rng_for(0, "t", i))["id"] for i in range(400)]
    assert picks == [choose_parent(pool, rng_for(0, "t", i))["id"] for i in range(400)]
    assert picks.count("b") > picks.count("d") and set(picks) == {"b", "f", "c", "a"}


def test_one_pareto_implementation_for_selection_and_report():
    """tools.pareto is the front of parent selection and of the report (minimised objectives;
    equal points both stay on the front)."""
    from archsmith.graph.view_data import pareto_front as report_front
    from archsmith.tools.pareto import fronts, non_dominated

    assert non_dominated([(1, 1), (2, 0), (2, 2), (1, 1)]) == [0, 1, 3]
    assert [sorted(f) for f in fronts([(1, 1), (2, 0), (2, 2)])] == [[0, 1], [2]]
    assert non_dominated([]) == [] and fronts(np.zeros((0, 2))) == []
    assert report_front([(1.0, 5.0), (2.0, 4.0), (0.5, 5.0)]) == [2]
