"""CLI conventions a new user expects: -h, --version, --set KEY=VALUE named, "did you mean",
validation before any output, `config show`, `check` of paths and files by content with no
budget unless given, best/ files with their real extension, `export`, `trace` piped."""

from __future__ import annotations

import json
import tomllib

import pytest
from typer.testing import CliRunner

from archsmith.graph.cli import app
from archsmith.graph.config import load_config

runner = CliRunner(env={"COLUMNS": "80"})
TOY = ["--set", "space.name=toy", "--set", "sandbox.mode=inprocess", "--set", "budget.params_m=0.02",
       "--set", "budget.input_size=8", "--set", "evaluator.preset=custom", "--set", "evaluator.batch_size=4"]


def flat(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture
def toy_registered():
    import toy_space  # noqa: F401


@pytest.fixture
def toy_run(tmp_path, toy_registered):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", *TOY, "--set", f"runs_dir='{runs}'", "--set", "search.max_candidates=3",
                                 "--set", "parallel.workers=1"])
    assert result.exit_code == 0, result.output
    (run_dir,) = runs.iterdir()
    return run_dir, result.output


@pytest.mark.parametrize("command", [[], ["run"], ["check"], ["export"], ["trace"], ["train"], ["config", "show"],
                                     ["knowledge"], ["knowledge", "stats"]])
