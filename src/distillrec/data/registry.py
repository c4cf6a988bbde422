"""Find a dataset by name or folder, detect its format, load it.

Names come from, in this order (the first folder claiming a name keeps it):
  1. the datasets bundled inside the package (`scientific`), located with importlib.resources so that
     an installed wheel works from any directory;
  2. the folders under each entry of the environment variable DISTILLREC_DATA (os.pathsep-separated);
  3. the folders under `../shared/datasets` relative to the current directory, when it exists.
A folder is known by its own name and by the stem of its `<stem>.inter` file (`amazon-baby` is also
`baby`); names are case-insensitive. Nothing is cached on disk: each load reads the files again.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from distillrec.data.dataset import Dataset
from distillrec.data.formats.common import check_folder
from distillrec.data.formats.mmrec import read_mmrec
from distillrec.data.formats.recbole import find_files, is_typed_header, read_recbole
from distillrec.data.formats.sgfd import is_sgfd, read_sgfd
from distillrec.data.split import check_split
from distillrec.errors import DataError, DistillrecError

log = logging.getLogger(__name__)

ENV_VAR = "DISTILLREC_DATA"
BUILTIN = ("scientific",)
SHARED_RELATIVE = Path("..") / "shared" / "datasets"
FORMATS = ("mmrec", "sgfd", "recbole")


@dataclass
class Entry:
    """A dataset folder known by one or more names."""

    path: Path | None  # None for a bundled dataset (its place is resolved at load time)
    aliases: list[str] = field(default_factory=list)
    builtin: str | None = None


def detect_format(folder: Path | str) -> str:
    """'sgfd' if train.csv + test.csv exist, else 'recbole' if the .inter header is typed, else 'mmrec'.

    SGFD wins over an `.inter` next to it (amazon-office-sgfd has both): its csv files are the
    original and its reader carves the validation split that the derived `.inter` lacks.
    """
    folder = check_folder(folder)
    if is_sgfd(folder):
        return "sgfd"
    inters = sorted(p for p in folder.glob("*.inter") if p.is_file())
    if not inters:
        raise DataError(f"{folder}: no .inter file (nor train.csv + test.csv); not a dataset folder")
    if all(is_typed_header(p) for p in inters):
        return "recbole"
    return "mmrec"


def read_folder(
    folder: Path | str, split: str = "auto", seed: int = 0, fmt: str | None = None, name: str | None = None
) -> Dataset:
    """Load a dataset folder in the given or detected format."""
    fmt = fmt or detect_format(folder)
    if fmt == "sgfd":
        return read_sgfd(folder, split=split, seed=seed)
    if fmt == "recbole":
        return read_recbole(folder, name=name, split=split, seed=seed)
    if fmt == "mmrec":
        return read_mmrec(folder, name=name, split=split, seed=seed)
    raise DataError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")


def _stems(folder: Path) -> list[str]:
    """Names a folder is also known by: the stems of its `<stem>.inter` (and SGFD-less RecBole) files."""
    stems = [p.name[: -len(".inter")] for p in sorted(folder.glob("*.inter")) if p.name.count(".") == 1]
    if not stems and not is_sgfd(folder):
        try:
            stems = [find_files(folder, None)[0]]
        except DistillrecError:
            stems = []
    return stems


def _looks_like_dataset(folder: Path) -> bool:
    return folder.is_dir() and (is_sgfd(folder) or any(folder.glob("*.inter")))


def search_roots() -> list[Path]:
    """Folders whose subfolders are datasets: DISTILLREC_DATA entries, then ../shared/datasets."""
    roots = [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    shared = Path.cwd() / SHARED_RELATIVE
    if shared.is_dir():
        roots.append(shared.resolve())
    return roots


def known_datasets() -> dict[str, Entry]:
    """Every name -> its entry; cheap (lists folders, reads no data)."""
    names: dict[str, Entry] = {}
    for builtin in BUILTIN:
        names[builtin] = Entry(path=None, aliases=[builtin], builtin=builtin)
    seen: set[Path] = set()
    for root in search_roots():
        if not root.is_dir():
            log.warning("%s=%s: %s is not a folder, ignored", ENV_VAR, os.environ.get(ENV_VAR), root)
            continue
        candidates = [root] if _looks_like_dataset(root) else sorted(p for p in root.iterdir() if p.is_dir())
        for folder in candidates:
            folder = folder.resolve()
            if folder in seen or not _looks_like_dataset(folder):
                continue
            seen.add(folder)
            entry = Entry(path=folder)
            for alias in [folder.name, *_stems(folder)]:
                key = alias.lower()
                if key not in names:
                    names[key] = entry
                    entry.aliases.append(key)
    return names


@contextmanager
def _builtin_folder(name: str) -> Iterator[tuple[Path, bool]]:
    """The bundled dataset as a real folder: in place for a normal install, else a temporary copy
    (zipped install), with a flag saying which."""
    traversable = resources.files("distillrec") / "datasets" / name
    if isinstance(traversable, Path):
        yield traversable, False
        return
    with tempfile.TemporaryDirectory(prefix=f"distillrec-{name}-") as tmp:
        for item in traversable.iterdir():
            if item.is_file():
                (Path(tmp) / item.name).write_bytes(item.read_bytes())
        yield Path(tmp), True


def _load_entry(entry: Entry, split: str, seed: int) -> Dataset:
    if entry.builtin is not None:
        with _builtin_folder(entry.builtin) as (folder, temporary):
            ds = read_folder(folder, split=split, seed=seed, fmt="mmrec", name=entry.builtin)
            if temporary:
                ds.source = f"<bundled distillrec/datasets/{entry.builtin}>"  # the temporary copy is gone
            return ds
    assert entry.path is not None
    return read_folder(entry.path, split=split, seed=seed)


def _is_path(name_or_path: str | Path) -> bool:
    if isinstance(name_or_path, Path):
        return True
    s = str(name_or_path)
    return os.sep in s or "/" in s or (os.altsep is not None and os.altsep in s) or s.startswith(("~", "."))


def load_dataset(name_or_path: str | Path, split: str = "auto", seed: int = 0) -> Dataset:
    """A dataset by built-in/shared name (case-insensitive) or by folder path, format auto-detected.

    split: auto (the format's own: x_label for MMRec, the published split for SGFD, leave-one-out by
    timestamp for RecBole), x_label, random (per user 8:1:1), loo. A plain name that is no known
    dataset but an existing folder in the current directory is read as a folder.
    """
    check_split(split)
    if _is_path(name_or_path):
        path = Path(name_or_path)
        if path.is_file() and path.suffix == ".inter":  # a run records its MMRec source as the .inter file
            return read_folder(path.parent, split=split, seed=seed, name=path.name[: -len(".inter")])
        return read_folder(path, split=split, seed=seed)
    name = str(name_or_path)
    known = known_datasets()
    entry = known.get(name.lower())
    if entry is not None:
        return _load_entry(entry, split, seed)
    if Path(name).is_dir():
        return read_folder(Path(name), split=split, seed=seed)
    raise DataError(
        f"unknown dataset {name!r}; known: {', '.join(sorted(known))} "
        f"(or give a folder path; more names come from folders under ${ENV_VAR})"
    )


def list_datasets(split: str = "auto", seed: int = 0) -> list[dict]:
    """One dict per dataset (not per name): Dataset.stats() plus aliases, path, format, builtin.

    A dataset that fails to load is listed with an `error` message instead of stats.
    """
    out = []
    unique: dict[int, Entry] = {id(e): e for e in known_datasets().values()}
    for entry in unique.values():
        info: dict = {
            "name": entry.aliases[0],
            "aliases": list(entry.aliases),
            "path": str(entry.path) if entry.path else f"<bundled>/{entry.builtin}",
            "builtin": entry.builtin is not None,
        }
        try:
            info["format"] = "mmrec" if entry.path is None else detect_format(entry.path)
            ds = _load_entry(entry, split, seed)
        except DistillrecError as exc:
            info["error"] = str(exc)
        else:
            stats = ds.stats()
            stats.pop("name", None)
            info.update(stats)
            info["dataset"] = ds.name
        out.append(info)
    return out
