"""Kill -9 anywhere: a run killed with SIGKILL at random moments and resumed with `--resume` each time ends
bit-identical to the same run trained without interruption.

Usage (from the repository root):  python benchmarks/kill_resume.py [--quick] [--kills N] [--seed S]
                                       [--runs lightgcn,vbpr+ckd,sasrec+cdl] [--keep DIR] [--json]

For each run (LightGCN; VBPR with CKD, whose uni-modal teachers are trained first into
`<out>/<dataset>/_teachers/…`; SASRec with CDL on a sequential dataset), on small synthetic datasets written
here in the MMRec layout (a `.seq.inter` for the next-item run):
1. a reference run trains uninterrupted into folder A (`distillrec train` in a subprocess);
2. the same run trains into folder B and is killed with SIGKILL at moments drawn from a seeded RNG: while a
   run file's temporary (`.NAME.XXXX.tmp`) is there (a kill inside a write; every other such kill waits for
   a checkpoint's, `.last.pt.*.tmp` or `.best.pt.*.tmp`), at a random delay after the k-th write, or during
   start-up; for CKD the first two kills aim at the teachers' training. After each kill the run starts
   again with `--resume`, until it finishes. If no kill landed inside a checkpoint write, more are aimed
   at one;
3. every run folder of A (the student's and the teachers') must have its twin in B with equal test and
   valid metrics, best and last epoch (metrics.json), equal best.pt tensors (torch.equal), equal
   history.csv less its timing columns, equal per-user test metrics and split, every file verifying
   against its recorded digest, and no `.*.tmp` left in either.

A and B both run with one thread (bit-identity on a CPU needs the same thread count). A kill counts as
"in a write" when it left a temporary file in a run folder (the write had begun and was not yet in
place), "in teachers" when a teacher was unfinished and the student had not begun. Prints a table and, as
the last line, one JSON object; exits 1 if any run differs (or no kill landed inside a checkpoint write,
or, for CKD, during the teachers' training).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CLI = "import torch; torch.set_num_threads(1); from distillrec.cli import main; main()"
# Seconds a checkpoint's temporary is held open before it is synced (the variable names them; unset: none).
# A small model's checkpoint is written in well under a millisecond on a fast disk, so a kill aimed at that
# window lands late more often than not; holding it open makes "a kill inside a checkpoint write" certain
# without changing what is written. Applied in the child process only, by wrapping `os.fsync`.
HOLD_VAR = "KILL_RESUME_HOLD_CHECKPOINT_S"
HOLD = f"""
import os, time
_hold = float(os.environ.get({HOLD_VAR!r}, "0") or 0)
if _hold > 0:
    _fsync = os.fsync
    def _held_fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{{fd}}"))
        if name.endswith(".tmp") and any(name.startswith(f".{{c}}.") for c in ("last.pt", "best.pt")):
            time.sleep(_hold)
        return _fsync(fd)
    os.fsync = _held_fsync
"""
TIMING_COLUMNS = ("train_s", "eval_s")
POLL_S = 0.0005


# ----------------------------------------------------------------------------------------------- data
def write_topk_dataset(
    folder: Path, n_users: int = 300, n_items: int = 200, per_user: int = 12, seed: int = 0
) -> Path:
    """A random MMRec folder: `<name>.inter` with x_label (per user: last two items valid and test),
    image and text features, category labels; users of a group prefer a block of items."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    groups = 5  # user group g mostly picks items of block g, so that there is something to learn
    block = np.arange(n_items) * groups // n_items
    weights = np.where(np.arange(groups)[:, None] == block[None, :], 8.0, 1.0)
    rows = []
    for u in range(n_users):
        p = weights[u % groups] / weights[u % groups].sum()
        items = rng.choice(n_items, size=per_user, replace=False, p=p)
        labels = [0] * (per_user - 2) + [1, 2]
        rows += [(u, int(i), lab) for i, lab in zip(items, labels, strict=True)]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).to_csv(
        folder / "kr-topk.inter", sep="\t", index=False
    )
    np.save(folder / "image_feat.npy", rng.standard_normal((n_items, 32)).astype(np.float32))
    np.save(folder / "text_feat.npy", rng.standard_normal((n_items, 16)).astype(np.float32))
    np.save(folder / "category_label.npy", rng.integers(-1, 5, n_items).astype(np.int64))
    return folder


