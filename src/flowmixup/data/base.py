"""The common data contract: every dataset loader returns a :class:`LabeledArrays`, training reads it through
:class:`ArrayDataset`, which fetches whole batches at once (no per-sample Python in the training loop).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad input data: the message names the file (and line) and what was expected."""


def plain(obj: Any) -> Any:
    """OmegaConf containers as plain dicts and lists (a loader may be called with DictConfig arguments); anything
    else as it is."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


@dataclass
class LabeledArrays:
    """What a dataset loader hands to training.

    x: array-like of shape (N, ...) supporting ``x[sorted_int_index_array]`` (a numpy array, or a
       :class:`LazyH5Array` over a prepared HDF5 cache). float32 signals or uint8 images.
    y: (N, C) multi-hot labels (0/1), clean (corruption is applied later, by the trainer).
    class_names: C names, in the project's class order.
    splits: ``{"train": idx, "val": idx, "test": idx}``, int64 index arrays into x / y.
    info: free-form facts worth recording in the run (record counts, source files...).
    """

    x: Any
    y: np.ndarray
    class_names: list[str]
    splits: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y)
        if self.y.ndim != 2 or self.y.shape[1] != len(self.class_names):
            raise DataError(f"labels have shape {self.y.shape}, expected (N, {len(self.class_names)})")
        if len(self.x) != len(self.y):
            raise DataError(f"{len(self.x)} inputs but {len(self.y)} label rows")
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise DataError(f"splits {missing} missing; a dataset must define {list(SPLITS)}")
        for name in SPLITS:
            self.splits[name] = np.asarray(self.splits[name], dtype=np.int64)


class LazyH5Array:
    """A read-only view of one HDF5 dataset that opens the file lazily in each process (safe with DataLoader
    workers, which must not share an h5py handle across fork)."""

    def __init__(self, path: str | os.PathLike, key: str):
        import h5py

        self.path, self.key = str(path), key
        with h5py.File(self.path, "r") as fh:
            if key not in fh:
                raise DataError(f"{self.path}: no dataset '{key}' in the cache (found: {sorted(fh.keys())})")
            self.shape = tuple(fh[key].shape)
            self.dtype = fh[key].dtype
        self._fh = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def _dataset(self):
        import h5py

        if self._fh is None or self._pid != os.getpid():
            self._fh = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._fh[self.key]

    def __getitem__(self, index):
        return self._dataset()[index]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fh"], state["_pid"] = None, None
        return state


class ArrayDataset(Dataset):
    """Rows ``indices`` of (x, y), fetched a batch at a time through ``__getitems__``.

    Reads are issued in increasing index order (what HDF5 needs to be fast) and returned in the requested order.
    """

    def __init__(self, x: Any, y: np.ndarray, indices: Sequence[int]):
        self.x = x
        self.y = np.ascontiguousarray(y, dtype=np.float32)
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, batch: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.indices[np.asarray(batch, dtype=np.int64)]
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        xs = np.asarray(self.x[sorted_rows])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return torch.from_numpy(np.ascontiguousarray(xs[inverse])), torch.from_numpy(self.y[rows])


def batch_collate(batch):
    """Collate for :class:`ArrayDataset`: ``__getitems__`` already returns a stacked (x, y) pair."""
    return batch


def random_split_indices(n: int, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """A seeded random split of ``range(n)`` into train/val/test by ``fractions`` (e.g. the paper's 7:1:2)."""
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
        raise DataError(f"split fractions must be three non-negative numbers (train, val, test), got {list(fractions)}")
    fr = fr / fr.sum()
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fr[0] * n))
    n_val = int(round(fr[1] * n))
    parts = np.split(perm, [n_train, n_train + n_val])
    return {name: np.sort(p) for name, p in zip(SPLITS, parts)}
