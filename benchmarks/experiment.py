"""Wall time of one small experiment (16 short runs) with each executor, beside the serial time.

The experiment: BPR-MF on `scientific`, 6 tuning trials × 2 selection seeds, then 4 report seeds, 5 epochs
per run (16 runs). Each executor starts from an empty experiment folder, so every run trains. Printed: wall
seconds per executor, speed-up over serial, and Ray's overhead per job, from Ray with one job at a time
against serial (the same work, one after another). Run it on a quiet machine: nothing else training.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import timing_parser  # noqa: E402

from distillrec.experiment.definition import make_definition  # noqa: E402
from distillrec.experiment.engine import Engine  # noqa: E402

RUNS = 16


def one(executor: str, jobs: int, threads: int, root: Path) -> float:
    d = make_definition(
        {
            "name": f"bench-{executor}-{jobs}",
            "backbones": ["bprmf"],
            "methods": [],
            "budget": 6,
            "selection_seeds": 2,
            "seeds": [1, 2, 3, 4],
            "set": {"epochs": 5, "patience": 5},
            "executor": executor,
            "jobs": jobs,
            "threads": threads,
            "out": str(root / f"{executor}{jobs}"),
            "sampler": "grid",  # six distinct points: no trial is a cached duplicate
        }
    )
    start = time.perf_counter()
    result = Engine(d).run()
    wall = time.perf_counter() - start
    if result.failures:
        raise SystemExit(f"{executor}: failed jobs {result.failures}")
    return wall


def main() -> None:
    ap = timing_parser(__doc__, reps=1, threads=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plans = [("serial", 1), ("local", args.jobs)]
        if not args.no_ray:
            plans += [("ray", 1), ("ray", args.jobs)]
        for executor, jobs in plans:
            walls = [one(executor, jobs, args.threads, root / f"rep{r}") for r in range(args.reps)]
            rows.append({"executor": executor, "jobs": jobs, "wall_s": min(walls)})
    serial = rows[0]["wall_s"]
    for r in rows:
        r["speedup"] = serial / r["wall_s"]
        r["s_per_job"] = r["wall_s"] / RUNS
    ray1 = next((r for r in rows if r["executor"] == "ray" and r["jobs"] == 1), None)
    overhead = (ray1["wall_s"] - serial) / RUNS if ray1 else None
    if args.json:
        print(
            json.dumps(
                {
                    "runs": RUNS,
                    "threads_per_job": args.threads,
                    "rows": rows,
                    "ray_overhead_s_per_job": overhead,
                },
                indent=2,
            )
        )
        return
    print(f"{RUNS} runs (BPR-MF, scientific, 5 epochs), {args.threads} thread(s) per job")
    print(f"{'executor':<10}{'jobs':>5}{'wall s':>9}{'s / job':>9}{'speed-up':>10}")
    for r in rows:
        print(
            f"{r['executor']:<10}{r['jobs']:>5}{r['wall_s']:>9.1f}{r['s_per_job']:>9.2f}{r['speedup']:>9.2f}×"
        )
    if overhead is not None:
        print(
            f"Ray overhead per job (ray, 1 job at a time, minus serial): {overhead:+.2f} s "
            f"beside {serial / RUNS:.2f} s of serial work per job"
        )


if __name__ == "__main__":
    main()
