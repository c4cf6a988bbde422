"""The environment a run was made in: kept here for importers; it lives in `distillrec.training.env`."""

from distillrec.training.env import environment, git_commit

__all__ = ["environment", "git_commit"]
