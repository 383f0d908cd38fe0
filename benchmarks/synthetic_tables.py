"""Synthetic tabular benchmarks for robustness checks of the search policies.

Search policies must not be tuned to the one real table we have (NAS-Bench-201 CIFAR-10). These
tables have other structure, in the shape of NAS-Bench-Macro (``arch,valid_acc,test_acc,params_m,
flops_m``, no dataset column; the ``positions`` space: ``length`` positions of ``options``):

* ``additive``: the score is a sum of per-position effects; cost and effect correlate weakly.
* ``interactions``: additive plus strong pairwise terms between neighbouring positions (epistasis).
* ``noisy``: additive with evaluation noise as large as a typical effect (``valid_acc`` noisy,
  ``test_acc`` the noise-free value).
* ``anticost``: the larger options are the worse ones: a trap for a cost-aware warm start.
* ``needle``: a flat landscape with a narrow peak around one architecture.

``valid_acc`` is the search signal, ``test_acc`` another draw of the noise around the same truth.
Usage: ``python benchmarks/synthetic_tables.py OUT_DIR [--seed 0] [--length 8] [--options 3]``;
then ``archsmith bench --table OUT_DIR/additive.csv --space positions --space-setting length=8
--space-setting 'options=["0","1","2"]'``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np

KINDS = ("additive", "interactions", "noisy", "anticost", "needle")


def table(kind: str, length: int, options: int, seed: int) -> list[dict[str, object]]:
    """Every architecture of the space with its columns (one row each)."""
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    option_cost = np.sort(rng.uniform(0.05, 0.5, size=(length, options)), axis=1)  # option k costs more
    effect = rng.normal(0, 1, size=(length, options))
    if kind == "anticost":
        effect = -np.sort(np.abs(effect), axis=1)  # the costliest option is the worst
    else:
        effect += 0.4 * (option_cost - option_cost.mean()) / option_cost.std()  # weak cost signal
    pair = rng.normal(0, 1.5, size=(length - 1, options, options)) if kind == "interactions" else None
    needle = rng.integers(0, options, size=length) if kind == "needle" else None
    noise = 0.8 if kind == "noisy" else 0.05
    rows = []
    for arch in itertools.product(range(options), repeat=length):
        index = np.array(arch)
        truth = float(effect[np.arange(length), index].sum())
        if pair is not None:
            truth += float(sum(pair[p, arch[p], arch[p + 1]] for p in range(length - 1)))
        if needle is not None:
            truth = 0.3 * truth + 6.0 * float(np.exp(-np.sum(index != needle)))
        params = float(option_cost[np.arange(length), index].sum())
        rows.append({
            "arch": "".join(str(a) for a in arch),
            "valid_acc": round(70 + 2 * (truth + rng.normal(0, noise)), 4),
            "test_acc": round(70 + 2 * (truth + rng.normal(0, noise)), 4),
            "params_m": round(params, 6),
            "flops_m": round(params * 30 + 5, 4),
        })
    return rows


def write(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length", type=int, default=8)
    parser.add_argument("--options", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        write(args.out / f"{kind}.csv", table(kind, args.length, args.options, args.seed))
        print(f"wrote {args.out / f'{kind}.csv'} ({args.options ** args.length} rows)")


if __name__ == "__main__":
    main()
