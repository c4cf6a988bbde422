"""The `distillrec` command line.

Each command is a thin function in the module of its group (`runs`: train, evaluate, rerun, recommend, serve and
the demo; `experiments`: compare, experiment, report; `data`: datasets, features; `catalogue`: models,
options; `diagnosis`: diagnose, diagnose-proof, variant); what they print is drawn by `render`. They are registered here,
in the order `--help` lists them.
"""

from __future__ import annotations

from distillrec.cli import catalogue, data, diagnosis, experiments, runs
from distillrec.cli.application import app, main

for _name, _command in (
    ("demo", runs.demo),
    ("train", runs.train),
    ("evaluate", runs.evaluate),
    ("rerun", runs.rerun),
    ("recommend", runs.recommend),
    ("compare", experiments.compare),
    ("experiment", experiments.experiment),
    ("datasets", data.datasets),
    ("models", catalogue.models),
    ("options", catalogue.options),
    ("report", experiments.report),
    ("serve", runs.serve),
    ("features", data.features),
    ("diagnose", diagnosis.diagnose),
    ("diagnose-proof", diagnosis.diagnose_proof),
    ("variant", diagnosis.variant),
):
    app.command(_name)(_command)

__all__ = ["app", "main"]
