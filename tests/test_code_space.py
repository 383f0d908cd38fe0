"""The open-ended code space: static checks, the verify/debug/downscale loop with scripted fake
LLMs (FairNAD's failure cases), algorithmic runs, and `archsmith check model.py`."""

from __future__ import annotations

import json
import random

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from typer.testing import CliRunner

import archsmith
from archsmith.graph.cli import app
from archsmith.graph.lineage import read_lineage
from archsmith.graph.trace import read_steps
from archsmith.tools.spaces import get_space
from archsmith.tools.spaces.code import BUILTIN_BASES, builtin_base_source

BASE = builtin_base_source("resnet32")
SPACE = get_space("code", {})

SE_CLASS = '''

class ChannelGate(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))
'''


def with_gate(source: str, broken: bool = False) -> str:
    """The base with a channel gate after every block (``broken``: a wrong channel count)."""
    channels = "self.out_channels + 1" if broken else "self.out_channels"
    source = source.replace("\n\nclass BasicBlock", SE_CLASS + "\n\nclass BasicBlock")
    source = source.replace("        self.out_channels = out_channels\n",
                            f"        self.out_channels = out_channels\n        self.gate = ChannelGate({channels})\n", 1)
    return source.replace("return self.act2(out + self.shortcut(x))", "return self.gate(self.act2(out + self.shortcut(x)))")


def block(source: str) -> str:
    return f"Here is the new network:\n```python\n{source}\n```\n"


def fake(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(list(answers)))


@pytest.fixture
def code_config(toy_config, tmp_path):
    def make(**sections):
        base = {
            "space": {"name": "code", "settings": {"bases": ["resnet32"]}},
            "budget": {"params_m": 1.5, "input_size": 16, "num_classes": 10},
            "search": {"max_candidates": 1, "children_per_generation": 1},
            "sandbox": {"mode": "inprocess", "timeout_s": 120},
        }
        for key, value in sections.items():
            base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) and key in base else value
        return toy_config(**base)

    return make


def llm_roles(*roles: str) -> dict:
    return {role: {"policy": "llm", "fallback": "none"} for role in roles}


# -- static --------------------------------------------------------------------------------


def test_every_builtin_base_validates_and_differs():
    canonicals = {SPACE.canonical(builtin_base_source(name)) for name in BUILTIN_BASES}
    assert len(canonicals) == len(BUILTIN_BASES)
    for name in BUILTIN_BASES:
        assert SPACE.validate(builtin_base_source(name)).ok


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty source"),
        ("import torch\nclass Network(torch.nn.Module):\n    def __init__(self, n):\n        super().__init__(", "truncated"),
        ("import torch\nclass Net(torch.nn.Module):\n    pass\n", "no module-level Network"),
    ],
)
def test_validation_errors(source, message):
    validation = SPACE.validate(source)
    assert not validation.ok and message in validation.summary()


def test_canonical_form_ignores_comments_and_docstrings():
    noisy = BASE.replace("WIDTHS = (16, 32, 64)", "WIDTHS = (16, 32, 64)  # stage widths").replace('"""conv-BN', '"""A conv-BN')
    assert SPACE.canonical(noisy) == SPACE.canonical(BASE)
    assert SPACE.canonical(BASE.replace("(16, 32, 64)", "(16, 32, 72)")) != SPACE.canonical(BASE)


def test_algorithmic_operators_apply_to_every_base():
    for name in BUILTIN_BASES:
        source = builtin_base_source(name)
        for operator in SPACE.operators():
            try:
                mutation = SPACE.mutate(source, random.Random(0), operator)
            except ValueError as error:  # e.g. a base without a stride pattern to move
                assert "no operator applies" in str(error) or operator in str(error)
                continue
            assert SPACE.validate(mutation.child).ok
            assert SPACE.canonical(mutation.child) != SPACE.canonical(source), (name, operator)


