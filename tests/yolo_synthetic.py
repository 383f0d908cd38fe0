"""A tiny synthetic detection dataset in YOLO format (images with coloured rectangles), for tests.

Layout under ``root``: ``images/{train,val}/*.png``, ``labels/{train,val}/*.txt`` (one
``class cx cy w h`` row per box, normalised) and ``data.yaml`` with absolute paths. Class k is
drawn in its own colour, so the task is learnable. Deterministic for a seed; needs numpy and PIL
(both come with matplotlib).
"""

from __future__ import annotations

from pathlib import Path

COLOURS = [(230, 40, 40), (40, 200, 60), (50, 80, 230), (230, 200, 40), (200, 60, 220), (40, 210, 210)]


def _write_split(root: Path, split: str, count: int, imgsz: int, classes: int, rng: object) -> None:
    import numpy as np
    from PIL import Image

    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = np.full((imgsz, imgsz, 3), 20, dtype=np.uint8)
        pixels += rng.integers(0, 25, size=pixels.shape, dtype=np.uint8)  # type: ignore[attr-defined]
        rows = []
        for _ in range(int(rng.integers(1, 4))):  # type: ignore[attr-defined]
            cls = int(rng.integers(0, classes))  # type: ignore[attr-defined]
            w, h = (int(v) for v in rng.integers(imgsz // 6, imgsz // 2, size=2))  # type: ignore[attr-defined]
            x0 = int(rng.integers(0, imgsz - w))  # type: ignore[attr-defined]
            y0 = int(rng.integers(0, imgsz - h))  # type: ignore[attr-defined]
            pixels[y0 : y0 + h, x0 : x0 + w] = COLOURS[cls % len(COLOURS)]
            rows.append(f"{cls} {(x0 + w / 2) / imgsz:.6f} {(y0 + h / 2) / imgsz:.6f} {w / imgsz:.6f} {h / imgsz:.6f}")
        Image.fromarray(pixels).save(images / f"{split}_{index:04d}.png")
        (labels / f"{split}_{index:04d}.txt").write_text("\n".join(rows) + "\n")


def make_synthetic_detection_dataset(
    root: str | Path, n_train: int = 8, n_val: int = 4, imgsz: int = 64, classes: int = 2, seed: int = 0
) -> Path:
    """Write the dataset under ``root``; returns the path of its ``data.yaml``."""
    import numpy as np

    root = Path(root).resolve()
    rng = np.random.default_rng(seed)
    _write_split(root, "train", n_train, imgsz, classes, rng)
    _write_split(root, "val", n_val, imgsz, classes, rng)
    names = "\n".join(f"  {k}: shape{k}" for k in range(classes))
    data = root / "data.yaml"
    data.write_text(
        f"path: {root}\ntrain: {root / 'images' / 'train'}\nval: {root / 'images' / 'val'}\nnc: {classes}\nnames:\n{names}\n"
    )
    return data
