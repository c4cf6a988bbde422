"""benchmarks/scale.py --update: re-measuring some models keeps the others of the file, never mixes settings."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


def scale_module():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("scale_benchmark", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def output(models: dict[str, float], threads: int = 2) -> dict:
    return {
        "benchmark": "scale",
        "device": "cpu",
        "threads": threads,
        "max_batches": 20,
        "runs": {m: [{"model": m, "epoch_s": e}] for m, e in models.items()},
        "slopes": {m: {"epoch_s": 2.0} for m in models},
        "failures": [],
    }


def test_update_replaces_the_measured_models_and_keeps_the_others(tmp_path) -> None:  # noqa: ANN001
    scale = scale_module()
    path = tmp_path / "scale.json"
    scale.updated(str(path), output({"lightgcn": 1.0, "lattice": 9.0}))
    merged = scale.updated(str(path), output({"lattice": 7.0}))
    assert json.loads(path.read_text()) == merged
    assert {m: r[0]["epoch_s"] for m, r in merged["runs"].items()} == {"lightgcn": 1.0, "lattice": 7.0}
    assert set(merged["slopes"]) == {"lightgcn", "lattice"}
    with pytest.raises(SystemExit, match="other settings"):
        scale.updated(str(path), output({"mgcn": 3.0}, threads=1))
