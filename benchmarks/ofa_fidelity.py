"""Fidelity of ``archsmith.tools.supernets.extract_subnet`` against the official once-for-all code.

Needs a checkout of mit-han-lab/once-for-all (``--ofa-repo``; nothing is downloaded). For each
width it builds the official ``OFAMobileNetV3`` with random weights (Kaiming convolutions, random
BN affine parameters and biases, kernel-transform matrices moved away from the identity), sets
the BN statistics by three training-mode passes on random images for each random subnet, saves
the state dict as a checkpoint, and compares, on random images at the subnet's resolution:
the official ``get_active_subnet(preserve_weight=True)`` against ours (parameters and logits).

Usage: ``python benchmarks/ofa_fidelity.py --ofa-repo PATH [--subnets 6] [--seed 0]
[--out benchmarks/results/supernets]``; about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from archsmith.tools.supernets import extract_subnet

SPACES = {1.0: "ofa_mbv3", 1.2: "ofa_mbv3_w1.2"}


def randomise(network: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, value in network.state_dict().items():
            if not value.dtype.is_floating_point or "running" in name:
                continue
            if "matrix" in name:
                value.add_(torch.randn_like(value) * 0.2)
            elif name.endswith("bn.weight"):
                value.uniform_(0.5, 1.5)
            elif "bias" in name:
                value.normal_(0, 0.1)
            elif value.dim() > 1:
                torch.nn.init.kaiming_normal_(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ofa-repo", type=Path, required=True)
    parser.add_argument("--subnets", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(args.ofa_repo))
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    lines = ["| width | resolution | params (official) | params (ours) | max abs logit difference | logit scale |",
             "|---|---|---|---|---|---|"]
    worst = 0.0
    with tempfile.TemporaryDirectory() as scratch:
        for width, space in SPACES.items():
            official = OFAMobileNetV3(n_classes=1000, dropout_rate=0, width_mult=width, ks_list=[3, 5, 7],
                                      expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
            randomise(official)
            for _ in range(args.subnets):
                arch = {"ks": [rng.choice([3, 5, 7]) for _ in range(20)], "e": [rng.choice([3, 4, 6]) for _ in range(20)],
                        "d": [rng.choice([2, 3, 4]) for _ in range(5)], "r": rng.choice(range(128, 225, 16))}
                official.set_active_subnet(ks=arch["ks"], e=arch["e"], d=arch["d"])
                official.train()
                with torch.no_grad():
                    for _ in range(3):
                        official(torch.randn(8, 3, arch["r"], arch["r"]))
                official.eval()
                checkpoint = Path(scratch) / "supernet.pth"
                torch.save({"state_dict": official.state_dict()}, checkpoint)
                reference = official.get_active_subnet(preserve_weight=True).eval()
                ours = extract_subnet(space, arch, checkpoint)
                images = torch.randn(4, 3, arch["r"], arch["r"])
                with torch.no_grad():
                    expected, got = reference(images), ours(images)
                difference = (expected - got).abs().max().item()
                worst = max(worst, difference)
                count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
                lines.append(f"| {width} | {arch['r']} | {count(reference):,} | {count(ours):,} | {difference:.2e} | "
                             f"{expected.abs().max().item():.2f} |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    ofa = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=args.ofa_repo).stdout.strip()
    text = "\n".join([f"# extract_subnet against the official once-for-all code (commit {commit}; once-for-all "
                      f"{ofa or 'checkout without git'})", "", *lines, "", f"worst difference: {worst:.2e}", ""])
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ofa_fidelity.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
