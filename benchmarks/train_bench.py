"""Training evaluator: throughput against a plain PyTorch loop, GPU figures, and rank fidelity.

Usage::

    python benchmarks/train_bench.py [--quick] [--samples 1024] [--epochs 3] [--repeats 3]
        [--threads N] [--workers W] [--device auto|cpu|cuda]
        [--cifar10 DIR] [--table CSV] [--cells 20] [--preset short] [--skip-cpu]

Tables:

1. CPU: steady-state training images/s (epochs 2..E, evaluation excluded; the best of
   ``--repeats`` interleaved runs, the least disturbed by other load) of
   :func:`archsmith.tools.training.train_model` against a plain loop written here: a ``Dataset``
   that pads, crops, flips and normalises one uint8 tensor image at a time, a ``DataLoader``
   (``--workers``), SGD + cosine, ``loss.item()`` each step as NAS-Bench-201's loop logs it. The
   baseline is lenient: tensors, not PIL images. Same network, seed, batch, epochs and data.
2. GPU (when CUDA is available): the same at batch 256 for ResNet-32 (the code space's base),
   NAS-Bench-201's ResNet cell and its best CIFAR-10 cell; the plain loop fp32 (as NB201 trains)
   and with bf16 autocast + channels_last (to separate the data pipeline from the precision);
   train_model also with ``compile`` (its first epoch, which compiles, is untimed);
   mean GPU utilisation (``torch.cuda.utilization``, n/a without pynvml); seconds per
   candidate for the ``short`` preset on a CIFAR-10-valid-sized set (25k train, 25k valid, 10k test).
3. Rank fidelity (``--cifar10 DIR`` and CUDA, or ``--device cpu`` to insist): ``--cells``
   NB201 cells drawn from ``--table`` (seeded), trained with the ``short`` preset; Kendall's tau-b
   between the trained valid accuracy and the table's 200-epoch ``valid_acc``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from archsmith.tools.datasets import ImageData, load_dataset
from archsmith.tools.ranking import kendall_tau
from archsmith.tools.spaces import get_space
from archsmith.tools.tabular import TabularBenchmark, TabularSpec, builtin_table
from archsmith.tools.training import TrainSettings, resolve_settings, train_model
from archsmith.tools.training_augment import default_crop_padding

DEFAULT_TABLE = builtin_table("nasbench201-cifar10")  # shipped in the package (gzip)
BEST_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"


def networks(names: list[str]) -> dict[str, tuple[str, str]]:
    """label -> (space, text)."""
    known = {
        "template seed": ("template", get_space("template").initial()[0]),
        "nb201 resnet cell": ("nb201", RESNET_CELL),
        "nb201 best cell": ("nb201", BEST_CELL),
        "resnet32 (code)": ("code", get_space("code", {"bases": ["resnet32"]}).initial()[0]),
    }
    return {name: known[name] for name in names}


def build(space: str, text: str, num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return get_space(space).build(text, num_classes)


# -- the plain loop ---------------------------------------------------------------------------


class AugmentedImages(torch.utils.data.Dataset):
    """One image at a time: zero-pad, random crop, random flip, normalise (torchvision's recipe)."""

    def __init__(self, data: ImageData, padding: int) -> None:
        self.x, self.y, self.padding = data.train_x, data.train_y, padding
        self.mean = torch.tensor(data.mean).view(3, 1, 1)
        self.std = torch.tensor(data.std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, p = self.x[index], self.padding
        height, width = image.shape[1:]
        padded = F.pad(image, (p, p, p, p))
        top, left = (int(v) for v in torch.randint(0, 2 * p + 1, (2,)))
        image = padded[:, top : top + height, left : left + width]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return (image.float() / 255.0 - self.mean) / self.std, self.y[index]


def plain_loop(model: nn.Module, data: ImageData, settings: TrainSettings, device: str, workers: int,
               fast: bool = False) -> float:  # fmt: skip
    """Steady-state training images/s (epochs 2..E) of a textbook loop; ``fast``: bf16 + channels_last."""
    cuda = device.startswith("cuda")
    memory_format = torch.channels_last if fast and cuda else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    torch.manual_seed(settings.seed)
    loader = torch.utils.data.DataLoader(
        AugmentedImages(data, default_crop_padding(data.input_size[0])), batch_size=settings.batch_size,
        shuffle=True, num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0,
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                nesterov=settings.nesterov, weight_decay=settings.weight_decay)  # fmt: skip
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.epochs * len(loader))
    seconds, images = 0.0, 0
    for epoch in range(settings.epochs):
        model.train()
        started = time.perf_counter()
        for x, y in loader:
            x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=fast and cuda):
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss.item()
        if epoch > 0 or settings.epochs == 1:
            seconds += time.perf_counter() - started
            images += len(data.train_y)
    return images / seconds


