"""Pareto fronts: pymoo's non-dominated sorting, the one implementation Archsmith uses (parent
selection, FairNAD's NSGA-II survival, the report's front plots).

Objectives are minimised, one row per point; points with equal objectives do not dominate each
other (both stay on the front).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fronts(objectives: np.ndarray | Sequence[Sequence[float]]) -> list[list[int]]:
    """Row indices by non-dominated front: the Pareto front first, then the front of the rest, ...
    (within a front, in pymoo's order)."""
    rows = np.asarray(objectives, dtype=float)
    if rows.size == 0:
        return []
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    return [[int(i) for i in front] for front in NonDominatedSorting().do(rows.reshape(len(rows), -1))]


def non_dominated(objectives: np.ndarray | Sequence[Sequence[float]]) -> list[int]:
    """Row indices of the Pareto front (no other row is at least as good everywhere and better
    somewhere), in ascending order."""
    found = fronts(objectives)
    return sorted(found[0]) if found else []
