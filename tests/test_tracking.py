"""Experiment tracking ([tracking] mlflow = true) against a local MLflow store in tmp_path, and
`archsmith compare` over runs."""

from __future__ import annotations

import importlib.util
import json
import socket

import pytest
from typer.testing import CliRunner

import archsmith
from archsmith.graph import tracking as tracking_module
from archsmith.graph.cli import app
from archsmith.graph.config import ConfigError
from archsmith.graph.paths import RunPaths

HAS_MLFLOW = all(importlib.util.find_spec(name) for name in ("mlflow", "sqlalchemy", "alembic"))
needs_mlflow = pytest.mark.skipif(not HAS_MLFLOW, reason="MLflow is not installed: pip install 'archsmith[tracking]'")


@needs_mlflow
def test_a_run_logs_config_candidates_and_artifacts_to_a_local_store(toy_config, tmp_path):
    from mlflow.tracking import MlflowClient

    config = toy_config(search={"max_candidates": 4}, tracking={"mlflow": True})
    result = archsmith.run(config)
    state = json.loads((result.run_dir / "tracking.json").read_text("utf-8"))
    assert state["uri"] == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"  # beside runs/, not in it
    client = MlflowClient(tracking_uri=state["uri"])
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == result.run_id
    assert run.data.params["space.name"] == "toy" and run.data.params["search.max_candidates"] == "4"
    assert run.data.tags["archsmith.evaluator"] == "zen"

    valid = [r for r in result.history if r["status"] == "valid"]
    scores = client.get_metric_history(state["run_id"], "score")
    assert sorted((m.step, m.value) for m in scores) == sorted((int(r["id"][1:]), r["score"]) for r in valid)
    best = client.get_metric_history(state["run_id"], "best_score")
    assert max(m.value for m in best) == result.best["score"]
    assert [m.value for m in sorted(best, key=lambda m: m.step)] == sorted(m.value for m in best)  # never drops
    params = {m.step: m.value for m in client.get_metric_history(state["run_id"], "params_m")}
    assert params[int(result.best["id"][1:])] == result.best["params"] / 1e6

    artifacts = {f.path for f in client.list_artifacts(state["run_id"])}
    assert {"best", "config.toml", "report.html", "summary.json"} <= artifacts
    best_files = {f.path for f in client.list_artifacts(state["run_id"], "best")}
    assert "best/result.json" in best_files and len(best_files) >= 2  # the source beside it
    assert (tmp_path / "mlruns" / "artifacts").is_dir()  # artifacts beside the database

    # a resume of the run goes on with the same MLflow run
    with tracking_module.tracking(config, RunPaths.existing(result.run_dir), "resume") as again:
        assert again.run_id == state["run_id"]
    assert len(client.search_runs([run.info.experiment_id])) == 1


@needs_mlflow
def test_an_unreachable_tracking_server_is_a_config_error_before_the_run(toy_config, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = toy_config(tracking={"mlflow": True, "mlflow_uri": f"http://127.0.0.1:{port}"})
    with pytest.raises(ConfigError, match=f"tracking.mlflow_uri = 'http://127.0.0.1:{port}': no MLflow server"):
        archsmith.run(config)
    assert not (tmp_path / "runs").exists()


def test_tracking_without_mlflow_names_the_extra(toy_config, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(tracking_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    config = toy_config(tracking={"mlflow": True})
    with pytest.raises(ConfigError, match=r"tracking.mlflow = true needs MLflow.*pip install 'archsmith\[tracking\]'"):
        archsmith.run(config)
    assert not (tmp_path / "runs").exists()
    runs = tmp_path / "cli-runs"
    result = CliRunner().invoke(app, ["run", "--set", "tracking.mlflow=true", "--set", f"runs_dir='{runs}'"])
    assert result.exit_code == 2 and "archsmith[tracking]" in result.output and not runs.exists()


def test_config_flattening_and_candidate_steps():
    flat = tracking_module.flatten({"a": {"b": 1, "c": [1, 2], "d": {}}, "e": "x" * 600})
    assert flat["a.b"] == "1" and flat["a.c"] == "[1, 2]" and flat["a.d"] == "{}"
    assert len(flat["e"]) == tracking_module.MAX_PARAM_CHARS
    assert tracking_module.candidate_step({"id": "c0042"}, 7) == 42
    assert tracking_module.candidate_step({"id": "x"}, 7) == 7
