"""Datasets: the Dataset type, readers for common layouts, splits, negative sampling."""

from distillrec.data.dataset import Dataset, Sequences
from distillrec.data.registry import list_datasets, load_dataset
from distillrec.data.sampling import NegativeSampler, epoch_batches

__all__ = ["Dataset", "NegativeSampler", "Sequences", "epoch_batches", "list_datasets", "load_dataset"]
