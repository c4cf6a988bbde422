"""Distillers: teacher-student schemes that wrap any backbone through the contract."""

from distillrec.distill.base import Distiller

__all__ = ["Distiller"]