def write_seq_dataset(
    folder: Path, n_users: int = 200, n_items: int = 150, min_len: int = 5, max_len: int = 15, seed: int = 0
) -> Path:
    """A random sequential MMRec folder: `<name>.seq.inter` (ordered events, each a few items after the
    previous one; leave-one-out x_label, position), the derived `<name>.inter` pairs, image and text
    features."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    events = []
    for u in range(n_users):
        n = int(rng.integers(min_len, max_len + 1))  # mostly small steps forward: a learnable order
        items = (rng.integers(0, n_items) + np.cumsum(rng.integers(1, 4, n))) % n_items
        labels = [0] * (n - 2) + [1, 2]
        events += [(u, int(i), lab, p) for p, (i, lab) in enumerate(zip(items, labels, strict=True))]
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(events, columns=["userID", "itemID", "x_label", "position"])
    frame.to_csv(folder / "kr-seq.seq.inter", sep="\t", index=False)
    pairs = frame.drop_duplicates(["userID", "itemID"])[["userID", "itemID", "x_label"]]
    pairs.to_csv(folder / "kr-seq.inter", sep="\t", index=False)
    np.save(folder / "image_feat.npy", rng.random((n_items, 24)).astype(np.float32))
    np.save(folder / "text_feat.npy", rng.random((n_items, 12)).astype(np.float32))
    return folder


DATASETS = {"topk": write_topk_dataset, "seq": write_seq_dataset}


# ----------------------------------------------------------------------------------------------- runs
@dataclass
class RunDef:
    name: str
    model: str
    dataset: str  # a key of DATASETS
    sets: tuple[str, ...] = ()
    distill: str | None = None
    teachers: int = 0  # uni-modal teachers trained before the student (CKD: one per modality)
    seed: int = 7

    def args(self, data: Path, out: Path, resume: bool) -> list[str]:
        cmd = [
            sys.executable,
            "-c",
            HOLD + CLI,
            "train",
            "--model",
            self.model,
            "--dataset",
            str(data),
            "--seeds",
            str(self.seed),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ]
        if self.distill:
            cmd += ["--distill", self.distill]
        for s in self.sets:
            cmd += ["--set", s]
        return cmd + (["--resume"] if resume else [])


RUNS = {
    "lightgcn": RunDef("lightgcn", "lightgcn", "topk", ("epochs=40", "batch_size=256")),
    "vbpr+ckd": RunDef(
        "vbpr+ckd",
        "vbpr",
        "topk",
        ("epochs=12", "batch_size=512", "ckd.n_generic=1000"),
        distill="ckd",
        teachers=2,
    ),
    "sasrec+cdl": RunDef(
        "sasrec+cdl",
        "sasrec",
        "seq",
        (
            "epochs=12",
            "batch_size=256",
            "modality_input=true",
            "n_layers=1",
            "cdl.sample_pairs=2000",
            "cdl.probe_pairs=2000",
        ),
        distill="cdl",
    ),
}


def child_env(hold_checkpoint_s: float = 0.0) -> dict[str, str]:
    env = dict(os.environ)
    env[HOLD_VAR] = str(hold_checkpoint_s)
    env["DISTILLREC_CHECKPOINT_INTERVAL_S"] = "0"  # a checkpoint every epoch: the most writes to kill inside
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    env["PYTHONHASHSEED"] = "0"
    return env


# ----------------------------------------------------------------------------------------------- watching
class Watcher:
    """The run folders under `out` (students' and teachers') and the temporaries of writes in progress."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self._folders: list[Path] = []
        self._at = -1.0

    def folders(self, refresh: bool = False) -> list[Path]:
        now = time.monotonic()
        if refresh or now - self._at > 0.02:
            self._folders = sorted({*self.out.glob("*/*/seed*"), *self.out.glob("*/_teachers/*/seed*")})
            self._at = now
        return self._folders

    def temporaries(self, scope: str = "any", refresh: bool = False) -> set[Path]:
        found = set()
        for folder in self.folders(refresh):
            if scope == "teachers" and "_teachers" not in folder.parts:
                continue
            try:
                names = os.listdir(folder)
            except FileNotFoundError:
                continue
            found.update(folder / n for n in names if n.startswith(".") and n.endswith(".tmp"))
        return found

    def in_teachers(self, expected: int) -> bool:
        """Whether the teachers were still being trained (some teacher unfinished, the student not begun)."""
        self.folders(refresh=True)
        teachers = list(self.out.glob("*/_teachers/*/seed*"))
        students = [f for f in self.out.glob("*/*/seed*") if "_teachers" not in f.parts]
        if any((s / "last.pt").exists() for s in students):
            return False
        return len(teachers) < expected or not all((t / "metrics.json").exists() for t in teachers)


