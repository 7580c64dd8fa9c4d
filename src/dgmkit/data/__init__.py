"""Datasets in their canonical formats, the transforms likelihoods need, and batching."""

from dgmkit.data.dataset import Dataset, Split
from dgmkit.data.missing import has_missing, remove_completely_at_random
from dgmkit.data.registry import DATASETS, default_data_dir, from_array, load_dataset
from dgmkit.data.transforms import VALID_SEED, DataTransform, density_transform, make_transform

__all__ = [
    "Dataset",
    "Split",
    "DATASETS",
    "load_dataset",
    "from_array",
    "default_data_dir",
    "DataTransform",
    "VALID_SEED",
    "make_transform",
    "density_transform",
    "remove_completely_at_random",
    "has_missing",
]
