"""Free features of a candidate: a numeric description known without evaluating it.

Search policies that model the score (the Navigator's ``model`` strategy) need every candidate,
evaluated or only proposed, as a fixed-length vector:

* enumerable spaces (NAS-Bench-201 cells, positions): the one-hot choice per position, plus, for
  every option offered at several positions (an operation any edge of a cell may take), how many
  positions hold it: a model then sees "three 3x3 convolutions" without having to learn it from
  each position separately;
* a space with its own summary (``space.features(text) -> list[float]``, e.g. block-type counts,
  depth, widths, kernel sizes): that summary;
* any other space (code, YOLO YAML): a hashed bag of the text's identifiers and numbers, scaled
  by ``log1p``, plus its length; fixed-length and stable across runs and machines.

Costs (params, FLOPs) are the other free features; they come from the evaluator's ``measure``
(a tabular benchmark's cost columns: reading them is profiling, not evaluation) or from the
space's closed forms (:func:`closed_form_costs`). The graph combines both; nothing here reads
a score.
"""

from __future__ import annotations

import math
import re
import zlib

from archsmith.tools.spaces.base import EnumerableSpace, SearchSpace

HASHED_FEATURES = 64
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z_0-9]*|\d+")


def structure_features(space: SearchSpace, text: str) -> list[float]:
    """The candidate's structure as numbers (ValueError for a text the space cannot read)."""
    if isinstance(space, EnumerableSpace):
        choices = space.choices()
        held = [options[index] for index, options in zip(space.encode(text), choices)]
        row: list[float] = []
        for index, options in zip(space.encode(text), choices):
            row.extend(1.0 if option == index else 0.0 for option in range(len(options)))
        return row + [float(held.count(option)) for option in shared_options(choices)]
    own = getattr(space, "features", None)
    if callable(own):
        return [float(v) for v in own(text)]
    return hashed_features(text)


def shared_options(choices: list[list[str]]) -> list[str]:
    """Options offered at more than one position, in order of first appearance."""
    seen: dict[str, int] = {}
    for options in choices:
        for option in dict.fromkeys(options):
            seen[option] = seen.get(option, 0) + 1
    return [option for option, positions in seen.items() if positions > 1]


def hashed_features(text: str, width: int = HASHED_FEATURES) -> list[float]:
    """A bag of identifiers and numbers hashed into ``width`` buckets (crc32: the same
    everywhere), ``log1p`` of the counts, then ``log1p`` of the token count."""
    counts = [0] * width
    tokens = _TOKEN.findall(text)
    for token in tokens:
        counts[zlib.crc32(token.encode("utf-8")) % width] += 1
    return [math.log1p(c) for c in counts] + [math.log1p(len(tokens))]


def closed_form_costs(space: SearchSpace, text: str, num_classes: int) -> tuple[int | None, int | None]:
    """(params, FLOPs = 2 x MACs) from the space's closed forms where it has them, else None.

    NAS-Bench-201 has both (``param_count``, ``macs``), the template and YOLO spaces count
    parameters (``param_count``); nothing is built or run.
    """
    params = flops = None
    try:
        if callable(count := getattr(space, "param_count", None)):
            params = int(count(text, num_classes))
        if callable(macs := getattr(space, "macs", None)):
            flops = 2 * int(macs(text, num_classes))
    except (ValueError, TypeError):
        return None, None
    return params, flops
