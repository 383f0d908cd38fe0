"""Loading image data sets from tiny fake files, the splits, and the errors' messages."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from archsmith.tools.datasets import DataError, DatasetSpec, load_dataset


def images(count: int, side: int, seed: int) -> np.ndarray:
    """Rows of ``3 * side * side`` uint8 values, channel-major, as CIFAR and ImageNet16 store them."""
    return np.random.default_rng(seed).integers(0, 256, (count, 3 * side * side), dtype=np.uint8)


def dump(path: Path, entry: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry, protocol=2))


def fake_cifar10(root: Path, per_batch: int = 20, bytes_keys: bool = True) -> Path:
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    for index in range(1, 6):
        labels = [(i + index) % 10 for i in range(per_batch)]
        dump(root / f"data_batch_{index}", {key("data"): images(per_batch, 32, index), key("labels"): labels})
    dump(root / "test_batch", {key("data"): images(10, 32, 9), key("labels"): list(range(10))})
    dump(root / "batches.meta", {key("label_names"): [f"c{i}" for i in range(10)]})
    return root


def fake_imagenet16(root: Path, per_file: int = 30) -> Path:
    for index in range(1, 11):
        labels = [1 + (i * 7 + index) % 130 for i in range(per_file)]  # 1-based; some above 120
        dump(root / f"train_data_batch_{index}", {"data": images(per_file, 16, index), "labels": labels})
    dump(root / "val_data", {"data": images(40, 16, 11), "labels": [118 + i % 4 for i in range(40)]})
    return root


def test_cifar10_splits_layout_and_pixels(tmp_path):
    root = fake_cifar10(tmp_path / "c10")
    data = load_dataset(DatasetSpec(name="cifar10", path=str(root)))
    assert data.summary() == {"name": "cifar10", "num_classes": 10, "input_size": [32, 32],
                              "train": 50, "valid": 50, "test": 10}  # NB201's cifar10-valid: half held out
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert tuple(data.train_x.shape) == (50, 3, 32, 32)
    row = images(10, 32, 9)[3]  # channel-major: R plane, G plane, B plane
    assert data.test_x[3, 1, 2, 5] == row[32 * 32 + 2 * 32 + 5] and data.test_y[3] == 3
    assert data.mean[0] == pytest.approx(125.3 / 255)  # NAS-Bench-201's normalisation
    # train + valid are exactly the 100 training images, seeded: same seed, same split
    both = torch.cat([data.train_y, data.valid_y]).sort().values
    assert torch.equal(both, torch.tensor(sorted((i + b) % 10 for b in range(1, 6) for i in range(20))))
    again = load_dataset({"name": "cifar10", "path": str(root)})
    assert torch.equal(again.valid_x, data.valid_x)
    other = load_dataset({"name": "cifar10", "path": str(root), "seed": 1, "valid_fraction": 0.2})
    assert len(other.valid_y) == 20 and not torch.equal(other.train_x[:40], data.train_x[:40])


def test_cifar10_subfolder_str_keys_and_resize(tmp_path):
    fake_cifar10(tmp_path / "c10" / "cifar-10-batches-py", bytes_keys=False)
    data = load_dataset({"name": "cifar10", "path": str(tmp_path / "c10"), "input_size": 16, "valid_fraction": 0.0})
    assert tuple(data.train_x.shape) == (100, 3, 16, 16) and len(data.valid_y) == 0
    assert data.valid_x.shape[1:] == (3, 16, 16) and data.test_x.dtype == torch.uint8


BROKEN = {
    "missing batch": (
        lambda root: os.remove(root / "data_batch_3"),
        "missing data_batch_3 (expected the python-pickle files data_batch_1..5, test_batch)",
    ),
    "not a pickle": (lambda root: (root / "test_batch").write_bytes(b"junk"), "test_batch: not a readable pickle"),
    "not a dict": (lambda root: dump(root / "data_batch_2", [1, 2]), "data_batch_2: expected a pickled dict, got list"),
    "no labels": (lambda root: dump(root / "data_batch_1", {"data": images(4, 32, 0)}), "missing key(s) labels"),
    "wrong size": (
        lambda root: dump(root / "data_batch_1", {"data": images(4, 16, 0), "labels": [0] * 4}),
        "'data' has shape (4, 768)",
    ),
    "bad label": (
        lambda root: dump(root / "data_batch_1", {"data": images(2, 32, 0), "labels": [0, 12]}),
        "labels outside 0..9",
    ),
    "float pixels": (
        lambda root: dump(root / "data_batch_1", {"data": images(2, 32, 0) / 255.0, "labels": [0, 1]}),
        "'data' must hold 8-bit pixels (0..255), got float64",
    ),
    "code": (lambda root: dump(root / "data_batch_1", {"data": os.system}), "refusing to load posix.system"),
}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_cifar10_errors_name_the_path_and_the_problem(tmp_path, broken):
    damage, message = BROKEN[broken]
    root = fake_cifar10(tmp_path / "c10", per_batch=4)
    damage(root)
    with pytest.raises(DataError) as caught:
        load_dataset({"name": "cifar10", "path": str(root)})
    assert message in str(caught.value) and str(root) in str(caught.value)


def test_missing_directory_is_a_clear_error_and_never_a_download(tmp_path):
    for name in ("cifar10", "cifar100"):
        with pytest.raises(DataError, match=r"not found .*; set download = true in the data settings "
                                            r"\(\[evaluator.train.data\] download = true\) to fetch it"):
            load_dataset({"name": name, "path": str(tmp_path / "absent")})
    with pytest.raises(DataError, match=r"not found .*nothing is downloaded"):
        load_dataset({"name": "imagenet16-120", "path": str(tmp_path / "absent")})
    with pytest.raises(DataError, match="fetches it when `archsmith run` starts, not inside a task"):
        load_dataset({"name": "cifar10", "path": str(tmp_path / "absent"), "download": True})  # loading never fetches
    with pytest.raises(DataError, match="missing train/"):
        load_dataset({"name": "imagefolder", "path": str(tmp_path)})


def test_cifar100_takes_valid_and_test_from_the_test_file(tmp_path):
    root = tmp_path / "cifar-100-python"
    dump(root / "train", {b"data": images(30, 32, 1), b"fine_labels": list(range(30)), b"coarse_labels": [0] * 30})
    dump(root / "test", {b"data": images(20, 32, 2), b"fine_labels": list(range(50, 70))})
    data = load_dataset({"name": "cifar100", "path": str(tmp_path)})
    assert (data.num_classes, len(data.train_y), len(data.valid_y), len(data.test_y)) == (100, 30, 10, 10)
    assert sorted(torch.cat([data.valid_y, data.test_y]).tolist()) == list(range(50, 70))
    dump(root / "test", {b"data": images(20, 32, 2), b"labels": [0] * 20})
    with pytest.raises(DataError, match="missing key.*fine_labels"):
        load_dataset({"name": "cifar100", "path": str(tmp_path)})


def test_imagenet16_keeps_120_classes_zero_based(tmp_path):
    root = fake_imagenet16(tmp_path / "im16")
    data = load_dataset({"name": "imagenet16-120", "path": str(root)})
    kept = sum(1 + (i * 7 + b) % 130 <= 120 for b in range(1, 11) for i in range(30))
    assert data.num_classes == 120 and len(data.train_y) == kept
    assert int(data.train_y.min()) >= 0 and int(data.train_y.max()) <= 119
    assert tuple(data.train_x.shape[1:]) == (3, 16, 16)
    assert len(data.valid_y) == len(data.test_y) == 15  # 30 of the 40 val images are in 1..120: halves
    assert set(torch.cat([data.valid_y, data.test_y]).tolist()) == {117, 118, 119}
    os.remove(root / "train_data_batch_7")
    with pytest.raises(DataError, match=r"missing train_data_batch_7 \(expected the downsampled-ImageNet"):
        load_dataset({"name": "imagenet16-120", "path": str(root)})


def write_png(path: Path, colour: tuple[int, int, int], size: int = 12) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def test_imagefolder_with_and_without_val(tmp_path):
    pytest.importorskip("PIL")
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        for name, colour in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            for i in range(count):
                write_png(tmp_path / "f" / split / name / f"{i}.png", colour)
    data = load_dataset({"name": "imagefolder", "path": str(tmp_path / "f"), "input_size": 8})
    assert data.summary() == {"name": "imagefolder", "num_classes": 2, "input_size": [8, 8],
                              "train": 12, "valid": 4, "test": 4}
    assert data.train_x[data.train_y == 0][:, 0].float().mean() > 150  # "cat" is class 0 and red
    with pytest.raises(DataError, match="has val/, so data.valid_fraction does not apply"):
        load_dataset({"name": "imagefolder", "path": str(tmp_path / "f"), "valid_fraction": 0.5})
    for split in ("val", "test"):
        for file in (tmp_path / "f" / split).rglob("*.png"):
            file.unlink()
    (tmp_path / "f" / "val").rename(tmp_path / "f" / "unused")
    split = load_dataset({"name": "imagefolder", "path": str(tmp_path / "f"), "valid_fraction": 0.25})
    assert (len(split.train_y), len(split.valid_y), len(split.test_y)) == (9, 3, 0)
    assert split.input_size == (12, 12)  # native size when all images share it


def test_imagefolder_errors(tmp_path):
    pytest.importorskip("PIL")
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty: no images found under train/<class>/"):
        load_dataset({"name": "imagefolder", "path": str(tmp_path / "empty")})
    write_png(tmp_path / "mixed" / "train" / "a" / "0.png", (1, 2, 3), size=8)
    write_png(tmp_path / "mixed" / "train" / "a" / "1.png", (1, 2, 3), size=10)
    with pytest.raises(DataError, match="images of different sizes.*set data.input_size"):
        load_dataset({"name": "imagefolder", "path": str(tmp_path / "mixed")})
    (tmp_path / "mixed" / "train" / "a" / "2.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"2.png: unreadable"):
        load_dataset({"name": "imagefolder", "path": str(tmp_path / "mixed"), "input_size": 8})


def test_synthetic_is_deterministic_and_balanced():
    spec = {"name": "synthetic", "synthetic_samples": 200, "synthetic_classes": 4, "input_size": 16}
    a, b = load_dataset(spec), load_dataset(spec)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.summary() == {"name": "synthetic", "num_classes": 4, "input_size": [16, 16],
                           "train": 200, "valid": 50, "test": 50}
    assert torch.bincount(a.train_y).tolist() == [50, 50, 50, 50]
    assert not torch.equal(load_dataset({**spec, "seed": 1}).train_x, a.train_x)


def test_digits_from_scikit_learn():
    pytest.importorskip("sklearn")
    data = load_dataset({"name": "digits", "input_size": 16})
    assert data.num_classes == 10 and tuple(data.train_x.shape[1:]) == (3, 16, 16)
    assert len(data.train_y) + len(data.valid_y) + len(data.test_y) == 1797
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2])  # grey in three channels


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "imagenet16-120"}, "data.path: the imagenet16-120 data set needs the directory"),
        ({"name": "imagefolder", "path": "x", "download": True}, "data.download: only cifar10 and cifar100"),
        ({"name": "cifar100", "path": "x", "valid_fraction": 0.2}, "valid_fraction does not apply to cifar100"),
        ({"name": "mnist"}, "Input should be"),
        ({"name": "synthetic", "colour": 1}, "Extra inputs are not permitted"),
    ],
)
def test_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        DatasetSpec.model_validate(spec)


# -- downloads on request (a loopback server stands in for the data set's host) -------------------

ARCHIVES = {  # name -> torchvision class, archive folder, member files with their (data, label key)
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "labels",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    "cifar100": ("CIFAR100", "cifar-100-python", "fine_labels", ["train"], ["test"], "meta"),
}  # fmt: skip


def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def loopback_host(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/served``; connections anywhere else are refused."""
    import functools
    import socket
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):  # noqa: ANN002 - quiet
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    real = socket.create_connection

    def loopback_only(address, *args, **kwargs):
        if address[0] not in ("127.0.0.1", "localhost"):
            raise OSError(f"a test tried to reach {address}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", loopback_only)
    yield served, f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def _serve_tiny_archive(name, served, base_url, monkeypatch, tgz_md5=None):
    """A tiny archive in the data set's layout, and torchvision's class pointed at it (URL and MD5s)."""
    import tarfile

    import torchvision.datasets

    class_name, folder, label_key, train_files, test_files, meta = ARCHIVES[name]
    staging = served.parent / "staging" / folder
    for index, member in enumerate(train_files + test_files):
        count = 20 if member in train_files else 10
        dump(staging / member, {b"data": images(count, 32, index), label_key.encode(): [i % 10 for i in range(count)]})
    dump(staging / meta, {b"label_names": [f"c{i}" for i in range(10)]})
    source = getattr(torchvision.datasets, class_name)
    archive = served / source.filename
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging, arcname=folder)
    monkeypatch.setattr(source, "url", f"{base_url}/{source.filename}")
    monkeypatch.setattr(source, "tgz_md5", tgz_md5 or _md5(archive))
    monkeypatch.setattr(source, "train_list", [[f, _md5(staging / f)] for f in train_files])
    monkeypatch.setattr(source, "test_list", [[f, _md5(staging / f)] for f in test_files])
    return len(train_files) * 20, len(test_files) * 10


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_download_on_request_into_the_data_directory(name, loopback_host, monkeypatch, private_data_dir):
    from archsmith.graph.config import TrainEvaluatorConfig

    served, base_url, requests = loopback_host
    train, test = _serve_tiny_archive(name, served, base_url, monkeypatch)
    settings = TrainEvaluatorConfig(data={"name": name, "download": True})  # no path: the data directory
    assert settings.data["path"] == str(private_data_dir / "datasets" / name)
    settings.prepare_data()
    assert requests and all(path.endswith(".tar.gz") for path in requests)
    data = load_dataset(settings.data)
    assert len(data.train_y) + len(data.valid_y) + len(data.test_y) == train + test
    fetched = len(requests)
    settings.prepare_data()  # in place and verified: nothing fetched again
    assert len(requests) == fetched