def test_repair_adds_a_missing_import_and_rejects_deleting_the_new_module():
    broken = BASE.replace("import torch.nn.functional as F\n", "")
    assert SPACE.repair(broken, "NameError: name 'F' is not defined") == "import torch.nn.functional as F\n" + broken
    child = with_gate(BASE)
    assert SPACE.repair_violation(BASE, child, BASE) == \
        "the repair deleted the newly added ChannelGate instead of fixing it"
    assert SPACE.repair_violation(BASE, child, with_gate(BASE)) is None


# -- runs with scripted LLMs ---------------------------------------------------------------


def test_llm_generator_valid_mutation(code_config):
    config = code_config(roles=llm_roles("generator"))
    result = archsmith.run(config, chat_models={"generator": fake(block(with_gate(BASE)))})
    [record] = result.history
    assert record["status"] == "valid", record.get("discard_reason")
    assert "ChannelGate" in record["text"] and record["params"] > 466_906


def test_debugger_fixes_a_syntax_error(code_config):
    config = code_config(roles=llm_roles("generator", "debugger"))
    syntax_error = with_gate(BASE).replace("def forward(self, x):\n        return x *", "def forward(self, x)\n        return x *")
    models = {"generator": fake(block(syntax_error)), "debugger": fake(block(with_gate(BASE)))}
    result = archsmith.run(config, chat_models=models)
    [record] = result.history
    assert record["status"] == "valid" and record["debug_repairs"] == 1
    [first, _] = read_steps(result.run_dir / "trace.sqlite", role="verifier")
    assert first.decision.startswith("fails_to_run") and "syntax" in first.decision


def test_debugger_fixes_a_shape_error_from_the_traceback(code_config):
    config = code_config(roles=llm_roles("generator", "debugger"))
    models = {"generator": fake(block(with_gate(BASE, broken=True))), "debugger": fake(block(with_gate(BASE)))}
    result = archsmith.run(config, chat_models=models)
    [record] = result.history
    assert record["status"] == "valid" and record["debug_repairs"] == 1
    [debugger_step] = read_steps(result.run_dir / "trace.sqlite", role="debugger")
    assert 'File "candidate.py"' in debugger_step.prompts[1].text  # the candidate's own lines
    assert "ChannelGate" in debugger_step.prompts[1].text


def test_a_repair_that_deletes_the_new_module_is_rejected(code_config):
    config = code_config(roles=llm_roles("generator", "debugger"), workflow={"max_debug": 1},
                         search={"max_candidates": 1, "max_children": 1})
    models = {"generator": fake(block(with_gate(BASE, broken=True))), "debugger": fake(block(BASE))}
    result = archsmith.run(config, chat_models=models)
    [record] = result.history
    assert record["status"] == "discarded"
    [debugger_step] = read_steps(result.run_dir / "trace.sqlite", role="debugger")
    assert "deleted the newly added ChannelGate" in debugger_step.tools["rejected_repair"]


@pytest.mark.parametrize("policy", ["llm", "algorithmic"])
def test_downscaler_brings_an_over_budget_child_under(code_config, policy):
    wide = with_gate(BASE).replace("WIDTHS = (16, 32, 64)", "WIDTHS = (64, 128, 256)")
    small = with_gate(BASE).replace("WIDTHS = (16, 32, 64)", "WIDTHS = (24, 48, 96)")
    roles = {**llm_roles("generator"), "downscaler": {"policy": policy}}
    models = {"generator": fake(block(wide)), "downscaler": fake(block(small))}
    result = archsmith.run(code_config(roles=roles, budget={"params_m": 1.5}), chat_models=models)
    [record] = result.history
    assert record["status"] == "valid" and record["downscale_repairs"] >= 1
    assert record["params"] <= 1.5e6
    assert "ChannelGate" in record["text"]  # shrinking kept the new module
    if policy == "llm":  # far over budget: FairNAD's first strategy, the new module used once
        first = read_steps(result.run_dir / "trace.sqlite", role="downscaler")[0]
        assert "restrict the newly added module to a single use" in first.prompts[1].text