def steady_rate(report: Any, images_per_epoch: int) -> float:
    epochs = report.curve[1:] or report.curve
    return images_per_epoch * len(epochs) / sum(e.seconds for e in epochs)


class Utilisation:
    """Mean GPU utilisation (%) sampled every 0.2 s while a block runs; None when unavailable."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # noqa: BLE001 - pynvml missing or unsupported
                return

    def __enter__(self) -> Utilisation:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self) -> str:
        return f"{sum(self.samples) / len(self.samples):.0f}%" if self.samples else "n/a"


# -- the tables -----------------------------------------------------------------------------------


def throughput_table(labels: list[str], data: ImageData, settings: TrainSettings, device: str,
                     workers: int, fast_row: bool, repeats: int) -> None:  # fmt: skip
    """Best of ``repeats`` interleaved runs per loop (the least disturbed by other load)."""
    print(f"{'network':<20} {'loop':<32} {'images/s':>10} {'vs plain':>9} {'GPU util':>9}")
    for label, (space, text) in networks(labels).items():
        variants = [f"plain fp32, DataLoader ({workers} workers)"]
        variants += [f"plain bf16+channels_last ({workers} w.)"] if fast_row else []
        variants += ["train_model (on-device data)"]
        variants += ["train_model + torch.compile"] if fast_row else []
        best = {name: (0.0, "-") for name in variants}
        for _ in range(repeats):
            for index, name in enumerate(variants):
                model = build(space, text, data.num_classes)
                with Utilisation() as use:
                    if name.startswith("train_model"):
                        compiled = settings.model_copy(update={"compile": name.endswith("compile")})
                        rate = steady_rate(train_model(model, data, compiled, device), len(data.train_y))
                    else:
                        rate = plain_loop(model, data, settings, device, workers, fast=index == 1)
                if rate > best[name][0]:
                    best[name] = (rate, use.mean() if device != "cpu" else "-")
        plain = best[variants[0]][0]
        for name, (rate, util) in best.items():
            print(f"{label:<20} {name:<32} {rate:>10.0f} {rate / plain:>8.2f}x {util:>9}")


def cifar_sized(size: int = 32) -> ImageData:
    """Synthetic images in CIFAR-10-valid's split sizes: 25k train, 25k valid, 10k test."""
    data = load_dataset({"name": "synthetic", "synthetic_samples": 25_000, "input_size": size})
    return ImageData("synthetic-cifar10-valid", data.train_x, data.train_y, data.train_x, data.train_y,
                     data.train_x[:10_000], data.train_y[:10_000], 10, data.mean, data.std)  # fmt: skip


def short_preset_table(labels: list[str], device: str) -> None:
    data = cifar_sized()
    print(f"{'network':<20} {'short preset':>14} {'train s':>8} {'images/s':>9} {'peak MB':>8}")
    for label, (space, text) in networks(labels).items():
        report = train_model(build(space, text, 10), data, resolve_settings("short"), device)
        print(f"{label:<20} {report.wall_s:>12.1f} s {report.train_s:>8.1f} {report.images_per_s:>9.0f} "
              f"{report.peak_memory_mb:>8.0f}")  # fmt: skip


def _tau_text(tau: float | None) -> str:
    return "undefined (constant scores)" if tau is None else f"{tau:.3f}"


