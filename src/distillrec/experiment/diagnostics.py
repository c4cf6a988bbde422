"""Per-modality diagnostics for any run: how well each modality ranks inside the multimodal model
(every other modality mean-ablated) beside a uni-modal model of the same backbone (the CKD teacher) —
the paper's Table 2, for any backbone, distilled or not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillrec.distill.ckd import teacher_dir, teacher_key
from distillrec.eval.ranking import Evaluator
from distillrec.training.config import TrainConfig
from distillrec.training.scoring import model_score_fn

if TYPE_CHECKING:
    from distillrec.experiment.api import Run


def find_teacher(run: Run, modality: str) -> Path | None:
    """The cached uni-modal teacher run matching this run's data, backbone, settings and seed."""
    info = run.metrics.get("distill_info", {}).get("teachers", {})
    if info.get(modality):
        path = Path(info[modality])
        return path if (path / "metrics.json").exists() else None
    cfg = run.config
    seed = int(cfg["seed"])
    train = TrainConfig(**cfg["train"]).model_copy(update={"seed": seed}).model_dump()
    key = teacher_key(run.dataset, cfg["model"], cfg["params"], train, modality, seed)
    root = run.run_dir.parents[2]  # <out>/<dataset>/<config>/seed<k>
    path = teacher_dir(root, run.dataset, cfg["model"], modality, key, seed)
    return path if (path / "metrics.json").exists() else None


def per_modality(run: Run, split: str = "test") -> list[dict[str, Any]]:
    """One row per modality: the model's metrics with only that modality, and its teacher's, if cached."""
    ev = Evaluator(run.dataset, run.train_config.preset, run.train_config.ks, run.device)
    rows = []
    full = ev.evaluate(model_score_fn(run.model, run.representation()), split)
    rows.append({"modality": "all (the model)", "model": full, "teacher": None, "teacher_dir": None})
    for m in run.dataset.modalities:
        rep = run.model.counterfactual(run.features, m)
        inside = ev.evaluate(model_score_fn(run.model, rep), split)
        tdir = find_teacher(run, m)
        teacher = json.loads((tdir / "metrics.json").read_text())[split] if tdir else None
        rows.append(
            {"modality": m, "model": inside, "teacher": teacher, "teacher_dir": str(tdir) if tdir else None}
        )
    return rows
