"""Training a candidate network for image classification: settings, presets and the loop.

The whole data set goes to the device once, as uint8. Each step slices a batch from a per-epoch
permutation on the device, crops, flips and normalises it there (:mod:`training_augment`), runs
forward under bf16 autocast and channels_last on CUDA (fp32 on the CPU: the same code path), and
takes an SGD step with a per-step cosine schedule. Evaluation runs under ``torch.inference_mode``
in large batches. All randomness after the model's initialisation comes from one
``torch.Generator`` seeded by ``TrainSettings.seed``: on the CPU, the same seed gives the same
losses and accuracies. Failures are classified (:class:`TrainingFailure`): OutOfMemory,
NonFiniteLoss (naming the epoch and step), DataError, OutputShape, NoParameters,
DeviceUnavailable. torch's global cuDNN/determinism flags are set for the call (``cudnn_benchmark``,
``deterministic``) and restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from archsmith.tools.datasets import ImageData
from archsmith.tools.sandbox_protocol import looks_like_memory_failure
from archsmith.tools.training_augment import Normalizer, crop_flip, default_crop_padding

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import torch.nn as nn

__all__ = [
    "PRESETS", "EpochRecord", "TrainReport", "TrainSettings", "TrainingFailure", "resolve_settings", "train_model",
]  # fmt: skip

Signal = Literal["valid_acc", "test_acc", "train_acc"]
NONFINITE_CHECK_STEPS_CUDA = 50  # on CUDA, losses are checked (a device sync) every this many steps
# A fresh process's first CUDA epoch took 15-47 s on an H100 (sandboxed template-space candidates,
# 2 epochs of 32 steps; the second epoch 0.3-0.5 s). Part of that one-time cost is cudnn.benchmark
# timing kernels for every new shape, which only long runs win back (benchmarks/gpu_cold_start.py).
CUDNN_BENCHMARK_MIN_STEPS = 5000


class TrainSettings(BaseModel):
    """How a candidate is trained; the defaults are NAS-Bench-201's (FairNAD, Table 4)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(0.1, gt=0, description="SGD initial learning rate")
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0, description="applied to every parameter, as NB201 does")
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(256, ge=2)
    schedule: Literal["cosine", "constant"] = Field("cosine", description="cosine: per step, down to 0")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from ~0, before the schedule")
    crop_padding: int | None = Field(None, ge=0, description="None: 4, or 2 for 16x16 inputs")
    flip: bool = True
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    bf16: bool = Field(True, description="bf16 autocast (CUDA only)")
    channels_last: bool = Field(True, description="channels_last memory format (CUDA only)")
    compile: bool = Field(False, description="torch.compile the model; on failure train without it")
    max_train_samples: int | None = Field(None, ge=2, description="train on a seeded subset of this size")
    eval_every: int = Field(0, ge=0, description="validate every this many epochs (0: only at the end)")
    eval_batch_size: int = Field(1024, ge=1)
    seed: int = 0
    deterministic: bool = Field(
        False, description="CUDA: deterministic cuDNN/cuBLAS kernels (same seed, same curve; slower)"
    )
    cudnn_benchmark: bool | None = Field(
        None,
        description="CUDA: let cuDNN time its kernels for each new shape, a one-time cost per process; "
        f"None: only for runs of at least {CUDNN_BENCHMARK_MIN_STEPS} steps, where it pays back",
    )
    signal: Signal = Field("valid_acc", description="the metric that becomes the score")
    max_seconds: float | None = Field(None, gt=0, description="soft budget: stop after the epoch that passes it")

    @model_validator(mode="after")
    def _check(self) -> TrainSettings:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0")
        if self.warmup_epochs >= self.epochs and self.schedule == "cosine" and self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})")
        return self


PRESETS: Mapping[str, TrainSettings] = MappingProxyType({
    # NAS-Bench-201 / FairNAD Table 4: SGD 0.1 Nesterov 0.9, wd 5e-4, cosine to 0, batch 256, 200 epochs.
    "nb201": TrainSettings(eval_every=10),
    # For search: the same recipe, 5 epochs with half an epoch of warm-up.
    "short": TrainSettings(epochs=5, warmup_epochs=0.5),
    # Tests and CPU examples.
    "smoke": TrainSettings(epochs=1, batch_size=64),
})  # fmt: skip