CHECKPOINTS = ("last.pt", "best.pt")


def aimed_at(tmp: Path, kill: dict) -> bool:
    """Whether a temporary is of a write `kill` aims at: its scope (any run folder, or the teachers') and,
    when it names them, its files (e.g. the checkpoints)."""
    if kill.get("scope") == "teachers" and "_teachers" not in tmp.parts:
        return False
    files = kill.get("files")
    return not files or any(tmp.name.startswith(f".{f}.") for f in files)


@dataclass
class Launch:
    """One process of a run: how it ended and which writes its watcher saw."""

    rc: int | None
    killed: bool
    seconds: float
    seen: list[Path] = field(default_factory=list)  # temporaries seen, in order
    first_write_s: float | None = None
    stderr: str = ""

    def writes(self, scope: str = "any", files: tuple[str, ...] | None = None) -> int:
        return sum(aimed_at(t, {"scope": scope, "files": files}) for t in self.seen)


def run_process(
    cmd: list[str], watcher: Watcher, log: Path, kill: dict | None = None, hold_checkpoint_s: float = 0.0
) -> Launch:
    """Start `cmd`, watch the writes into run folders, and SIGKILL it as `kill` says: {"mode": "write" |
    "after_write" | "startup", "scope": "any" | "teachers", "files": names or None, "k": int, "delay": s}.
    "write": once k temporaries it aims at (`aimed_at`) have been seen, as soon as one is there (a write
    in progress); "after_write": `delay` s after the k-th; "startup": `delay` s after the start."""
    t0 = time.monotonic()
    seen: dict[Path, None] = {}
    first = None
    deadline = t0 + kill["delay"] if kill is not None and kill["mode"] == "startup" else None
    sent = False
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=child_env(hold_checkpoint_s))
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    proc.send_signal(signal.SIGKILL)
                    sent = True
                    break
                tmps = watcher.temporaries()
                if tmps and first is None:
                    first = now - t0
                seen.update(dict.fromkeys(sorted(tmps)))
                if kill is not None and kill["mode"] != "startup" and deadline is None:
                    if sum(aimed_at(t, kill) for t in seen) >= kill["k"]:
                        if kill["mode"] == "after_write":
                            deadline = now + kill["delay"]
                        elif any(aimed_at(t, kill) for t in tmps):
                            proc.send_signal(signal.SIGKILL)
                            sent = True
                            break
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None and not sent:
                proc.kill()
            rc = proc.wait()
    tail = log.read_text(errors="replace").splitlines()[-15:]
    killed = sent and rc == -signal.SIGKILL
    return Launch(rc, killed, time.monotonic() - t0, list(seen), first, "\n".join(tail))


# ----------------------------------------------------------------------------------------------- comparing
def _history(path: Path) -> list[dict[str, str]]:
    from distillrec.training.checkpoint import read_run_file

    rows = list(csv.DictReader(io.StringIO(read_run_file(path, "-").decode())))
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


