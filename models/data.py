"""Evaluation data: scikit-learn's bundled digits, or MNIST from IDX files."""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import LotteryError


class DataError(LotteryError, ValueError):
    """The data set cannot be read or does not fit the target."""


@dataclass
class Dataset:
    name: str
    x: torch.Tensor  # float32 (N, C, H, W)
    y: torch.Tensor  # int64 (N,)
    domain: tuple[float, float]  # every input value lies in this interval


DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0


def digits_split(labels: np.ndarray, test_fraction: float = DIGITS_TEST_FRACTION,
                 seed: int = DIGITS_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """A fixed stratified split (``train_test_split(stratify=)``): sorted train and test indices."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def digits(split: str = "test") -> Dataset:
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1]; a fixed stratified 70/30 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError("--data digits needs scikit-learn; install it with `pip install scikit-learn`") from exc
    bunch = load_digits()
    data, labels = bunch.data, bunch.target.astype(np.int64)
    x = (data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    train, test = digits_split(labels)
    sel = test if split == "test" else train
    return Dataset(f"digits-{split}", torch.from_numpy(x[sel]), torch.from_numpy(labels[sel]), (0.0, 1.0))


def digits28(split: str = "test") -> Dataset:
    """The digits split bilinearly upsampled to MNIST's 28x28 (for 784-input targets such as the
    paper's Experiment 1 network when MNIST itself is not at hand); pixels stay in [0, 1]."""
    import torch.nn.functional as F

    d = digits(split)
    x = F.interpolate(d.x, size=(28, 28), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return Dataset(f"digits28-{split}", x, d.y, (0.0, 1.0))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{str(path)!r} is not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise DataError(f"{str(path)!r}: IDX data type 0x{dtype_code:02x}; expected unsigned bytes (0x08)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{str(path)!r}: header says {dims} but holds {data.size} values (truncated?)")
    return data.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"MNIST file {stem}[.gz] not found in {str(root)!r} nor in its MNIST/raw folder")


def mnist(root: str | Path, normalize: tuple[float, float] | None = None) -> Dataset:
    """MNIST test split (t10k files) from a folder of IDX files or a torchvision root.

    Pixels are scaled to [0, 1] like torchvision's ToTensor, then ``(x - mean) / std`` if
    ``normalize`` is given.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MNIST folder {str(root)!r} does not exist")
    images = _read_idx(_find(root, "t10k-images-idx3-ubyte"))
    labels = _read_idx(_find(root, "t10k-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"MNIST images {images.shape} and labels {labels.shape} do not match")
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    domain = (0.0, 1.0)
    if normalize is not None:
        mean, std = normalize
        if std <= 0:
            raise DataError(f"--normalize MEAN,STD needs STD > 0; got {std}")
        x = (x - mean) / std
        ends = (torch.tensor([0.0, 1.0]) - mean) / std  # the same float32 arithmetic as the pixels
        domain = (float(ends[0]), float(ends[1]))
    return Dataset("mnist-test", x, torch.from_numpy(labels.astype(np.int64)), domain)


def load_data(spec: str | None, normalize: tuple[float, float] | None = None) -> Dataset | None:
    """``digits``, ``digits28``, ``mnist:DIR`` or None."""
    if spec is None or spec == "none":
        return None
    if spec in ("digits", "digits28"):
        if normalize is not None:
            raise DataError("--normalize applies to mnist:DIR only")
        return digits("test") if spec == "digits" else digits28("test")
    if spec.startswith("mnist:"):
        return mnist(spec[len("mnist:"):], normalize)
    raise DataError(f"unknown --data {spec!r}; expected digits, digits28, mnist:DIR or none")
