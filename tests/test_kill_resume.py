"""kill -9 during training, the fast version of benchmarks/kill_resume.py: a small LightGCN run killed with
SIGKILL inside a checkpoint write (held open 0.3 s so that the kill lands there on any disk) and once more at a moment after a later write, resumed with `--resume`
each time, ends bit-identical to the same run trained without interruption (metrics, best epoch, best.pt
tensors, history less its timings), with no temporary file left behind. The uninterrupted reference runs
through the Python API in this process (one thread), which saves an interpreter's start-up."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains in subprocesses killed with SIGKILL

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_resume.py"


@pytest.fixture(scope="module")
def kill_resume():
    spec = importlib.util.spec_from_file_location("kill_resume_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.timeout(180)
def test_killed_and_resumed_run_is_bit_identical(tmp_path, kill_resume):
    kr = kill_resume
    data = kr.write_topk_dataset(tmp_path / "data" / "kr-small", n_users=120, n_items=80, per_user=8)
    run = kr.RunDef("lightgcn", "lightgcn", "topk", ("epochs=8", "batch_size=128", "n_layers=1"))
    plan = [
        # inside the write of the second last.pt (or a best.pt) the watcher sees
        {"mode": "write", "scope": "any", "files": kr.CHECKPOINTS, "k": 2},
        # 0.1 s after the fourth write the resumed run is seen making (past its config, env and split)
        {"mode": "after_write", "scope": "any", "files": None, "k": 4, "delay": 0.1},
    ]
    outcome = kr.check_run(
        run,
        data,
        tmp_path / "work",
        kills=len(plan),
        seed=0,
        max_extra=3,
        plan=plan,
        reference_in_process=True,
        hold_checkpoint_s=0.3,  # a checkpoint's write lasts long enough for the kill to land inside it
    )
    assert outcome.differences == []
    assert outcome.identical and outcome.kills >= 2 and outcome.kills_in_checkpoint_write >= 1
    assert outcome.resumes == outcome.kills
    assert not list(tmp_path.rglob("*.tmp"))
