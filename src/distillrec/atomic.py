"""Atomic file writes, the one primitive every layer that writes files shares (run files, feature files,
cached graphs): the data goes to a temporary file in the target's folder, which replaces the target in one
step, so a reader or a crash never meets a half-written file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"  # temporaries are named .<target name>.<random>.tmp


def file_mode() -> int:
    """What a plain `open()` would give a new file under the current umask (mkstemp's 0600 ignores it)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through a temporary file in the same folder, replaced in one step (`durable`:
    flushed to disk first, so that it survives a power cut as well as a killed process)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())