def _compare_metrics(fa: Path, fb: Path) -> list[str]:
    from distillrec.training.checkpoint import read_json

    ma, mb = read_json(fa / "metrics.json", "-"), read_json(fb / "metrics.json", "-")
    keys = ("test", "valid", "best_epoch", "epochs_run", "split_hash")
    return [
        f"metrics.json: {k} differs ({ma.get(k)!r} vs {mb.get(k)!r})" for k in keys if ma.get(k) != mb.get(k)
    ]


def _compare_best(fa: Path, fb: Path) -> list[str]:
    import torch

    from distillrec.training.checkpoint import load_checkpoint

    if not (fa / "best.pt").exists() and not (fb / "best.pt").exists():
        return []  # an untrainable model
    ba, bb = load_checkpoint(fa / "best.pt"), load_checkpoint(fb / "best.pt")
    ta, tb = ba["model"], bb["model"]
    ea, eb = ba.get("epoch"), bb.get("epoch")
    diffs = [] if ea == eb else [f"best.pt: epoch {ea} vs {eb}"]
    diffs += [] if set(ta) == set(tb) else ["best.pt: tensor names differ"]
    same = sorted(set(ta) & set(tb))
    return diffs + [f"best.pt: tensor {k} differs" for k in same if not torch.equal(ta[k], tb[k])]


def _compare_history(fa: Path, fb: Path) -> list[str]:
    same = _history(fa / "history.csv") == _history(fb / "history.csv")
    return [] if same else ["history.csv differs (timing columns left out)"]


def _compare_arrays(fa: Path, fb: Path) -> list[str]:
    from distillrec.training.checkpoint import read_npz

    diffs = []
    for name in ("per_user_test.npz", "split.npz"):
        if (fa / name).exists() or (fb / name).exists():
            xa, xb = read_npz(fa / name, "-"), read_npz(fb / name, "-")
            if set(xa) != set(xb) or any(not np.array_equal(xa[k], xb[k]) for k in xa):
                diffs.append(f"{name} differs")
    return diffs


def compare_roots(a: Path, b: Path) -> list[str]:
    """Differences between the run folders under `a` and their twins under `b` (empty: bit-identical). Files
    are read through the run-file readers, so each is verified against its recorded digest too."""
    from distillrec.errors import DistillrecError

    diffs = [f"{t} left behind" for root in (a, b) for t in sorted(root.rglob("*.tmp"))]
    folders_a = sorted(p.parent.relative_to(a) for p in a.rglob("config.yaml"))
    folders_b = sorted(p.parent.relative_to(b) for p in b.rglob("config.yaml"))
    if folders_a != folders_b:
        diffs.append(f"run folders differ: {[str(f) for f in folders_a]} vs {[str(f) for f in folders_b]}")
    if not folders_a:
        diffs.append(f"no run folder under {a}")
    for rel in folders_a:
        if not (b / rel).is_dir():
            continue
        for check in (_compare_metrics, _compare_best, _compare_history, _compare_arrays):
            try:
                diffs += [f"{rel}/{d}" for d in check(a / rel, b / rel)]
            except DistillrecError as exc:
                diffs.append(f"{rel}: {exc}")
    return diffs


# ----------------------------------------------------------------------------------------------- driver
@dataclass
class Outcome:
    run: str
    kills: int = 0
    kills_in_write: int = 0  # a temporary was left in a run folder: the kill landed inside a write
    kills_in_checkpoint_write: int = 0  # … of last.pt or best.pt
    kills_in_teachers: int = 0
    resumes: int = 0
    identical: bool = False
    reference_s: float = 0.0
    killed_s: float = 0.0
    kill_modes: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)


def epochs_done(out: Path, scope: str = "any") -> int:
    """History rows written so far in the run folders under `out` (of the teachers only, for that scope)."""
    rows = 0
    for path in [*out.glob("*/*/seed*/history.csv"), *out.glob("*/_teachers/*/seed*/history.csv")]:
        if scope == "teachers" and "_teachers" not in path.parts:
            continue
        try:
            rows += max(0, len(path.read_text().splitlines()) - 1)
        except OSError:
            pass
    return rows