def test_an_archive_with_the_wrong_checksum_is_refused(loopback_host, monkeypatch, tmp_path):
    from archsmith.tools.downloads import prepare_dataset

    served, base_url, _ = loopback_host
    _serve_tiny_archive("cifar10", served, base_url, monkeypatch, tgz_md5="0" * 32)
    target = tmp_path / "c10"
    with pytest.raises(DataError, match=rf"CIFAR-10: download from {base_url}/cifar-10-python.tar.gz into {target} failed"):
        prepare_dataset({"name": "cifar10", "path": str(target), "download": True})
    assert not (target / "cifar-10-batches-py").exists()  # nothing extracted from an unverified archive


def _downloading_config(toy_config, target, candidates):
    """A toy search trained (smoke preset) on CIFAR-10 at ``target``, downloaded when missing."""
    return toy_config(search={"max_candidates": candidates}, evaluator={"name": "train", "train": {
        "preset": "smoke", "device": "cpu", "data": {"name": "cifar10", "path": str(target), "download": True,
                                                     "input_size": 8}}})


def test_a_run_downloads_before_its_tasks_and_trains_on_the_files(loopback_host, monkeypatch, toy_config, tmp_path):
    import archsmith

    served, base_url, requests = loopback_host
    _serve_tiny_archive("cifar10", served, base_url, monkeypatch)
    target = tmp_path / "cifar"
    result = archsmith.run(_downloading_config(toy_config, target, candidates=2))
    assert requests and (target / "cifar-10-batches-py" / "test_batch").is_file()
    assert result.counts["valid"] == 2, [r.get("discard_reason") for r in result.history]


def test_train_top_downloads_a_data_set_gone_since_the_search(loopback_host, monkeypatch, toy_config, tmp_path):
    """`archsmith train` fetches a configured data set (download = true) before its tasks too; a
    failed download is a config error naming the data settings."""
    import shutil

    import archsmith
    from archsmith.graph.config import ConfigError
    from archsmith.graph.train_top import train_top

    served, base_url, requests = loopback_host
    _serve_tiny_archive("cifar10", served, base_url, monkeypatch)
    target = tmp_path / "cifar"
    result = archsmith.run(_downloading_config(toy_config, target, candidates=1))
    shutil.rmtree(target)
    fetched = len(requests)
    trained = train_top(result.run_dir, top=1)
    assert len(requests) > fetched and (target / "cifar-10-batches-py" / "test_batch").is_file()
    assert [entry.ok for entry in trained.trained] == [True]
    shutil.rmtree(target)
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", "0" * 32)
    with pytest.raises(ConfigError, match="evaluator.train.data: .*download from"):
        train_top(result.run_dir, top=1, again=True)
