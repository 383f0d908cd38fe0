"""The YOLOv8 detection space: YAML checks, normal form, mutation, shrink, repair, build."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from archsmith.tools.spaces import SearchSpace, SpaceError, check_task, get_space
from archsmith.tools.spaces.yolo import YOLOV8_ROWS, YoloSpace, base_yaml

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The smallest valid detector: five stride-2 convolutions, Detect on the last three.
TINY = """\
nc: 2
depth_multiple: 0.33
width_multiple: 0.25
backbone:
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 1, Conv, [256, 3, 2]]
  - [-1, 1, Conv, [512, 3, 2]]
  - [-1, 1, Conv, [1024, 3, 2]]
head:
  - [[2, 3, 4], 1, Detect, [nc]]
"""


@pytest.fixture(scope="module")
def star() -> YoloSpace:
    return YoloSpace({"base": "yolov8n", "mode": "yolov8*"})


@pytest.fixture(scope="module")
def plus() -> YoloSpace:
    return YoloSpace({"base": "yolov8n", "mode": "yolov8+"})


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_registered_and_settings() -> None:
    space = get_space("yolo", {"base": "yolov8s", "mode": "yolov8*", "nc": 3})
    assert isinstance(space, SearchSpace)
    assert space.settings.base == "yolov8s" and "nc: 3" in space.initial()[0]
    assert space.validate(space.initial()[0]).ok
    for bad in ({"base": "yolov8m"}, {"mode": "v8"}, {"imgsz": 100}, {"scale": "n"}):
        with pytest.raises(SpaceError, match="space.settings"):
            get_space("yolo", bad)
    assert "insert_psa" in space.operators() and "insert_psa" not in get_space("yolo").operators()
    assert check_task(space) == "archsmith.tools.detection_tasks:check_detection_candidate"


def test_import_needs_neither_torch_nor_ultralytics() -> None:
    code = (
        "import sys, random; sys.modules['ultralytics'] = None\n"
        "from archsmith.tools.spaces import get_space\n"
        "space = get_space('yolo', {'mode': 'yolov8*'}); text = space.initial()[0]\n"
        "assert space.validate(space.mutate(text, random.Random(0)).child).ok\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "try:\n    space.build(text, 3)\nexcept ImportError as error:\n    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert "pip install 'archsmith[detection]'" in done.stdout


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("[[-1, 6], 1, Concat", "[[-1, 13], 1, Concat", "head layer 11 (Concat): from 13 points forward"),
        ("[[-1, 6], 1, Concat", "[[-1, 11], 1, Concat", "from 11 points at the layer itself"),
        ("- [-1, 1, Conv, [64, 3, 2]]", "- [-2, 1, Conv, [64, 3, 2]]", "first layer must take the image"),
        ("[-1, 1, SPPF, [1024, 5]]", "[-12, 1, SPPF, [1024, 5]]", "from -12 points before the first layer"),
        ("depth_multiple: 0.33\n", "", "missing scale multiples: depth_multiple"),
        ("[-1, 1, SPPF, [1024, 5]]", "[-1, 1, SPPELAN, [1024, 5]]", "backbone layer 9 (SPPELAN): unknown module"),
        ("[-1, 1, SPPF, [1024, 5]]", "[-1, 1, PSA, [1024]]", "'PSA' (only in mode yolov8*)"),
        ("[[15, 18, 21], 1, Detect", "[[15, 18, 12], 1, Detect",
         "Detect inputs [15, 18, 12] have strides [8, 16, 16]; expected P3/P4/P5 = 8, 16, 32"),
        ("[[-1, 4], 1, Concat", "[[-1, 6], 1, Concat", "have strides [8, 16]; they must be equal"),
        ("[-1, 1, Conv, [256, 3, 2]] # 3", "[-1, 1, Conv, [256, 4, 2]] # 3", "kernel 4 not in 1, 3, 5, 7"),
        ("[-1, 1, Conv, [256, 3, 2]] # 3", "[-1, 2, Conv, [256, 3, 2]] # 3", "only C2f repeats"),
        ("[-1, 3, C2f, [128, True]]", "[-1, 3, C2f, [128, yes please]]", "shortcut 'yes please' must be True or False"),
        ("[-1, 1, Conv, [1024, 3, 2]] # 7-P5/32", "[-1, 1, Conv, [1024, 3, 2]]\n  - [-1, 1, Conv, [1024, 3, 2]]",
         "stride 64 > 32"),
        ("nc: 80", "nc: 80\nactivation: nn.ReLU()", "unknown top-level keys activation"),
        ("- [-1, 1, Conv, [64, 3, 2]] # 0-P1/2", "- [-1, 1, Conv, [64, 3, 2] # 0-P1/2", "YAML does not parse (line"),
    ],
)
def test_validation_issues_name_the_layer(plus: YoloSpace, old: str, new: str, words: str) -> None:
    validation = plus.validate(_edit(base_yaml("yolov8n"), old, new))
    assert not validation.ok
    assert words in validation.summary()


def test_more_validation_rules(star: YoloSpace) -> None:
    assert star.validate(TINY).ok
    assert "Detect must be the last layer" in star.validate(TINY + "  - [-1, 1, Conv, [64, 3, 1]]\n").summary()
    assert "must end with a Detect layer" in star.validate(_edit(TINY, "[[2, 3, 4], 1, Detect, [nc]]", "[-1, 1, Conv, [8]]")).summary()
    psa = _edit(base_yaml("yolov8n"), "[-1, 1, SPPF, [1024, 5]] # 9", "[-1, 1, SPPF, [1024, 5]]\n  - [-1, 1, PSA, [512]]")
    assert "PSA keeps its channels: 256 in, 128 out" in star.validate(psa).summary()
    assert "scales has 2 entries" in star.validate(
        _edit(base_yaml("yolov8n"), "depth_multiple: 0.33\nwidth_multiple: 0.25\nmax_channels: 1024",
              "scales:\n  n: [0.33, 0.25, 1024]\n  s: [0.33, 0.5, 1024]")).summary()
    assert not star.validate("").ok and not star.validate("- just a list").ok


def test_canonical_form(star: YoloSpace) -> None:
    text = star.initial()[0]
    stock = "nc: 80\nscales:\n  n: [0.33, 0.25, 1024]\n  s: [0.33, 0.50, 1024]\nscale: n\n" + YOLOV8_ROWS
    assert star.canonical(stock) == text
    absolute = _edit(_edit(stock, "[[-1, 6], 1, Concat", "[[10, 6], 1, Concat"), "[-1, 3, C2f, [512]] # 12", "[11, 3, C2f, [512, False]]")
    assert star.canonical(absolute) == text
    capped = _edit(stock, "[-1, 1, SPPF, [1024, 5]]", "[-1, 1, SPPF, [4096]]")  # max_channels caps, k defaults to 5
    assert star.canonical(capped) == text
    assert star.canonical(text) == text and "# 22: Detect(P3, P4, P5)" in text
    assert star.canonical(base_yaml("yolov8s")) != text


def test_symbolic_params_and_depth(star: YoloSpace) -> None:
    assert star.param_count(star.initial()[0]) == 3_157_200  # ultralytics' YOLOv8n summary
    assert YoloSpace({"base": "yolov8s"}).param_count(base_yaml("yolov8s")) == 11_166_560
    assert star.depth(star.initial()[0]) == 63
    assert star.depth("nonsense: [") is None
    assert 8.5e9 < star.conv_flops(star.initial()[0]) < 8.9e9


@pytest.mark.parametrize("operator", YoloSpace({"mode": "yolov8*"}).operators())
def test_every_operator_keeps_a_valid_model(star: YoloSpace, operator: str) -> None:
    parent = star.initial()[0]
    for seed in range(6):
        mutation = star.mutate(parent, random.Random(seed), operator)
        assert mutation.operator == operator and mutation.description.startswith(operator)
        assert star.validate(mutation.child).ok, mutation.description
        assert star.canonical(mutation.child) == mutation.child != parent


def test_random_mutation_chains_stay_valid(star: YoloSpace) -> None:
    for chain in range(10):
        rng, text = random.Random(chain), star.initial()[0]
        for _ in range(6):
            text = star.mutate(text, rng).child
            assert star.validate(text).ok


def test_operator_that_does_not_apply(star: YoloSpace, plus: YoloSpace) -> None:
    with pytest.raises(ValueError, match="operator repeat_block does not apply: nothing to edit"):
        star.mutate(TINY, random.Random(0), "repeat_block")
    with pytest.raises(ValueError, match="unknown operator 'insert_psa' for mode yolov8\\+"):
        plus.mutate(plus.initial()[0], random.Random(0), "insert_psa")
    with pytest.raises(ValueError, match="invalid model YAML"):
        star.mutate("nc: 1", random.Random(0))
    assert star.validate(star.mutate(TINY, random.Random(0)).child).ok  # another operator applies


def test_shrink_reduces_params(star: YoloSpace) -> None:
    text = star.initial()[0]
    for seed, factor in ((0, 0.7), (1, 0.5), (2, 0.9)):
        child = star.shrink(text, factor, random.Random(seed))
        assert star.validate(child.child).ok
        before, after = star.param_count(text), star.param_count(child.child)
        assert 0.6 * factor * before < after <= factor * before, child.description
        assert star.conv_flops(child.child) < star.conv_flops(text)
    with pytest.raises(ValueError, match="shrink factor"):
        star.shrink(text, 1.5, random.Random(0))


def test_repair(star: YoloSpace) -> None:
    text = star.initial()[0]
    fenced = "```yaml\n" + base_yaml("yolov8n").replace("nn.Upsample", "Upsample").replace("[nc]]", "[80]]") + "```\n"
    assert star.repair(fenced, "invalid") == text
    no_scale = base_yaml("yolov8n").replace("depth_multiple: 0.33\nwidth_multiple: 0.25\n", "")
    assert star.repair(no_scale, "missing scale multiples") == text
    psa = _edit(base_yaml("yolov8n"), "[-1, 1, SPPF, [1024, 5]] # 9", "[-1, 1, SPPF, [1024, 5]]\n  - [-1, 2, psa, [512]]")
    repaired = star.repair(psa, "PSA keeps its channels")
    assert repaired is not None and "[-1, 1, PSA, [1024]]" in repaired
    forward = _edit(base_yaml("yolov8n"), "[[-1, 6], 1, Concat", "[[-1, 13], 1, Concat")
    assert star.repair(forward, "points forward") is None
    assert star.repair("{{{", "syntax") is None


def test_describe(star: YoloSpace, plus: YoloSpace) -> None:
    assert "PSA" in star.describe() and "PSA" not in plus.describe()
    assert "Detect" in plus.describe() and "max_channels" in plus.describe()


def test_mutated_models_build_with_matching_params(star: YoloSpace, ultralytics_env) -> None:
    import torch

    for operator in star.operators():
        child = star.mutate(star.initial()[0], random.Random(1), operator).child
        model = star.build(child, 3)
        assert sum(p.numel() for p in model.parameters()) == star.param_count(child, 3), operator
        out = model.train()(torch.randn(2, 3, 64, 64))
        assert out["scores"].shape == (2, 3, 84), operator


def _stock_yolov8_yaml() -> str:
    """Ultralytics' own cfg/models/v8/yolov8.yaml (five scales, no scale:), read without importing
    ultralytics; where it is not installed, the same table written out."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("ultralytics")
    if spec is not None and spec.submodule_search_locations:
        stock = Path(spec.submodule_search_locations[0]) / "cfg" / "models" / "v8" / "yolov8.yaml"
        if stock.is_file():
            return stock.read_text("utf-8")
    scales = "".join(f"  {k}: [{d}, {w}, {c}]\n" for k, (d, w, c) in {
        "n": (0.33, 0.25, 1024), "s": (0.33, 0.50, 1024), "m": (0.67, 0.75, 768), "l": (1.00, 1.00, 512),
        "x": (1.00, 1.25, 512)}.items())
    return f"nc: 80\nscales:\n{scales}{YOLOV8_ROWS}"


