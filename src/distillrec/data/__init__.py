"""Datasets: the Dataset type, readers for common layouts, splits, negative sampling."""

from distillrec.data.dataset import Dataset

__all__ = ["Dataset"]
