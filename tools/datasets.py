"""Image-classification data sets as uint8 tensors, read from local files; CIFAR-10 and CIFAR-100
downloaded on request.

Splits follow NAS-Bench-201 where it defines them (the splits are seeded by ``DatasetSpec.seed``,
not NB201's own index files: same protocol and sizes, not the same images):

- ``cifar10``: train = ``data_batch_1..5`` minus a held-out validation part of ``valid_fraction``
  (default 0.5: NB201's ``cifar10-valid``, 25k train / 25k valid); test = ``test_batch`` (10k).
- ``cifar100``: train = ``train`` (50k, fine labels); ``test`` split in two halves: valid / test.
- ``imagenet16-120``: train = ``train_data_batch_1..10``, ``val_data`` split in two halves:
  valid / test; only labels 1..120 are kept (shifted to 0-based), as NB201's ImageNet16-120.
- ``imagefolder``: ``path/train/<class>/*``; valid = ``path/val`` or else ``valid_fraction``
  (default 0.1) of train; test = ``path/test`` when present (else empty).
- ``digits``: scikit-learn's bundled 1,797 8x8 digits, grey in 3 channels; 20% test, then
  ``valid_fraction`` (default 0.2) of the rest valid.
- ``synthetic``: class-conditioned colour and stripe patterns plus noise, deterministic under
  ``seed``; ``synthetic_samples`` train images, a quarter as many each for valid and test.

``input_size``: resize target (bilinear, antialiased); None keeps the native size (32 for
synthetic and digits). Pickles are read with an unpickler that admits only numpy arrays.

Where the files are: ``path``, or for cifar10 and cifar100 by default ``<data dir>/datasets/<name>``
(the per-user data directory: ``$ARCHSMITH_DATA_DIR``, else ``$XDG_DATA_HOME/archsmith``, else
``~/.local/share/archsmith``). Nothing is downloaded here: with ``download = true``,
:func:`archsmith.tools.downloads.prepare_dataset` (called in the parent process before any task
starts: tasks run without network) fetches a missing CIFAR-10 or CIFAR-100.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

__all__ = ["DataError", "DatasetSpec", "ImageData", "default_data_dir", "load_dataset"]

DatasetName = Literal["synthetic", "digits", "cifar10", "cifar100", "imagenet16-120", "imagefolder"]
FILE_SETS = ("cifar10", "cifar100", "imagenet16-120", "imagefolder")
DOWNLOADABLE = ("cifar10", "cifar100")  # torchvision's downloaders, with checksums
ENABLE_DOWNLOAD = "set download = true in the data settings ([evaluator.train.data] download = true)"
# NAS-Bench-201's normalisation constants (0..1 scale).
NB201_STATS = {
    "cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    "cifar100": ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
    "imagenet16-120": ((122.68, 116.66, 104.01), (63.22, 61.26, 65.09)),
}
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
IMAGENET16_FILES = tuple(f"train_data_batch_{i}" for i in range(1, 11)) + ("val_data",)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}  # fmt: skip


class DataError(ValueError):
    """A data set that cannot be loaded; the message names the path and what is wrong."""


def default_data_dir() -> Path:
    """The per-user data directory: ``$ARCHSMITH_DATA_DIR``, else ``$XDG_DATA_HOME/archsmith``,
    else ``~/.local/share/archsmith`` (data sets under ``datasets/``, the idea store under
    ``knowledge/``)."""
    if os.environ.get("ARCHSMITH_DATA_DIR"):
        return Path(os.environ["ARCHSMITH_DATA_DIR"])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "archsmith"


class DatasetSpec(BaseModel):
    """Which data set to load and how (the ``data`` table of a training payload)."""

    model_config = ConfigDict(extra="forbid")

    name: DatasetName = "synthetic"
    path: str | None = Field(
        None, description="directory of the files (cifar*, imagenet16-120, imagefolder); cifar10 and "
        "cifar100 default to <data dir>/datasets/<name>"
    )
    download: bool = Field(
        False, description="cifar10, cifar100: fetch the files into path when they are missing "
        "(torchvision's downloader, checksums verified)"
    )
    input_size: int | None = Field(None, ge=4, description="resize to this square size; None: native")
    synthetic_samples: int = Field(2048, ge=8, description="synthetic: training images")
    synthetic_classes: int = Field(10, ge=2, description="synthetic: classes")
    valid_fraction: float | None = Field(
        None, ge=0.0, lt=1.0, description="share of train held out for validation where the set has no "
        "validation split of its own; None: 0.5 cifar10, 0.1 imagefolder, 0.2 digits"
    )
    seed: int = Field(0, description="seed of the splits and of the synthetic images")

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        if self.name in DOWNLOADABLE and not self.path:
            self.path = str(default_data_dir() / "datasets" / self.name)
        if self.name in FILE_SETS and not self.path:
            raise ValueError(f"data.path: the {self.name} data set needs the directory of its files")
        if self.download and self.name not in DOWNLOADABLE:
            raise ValueError(f"data.download: only {' and '.join(DOWNLOADABLE)} can be downloaded; put the "
                             f"{self.name} files in data.path by hand")
        if self.valid_fraction is not None and self.name in ("cifar100", "imagenet16-120", "synthetic"):
            raise ValueError(f"data.valid_fraction does not apply to {self.name} (its validation split is fixed)")
        return self


@dataclass(frozen=True)
class ImageData:
    """A data set in memory: uint8 images [N, 3, H, W], int64 labels, per-channel mean/std (0..1)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    valid_x: torch.Tensor
    valid_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def summary(self) -> dict[str, Any]:
        """Sizes of the splits and the image size, for records."""
        return {
            "name": self.name, "num_classes": self.num_classes, "input_size": list(self.input_size),
            "train": len(self.train_y), "valid": len(self.valid_y), "test": len(self.test_y),
        }  # fmt: skip


