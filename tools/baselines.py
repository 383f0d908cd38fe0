"""Baseline search methods over an enumerable space: random search, regularized evolution, REINFORCE.

Every method has one signature, ``(problem, budget, rng) -> list[Evaluation]``, and spends its
budget through a :class:`Ledger`:

- The budget counts DISTINCT architectures (by the space's canonical form). Proposing an
  architecture that was already evaluated costs nothing, is not counted, and returns the cached
  signal. A run stops when ``budget`` distinct architectures are evaluated, when the space is
  exhausted, or after ``problem.proposal_cap(budget)`` proposals in all (a guard against loops).
- A method only ever sees the signal (e.g. validation accuracy) through :meth:`Ledger.propose`.
  The reported metrics (e.g. test accuracy) go into the :class:`Evaluation` records, which the
  methods never read. A signal of ``None`` (not in the table, failed) ranks below every number.

Randomness comes only from the ``rng`` argument (DESIGN.md, convention 7); nothing here imports
the graph.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from archsmith.tools.spaces.base import EnumerableSpace
from archsmith.tools.tabular import TabularBenchmark

Evaluator = Callable[[str], tuple[float | None, dict[str, float]]]
"""canonical architecture text -> (signal or None, reported metrics)."""


@dataclass(frozen=True)
class Evaluation:
    """One distinct architecture evaluated; ``index`` counts from 1, ``proposals`` includes repeats."""

    index: int
    arch: str
    signal: float | None
    report: dict[str, float]
    proposals: int


class Outcome(NamedTuple):
    """What a method learns from one proposal: the canonical text, its signal, whether it was new."""

    arch: str | None
    signal: float | None
    new: bool


@dataclass
class SearchProblem:
    """A space plus an evaluation function; ``exact_size_limit`` bounds the enumeration that finds
    the number of distinct canonical architectures (larger spaces use the product of choices)."""

    space: EnumerableSpace
    evaluate: Evaluator
    profile: Callable[[str], tuple[int | None, int | None]] | None = None
    """(params, FLOPs) of an architecture without evaluating it (a table's cost columns), if known."""
    proposal_factor: int = 50
    exact_size_limit: int = 4096
    _size: int | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_table(cls, space: EnumerableSpace, table: TabularBenchmark, **options: int) -> SearchProblem:
        """Evaluate by lookup in ``table``: signal = its signal column, report = its report columns."""
        signal, report = table.spec.signal, list(table.spec.report)

        def evaluate(text: str) -> tuple[float | None, dict[str, float]]:
            row = table.lookup(text)
            if row is None:
                return None, {}
            return row[signal], {name: row[name] for name in report}

        return cls(space=space, evaluate=evaluate, profile=table.profile, **options)

    @property
    def size(self) -> int:
        """Distinct canonical architectures (exact for small spaces, an upper bound otherwise)."""
        if self._size is None:
            counts = [len(options) for options in self.space.choices()]
            total = math.prod(counts)
            if total <= self.exact_size_limit:
                total = len({self.space.canonical(self.space.decode(list(i))) for i in np.ndindex(*counts)})
            self._size = total
        return self._size

    def proposal_cap(self, budget: int) -> int:
        return max(1000, self.proposal_factor * budget)

    def ledger(self, budget: int) -> Ledger:
        return Ledger(self, budget)


class BudgetSpent(RuntimeError):
    """A new architecture was proposed after the ledger was done."""


class Ledger:
    """Counts distinct evaluations of one run and caches signals; methods loop ``while not done``."""

    def __init__(self, problem: SearchProblem, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"budget must be at least 1, got {budget}")
        self.problem = problem
        self.budget = budget
        self.cap = problem.proposal_cap(budget)
        self.proposals = 0
        self.evaluations: list[Evaluation] = []
        self._signals: dict[str, float | None] = {}

    @property
    def done(self) -> bool:
        return (
            len(self.evaluations) >= self.budget
            or self.proposals >= self.cap
            or len(self.evaluations) >= self.problem.size
        )

    def seen(self, text: str) -> bool:
        try:
            return self.problem.space.canonical(text) in self._signals
        except ValueError:
            return False

    def propose(self, text: str) -> Outcome:
        """Evaluate ``text`` if it is new (counted), else return its cached signal (free)."""
        if self.proposals >= self.cap:
            raise BudgetSpent(f"proposal cap of {self.cap} reached")
        try:
            arch = self.problem.space.canonical(text)
        except ValueError:
            self.proposals += 1
            return Outcome(None, None, False)
        if arch in self._signals:
            self.proposals += 1
            return Outcome(arch, self._signals[arch], False)
        if self.done:
            raise BudgetSpent(f"budget of {self.budget} distinct architectures spent")
        self.proposals += 1
        signal, report = self.problem.evaluate(arch)
        self._signals[arch] = signal
        self.evaluations.append(Evaluation(len(self.evaluations) + 1, arch, signal, dict(report), self.proposals))
        return Outcome(arch, signal, True)


def _rank(signal: float | None) -> float:
    return -math.inf if signal is None else signal


def random_search(problem: SearchProblem, budget: int, rng: random.Random) -> list[Evaluation]:
    """Uniform samples until the budget is spent (repeats are free: sampling without replacement)."""
    ledger = problem.ledger(budget)
    while not ledger.done:
        ledger.propose(problem.space.sample(rng))
    return ledger.evaluations


def mutate_one(space: EnumerableSpace, text: str, rng: random.Random) -> str:
    """Change one position (chosen uniformly among those with 2+ options) to a different option."""
    indices = space.encode(text)
    choices = space.choices()
    positions = [p for p, options in enumerate(choices) if len(options) > 1]
    if not positions:
        return text
    position = rng.choice(positions)
    other = rng.randrange(len(choices[position]) - 1)
    indices[position] = other if other < indices[position] else other + 1
    return space.decode(indices)


Member = tuple[str, float | None]  # (canonical architecture, signal)


def _random_population(problem: SearchProblem, ledger: Ledger, size: int, rng: random.Random) -> list[Member]:
    """``size`` distinct random architectures, evaluated (fewer if the budget ends first)."""
    population: list[Member] = []
    while len(population) < size and not ledger.done:
        outcome = ledger.propose(problem.space.sample(rng))
        if outcome.new and outcome.arch is not None:
            population.append((outcome.arch, outcome.signal))
    return population


def regularized_evolution(
    problem: SearchProblem,
    budget: int,
    rng: random.Random,
    *,
    population_size: int = 10,
    sample_size: int = 3,
) -> list[Evaluation]:
    """Regularized (aging) evolution, Real et al. 2019.

    Population 10 and tournament sample size 3, as NAS-Bench-201's R-EA runs. The population
    starts with ``population_size`` distinct random architectures; each cycle samples
    ``sample_size`` members with replacement, mutates the best one (one position, see
    :func:`mutate_one`), adds the child and removes the oldest member. A child that was already
    evaluated is free and leaves the population unchanged (the cycle is repeated), so the
    population only ages on new evaluations.
    """
    ledger = problem.ledger(budget)
    population = deque(_random_population(problem, ledger, population_size, rng))
    while not ledger.done and population:
        tournament = [rng.choice(population) for _ in range(sample_size)]
        parent = max(tournament, key=lambda member: _rank(member[1]))
        outcome = ledger.propose(mutate_one(problem.space, parent[0], rng))
        if outcome.new and outcome.arch is not None:
            population.append((outcome.arch, outcome.signal))
            population.popleft()
    return ledger.evaluations


STALE_FACTOR = 20  # repeated proposals per child before a generation turns to random samples


def elitist_evolution(
    problem: SearchProblem,
    budget: int,
    rng: random.Random,
    *,
    population_size: int = 10,
    elite_fraction: float = 0.5,
) -> list[Evaluation]:
    """Generational evolution with elitism, the EA that CoLLM-NAS compares against.

    A population of ``population_size`` random architectures; each generation keeps the best
    ``elite_fraction`` of it (the elite), mutates randomly chosen elite members into
    ``population_size`` new distinct children, and the next population is the best
    ``population_size`` of elite and children. With population 10 and budget 100 that is
    CoLLM-NAS's "population 10 over 10 iterations with 50% elite". When the elite's
    neighbourhood is used up (small spaces), the generation is filled with random samples.
    """
    ledger = problem.ledger(budget)
    population = _random_population(problem, ledger, population_size, rng)
    elite_size = max(1, round(elite_fraction * population_size))
    while not ledger.done and population:
        elite = sorted(population, key=lambda member: _rank(member[1]), reverse=True)[:elite_size]
        children: list[tuple[str, float | None]] = []
        attempts = 0
        while len(children) < population_size and not ledger.done:
            attempts += 1
            if attempts > STALE_FACTOR * population_size:  # the elite's neighbourhood is used up
                proposal = problem.space.sample(rng)
            else:
                proposal = mutate_one(problem.space, rng.choice(elite)[0], rng)
            outcome = ledger.propose(proposal)
            if outcome.new and outcome.arch is not None:
                children.append((outcome.arch, outcome.signal))
        ranked = sorted(elite + children, key=lambda member: _rank(member[1]), reverse=True)
        population = ranked[:population_size]
    return ledger.evaluations


class _Adam:
    """Adam on one array (the policy logits), gradient ascent."""

    def __init__(self, shape: tuple[int, ...], lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.lr, self.betas, self.eps, self.step = lr, betas, 1e-8, 0
        self.m, self.v = np.zeros(shape), np.zeros(shape)

    def ascend(self, params: np.ndarray, grad: np.ndarray) -> None:
        self.step += 1
        b1, b2 = self.betas
        self.m = b1 * self.m + (1 - b1) * grad
        self.v = b2 * self.v + (1 - b2) * grad * grad
        m_hat, v_hat = self.m / (1 - b1**self.step), self.v / (1 - b2**self.step)
        params += self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def reinforce(
    problem: SearchProblem,
    budget: int,
    rng: random.Random,
    *,
    learning_rate: float = 0.01,
    momentum: float = 0.9,
) -> list[Evaluation]:
    """REINFORCE (Williams 1992) with a factorised categorical policy, as in NAS-Bench-201.

    One logit vector per position of ``space.choices()``, initialised to 0 (uniform). Each step
    samples one option per position; a NEW architecture gives reward = its signal (unscaled:
    Adam, lr 0.01, makes the step size insensitive to the reward scale; ``None`` scores as the
    lowest signal seen so far), the baseline (a bias-corrected exponential moving average with
    ``momentum``) is updated with the reward, and the logits take one Adam step along
    ``(reward - baseline) * grad log p(arch)``. Repeated architectures are free and do not
    update the policy, so each evaluation contributes exactly one gradient step.
    """
    space = problem.space
    counts = [len(options) for options in space.choices()]
    width = max(counts)
    mask = np.array([[j < n for j in range(width)] for n in counts])
    logits = np.zeros((len(counts), width))
    adam = _Adam(logits.shape, learning_rate)
    numerator = denominator = 0.0
    lowest = math.inf
    ledger = problem.ledger(budget)
    while not ledger.done:
        shifted = np.where(mask, logits, -np.inf)
        probs = np.exp(shifted - shifted.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        indices = [_categorical(row[:n], rng) for row, n in zip(probs, counts)]
        outcome = ledger.propose(space.decode(indices))
        if not outcome.new:
            continue
        if outcome.signal is not None:
            lowest = min(lowest, outcome.signal)
        reward = outcome.signal if outcome.signal is not None else (lowest if lowest < math.inf else 0.0)
        numerator = momentum * numerator + (1 - momentum) * reward
        denominator = momentum * denominator + (1 - momentum)
        advantage = reward - numerator / denominator
        grad = -probs * mask
        grad[np.arange(len(counts)), indices] += 1.0
        adam.ascend(logits, advantage * grad)
    return ledger.evaluations


def _categorical(probs: np.ndarray, rng: random.Random) -> int:
    """Inverse-CDF draw from ``probs`` with the run's ``random.Random``."""
    draw, total = rng.random(), 0.0
    for index, p in enumerate(probs):
        total += float(p)
        if draw < total:
            return index
    return len(probs) - 1
