"""The training evaluator: presets, on-device augmentation, the loop, failures, the sandbox task."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from archsmith.tools.datasets import ImageData, load_dataset
from archsmith.tools.results import ScoreResult
from archsmith.tools.sandbox import Sandbox, SandboxLimits, run_inprocess
from archsmith.tools.spaces import get_space
from archsmith.tools.train_task import TRAIN_TASK, train_candidate
from archsmith.tools.training import PRESETS, TrainingFailure, TrainSettings, resolve_settings, train_model
from archsmith.tools.training_augment import Normalizer, crop_flip, default_crop_padding

SMOKE = {"preset": "smoke"}
TINY_SOURCE = '''"""A tiny CNN."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Network(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.act = nn.ReLU()
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.act(self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
'''


def tiny_net(num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )  # fmt: skip


class Raising(nn.Module):
    """A network whose forward raises ``error`` (after a real layer, so it has parameters)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 10)
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.error


class NaNAfter(nn.Module):
    """Finite logits for ``steps`` training steps, then NaN."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 10)
        self.steps, self.calls = steps, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += self.training
        out = self.fc(x.mean((2, 3)))
        return out * float("nan") if self.calls > self.steps else out


@pytest.fixture(scope="module")
def data(one_torch_thread) -> ImageData:
    return load_dataset({"name": "synthetic", "synthetic_samples": 1024, "input_size": 16})


# -- settings -------------------------------------------------------------------------------------


def test_presets_follow_nas_bench_201():
    nb201 = PRESETS["nb201"]
    assert (nb201.lr, nb201.momentum, nb201.nesterov, nb201.weight_decay) == (0.1, 0.9, True, 5e-4)
    assert (nb201.epochs, nb201.batch_size, nb201.schedule, nb201.warmup_epochs) == (200, 256, "cosine", 0.0)
    assert (nb201.flip, nb201.crop_padding, nb201.label_smoothing) == (True, None, 0.0)
    assert PRESETS["short"].epochs <= 10 and PRESETS["smoke"].epochs == 1
    settings = resolve_settings("nb201", {"epochs": 3, "lr": 0.05})
    assert (settings.epochs, settings.lr, settings.batch_size) == (3, 0.05, 256)
    assert PRESETS["nb201"].epochs == 200  # the preset is untouched


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("fast", {}, "train.preset: unknown preset 'fast'; known presets: nb201, short, smoke"),
        ("short", {"learning_rate": 0.1}, "train.learning_rate: unknown training setting; known settings: lr,"),
        ("short", {"epochs": 0}, "train.epochs: Input should be greater than or equal to 1"),
        ("short", {"momentum": 0.0}, "train: nesterov needs a momentum above 0"),
        ("short", {"signal": "loss"}, "train.signal: Input should be"),
    ],
)
def test_settings_errors_name_the_field(preset, overrides, message):
    with pytest.raises(ValueError) as caught:
        resolve_settings(preset, overrides)
    assert message in str(caught.value)


def test_cosine_schedule_with_warmup_ends_at_zero():
    from archsmith.tools.training import _lr_factor

    factor = _lr_factor(TrainSettings(epochs=2, warmup_epochs=0.5), steps_per_epoch=10)
    values = [factor(step) for step in range(21)]
    assert values[:5] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6]) and values[5] == 1.0
    assert values == sorted(values[:6]) + sorted(values[6:], reverse=True) and values[20] == pytest.approx(0.0)


# -- augmentation ---------------------------------------------------------------------------------


def test_crop_padding_defaults():
    assert default_crop_padding(16) == 2 and default_crop_padding(32) == 4


def test_crop_flip_keeps_shapes_and_is_a_shifted_window():
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    a = crop_flip(x, 2, True, torch.Generator().manual_seed(3))
    b = crop_flip(x, 2, True, torch.Generator().manual_seed(3))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, crop_flip(x, 2, True, torch.Generator().manual_seed(4)))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for sample in range(6):  # every output is one 8x8 window of the padded image, maybe mirrored
        windows = [padded[sample, :, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(a[sample], w) or torch.equal(a[sample], w.flip(-1)) for w in windows)
    assert torch.equal(crop_flip(x, 0, False, torch.Generator()), x)
    flipped = crop_flip(x, 0, True, torch.Generator().manual_seed(0))
    assert all(torch.equal(flipped[s], x[s]) or torch.equal(flipped[s], x[s].flip(-1)) for s in range(6))


def test_normalizer():
    normalize = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "cpu")
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert normalize(x).dtype == torch.float32
    assert normalize(x)[0, :, 0].tolist() == [[-2.0, 2.0]] * 3
    assert normalize(x, torch.channels_last).is_contiguous(memory_format=torch.channels_last)


# -- the loop -------------------------------------------------------------------------------------


def test_one_epoch_beats_chance_and_reports(data):
    report = train_model(tiny_net(), data, resolve_settings("smoke"))
    assert report.valid_acc is not None and report.valid_acc > 2 * 10.0
    assert report.test_acc is not None and report.test_acc > 2 * 10.0
    assert report.epochs_done == 1 and not report.stopped_early and report.device == "cpu"
    assert report.crop_padding == 2  # 16x16 inputs
    assert report.images_per_s > 0 and report.peak_memory_mb > 0 and report.peak_memory_kind == "cpu_max_rss"
    (epoch,) = report.curve
    assert epoch.epoch == 1 and epoch.lr == pytest.approx(0.0) and math.isfinite(epoch.train_loss)
    assert report.metric("valid_acc") == report.valid_acc and report.settings["epochs"] == 1


def test_same_seed_same_results_other_seed_differs(data):
    settings = resolve_settings("smoke", {"epochs": 2, "max_train_samples": 512, "eval_every": 1})
    first = train_model(tiny_net(), data, settings)
    second = train_model(tiny_net(), data, settings)
    assert first.curve == [e.model_copy(update={"seconds": f.seconds}) for e, f in zip(second.curve, first.curve)]
    assert (first.valid_acc, first.test_acc, first.loss) == (second.valid_acc, second.test_acc, second.loss)
    assert all(e.valid_acc is not None for e in first.curve)  # eval_every=1
    other = train_model(tiny_net(), data, settings.model_copy(update={"seed": 1}))
    assert other.loss != first.loss


def test_max_seconds_stops_after_the_epoch(data):
    settings = resolve_settings("smoke", {"epochs": 5, "max_seconds": 1e-6, "max_train_samples": 128})
    report = train_model(tiny_net(), data, settings)
    assert report.stopped_early and report.epochs_done == 1 and report.valid_acc is not None


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 MiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
        MemoryError(),
    ],
)
def test_out_of_memory_is_classified(data, error):
    with pytest.raises(TrainingFailure) as caught:
        train_model(Raising(error), data, resolve_settings("smoke"))
    assert caught.value.error_type == "OutOfMemory" and "out of memory" in str(caught.value)


def test_other_errors_propagate(data):
    with pytest.raises(ValueError, match="a bug"):
        train_model(Raising(ValueError("a bug")), data, resolve_settings("smoke"))


def test_nonfinite_loss_names_epoch_and_step(data):
    with pytest.raises(TrainingFailure) as caught:
        train_model(NaNAfter(steps=20), data, resolve_settings("smoke", {"epochs": 2}))
    failure = caught.value
    assert failure.error_type == "NonFiniteLoss" and (failure.epoch, failure.step) == (2, 5)
    assert "at epoch 2, step 5 of 16" in str(failure)
    with pytest.raises(TrainingFailure, match="NonFinite|loss became") as huge:
        train_model(tiny_net(), data, resolve_settings("smoke", {"lr": 1e12, "weight_decay": 0.0}))
    assert huge.value.error_type == "NonFiniteLoss"


def test_wrong_output_width_and_empty_data(data):
    with pytest.raises(TrainingFailure, match=r"returned \(64, 7\), expected \(64, 10\)") as caught:
        train_model(tiny_net(num_classes=7), data, resolve_settings("smoke"))
    assert caught.value.error_type == "OutputShape"
    tiny = ImageData("x", data.train_x[:1], data.train_y[:1], *[t[:0] for t in (data.valid_x, data.valid_y)],
                     *[t[:0] for t in (data.test_x, data.test_y)], 10, data.mean, data.std)  # fmt: skip
    with pytest.raises(TrainingFailure, match="has 1 training images") as empty:
        train_model(tiny_net(), tiny, resolve_settings("smoke"))
    assert empty.value.error_type == "DataError"


def test_compile_failure_falls_back_with_a_warning(data, monkeypatch):
    def broken_compile(model, **kwargs):
        def run(x):
            raise RuntimeError("backend compiler failed: no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    report = train_model(tiny_net(), data, resolve_settings("smoke", {"compile": True, "max_train_samples": 256}))
    assert report.epochs_done == 1 and len(report.warnings) == 1
    assert report.warnings[0].startswith("torch.compile failed, trained without it (RuntimeError: backend")


def test_cuda_device_without_cuda_is_classified(data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # runs on a GPU machine too
    with pytest.raises(TrainingFailure) as caught:
        train_model(tiny_net(), data, resolve_settings("smoke"), device="cuda")
    assert caught.value.error_type == "DeviceUnavailable"


# -- the sandbox task -----------------------------------------------------------------------------


def payload(**extra: object) -> dict:
    return {
        "space": "code", "space_settings": {}, "text": TINY_SOURCE, "num_classes": 10, "torch_threads": 1,
        "train": SMOKE, "data": {"name": "synthetic", "synthetic_samples": 512, "input_size": 16}, "device": "auto",
        **extra,
    }  # fmt: skip


def test_train_candidate_contract(one_torch_thread):
    value = train_candidate(payload(num_classes=100, train={"preset": "smoke", "epochs": 2}, device="cpu"))
    assert value["ok"] and value["stage"] is None and value["error_type"] is None, value.get("error_message")
    assert value["name"] == "train" and value["std"] == 0.0 and value["repeats"] == 1
    assert value["score"] == value["report"]["valid_acc"] and value["score"] > 20.0
    assert set(value["report"]) == {"train_acc", "valid_acc", "test_acc", "wall_s", "images_per_s",
                                    "peak_memory_mb", "epochs_done"}  # fmt: skip
    assert all(isinstance(v, float) for v in value["report"].values()) and value["report"]["epochs_done"] == 2.0
    assert len(value["curve"]) == 2 and value["device"] == "cpu" and value["stopped_early"] is False
    assert value["num_classes"] == 10 and "the payload says 100" in value["warnings"][0]
    settings = value["settings"]
    assert settings["preset"] == "smoke" and settings["train"]["epochs"] == 2
    assert settings["data"]["name"] == "synthetic" and settings["device"] == "cpu"
    assert settings["data_summary"]["train"] == 512
    result = ScoreResult.model_validate({k: value[k] for k in ScoreResult.model_fields if k in value})
    assert result.ok and result.score == value["score"]


def test_train_candidate_on_a_template_candidate_in_process(one_torch_thread):
    text = get_space("template").initial()[0]
    data = {"name": "synthetic", "synthetic_samples": 256, "input_size": 16}
    task = {"space": "template", "text": text, "train": SMOKE, "data": data, "device": "cpu"}
    result = run_inprocess(TRAIN_TASK, task)
    assert result.ok, result.short_error()
    assert result.value["score"] is not None and result.value["report"]["epochs_done"] == 1.0


@pytest.mark.parametrize(
    ("changes", "stage", "error_type", "message"),
    [
        ({"text": "class Nope: pass"}, "build", "InvalidStructure", "no module-level Network"),
        ({"data": {"name": "cifar10", "path": "/no/such/dir"}}, "data", "DataError", "CIFAR-10 directory /no/such/dir"),
        ({"data": {"name": "cifar10"}}, "data", "DataError", "set download = true in the data settings"),
        ({"train": {"preset": "smoke", "epoch": 3}}, "settings", "InvalidSettings", "train.epoch: unknown"),
        ({"device": "tpu"}, "settings", "InvalidSettings", "device: expected cpu, cuda"),
        ({"text": TINY_SOURCE.replace("return self.fc", "return float('nan') * self.fc")},
         "train", "NonFiniteLoss", "at epoch 1, step 1 of 8"),
        ({"text": TINY_SOURCE.replace("return self.fc", "raise RuntimeError('CUDA out of memory'); self.fc")},
         "train", "OutOfMemory", "out of memory"),
        ({"text": TINY_SOURCE.replace("return self.fc", "raise KeyError('oops'); self.fc")},
         "train", "KeyError", "oops"),
        ({"train": {"preset": "smoke", "signal": "valid_acc"}, "data": {"name": "digits", "valid_fraction": 0.0}},
         "data", "DataError", "has no valid images for train.signal = 'valid_acc'"),
    ],
)
def test_train_candidate_failures_are_results(one_torch_thread, changes, stage, error_type, message):
    value = train_candidate(payload(**changes))
    assert not value["ok"] and value["score"] is None
    assert (value["stage"], value["error_type"]) == (stage, error_type), value["error_message"]
    assert message in value["error_message"]
    assert (value["traceback"] is None) == (error_type != "KeyError")


@pytest.mark.slow
def test_train_candidate_in_the_real_sandbox():
    limits = SandboxLimits(timeout_s=120, memory_mb=4096)
    with Sandbox(limits, workers=1, python_path=[str(Path(__file__).parent)]) as sandbox:
        good = sandbox.run(TRAIN_TASK, payload(device="cpu"))
        assert good.ok, good.short_error() + (good.traceback or "") + good.stdout
        assert good.value["score"] > 20.0 and good.value["curve"][0]["epoch"] == 1
        infinite = TINY_SOURCE.replace("return self.fc", "return 0 * float('inf') * self.fc")
        bad = sandbox.run(TRAIN_TASK, payload(text=infinite))
        assert not bad.ok and bad.error_type == "NonFiniteLoss" and bad.value["stage"] == "train"


# -- GPU ------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_bf16_channels_last_path(data):
    report = train_model(tiny_net(), data, resolve_settings("smoke", {"bf16": True, "channels_last": True}), "cuda")
    assert report.device.startswith("cuda") and report.peak_memory_kind == "cuda_max_allocated"
    assert report.valid_acc is not None and report.valid_acc > 20.0 and report.peak_memory_mb > 0


@needs_cuda
def test_cuda_fp32_and_train_candidate(data):
    report = train_model(tiny_net(), data, resolve_settings("smoke", {"bf16": False, "channels_last": False}), "cuda")
    assert report.valid_acc is not None and report.valid_acc > 20.0
    value = train_candidate(payload(device="cuda"))
    assert value["ok"] and value["device"].startswith("cuda"), value["error_message"]


def test_deterministic_runs_repeat_and_restore_the_backend_flags(data):
    settings = resolve_settings("smoke", {"deterministic": True, "max_train_samples": 256})
    first, second = (train_model(tiny_net(), data, settings) for _ in range(2))
    assert [e.train_loss for e in first.curve] == [e.train_loss for e in second.curve]
    assert first.valid_acc == second.valid_acc
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
