"""Masks held as bits: a combine layer's mask has 2n entries per target weight (42 at n = 21), so
held as bools it would cost 42 bytes per target weight; as bits it costs 5.25.

:class:`PackedMask` is a bool tensor stored as ``numpy.packbits`` of its values in row-major order
(the ticket's format), read a block of rows at a time where it is used.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: bits unpacked at once by :meth:`PackedMask.sum`
COUNT_BLOCK = 1 << 26


class PackedMask:
    """A bool tensor of ``shape`` held as bits (``np.packbits`` of its flattened values)."""

    def __init__(self, shape: tuple[int, ...], bits: np.ndarray):
        self.shape = tuple(int(s) for s in shape)
        self.bits = np.ascontiguousarray(bits, dtype=np.uint8).reshape(-1)
        if len(self.bits) != (self.numel() + 7) // 8:
            raise ValueError(f"a mask of shape {list(self.shape)} needs {(self.numel() + 7) // 8} bytes of bits; "
                             f"got {len(self.bits)}")

    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.bits.nbytes

    @classmethod
    def of(cls, mask: torch.Tensor | np.ndarray) -> "PackedMask":
        flat = np.asarray(mask, dtype=bool).reshape(-1)
        return cls(tuple(mask.shape), np.packbits(flat))

    def reshape(self, *shape: int) -> "PackedMask":
        """The same bits seen with another shape of as many entries."""
        if math.prod(shape) != self.numel():
            raise ValueError(f"cannot view a mask of shape {list(self.shape)} as {list(shape)}")
        return PackedMask(shape, self.bits)

    def _flat(self, start: int, stop: int) -> np.ndarray:
        b0, b1 = start // 8, (stop + 7) // 8
        return np.unpackbits(self.bits[b0:b1])[start - 8 * b0:stop - 8 * b0].astype(bool)

    def rows(self, rows: slice) -> torch.Tensor:
        """The bool tensor's rows ``rows`` (first dimension)."""
        per_row = self.numel() // max(self.shape[0], 1)
        start, stop, _ = rows.indices(self.shape[0])
        flat = self._flat(start * per_row, stop * per_row)
        return torch.from_numpy(flat.reshape(stop - start, *self.shape[1:]))

    def tensor(self) -> torch.Tensor:
        """The whole bool tensor."""
        return torch.from_numpy(self._flat(0, self.numel()).reshape(self.shape))

    def sum(self) -> int:
        """How many entries are True."""
        total, step = 0, COUNT_BLOCK // 8
        for b in range(0, len(self.bits), step):
            total += int(np.unpackbits(self.bits[b:b + step]).sum())
        return total  # packbits pads with zeros: the padding counts nothing


class MaskBuilder:
    """A :class:`PackedMask` of ``shape`` built from its rows in order, a block at a time, holding
    the bits and fewer than 8 pending bools."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)
        self._parts: list[np.ndarray] = []
        self._pending = np.zeros(0, dtype=bool)
        self._rows = 0

    def add(self, block: np.ndarray | torch.Tensor) -> None:
        block = np.asarray(block, dtype=bool)
        if tuple(block.shape[1:]) != self.shape[1:] or self._rows + len(block) > self.shape[0]:
            raise ValueError(f"a block of shape {list(block.shape)} does not continue a mask of shape "
                             f"{list(self.shape)} at row {self._rows}")
        self._rows += len(block)
        flat = np.concatenate([self._pending, block.reshape(-1)])
        whole = len(flat) - len(flat) % 8
        self._parts.append(np.packbits(flat[:whole]))
        self._pending = flat[whole:]

    def done(self) -> PackedMask:
        if self._rows != self.shape[0]:
            raise ValueError(f"the mask of shape {list(self.shape)} has {self._rows} of its rows")
        return PackedMask(self.shape, np.concatenate([*self._parts, np.packbits(self._pending)]))


def mask_rows(mask: PackedMask | torch.Tensor, rows: slice) -> torch.Tensor:
    """Rows of a mask, packed or a bool tensor."""
    return mask.rows(rows) if isinstance(mask, PackedMask) else mask[rows]


def as_tensor(mask: PackedMask | torch.Tensor) -> torch.Tensor:
    """A mask as a bool tensor."""
    return mask.tensor() if isinstance(mask, PackedMask) else mask
