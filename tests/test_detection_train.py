"""Training a detection candidate with ultralytics: dataset checks, and a 1-epoch CPU smoke test offline."""

from __future__ import annotations

import importlib.util

import pytest
from yolo_synthetic import make_synthetic_detection_dataset

from archsmith.tools.sandbox import run_inprocess

TASK = "archsmith.tools.detection_tasks:train_detection_candidate"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_detection_dataset(tmp_path_factory.mktemp("synthetic") / "data", n_train=8, n_val=4)


def _payload(text: str, data_yaml: object, project_dir: object, **extra: object) -> dict:
    return {"space": "yolo", "text": text, "num_classes": 2, "data_yaml": str(data_yaml), "epochs": 1,
            "imgsz": 64, "batch": 4, "device": "cpu", "project_dir": str(project_dir), "torch_threads": 2, **extra}


def _seed_text() -> str:
    from archsmith.tools.spaces.yolo import YoloSpace

    return YoloSpace({}).initial()[0]


def test_synthetic_dataset_layout(dataset) -> None:
    root = dataset.parent
    assert len(list((root / "images" / "train").glob("*.png"))) == 8
    labels = sorted((root / "labels" / "val").glob("*.txt"))
    assert len(labels) == 4
    for line in labels[0].read_text().splitlines():
        cls, *box = line.split()
        assert cls in ("0", "1") and all(0 < float(v) <= 1 for v in box)
    assert f"train: {root / 'images' / 'train'}" in dataset.read_text()
    again = make_synthetic_detection_dataset(root.parent / "again").parent
    assert (again / "labels" / "val" / labels[0].name).read_text() == labels[0].read_text()  # deterministic


@pytest.mark.parametrize(
    ("data_yaml", "words"),
    [
        ("coco8.yaml", "not an existing local .yaml file"),
        ("https://example.com/data.yaml", "must be the path of a local dataset YAML"),
    ],
)
def test_refuses_datasets_that_are_not_local_files(tmp_path, no_network, data_yaml: str, words: str) -> None:
    result = run_inprocess(TASK, _payload(_seed_text(), data_yaml, tmp_path))
    assert not result.ok and result.error_type == "InvalidDataset" and words in result.error_message
    assert result.value["stage"] == "dataset" and not no_network


def test_refuses_missing_split_and_drops_download(tmp_path, dataset, no_network) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"path: {dataset.parent}\ntrain: images/train\nval: images/nowhere\nnames: [a, b]\n"
                      "download: https://example.com/data.zip\n")
    result = run_inprocess(TASK, _payload(_seed_text(), broken, tmp_path))
    assert result.error_type == "InvalidDataset" and "images/nowhere" in result.error_message
    assert not no_network


@pytest.mark.slow
def test_one_epoch_on_cpu_offline(tmp_path, tmp_path_factory, dataset, monkeypatch, no_network) -> None:
    if importlib.util.find_spec("ultralytics") is None:  # not importorskip: importing it before
        pytest.skip("ultralytics is not installed")  # YOLO_OFFLINE is set would probe the network
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-config")))
    result = run_inprocess(TASK, _payload(_seed_text(), dataset, tmp_path / "project"))
    assert result.ok, f"{result.short_error()}\n{result.traceback}\n{result.stdout[-3000:]}"
    report = result.value["report"]
    assert 0.0 <= result.value["score"] == report["map50_95"] <= 1.0
    assert set(report) == {"map50_95", "map50", "precision", "recall", "params", "gflops", "wall_s"}
    assert report["params"] > 2.9e6 and report["wall_s"] > 0
    assert (tmp_path / "project" / "train" / "weights" / "best.pt").is_file()
    assert not no_network, no_network


@pytest.mark.slow
def test_one_epoch_in_the_real_sandbox(tmp_path, monkeypatch) -> None:
    """Landlock (writes to the task's directory, reads confined to read_paths), no network; a fresh
    dataset, so that ultralytics scans its labels (no label cache, which the sandbox cannot write)."""
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics is not installed")
    from archsmith.tools.sandbox import Sandbox, SandboxLimits

    dataset = make_synthetic_detection_dataset(tmp_path / "data", seed=1)

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.delenv("YOLO_CONFIG_DIR", raising=False)  # the task's own directory
    payload = _payload(_seed_text(), dataset, "", read_paths=[str(dataset.parent)])
    payload.pop("project_dir")
    with Sandbox(SandboxLimits(timeout_s=300, memory_mb=8192), 1, preload=("torch", "archsmith.tools.spaces")) as box:
        result = box.run(TASK, payload)
    assert result.ok, f"{result.short_error()}\n{result.traceback}\n{result.stdout[-3000:]}"
    assert 0.0 <= result.value["score"] <= 1.0 and result.value["report"]["params"] > 2.9e6
