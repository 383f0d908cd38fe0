"""Module mining (issue 22 item 1): parsing without importing, probing in the sandbox, the
library and ``archsmith modules``."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archsmith.graph.modules_cli import modules_app
from archsmith.tools.modules import MiningError, ModuleLibrary, mine
from archsmith.tools.modules.mining import probe_records
from archsmith.tools.sandbox import Sandbox, SandboxLimits

BLOCKS = '''
import torch
from torch import nn


class ConvBlock(nn.Module):
    """3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Down(ConvBlock):
    def __init__(self, in_channels, out_channels=32):
        super().__init__(in_channels, out_channels, stride=2)


class Mlp(torch.nn.Module):
    def __init__(self, in_features, hidden=(1, 2), *, out_features=None):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features or in_features)

    def forward(self, x):
        return self.fc(x)


class NeedsArgs(nn.Module):
    def __init__(self, vocab, *, depth, scale: float = 0.5):
        super().__init__()


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        raise ValueError("cannot build this")


class BadForward(nn.Module):
    def forward(self, x):
        raise RuntimeError("bad forward")


class _Base(nn.Module):
    def forward(self, x):
        return x * 2


class Doubler(_Base):
    pass


class Wrapped(ConvBlock):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)


class NotAModule:
    def forward(self, x):
        return x
'''

MORE = '''
from ..blocks import ConvBlock as CB


class Wide(CB):
    def __init__(self, in_channels=16):
        super().__init__(in_channels, 2 * in_channels)
