"""The score model of the Navigator's ``model`` strategy, its acquisition rule and warm start.

Pure functions over arrays (DESIGN.md, convention 7): the caller turns candidates into free
features (:mod:`archsmith.tools.spaces.features`), these functions fit, predict and choose.

* :func:`fit_model` / :func:`predict`: an extremely randomised trees ensemble (scikit-learn);
  the spread of its trees' predictions is the uncertainty. Refitted from the history every
  generation, so a resumed run needs no saved model and a seed fixes every choice.
* :func:`choose_batch`: upper confidence bounds with a different exploration weight for each
  child of a generation (from pure exploitation to ``exploration`` standard deviations), so
  one generation holds both the model's best guess and its most informative bets.
* :func:`warm_start`: the first children, before there is data to model, taken from a large pool
  of proposals by free features: the most capable (largest cost within the budget) first, then
  spread over the space by farthest-point sampling among the capable ones.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from sklearn.ensemble import ExtraTreesRegressor

CAPABLE_FRACTION = 0.25  # warm start: the share of the pool (by capacity) it spreads over


def fit_model(features: np.ndarray, scores: np.ndarray, trees: int, seed: int) -> ExtraTreesRegressor:
    """An ensemble of ``trees`` extremely randomised trees on standardised scores."""
    from sklearn.ensemble import ExtraTreesRegressor

    model = ExtraTreesRegressor(n_estimators=trees, min_samples_leaf=1, max_features=1.0,
                                random_state=seed % (2**32), n_jobs=1)
    model.fit(features, scores)
    return model


def predict(model: ExtraTreesRegressor, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over the ensemble's trees for each row of ``features``."""
    rows = np.ascontiguousarray(features, dtype=np.float32)  # what the trees read; checked once here
    per_tree = np.stack([tree.predict(rows, check_input=False) for tree in model.estimators_])
    return per_tree.mean(axis=0), per_tree.std(axis=0)


def exploration_weights(count: int, exploration: float) -> list[float]:
    """One UCB weight per child: evenly from 0 (the predicted best) to ``exploration``."""
    if count <= 1:
        return [0.0]
    return [exploration * i / (count - 1) for i in range(count)]


def choose_batch(
    mean: np.ndarray, std: np.ndarray, count: int, exploration: float,
    preferred: Sequence[np.ndarray | None] | None = None,
) -> list[tuple[int, float]]:
    """Indices of ``count`` distinct proposals and the weight each was chosen with: child i takes
    the best not yet chosen by ``mean + w_i * std``, among ``preferred[i]`` (a boolean mask) when
    any of those is left."""
    chosen: list[tuple[int, float]] = []
    taken = np.zeros(len(mean), dtype=bool)
    for child, weight in enumerate(exploration_weights(min(count, len(mean)), exploration)):
        value = np.where(taken, -np.inf, mean + weight * std)
        index = _best(value, preferred[child] if preferred and child < len(preferred) else None, taken)
        taken[index] = True
        chosen.append((index, weight))
    return chosen


def _best(value: np.ndarray, mask: np.ndarray | None, taken: np.ndarray) -> int:
    if mask is not None and np.any(mask & ~taken):
        return int(np.argmax(np.where(mask & ~taken, value, -np.inf)))
    return int(np.argmax(value))


def capacity(costs: np.ndarray) -> np.ndarray:
    """A capacity score per row of ``costs`` (columns: params, FLOPs, ...): the mean of each
    column's rank (from 0, ties averaged), so columns of any scale weigh alike."""
    return np.mean([_average_ranks(column) for column in np.asarray(costs, dtype=float).T], axis=0)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, tied values sharing the mean of their ranks (scipy's ``rankdata - 1``,
    without importing scipy.stats: seconds at a run's start)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts
    return (first + (counts - 1) / 2)[inverse]


def warm_start(
    features: np.ndarray, costs: np.ndarray | None, count: int, rng: random.Random
) -> list[int]:
    """``count`` rows of a proposal pool: the most capable first, then farthest-point sampling
    (L1 distance on ``features``) among the most capable quarter of the pool; without costs,
    farthest-point sampling over the whole pool from a random start."""
    rows = len(features)
    if rows == 0 or count <= 0:
        return []
    if costs is not None and costs.size and costs.shape[1]:
        score = capacity(costs)
        keep = max(count, int(np.ceil(CAPABLE_FRACTION * rows)))
        pool = [int(i) for i in np.argsort(-score, kind="stable")[:keep]]
    else:
        pool = list(range(rows))
        rng.shuffle(pool)
    chosen = [pool[0]]
    nearest = np.abs(features[pool] - features[pool[0]]).sum(axis=1)
    while len(chosen) < min(count, len(pool)):
        position = int(np.argmax(nearest))
        chosen.append(pool[position])
        nearest = np.minimum(nearest, np.abs(features[pool] - features[pool[position]]).sum(axis=1))
    return chosen


def cost_matrix(costs: Sequence[tuple[int | None, int | None]]) -> np.ndarray | None:
    """The known cost columns of every proposal as ``log1p(millions)``, or None when some proposal
    lacks a figure that another has (then costs are not used at all, for consistency)."""
    columns = []
    for position in range(2):
        values = [c[position] for c in costs]
        if all(v is not None for v in values):
            columns.append([np.log1p(float(v) / 1e6) for v in values])  # type: ignore[arg-type]
        elif any(v is not None for v in values):
            return None
    return np.array(columns, dtype=float).T if columns else None
