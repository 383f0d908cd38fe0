"""Rank agreement between two scorings of the same candidates (proxy vs training, short vs full)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["kendall_tau"]


def kendall_tau(first: Sequence[float], second: Sequence[float]) -> float | None:
    """Kendall's tau-b of two equally long score lists (ties handled); None below 2 items or
    when either list is constant."""
    if len(first) != len(second):
        raise ValueError(f"kendall_tau: {len(first)} scores against {len(second)}")
    concordant = discordant = ties_first = ties_second = 0
    n = len(first)
    for i in range(n):
        for j in range(i + 1, n):
            a = (first[i] > first[j]) - (first[i] < first[j])
            b = (second[i] > second[j]) - (second[i] < second[j])
            if a == 0 and b == 0:
                continue
            if a == 0:
                ties_first += 1
            elif b == 0:
                ties_second += 1
            elif a == b:
                concordant += 1
            else:
                discordant += 1
    pairs_first = concordant + discordant + ties_second  # pairs not tied in the first list
    pairs_second = concordant + discordant + ties_first
    if pairs_first == 0 or pairs_second == 0:
        return None
    return (concordant - discordant) / (pairs_first * pairs_second) ** 0.5
