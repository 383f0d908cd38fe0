"""Scoring subnets with inherited weights (evaluator.name = "supernet") and training a supernet
(`archsmith supernet train`): BatchNorm recalibration, the sandbox task, the config, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from archsmith.graph.config import ConfigError, config_from_dict
from archsmith.graph.config_scoring import SupernetTrainingConfig
from archsmith.tools.datasets import load_dataset
from archsmith.tools.spaces import get_space
from archsmith.tools.supernets import OFAMobileNetV3
from archsmith.tools.supernets.calibration import recalibrate_batchnorm
from archsmith.tools.supernets.evaluate import evaluate_subnet_candidate
from archsmith.tools.supernets.training import CheckpointMismatch, extreme_archs, train_supernet

TINY = {"width_mult": 0.25, "kernel_sizes": [3, 5], "expand_ratios": [2, 4], "depths": [1, 2],
        "resolutions": [16, 32]}
DATA = {"name": "synthetic", "synthetic_samples": 128, "input_size": 32}


@pytest.fixture(scope="module")
def space():
    return get_space("ofa_mbv3", TINY)


@pytest.fixture(scope="module")
def checkpoint(space, tmp_path_factory) -> Path:
    """A tiny supernet with random weights (10 classes)."""
    torch.manual_seed(0)
    net = OFAMobileNetV3(space.settings.supernet_settings(10))
    path = tmp_path_factory.mktemp("supernet") / "tiny.pt"
    torch.save({"state_dict": net.state_dict()}, path)
    return path


def payload(space, checkpoint, text=None, **supernet):
    text = text or space.initial()[0]
    return {"space": "ofa_mbv3", "space_settings": TINY, "text": text, "data": DATA, "device": "cpu",
            "supernet": {"checkpoint": str(checkpoint), "calibration_images": 64, "batch_size": 32, **supernet}}


def test_recalibration_sets_the_average_of_per_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    model[1].running_mean.fill_(7.0)
    batches = [torch.randn(8, 3, 6, 6) * 2 + 1, torch.randn(4, 3, 6, 6)]
    weights_before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k}
    assert recalibrate_batchnorm(model, batches) == 12
    with torch.no_grad():
        features = [model[0](x) for x in batches]
        means = [f.mean(dim=(0, 2, 3)) for f in features]
        variances = [f.var(dim=(0, 2, 3), unbiased=False) for f in features]
    expected_mean = (means[0] * 8 + means[1] * 4) / 12
    expected_var = (variances[0] * 8 + variances[1] * 4) / 12
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(model[1].running_var, expected_var, atol=1e-5)
    # the second BN saw the first normalised with each batch's own statistics (OFA's protocol)
    with torch.no_grad():
        second = [model[3](torch.relu(nn.functional.batch_norm(f, m, v, model[1].weight, model[1].bias, False,
                                                               0.0, model[1].eps)))
                  for f, m, v in zip(features, means, variances)]
    expected = (second[0].mean(dim=(0, 2, 3)) * 8 + second[1].mean(dim=(0, 2, 3)) * 4) / 12
    assert torch.allclose(model[4].running_mean, expected, atol=1e-5)
    for key, value in weights_before.items():  # only the running statistics change
        assert torch.equal(model.state_dict()[key], value), key
    assert not model.training and "forward" not in vars(model[1])
    assert recalibrate_batchnorm(model, []) == 0  # nothing to see: nothing changes
    assert torch.allclose(model[1].running_mean, expected_mean, atol=1e-5)


def test_task_scores_a_subnet_with_recalibrated_statistics(space, checkpoint):
    result = evaluate_subnet_candidate(payload(space, checkpoint))
    assert result["ok"], result["error_message"]
    assert 0.0 <= result["score"] <= 100.0 and result["score"] == result["report"]["top1"]
    assert result["report"]["top1"] <= result["report"]["top5"]
    assert result["report"]["calibration_images"] == 64 and result["report"]["eval_images"] == 32
    assert result["settings"]["resolution"] == json.loads(space.initial()[0])["r"]
    kept = evaluate_subnet_candidate(payload(space, checkpoint, calibration_images=0))
    assert kept["ok"] and kept["report"]["calibration_images"] == 0


def test_task_failures_are_named(space, checkpoint, tmp_path):
    missing = evaluate_subnet_candidate(payload(space, tmp_path / "nope.pt"))
    assert not missing["ok"] and missing["stage"] == "checkpoint" and missing["error_type"] == "CheckpointError"
    assert "nope.pt: no such file" in missing["error_message"]
    other = get_space("ofa_mbv3", {**TINY, "width_mult": 0.5})
    wide = evaluate_subnet_candidate({**payload(other, checkpoint), "space_settings": {**TINY, "width_mult": 0.5}})
    assert wide["error_type"] == "CheckpointError" and "does not fit" in wide["error_message"]
    classes = evaluate_subnet_candidate({**payload(space, checkpoint), "data": {**DATA, "synthetic_classes": 4}})
    assert classes["error_type"] == "CheckpointError" and "10 outputs" in classes["error_message"]
    bad = evaluate_subnet_candidate(payload(space, checkpoint, text='{"ks": [9]}'))
    assert bad["error_type"] == "InvalidStructure" and bad["stage"] == "settings"


def test_candidates_are_checked_and_profiled_at_their_own_resolution(space):
    from archsmith.tools.tasks import check_candidate

    small = space.canonical(json.dumps({**json.loads(space.initial()[0]), "r": 16}))
    large = space.canonical(json.dumps({**json.loads(small), "r": 32}))
    results = [check_candidate({"space": "ofa_mbv3", "space_settings": TINY, "text": text, "num_classes": 10,
                                "input_size": 224}) for text in (small, large)]
    assert [r["input_size"] for r in results] == [[16, 16], [32, 32]]
    assert results[0]["params"] == results[1]["params"] and results[0]["flops"] < results[1]["flops"]


def config(tmp_path, checkpoint, **supernet):
    return {
        "name": "sn", "runs_dir": str(tmp_path / "runs"),
        "space": {"name": "ofa_mbv3", "settings": TINY},
        "budget": {"params_m": 1.0, "input_size": 32, "num_classes": 10},
        "evaluator": {"name": "supernet", "supernet": {"checkpoint": str(checkpoint), "data": DATA,
                                                      "calibration_images": 32, "batch_size": 32, **supernet}},
        "search": {"max_candidates": 4, "children_per_generation": 2},
        "parallel": {"workers": 1}, "sandbox": {"mode": "inprocess"},
    }


def test_config_needs_the_section_and_a_fitting_checkpoint(tmp_path, checkpoint):
    import archsmith

    with pytest.raises(ConfigError, match=r"evaluator.name = 'supernet' needs \[evaluator.supernet\]"):
        config_from_dict({"evaluator": {"name": "supernet"}})
    with pytest.raises(ConfigError, match="evaluator.supernet.checkpoint: .*missing.pt does not exist"):
        archsmith.run(config_from_dict(config(tmp_path, tmp_path / "missing.pt")))
    assert not (tmp_path / "runs").exists()  # refused before any file of the run
    template = config(tmp_path, checkpoint)
    template["space"] = {"name": "template"}
    with pytest.raises(ConfigError, match="needs a supernet space .* space.name is 'template'"):
        archsmith.run(config_from_dict(template))
    wrong = config(tmp_path, checkpoint)
    wrong["space"]["settings"] = {**TINY, "depths": [1, 2, 3]}
    with pytest.raises(ConfigError, match="does not fit the ofa_mbv3 supernet"):
        archsmith.run(config_from_dict(wrong))


def test_a_search_scores_subnets_with_inherited_weights(tmp_path, checkpoint):
    import archsmith

    result = archsmith.run(config_from_dict(config(tmp_path, checkpoint)))
    valid = [r for r in result.history if r["status"] == "valid"]
    assert result.finished and valid
    assert all(0.0 <= r["score"] <= 100.0 and r["metrics"]["top1"] == r["score"] for r in valid)
    assert all("top5" in r["metrics"] and r["metrics"]["calibration_images"] == 32 for r in valid)
    assert len(list(result.run_dir.glob("supernet-images-*.pt"))) == 1  # prepared once for every task


def small_training(**overrides):
    return SupernetTrainingConfig(**{"epochs": 2, "batch_size": 32, "train_images": 64, "lr": 0.05,
                                     "random_subnets": 1, **overrides})


def test_training_resumes_to_the_same_weights(space, tmp_path):
    data = load_dataset(DATA)
    straight = train_supernet(space, data, tmp_path / "straight.pt", small_training())
    assert straight.epochs_done == 2 and [row["epoch"] for row in straight.history] == [1, 2]
    def interrupt(step, total, loss):  # stopped in the second epoch, after the first was saved
        if step > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(space, data, tmp_path / "resumed.pt", small_training(), on_step=interrupt)
    resumed = train_supernet(space, data, tmp_path / "resumed.pt", small_training())
    assert resumed.resumed_from == 1 and len(resumed.history) == 2
    a = torch.load(tmp_path / "straight.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    # the official format: a bare OFAMobileNetV3 loads the state dict strictly
    OFAMobileNetV3(space.settings.supernet_settings(10)).load_state_dict(a, strict=True)
    with pytest.raises(CheckpointMismatch, match="sampling: 'sandwich' there, 'uniform' now"):
        train_supernet(space, data, tmp_path / "straight.pt", small_training(sampling="uniform"))
    torch.save({"state_dict": a}, tmp_path / "published.pt")
    with pytest.raises(CheckpointMismatch, match="did not train"):
        train_supernet(space, data, tmp_path / "published.pt", small_training())


def test_uniform_sampling_trains_every_choice(space, tmp_path):
    """SPOS's rule: one random subnet per step; the largest and smallest are not forced."""
    data = load_dataset(DATA)
    before = OFAMobileNetV3(space.settings.supernet_settings(10))
    before.load_state_dict(OFAMobileNetV3(space.settings.supernet_settings(10)).state_dict())
    result = train_supernet(space, data, tmp_path / "u.pt", small_training(sampling="uniform", epochs=1))
    assert result.epochs_done == 1 and result.history[0]["loss"] > 0
    largest, smallest = extreme_archs(space.supernet_settings, 32)
    assert largest.d == (2,) * 5 and smallest.d == (1,) * 5


