"""The default search, sandboxed, on the template space (a small candidate budget)."""

from __future__ import annotations

import pytest

import archsmith
from archsmith.graph.config import load_config
from archsmith.graph.trace import TraceStore
from archsmith.tools.spaces import get_space


@pytest.mark.slow
def test_default_search_small_budget_all_within_budget(tmp_path):
    config = load_config(overrides=[f"runs_dir='{tmp_path}'", "search.max_candidates=16"])
    result = archsmith.run(config)
    assert result.counts["valid"] == 16
    assert result.counts["valid"] >= 8
    assert result.best is not None and result.best["score"] > 0
    assert result.sandbox.startswith("fork-server")
    # children of a generation are checked in parallel: some verifier steps overlap in time
    store = TraceStore(result.run_dir / "trace.sqlite")
    try:
        spans = sorted((s.started_at, s.started_at + s.duration_s) for s in store.steps(role="verifier"))
    finally:
        store.close()
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
    space = get_space("template")
    for record in result.history:
        if record["status"] != "valid":
            continue
        model = space.build(record["text"], config.budget.num_classes)
        recounted = sum(p.numel() for p in model.parameters())
        assert recounted == record["params"]
        assert recounted <= config.budget.params_m * 1e6


@pytest.mark.slow
def test_tight_budget_exercises_the_downscaler(tmp_path):
    # The evolution strategy: the model strategy drops over-budget proposals before they become
    # children (the template space has a closed-form parameter count), so it rarely needs the downscaler.
    config = load_config(overrides=[f"runs_dir='{tmp_path}'", "search.max_candidates=12", "budget.params_m=0.1",
                                    "search.strategy=evolution",
                                    "space.settings.initial=['SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,1)SuperResK3K3(64,128,2,64,1)SuperConvK1BNRELU(128,256,1,1)']"])
    result = archsmith.run(config)
    assert result.counts["repaired_by_downscaler"] >= 1
    for record in result.history:
        if record["status"] == "valid":
            assert record["params"] <= 0.1e6
