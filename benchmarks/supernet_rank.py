"""Rank agreement of inherited-weight accuracy with stand-alone training, on a tiny supernet.

Trains the tiny OFA MobileNetV3 supernet of examples/ofa-tiny-digits.toml on scikit-learn's digits
(tools/supernets/training.py, the example's sandwich settings), then takes subnets spread over the
space (the largest, the smallest and random ones) and measures each two ways:

- inherited: the subnet cut out of the supernet, BatchNorm recalibrated on 500 training images,
  top-1 on the validation split (what `evaluator.name = "supernet"` scores);
- stand-alone: the same architecture trained from scratch (tools/training.py, the same number of
  epochs and learning rate as the supernet), top-1 on the validation split.

Prints both per subnet and Kendall's tau between them; saves the table with the commit under
benchmarks/results/supernets/rank_agreement.md. CPU, a few minutes.

    python benchmarks/supernet_rank.py [--subnets 12] [--epochs 8] [--standalone-epochs N] [--seed 0]
        [--space-settings JSON] [--data JSON] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import torch
from scipy.stats import kendalltau

from archsmith.tools.datasets import load_dataset
from archsmith.tools.spaces import get_space
from archsmith.tools.supernets.evaluate import evaluate_subnet_candidate
from archsmith.tools.supernets.training import extreme_archs, train_supernet
from archsmith.tools.training import resolve_settings, train_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ofa-tiny-digits.toml"
OUT = ROOT / "benchmarks" / "results" / "supernets" / "rank_agreement.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subnets", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=None, help="default: the example's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--standalone-epochs", type=int, default=None, help="default: the supernet's epochs")
    parser.add_argument("--space-settings", type=json.loads, default={}, help="JSON merged into the example's")
    parser.add_argument("--data", type=json.loads, default=None, help="JSON data spec (default: the example's)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/archsmith-supernet-rank"))
    args = parser.parse_args()
    config = tomllib.loads(EXAMPLE.read_text())
    space_settings = {**config["space"]["settings"], **args.space_settings}
    supernet_cfg = config["evaluator"]["supernet"]
    if args.data is not None:
        supernet_cfg["data"] = args.data
    from archsmith.graph.config_scoring import SupernetTrainingConfig

    training = SupernetTrainingConfig(**{**supernet_cfg["training"], "seed": args.seed,
                                         **({"epochs": args.epochs} if args.epochs else {})})
    torch.set_num_threads(2)
    space = get_space("ofa_mbv3", space_settings)
    data = load_dataset(supernet_cfg["data"])
    args.workdir.mkdir(parents=True, exist_ok=True)
    checkpoint = args.workdir / f"supernet-seed{args.seed}.pt"
    started = time.perf_counter()
    trained = train_supernet(space, data, checkpoint, training, restart=True)
    supernet_s = time.perf_counter() - started

    rng = random.Random(args.seed)
    texts = []
    for resolution in sorted({min(space_settings["resolutions"]), max(space_settings["resolutions"])}):
        texts += [json.dumps(arch.to_json()) for arch in extreme_archs(space.supernet_settings, resolution)]
    texts = [space.canonical(t) for t in texts]
    while len(texts) < args.subnets:
        text = space.sample(rng)
        if text not in texts:
            texts.append(text)

    rows = []
    for text in texts:
        inherited = evaluate_subnet_candidate({
            "space": "ofa_mbv3", "space_settings": space_settings, "text": text, "data": supernet_cfg["data"],
            "supernet": {k: supernet_cfg[k] for k in ("calibration_images", "batch_size", "center_crop")}
            | {"checkpoint": str(checkpoint)}, "device": "cpu"})
        assert inherited["ok"], inherited["error_message"]
        torch.manual_seed(args.seed)
        model = space.build(text, data.num_classes)
        standalone_data = data if json.loads(text)["r"] == data.input_size[0] else \
            load_dataset({**supernet_cfg["data"], "input_size": json.loads(text)["r"]})
        settings = resolve_settings("short", {"epochs": args.standalone_epochs or training.epochs, "lr": training.lr,
                                              "batch_size": training.batch_size, "warmup_epochs": 0.0,
                                              "seed": args.seed, "label_smoothing": training.label_smoothing})
        alone = train_model(model, standalone_data, settings, "cpu")
        rows.append((text, space.param_count(text, data.num_classes), inherited["score"], alone.valid_acc))
        print(f"{rows[-1][1] / 1e6:.3f} M  inherited {rows[-1][2]:6.2f}  stand-alone {rows[-1][3]:6.2f}", flush=True)
    tau, p_value = kendalltau([r[2] for r in rows], [r[3] for r in rows])
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    lines = [
        "# Rank agreement: inherited weights vs stand-alone training (tiny OFA MobileNetV3, digits)",
        "",
        f"`python benchmarks/supernet_rank.py {' '.join(sys.argv[1:])}` at commit {commit}; "
        f"space settings {json.dumps(space_settings)}, data {json.dumps(supernet_cfg['data'])}; supernet: "
        f"{training.sampling}, {training.epochs} epochs ({trained.wall_s:.0f} s on the CPU); stand-alone: "
        f"{args.standalone_epochs or training.epochs} epochs from scratch at the same learning rate, at the "
        "subnet's resolution. Subnets: the largest and the smallest at the lowest and the highest "
        "resolution, then random ones.",
        "",
        "| subnet | params | inherited top-1 % | stand-alone top-1 % |",
        "|---|---|---|---|",
        *[f"| `{text}` | {params / 1e6:.3f} M | {inh:.2f} | {alone:.2f} |" for text, params, inh, alone in rows],
        "",
        f"Kendall tau (inherited vs stand-alone, {len(rows)} subnets): **{tau:.3f}** (p = {p_value:.3f}).",
        f"Wall time: supernet {supernet_s:.0f} s, total {time.perf_counter() - started:.0f} s.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-2:]))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