def test_spos_supernet_trains_with_uniform_sampling_only(tmp_path):
    space = get_space("spos_shufflenet", {"input_size": 32})
    data = load_dataset({**DATA, "synthetic_samples": 16})
    with pytest.raises(CheckpointMismatch, match="use sampling = 'uniform'"):
        train_supernet(space, data, tmp_path / "spos.pt", small_training(epochs=1))
    result = train_supernet(space, data, tmp_path / "spos.pt",
                            small_training(epochs=1, sampling="uniform", train_images=16, batch_size=16))
    assert result.epochs_done == 1 and result.history[0]["train_acc"] >= 0
    from archsmith.tools.supernets import SPOSShuffleNetV2

    state = torch.load(tmp_path / "spos.pt", weights_only=True)["state_dict"]
    SPOSShuffleNetV2(space.supernet_settings.__class__(n_classes=10)).load_state_dict(state, strict=True)


def test_supernet_train_command_then_run(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from archsmith.graph.cli import app

    monkeypatch.chdir(tmp_path)
    data = config(tmp_path, "supernets/tiny.pt")
    data["evaluator"]["supernet"]["training"] = {"epochs": 1, "batch_size": 32, "train_images": 64}
    toml = tmp_path / "sn.toml"
    import tomli_w

    toml.write_text(tomli_w.dumps(data))
    runner = CliRunner()
    trained = runner.invoke(app, ["supernet", "train", str(toml)])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "supernets" / "tiny.pt").is_file() and "next: archsmith run" in trained.output
    again = runner.invoke(app, ["supernet", "train", str(toml)])
    assert again.exit_code == 0 and "already trained: 1 epochs" in again.output
    other = runner.invoke(app, ["supernet", "train", str(toml), "--set", "space.settings.width_mult=0.5"])
    assert other.exit_code == 2 and "trained with other settings" in other.output
    ran = runner.invoke(app, ["run", str(toml)])
    assert ran.exit_code == 0, ran.output


