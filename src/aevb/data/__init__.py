"""Datasets as tensors on one device: splits, arrays from a user's files, one module per named
source (:mod:`aevb.data.sources`), downloads. Imports only the config schema, never a model."""

from aevb.data.datasets import dataset_info, fetch, list_datasets, load_dataset
from aevb.data.downloads import default_cache_dir
from aevb.data.splits import SPLITS, UNLABELLED, Dataset, MappedRows, Split

__all__ = ["SPLITS", "UNLABELLED", "Dataset", "MappedRows", "Split", "dataset_info",
           "default_cache_dir", "fetch", "list_datasets", "load_dataset"]