def plan_kills(run: RunDef, n: int, rng: np.random.Generator, first_write_s: float | None) -> list[dict]:
    """n kills: for a run with teachers the first two hit the teachers; of the rest, one lands during
    start-up (when n > 2); of the others, half land right inside a write (every other one of them inside a
    checkpoint's) and half at a random moment after a write. Which write (`u`, a fraction) becomes a count
    when the kill is due (`due`)."""
    n_teacher = min(n, 2) if run.teachers else 0
    plan = []
    for i in range(n):
        mode = "write" if i % 2 == 0 else "after_write"
        plan.append(
            {
                "mode": mode,
                "scope": "teachers" if i < n_teacher else "any",
                "files": CHECKPOINTS if mode == "write" and i % 4 == 0 else None,
                "u": float(rng.random()),
                "delay": round(float(rng.uniform(0.0, 0.6)), 3),
            }
        )
    if n - n_teacher > 2:
        plan[-1] = {
            **plan[-1],
            "mode": "startup",
            "files": None,
            "delay": round(float(rng.uniform(0.2, 1.0)) * (first_write_s or 2.0), 3),
        }
    rest = plan[n_teacher:]
    return plan[:n_teacher] + [rest[i] for i in rng.permutation(len(rest))]


def due(kill: dict, plan: list[dict], ref: Launch, out_a: Path, out_b: Path) -> dict:
    """The kill with `k`, the write it waits for: spread over the writes it aims at still to come (the
    reference's, less the share of its epochs already done in B) and the kills of its scope still planned."""
    scope = kill["scope"]
    writes = ref.writes(scope, kill.get("files"))
    left = writes * max(0.0, 1.0 - epochs_done(out_b, scope) / max(1, epochs_done(out_a, scope)))
    kills_left = 1 + sum(1 for k in plan if k["scope"] == scope)
    return {**kill, "k": 1 + int(kill["u"] * max(1.0, 2 * left / kills_left))}


