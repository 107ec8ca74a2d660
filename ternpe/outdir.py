"""Output directories: which ones ternpe may replace or reuse, and how one is replaced whole.

Every directory ternpe makes (a run, an export, generated Verilog, the work directories of sim,
build and verify) carries a marker, ``.ternpe``: ``{"kind": ..., "version": 1}``. ternpe
replaces or reuses only a directory that does not exist, is empty, or carries the marker of the
same kind; one written before the marker existed is taken when it holds only files ternpe writes
there (:data:`KINDS`). Anything else is refused, naming what is there; with ``--force`` it is
moved aside to ``<dir>.old-<date>-<time>``, never deleted. What ternpe deletes (the old run or
export it replaces, a verify work directory it starts afresh) holds nothing but what ternpe writes
there, marker or not: else it too is moved aside, and that is said. A symlink is followed: its
target is what is written. Whether a place can be written is found by writing there (a probe
directory, made and removed), not by asking ``os.access``, which says yes to root on a read-only
mount, /proc or /sys.

A run and an export are replaced whole (:func:`replace_dir`): written beside, renamed into place,
so an interrupted or failed write leaves the old directory as it was, and never half a new one.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import pathlib
import shutil
import tempfile
import time

__all__ = ["KINDS", "MARKER", "check_dir", "claim", "replace_dir", "move_aside", "write_whole"]

MARKER = ".ternpe"
MARKER_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of output directory: what it is called, and the files ternpe writes there (paths
    relative to it; ``*`` within one name, ``**`` as the last part for anything below), by
    which a directory written before the marker existed is recognised."""
    noun: str
    files: tuple


KINDS = {
    "run": Kind("a ternpe run", ("model.pt", "config.json", "history.json", "metrics.json", "training.png",
                                 "tilemaps/*.png", "report.html", "model.onnx")),
    "export": Kind("an export", ("manifest.json", "golden.npz", "*.hex", "sims.json", "qonnx.onnx")),
    "rtl": Kind("a directory of generated Verilog", ("ternpe_top.v", "ternpe_top.json", "netlist_*.v")),
    "sim": Kind("a sim build directory", ("network.json", "reset_mid_inference.json", "rtl/**", "icarus/**",
                                          "verilator/**")),
    "build": Kind("a board build directory", ("build_top.*", "top.*", "verify/**")),
    "verify": Kind("a verify run", ("design.asc", "netlist.v", "tb.v", "sim_pll.v", "sim.vvp", "replies.txt",
                                    "result.json")),
}


def _wrote(parts: tuple, is_dir: bool, patterns: tuple) -> bool:
    """Whether ternpe writes the entry at relative path ``parts`` (a folder: one that holds what it writes)."""
    for pattern in patterns:
        pat = pattern.split("/")
        deep = pat[-1] == "**"
        fixed = pat[:-1] if deep else pat
        if is_dir:
            ok, k = deep or len(parts) < len(fixed), min(len(parts), len(fixed))
        else:
            ok, k = (len(parts) > len(fixed) if deep else len(parts) == len(fixed)), len(fixed)
        if ok and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts[:k], fixed[:k])):
            return True
    return False


def _strangers(path: pathlib.Path, kind: str, most: int = 3) -> list:
    """Up to ``most`` entries of ``path`` (relative names) that ternpe does not write for ``kind``."""
    found = []
    for root, dirs, files in os.walk(path):          # top-down, symlinks not followed
        rel = pathlib.Path(root).relative_to(path).parts
        for name in sorted(dirs) + sorted(files):
            if not rel and name == MARKER:
                continue
            is_dir = name in dirs and not os.path.islink(os.path.join(root, name))
            if not _wrote(rel + (name,), is_dir, KINDS[kind].files):
                found.append("/".join(rel + (name,)) + ("/" if is_dir else ""))
                if len(found) == most:
                    return found
        dirs[:] = [d for d in dirs if _wrote(rel + (d,), True, KINDS[kind].files)]
    return found


def _not_ours(path: pathlib.Path, kind: str, *, strict: bool = False) -> str | None:
    """Why the existing directory ``path`` is not ternpe's ``kind`` to replace; None when it is.
    ``strict`` (before deleting it): a marked one too must hold only what ternpe writes there."""
    marker = path / MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            found = json.loads(marker.read_text()).get("kind")
        except (ValueError, AttributeError, OSError, UnicodeDecodeError):
            return f"its {MARKER} file is not a ternpe marker"
        if found != kind:
            return f"it is {KINDS[found].noun}" if found in KINDS else f"its {MARKER} file names kind {found!r}"
        if not strict:
            return None
    strangers = _strangers(path, kind)
    if not strangers:
        return None
    return f"it holds {', '.join(strangers)}{', ...' if len(strangers) == 3 else ''}, which ternpe did not write"


#: The kinds whose directory is replaced whole (a run, an export) or emptied first (a verify run).
REPLACED = ("run", "export", "verify")


def _holds_cwd(path: pathlib.Path) -> bool:
    try:
        cwd = pathlib.Path.cwd().resolve()
        return cwd == path.resolve() or path.resolve() in cwd.parents
    except (OSError, RuntimeError):
        return False


