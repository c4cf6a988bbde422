"""Readers for the on-disk layouts: MMRec, SGFD, RecBole. Each returns a validated Dataset."""

from distillrec.data.formats.mmrec import read_mmrec
from distillrec.data.formats.recbole import read_recbole
from distillrec.data.formats.sgfd import read_sgfd

__all__ = ["read_mmrec", "read_recbole", "read_sgfd"]
