"""Output directories that are replaced whole: checked before any work, written beside, renamed
into place. A run (``ternpe train``) and an export (``ternpe export``) are written this way, so
an interrupted or failed write leaves the old directory as it was, and never half a new one."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

__all__ = ["check_out_dir", "replace_dir"]


def check_out_dir(out, *, markers: tuple, what: str, noun: str, error=ValueError) -> pathlib.Path:
    """Refuse, before any work, an ``--out`` directory that cannot be written: a file, a path
    under a file, a non-empty directory holding none of ``markers`` (not ``noun``), a place
    without write permission. ``what`` names the directory (``run``, ``export``); ``error`` is raised."""
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise error(f"--out {out} is a file; give a directory for the {what}")
    if out.is_dir() and any(out.iterdir()) and not any((out / m).is_file() for m in markers):
        raise error(f"--out {out} holds files that are not {noun}; give a new or empty directory "
                    f"(a{'n' if what[0] in 'aeiou' else ''} {what} directory is replaced as a whole)")
    probe = out.resolve().parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise error(f"--out {out}: cannot write there, {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise error(f"--out {out}: cannot write in {probe} (permission denied); choose another directory")
    return out


def replace_dir(out, fill) -> None:
    """Call ``fill(tmp)`` to write a new directory beside ``out``, then rename it over ``out``
    (an old one there is removed only once the new one is in place; if that rename fails, the old
    one is put back). Whatever ``fill`` raises leaves ``out`` untouched and no temporary behind."""
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        fill(tmp)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            if old is not None:
                old.rename(out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
