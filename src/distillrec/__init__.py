"""distillrec: multimodal recommenders with plug-and-play knowledge distillation."""

from distillrec._version import __version__
from distillrec.errors import DistillrecError

__all__ = ["DistillrecError", "__version__", "load_dataset", "train", "load_run"]


def __getattr__(name: str):
    # Lazy so that `import distillrec` stays cheap for the CLI's --help.
    if name == "load_dataset":
        from distillrec.data.registry import load_dataset

        return load_dataset
    if name == "train":
        from distillrec.experiment.api import train

        return train
    if name == "load_run":
        from distillrec.experiment.api import load_run

        return load_run
    raise AttributeError(name)