def resolve_settings(preset: str = "short", overrides: Mapping[str, Any] | None = None) -> TrainSettings:
    """A preset with some fields replaced; ValueError naming an unknown preset or field."""
    if preset not in PRESETS:
        raise ValueError(f"train.preset: unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(TrainSettings.model_fields))
    if unknown:
        known = ", ".join(TrainSettings.model_fields)
        raise ValueError(f"train.{unknown[0]}: unknown training setting; known settings: {known}")
    try:
        return TrainSettings.model_validate({**PRESETS[preset].model_dump(), **overrides})
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            where = ".".join(map(str, problem["loc"]))
            problems.append(f"train{'.' + where if where else ''}: {str(problem['msg']).removeprefix('Value error, ')}")
        raise ValueError("; ".join(problems)) from None


class TrainingFailure(Exception):
    """A classified failure of training (not a crash): ``error_type`` names the kind."""

    def __init__(self, error_type: str, message: str, *, epoch: int | None = None, step: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.epoch = epoch
        self.step = step


class EpochRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epoch: int
    train_loss: float
    train_acc: float = Field(description="percent, over the epoch's augmented batches")
    valid_acc: float | None = None
    lr: float = Field(description="learning rate after the epoch's last step")
    seconds: float = Field(description="training time of the epoch (no evaluation)")


class TrainReport(BaseModel):
    """What one training run measured. Accuracies are percentages; None where a split is empty."""

    model_config = ConfigDict(extra="forbid")

    train_acc: float
    valid_acc: float | None
    test_acc: float | None
    loss: float = Field(description="mean training loss of the last epoch")
    curve: list[EpochRecord]
    wall_s: float = Field(description="the whole call: moving data, training, evaluation")
    train_s: float
    images_per_s: float = Field(description="training images / training seconds (evaluation excluded)")
    peak_memory_mb: float = Field(description="CUDA: max allocated (data set included); CPU: the process's max RSS")
    peak_memory_kind: Literal["cuda_max_allocated", "cpu_max_rss"]
    device: str
    epochs_done: int
    stopped_early: bool
    crop_padding: int = Field(description="the padding used (TrainSettings.crop_padding resolved)")
    warnings: list[str] = Field(default_factory=list)
    settings: dict[str, Any]

    def metric(self, name: Signal) -> float | None:
        return getattr(self, name)


# -- helpers ------------------------------------------------------------------------------------


def _lr_factor(settings: TrainSettings, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base LR at optimizer step ``step``: linear warm-up, then cosine to 0."""
    total = settings.epochs * steps_per_epoch
    warmup = min(int(round(settings.warmup_epochs * steps_per_epoch)), total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if settings.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))

    return factor


def _optimizer(model: nn.Module, settings: TrainSettings, cuda: bool) -> torch.optim.Optimizer:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingFailure("NoParameters", "the network has no trainable parameters")
    options = dict(lr=settings.lr, momentum=settings.momentum, nesterov=settings.nesterov,
                   weight_decay=settings.weight_decay)  # fmt: skip
    if cuda:
        with contextlib.suppress(RuntimeError, TypeError, ValueError):
            return torch.optim.SGD(params, **options, fused=True)
    return torch.optim.SGD(params, **options)


def _subset(data: ImageData, limit: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    if limit is None or limit >= len(data.train_y):
        return data.train_x, data.train_y
    order = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return data.train_x[order], data.train_y[order]


def _peak_memory(device: torch.device) -> tuple[float, Literal["cuda_max_allocated", "cpu_max_rss"]]:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux/macOS
        return 0.0, "cpu_max_rss"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "cpu_max_rss"  # Linux: KiB


def _is_memory_failure(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and looks_like_memory_failure(str(exc))


class _Run:
    """The state of one training run (model, data on the device, optimizer, generator)."""

    def __init__(self, model: nn.Module, data: ImageData, settings: TrainSettings, device: torch.device) -> None:
        import torch

        self.settings, self.device = settings, device
        self.cuda = device.type == "cuda"
        self.amp = self.cuda and settings.bf16
        self.memory_format = torch.channels_last if self.cuda and settings.channels_last else None
        self.num_classes = data.num_classes
        train_x, train_y = _subset(data, settings.max_train_samples, settings.seed)
        if len(train_y) < 2:
            raise TrainingFailure("DataError", f"the {data.name} data set has {len(train_y)} training images")
        self.model = model.to(device, memory_format=self.memory_format or torch.contiguous_format)
        self.forward: Callable[[torch.Tensor], Any] = self.model
        self.train_x, self.train_y = train_x.to(device), train_y.to(device)
        self.splits = {
            name: (x.to(device), y.to(device))
            for name, (x, y) in (("valid", (data.valid_x, data.valid_y)), ("test", (data.test_x, data.test_y)))
            if len(y)
        }
        height = int(train_x.shape[2])
        self.padding = settings.crop_padding if settings.crop_padding is not None else default_crop_padding(height)
        self.normalize = Normalizer(data.mean, data.std, device)
        self.generator = torch.Generator(device=device).manual_seed(settings.seed)
        count, batch = len(train_y), settings.batch_size
        self.steps = count // batch + (1 if count % batch >= 2 else 0)  # a last batch of 1 breaks BatchNorm
        self.images_per_epoch = min(count, self.steps * batch)
        self.optimizer = _optimizer(self.model, settings, self.cuda)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_factor(settings, self.steps))
        self.warnings: list[str] = []

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def _step(self, x: torch.Tensor, y: torch.Tensor, check_shape: bool) -> tuple[torch.Tensor, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        with self.autocast():
            out = self.forward(x)
        expected = (len(y), self.num_classes)
        if check_shape and (not isinstance(out, torch.Tensor) or tuple(out.shape) != expected):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise TrainingFailure("OutputShape", f"the network returned {shape}, expected {expected}")
        loss = F.cross_entropy(out.float(), y, label_smoothing=self.settings.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach(), (out.detach().argmax(1) == y).sum()

    def first_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first step, through torch.compile when asked; a compile failure falls back to eager."""
        import torch

        if not self.settings.compile:
            return self._step(x, y, True)
        self.forward = torch.compile(self.model)
        try:
            return self._step(x, y, True)
        except TrainingFailure:
            raise
        except Exception as exc:  # noqa: BLE001 - compile problems are recorded, then eager
            if _is_memory_failure(exc):
                raise
            self.warnings.append(f"torch.compile failed, trained without it ({type(exc).__name__}: {exc})"[:500])
        self.forward = self.model
        self.optimizer.zero_grad(set_to_none=True)
        return self._step(x, y, True)

    def epoch(self, epoch: int) -> tuple[float, float, float]:
        """One pass over the training set: (mean loss, train accuracy %, seconds)."""
        import torch

        started = time.perf_counter()
        self.model.train()
        batch, count = self.settings.batch_size, len(self.train_y)
        order = torch.randperm(count, generator=self.generator, device=self.device)
        losses = torch.zeros(self.steps, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        every = NONFINITE_CHECK_STEPS_CUDA if self.cuda else 1
        checked = 0
        for step in range(self.steps):
            index = order[step * batch : (step + 1) * batch]
            images = crop_flip(self.train_x[index], self.padding, self.settings.flip, self.generator)
            x, y = self.normalize(images, self.memory_format), self.train_y[index]
            first = epoch == 1 and step == 0
            loss, hits = self.first_step(x, y) if first else self._step(x, y, False)
            losses[step] = loss
            correct += hits
            if (step + 1) % every == 0 or step + 1 == self.steps:
                self._check_finite(losses, checked, step + 1, epoch)
                checked = step + 1
        mean_loss = float(losses.mean())
        accuracy = 100.0 * int(correct) / self.images_per_epoch
        return mean_loss, accuracy, time.perf_counter() - started

    def _check_finite(self, losses: torch.Tensor, start: int, stop: int, epoch: int) -> None:
        import torch

        bad = (~torch.isfinite(losses[start:stop])).nonzero()
        if len(bad):
            step = start + int(bad[0, 0]) + 1
            value = float(losses[step - 1])
            raise TrainingFailure(
                "NonFiniteLoss", f"the training loss became {value} at epoch {epoch}, step {step} of {self.steps}",
                epoch=epoch, step=step,
            )  # fmt: skip

    def accuracy(self, split: str) -> float | None:
        """Top-1 accuracy (%) on ``valid`` or ``test`` under inference mode; None if empty."""
        import torch

        if split not in self.splits:
            return None
        x_all, y_all = self.splits[split]
        self.model.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        with torch.inference_mode(), self.autocast():
            size = self.settings.eval_batch_size
            for x, y in zip(x_all.split(size), y_all.split(size)):
                correct += (self.model(self.normalize(x, self.memory_format)).argmax(1) == y).sum()
        return 100.0 * int(correct) / len(y_all)


def _train(run: _Run, started: float) -> TrainReport:
    settings = run.settings
    curve: list[EpochRecord] = []
    stopped_early = False
    train_s = 0.0
    for epoch in range(1, settings.epochs + 1):
        loss, train_acc, seconds = run.epoch(epoch)
        train_s += seconds
        valid = run.accuracy("valid") if settings.eval_every and epoch % settings.eval_every == 0 else None
        lr = float(run.optimizer.param_groups[0]["lr"])
        curve.append(EpochRecord(epoch=epoch, train_loss=loss, train_acc=train_acc, valid_acc=valid, lr=lr,
                                 seconds=seconds))  # fmt: skip
        over = settings.max_seconds is not None and time.perf_counter() - started >= settings.max_seconds
        if over and epoch < settings.epochs:
            stopped_early = True
            break
    last = curve[-1]
    if last.valid_acc is None and "valid" in run.splits:
        curve[-1] = last = last.model_copy(update={"valid_acc": run.accuracy("valid")})
    test_acc = run.accuracy("test")
    memory, kind = _peak_memory(run.device)
    return TrainReport(
        train_acc=last.train_acc, valid_acc=last.valid_acc, test_acc=test_acc, loss=last.train_loss, curve=curve,
        wall_s=time.perf_counter() - started, train_s=train_s,
        images_per_s=run.images_per_epoch * len(curve) / max(train_s, 1e-9),
        peak_memory_mb=memory, peak_memory_kind=kind, device=str(run.device), epochs_done=len(curve),
        stopped_early=stopped_early, crop_padding=run.padding, warnings=run.warnings, settings=settings.model_dump(),
    )  # fmt: skip


@contextlib.contextmanager
def _backend_flags(benchmark: bool, deterministic: bool) -> Iterator[None]:
    """torch's global kernel-choice flags for one training run, restored after it: cuDNN
    benchmarks its kernels when asked (fixed shapes), unless the run must be reproducible."""
    import torch

    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())  # fmt: skip
    try:
        if deterministic:
            # cuBLAS reads this when its first handle is made (a fresh sandbox worker: before any matmul).
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            # warn_only: an op without a deterministic kernel warns instead of failing the candidate.
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            torch.backends.cudnn.benchmark = benchmark
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def train_model(model: nn.Module, data: ImageData, settings: TrainSettings, device: str = "cpu") -> TrainReport:
    """Train ``model`` on ``data`` and evaluate it; :class:`TrainingFailure` for a classified failure.

    The model is moved to ``device`` (and to channels_last there on CUDA). Seeds torch's global
    generator with ``settings.seed`` (for dropout and the like); the caller seeds the model's
    initialisation. Other exceptions (a bug in the candidate's forward) propagate.
    """
    import torch

    started = time.perf_counter()
    target = torch.device(device)
    cuda = target.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise TrainingFailure("DeviceUnavailable", f"device {device!r} asked for, but CUDA is not available")
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise TrainingFailure("DeviceUnavailable", f"device {device!r} asked for, but this process sees "
                                  f"{torch.cuda.device_count()} CUDA device(s)")  # fmt: skip
        # Initialise CUDA first: with an explicit index, the memory-stats calls below do not (a fresh
        # process would get "Invalid device argument").
        torch.cuda.init()
    torch.manual_seed(settings.seed)
    if cuda:
        torch.cuda.reset_peak_memory_stats(target)
    message = ""
    try:
        run = _Run(model, data, settings, target)
        benchmark = settings.cudnn_benchmark
        if benchmark is None:
            benchmark = run.steps * settings.epochs >= CUDNN_BENCHMARK_MIN_STEPS
        with _backend_flags(cuda and benchmark, settings.deterministic):
            return _train(run, started)
    except TrainingFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - only memory failures are classified here
        if not _is_memory_failure(exc):
            raise
        message = f"out of memory ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    # Outside the handler, so that the traceback's frames (holding tensors) are gone.
    import gc

    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    raise TrainingFailure("OutOfMemory", message)
