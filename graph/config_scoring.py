"""The config sections about scoring: which evaluator (Zen-score, table, training, NAS_det) with
its settings, and the executor scoring tasks run on. Part of the one config object
(graph/config.py re-exports every name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from archsmith.tools.tabular import TabularSpec


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NasDetConfig(_Section):
    """PhaseNAS's detection proxy (evaluator.name = "nas_det"); defaults suit a CPU search.

    The paper's setting is the detector's resolution: input_size 640, batch_size 16, repeats 8."""

    input_size: int = Field(256, ge=32, description="Square input of the score's forward passes (multiple of 32).")
    batch_size: int = Field(4, ge=1)
    repeats: int = Field(2, ge=1, description="Random initialisations averaged (std reported).")
    gamma: float = Field(1e-2, gt=0, description="x_mix = x1 + gamma * x2.")

    @model_validator(mode="after")
    def _multiple_of_32(self) -> NasDetConfig:
        if self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32 (the P5 stride), got {self.input_size}")
        return self


class DetectionTrainConfig(_Section):
    """Training detection candidates with ultralytics (`archsmith train` on a yolo-space run)."""

    data_yaml: str | None = Field(
        None, description="An ultralytics data YAML of a local dataset (never a built-in name: those download).",
    )
    epochs: int = Field(1, ge=1)
    imgsz: int = Field(640, ge=32)
    batch: int = Field(16, ge=1)
    device: str = Field("auto", description="auto: the executor's slot; cpu; cuda:N.")
    timeout_s: float = Field(3600.0, gt=0)
    options: dict[str, Any] = Field(
        default_factory=dict, description="More ultralytics train arguments: fraction, lr0, optimizer, mosaic, ...",
    )


class TrainEvaluatorConfig(_Section):
    """Training as the evaluator (evaluator.name = "train"): preset, overrides, data, device."""

    preset: str = Field(
        "short", description="nb201: the NAS-Bench-201 protocol (200 epochs); short: a few epochs for "
        "search; smoke: one epoch (tests, CPU examples).",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the preset's training settings (epochs, lr, ...)."
    )
    data: dict[str, Any] = Field(
        default_factory=lambda: {"name": "synthetic"},
        description="The data set: name (synthetic, digits, cifar10, cifar100, imagenet16-120, "
        "imagefolder), path (cifar10/cifar100: <data dir>/datasets/<name> by default), input_size, "
        "download (cifar10/cifar100: fetch when missing; off by default), ...",
    )
    device: str = Field("auto", description="auto: the executor's slot (a GPU when there is one); cpu; cuda:N.")
    timeout_s: float = Field(3600.0, gt=0, description="Hard limit per candidate's training.")

    @model_validator(mode="after")
    def _known_preset_settings_and_data(self) -> TrainEvaluatorConfig:
        from archsmith.tools.datasets import DatasetSpec
        from archsmith.tools.training import resolve_settings

        resolve_settings(self.preset, self.settings)  # ValueError naming an unknown preset or field
        spec = DatasetSpec.model_validate(self.data)
        if spec.path and not self.data.get("path"):  # cifar's default directory, fixed now: every task
            self.data["path"] = spec.path  # and a resume read the one this process would download into
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device {self.device!r}: expected auto, cpu, cuda or cuda:N")
        return self

    def prepare_data(self) -> None:
        """With ``data.download = true``: fetch a missing CIFAR-10/100 now (call it in the process
        that starts the tasks: they run without network); DataError when the download fails."""
        if self.data.get("download"):
            from archsmith.tools.downloads import prepare_dataset

            prepare_dataset(self.data)


class SupernetTrainingConfig(_Section):
    """Training the supernet of [evaluator.supernet] (`archsmith supernet train CONFIG`)."""

    sampling: Literal["sandwich", "uniform"] = Field(
        "sandwich", description="sandwich: the largest, the smallest and `random_subnets` random subnets "
        "each step, the others distilled from the largest (in-place distillation); uniform: one random "
        "subnet per step (SPOS's single path)."
    )
    random_subnets: int = Field(2, ge=0, le=16, description="sandwich: random subnets per step.")
    distill: bool = Field(True, description="sandwich: the smaller subnets learn the largest's soft labels.")
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0, description="SGD (momentum 0.9, Nesterov) with a cosine schedule.")
    weight_decay: float = Field(3e-5, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    resolution: int | None = Field(
        None, ge=8, description="training input size (None: the space's largest resolution)."
    )
    train_images: int | None = Field(None, ge=1, description="use only the first N training images.")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints (the last is always saved).")
    seed: int = 0


class SupernetEvaluatorConfig(_Section):
    """Scoring subnets with inherited weights (evaluator.name = "supernet"; ofa_mbv3, spos_shufflenet)."""

    checkpoint: str = Field(
        ..., description="The supernet checkpoint ({'state_dict': ...} or a bare state dict): a published "
        "one, or what `archsmith supernet train` writes.",
    )
    data: dict[str, Any] = Field(
        default_factory=lambda: {"name": "synthetic"},
        description="The data set (as [evaluator.train.data]): training images recalibrate BatchNorm, "
        "the validation (or test) split is scored.",
    )
    calibration_images: int = Field(2000, ge=0, description="Training images BatchNorm is recalibrated on "
                                    "(OFA: 2,000); 0 keeps the inherited statistics.")
    batch_size: int = Field(100, ge=1)
    split: Literal["valid", "test"] = Field("valid", description="The split whose top-1 accuracy is the score.")
    eval_images: int | None = Field(None, ge=1, description="Score on the first N images of the split only.")
    center_crop: float = Field(
        0.875, gt=0, le=1, description="Images are resized so that this share of their side is the "
        "subnet's resolution, then centre-cropped (OFA's ImageNet protocol; 1.0 resizes only).",
    )
    normalization: Literal["data", "imagenet", "bgr255"] = Field(
        "data", description="data: the data set's channel mean/std; imagenet: torchvision's ImageNet mean/std "
        "(published OFA supernets); bgr255: BGR, values 0-255, no normalisation (SPOS's official pipeline).",
    )
    device: str = Field("auto", description="auto: the executor's slot (a GPU when there is one); cpu; cuda:N.")
    timeout_s: float = Field(600.0, gt=0, description="Hard limit per subnet's evaluation.")
    training: SupernetTrainingConfig = Field(
        default_factory=SupernetTrainingConfig, description="`archsmith supernet train` settings."
    )

    @model_validator(mode="after")
    def _known_data(self) -> SupernetEvaluatorConfig:
        from archsmith.tools.datasets import DatasetSpec

        spec = DatasetSpec.model_validate(self.data)
        if spec.path and not self.data.get("path"):
            self.data["path"] = spec.path
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device {self.device!r}: expected auto, cpu, cuda or cuda:N")
        return self

    def checkpoint_path(self, base: Path | None = None) -> Path:
        """The checkpoint as an absolute path (relative paths are taken from ``base``, else the cwd)."""
        path = Path(self.checkpoint).expanduser()
        return path if path.is_absolute() else (base or Path.cwd()) / path


class EvaluatorConfig(_Section):
    name: Literal["zen", "tabular", "train", "nas_det", "supernet"] = Field(
        "zen", description="zen: Zen-score in the sandbox; tabular: lookup in [evaluator.tabular]; "
        "train: training on [evaluator.train]'s data; nas_det: PhaseNAS's detection proxy (yolo space); "
        "supernet: inherited weights from [evaluator.supernet]'s checkpoint (ofa_mbv3, spos_shufflenet).",
    )
    tabular: TabularSpec | None = Field(
        None, description="The table for name = 'tabular' (path, dataset, signal, report columns)."
    )
    train: TrainEvaluatorConfig | None = Field(
        None, description="Training settings for name = 'train' (defaults: short preset, synthetic data)."
    )
    nas_det: NasDetConfig = Field(default_factory=NasDetConfig, description="Settings for name = 'nas_det'.")
    supernet: SupernetEvaluatorConfig | None = Field(
        None, description="The supernet for name = 'supernet' (checkpoint, data, BatchNorm calibration)."
    )
    detection: DetectionTrainConfig = Field(
        default_factory=DetectionTrainConfig, description="Training of detection candidates (archsmith train)."
    )
    preset: Literal["search", "standalone", "custom"] = Field(
        "search", description="Zen-NAS settings: search = batch 64 x 1 repeat; standalone = 16 x 32."
    )
    batch_size: int | None = Field(None, ge=1, description="Overrides the preset when set.")
    repeats: int | None = Field(None, ge=1, description="Overrides the preset when set.")
    mixup_gamma: float = Field(1e-2, gt=0)

    @model_validator(mode="after")
    def _tabular_needs_a_table(self) -> EvaluatorConfig:
        if self.name == "tabular" and self.tabular is None:
            raise ValueError("evaluator.name = 'tabular' needs [evaluator.tabular] with at least path")
        if self.name == "train" and self.train is None:
            self.train = TrainEvaluatorConfig()
        if self.name == "supernet" and self.supernet is None:
            raise ValueError("evaluator.name = 'supernet' needs [evaluator.supernet] with at least checkpoint")
        return self

    def resolved(self) -> dict[str, int | float]:
        preset = {"search": (64, 1), "standalone": (16, 32), "custom": (64, 1)}[self.preset]
        return {
            "batch_size": self.batch_size or preset[0],
            "repeats": self.repeats or preset[1],
            "mixup_gamma": self.mixup_gamma,
        }


class ExecutorConfig(_Section):
    """Where scoring tasks run: this machine's sandbox pool, or a Ray cluster."""

    name: Literal["local", "ray"] = Field("local", description="local: worker processes here; ray: Ray tasks.")
    devices: list[str] | Literal["auto"] = Field(
        "auto", description="local: devices jobs run on (auto: every GPU, else the CPU), e.g. ['cuda:0']."
    )
    per_gpu: int = Field(1, ge=1, le=16, description="Candidates that share one GPU at once (FairNAD: 2).")
    address: str | None = Field(
        None, description="ray: None starts a local loopback-only instance for the run; 'auto' or "
        "'ray://host:10001' joins a running cluster.",
    )
    num_cpus: int | None = Field(None, ge=1, description="ray: CPUs of the local instance (default: all).")
    task_cpus: float = Field(1.0, gt=0, description="ray: CPUs each scoring task reserves.")
    task_gpus: float | None = Field(
        None, ge=0, description="ray: GPUs each task reserves (default: 1/per_gpu when the cluster has GPUs).",
    )
    max_retries: int = Field(2, ge=0, le=10, description="ray: re-runs of a task whose worker died.")