def test_unchanged_and_one_layer_children_are_rejected(code_config):
    one_layer = ("import torch.nn as nn\n\nclass Network(nn.Module):\n    def __init__(self, num_classes=10):\n"
                 "        super().__init__()\n        self.fc = nn.Linear(3, num_classes)\n\n"
                 "    def forward(self, x):\n        return self.fc(x.mean((2, 3)))\n")
    unchanged = "# a comment the model added\n" + BASE
    # The Verifier's own check: the Generator hands the children over without re-asking.
    config = code_config(roles=llm_roles("generator"), search={"max_candidates": 2, "max_children": 2},
                         workflow={"reask_on_structure": False})
    result = archsmith.run(config, chat_models={"generator": fake(block(unchanged), block(one_layer))})
    reasons = [r["discard_reason"] for r in result.history]
    assert reasons[0] == "identical to its parent"
    assert reasons[1].startswith("only 1 weight layers run in forward")
    assert [r["discard_stage"] for r in result.history] == ["structure", "structure"]


def test_a_truncated_answer_is_not_executed(code_config):
    truncated = "```python\n" + BASE[: len(BASE) // 2]  # the fence never closes
    config = code_config(roles=llm_roles("generator"), search={"max_candidates": 1, "max_children": 1})
    result = archsmith.run(config, chat_models={"generator": fake(truncated, truncated)})
    [record] = result.history
    assert record["status"] == "discarded" and record["discard_stage"] == "generate"
    [generator_step] = read_steps(result.run_dir / "trace.sqlite", role="generator")
    assert any("never closes" in e["message"] or "not closed" in e["message"] for e in generator_step.tools["llm_errors"])
    assert not read_steps(result.run_dir / "trace.sqlite", role="debugger")


@pytest.mark.slow
def test_offline_algorithmic_code_search(code_config):
    config = code_config(search={"max_candidates": 6, "children_per_generation": 3},
                         budget={"params_m": 1.5, "flops_m": 400.0, "input_size": 16},
                         parallel={"workers": 2}, knowledge={"use": True, "embedding": "hashing"})
    result = archsmith.run(config)
    assert result.counts["valid"] == 6
    assert all(r["params"] <= 1.5e6 for r in result.history if r["status"] == "valid")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["pass_rate"]["valid"] == 6 and summary["pass_rate"]["stages"]["execute"]["reached"] >= 6
    from archsmith.knowledge.tree import Tag

    plans = [plan for step in read_steps(result.run_dir / "trace.sqlite", role="navigator") for plan in step.parsed]
    realised = 0
    for plan in plans:  # ideas whose category a transform realises choose that transform
        fitting = SPACE.operators_for_idea(Tag(*plan["idea_tag"].split(" > ")))
        if fitting:
            assert plan["operator"] in fitting
            realised += 1
    assert plans and realised <= len(plans)
    lineage = read_lineage((result.run_dir / "lineage.json").read_text())
    assert set(lineage.nodes) >= {r["id"] for r in result.history}
    assert all(lineage.in_degree(r["id"]) == 1 for r in result.history)


def test_check_command_vets_a_code_file(tmp_path):
    model = tmp_path / "model.py"
    model.write_text(BASE, "utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["check", str(model), "--set", "sandbox.mode=inprocess",
                                 "--set", "evaluator.preset=custom", "--set", "evaluator.batch_size=4"])
    assert result.exit_code == 0, result.output
    assert "pass" in result.output and "466,906" in result.output and "weight layers run" in result.output
    model.write_text(BASE.replace("return self.classifier(x)", "return self.classifier(x)[:, :3]"), "utf-8")
    failed = runner.invoke(app, ["check", str(model), "--set", "sandbox.mode=inprocess"])
    assert failed.exit_code == 1 and "OutputShape" in failed.output


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN_BASES)
def test_algorithmic_shrink_converges_from_three_times_over_budget(name, one_torch_thread):
    """The downscaler's transform, at most workflow.max_downscale (4) tries, several seeds."""
    import torch
    from thop import profile

    from archsmith.tools.spaces.code_net import load_entry

    def cost(source: str) -> tuple[int, float]:
        model = load_entry(source, "Network")(10)
        macs, _ = profile(model, inputs=(torch.randn(1, 3, 32, 32),), verbose=False)
        return sum(p.numel() for p in model.parameters()), 2 * macs

    source = builtin_base_source(name)
    params, flops = cost(source)
    for index, limit_of in enumerate((lambda p, f: p, lambda p, f: f)):
        limit = limit_of(params, flops) / 3
        for seed in range(3):
            text, tries = source, 0
            value = limit_of(*cost(text))
            while value > limit and tries < 4:
                factor = max(0.05, 0.9 * limit / value)  # as the Downscaler computes it
                text = SPACE.shrink(text, factor, random.Random(f"{seed}:{tries}")).child
                value, tries = limit_of(*cost(text)), tries + 1
            assert value <= limit, (name, ("params", "flops")[index], seed, value / limit)


