"""Small real data sets for tests: FER2013-format files whose classes a CNN can actually learn."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fercore.labels import SPLIT_NAMES

ROOT = Path(__file__).resolve().parent.parent


def learnable_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 48, 48) noise images with a bright square whose position encodes the class (0..6)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 7
    rng.shuffle(labels)
    pixels = rng.integers(0, 120, size=(n, 48, 48)).astype(np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 3)
        pixels[i, 4 + row * 14:14 + row * 14, 4 + col * 14:14 + col * 14] = 230
    return pixels, labels


def write_fer2013_csv(path: Path, pixels: np.ndarray, labels: np.ndarray, usage: np.ndarray) -> Path:
    """Kaggle's format: emotion,pixels,Usage with space-separated pixels."""
    lines = ["emotion,pixels,Usage"]
    for image, label, split in zip(pixels, labels, usage):
        lines.append(f"{int(label)},{' '.join(map(str, image.ravel().tolist()))},{SPLIT_NAMES[int(split)]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_course_test_csv(path: Path, pixels: np.ndarray) -> Path:
    """The course's test.csv: id,feature with no labels."""
    lines = ["id,feature"] + [f"{i},{' '.join(map(str, img.ravel().tolist()))}" for i, img in enumerate(pixels)]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_fer_csv(folder: Path, n_train: int = 70, n_val: int = 35, seed: int = 0) -> Path:
    """A fer2013.csv with Training and PublicTest rows of learnable faces."""
    pixels, labels = learnable_faces(n_train + n_val, seed)
    usage = np.array([0] * n_train + [1] * n_val)
    return write_fer2013_csv(folder / "fer2013.csv", pixels, labels, usage)


def wait_until(predicate, timeout: float = 120.0, every: float = 0.2) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def train_on_faces(root: Path, pixels: np.ndarray, labels: np.ndarray, usage: np.ndarray, run: Path, *,
                   votes: np.ndarray | None = None, data_name: str = "faces.npz", **settings) -> Path:
    """Save faces as an npz data file in `root` and train a real model on it into run folder `run` (one thread,
    batch 32, one fernet epoch unless `settings` say otherwise: TrainConfig fields). Returns the data file."""
    import torch

    from fercore.data import load_dataset
    from fercore.training import TrainConfig, train

    data_path = root / data_name
    arrays = dict(pixels=pixels, emotion=labels, usage=usage)
    np.savez(data_path, **arrays, **({} if votes is None else {"ferplus_votes": votes}))
    torch.set_num_threads(1)
    config = TrainConfig(**{"model": "fernet", "epochs": 1, "batch_size": 32, "threads": 1, **settings},
                         data=str(data_path))
    train(config, run, dataset=load_dataset(data_path))
    return data_path
