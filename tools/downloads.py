"""Data sets on request: CIFAR-10 and CIFAR-100 fetched with torchvision's own downloaders.

Only when a data spec says ``download = true``, and only in the process that prepares a run (the
tasks that read the data run without network). torchvision verifies the archive's MD5 before it
extracts it and every extracted file's MD5 after; the files land in the spec's ``path`` (by default
``<data dir>/datasets/<name>``), where :func:`archsmith.tools.datasets.load_dataset` reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archsmith.tools.datasets import _LAYOUTS, DataError, DatasetSpec, _locate

__all__ = ["prepare_dataset"]


def prepare_dataset(spec: DatasetSpec | dict[str, Any]) -> DatasetSpec:
    """Make sure a data set's files are in place before tasks read them (call it where the network
    is: tasks run without). A missing CIFAR-10/100 with ``download`` is fetched with torchvision's
    downloader into ``path`` (the archive's and every file's MD5 verified); other missing files are
    a DataError saying how to get them. Returns the spec with its path resolved."""
    spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.model_validate(spec)
    if spec.name not in _LAYOUTS:
        return spec
    try:
        _locate(spec)
    except DataError:
        if not spec.download:
            raise
        _download(spec)
        _locate(spec)
    return spec


def _download(spec: DatasetSpec) -> None:
    try:
        import torchvision.datasets as tv_datasets
    except ImportError:
        raise DataError(f"data.download for {spec.name} needs torchvision (pip install torchvision), or put "
                        f"the files in {spec.path} by hand") from None
    source = getattr(tv_datasets, _LAYOUTS[spec.name][4])

    class Fetcher(source):  # type: ignore[misc,valid-type]
        """torchvision's dataset class, downloading only (no loading of the images into memory)."""

        def __init__(self, root: str) -> None:  # noqa: D107 - the parent's __init__ would load the data
            self.root = root

    root = Path(spec.path or "")
    try:
        root.mkdir(parents=True, exist_ok=True)
        fetcher = Fetcher(str(root))
        fetcher.download()
        verified = fetcher._check_integrity()
    except Exception as error:  # noqa: BLE001 - URLError, HTTPError, a bad checksum (RuntimeError), a full disk
        raise DataError(f"{_LAYOUTS[spec.name][2]}: download from {source.url} into {root} failed "
                        f"({type(error).__name__}: {error}); check the network, or put the files there by "
                        f"hand") from None
    if not verified:
        raise DataError(f"{_LAYOUTS[spec.name][2]} in {root}: the extracted files fail torchvision's checksums; "
                        f"remove {root / source.base_folder} and download again")
