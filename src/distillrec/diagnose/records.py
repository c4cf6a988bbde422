"""The diagnoses the proof has measured, kept beside the experiment's ledger (`<state>/diagnoses.jsonl`).

Run folders are not under version control, the ledger is: without a record, every fresh checkout would train
each diagnosed plain run (and CKD's teachers) again to measure a quantity already measured. A record keeps
the quantity of one ledger run, for one method, with how far the diagnosed folder was from the ledger's
figures (so a quantity read from another training of the specification stays marked as such). It keeps no
verdict: verdicts are drawn from the current thresholds each time.

A record is keyed by the ledger run's id, the method, and the quantity's definition (its text and VERSION):
changing what a diagnostic computes means bumping VERSION, after which old records are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from distillrec.errors import DataError

VERSION = 1
FILE = "diagnoses.jsonl"


@dataclass(frozen=True)
class Record:
    record: str  # the ledger run's id
    method: str
    quantity: str
    version: int
    value: float
    run: str  # the folder diagnosed
    ledger_gap: float | None  # as `Ledger.folder_gap` measured it when the quantity was

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.record, self.method, self.quantity, self.version)


class DiagnosisRecords:
    """Append-only; the last record of a key wins (a re-measurement replaces an earlier one)."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / FILE
        self._by_key: dict[tuple[str, str, str, int], Record] = {}
        if self.path.is_file():
            text = self.path.read_text()
            whole = text[: text.rfind("\n") + 1]  # a last line cut by a writer is not a record
            for n, line in enumerate(whole.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = Record(**json.loads(line))
                except (ValueError, TypeError) as exc:
                    raise DataError(f"{self.path}:{n}: not a diagnosis record ({exc})") from exc
                self._by_key[rec.key] = rec

    def get(self, record: str, method: str, quantity: str) -> Record | None:
        return self._by_key.get((record, method, quantity, VERSION))

    def add(self, rec: Record) -> None:
        """Append one record (one line, flushed at once: a line is whole or absent)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file() and self.path.stat().st_size:
            with self.path.open("r+b") as f:  # drop a last line cut by a writer, so the new one starts a line
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    f.seek(0)
                    f.truncate(f.read().rfind(b"\n") + 1)
        with self.path.open("a") as f:
            f.write(json.dumps(asdict(rec), sort_keys=True) + "\n")
            f.flush()
        self._by_key[rec.key] = rec

    def __iter__(self) -> Iterator[Record]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)
