"""A run's lineage (a networkx DiGraph of parents and children) and its pass rates.

``lineage.json`` in the run directory is the graph in networkx's node-link form: nodes carry
status, score, params, FLOPs, generation, operator and idea; an edge goes from each parent to its
child. Parents that are not candidates (the space's seeds) are nodes with status ``seed``.

Pass rates follow FairNAD: valid children / generated children, overall and per verifier stage
(of the children that reached a stage, the share that got past it, repairs included).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import networkx as nx

from archsmith.graph.state import CandidateRecord

STAGES = ("generate", "validate", "structure", "execute", "budget", "score")
NODE_FIELDS = ("status", "score", "params", "flops", "generation", "operator", "idea", "idea_id", "discard_stage")


def build_lineage(history: Sequence[CandidateRecord]) -> nx.DiGraph:
    graph = nx.DiGraph()
    for record in history:
        graph.add_node(record["id"], **{k: record.get(k) for k in NODE_FIELDS})
    for record in history:
        for parent in record.get("parent_ids") or []:
            if parent not in graph:
                graph.add_node(parent, status="seed")
            graph.add_edge(parent, record["id"], operator=record.get("operator"), idea=record.get("idea") or "")
    return graph


def lineage_json(history: Sequence[CandidateRecord]) -> str:
    data = nx.node_link_data(build_lineage(history), edges="edges")
    return json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"


def read_lineage(text: str) -> nx.DiGraph:
    return nx.node_link_graph(json.loads(text), directed=True, edges="edges")


def pass_rates(history: Sequence[CandidateRecord]) -> dict[str, Any]:
    """Overall pass rate and, per stage, how many children reached it and how many passed."""
    generated = len(history)
    valid = sum(1 for r in history if r.get("status") == "valid")
    failed_at: dict[str, int] = {stage: 0 for stage in STAGES}
    for record in history:
        if record.get("status") != "valid":
            stage = record.get("discard_stage") or "generate"
            failed_at[stage if stage in failed_at else "generate"] += 1
    stages = {}
    reached = generated
    for stage in STAGES:
        passed = reached - failed_at[stage]
        stages[stage] = {"reached": reached, "passed": passed,
                         "pass_rate": round(passed / reached, 4) if reached else None}
        reached = passed
    return {"overall": round(valid / generated, 4) if generated else None, "valid": valid,
            "generated": generated, "stages": stages}