def test_the_scale_comes_from_the_file_name_as_in_ultralytics(star: YoloSpace, tmp_path) -> None:
    from archsmith.graph.check import load_candidate
    from archsmith.tools.spaces.yolo import guess_model_scale, with_scale_from_name

    assert [guess_model_scale(name) for name in ("yolov8n.yaml", "/m/yolov8x.yaml", "yolov8.yaml", "yolo11s.yaml",
                                                 "yolov8n-p6.yaml", "model.yaml")] == ["n", "x", "", "s", "n", ""]
    stock = _stock_yolov8_yaml()
    assert "scales has 5 entries" in star.validate(stock).summary() and "yolov8n.yaml" in star.validate(stock).summary()
    figures = {"n": 3_157_200, "s": 11_166_560}  # ultralytics' model.info() for YOLOv8n/s
    for scale, params in figures.items():
        path = tmp_path / f"yolov8{scale}.yaml"
        path.write_text(stock, "utf-8")
        given = load_candidate(str(path))
        assert given.space == "yolo" and f"scale {scale} from its name" in given.why
        assert star.validate(given.text).ok, star.validate(given.text).summary()
        assert star.param_count(given.text) == params
    unnamed = tmp_path / "yolov8.yaml"
    unnamed.write_text(stock, "utf-8")
    assert not star.validate(load_candidate(str(unnamed)).text).ok  # no scale in the name: say which to add
    explicit = "scale: s\n" + stock
    assert with_scale_from_name(explicit, "yolov8n.yaml") == explicit  # a written scale wins
    flow = '{"nc": 80, "scales": {"n": [0.33, 0.25, 1024]}, "backbone": [], "head": []}'
    assert "scale: n" in with_scale_from_name(flow.replace("}, \"backbone", ', "s": [0.33, 0.5, 1024]}, "backbone'),
                                              "yolov8n.yaml")


@pytest.mark.slow
def test_check_of_the_stock_yolov8n_yaml(ultralytics_env, tmp_path) -> None:
    from typer.testing import CliRunner

    from archsmith.graph.cli import app

    path = tmp_path / "yolov8n.yaml"
    path.write_text(_stock_yolov8_yaml(), "utf-8")
    result = CliRunner(env={"COLUMNS": "120"}).invoke(app, ["check", str(path), "--set", "evaluator.nas_det.input_size=64"])
    assert result.exit_code == 0, result.output
    assert "3,157,200" in result.output and "8,855,091,200" in result.output  # ultralytics' YOLOv8n figures
