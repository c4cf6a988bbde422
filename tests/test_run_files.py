"""Run files: verified on read, written with the umask, owned by one process, temporaries cleared."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import stat
import time
import warnings

import pytest

from distillrec import load_run, train
from distillrec.errors import DistillrecError
from distillrec.training.checkpoint import (
    CHECKSUMS,
    RunFileError,
    load_checkpoint,
    read_run_file,
    save_checkpoint,
    write_run_file,
)
from distillrec.training.ownership import own_run_folder
from tests.conftest import write_mmrec


def test_a_file_changed_after_it_was_written_is_named_as_damaged(tmp_path):
    path = tmp_path / "a.bin"
    write_run_file(path, b"first")
    write_run_file(path, b"second")
    assert read_run_file(path, "retrain") == b"second"
    path.write_bytes(b"secomd")
    with pytest.raises(RunFileError, match=r"a\.bin: damaged .*; retrain"):
        read_run_file(path, "retrain")


def test_a_kill_between_recording_and_replacing_leaves_a_file_that_verifies(tmp_path):
    # the digest is recorded before the file is replaced, and the previous one is kept beside it
    path = tmp_path / "last.pt"
    write_run_file(path, b"epoch 1")
    record = json.loads((tmp_path / CHECKSUMS).read_text())
    import hashlib

    record["last.pt"] = [record["last.pt"][-1], hashlib.sha256(b"epoch 2").hexdigest()]
    (tmp_path / CHECKSUMS).write_text(json.dumps(record))  # killed here: file still holds epoch 1
    assert read_run_file(path, "x") == b"epoch 1"
    path.write_bytes(b"epoch 2")  # killed after the replacement: verifies too
    assert read_run_file(path, "x") == b"epoch 2"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_damaged_checkpoint_is_one_line_not_a_traceback(tmp_path, damage):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": {}, "epoch": 3})
    data = path.read_bytes()
    (tmp_path / CHECKSUMS).unlink()  # a run from before digests: the archive itself must still be checked
    # garbage that opens like a pickle of an unknown protocol, on which torch warns before it fails
    garbage = b"\x80\x67" + random.Random(0).randbytes(298)
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": garbage, "empty": b""}[damage])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RunFileError, match=r"best\.pt: damaged, not a readable checkpoint"):
            load_checkpoint(path, "cpu", "retrain the run")
    assert [str(w.message) for w in caught] == []  # one line, and no warning before it


def test_run_files_follow_the_umask(tmp_path, tiny):
    old = os.umask(0o022)
    try:
        (r,) = train("bprmf", tiny, seeds=[1], set={"epochs": 1}, out=tmp_path)
    finally:
        os.umask(old)
    for name in ("config.yaml", "metrics.json", "best.pt", "last.pt", "history.csv", "split.npz", CHECKSUMS):
        assert stat.S_IMODE((r.run_dir / name).stat().st_mode) == 0o644, name


def test_leftovers_of_an_interrupted_write_are_removed_at_the_next_start(tmp_path, tiny):
    (r,) = train("bprmf", tiny, seeds=[1], set={"epochs": 2}, out=tmp_path)
    left = [r.run_dir / ".last.pt.k3j4h5.tmp", r.run_dir / ".best.pt.zz.tmp"]
    for p in left:
        p.write_bytes(b"partial")
    train("bprmf", tiny, seeds=[1], set={"epochs": 2}, out=tmp_path, resume=True)
    assert not any(p.exists() for p in left)


def test_evaluating_a_run_whose_weights_are_missing_is_refused(tmp_path, tiny):
    folder = write_mmrec(tiny, tmp_path / "tiny")
    (r,) = train("bprmf", folder, seeds=[1], set={"epochs": 2}, out=tmp_path / "runs")
    (r.run_dir / "best.pt").unlink()
    with pytest.raises(DistillrecError, match=r"best\.pt: missing"):
        load_run(r.run_dir)


def _hold(run_dir, ready) -> None:  # noqa: ANN001
    with own_run_folder(run_dir):
        ready.set()
        time.sleep(60)


@pytest.mark.slow
def test_a_folder_held_by_a_live_process_is_refused_and_freed_when_it_dies(tmp_path):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold, args=(tmp_path / "run", ready))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunFileError, match=f"in use by process {holder.pid}"):
            with own_run_folder(tmp_path / "run", wait=False):
                pass
        os.kill(holder.pid, signal.SIGKILL)  # a dead owner's lock never blocks the folder
        holder.join(30)
        with own_run_folder(tmp_path / "run", wait=False):
            pass
    finally:
        if holder.is_alive():
            holder.kill()


def _train_into(out, queue) -> None:  # noqa: ANN001
    import torch

    torch.set_num_threads(1)
    from tests.conftest import make_dataset

    (r,) = train(
        "bprmf", make_dataset(), seeds=[5], set={"epochs": 30, "patience": 100}, out=out, resume=True
    )
    queue.put(r.metrics)


@pytest.mark.slow
def test_two_processes_asking_for_one_run_train_it_once(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_train_into, args=(tmp_path, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    # the second waited for the first and reused its run: the very same record, down to its wall time
    assert got[0] == got[1]
    (run_dir,) = list(tmp_path.glob("synthetic/*/seed5"))
    assert json.loads((run_dir / "metrics.json").read_text())["seconds"] == got[0]["seconds"]
    assert not list(run_dir.glob(".*.tmp"))