def fidelity_table(cifar10: Path, table: Path, cells: int, seed: int, device: str, preset: str) -> None:
    from archsmith.tools.datasets import DataError

    bench = TabularBenchmark.load(TabularSpec(path=str(table), dataset="cifar10"))  # .csv or .csv.gz
    rows = {arch: row["valid_acc"] for arch, row in bench.rows.items()}
    chosen = random.Random(seed).sample(sorted(rows), cells)
    try:
        data = load_dataset({"name": "cifar10", "path": str(cifar10)})
    except DataError as error:
        print(f"skipped: {error}")
        return
    settings = resolve_settings(preset)
    trained, expected = [], []
    print(f"{'cell':<100} {'table valid':>11} {preset + ' valid':>12} {'s':>6}")
    for text in chosen:
        report = train_model(build("nb201", text, 10), data, settings, device)
        trained.append(report.valid_acc or 0.0)
        expected.append(rows[text])
        print(f"{text:<100} {rows[text]:>11.2f} {trained[-1]:>12.2f} {report.wall_s:>6.1f}")
    print(f"Kendall tau-b over {len(chosen)} cells ({preset} preset vs the table's 200-epoch valid_acc): "
          f"{_tau_text(kendall_tau(trained, expected))}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast CPU run: small set, one network")
    parser.add_argument("--samples", type=int, default=None, help="CPU: synthetic training images")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per throughput run (first one untimed)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per loop, best kept (default 3; quick 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: all)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 0 CPU, 8 GPU)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--cifar10", type=Path, default=None, help="CIFAR-10 python-pickle directory")
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE, help="NAS-Bench-201 CIFAR-10 CSV")
    parser.add_argument("--cells", type=int, default=20)
    parser.add_argument("--preset", default="short", help="preset of the rank-fidelity runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-cpu", action="store_true", help="leave out table 1 (a GPU session's time is short)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.machine()} {platform.system()}, {cores} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, python {sys.version.split()[0]}")  # fmt: skip
    if cuda:
        print(f"GPU: {torch.cuda.get_device_name()}")

    samples = args.samples or (256 if args.quick else 1024)
    labels = ["template seed"] if args.quick else ["template seed", "resnet32 (code)"]
    settings = resolve_settings("smoke", {"epochs": max(args.epochs, 2), "batch_size": 64})
    print(f"\n1. CPU, synthetic {samples} images 32x32, batch 64, {settings.epochs} epochs (first untimed), fp32")
    repeats = args.repeats or (1 if args.quick else 3)
    if args.skip_cpu:
        print("skipped: --skip-cpu")
    else:
        print(f"best of {repeats} interleaved runs per loop")
        data = load_dataset({"name": "synthetic", "synthetic_samples": samples, "input_size": 32})
        throughput_table(labels, data, settings, "cpu", args.workers or 0, False, repeats)

    print("\n2. GPU, batch 256")
    if not cuda:
        print("skipped: no CUDA")
    else:
        gpu_labels = ["resnet32 (code)", "nb201 resnet cell", "nb201 best cell"]
        gpu_data = load_dataset({"name": "synthetic", "synthetic_samples": 10_240, "input_size": 32})
        gpu_settings = resolve_settings("short", {"epochs": max(args.epochs, 2), "warmup_epochs": 0})
        throughput_table(gpu_labels, gpu_data, gpu_settings, "cuda", args.workers or 8, True, repeats)
        print()
        short_preset_table(gpu_labels, "cuda")

    print("\n3. Rank fidelity on CIFAR-10 (NB201 cells, short preset vs the 200-epoch table)")
    if args.cifar10 is None:
        print("skipped: no --cifar10 (a CIFAR-10 python-pickle directory; nothing is downloaded)")
    elif not cuda and args.device != "cpu":
        print("skipped: no CUDA (pass --device cpu to run it on the CPU anyway: hours)")
    elif not args.table.is_file():
        print(f"skipped: no table at {args.table}")
    else:
        fidelity_table(args.cifar10, args.table, args.cells, args.seed, "cuda" if cuda else "cpu", args.preset)


if __name__ == "__main__":
    main()
