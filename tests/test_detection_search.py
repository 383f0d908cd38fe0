"""The yolo space in the product: a search scored by NAS_det, `archsmith check model.yaml`, and
training the best candidates with ultralytics on a synthetic dataset (`archsmith train`)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from archsmith.graph.cli import app
from archsmith.graph.config import config_from_dict
from archsmith.graph.run import run
from archsmith.graph.train_top import train_top
from yolo_synthetic import make_synthetic_detection_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ultralytics_env")]

SEARCH = {
    "name": "yolo-test",
    "space": {"name": "yolo", "settings": {"base": "yolov8n", "mode": "yolov8+"}},
    "budget": {"params_m": 3.1572, "flops_m": 8855.1, "input_size": 640, "num_classes": 80},
    "evaluator": {"name": "nas_det", "nas_det": {"input_size": 128, "batch_size": 2, "repeats": 2}},
    "search": {"max_candidates": 6, "children_per_generation": 3},
    "parallel": {"workers": 2},
}


@pytest.fixture(scope="module")
def yolo_run(tmp_path_factory):
    config = config_from_dict({**SEARCH, "runs_dir": str(tmp_path_factory.mktemp("runs"))})
    return run(config)


def test_a_nas_det_search_stays_within_yolov8n(yolo_run):
    valid = [r for r in yolo_run.history if r["status"] == "valid"]
    assert len(valid) == 6
    assert all(r["params"] <= 3_157_200 and r["flops"] <= 8_855_100_000 for r in valid)
    assert all(r["score"] is not None and r["score_std"] is not None for r in valid)
    assert len({r["canonical"] for r in valid}) == 6


def test_check_vets_a_detection_yaml(yolo_run, tmp_path):
    from archsmith.tools.spaces import get_space

    stock = tmp_path / "yolov8n.yaml"
    stock.write_text(get_space("yolo", {}).initial()[0])
    checked = CliRunner().invoke(app, ["check", str(stock), "--set", "evaluator.nas_det.input_size=64"])
    assert checked.exit_code == 0, checked.output
    assert "3,157,200" in checked.output and "8,855,091,200" in checked.output  # ultralytics' figures
    best = yolo_run.run_dir / "best" / "candidate.txt"
    model = tmp_path / "model.yaml"
    model.write_text(best.read_text())
    result = CliRunner().invoke(app, ["check", str(model), "--set", "evaluator.nas_det.input_size=64"])
    assert result.exit_code == 0, result.output
    assert "nas_det" in result.output and "G)" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text(best.read_text().replace("Detect", "Detector"))
    failed = CliRunner().invoke(app, ["check", str(broken)])
    assert failed.exit_code == 1 and "Detector" in failed.output


def test_the_best_candidates_train_with_ultralytics(yolo_run, tmp_path):
    data_yaml = make_synthetic_detection_dataset(tmp_path / "data", n_train=8, n_val=4, imgsz=64)
    overrides = [f"evaluator.detection.data_yaml={json.dumps(str(data_yaml))}", "evaluator.detection.imgsz=64",
                 "evaluator.detection.batch=4", "evaluator.detection.epochs=1"]
    result = train_top(yolo_run.run_dir, top=1, overrides=overrides)
    [entry] = result.trained
    assert entry.ok, entry.error
    assert 0.0 <= entry.score <= 1.0  # mAP50-95
    assert {"map50_95", "map50", "precision", "recall", "params", "gflops"} <= set(entry.report)
    line = json.loads((yolo_run.run_dir / "trained.jsonl").read_text().splitlines()[-1])
    assert line["id"] == entry.id and line["report"]["map50_95"] == entry.score


def test_training_a_yolo_run_needs_a_local_data_yaml(yolo_run, tmp_path):
    from archsmith.graph.config import ConfigError

    with pytest.raises(ConfigError, match="data_yaml"):
        train_top(yolo_run.run_dir, top=1)
    with pytest.raises(ConfigError, match="not a file"):
        train_top(yolo_run.run_dir, top=1, overrides=["evaluator.detection.data_yaml=coco8.yaml"])


def test_the_llm_generator_edits_the_yaml_under_the_same_validation(tmp_path):
    """With ``llm_answer = "yaml"`` (PhaseNAS's way) a Generator answer in a ```yaml block becomes
    the child; the yolo space validates it."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from archsmith.tools.spaces import get_space

    seed = get_space("yolo", {}).initial()[0]
    edited = seed.replace("[-1, 6, C2f, [256, True]]", "[-1, 4, C2f, [256, True]]", 1)
    assert edited != seed
    answer = f"Fewer repeats at P3.\n```yaml\n{edited}\n```"
    space = {"name": "yolo", "settings": {**SEARCH["space"]["settings"], "llm_answer": "yaml"}}
    config = config_from_dict({**SEARCH, "runs_dir": str(tmp_path / "runs"), "space": space,
                               "search": {"max_candidates": 1, "children_per_generation": 1},
                               "roles": {"generator": {"policy": "llm", "fallback": "none"}}})
    result = run(config, chat_models={"generator": GenericFakeChatModel(messages=iter([AIMessage(answer)]))})
    (record,) = result.history
    assert record["status"] == "valid", record.get("discard_reason")
    assert record["generator_policy"] == "llm" and record["params"] < 3_157_200
    assert record["canonical"] == get_space("yolo", {}).canonical(edited)
