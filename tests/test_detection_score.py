"""Detection glue: params/GFLOPs as ultralytics reports them, NAS_det, and the sandbox tasks."""

from __future__ import annotations

import importlib.util
import os
import random

import pytest

if importlib.util.find_spec("ultralytics") is None:  # not importorskip: importing ultralytics before
    pytest.skip("ultralytics is not installed", allow_module_level=True)  # YOLO_OFFLINE is set probes the network

from archsmith.tools.detection import build_detection_model, profile_detection, ultralytics_figures  # noqa: E402
from archsmith.tools.detection_score import nas_det_score  # noqa: E402
from archsmith.tools.sandbox import Sandbox, SandboxLimits, run_inprocess  # noqa: E402
from archsmith.tools.spaces.yolo import YoloSpace, base_yaml  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread", "ultralytics_env")
SETTINGS = {"base": "yolov8n", "mode": "yolov8*"}
SMALL = {"input_size": 128, "batch_size": 2, "repeats": 2}


@pytest.fixture(scope="module")
def space() -> YoloSpace:
    return YoloSpace(SETTINGS)


@pytest.mark.parametrize(("base", "params", "gflops"), [("yolov8n", 3_157_200, 8.855), ("yolov8s", 11_166_560, 28.812)])
def test_profile_agrees_with_ultralytics(base: str, params: int, gflops: float) -> None:
    model = build_detection_model(base_yaml(base))
    profile = profile_detection(model, 640)
    reported = ultralytics_figures(model, 640)
    assert profile.ok and profile.params == reported["params"] == params
    assert profile.flops == 2 * profile.macs
    assert profile.flops / 1e9 == pytest.approx(reported["gflops"], abs=1e-6)
    assert round(profile.flops / 1e9, 3) == gflops


def test_profile_of_mutated_models_agrees(space: YoloSpace) -> None:
    for operator in ("insert_psa", "insert_scdown", "width"):
        child = space.mutate(space.initial()[0], random.Random(3), operator).child
        model = space.build(child, 7)
        profile, reported = profile_detection(model, 320), ultralytics_figures(model, 320)
        assert profile.params == reported["params"] == space.param_count(child, 7)
        assert profile.flops / 1e9 == pytest.approx(reported["gflops"], abs=1e-6)
    assert profile_detection("nc: 1", 640).error_type == "ValueError"


def test_nas_det_is_deterministic_and_sensitive(space: YoloSpace) -> None:
    text = space.initial()[0]
    first = nas_det_score(space.build(text, 80), seed=0, **SMALL)
    again = nas_det_score(space.build(text, 80), seed=0, **SMALL)
    assert first.ok and first.name == "nas_det" and first.repeats == 2
    assert first.score == again.score and first.std == again.std
    assert set(first.report) == {"log_delta", "bn"} and first.settings["gamma"] == 1e-2
    assert nas_det_score(space.build(text, 80), seed=1, **SMALL).score != first.score
    wider = nas_det_score(build_detection_model(base_yaml("yolov8s")), seed=0, **SMALL)
    shrunk = space.shrink(text, 0.5, random.Random(0)).child
    narrower = nas_det_score(space.build(shrunk, 80), seed=0, **SMALL)
    assert narrower.score < first.score < wider.score


def test_nas_det_failure_is_a_result() -> None:
    import torch

    result = nas_det_score(torch.nn.Conv2d(3, 8, 3), **SMALL)
    assert not result.ok and result.error_type == "ValueError" and "no Detect layer" in result.error_message


def _payload(space: YoloSpace, text: str, **extra: object) -> dict:
    return {"space": "yolo", "space_settings": SETTINGS, "text": text, "num_classes": 3, "input_size": 320, **extra}


def test_check_task_in_process(space: YoloSpace, no_network: list[str]) -> None:
    text = space.mutate(space.initial()[0], random.Random(0), "insert_psa").child
    result = run_inprocess("archsmith.tools.detection_tasks:check_detection_candidate", _payload(space, text))
    assert result.ok, result.short_error()
    value = result.value
    assert value["params"] == space.param_count(text, 3)
    assert value["weight_layers"] == space.depth(text)
    assert value["output_shape"] == [[2, 64, 84], [2, 3, 84]] and value["input_size"] == [320, 320]
    assert value["flops"] == 2 * value["macs"] > 0

    bad = run_inprocess("archsmith.tools.detection_tasks:check_detection_candidate", _payload(space, "nc: 1"))
    assert not bad.ok and bad.error_type == "InvalidStructure" and bad.value["stage"] == "build"
    odd = run_inprocess("archsmith.tools.detection_tasks:check_detection_candidate", _payload(space, text, check_size=50))
    assert odd.error_type == "InvalidPayload" and "multiple of 32" in odd.error_message
    assert not no_network


def test_nas_det_task_in_process(space: YoloSpace, no_network: list[str]) -> None:
    payload = _payload(space, space.initial()[0], nas_det={**SMALL, "seed": 4})
    result = run_inprocess("archsmith.tools.detection_tasks:nas_det_candidate", payload)
    assert result.ok, result.short_error()
    direct = nas_det_score(space.build(space.initial()[0], 3), seed=4, **SMALL)
    assert result.value["score"] == pytest.approx(direct.score) and result.value["stage"] is None
    typo = run_inprocess("archsmith.tools.detection_tasks:nas_det_candidate", {**payload, "nas_det": {"gama": 0.1}})
    assert typo.error_type == "TypeError" and typo.value["stage"] == "nas_det"
    assert not no_network


@pytest.mark.slow
def test_tasks_in_the_real_sandbox(space: YoloSpace) -> None:
    """Fork-server workers: ultralytics imported in the child, its settings in the task's directory."""
    env = {k: v for k, v in os.environ.items() if k != "YOLO_CONFIG_DIR"}
    limits = SandboxLimits(timeout_s=120, memory_mb=6144)
    preload = ("torch", "archsmith.tools.spaces", "archsmith.tools.detection_tasks")
    with Sandbox(limits, 1, preload=preload, env=env) as sandbox:
        text = space.initial()[0]
        check = sandbox.run("archsmith.tools.detection_tasks:check_detection_candidate", _payload(space, text))
        assert check.ok, check.short_error() + (check.traceback or "") + check.stdout
        assert check.value["params"] == space.param_count(text, 3)
        score = sandbox.run("archsmith.tools.detection_tasks:nas_det_candidate", _payload(space, text, nas_det=SMALL))
        assert score.ok, score.short_error()
        assert score.value["score"] == pytest.approx(nas_det_score(space.build(text, 3), seed=0, **SMALL).score, rel=1e-5)
