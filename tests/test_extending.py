"""A new role added from outside the package: registry + workflow config, no package edits."""

from __future__ import annotations

import pytest

import archsmith
from archsmith.agents.base import Agent, agent_names, register_agent
from archsmith.graph.builder import WorkflowError
from archsmith.graph.trace import TraceStore


@register_agent("test_critic")
class Critic(Agent):
    """Vetoes children wider than 32 channels by cutting them back, and says so in the trace."""

    def algorithmic(self, state, step):
        tokens = state["text"].split(",")
        trimmed = ",".join(t if t == "X" or int(t[1:]) <= 32 else "C32" for t in tokens)
        step.inputs = {"text": state["text"]}
        step.decision = "trimmed" if trimmed != state["text"] else "accepted"
        return {"text": trimmed, "notes": [f"critic: {step.decision}"]}


def test_new_role_runs_between_generator_and_verifier(toy_config):
    assert "test_critic" in agent_names()
    config = toy_config(
        # The evolution strategy's children: the model strategy's warm start spreads over the
        # widest proposals, which this critic trims into duplicates (discarded, not counted here).
        search={"max_candidates": 3, "strategy": "evolution"},
        workflow={"pipeline": ["generator", "test_critic", "verifier"]},
        budget={"params_m": 1.0},
        space={"name": "toy", "settings": {"initial": ["C8,C64"]}},
    )
    result = archsmith.run(config)
    assert result.counts["generated"] == 3
    store = TraceStore(result.run_dir / "trace.sqlite")
    try:
        critic_steps = store.steps(role="test_critic")
        order = [s.role for s in store.steps(candidate_id="c0001")]
    finally:
        store.close()
    assert len(critic_steps) == 3
    assert order.index("generator") < order.index("test_critic") < order.index("verifier")
    for record in result.history:
        if record["status"] == "valid":
            assert all(int(t[1:]) <= 32 for t in record["text"].split(","))


def test_workflow_errors_are_clear(toy_config):
    with pytest.raises(WorkflowError, match="no agent registered as 'nobody'"):
        archsmith.run(toy_config(workflow={"pipeline": ["generator", "nobody", "verifier"]}))
    with pytest.raises(WorkflowError, match="must route"):
        archsmith.run(toy_config(workflow={"pipeline": ["generator", "test_critic"]}))
