"""Running a code candidate (sandbox side): execute its source, wrap its network for the tools.

Imported only inside the sandbox (it imports torch). The source is compiled under the file name
``candidate.py`` and registered with ``linecache``, so tracebacks show the candidate's own lines,
which is what the Debugger needs to see.
"""

from __future__ import annotations

import linecache
import types
from collections.abc import Callable

import torch
from torch import nn

POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


def load_entry(source: str, entry: str, filename: str = "candidate.py") -> Callable[[int], nn.Module]:
    """Execute ``source`` as a fresh module and return its ``entry`` callable."""
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    module = types.ModuleType("candidate")
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)  # noqa: S102 - sandboxed by the caller
    factory = module.__dict__.get(entry)
    if not callable(factory):
        raise TypeError(f"the candidate defines no callable {entry}")
    return factory


class CodeNetwork(nn.Module):
    """A candidate's network with the interface the tools expect.

    ``forward`` checks that the candidate returned an ``nn.Module`` output tensor unchanged;
    ``forward_pre_gap`` (for Zen-score) returns the last 4-D feature map with a spatial extent
    larger than 1x1 produced by a leaf module during the forward pass (the map that global pooling
    reduces), or the last 4-D map of any size when there is none larger.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"Network(num_classes) returned {type(net).__name__}, not an nn.Module")
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_pre_gap(self, x: torch.Tensor) -> torch.Tensor:
        maps: list[tuple[torch.Tensor, bool]] = []

        def record(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                maps.append((output, isinstance(module, POOLING) and output.shape[-2:] == (1, 1)))

        leaves = [m for m in self.net.modules() if not list(m.children())]
        handles = [m.register_forward_hook(record) for m in leaves]
        try:
            self.net(x)
        finally:
            for handle in handles:
                handle.remove()
        spatial = [t for t, pooled in maps if not pooled and t.shape[-2] * t.shape[-1] > 1]
        chosen = spatial or [t for t, _ in maps]
        if not chosen:
            raise RuntimeError("no 4-D feature map was produced by any layer (Zen-score needs one)")
        return chosen[-1]