PLAIN_BASE = '''import torch.nn as nn
import torch.nn.functional as F

ACTIVATION = nn.ReLU


class Network(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.act = ACTIVATION()
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
'''


def test_operators_without_a_site_fall_back_or_leave_no_child(code_config, tmp_path):
    only_activation = tmp_path / "only_activation.py"
    only_activation.write_text(PLAIN_BASE, "utf-8")
    config = code_config(space={"name": "code", "settings": {"bases": [str(only_activation)]}},
                         search={"max_candidates": 3, "children_per_generation": 3})
    result = archsmith.run(config)
    assert result.counts["valid"] == 3  # every planned operator fell back to `activation`
    assert all("ACTIVATION" in r["text"] and "nn.ReLU\n" not in r["text"] for r in result.history)

    no_sites = tmp_path / "no_sites.py"
    no_sites.write_text(PLAIN_BASE.replace("ACTIVATION = nn.ReLU\n", "").replace("ACTIVATION()", "nn.ReLU()"), "utf-8")
    config = code_config(space={"name": "code", "settings": {"bases": [str(no_sites)]}},
                         search={"max_candidates": 1, "max_children": 2, "children_per_generation": 1})
    result = archsmith.run(config)
    assert [r["discard_reason"] for r in result.history] == ["the generator produced no child"] * 2
    decisions = [s.decision for s in read_steps(result.run_dir / "trace.sqlite", role="generator")]
    assert all(d.startswith("no applicable mutation: no operator applies") for d in decisions)


def test_runs_make_ast_parse_thread_safe(toy_config):
    """CPython 3.11: concurrent ast.parse calls (ours in parallel children, LangChain's in node
    wrappers) can raise "AST constructor recursion depth mismatch"; a run installs one lock while
    it goes, and puts ast.parse back when it ends."""
    import ast
    import sys

    from archsmith.tools import threadsafe_ast

    before = ast.parse
    during = []
    archsmith.run(toy_config(search={"max_candidates": 1}), on_record=lambda _: during.append(ast.parse))
    if sys.version_info < (3, 13):
        assert during and all(parse is threadsafe_ast.parse for parse in during)
        with threadsafe_ast.installed(), threadsafe_ast.installed():  # nested (overlapping runs)
            assert ast.parse is threadsafe_ast.parse
        assert ast.parse is before
    assert ast.parse is before
    assert isinstance(ast.parse("x = 1"), ast.Module)


def test_repair_fixes_a_classifier_left_at_the_old_width():
    """Small models change the widths and leave nn.Linear(64, num_classes): the shape error names
    the real width, and the deterministic repair puts it in (the built network then runs)."""
    import torch

    from archsmith.tools.spaces import get_space

    space = get_space("code")
    source = (
        "import torch.nn as nn\n\n"
        "WIDTHS = (16, 32, 80)  # widened: 64 -> 80\n\n\n"
        "class Network(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.body = nn.Sequential(nn.Conv2d(3, WIDTHS[-1], 3), nn.ReLU())\n"
        "        self.fc = nn.Linear(64, num_classes)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.body(x).mean((2, 3)))\n"
    )
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes") as failure:
        space.build(source, 10)(torch.zeros(2, 3, 16, 16))
    fixed = space.repair(source, f"RuntimeError: {failure.value}")
    assert fixed is not None and "nn.Linear(80, num_classes)" in fixed
    assert space.build(fixed, 10)(torch.zeros(2, 3, 16, 16)).shape == (2, 10)
    assert space.repair(source, "RuntimeError: something else") is None