def train_in_process(run: RunDef, data: Path, out: Path) -> Launch:
    """The reference run through the Python API in this process, with one thread (the same run as
    `distillrec train`, without a second interpreter's start-up; the writes are not watched)."""
    import torch

    from distillrec.experiment.api import train
    from distillrec.experiment.spec import parse_assignments

    t0, threads = time.monotonic(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(
            run.model,
            str(data),
            seeds=[run.seed],
            set=parse_assignments(list(run.sets)),
            out=out,
            device="cpu",
            quiet=True,
            distill=run.distill,
        )
    finally:
        torch.set_num_threads(threads)
    return Launch(0, False, time.monotonic() - t0)


def check_run(
    run: RunDef,
    data: Path,
    work: Path,
    kills: int,
    seed: int,
    max_extra: int = 8,
    plan: list[dict] | None = None,
    reference_in_process: bool = False,
    hold_checkpoint_s: float = 0.0,
) -> Outcome:
    """Train `run` uninterrupted into work/A, then killed and resumed into work/B until it finishes, and
    compare. `kills` are planned from the reference's writes (or given as `plan`, with their `k`); when
    none of them landed inside a checkpoint write, up to `max_extra` more are aimed at one.
    `reference_in_process` (only with a `plan`): the reference through the API here, not a subprocess.
    `hold_checkpoint_s`: the killed runs hold each checkpoint's temporary open that long (see HOLD)."""
    rng = np.random.default_rng(seed)
    work.mkdir(parents=True, exist_ok=True)
    out_a, out_b = work / "A", work / "B"
    for d in (out_a, out_b):
        shutil.rmtree(d, ignore_errors=True)
    outcome = Outcome(run.name)
    log = work / "stderr.log"
    if reference_in_process:
        ref = train_in_process(run, data, out_a)
    else:
        ref = run_process(run.args(data, out_a, False), Watcher(out_a), log)
    outcome.reference_s = round(ref.seconds, 1)
    if ref.rc != 0:
        outcome.differences.append(f"the reference run failed (exit {ref.rc}): {ref.stderr}")
        return outcome
    watcher = Watcher(out_b)
    given = plan is not None
    plan = list(plan) if given else plan_kills(run, kills, rng, ref.first_write_s)
    extra, total = 0, 0.0
    while True:
        if plan:
            kill = plan.pop(0)
            kill = kill if given else due(kill, plan, ref, out_a, out_b)
        elif outcome.kills_in_checkpoint_write == 0 and extra < max_extra:
            extra += 1
            kill = {"mode": "write", "scope": "any", "files": CHECKPOINTS, "k": int(rng.integers(1, 3))}
        else:
            kill = None
        args = run.args(data, out_b, outcome.kills > 0)
        launch = run_process(args, watcher, log, kill, hold_checkpoint_s)
        total += launch.seconds
        if not launch.killed:
            if launch.rc != 0:
                outcome.differences.append(f"a run failed (exit {launch.rc}): {launch.stderr}")
            break  # finished (a kill not yet due is dropped: a finished run resumes as a no-op)
        outcome.kills += 1
        outcome.resumes += 1
        files = "/" + ",".join(kill["files"]) if kill.get("files") else ""
        outcome.kill_modes.append(f"{kill['mode']}/{kill['scope']}{files}/k={kill.get('k', 0)}")
        left = watcher.temporaries(refresh=True)
        outcome.kills_in_write += bool(left)
        outcome.kills_in_checkpoint_write += any(aimed_at(t, {"files": CHECKPOINTS}) for t in left)
        if run.teachers and watcher.in_teachers(run.teachers):
            outcome.kills_in_teachers += 1
    outcome.killed_s = round(total, 1)
    if not outcome.differences:
        outcome.differences += compare_roots(out_a, out_b)
    if outcome.kills_in_checkpoint_write == 0:
        outcome.differences.append("no kill landed inside a checkpoint write")
    if run.teachers and outcome.kills_in_teachers == 0:
        outcome.differences.append("no kill landed during the teachers' training")
    outcome.identical = not outcome.differences
    return outcome


def table(outcomes: list[Outcome]) -> str:
    head = (
        "run",
        "kills",
        "in a write",
        "in a checkpoint write",
        "in teachers",
        "resumes",
        "identical",
        "reference s",
        "killed+resumed s",
    )
    rows = [
        (
            o.run,
            str(o.kills),
            str(o.kills_in_write),
            str(o.kills_in_checkpoint_write),
            str(o.kills_in_teachers) if "ckd" in o.run else "-",
            str(o.resumes),
            "yes" if o.identical else "NO",
            f"{o.reference_s:.1f}",
            f"{o.killed_s:.1f}",
        )
        for o in outcomes
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 kills per run instead of 6")
    parser.add_argument("--kills", type=int, default=None, help="planned kills per run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    parser.add_argument("--json", action="store_true", help="print the JSON object only, without the table")
    parser.add_argument(
        "--hold-checkpoint",
        type=float,
        default=0.0,
        help="seconds each checkpoint's temporary stays open in the killed runs (default 0: as written)",
    )
    args = parser.parse_args(argv)
    kills = args.kills if args.kills is not None else (3 if args.quick else 6)
    names = [n for n in args.runs.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown run {unknown[0]!r}; known: {', '.join(RUNS)}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    outcomes = []
    try:
        data = {key: DATASETS[key](work / "data" / f"kr-{key}") for key in {RUNS[n].dataset for n in names}}
        for i, name in enumerate(names):
            run = RUNS[name]
            outcome = check_run(
                run,
                data[run.dataset],
                work / name,
                kills,
                args.seed * 1000 + i,
                hold_checkpoint_s=args.hold_checkpoint,
            )
            outcomes.append(outcome)
            for d in outcome.differences:
                print(f"{name}: {d}", file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if not args.json:
        print(table(outcomes))
    ok = bool(outcomes) and all(o.identical for o in outcomes)
    result = {
        "benchmark": "kill_resume",
        "ok": ok,
        "kills_per_run": kills,
        "seed": args.seed,
        "runs": [asdict(o) for o in outcomes],
    }
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
