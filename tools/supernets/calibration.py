"""BatchNorm recalibration of a subnet with inherited weights.

A subnet cut out of a supernet inherits BatchNorm running statistics that were averaged over
*other* subnets (every training step ran a different one), so they do not describe its own
activations. OFA and SPOS therefore reset them and re-estimate them on a few training images
before measuring accuracy. The estimate here follows once-for-all's ``set_running_statistics``:
every batch is normalised with its own statistics while they are measured, and the running mean
and variance become the averages, weighted by batch size, of the per-batch mean and (biased)
variance over all batches. Nothing but the BatchNorm buffers changes; the model comes back in
eval mode.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["recalibrate_batchnorm"]


class _BatchStatistics:
    """Sums of per-batch means and variances of one BatchNorm, weighted by batch size."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        self.bn = bn
        self.mean_sum = torch.zeros(bn.num_features, dtype=torch.float64, device=_device(bn))
        self.var_sum = torch.zeros_like(self.mean_sum)
        self.count = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dim=dims)
        var = (x - mean.view(1, -1, *([1] * (x.dim() - 2)))).square().mean(dim=dims)
        size = x.shape[0]
        self.mean_sum += mean.detach().double() * size
        self.var_sum += var.detach().double() * size
        self.count += size
        bn = self.bn
        return F.batch_norm(x, mean, var, bn.weight, bn.bias, training=False, momentum=0.0, eps=bn.eps)

    def store(self) -> None:
        if self.count == 0:
            return
        running_mean, running_var = self.bn.running_mean, self.bn.running_var
        assert running_mean is not None and running_var is not None
        running_mean.copy_((self.mean_sum / self.count).to(running_mean.dtype))
        running_var.copy_((self.var_sum / self.count).to(running_var.dtype))


def _device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate the running mean and variance of every BatchNorm of ``model`` on ``batches``
    (input tensors on the model's device); returns the number of images seen.

    BatchNorms without running statistics are left alone. With no images, nothing changes.
    """
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    statistics = [_BatchStatistics(bn) for bn in norms]
    for bn, stats in zip(norms, statistics):
        bn.forward = stats.forward  # an instance attribute: removed below, the class is untouched
    seen = 0
    try:
        model.eval()
        for images in batches:
            model(images)
            seen += int(images.shape[0])
    finally:
        for bn in norms:
            del bn.forward
    if seen:
        for stats in statistics:
            stats.store()
    return seen
