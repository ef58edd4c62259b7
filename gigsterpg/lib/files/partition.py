"""Date partitions on local disk: whole or absent.

A partition is a folder ``<root>/postgres/<table>/<day>/`` or
``<root>/csv/<day>/`` (results: ``<root>/results/<day>/``). It is written
into a hidden temporary folder beside it (``.<day>.tmp-<pid>-<token>``), its
files flushed to disk, the manifest written last, and then renamed into
place: a reader sees the whole partition or none. A partition counts only
when its manifest is there. Leftovers of a killed writer (temporary folders,
a replaced partition not yet removed) are hidden, and removed by the next
writer of the same partition.
"""
import contextlib
import datetime
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator, Optional

from gigsterpg import faults
from gigsterpg.exc import SourceError

MANIFEST = "manifest.json"


def day_folder(root: Path, source: str, day: datetime.date, table: Optional[str] = None) -> Path:
    """Where the partition of ``source`` (and ``table``) for ``day`` lives: the day asked for, never the clock's."""
    parts = [source] + ([table] if table else []) + [day.isoformat()]
    return Path(root).joinpath(*parts)


def read_manifest(folder: Path) -> Optional[dict]:
    """The manifest of a complete partition, or None when the partition is absent (or was never finished)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    # The data file is named by the manifest, which is read from disk: it must be a file of this folder.
    name = manifest.get("file")
    if name is not None and (not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..")):
        raise SourceError(f"the partition {folder} names a data file outside its folder",
                          "its manifest.json was edited or damaged", "extract that day again with --force")
    return manifest


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``manifest.json`` into the (temporary) folder: the partition's last file."""
    faults.point("snapshot-data")
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    _fsync(path)


def _leftovers(final: Path) -> Iterator[Path]:
    if final.parent.is_dir():
        for path in final.parent.iterdir():
            if path.name.startswith((f".{final.name}.tmp-", f".{final.name}.old-")):
                yield path


@contextlib.contextmanager
def writing(final: Path) -> Iterator[Path]:
    """A temporary folder to write the partition ``final`` into; renamed into place if the block succeeds.

    The caller holds the step's lock, so any leftover of the same partition
    belongs to a writer that died: it is removed first. On an error the
    temporary folder is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in _leftovers(final):
        shutil.rmtree(leftover, ignore_errors=True)
    temp = final.parent / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    temp.mkdir()
    try:
        yield temp
        if not (temp / MANIFEST).is_file():
            raise RuntimeError(f"partition {final} written without a manifest")
        for path in temp.iterdir():
            _fsync(path)
        faults.point("snapshot-manifest")
        publish(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def publish(temp: Path, final: Path) -> None:
    """Rename ``temp`` into ``final``; a partition already there is moved aside first, then removed."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
        os.rename(final, old)
    os.rename(temp, final)
    _fsync(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    faults.point("snapshot-published")
