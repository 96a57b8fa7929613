"""Data: the common contract, label corruption, and the dataset loaders (synth_ecg, chestxray14, tianchi)."""

from .base import ArrayDataset, DataError, LabeledArrays, LazyH5Array, random_split_indices
from .corruption import changed_fraction, corrupt_labels

__all__ = [
    "ArrayDataset",
    "DataError",
    "LabeledArrays",
    "LazyH5Array",
    "random_split_indices",
    "changed_fraction",
    "corrupt_labels",
]
