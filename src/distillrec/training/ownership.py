"""A run folder is owned by one process at a time.

The experiment engine runs jobs in parallel (and on a cluster), and two jobs may resolve to the same run
folder; their writes must not interleave. Ownership is an exclusive `flock` on the folder's `.lock`: the
kernel releases it when the owner exits, however it exits (kill -9 included), so a dead process never blocks
a folder. A second process waits for the owner (then finds its finished run) or, asked not to wait, is told
who holds the folder. Taking a folder also clears the temporary files an interrupted write left behind.
(`flock` is per machine: processes on different hosts sharing a network folder are not excluded.)
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from distillrec.training.checkpoint import RunFileError, remove_temporaries

LOCK_FILE = ".lock"
log = logging.getLogger("distillrec.training")


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if text:
            return text
    return "another process"


@contextlib.contextmanager
def own_run_folder(run_dir: Path, wait: bool = True) -> Iterator[None]:
    """Hold `run_dir` for the duration of the block (created if missing)."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o666)
    except OSError as exc:
        raise RunFileError(
            f"{run_dir}: cannot create the run folder ({exc.strerror}); choose another --out"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise RunFileError(
                    f"{run_dir} is in use by {holder}; wait for it to finish or choose another --out"
                ) from None
            log.info("waiting for %s, which holds %s", holder, run_dir)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        for tmp in remove_temporaries(run_dir):
            log.info("removed %s, left by an interrupted write", tmp.name)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