# -- helpers ------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def _read_pickle(file: Path, what: str) -> dict[str, Any]:
    try:
        with file.open("rb") as handle:
            loaded = _ArrayUnpickler(handle, encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a DataError
        raise DataError(f"{what} file {file}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, dict):
        raise DataError(f"{what} file {file}: expected a pickled dict, got {type(loaded).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in loaded.items()}


def _arrays(
    entry: dict[str, Any], file: Path, what: str, label_key: str, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [n, 3, side, side], int64 [n]) from a pickle's ``data`` rows (channel-major)."""
    import numpy as np

    missing = [key for key in ("data", label_key) if key not in entry]
    if missing:
        raise DataError(f"{what} file {file}: missing key(s) {', '.join(missing)} (has {', '.join(sorted(entry))})")
    data, labels = np.asarray(entry["data"]), np.asarray(entry[label_key])
    if data.ndim != 2 or data.shape[1] != 3 * side * side or labels.shape != (data.shape[0],):
        raise DataError(
            f"{what} file {file}: 'data' has shape {data.shape} and {label_key!r} {labels.shape}; "
            f"expected [N, {3 * side * side}] and [N]"
        )
    in_range = data.dtype.kind in "iu" and (data.size == 0 or 0 <= data.min() <= data.max() <= 255)
    if data.dtype != np.uint8 and not in_range:
        raise DataError(f"{what} file {file}: 'data' must hold 8-bit pixels (0..255), got {data.dtype}")
    return data.astype(np.uint8).reshape(-1, 3, side, side), labels.astype(np.int64)


def _pickled_arrays(file: Path, what: str, label_key: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    return _arrays(_read_pickle(file, what), file, what, label_key, side)


def _find_dir(
    root: Path, files: tuple[str, ...], subfolders: tuple[str, ...], what: str, expected: str, fix: str
) -> dict[str, Path]:
    """Each of ``files`` in ``root`` or one of its ``subfolders``; DataError naming the missing ones
    (and ``fix``: how to get them)."""
    if not root.is_dir():
        raise DataError(f"{what} directory {root}: not found (expected {expected}){fix}")
    places = [root, *(root / sub for sub in subfolders)]
    found = {name: next((p / name for p in places if (p / name).is_file()), None) for name in files}
    missing = [name for name, place in found.items() if place is None]
    if missing:
        raise DataError(f"{what} directory {root}: missing {', '.join(missing)} (expected {expected}){fix}")
    return {name: place for name, place in found.items() if place is not None}


def _tensor(array: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(array).contiguous()


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 [N, 3, h, w] -> [N, 3, size, size] (bilinear, antialiased), in chunks."""
    import torch
    import torch.nn.functional as F

    if size is None or tuple(x.shape[2:]) == (size, size):
        return x
    if len(x) == 0:
        return x.new_zeros((0, 3, size, size))
    chunks = [
        F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round_().clamp_(0, 255).to(torch.uint8)
        for part in x.split(4096)
    ]
    return torch.cat(chunks) if chunks else x.new_zeros((0, 3, size, size))


def _split(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    """(kept_x, kept_y, held_x, held_y): a seeded ``fraction`` of the rows held out."""
    import torch

    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    held = int(round(len(y) * fraction))
    keep, hold = order[held:].sort().values, order[:held].sort().values
    return x[keep], y[keep], x[hold], y[hold]


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the 0..1 scale."""
    import torch

    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for part in x.split(8192):
        values = part.double().div_(255.0)
        total += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    count = max(x.shape[0] * x.shape[2] * x.shape[3], 1)
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _finish(name: str, spec: DatasetSpec, parts: tuple[torch.Tensor, ...], num_classes: int) -> ImageData:
    train_x, train_y, valid_x, valid_y, test_x, test_y = parts
    train_x, valid_x, test_x = (_resize(x, spec.input_size) for x in (train_x, valid_x, test_x))
    if len(train_y) == 0:
        raise DataError(f"{name} data set{f' at {spec.path}' if spec.path else ''}: no training images")
    if name in NB201_STATS:
        mean, std = (tuple(v / 255.0 for v in values) for values in NB201_STATS[name])
    else:
        mean, std = _channel_stats(train_x)
    for labels in (train_y, valid_y, test_y):
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            where = f" at {spec.path}" if spec.path else ""
            raise DataError(f"{name} data set{where}: labels outside 0..{num_classes - 1}")
    return ImageData(name, train_x, train_y, valid_x, valid_y, test_x, test_y, num_classes, mean, std)


def _halves(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """NB201's protocol for cifar100 and ImageNet16-120: the test set split into valid / test."""
    test_x, test_y, valid_x, valid_y = _split(x, y, 0.5, seed)
    return valid_x, valid_y, test_x, test_y


# -- the formats ----------------------------------------------------------------------------


# name -> (files, subfolders searched, what, the files in words, torchvision's dataset class)
_LAYOUTS = {
    "cifar10": (CIFAR10_FILES, ("cifar-10-batches-py",), "CIFAR-10",
                "the python-pickle files data_batch_1..5, test_batch", "CIFAR10"),
    "cifar100": (("train", "test"), ("cifar-100-python",), "CIFAR-100",
                 "the python-pickle files train, test (with fine_labels)", "CIFAR100"),
    "imagenet16-120": (IMAGENET16_FILES, ("Imagenet16_train", "Imagenet16_val"), "ImageNet16-120",
                       "the downsampled-ImageNet 16x16 pickles train_data_batch_1..10, val_data", None),
}  # fmt: skip


def _locate(spec: DatasetSpec) -> dict[str, Path]:
    files, subfolders, what, expected, _ = _LAYOUTS[spec.name]
    if spec.name not in DOWNLOADABLE:
        fix = "; nothing is downloaded"
    elif spec.download:  # tasks have no network: the download happens when a run starts
        fix = "; download = true fetches it when `archsmith run` starts, not inside a task"
    else:
        fix = f"; {ENABLE_DOWNLOAD} to fetch it"
    return _find_dir(Path(spec.path or ""), files, subfolders, what, expected, fix)


def _cifar10(spec: DatasetSpec) -> ImageData:
    import numpy as np

    files = _locate(spec)
    batches = [_pickled_arrays(files[n], "CIFAR-10", "labels", 32) for n in CIFAR10_FILES]
    x, y = (_tensor(np.concatenate(a)) for a in zip(*batches[:5]))
    fraction = 0.5 if spec.valid_fraction is None else spec.valid_fraction
    test = tuple(_tensor(a) for a in batches[5])
    return _finish("cifar10", spec, (*_split(x, y, fraction, spec.seed), *test), 10)


def _cifar100(spec: DatasetSpec) -> ImageData:
    files = _locate(spec)
    train = (_tensor(a) for a in _pickled_arrays(files["train"], "CIFAR-100", "fine_labels", 32))
    test_x, test_y = (_tensor(a) for a in _pickled_arrays(files["test"], "CIFAR-100", "fine_labels", 32))
    return _finish("cifar100", spec, (*train, *_halves(test_x, test_y, spec.seed)), 100)


def _imagenet16(spec: DatasetSpec) -> ImageData:
    import numpy as np

    files = _locate(spec)
    parts = []
    for name in IMAGENET16_FILES:
        x, y = _pickled_arrays(files[name], "ImageNet16-120", "labels", 16)
        keep = (y >= 1) & (y <= 120)
        parts.append((x[keep], y[keep] - 1))
    train_x, train_y = (_tensor(np.concatenate(a)) for a in zip(*parts[:10]))
    val_x, val_y = (_tensor(a) for a in parts[10])
    return _finish("imagenet16-120", spec, (train_x, train_y, *_halves(val_x, val_y, spec.seed)), 120)


def folder_files(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(image file, class index) of every image under ``folder/<class>/``, in a fixed order."""
    files = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in classes:
            raise DataError(f"ImageFolder {folder}: class {sub.name!r} is not among the train classes")
        files += [(f, classes.index(sub.name)) for f in sorted(sub.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    return files


def folder_classes(root: Path) -> list[str]:
    """The classes of an ImageFolder data set: the directories under ``root/train``."""
    if not (root / "train").is_dir():
        raise DataError(f"ImageFolder directory {root}: missing train/ (expected train/<class>/*.png|jpg)")
    return sorted(p.name for p in (root / "train").iterdir() if p.is_dir())


def read_images(files: list[tuple[Path, int]], size: int | None) -> tuple[list[np.ndarray], list[int]]:
    """Decode image files as uint8 [3, H, W] arrays (resized to ``size`` when given)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for file, label in files:
        try:
            with Image.open(file) as image:
                image = image.convert("RGB")
                if size is not None:
                    image = image.resize((size, size), Image.Resampling.BILINEAR)
                images.append(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"ImageFolder image {file}: unreadable ({exc})") from None
        labels.append(label)
    return images, labels


def _read_folder(folder: Path, classes: list[str], size: int | None) -> tuple[list[np.ndarray], list[int]]:
    return read_images(folder_files(folder, classes), size)


def stack_images(images: list[np.ndarray], labels: list[int], folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    shapes = sorted({image.shape for image in images})
    if len(shapes) > 1:
        raise DataError(f"ImageFolder {folder}: images of different sizes {shapes[:3]}; set data.input_size")
    if not images:
        return _tensor(np.zeros((0, 3, 0, 0), np.uint8)), _tensor(np.zeros(0, np.int64))
    return _tensor(np.stack(images)), _tensor(np.asarray(labels, np.int64))


def _imagefolder(spec: DatasetSpec) -> ImageData:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError("ImageFolder data needs Pillow (pip install pillow)") from None
    root = Path(spec.path or "")
    classes = folder_classes(root)

    def read(split: str, like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = stack_images(*_read_folder(root / split, classes, spec.input_size), root / split)
        if like is None or len(y) == 0:
            return (x, y) if like is None else (like[:0], y)
        if x.shape[1:] != like.shape[1:]:
            raise DataError(f"ImageFolder {root / split}: images differ in size from train/; set data.input_size")
        return x, y

    train = read("train")
    if len(train[1]) == 0:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"ImageFolder directory {root}: no images found under train/<class>/ ({suffixes})")
    if (root / "val").is_dir():
        if spec.valid_fraction is not None:
            raise DataError(f"ImageFolder directory {root}: has val/, so data.valid_fraction does not apply")
        parts = (*train, *read("val", train[0]))
    else:
        parts = _split(*train, 0.1 if spec.valid_fraction is None else spec.valid_fraction, spec.seed)
    test = read("test", train[0]) if (root / "test").is_dir() else (train[0][:0], train[1][:0])
    return _finish("imagefolder", spec, (*parts, *test), len(classes))


def _digits(spec: DatasetSpec) -> ImageData:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits data set needs scikit-learn (pip install scikit-learn)") from None
    import numpy as np

    bunch = load_digits()
    grey = np.clip(np.asarray(bunch.images) * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    x = _resize(_tensor(np.repeat(grey[:, None], 3, axis=1)), spec.input_size or 32)
    y = _tensor(np.asarray(bunch.target, np.int64))
    rest_x, rest_y, test_x, test_y = _split(x, y, 0.2, spec.seed)
    fraction = 0.2 if spec.valid_fraction is None else spec.valid_fraction
    train_x, train_y, valid_x, valid_y = _split(rest_x, rest_y, fraction, spec.seed + 1)
    return _finish("digits", spec, (train_x, train_y, valid_x, valid_y, test_x, test_y), 10)


def _synthetic(spec: DatasetSpec) -> ImageData:
    """Per class: a base colour and a stripe orientation/frequency; per image: random phase, noise."""
    import torch

    size, classes = spec.input_size or 32, spec.synthetic_classes
    generator = torch.Generator().manual_seed(spec.seed)
    colours = 0.2 + 0.6 * torch.rand(classes, 3, generator=generator)
    angles = torch.rand(classes, generator=generator) * math.pi
    frequencies = 1.0 + torch.randint(0, 3, (classes,), generator=generator).float()
    grid = torch.arange(size, dtype=torch.float32) / size
    rows, cols = grid[:, None], grid[None, :]

    def make(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randperm(count, generator=generator) % classes
        phase = torch.rand(count, 1, 1, generator=generator) * 2 * math.pi
        a, f = angles[y][:, None, None], frequencies[y][:, None, None]
        wave = torch.sin(2 * math.pi * f * (rows * torch.cos(a) + cols * torch.sin(a)) + phase)
        noise = 0.12 * torch.randn(count, 3, size, size, generator=generator)
        images = colours[y][:, :, None, None] + 0.25 * wave[:, None] + noise
        return images.clamp_(0, 1).mul_(255).round_().to(torch.uint8), y.long()

    held = max(spec.synthetic_samples // 4, 1)
    parts = (*make(spec.synthetic_samples), *make(held), *make(held))
    return _finish("synthetic", spec.model_copy(update={"input_size": None}), parts, classes)


_LOADERS = {
    "synthetic": _synthetic, "digits": _digits, "cifar10": _cifar10, "cifar100": _cifar100,
    "imagenet16-120": _imagenet16, "imagefolder": _imagefolder,
}  # fmt: skip


def load_dataset(spec: DatasetSpec | dict[str, Any]) -> ImageData:
    """Load a data set into memory (uint8 tensors on the CPU); DataError when it cannot be read."""
    spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.model_validate(spec)
    return _LOADERS[spec.name](spec)