def test_several_arch_dicts_are_read_from_one_answer(space):
    from archsmith.agents.answers import AnswerError, extract_candidates

    rng = __import__("random").Random(1)
    archs = [space.sample(rng) for _ in range(3)]
    bad = json.dumps({**json.loads(archs[0]), "r": 99})
    answer = (f"Here are four:\n```json\n[{archs[0]}, {bad},\n {archs[1]}]\n```\nand one more:\n"
              f"```\n{archs[2]}\n```\nand again {archs[1]}")
    texts = extract_candidates(answer, space)
    assert [json.loads(t) for t in texts[:3]] == [json.loads(a) for a in archs]
    assert texts[3] == bad and not space.validate(bad).ok  # kept (after the valid ones), for the record
    assert extract_candidates(f"just prose then {archs[2]}", space) == [archs[2]]
    with pytest.raises(AnswerError):
        extract_candidates("no architecture here", space)


def test_the_llm_generator_writes_several_subnets_in_one_answer(tmp_path):
    """roles.generator.proposals_in_one_answer: one request, several arch dicts, each checked on its
    own; the Navigator's score model keeps the one it predicts best (CoLLM-NAS's Generator)."""
    import random

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    import archsmith
    from archsmith.graph.trace import read_steps

    space = get_space("ofa_mbv3", TINY)
    draw = random.Random(0)
    answers = ["\n".join(f"```json\n{space.sample(draw)}\n```" for _ in range(4)) for _ in range(60)]
    data = {
        "name": "llm-sn", "runs_dir": str(tmp_path / "runs"), "seed": 0,
        "space": {"name": "ofa_mbv3", "settings": TINY},
        "budget": {"params_m": None, "input_size": 32, "num_classes": 10},
        "evaluator": {"preset": "custom", "batch_size": 4, "repeats": 1},
        "search": {"max_candidates": 10, "children_per_generation": 2, "top_k": 2},
        "parallel": {"workers": 1}, "sandbox": {"mode": "inprocess"},
        "workflow": {"min_layers": 1},
        "roles": {"generator": {"policy": "llm", "proposals": 4, "proposals_in_one_answer": True}},
    }
    result = archsmith.run(config_from_dict(data), chat_models={"generator": FakeListChatModel(responses=answers)})
    assert result.finished
    steps = [s for s in read_steps(result.run_dir / "trace.sqlite", role="generator") if "answer_children" in s.tools]
    assert steps and all(s.tools["answer_children"] == 4 and len(s.answers) == 1 for s in steps)
    assert all(any("Answer with 4 different children" in p.text for p in s.prompts) for s in steps)
    ranked = [s for s in steps if all(p["predicted"] is not None for p in s.tools["proposals"])]
    assert ranked  # after the warm start the score model ranks them
    for step in ranked:
        chosen = next(p for p in step.tools["proposals"] if p["chosen"])
        assert chosen["predicted"] == max(p["predicted"] for p in step.tools["proposals"])
        assert step.parsed == chosen["text"]