def _target(path, option: str, error) -> pathlib.Path:
    """``path``, or what it names when it is a symlink (or ``.``): the directory to write."""
    path = pathlib.Path(path)
    if path.is_symlink() or path.name in ("", ".", ".."):
        try:
            path = path.resolve()
        except (RuntimeError, OSError) as e:          # a symlink loop
            raise error(f"{option} {path}: cannot follow the symlink ({e}); give another path") from None
    return path


def check_dir(path, kind: str, *, force: bool = False, option: str = "--out", error=ValueError) -> pathlib.Path:
    """Refuse, before any work, an output directory ``path`` of ``kind`` that ternpe may not
    write: a file, a directory that is not ternpe's ``kind`` (unless ``force``: it is then moved
    aside when written), a path under a file, a place without write permission. Changes nothing;
    returns the directory to write (a symlink's target). ``option`` names it in messages."""
    path = _target(path, option, error)
    noun = KINDS[kind].noun
    if kind in REPLACED and path.is_dir() and _holds_cwd(path):
        raise error(f"{option} {path} is the current directory or holds it: {noun} there is replaced whole, which "
                    f"would leave this shell in a removed directory; give another path (or cd out of it first)")
    aside = f"{path.name}.old-<date>-<time>"
    if path.exists() and not path.is_dir() and not force:
        raise error(f"{option} {path} is a file; give a directory for {noun}, or --force to move the file "
                    f"aside (to {aside})")
    why = _not_ours(path, kind) if path.is_dir() and not force else None
    if why:
        raise error(f"{option} {path} is not {noun}: {why}; give another path, or --force to move it aside "
                    f"(to {aside})")
    try:
        probe = path.resolve().parent
    except (RuntimeError, OSError) as e:          # a symlink loop above it
        raise error(f"{option} {path}: cannot follow the symlinks in it ({e}); give another path") from None
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise error(f"{option} {path}: cannot write there, {probe} is a file, not a directory")
    for place in {probe, path} if path.is_dir() else {probe}:
        why = _cannot_write(place)
        if why:
            raise error(f"{option} {path}: cannot write in {place} ({why}); choose another directory")
    return path


def _cannot_write(directory: pathlib.Path) -> str | None:
    """Why nothing can be written in ``directory``, found by writing there: a probe directory with
    a file in it, made and removed (``os.access`` says yes to root on a read-only mount, /proc, /sys)."""
    try:
        probe = pathlib.Path(tempfile.mkdtemp(prefix=".ternpe-probe-", dir=directory))
    except OSError as e:
        return e.strerror or str(e)
    try:
        (probe / "probe").write_bytes(b"")
    except OSError as e:
        return e.strerror or str(e)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return None


def move_aside(path: pathlib.Path, log=print) -> pathlib.Path:
    """Rename ``path`` to ``<path>.old-<date>-<time>`` (``-2``, ``-3`` ... if taken) and say so."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.old-{stamp}")
    n = 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = path.with_name(f"{path.name}.old-{stamp}-{n}")
    path.rename(aside)
    log(f"ternpe: moved {path} aside to {aside} (as it was: nothing in it is deleted)")
    return aside


def _write_marker(path: pathlib.Path, kind: str) -> None:
    (path / MARKER).write_text(json.dumps({"kind": kind, "version": MARKER_VERSION}) + "\n")


def claim(path, kind: str, *, force: bool = False, fresh: bool = False, option: str = "--out", error=ValueError,
          log=print) -> pathlib.Path:
    """The output directory ``path`` of ``kind``, checked (:func:`check_dir`), made and marked, to
    write into: what is not ternpe's is moved aside (with ``force``; refused without it).
    ``fresh``: what ternpe wrote there before is removed first (a marked directory that also
    holds other files is moved aside instead)."""
    path = check_dir(path, kind, force=force, option=option, error=error)
    if path.exists() or path.is_symlink():
        if not path.is_dir() or _not_ours(path, kind, strict=fresh):
            move_aside(path, log)
        elif fresh:
            shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    _write_marker(path, kind)
    return path


def replace_dir(out, fill, kind: str, *, log=print) -> pathlib.Path:
    """Call ``fill(tmp)`` to write a new directory of ``kind`` beside ``out``, mark it, then rename
    it over ``out`` (a symlink's target). An old one there is removed only when it holds nothing
    but ternpe's ``kind`` (judged again now: it may have changed since :func:`check_dir`), else
    moved aside; if the rename fails, the old one is put back. Whatever ``fill`` raises leaves
    ``out`` untouched and no temporary behind. Returns the directory written."""
    out = _target(out, "--out", ValueError)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        fill(tmp)
        _write_marker(tmp, kind)
        old = aside = None
        if out.is_dir() and not _not_ours(out, kind, strict=True):
            old = out.parent / f".{out.name}.replaced-{os.getpid()}"
            out.rename(old)
        elif out.exists():
            aside = move_aside(out, log)
        try:
            tmp.rename(out)
        except OSError as e:
            if old or aside:
                (old or aside).rename(out)
            raise ValueError(f"--out {out}: cannot put the new {KINDS[kind].noun} in place ({e.strerror or e}); "
                             f"what was there is as it was; give another path") from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_whole(path, text: str) -> pathlib.Path:
    """Write ``text`` to ``path`` whole or not at all: into a hidden temporary file beside it, then
    renamed over it (an interrupted write leaves the old file, or none, never half a file)."""
    path = pathlib.Path(path)
    part = path.with_name(f".{path.name}.part")
    try:
        part.write_text(text)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path

