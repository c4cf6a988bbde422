"""Run files that are written atomically and read back verified: a crash never leaves a half-written
file, and a damaged one is named in one line with what to do, never loaded as if it were whole.

Every file written into a run folder has its SHA-256 recorded in the folder's `checksums.json` before the
file is replaced; the record keeps the previous digest beside the new one, so a kill at any moment (before,
during or after the replacement) leaves a file that verifies.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from distillrec.atomic import TEMP_SUFFIX as TEMP_SUFFIX  # re-exported for the run files' readers and writers
from distillrec.atomic import atomic_write_bytes as atomic_write_bytes
from distillrec.atomic import atomic_write_text as atomic_write_text
from distillrec.errors import DistillrecError, warnings_only_on_success

CHECKSUMS = "checksums.json"


class RunFileError(DistillrecError):
    """A run file is missing, damaged or unreadable: the message names it and says what to do."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_checksums(folder: Path) -> dict[str, list[str]]:
    path = folder / CHECKSUMS
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        raise RunFileError(
            f"{path}: damaged (not readable JSON); the run's files cannot be verified — "
            "retrain the run in a new folder"
        ) from None
    if not isinstance(raw, dict):
        raise RunFileError(f"{path}: damaged (not a mapping of file names to digests)")
    return {str(k): [str(d) for d in (v if isinstance(v, list) else [v])] for k, v in raw.items()}


def write_run_file(path: Path, data: bytes) -> None:
    """Write a run folder's file atomically, its digest recorded first (see the module docstring)."""
    path = Path(path)
    record = _read_checksums(path.parent)
    new = _digest(data)
    before = record.get(path.name, [])[-1:]
    record[path.name] = [d for d in before if d != new] + [new]
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    atomic_write_bytes(path.parent / CHECKSUMS, text.encode(), durable=False)
    atomic_write_bytes(path, data)


def read_run_file(path: Path, remedy: str) -> bytes:
    """The bytes of a run file, verified against the digest recorded when it was written (files of runs
    made before digests were recorded are read as they are)."""
    path = Path(path)
    if not path.exists():
        raise RunFileError(f"{path}: missing; {remedy}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunFileError(f"{path}: cannot be read ({exc.strerror}); {remedy}") from None
    expected = _read_checksums(path.parent).get(path.name)
    if expected is not None and _digest(data) not in expected:
        raise RunFileError(
            f"{path}: damaged (its checksum differs from the one recorded when it was written); {remedy}"
        )
    return data


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete what interrupted atomic writes left in `folder` (`.NAME.XXXX.tmp`); return what was removed."""
    gone = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            gone.append(tmp)
    return gone


def write_json(path: Path, obj: Any) -> None:
    write_run_file(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def write_yaml(path: Path, obj: Any) -> None:
    write_run_file(path, yaml.safe_dump(obj, sort_keys=False).encode())


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """The arrays as a compressed .npz file's bytes."""
    buf = io.BytesIO()
    # numpy's stub reads **arrays as possibly holding its `allow_pickle` keyword (not passed: older numpy
    # versions lack it)
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    write_run_file(path, npz_bytes(**arrays))


def read_json(path: Path, remedy: str) -> Any:
    try:
        return json.loads(read_run_file(path, remedy))
    except ValueError:
        raise RunFileError(f"{path}: damaged (not valid JSON); {remedy}") from None


def read_yaml(path: Path, remedy: str) -> Any:
    try:
        return yaml.safe_load(read_run_file(path, remedy))
    except yaml.YAMLError:
        raise RunFileError(f"{path}: damaged (not valid YAML); {remedy}") from None


def read_npz(path: Path, remedy: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(read_run_file(path, remedy)), allow_pickle=False) as arr:
            return {k: arr[k] for k in arr.files}
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise RunFileError(f"{path}: damaged ({type(exc).__name__}); {remedy}") from None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_run_file(path, buf.getvalue())


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu", remedy: str = "retrain the run"
) -> dict[str, Any]:
    data = read_run_file(path, remedy)
    try:
        with warnings_only_on_success():
            state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged archive
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise RunFileError(f"{path}: damaged, not a readable checkpoint ({reason}); {remedy}") from None
    if not isinstance(state, dict):
        raise RunFileError(f"{path}: not a distillrec checkpoint; {remedy}")
    return state