'''

EXPECTED = {"ConvBlock", "Down", "Mlp", "NeedsArgs", "Broken", "BadForward", "_Base", "Doubler", "Wrapped", "Wide"}


def write_package(root: Path) -> Path:
    package = root / "tinypkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("IMPORTED = True\n")
    (package / "blocks.py").write_text(BLOCKS)
    (package / "broken.py").write_text("def oops(:\n    pass\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "more.py").write_text(MORE)
    return package


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_package(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxLimits(timeout_s=20, memory_mb=2048), 1, preload=("torch", "archsmith.tools.modules.probe")) as box:
        yield box


def by_name(records) -> dict:
    return {r.class_name: r for r in records}


def test_mining_parses_without_importing(package: Path) -> None:
    report = mine([str(package)])
    found = by_name(report.modules)
    assert set(found) == EXPECTED  # NotAModule is not a module; the syntax error skipped, not fatal
    assert "tinypkg" not in sys.modules
    assert [Path(s.path).name for s in report.skipped] == ["broken.py"]
    assert "SyntaxError" in report.skipped[0].error
    assert report.files_parsed == 4

    conv = found["ConvBlock"]
    assert conv.name == "tinypkg.blocks.ConvBlock" and conv.module == "tinypkg.blocks"
    assert [(a.name, a.default, a.annotation) for a in conv.init_args] == [
        ("in_channels", None, "int"), ("out_channels", None, "int"), ("stride", "1", "int")]
    assert conv.required_args == ["in_channels", "out_channels"]
    assert conv.forward_signature == "forward(self, x: torch.Tensor) -> torch.Tensor"
    assert conv.class_source.startswith("class ConvBlock(nn.Module):") and '"""3x3 conv."""' in conv.class_source
    assert conv.path == "tinypkg/blocks.py" and conv.line == 6 and conv.import_root == str(package.parent)

    assert found["Mlp"].init_args[1].default == "(1, 2)"
    assert [(a.name, a.kind, a.required) for a in found["NeedsArgs"].init_args] == [
        ("vocab", "positional", True), ("depth", "keyword_only", True), ("scale", "keyword_only", False)]
    assert found["Down"].bases == ["ConvBlock"] and found["Down"].forward_signature.startswith("forward(self, x")
    assert found["Wide"].name == "tinypkg.sub.more.Wide"  # base through "from ..blocks import ConvBlock as CB"
    assert found["_Base"].private and found["_Base"].abstract and not found["Doubler"].private
    assert found["Doubler"].init_args == [] and found["Doubler"].forward_signature == "forward(self, x)"


def test_bad_sources_are_mining_errors(tmp_path: Path) -> None:
    with pytest.raises(MiningError, match="no such path or installed package"):
        mine(["no_such_package_for_archsmith"])
    with pytest.raises(MiningError, match="not a directory or .py file"):
        mine([str(tmp_path / "missing" / "x.py")])
    with pytest.raises(MiningError, match="no submodule"):
        mine(["torch.no_such_submodule"])


def test_library_is_idempotent(package: Path, tmp_path: Path) -> None:
    work = write_package(tmp_path)
    with ModuleLibrary(tmp_path / "lib.sqlite") as library:
        report = mine([str(work)])
        assert library.upsert(report.modules) == {"added": 10, "updated": 0, "replaced": 0}
        conv = report.modules[0].model_copy(update={"probe": {"status": "ok", "channels_in": 16}})
        library.upsert([conv])
        assert library.upsert(mine([str(work)]).modules) == {"added": 0, "updated": 10, "replaced": 0}
        assert len(library) == 10
        assert library.find("ConvBlock")[0].probe == {"status": "ok", "channels_in": 16}  # kept: same source
        blocks = work / "blocks.py"
        blocks.write_text(blocks.read_text().replace("3, stride, 1)", "5, stride, 2)"))
        assert library.upsert(mine([str(work)]).modules) == {"added": 0, "updated": 9, "replaced": 1}
        changed = library.find("tinypkg.blocks.ConvBlock")[0]
        assert "5, stride, 2" in changed.class_source and changed.probe is None
        assert len(library) == 10 and [r.class_name for r in library.records(source="tinypkg.sub")] == ["Wide"]


def test_probing_in_the_sandbox(package: Path, sandbox: Sandbox) -> None:
    report = mine([str(package)])
    probe_records(report.modules, sandbox, timeout_s=20)
    found = by_name(report.modules)
    probes = {name: record.probe for name, record in found.items()}
    assert probes["_Base"] is None and found["_Base"].status == "private"

    conv = probes["ConvBlock"]
    assert conv["status"] == "ok" and conv["input_shape"] == [2, 16, 8, 8] and conv["output_shape"] == [2, 16, 8, 8]
    assert (conv["channels_in"], conv["channels_out"], conv["stride"], conv["keeps_spatial"]) == (16, 16, 1, True)
    assert conv["params"] == 16 * 16 * 9 + 16 and conv["kwargs"] == {"in_channels": 16, "out_channels": 16}
    down = probes["Down"]
    assert (down["channels_in"], down["channels_out"], down["stride"], down["keeps_spatial"]) == (16, 32, 2, False)
    assert probes["Wide"]["channels_out"] == 32

    mlp = probes["Mlp"]  # the image-like input fails (8 features), the vector works
    assert mlp["status"] == "ok" and mlp["input_shape"] == [2, 16] and mlp["output_shape"] == [2, 16]
    assert mlp["stride"] is None and mlp["keeps_spatial"] is None and mlp["params"] == 16 * 16 + 16

    assert probes["NeedsArgs"]["status"] == "needs_args" and probes["NeedsArgs"]["missing"] == ["vocab", "depth"]
    assert probes["NeedsArgs"]["error_message"] == "needs arguments: vocab, depth"
    assert probes["Broken"]["status"] == "build_failed" and "cannot build this" in probes["Broken"]["error_message"]
    assert probes["BadForward"]["status"] == "forward_failed" and "bad forward" in probes["BadForward"]["error_message"]
    assert probes["Doubler"]["status"] == "ok" and probes["Doubler"]["keeps_spatial"] is True
    wrapped = probes["Wrapped"]  # *args, **kwargs: ConvBlock's arguments are used
    assert wrapped["status"] == "ok" and wrapped["kwargs"] == {"in_channels": 16, "out_channels": 16}
    assert (report.probed_ok, report.needs_args, report.failed) == (6, 1, 2)


def test_probing_in_process_leaves_sys_path_alone(package: Path) -> None:
    from archsmith.tools.sandbox_inprocess import InProcessRunner

    report = mine([str(package / "blocks.py")])
    down = by_name(report.modules)["Down"]
    assert down.module == "tinypkg.blocks" and down.import_root == str(package.parent)
    before = list(sys.path)
    probe_records([down], InProcessRunner(), timeout_s=20)
    assert down.probe["status"] == "ok" and down.probe["stride"] == 2
    assert sys.path == before
    for name in [m for m in sys.modules if m.startswith("tinypkg")]:
        del sys.modules[name]


def test_mining_torch_nn_finds_the_usual_layers() -> None:
    report = mine(["torch.nn"])
    assert not report.skipped and report.files_parsed > 50
    found = {r.name: r for r in report.modules}
    conv = found["torch.nn.modules.conv.Conv2d"]
    assert conv.required_args == ["in_channels", "out_channels", "kernel_size"]
    assert {a.name: a.default for a in conv.init_args}["padding"] == "0"
    assert conv.bases == ["_ConvNd"] and found["torch.nn.modules.conv._ConvNd"].private
    assert conv.path == "torch/nn/modules/conv.py" and conv.version and conv.package == "torch.nn"
    batch_norm = found["torch.nn.modules.batchnorm.BatchNorm2d"]
    assert batch_norm.required_args == ["num_features"] and batch_norm.init_from == "torch.nn.modules.batchnorm._BatchNorm"
    assert found["torch.nn.modules.linear.Linear"].required_args == ["in_features", "out_features"]
    relu = found["torch.nn.modules.activation.ReLU"]
    assert [(a.name, a.default) for a in relu.init_args] == [("inplace", "False")] and not relu.required_args


def test_cli(package: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    library = str(tmp_path / "lib.sqlite")
    result = runner.invoke(modules_app, ["mine", str(package), "--library", library, "--no-probe"])
    assert result.exit_code == 0, result.output
    assert "modules found" in result.output and "10 added" in result.output and "broken.py" in result.output
    again = runner.invoke(modules_app, ["mine", str(package), "--library", library, "--no-probe"])
    assert "10 updated" in again.output

    listing = runner.invoke(modules_app, ["list", "--library", library, "--source", "tinypkg"])
    assert listing.exit_code == 0 and "tinypkg.blocks.ConvBlock" in listing.output and "not probed" in listing.output
    shown = runner.invoke(modules_app, ["show", "ConvBlock", "--library", library])
    assert shown.exit_code == 0, shown.output
    assert "in_channels: int" in shown.output and "tinypkg/blocks.py:6" in shown.output and "3x3 conv" in shown.output

    for args in (["mine", str(tmp_path / "nowhere.py"), "--library", library],
                 ["mine", "no_such_package_for_archsmith", "--library", library],
                 ["show", "NoSuchModule", "--library", library]):
        bad = runner.invoke(modules_app, args)
        assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1, bad.output


def test_cli_mines_and_probes(package: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    library = str(tmp_path / "lib.sqlite")
    result = runner.invoke(modules_app, ["mine", str(package), "--library", library, "--timeout", "20"])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.output.splitlines()
             if line.count("│") == 3}
    assert (lines["probed ok"], lines["need arguments"], lines["failed"]) == ("6", "1", "2")
    listing = runner.invoke(modules_app, ["list", "--library", library, "--ok-only"])
    row = next(line for line in listing.output.splitlines() if "blocks.Down" in line)
    assert "16->32" in row and " 2 " in row and "ok" in row
    assert "Broken" not in listing.output
