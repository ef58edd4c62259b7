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
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError) as err:  # invalid JSON or UTF-8, or nested beyond reason
        raise DamagedManifest(path, f"it is not valid JSON ({type(err).__name__})") from None
    if not isinstance(manifest, dict):
        raise DamagedManifest(path, f"it holds a JSON {type(manifest).__name__}, not an object")
    # The data file is named by the manifest, which is read from disk: it must be a file of this folder.
    name = manifest.get("file")
    if name is not None and (not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..")):
        raise SourceError(f"the partition {folder} names a data file outside its folder",
                          "its manifest.json was edited or damaged", "extract that day again with --force")
    return manifest


class DamagedManifest(SourceError):
    """A partition's ``manifest.json`` cannot be read as one: invalid JSON, a field missing or of a wrong type."""

    def __init__(self, path: Path, why: str, todo: str = "extract that day again with --force"):
        self.path = Path(path)
        super().__init__(f"the manifest {path} is damaged", why, todo)


def check_fields(path: Path, manifest: dict, fields: dict) -> None:
    """Each of ``fields`` (name -> type or tuple of types) is in ``manifest`` with that type, or DamagedManifest.

    ``bool`` is not taken for ``int``; a list of columns must hold objects with text fields."""
    for name, kinds in fields.items():
        value = manifest.get(name)
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if name not in manifest:
            raise DamagedManifest(path, f"it has no {name!r}")
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join(kind.__name__ for kind in kinds)
            raise DamagedManifest(path, f"its {name!r} is {_shown(value)}, not {wanted}")
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise DamagedManifest(path, f"its {name!r} is negative ({value})")


def check_columns(path: Path, columns: list, keys: tuple) -> None:
    """Every column of a manifest is an object with these text ``keys``, and there is at least one."""
    if not columns:
        raise DamagedManifest(path, "its 'columns' is empty")
    for place, column in enumerate(columns):
        if not isinstance(column, dict) or not all(isinstance(column.get(key), str) and column.get(key)
                                                   for key in keys):
            raise DamagedManifest(path, f"its column {place + 1} is {_shown(column)}, not an object with text"
                                        f" {', '.join(keys)}")


def _shown(value) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= 60 else text[:50] + "..."


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
