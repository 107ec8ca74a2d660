"""The simulations run on an export, recorded in it: ``<export>/sims.json``, a JSON list with one
record per ``ternpe sim`` or ``ternpe verify`` run (newest last), which ``ternpe report`` lists.
Each record is appended by rewriting the file whole (:func:`ternpe.outdir.write_whole`), so an
interrupted run leaves the old list. A new export (``ternpe export`` replaces the directory
whole) starts with none: the records are of the export they lie in."""

from __future__ import annotations

import json
import pathlib
import time

from .outdir import write_whole

__all__ = ["SIMLOG", "read_records", "append_record"]

#: The file, inside the export directory.
SIMLOG = "sims.json"


def read_records(export_dir) -> list:
    """The export's records, oldest first ([] when there are none); raises ValueError naming the
    file when it is not a list of records."""
    path = pathlib.Path(export_dir) / SIMLOG
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a list of simulation records ({e}); delete it (the next `ternpe sim` "
                         f"starts a new one)") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: not a list of simulation records; delete it (the next `ternpe sim` starts a "
                         f"new one)")
    return records


def append_record(export_dir, record: dict, log=print) -> bool:
    """Append ``record`` (its time added) to the export's list; returns whether it was written. A
    list that cannot be read or written (a read-only export) is said, not raised: the
    simulation's own result stands without it."""
    path = pathlib.Path(export_dir) / SIMLOG
    try:
        records = read_records(export_dir)
    except ValueError as e:
        log(f"ternpe: this run is not recorded: {e}")
        return False
    records.append({"time": time.strftime("%Y-%m-%d %H:%M:%S"), **record})
    try:
        write_whole(path, json.dumps(records, indent=1) + "\n")
    except OSError as e:
        log(f"ternpe: this run is not recorded in {path}: {e.strerror or e}")
        return False
    return True
