"""Evaluation data: the digits split and MNIST IDX files, and every way an IDX file can be wrong."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from models.data import DataError, digits, load_data, mnist


def _idx(path, dims, data: bytes, dtype: int = 0x08, magic: bytes = b"\0\0"):
    raw = magic + bytes([dtype, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + data
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


def _mnist_dir(tmp_path, count=5, images_gz=True):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    _idx(tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if images_gz else "")), (count, 28, 28), images.tobytes())
    _idx(tmp_path / "t10k-labels-idx1-ubyte", (count,), labels.tobytes())
    return images, labels


def test_mnist_reads_gz_and_plain_idx_and_scales_pixels(tmp_path):
    images, labels = _mnist_dir(tmp_path)
    d = mnist(tmp_path)
    assert d.x.shape == (5, 1, 28, 28) and d.domain == (0.0, 1.0)
    assert torch.equal(d.x[:, 0], torch.from_numpy(images.astype(np.float32) / 255.0))
    assert d.y.tolist() == labels.tolist()
    n = mnist(tmp_path, normalize=(0.5, 0.25))
    assert n.domain == (-2.0, 2.0) and float(n.x.min()) >= -2.0


@pytest.mark.parametrize("corrupt, message", [
    (lambda p: _idx(p, (5, 28, 28), bytes(5 * 784), magic=b"\1\0"), r"is not an IDX file \(bad magic number\)"),
    (lambda p: _idx(p, (5, 28, 28), bytes(5 * 784), dtype=0x0D), r"IDX data type 0x0d; expected unsigned bytes"),
    (lambda p: _idx(p, (5, 28, 28), bytes(100)), r"header says \(5, 28, 28\) but holds 100 values \(truncated\?\)"),
    (lambda p: _idx(p, (4, 28, 28), bytes(4 * 784)), r"MNIST images \(4, 28, 28\) and labels \(5,\) do not match"),
])
def test_bad_idx_files_are_named(tmp_path, corrupt, message):
    _mnist_dir(tmp_path, images_gz=False)
    corrupt(tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(DataError, match=message):
        mnist(tmp_path)


def test_missing_mnist_files_and_bad_specs(tmp_path):
    with pytest.raises(DataError, match=r"MNIST folder .* does not exist"):
        mnist(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"MNIST file t10k-images-idx3-ubyte\[.gz\] not found"):
        mnist(tmp_path)
    _mnist_dir(tmp_path)
    with pytest.raises(DataError, match=r"--normalize MEAN,STD needs STD > 0; got 0.0"):
        mnist(tmp_path, normalize=(0.1, 0.0))
    with pytest.raises(DataError, match=r"unknown --data 'cifar'; expected digits, digits28, mnist:DIR or none"):
        load_data("cifar")
    with pytest.raises(DataError, match=r"--normalize applies to mnist:DIR only"):
        load_data("digits", (0.1, 0.3))
    assert load_data("none") is None and load_data(None) is None


def test_digits_split_is_stratified_disjoint_and_fixed():
    train, test = digits("train"), digits("test")
    assert len(train.x) + len(test.x) == 1797
    assert abs(len(test.x) / 1797 - 0.3) < 0.01
    counts_train, counts_test = torch.bincount(train.y), torch.bincount(test.y)
    assert torch.all((counts_test.double() / (counts_train + counts_test) - 0.3).abs() < 0.03)  # every class ~30%
    assert torch.equal(digits("test").x, test.x)  # the same split every time
    assert float(train.x.max()) <= 1.0 and float(train.x.min()) >= 0.0