def test_dash_h_is_help_everywhere(command):
    result = runner.invoke(app, [*command, "-h"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "( section)" not in result.output


def test_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"archsmith {version('archsmith')}"


@pytest.mark.parametrize("args", [["run", "--set", "search.max_candidates", "20"],
                                  ["run", "-s", "search.max_candidates", "20"],
                                  ["check", "C8,C16", "--set", "search.max_candidates", "20"],
                                  ["run", "--set=search.max_candidates"]])
def test_set_without_equals_is_named(args, tmp_path):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert "--set search.max_candidates: expected KEY=VALUE" in text and "config file not found" not in text
    if args[-1] == "20":
        assert "--set search.max_candidates=20" in text


def test_config_typos_get_did_you_mean():
    cases = {"budget.param_m=1": "did you mean budget.params_m?",
             "search.max_candidats=3": "did you mean search.max_candidates?",
             "budget.max_candidates=3": "max_candidates belongs in [search]",
             "roles.generator.llm.policy='llm'": "policy belongs in [roles.generator]",
             "budjet.params_m=1": "did you mean budget?"}
    for override, hint in cases.items():
        result = runner.invoke(app, ["run", "--set", override])
        assert result.exit_code == 2, result.output
        assert hint in flat(result.output), (override, result.output)


def test_config_errors_come_before_any_run_output(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[space]\nname = "foo"\n[search]\nmax_candidates = 3\n', "utf-8")
    for args in (["run", str(bad)], ["run", "--set", "space.name=foo"], ["run", "--set", "workflow.navigator=nobody"]):
        result = runner.invoke(app, [*args, "--set", f"runs_dir='{tmp_path / 'runs'}'"])
        assert result.exit_code == 2, result.output
        assert "budget:" not in result.output and "run directory" not in result.output and "search" not in \
            result.output.replace("search space", ""), result.output
    assert not (tmp_path / "runs").exists()


def test_config_show_prints_the_resolved_config_with_defaults(tmp_path):
    result = runner.invoke(app, ["config", "show", "--set", "search.max_candidates=7"])
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.output)
    assert shown["search"]["max_candidates"] == 7 and shown["budget"]["params_m"] == 1.0
    assert "top_k" in shown["search"] and "timeout_s" in shown["sandbox"]  # defaults written out
    assert "budget.flops_m" in result.output  # the unset ones listed
    assert load_config(None, ["search.max_candidates=7"]).model_dump() == \
        load_config(_write(tmp_path / "shown.toml", result.output)).model_dump()
    minimal = _write(tmp_path / "mini.toml", '[space]\nname = "template"\n')
    mini = tomllib.loads(runner.invoke(app, ["config", "show", str(minimal)]).output)
    assert mini["search"]["max_candidates"] == 40 and "params_m" not in mini["budget"]
    bad = runner.invoke(app, ["config", "show", "--set", "space.name=foo"])
    assert bad.exit_code == 2 and "unknown search space 'foo'" in bad.output


def _write(path, text):
    path.write_text(text, "utf-8")
    return path


def test_run_says_which_budget_applies_and_where_it_comes_from(toy_run, tmp_path):
    from archsmith.graph.cli_config import budget_line

    _, output = toy_run
    assert "budget: params <= 0.02 M (--set)" in flat(output) and "3 candidates (--set)" in flat(output)
    assert budget_line(load_config(None), None, []).startswith(
        "[bold]budget: params <= 1.0 M (embedded default config)")
    assert "200 candidates (embedded default config)" in budget_line(load_config(None), None, [])
    minimal = _write(tmp_path / "mini.toml", '[space]\nname = "template"\n')
    line = budget_line(load_config(minimal), minimal, [])
    assert "no params limit and no FLOPs limit (built-in default, not set in mini.toml)" in line
    assert "40 candidates (built-in default, not set in mini.toml)" in line and "archsmith config show" in line


def test_trace_piped_is_one_line_per_step(toy_run):
    run_dir, _ = toy_run
    result = runner.invoke(app, ["trace", str(run_dir)])
    assert result.exit_code == 0, result.output
    steps = [line for line in result.output.splitlines() if " c0002 " in f" {line} "]
    assert steps and all("…" not in line for line in steps)
    assert any(line.split()[4] == "evaluate" for line in steps), steps  # step session gen candidate node


def test_top_table_tells_candidates_apart():
    from archsmith.graph.cli_tables import distinguishing

    best = "SuperConvK3BNRELU(3,8,1,1)SuperResK1K3K1(8,24,1,8,2)SuperResK3K3(24,32,2,16,1)SuperConvK1BNRELU(32,128,1,1)"
    texts = [best, best.replace("(24,32,2,16,1)", "(24,48,2,16,1)").replace("(32,128", "(48,128"),
             best.replace("(8,24,1,8,2)", "(8,24,1,8,3)"), best.replace("SuperResK3K3(24,32,2,16,1)", "")]
    cells = distinguishing(texts)
    assert cells[0] == "best (4 blocks)"
    assert cells[1] == "#3 SuperResK3K3(24,48,2,16,1) +1 more"
    assert cells[2] == "#2 SuperResK1K3K1(8,24,1,8,3)"
    assert cells[3].startswith("#3") and len(set(cells)) == 4
    edges = distinguishing(["|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
                            "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"])
    assert edges[1] == "#6 nor_conv_1x1~2"
    best_arch = {"ks": [3, 3, 5, 5], "e": [2, 4, 4, 2], "d": [1, 2], "r": 32}  # supernet arch dicts
    archs = [best_arch, {**best_arch, "ks": [3, 5, 5, 5]}, {**best_arch, "ks": [5, 5, 5, 5], "r": 24}, best_arch]
    assert distinguishing([json.dumps(arch) for arch in archs]) == [
        "best", "ks[1]=5", "ks[0]=5 +2 more", "same as the best"]


# ---------------------------------------------------------------------------------- check


def test_check_a_missing_path_is_an_error_naming_it(tmp_path):
    for candidate in (str(tmp_path / "model.yaml"), "missing.py", "runs/x/best/candidate.txt", "notes.txt"):
        result = runner.invoke(app, ["check", candidate])
        assert result.exit_code == 2, result.output
        assert f"CANDIDATE {candidate}: no such file" in result.output, result.output
    folder = runner.invoke(app, ["check", str(tmp_path)])
    assert folder.exit_code == 2 and "directory" in folder.output


def test_check_reads_files_by_suffix_or_content():
    from archsmith.graph.check import detect_space, looks_like_path
    from archsmith.tools.spaces import get_space

    assert detect_space(get_space("code", {}).initial()[0]) == "code"
    assert detect_space(get_space("yolo", {}).initial()[0]) == "yolo"
    assert detect_space("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|") == "nb201"
    assert detect_space("SuperConvK3BNRELU(3,8,1,1)SuperResK1K3K1(8,24,1,8,2)") == "template"
    assert detect_space("import torch\nclass Network(:\n") == "code"  # broken: the code space says where
    assert looks_like_path("a/b") and looks_like_path("m.yml") and not looks_like_path("SuperConvK3BNRELU(3,8,1,1)")


def test_check_applies_a_budget_only_when_given(tmp_path):
    from archsmith.graph.check import check_config

    for space in ("template", "code", "nb201"):
        assert check_config(space, "").budget.params_m is None
        assert check_config(space, "", ["budget.params_m=0.5"]).budget.params_m == 0.5
        assert check_config(space, "").space.name == space
    assert check_config("yolo", "nc: 3\n").budget.params_m is None
    assert check_config("template", "", ["space.name=nb201"]).space.name == "nb201"


def test_check_names_the_budget_stage(toy_registered):
    too_big = runner.invoke(app, ["check", "C8,C512", *TOY])
    assert too_big.exit_code == 1
    assert "fail at budget" in flat(too_big.output) and "budget: params <= 0.02 M (from --set)" not in too_big.output
    assert "params <= 0.02 M (from --set)" in flat(too_big.output)


def test_check_of_a_code_run_best_candidate_txt_reads_python(tmp_path):
    from archsmith.tools.spaces import get_space

    saved = tmp_path / "best" / "candidate.txt"
    saved.parent.mkdir()
    saved.write_text(get_space("code", {}).initial()[0] + "\n", "utf-8")
    result = runner.invoke(app, ["check", str(saved), "--set", "sandbox.mode=inprocess",
                                 "--set", "evaluator.preset=custom", "--set", "evaluator.batch_size=4"])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "code (from the content of candidate.txt)" in text
    assert any(line.split("│")[1:3] and "budget" in line.split("│")[1] and "none" in line.split("│")[2]
               for line in result.output.splitlines() if line.count("│") >= 3), result.output


# ------------------------------------------------------------------------- best/ and export


def test_best_keeps_the_real_extension_and_export_writes_it(tmp_path):
    from archsmith.graph.nodes import run_file_suffix, write_archive_files
    from archsmith.graph.paths import RunPaths
    from archsmith.tools.spaces import get_space

    source = get_space("code", {}).initial()[0]
    for space, suffix, name in (("code", ".py", "model.py"), ("yolo", ".yaml", "model.yaml"),
                                ("template", ".txt", None), ("nb201", ".txt", None)):
        paths = RunPaths(tmp_path / f"run-{space}")
        paths.root.mkdir()
        paths.config.write_text(f'[space]\nname = "{space}"\n', "utf-8")
        assert run_file_suffix(paths) == suffix
        record = {"id": "c0007", "status": "valid", "score": 1.5, "text": source, "generation": 1}
        write_archive_files(paths, [record])  # the suffix read from the run's config (as a fork does)
        files = sorted(p.name for p in paths.best.iterdir())
        assert files == sorted(["candidate.txt", "result.json", *([name] if name else [])])
        exported = runner.invoke(app, ["export", str(paths.root), "--out", str(tmp_path)])
        assert exported.exit_code == 0, exported.output
        target = tmp_path / f"run-{space}-c0007{suffix}"
        assert target.read_text("utf-8").rstrip("\n") == source.rstrip("\n")
        assert f"vet it with: archsmith check {target}" in exported.output
    named = runner.invoke(app, ["export", str(tmp_path / "run-code"), "--out", str(tmp_path / "mine.py")])
    assert named.exit_code == 0 and (tmp_path / "mine.py").is_file()
    empty = RunPaths(tmp_path / "run-empty")
    empty.root.mkdir()
    empty.config.write_text("", "utf-8")
    none = runner.invoke(app, ["export", str(empty.root)])
    assert none.exit_code == 2 and "no best candidate" in flat(none.output)
    assert runner.invoke(app, ["export", str(tmp_path / "nope")]).exit_code == 2


def test_a_run_writes_best_with_its_space_suffix(toy_run):
    run_dir, _ = toy_run
    best = json.loads((run_dir / "best" / "result.json").read_text("utf-8"))
    assert (run_dir / "best" / "candidate.txt").read_text("utf-8").strip() == best["text"]
    assert not list((run_dir / "best").glob("model.*"))  # the toy space has no file_suffix: .txt


def test_check_of_a_result_record_checks_the_candidate_it_records(tmp_path):
    """best/result.json sits beside the model files: checking it checks its candidate, in the
    space of the run it belongs to; other JSON is refused with what to give instead."""
    from archsmith.graph.check import load_candidate

    cell = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    (tmp_path / "config.toml").write_text('[space]\nname = "nb201"\n', "utf-8")
    record = tmp_path / "best" / "result.json"
    record.parent.mkdir()
    record.write_text(json.dumps({"id": "c0007", "text": cell, "score": 1.0}), "utf-8")
    loaded = load_candidate(str(record))
    assert (loaded.text, loaded.space) == (cell, "nb201") and "c0007" in loaded.why
    result = runner.invoke(app, ["check", str(record)])
    assert result.exit_code == 0, result.output
    for bad, why in (("{", "not valid JSON"), ('{"score": 1}', "result record")):
        record.write_text(bad, "utf-8")
        refused = runner.invoke(app, ["check", str(record)])
        assert refused.exit_code == 2 and why in flat(refused.output), refused.output
