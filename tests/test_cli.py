"""The CLI on the toy space (in-process) and on the template space (sandboxed check)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from archsmith.graph.cli import app

runner = CliRunner(env={"COLUMNS": "200"})
TOY = ["--set", "space.name=toy", "--set", "sandbox.mode=inprocess", "--set", "budget.params_m=0.02",
       "--set", "budget.input_size=8", "--set", "evaluator.preset=custom", "--set", "evaluator.batch_size=4"]


@pytest.fixture
def toy_registered():
    import toy_space  # noqa: F401


def test_run_trace_and_resume(tmp_path, toy_registered):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", *TOY, "--set", f"runs_dir='{runs}'", "--set", "search.max_candidates=3",
                                 "--set", "parallel.workers=1"])
    assert result.exit_code == 0, result.output
    assert "generated" in result.output and "repaired by downscaler" in result.output
    (run_dir,) = runs.iterdir()
    listing = runner.invoke(app, ["trace", str(run_dir)])
    assert listing.exit_code == 0 and "navigator" in listing.output and "verifier" in listing.output
    step = runner.invoke(app, ["trace", str(run_dir), "--step", "2"])
    assert step.exit_code == 0 and "inputs" in step.output and "tool results" in step.output
    missing = runner.invoke(app, ["trace", str(run_dir), "--step", "9999"])
    assert missing.exit_code == 2
    again = runner.invoke(app, ["resume", str(run_dir)])
    assert again.exit_code == 0, again.output
    assert "budget of 3 evaluated candidates used" in again.output


def test_bad_config_names_the_field(tmp_path):
    result = runner.invoke(app, ["run", "--set", "budget.params_m=-3"])
    assert result.exit_code == 2
    assert "budget.params_m" in result.output


def test_not_a_run_directory(tmp_path):
    assert runner.invoke(app, ["trace", str(tmp_path)]).exit_code == 2
    assert runner.invoke(app, ["resume", str(tmp_path)]).exit_code == 2


def test_check_passes_and_fails_with_exit_codes(toy_registered):
    ok = runner.invoke(app, ["check", "C8,C16", *TOY])
    assert ok.exit_code == 0, ok.output
    assert "pass" in ok.output and "Zen-score" in ok.output
    broken = runner.invoke(app, ["check", "C8,X", *TOY])
    assert broken.exit_code == 1 and "cannot be built" in broken.output
    invalid = runner.invoke(app, ["check", "C8,C7", *TOY])
    assert invalid.exit_code == 1 and "validate" in invalid.output
    too_big = runner.invoke(app, ["check", "C8,C512", *TOY])
    assert too_big.exit_code == 1 and "params" in too_big.output


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_run_says_how_to_resume(tmp_path, toy_registered, monkeypatch, how):
    import os
    import signal
    import time

    import archsmith.graph.run as run_module

    real_run = run_module.run

    def interrupted_run(config, **kwargs):
        def stop(record):
            if how == "sigterm":  # `kill PID`, or a batch scheduler's time limit; unhandled, it ends pytest
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)  # the handler raises before this returns
                pytest.fail("SIGTERM did not interrupt the run")
            raise KeyboardInterrupt

        return real_run(config, **{**kwargs, "on_record": stop})

    monkeypatch.setattr(run_module, "run", interrupted_run)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", *TOY, "--set", f"runs_dir='{runs}'", "--set", "search.max_candidates=4",
                                 "--set", "parallel.workers=1", "--set", "search.children_per_generation=1"])
    assert result.exit_code == 130
    (run_dir,) = runs.iterdir()
    assert f"archsmith resume {run_dir}" in result.output.replace("\n", "")
    resumed = runner.invoke(app, ["resume", str(run_dir)])
    assert resumed.exit_code == 0 and "budget of 4 evaluated candidates used" in resumed.output


def test_bad_space_and_workflow_settings_are_one_clean_message(tmp_path):
    from typer.testing import CliRunner

    from archsmith.graph.cli import app

    bad_base = tmp_path / "bad.py"
    bad_base.write_text("import torch\nclass Network(:\n", "utf-8")
    runs = ["--set", f"runs_dir={tmp_path / 'runs'}"]
    cases = [
        (["--set", "space.name=foo"], "space.name: unknown search space 'foo'"),
        (["--set", "space.name=code", "--set", 'space.settings={bases=["nope.py"]}'], "'nope.py' is neither a built-in base"),
        (["--set", "space.name=code", "--set", f'space.settings={{bases=["{bad_base}"]}}'], "is invalid: syntax: line 2"),
        (["--set", "space.name=code", "--set", "space.settings={colour=1}"], "space.settings.colour: Extra inputs"),
        (["--set", "workflow.navigator=nobody"], "workflow names role 'nobody'"),
    ]
    for overrides, message in cases:
        result = CliRunner().invoke(app, ["run", *overrides, *runs])
        assert result.exit_code == 2, (overrides, result.output)
        assert message in " ".join(result.output.split()), (overrides, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # nothing was created for a config that cannot run


def test_resume_of_a_run_from_an_incompatible_version_names_the_fields(tmp_path):
    from typer.testing import CliRunner

    from archsmith.graph.cli import app

    run = tmp_path / "old-run"
    run.mkdir()
    (run / "config.toml").write_text('name = "x"\nfuture_field = 1\n[search]\nnew_knob = true\n', "utf-8")
    (run / "history.jsonl").write_text('{"id": "c0001"}\n', "utf-8")
    result = CliRunner().invoke(app, ["resume", str(run)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "search.new_knob: Extra inputs are not permitted" in text and "future_field" in text
    assert str(run / "config.toml") in text.replace(" ", "") or "config.toml" in text
    assert "Traceback" not in result.output
    assert (run / "history.jsonl").read_text("utf-8") == '{"id": "c0001"}\n'  # nothing lost