def test_imagefolder_images_are_prepared_once_decoding_only_what_is_used(tmp_path, monkeypatch):
    from PIL import Image

    import archsmith.tools.datasets as datasets
    from archsmith.graph.context import prepare_supernet_images
    from archsmith.tools.supernets.eval_data import load_eval_images

    for split, count in (("train", 20), ("val", 3)):
        for name, colour in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            for i in range(count):
                (tmp_path / "f" / split / name).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (12, 12), colour).save(tmp_path / "f" / split / name / f"{i}.png")
    decoded = []
    real = datasets.read_images
    monkeypatch.setattr(datasets, "read_images", lambda files, size: decoded.append(len(files)) or real(files, size))
    folder = {"name": "imagefolder", "path": str(tmp_path / "f"), "input_size": 8}
    cfg = config_from_dict(config(tmp_path, tmp_path / "unused.pt", data=folder, calibration_images=5,
                                  normalization="bgr255"))
    path = prepare_supernet_images(cfg, tmp_path)
    assert decoded == [5, 6]  # five training images for BatchNorm, the six validation images; no more
    assert prepare_supernet_images(cfg, tmp_path) == path and decoded == [5, 6]  # kept: not prepared again
    images = load_eval_images(path)
    assert images.calibration_x.shape == (5, 3, 8, 8) and images.eval_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert images.bgr and images.num_classes == 2
    from archsmith.tools.supernets.evaluate import subnet_batches

    batch = next(subnet_batches(images.eval_x, 8, 6, images.mean, images.std, 1.0, "cpu", images.bgr))
    assert torch.allclose(batch[0, :, 0, 0], torch.tensor([10.0, 10.0, 200.0]), atol=1e-3)  # red cat, BGR, 0-255


@pytest.mark.parametrize("name, settings", [("ofa_mbv3", TINY), ("spos_shufflenet", {"input_size": 32})])
def test_the_downscaler_brings_over_budget_subnets_within_budget(tmp_path, name, settings):
    """Seeds far over the params budget: the Downscaler shrinks them (smaller kernels, expand ratios,
    depths / cheaper units) until they fit, and every valid candidate is within the budget."""
    import archsmith

    space = get_space(name, settings)
    sizes = sorted(space.param_count(space.sample(__import__("random").Random(i)), 10) for i in range(40))
    limit = sizes[len(sizes) // 4] / 1e6  # a quarter of random subnets fit
    largest = max((space.sample(__import__("random").Random(i)) for i in range(40)),
                  key=lambda text: space.param_count(text, 10))
    data = {
        "name": "shrink", "runs_dir": str(tmp_path / "runs"), "seed": 0,
        "space": {"name": name, "settings": {**settings, "initial": [largest]}},
        "budget": {"params_m": limit, "input_size": 32, "num_classes": 10},
        "evaluator": {"preset": "custom", "batch_size": 4, "repeats": 1},
        "search": {"max_candidates": 6, "children_per_generation": 2, "warm_start": "random",
                   "strategy": "evolution"},  # the model strategy drops over-budget proposals before they are built
        "parallel": {"workers": 1}, "sandbox": {"mode": "inprocess"}, "workflow": {"min_layers": 1},
    }
    result = archsmith.run(config_from_dict(data))
    valid = [r for r in result.history if r["status"] == "valid"]
    assert valid and all(r["params"] <= limit * 1e6 for r in valid)
    assert any(r.get("downscale_repairs") for r in valid), [(r["id"], r["status"], r.get("discard_reason"))
                                                          for r in result.history]
